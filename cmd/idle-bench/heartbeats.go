package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// heartbeatProbe is what probeHeartbeats measured: the round trip of each
// answered heartbeat request, and how many went unanswered.
type heartbeatProbe struct {
	rtt  []time.Duration
	lost int
}

// probeHeartbeats sends a heartbeat request with body from nc, the first at
// once and then one every interval, each to the next of subjects (a stride
// of 7919 through them), and measures its round trip, until stop is closed
// or ctx is done (then it returns ctx's error). It sends at least one.
func probeHeartbeats(ctx context.Context, nc *nats.Conn, subjects []string, body []byte, interval time.Duration, stop <-chan struct{}) (heartbeatProbe, error) {
	var p heartbeatProbe
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := 0; ; i++ {
		t0 := time.Now()
		if _, err := nc.Request(subjects[(i*7919)%len(subjects)], body, waitBound); err != nil {
			p.lost++
		} else {
			p.rtt = append(p.rtt, time.Since(t0))
		}
		select {
		case <-tick.C:
		case <-stop:
			return p, nil
		case <-ctx.Done():
			return p, ctx.Err()
		}
		select { // stop wins over a tick that is also ready
		case <-stop:
			return p, nil
		default:
		}
	}
}

// probeFor runs probeHeartbeats for d.
func probeFor(ctx context.Context, nc *nats.Conn, subjects []string, body []byte, interval, d time.Duration) (heartbeatProbe, error) {
	stop := make(chan struct{})
	t := time.AfterFunc(d, func() { close(stop) })
	defer t.Stop()
	return probeHeartbeats(ctx, nc, subjects, body, interval, stop)
}

// publishTimed publishes one heartbeat to each of subjects from nc, in
// order, so that heartbeat i's deadline falls at target(i), rounded up to a
// whole millisecond: its body asks for the time left until then (at least
// 1 ms). At most window heartbeats are published ahead of applied() (the
// heartbeats the worker applied since the first), so none waits long in a
// queue and each publish time is close to, and never after, the worker's
// receipt of it. It returns each deadline on this program's clock: the
// publish time, which precedes the worker's receipt (conservative), plus
// the timeout asked for.
func publishTimed(ctx context.Context, nc *nats.Conn, subjects []string, target func(i int) time.Time, window int, applied func() uint64) ([]time.Time, error) {
	deadlines := make([]time.Time, len(subjects))
	body := make([]byte, 0, 64)
	var seen uint64
	win := uint64(window)
	for i, subject := range subjects {
		for stall := time.Now(); uint64(i) >= seen+win; {
			if seen = applied(); uint64(i) >= seen+win {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				if time.Since(stall) > waitBound {
					return nil, fmt.Errorf("worker stalled after applying %d heartbeats", seen)
				}
				time.Sleep(20 * time.Microsecond)
			}
		}
		pub := time.Now()
		timeout := max(time.Millisecond, ceilTo(target(i).Sub(pub), time.Millisecond))
		deadlines[i] = pub.Add(timeout)
		body = append(body[:0], `{"idle_timeout_ms":`...)
		body = strconv.AppendInt(body, timeout.Milliseconds(), 10)
		body = append(body, '}')
		if err := nc.Publish(subject, body); err != nil {
			return nil, err
		}
	}
	if err := nc.FlushTimeout(waitBound); err != nil {
		return nil, err
	}
	return deadlines, nil
}
