package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
)

// Bounds on what a stored manifest may claim.
const (
	maxChunks   = 1 << 12
	readWorkers = 16
)

// Load implements bus.Store: it reads the store's identity (its id, the
// partition count, the generation high-water mark), creating it on a new
// stream, or from a v1 registry bucket, migrated once. It claims nothing:
// Claim does.
func (s *Store) Load(ctx context.Context) (bus.RegistryState, error) {
	var st bus.RegistryState
	m, found, err := s.readMeta(ctx)
	if err != nil {
		return st, err
	}
	if found && m.Partitions != s.cfg.Partitions {
		return st, fmt.Errorf("%w: stream %s was set up with %d partitions, this worker was started with %d; start it with IDLE_PARTITIONS=%d (the count is fixed for the life of a stream)",
			ErrPartitions, s.cfg.Stream, m.Partitions, s.cfg.Partitions, m.Partitions)
	}
	if !found {
		return s.create(ctx)
	}
	st.ID = m.ID
	if st.HighWater, st.Unreadable, err = s.readHighWater(ctx); err != nil {
		return st, err
	}
	return st, nil
}

// Claim implements bus.Store: it claims each of parts (compare-and-set on
// its last claim: from then on the server refuses the previous owner's
// writes), then reads their snapshots (in parallel) and the log messages and
// events stored after them, keeping per key the change with the highest
// lsn. It returns their records in ascending key order, and the generation
// high-water mark as it is now.
func (s *Store) Claim(ctx context.Context, parts []int) (bus.Claimed, error) {
	var c bus.Claimed
	t0 := time.Now()
	for _, p := range parts {
		if p < 0 || p >= len(s.parts) {
			return c, fmt.Errorf("store: claim: no partition %d of %d", p, len(s.parts))
		}
	}
	if err := s.claimAll(ctx, parts); err != nil {
		return c, err
	}
	claimed := time.Now()
	var err error
	if c.HighWater, _, err = s.readHighWater(ctx); err != nil {
		return c, err
	}
	s.mu.Lock()
	for _, p := range parts { // what an earlier ownership left is stale
		s.parts[p].recs, s.parts[p].lsn = make(map[string]value), 0
	}
	s.mu.Unlock()
	covers, skipped, err := s.readClaimed(ctx, parts)
	if err != nil {
		return c, err
	}
	snapped := time.Now()
	c.Skipped += skipped
	tail, n, _, err := s.readTail(ctx, s.parts, parts, covers)
	if err != nil {
		return c, err
	}
	tailed := time.Now()
	c.Skipped += n
	c.Records = s.settle(parts)
	s.purges.Go(func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		s.sweepChunks(sctx, parts)
	})
	s.log.Info("partitions claimed", "partitions", len(parts), "records", len(c.Records), "skipped", c.Skipped, "tail_messages", tail,
		"claims", claimed.Sub(t0), "snapshots", snapped.Sub(claimed), "tail", tailed.Sub(snapped), "total", time.Since(t0))
	return c, nil
}

// create sets up a new store: from the v1 registry bucket when there is
// one (its records become the first snapshots, its id and high-water mark
// carry over so events are re-sent with their ids), else empty. The meta
// message is written last: a crash before it makes the next start do it
// again.
func (s *Store) create(ctx context.Context) (bus.RegistryState, error) {
	var st bus.RegistryState
	v1, ok, err := readV1(ctx, s.js, s.cfg.V1Bucket, s.log)
	if err != nil {
		return st, fmt.Errorf("%w %q: %w (to start without it: nats kv del %s)", ErrV1Registry, s.cfg.V1Bucket, err, s.cfg.V1Bucket)
	}
	if !ok {
		st.ID, st.NewID = nuid.Next(), true
		return st, s.writeMeta(ctx, meta{ID: st.ID, Partitions: s.cfg.Partitions})
	}
	st.ID, st.HighWater, st.Skipped = v1.ID, v1.HighWater, v1.Skipped
	if v1.ID == "" {
		st.Unreadable = "v1 registry has no id"
	}
	all := s.allParts()
	if err := s.claimAll(ctx, all); err != nil {
		return st, err
	}
	s.mu.Lock()
	for _, e := range v1.Records {
		p := s.parts[s.partOf(e.rec.Key)]
		p.lsn++
		p.recs[e.rec.Key] = valueOf(&e.rec, p.lsn)
	}
	s.mu.Unlock()
	if err := s.snapshotAll(ctx); err != nil {
		return st, fmt.Errorf("%w %q: migrating: %w", ErrV1Registry, s.cfg.V1Bucket, err)
	}
	if st.HighWater > 0 {
		if _, err := s.Reserve(ctx, st.HighWater, 0); err != nil {
			return st, err
		}
	}
	if err := s.Release(ctx, all); err != nil {
		return st, err
	}
	if err := s.writeMeta(ctx, meta{ID: st.ID, Partitions: s.cfg.Partitions, MigratedFrom: s.cfg.V1Bucket}); err != nil {
		return st, err
	}
	s.log.Info("migrated the v1 registry bucket into the stream; the bucket is left as it was and no longer read",
		"bucket", s.cfg.V1Bucket, "records", len(v1.Records), "skipped", v1.Skipped, "stream", s.cfg.Stream,
		"to_delete_it", "nats kv del "+s.cfg.V1Bucket)
	return st, nil
}

// allParts returns every partition number.
func (s *Store) allParts() []int {
	all := make([]int, len(s.parts))
	for p := range all {
		all[p] = p
	}
	return all
}

// snapshotAll snapshots every partition and waits for the manifests.
func (s *Store) snapshotAll(ctx context.Context) error {
	s.mu.Lock()
	for pi := range s.parts {
		s.startSnapshot(pi)
	}
	s.mu.Unlock()
	for {
		s.mu.Lock()
		running, lost := 0, 0
		for _, p := range s.parts {
			if p.snap.running {
				running++
			}
			if p.lost || p.snap.cur.ID == "" {
				lost++
			}
		}
		s.mu.Unlock()
		if running == 0 {
			if lost > 0 {
				return fmt.Errorf("%d partitions' snapshots not stored", lost)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// readSnapshots reads the manifests and chunks of parts, readWorkers
// partitions at a time, into the partitions' records. It returns what each
// snapshot covers (every sequence, for a partition not in parts: the tail
// then skips it) and how many entries did not decode.
func (s *Store) readSnapshots(ctx context.Context, tbl []*part, parts []int) ([]uint64, int, error) {
	covers := make([]uint64, len(s.parts))
	for p := range covers {
		covers[p] = ^uint64(0)
	}
	skipped := make([]int, len(s.parts))
	errs := make([]error, len(s.parts))
	next := make(chan int)
	var wg sync.WaitGroup
	for range readWorkers {
		wg.Go(func() {
			for p := range next {
				covers[p], skipped[p], errs[p] = s.readSnapshot(ctx, tbl, p)
			}
		})
	}
	for _, p := range parts {
		next <- p
	}
	close(next)
	wg.Wait()
	total := 0
	for _, p := range parts {
		if errs[p] != nil {
			return nil, 0, errs[p]
		}
		total += skipped[p]
	}
	return covers, total, nil
}

// readSnapshot reads partition p's snapshot. A manifest or chunk that does
// not decode, or a missing chunk, costs that chunk's records (counted, the
// cause logged); the log after the snapshot is still applied.
func (s *Store) readSnapshot(ctx context.Context, tbl []*part, p int) (uint64, int, error) {
	msg, err := s.lastMsg(ctx, s.l.snap(p))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("store: read %s: %w", s.l.snap(p), err)
	}
	var m manifest
	if !jsonManifest(msg.Data, &m) {
		s.log.Error("unreadable snapshot manifest; the partition restarts from its log alone", "partition", p)
		return 0, 1, nil
	}
	pt := tbl[p]
	if len(pt.recs) == 0 && m.Records > 0 {
		pt.recs = make(map[string]value, min(m.Records, maxChunks*chunkBytes/8))
	}
	skipped := 0
	for c := range m.Chunks {
		cm, err := s.lastMsg(ctx, s.l.chunk(p, m.ID, c))
		if err != nil {
			if !errors.Is(err, jetstream.ErrMsgNotFound) {
				return 0, 0, fmt.Errorf("store: read %s: %w", s.l.chunk(p, m.ID, c), err)
			}
			s.log.Error("snapshot chunk missing; its records are lost", "partition", p, "snapshot", m.ID, "chunk", c)
			skipped++
			continue
		}
		n, err := s.applyEntries(tbl, p, cm.Data, false)
		if err != nil {
			s.log.Error("snapshot chunk corrupt; the rest of it is skipped", "partition", p, "snapshot", m.ID, "chunk", c, "read", n, "error", err)
			skipped++
		}
	}
	pt.lsn = max(pt.lsn, m.LSN)
	pt.snap.cur = m
	return m.Covers, skipped, nil
}

// jsonManifest decodes a manifest and says whether it is usable.
func jsonManifest(data []byte, m *manifest) bool {
	return json.Unmarshal(data, m) == nil && plainID(m.ID) && m.Chunks >= 1 && m.Chunks <= maxChunks && m.LSN <= maxLSN
}

// plainID says whether id can be one token of a subject.
func plainID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// applyEntries applies the entries of data to partition pi: per key, the
// entry with the highest lsn wins; a delete leaves a tombstone until
// settle. It returns how many entries it applied, and the error that
// stopped it: an entry that does not decode, or one of a key of another
// partition (the store never writes one there: applied, it would outlive
// the key's deletion, which goes to the key's own partition). onlyDrained
// refuses entries other than Draining upserts (an event's).
func (s *Store) applyEntries(tbl []*part, pi int, data []byte, onlyDrained bool) (int, error) {
	p := tbl[pi]
	n := 0
	for len(data) > 0 {
		e, rest, err := decodeEntry(data)
		if err != nil {
			return n, err
		}
		if onlyDrained && (e.delete || e.rec.State != coordinator.Draining) {
			return n, fmt.Errorf("%w: an event's record is not a draining one", ErrCorrupt)
		}
		if s.partOf(e.rec.Key) != pi {
			return n, fmt.Errorf("%w: %q is not a key of partition %d", ErrCorrupt, e.rec.Key, pi)
		}
		data = rest
		n++
		p.lsn = max(p.lsn, e.lsn)
		if old, ok := p.recs[e.rec.Key]; ok && old.lsn() >= e.lsn {
			continue
		}
		v := tombstone(e.lsn)
		if !e.delete {
			v = valueOf(&e.rec, e.lsn)
		}
		p.recs[e.rec.Key] = v
	}
	return n, nil
}
