package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// JetStream error codes the store branches on.
const (
	// errWrongLastSeq: the expected last subject sequence did not match.
	// With a number in its description it means a newer claim exists
	// (fenced); without, that another fenced write of the same claim was
	// in flight on a replicated stream (retry).
	errWrongLastSeq = 10071
)

// pubAck is JetStream's answer to a publish.
type pubAck struct {
	Seq   uint64 `json:"seq"`
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// ackError is a refusal by the server.
type ackError struct {
	code        int
	description string
}

func (e *ackError) Error() string {
	return fmt.Sprintf("server refused the write: %s (%d)", e.description, e.code)
}

// send puts w in flight, or in the backlog when the window is full. Under
// Store.mu.
func (s *Store) send(w *write) {
	if s.cfg.Replicas > 1 && w.fence >= 0 {
		pt := s.parts[w.fence]
		if pt.fenceHolder != nil && pt.fenceHolder != w {
			pt.fenceQueue = append(pt.fenceQueue, w)
			return
		}
		pt.fenceHolder = w
	}
	if len(s.inflight) >= maxInflight {
		s.backlog = append(s.backlog, w)
		return
	}
	s.next++
	w.n = s.next
	w.sentAt = time.Now()
	w.msg.Reply = s.inbox + strconv.FormatUint(w.n, 10)
	s.inflight[w.n] = w
	if w.part >= 0 {
		s.parts[w.part].inflight++
	}
	if err := s.nc.PublishMsg(w.msg); err != nil {
		s.unflight(w)
		s.failWrite(w, err)
	}
}

// nextFenced lets the next fenced write of w's partition go, w being done
// (stored or refused for good). Under Store.mu.
func (s *Store) nextFenced(w *write) {
	if w.fence < 0 {
		return
	}
	pt := s.parts[w.fence]
	if pt.fenceHolder != w {
		return
	}
	pt.fenceHolder = nil
	if len(pt.fenceQueue) > 0 {
		next := pt.fenceQueue[0]
		pt.fenceQueue[0] = nil
		pt.fenceQueue = pt.fenceQueue[1:]
		s.send(next)
	}
}

// unflight takes w out of the window.
func (s *Store) unflight(w *write) {
	delete(s.inflight, w.n)
	w.n = 0
	if w.part >= 0 {
		s.parts[w.part].inflight--
	}
}

// onAck handles one acknowledgement.
func (s *Store) onAck(m *nats.Msg) {
	n, err := strconv.ParseUint(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:], 10, 64)
	if err != nil {
		return
	}
	var call []func(error)
	s.mu.Lock()
	w := s.inflight[n]
	if w == nil { // answered after it was sent again
		s.mu.Unlock()
		return
	}
	s.unflight(w)
	seq, aerr := parseAck(m)
	if aerr == nil || isFenced(aerr) {
		s.nextFenced(w)
	}
	switch {
	case aerr == nil:
		s.written.Add(1)
		s.lastSeq = max(s.lastSeq, seq)
		if w.part >= 0 {
			p := s.parts[w.part]
			p.acked = max(p.acked, seq)
			if w.tries > 0 {
				p.retrying--
			}
		}
		call = w.waiters
		if w.then != nil {
			w.then(seq, nil)
		}
	case isFenced(aerr) && w.kind != kindClaim:
		s.lose(w, aerr)
	case isFenced(aerr): // a claim lost its race: the claimer decides
		w.then(0, aerr)
	default:
		s.failWrite(w, aerr)
	}
	s.refill()
	s.mu.Unlock()
	for _, f := range call {
		f(nil)
	}
}

// parseAck reads a publish acknowledgement: the stored sequence, or the
// server's refusal (also "no responders" when no stream is there).
func parseAck(m *nats.Msg) (uint64, error) {
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		return 0, fmt.Errorf("no stream answered: %w", nats.ErrNoResponders)
	}
	var a pubAck
	if err := json.Unmarshal(m.Data, &a); err != nil {
		return 0, fmt.Errorf("acknowledgement: %w", err)
	}
	if a.Error != nil {
		return 0, &ackError{code: a.Error.ErrCode, description: a.Error.Description}
	}
	if a.Seq == 0 {
		return 0, errors.New("acknowledgement without a sequence")
	}
	return a.Seq, nil
}

// isFenced says whether err is the server's refusal of a stale token: a
// wrong last sequence that names the newer one.
func isFenced(err error) bool {
	var ae *ackError
	return errors.As(err, &ae) && ae.code == errWrongLastSeq && strings.ContainsAny(ae.description, "0123456789")
}

// lose marks w's partition as claimed by another worker: nothing more is
// written for it, and what waited for it fails with ErrFenced (called on
// goroutines of their own: they must not run under Store.mu).
func (s *Store) lose(w *write, err error) {
	if w.then != nil {
		w.then(0, fmt.Errorf("%w: %w", ErrFenced, err))
	}
	s.fenced.Add(1)
	if w.part < 0 {
		return
	}
	pt := s.parts[w.part]
	if w.tries > 0 {
		pt.retrying--
	}
	if tok := w.msg.Header.Get(hdrExpectSeq); len(pt.fenceSeq) == 1 && tok != pt.fenceSeq[0] {
		// Refused for an earlier claim of this worker's; the partition has
		// been claimed again since, and that claim stands. Only this write
		// is lost.
		ferr := fmt.Errorf("%w: %w", ErrFenced, err)
		for _, f := range w.waiters {
			go f(ferr)
		}
		return
	}
	s.markLost(w.part, err, w.waiters)
}

// markLost gives partition p up to the worker that claimed it since: it
// arrives once on Lost, nothing more is written for it, and what waited on
// it (waiting too) fails with ErrFenced, on goroutines of their own. Under
// Store.mu.
func (s *Store) markLost(p int, err error, waiting []func(error)) {
	pt := s.parts[p]
	if !pt.lost {
		pt.lost = true
		pt.recs = make(map[string]value)
		s.log.Warn("partition claimed by another worker: this worker no longer writes it", "partition", p, "error", err)
		select {
		case s.lost <- p:
		default:
		}
	}
	fail := append(waiting, pt.waiters...)
	pt.buf, pt.waiters = nil, nil
	ferr := fmt.Errorf("%w: %w", ErrFenced, err)
	for _, f := range fail {
		go f(ferr)
	}
}

// failWrite counts a failed write, logs its cause (rate-limited) and
// schedules it again with backoff.
func (s *Store) failWrite(w *write, err error) {
	s.failed.Add(1)
	if w.tries == 0 && w.part >= 0 {
		s.parts[w.part].retrying++
	}
	w.tries++
	wait := min(firstRetry<<min(w.tries-1, 10), maxRetry)
	if ok, suppressed := s.why.Allow("write"); ok {
		s.log.Warn("store write failed; retrying", "subject", w.msg.Subject, "try", w.tries, "retry_in", wait, "error", err, "similar_suppressed", suppressed)
	}
	w.retryAt = time.Now().Add(wait)
	s.retries = append(s.retries, w)
	s.kick()
}

// refill moves writes from the backlog into free room in the window, and
// wakes Close when nothing is left. Under Store.mu.
func (s *Store) refill() {
	for len(s.backlog) > 0 && len(s.inflight) < maxInflight {
		w := s.backlog[0]
		s.backlog[0] = nil
		s.backlog = s.backlog[1:]
		s.send(w)
	}
	if len(s.inflight) == 0 && len(s.backlog) == 0 {
		s.idle.Broadcast()
	}
}

// flusher writes partitions' logs flushEvery after their first entry,
// re-sends failed writes when their time comes and those unacknowledged
// after ackWait, and starts snapshots. It stops when Store.stop closes.
func (s *Store) flusher() {
	defer close(s.done)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.wake:
		case <-t.C:
		}
		s.mu.Lock()
		next := s.tick(time.Now())
		s.mu.Unlock()
		if !next.IsZero() {
			t.Reset(max(time.Until(next), 100*time.Microsecond))
		}
	}
}

// tick does what is due at now and returns when to come back (zero: when
// woken). Under Store.mu.
func (s *Store) tick(now time.Time) time.Time {
	var next time.Time
	soon := func(at time.Time) {
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	for pi, p := range s.parts {
		if len(p.buf) == 0 {
			continue
		}
		if at := p.bufAt.Add(flushEvery); !at.After(now) {
			s.flushPart(pi)
		} else {
			soon(at)
		}
	}
	if len(s.retries) > 0 {
		keep := s.retries[:0]
		for _, w := range s.retries {
			if w.retryAt.After(now) {
				keep = append(keep, w)
				soon(w.retryAt)
				continue
			}
			s.send(w)
		}
		clear(s.retries[len(keep):])
		s.retries = keep
	}
	if len(s.inflight) > 0 {
		if !now.Before(s.sweepAt) {
			// Unacknowledged for too long: the message or its answer was
			// lost (a reconnect, a leader change). Send it again.
			s.sweepAt = now.Add(ackWait / 4)
			for _, w := range s.inflight {
				if now.Sub(w.sentAt) >= ackWait {
					s.unflight(w)
					s.failWrite(w, errors.New("no acknowledgement within "+ackWait.String()))
				}
			}
		}
		soon(s.sweepAt)
	}
	s.snapshotDue(now)
	s.refill()
	return next
}
