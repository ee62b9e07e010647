package integration

import (
	"sync"
	"time"
)

// stallMonitor measures how long this process was starved of CPU: a
// goroutine ticks every period and records each tick that came more than
// two periods late. The timing tests add the starvation measured while they
// waited to their lateness allowance, so a busy machine (-race, two cores,
// other jobs) does not fail them, while a worker that fires late on a quiet
// machine still does. Nothing is ever subtracted from the "never early"
// check.
type stallMonitor struct {
	period time.Duration
	once   sync.Once
	mu     sync.Mutex
	spans  []stallSpan // oldest first
}

type stallSpan struct {
	from, to time.Time
	excess   time.Duration // how much later than period the tick came
}

var stalls = &stallMonitor{period: 10 * time.Millisecond}

// start starts the monitor once per process.
func (m *stallMonitor) start() {
	m.once.Do(func() { go m.run() })
}

func (m *stallMonitor) run() {
	tk := time.NewTicker(m.period)
	defer tk.Stop()
	prev := time.Now()
	for range tk.C {
		now := time.Now()
		if gap := now.Sub(prev); gap > 2*m.period {
			m.mu.Lock()
			m.spans = append(m.spans, stallSpan{from: prev, to: now, excess: gap - m.period})
			// Keep two minutes: no test waits longer.
			for len(m.spans) > 0 && now.Sub(m.spans[0].to) > 2*time.Minute {
				m.spans = m.spans[1:]
			}
			m.mu.Unlock()
		}
		prev = now
	}
}

// between returns the starvation measured between a and b.
func (m *stallMonitor) between(a, b time.Time) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	var d time.Duration
	for _, s := range m.spans {
		if s.to.After(a) && s.from.Before(b) {
			d += s.excess
		}
	}
	return d
}
