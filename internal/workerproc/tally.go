package workerproc

import (
	"fmt"
	"time"
)

// DefaultMargin is how long before a crash a reply must have arrived for
// the backend to be required after the restart: a store may lose what it
// acknowledged in the last moments, not more.
const DefaultMargin = 50 * time.Millisecond

// maxMissing bounds the keys an Outcome names.
const maxMissing = 10

// Outcome compares the ok replies of a run that ended in a crash with the
// backends the worker tracks after its restart.
type Outcome struct {
	N int `json:"n"`
	// Killed is when the process was killed, Margin the grace before it,
	// both counted from the sender's start.
	Killed time.Duration `json:"killed_ns"`
	Margin time.Duration `json:"margin_ns"`
	// Answered backends got an ok reply; Required of them at least Margin
	// before Killed, and RequiredTracked of those are tracked after the
	// restart (want all).
	Answered        int `json:"answered"`
	Required        int `json:"required"`
	RequiredTracked int `json:"required_tracked"`
	// Late backends were answered within Margin of the kill (or after);
	// LateTracked of them are tracked.
	Late        int `json:"late"`
	LateTracked int `json:"late_tracked"`
	// Unanswered backends got no ok reply (sent or not); UnansweredTracked
	// of them are tracked all the same (received, stored, not answered).
	Unanswered        int `json:"unanswered"`
	UnansweredTracked int `json:"unanswered_tracked"`
	// Missing holds the indexes of up to 10 required backends that are
	// not tracked, the lowest first.
	Missing []int `json:"missing,omitempty"`
	// LostFirst is the earliest reply among the required backends that are
	// not tracked, counted from the sender's start (0 when none is lost).
	LostFirst time.Duration `json:"lost_first_answered_ns,omitempty"`
}

// Tally builds the Outcome of n backends: replyAt says when backend i was
// answered ok (Sender.ReplyAt), tracked whether it is tracked after the
// restart (TrackedKeys), killed when the process was killed.
func Tally(n int, replyAt func(int) (time.Duration, bool), tracked []bool, killed, margin time.Duration) Outcome {
	o := Outcome{N: n, Killed: killed, Margin: margin}
	for i := range n {
		at, answered := replyAt(i)
		in := i < len(tracked) && tracked[i]
		switch {
		case !answered:
			o.Unanswered++
			if in {
				o.UnansweredTracked++
			}
		case at <= killed-margin:
			o.Answered++
			o.Required++
			if in {
				o.RequiredTracked++
				continue
			}
			if len(o.Missing) < maxMissing {
				o.Missing = append(o.Missing, i)
			}
			if o.LostFirst == 0 || at < o.LostFirst {
				o.LostFirst = at
			}
		default:
			o.Answered++
			o.Late++
			if in {
				o.LateTracked++
			}
		}
	}
	return o
}

// Lost is how many required backends are not tracked.
func (o Outcome) Lost() int { return o.Required - o.RequiredTracked }

// String sums the outcome up in one line.
func (o Outcome) String() string {
	s := fmt.Sprintf("restored %d/%d answered >= %v before the kill (at %v), %d/%d answered within it, %d/%d unanswered tracked",
		o.RequiredTracked, o.Required, o.Margin, o.Killed.Round(time.Millisecond), o.LateTracked, o.Late, o.UnansweredTracked, o.Unanswered)
	if o.Lost() > 0 {
		s += fmt.Sprintf("; %d lost, the earliest answered at %v", o.Lost(), o.LostFirst.Round(time.Millisecond))
	}
	return s
}
