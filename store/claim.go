package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// claim is the body of P.store.own.<p>: who claimed the partition, when.
type claim struct {
	Worker string    `json:"worker"`
	At     time.Time `json:"at"`
}

// claimTries bounds how often a claim is retried when another claim of
// the same partition landed between reading and writing.
const claimTries = 5

// claimAll claims every partition. A claim reads the partition's last
// claim and writes a new one expecting it (compare-and-set on the claim
// subject); the new claim's stream sequence is the partition's token,
// which every later write of the partition carries. A worker whose
// partition was claimed since is refused by the server from then on.
func (s *Store) claimAll(ctx context.Context) error {
	for p := range s.parts {
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
	seq, err := s.await(ctx, &write{msg: &nats.Msg{Subject: s.l.own(p), Data: body, Header: h}, part: -1, kind: kindClaim})
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
	m, err := s.stream.GetLastMsgForSubject(ctx, subject)
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
