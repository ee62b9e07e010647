package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// metaFormat is the layout version this package writes and reads.
const metaFormat = 2

// meta is the body of P.store.meta: the store's identity.
type meta struct {
	Format     int    `json:"format"`
	ID         string `json:"id"`
	Partitions int    `json:"partitions"`
	// MigratedFrom names the v1 registry bucket the records came from.
	MigratedFrom string `json:"migrated_from,omitempty"`
}

// readMeta reads P.store.meta; found is false when there is none.
func (s *Store) readMeta(ctx context.Context) (m meta, found bool, err error) {
	msg, err := s.lastMsg(ctx, s.l.meta())
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return m, false, nil
	}
	if err != nil {
		return m, false, fmt.Errorf("store: read %s: %w", s.l.meta(), err)
	}
	if err := json.Unmarshal(msg.Data, &m); err != nil {
		return m, true, fmt.Errorf("%w: %s: %w", ErrCorrupt, s.l.meta(), err)
	}
	if m.Format != metaFormat {
		return m, true, fmt.Errorf("%w: %s has format %d, this worker reads %d", ErrCorrupt, s.l.meta(), m.Format, metaFormat)
	}
	return m, true, nil
}

// writeMeta stores m and waits until it is stored.
func (s *Store) writeMeta(ctx context.Context, m meta) error {
	m.Format = metaFormat
	body, _ := json.Marshal(m)
	h := nats.Header{hdrTTL: []string{ttlNever}, hdrRollup: []string{rollupSubject}}
	_, err := s.await(ctx, &write{msg: &nats.Msg{Subject: s.l.meta(), Data: body, Header: h}, part: -1, fence: -1, kind: kindMeta})
	return err
}

// StoreID implements bus.Store: the store's id becomes id.
func (s *Store) StoreID(ctx context.Context, id string) error {
	return s.writeMeta(ctx, meta{ID: id, Partitions: s.cfg.Partitions})
}

// readHighWater reads P.store.hwm; 0 when there is none. unreadable says
// why a stored one could not be read.
func (s *Store) readHighWater(ctx context.Context) (gen uint64, unreadable string, err error) {
	msg, err := s.lastMsg(ctx, s.l.hwm())
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("store: read %s: %w", s.l.hwm(), err)
	}
	gen, perr := strconv.ParseUint(string(msg.Data), 10, 64)
	if perr != nil {
		return 0, "high-water mark is not a number", nil
	}
	return gen, "", nil
}

// maxHighWater bounds a usable stored high-water mark (bus refuses higher
// ones as forged and starts a new id space).
const maxHighWater = 1 << 62

// reserveTries bounds the compare-and-set rounds of one Reserve.
const reserveTries = 16

// Reserve implements bus.Store: it reserves n generations for this worker,
// [start, start+n), start >= floor and above every reservation before it by
// any worker: the high-water mark on P.store.hwm moves by compare-and-set.
// Generations thus stay unique across workers and restarts.
func (s *Store) Reserve(ctx context.Context, floor, n uint64) (uint64, error) {
	for range reserveTries {
		var seq, cur uint64
		msg, err := s.lastMsg(ctx, s.l.hwm())
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			return 0, fmt.Errorf("store: read %s: %w", s.l.hwm(), err)
		default:
			seq = msg.Sequence
			cur, _ = strconv.ParseUint(string(msg.Data), 10, 64) // unreadable: the floor decides
			if cur > maxHighWater {
				cur = 0 // forged or corrupt: Load reported it, the worker started a new id space
			}
		}
		start := max(cur, floor, 1) // generation 0 means "none"
		h := nats.Header{hdrTTL: []string{ttlNever}, hdrRollup: []string{rollupSubject}, hdrExpectSeq: []string{strconv.FormatUint(seq, 10)}}
		_, err = s.await(ctx, &write{msg: &nats.Msg{Subject: s.l.hwm(), Data: strconv.AppendUint(nil, start+n, 10), Header: h}, part: -1, fence: -1, kind: kindHighWater})
		if err == nil {
			return start, nil
		}
		if !isFenced(err) {
			return 0, fmt.Errorf("store: reserve generations: %w", err)
		}
	}
	return 0, fmt.Errorf("store: reserve generations: %d tries lost to other workers", reserveTries)
}
