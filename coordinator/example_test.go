package coordinator_test

import (
	"fmt"
	"time"

	"github.com/idle-worker/idle-worker/coordinator"
)

// The outer loop owns the Coordinator: it feeds activity in, arms one timer
// for NextDeadline and, when the timer fires, drains what CollectDue returns.
// Here the timer is simulated by jumping to the deadline.
func Example() {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := coordinator.New(coordinator.Policy{DefaultIdleTimeout: 30 * time.Second})

	c.MarkActivity("svc.api.1", t0)
	c.MarkActivityWithTimeout("svc.batch.7", t0, 10*time.Second)
	c.MarkActivity("svc.api.1", t0.Add(20*time.Second)) // a heartbeat re-arms the idle clock

	for {
		next, ok := c.NextDeadline()
		if !ok {
			fmt.Println("nothing running: no timer")
			break
		}
		now := next // the timer fires
		fmt.Printf("timer fires at t0+%v\n", now.Sub(t0))
		for _, d := range c.CollectDue(now) {
			fmt.Printf("  drain %s: idle %v of %v (%v)\n", d.Key, d.IdleFor, d.ConfiguredTimeout, d.Reason)
		}
	}
	fmt.Println("running:", c.Count(coordinator.Running), "draining:", c.Count(coordinator.Draining))

	// Fresh activity re-arms a draining backend.
	ch, _ := c.MarkActivity("svc.batch.7", t0.Add(time.Minute))
	next, _ := c.NextDeadline()
	fmt.Println("rearmed:", ch&coordinator.Rearmed != 0, "next deadline: t0+"+next.Sub(t0).String())
	// Output:
	// timer fires at t0+10s
	//   drain svc.batch.7: idle 10s of 10s (idle_timeout)
	// timer fires at t0+50s
	//   drain svc.api.1: idle 30s of 30s (idle_timeout)
	// nothing running: no timer
	// running: 0 draining: 2
	// rearmed: true next deadline: t0+1m30s
}
