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
	msg, err := s.stream.GetLastMsgForSubject(ctx, s.l.meta())
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
	_, err := s.await(ctx, &write{msg: &nats.Msg{Subject: s.l.meta(), Data: body, Header: h}, part: -1, kind: kindMeta})
	return err
}

// StoreID implements bus.Store: the store's id becomes id.
func (s *Store) StoreID(ctx context.Context, id string) error {
	return s.writeMeta(ctx, meta{ID: id, Partitions: s.cfg.Partitions})
}

// SetHighWater implements bus.Store: gen is stored with the next flush.
func (s *Store) SetHighWater(gen uint64) {
	s.mu.Lock()
	s.hwm = gen
	s.mu.Unlock()
	s.kick()
}

// StoreHighWater implements bus.Store: gen is stored before it returns.
func (s *Store) StoreHighWater(ctx context.Context, gen uint64) error {
	_, err := s.await(ctx, s.highWaterWrite(gen))
	return err
}

// sendHighWater sends gen without waiting. Under Store.mu.
func (s *Store) sendHighWater(gen uint64) { s.send(s.highWaterWrite(gen)) }

func (s *Store) highWaterWrite(gen uint64) *write {
	h := nats.Header{hdrTTL: []string{ttlNever}, hdrRollup: []string{rollupSubject}}
	return &write{msg: &nats.Msg{Subject: s.l.hwm(), Data: strconv.AppendUint(nil, gen, 10), Header: h}, part: -1, kind: kindHighWater}
}

// readHighWater reads P.store.hwm; 0 when there is none. unreadable says
// why a stored one could not be read.
func (s *Store) readHighWater(ctx context.Context) (gen uint64, unreadable string, err error) {
	msg, err := s.stream.GetLastMsgForSubject(ctx, s.l.hwm())
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
