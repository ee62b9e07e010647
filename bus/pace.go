package bus

import (
	"math"
	"time"
)

// pacer spends a budget of quiesce events per second, so that a herd of
// backends due at once reaches brokers spread out: a token bucket refilled
// at rate, holding at most a tenth of a second's worth (at least one). Its
// zero rate means no limit. It is owned by the worker loop.
type pacer struct {
	rate   float64 // events per second; 0: unlimited
	burst  float64
	tokens float64
	last   time.Time
}

func newPacer(rate int) pacer {
	if rate <= 0 {
		return pacer{}
	}
	burst := max(float64(rate)/10, 1)
	return pacer{rate: float64(rate), burst: burst, tokens: burst}
}

func (p *pacer) limited() bool { return p.rate > 0 }

// available returns how many events may go out at now (math.MaxInt when
// unlimited).
func (p *pacer) available(now time.Time) int {
	if !p.limited() {
		return math.MaxInt
	}
	if !p.last.IsZero() {
		p.tokens = min(p.burst, p.tokens+now.Sub(p.last).Seconds()*p.rate)
	}
	p.last = now
	return int(p.tokens)
}

// spend takes n events from the budget.
func (p *pacer) spend(n int) {
	if p.limited() {
		p.tokens -= float64(n)
	}
}

// next returns when the budget next holds an event, as of the last call to
// available; the zero time when it holds one now or there is no limit.
func (p *pacer) next() time.Time {
	if !p.limited() || p.tokens >= 1 {
		return time.Time{}
	}
	return p.last.Add(time.Duration((1 - p.tokens) / p.rate * float64(time.Second)))
}
