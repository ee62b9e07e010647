package bus

import (
	"log/slog"
	"time"

	"github.com/idle-worker/idle-worker/internal/lograte"
)

// rateLog logs at most one line per reason per interval and reports how many
// lines it suppressed in between. It is owned by one goroutine, the worker
// loop, and indexed by reason: no lock and no map on the path of rejected
// input, which is why it is not an internal/lograte.Limiter (that one serves
// callbacks on other goroutines, keyed by arbitrary kinds).
type rateLog struct {
	logger     *slog.Logger
	interval   time.Duration
	last       [numRejects]time.Time
	suppressed [numRejects]uint64
}

func (r *rateLog) log(now time.Time, reason rejectReason, subject string, err error) {
	if !r.last[reason].IsZero() && now.Sub(r.last[reason]) < r.interval {
		r.suppressed[reason]++
		return
	}
	r.last[reason] = now
	n := r.suppressed[reason]
	r.suppressed[reason] = 0
	r.logger.Warn("rejected input", "reason", reason.String(), "subject", lograte.Clip(subject, 300),
		"error", err.Error(), "suppressed", n)
}
