package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// claim is the body of P.store.own.<p>: who claimed the partition, when;
// a release has Released set and no worker.
type claim struct {
	Worker   string    `json:"worker,omitempty"`
	At       time.Time `json:"at"`
	Released bool      `json:"released,omitempty"`
}

// claimTries bounds how often a claim is retried when another claim of
// the same partition landed between reading and writing.
const claimTries = 5

// claimAll claims every partition. A claim reads the partition's last
// claim and writes a new one expecting it (compare-and-set on the claim
// subject); the new claim's stream sequence is the partition's token,
// which every later write of the partition carries. A worker whose
// partition was claimed since is refused by the server from then on.
func (s *Store) claimAll(ctx context.Context, parts []int) error {
	for _, p := range parts {
		var err error
		for range claimTries {
			if err = s.claimOne(ctx, p); err == nil || !isFenced(err) {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("store: claim partition %d: %w", p, err)
		}
	}
	return nil
}

// claimOne writes one claim of partition p.
func (s *Store) claimOne(ctx context.Context, p int) error {
	last, err := s.lastSeqOf(ctx, s.l.own(p))
	if err != nil {
		return err
	}
	body, _ := json.Marshal(claim{Worker: s.cfg.Worker, At: time.Now().UTC()})
	h := nats.Header{hdrExpectSeq: []string{strconv.FormatUint(last, 10)}, hdrTTL: []string{ttlNever}}
	seq, err := s.await(ctx, &write{msg: &nats.Msg{Subject: s.l.own(p), Data: body, Header: h}, part: -1, fence: -1, kind: kindClaim})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.setToken(p, seq)
	s.mu.Unlock()
	return nil
}

// lastSeqOf returns the sequence of the last message on subject, 0 when there
// is none.
func (s *Store) lastSeqOf(ctx context.Context, subject string) (uint64, error) {
	m, err := s.lastMsg(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: read %s: %w", subject, err)
	}
	return m.Sequence, nil
}

// await sends w and waits for its outcome: the stored sequence, or the
// refusal. A failed write is retried meanwhile, as any write is.
func (s *Store) await(ctx context.Context, w *write) (uint64, error) {
	type outcome struct {
		seq uint64
		err error
	}
	ch := make(chan outcome, 1)
	w.then = func(seq uint64, err error) { ch <- outcome{seq, err} }
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, ErrClosed
	}
	s.send(w)
	s.mu.Unlock()
	select {
	case o := <-ch:
		return o.seq, o.err
	case <-ctx.Done():
		return 0, fmt.Errorf("store: %s: %w", w.msg.Subject, ctx.Err())
	}
}

// Release implements bus.Store: for each of parts, writes stop being taken
// (ErrNotOwner), what is pending is written and acknowledged, a snapshot is
// stored when the partition logged anything since its last one (so its next
// owner reads little), and a release is written on its claim subject,
// fenced on this worker's token. Bounded by ctx; a partition whose release
// fails is still given up here (the next claim fences this worker out).
func (s *Store) Release(ctx context.Context, parts []int) error {
	s.mu.Lock()
	for _, p := range parts {
		if p < 0 || p >= len(s.parts) {
			continue
		}
		pt := s.parts[p]
		if pt.token == 0 || pt.lost {
			continue
		}
		pt.releasing = true
		s.flushPart(p)
		if pt.written > 0 && !pt.snap.running && pt.retrying == 0 {
			s.startSnapshot(p)
		}
	}
	s.mu.Unlock()
	// Each partition on its own goroutine: the releases are pipelined, not
	// one round trip after another.
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i, p := range parts {
		if p < 0 || p >= len(s.parts) {
			continue
		}
		wg.Go(func() {
			errs[i] = errors.Join(s.waitQuiet(ctx, p), s.releaseOne(ctx, p))
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitQuiet waits until partition p has nothing in flight, no retry and no
// snapshot running.
func (s *Store) waitQuiet(ctx context.Context, p int) error {
	for {
		s.mu.Lock()
		pt := s.parts[p]
		quiet := pt.inflight == 0 && pt.retrying == 0 && !pt.snap.running && len(pt.buf) == 0
		s.mu.Unlock()
		if quiet {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("store: release partition %d: %w", p, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// releaseOne writes partition p's release, fenced on this worker's token,
// and forgets the partition's records.
func (s *Store) releaseOne(ctx context.Context, p int) error {
	s.mu.Lock()
	pt := s.parts[p]
	token := pt.token
	s.mu.Unlock()
	var err error
	if token != 0 {
		body, _ := json.Marshal(claim{At: time.Now().UTC(), Released: true})
		h := nats.Header{hdrExpectSeq: []string{strconv.FormatUint(token, 10)}, hdrTTL: []string{ttlNever}}
		_, err = s.await(ctx, &write{msg: &nats.Msg{Subject: s.l.own(p), Data: body, Header: h}, part: -1, fence: -1, kind: kindClaim})
		if err != nil {
			err = fmt.Errorf("store: release partition %d: %w", p, err)
		}
	}
	s.mu.Lock()
	pt.token, pt.releasing, pt.fenceSeq, pt.fenceSubj = 0, false, nil, nil
	pt.recs, pt.buf, pt.waiters = make(map[string]value), nil, nil
	pt.snap = snapState{}
	pt.written = 0
	s.mu.Unlock()
	return err
}

// Owned returns the partitions this store holds a claim on, ascending.
func (s *Store) Owned() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for p, pt := range s.parts {
		if pt.token != 0 && !pt.lost && !pt.releasing {
			out = append(out, p)
		}
	}
	return out
}

// Verify implements bus.Store: for each of parts this worker holds a claim
// on, it reads the partition's last claim; when that is not this worker's
// any more (another worker claimed it, and this one has not written since
// to learn it), the partition is lost, as a refused write would have
// told. A worker whose membership shows another owner of its partitions
// calls it.
func (s *Store) Verify(ctx context.Context, parts []int) error {
	for _, p := range parts {
		if p < 0 || p >= len(s.parts) {
			continue
		}
		s.mu.Lock()
		token, lost := s.parts[p].token, s.parts[p].lost
		s.mu.Unlock()
		if token == 0 || lost {
			continue
		}
		last, err := s.lastSeqOf(ctx, s.l.own(p))
		if err != nil {
			return err
		}
		if last == token {
			continue
		}
		s.mu.Lock()
		s.markLost(p, fmt.Errorf("claim %d replaced by %d", token, last), nil)
		s.mu.Unlock()
	}
	return nil
}

// lastMsg reads the last message on subject, trying again while nothing
// answers (a replicated stream just created, or changing leader), until
// ctx ends.
func (s *Store) lastMsg(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	for {
		m, err := s.stream.GetLastMsgForSubject(ctx, subject)
		if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrNoStreamResponse) {
			return m, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(20 * time.Millisecond):
		}
	}
}
