package store

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A worker that starts waits for the membership before it claims anything
// (two heartbeat intervals). Prefetch reads every partition meanwhile, so
// the claims that follow read only what changed since. What it read is
// used for a partition only while the partition's snapshot is still the
// one it read (its manifest id unchanged): a newer snapshot may have purged
// the log it would still need.

// prefetched is one partition as Prefetch read it.
type prefetched struct {
	part *part  // its records, lsn and snapshot
	upTo uint64 // the stream sequence its tail was read to
}

// Prefetch reads every partition's snapshot and log into memory without
// claiming any, for Claim to start from. Best effort: on error Claim reads
// everything itself.
func (s *Store) Prefetch(ctx context.Context) error {
	t0 := time.Now()
	tbl := make([]*part, len(s.parts))
	for p := range tbl {
		tbl[p] = &part{recs: make(map[string]value)}
	}
	all := s.allParts()
	covers, _, err := s.readSnapshots(ctx, tbl, all)
	if err != nil {
		return err
	}
	_, _, last, err := s.readTail(ctx, tbl, all, covers)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pre = make([]*prefetched, len(tbl))
	n := 0
	for p, pt := range tbl {
		if s.parts[p].token != 0 {
			continue // claimed meanwhile: Claim read it itself
		}
		s.pre[p] = &prefetched{part: pt, upTo: max(last, covers[p])}
		n += len(pt.recs)
	}
	s.log.Info("prefetched the partitions", "records", n, "took", time.Since(t0))
	return nil
}

// readClaimed reads the snapshots of parts into their partitions, taking
// what Prefetch read where the snapshot is still the same. It returns what
// each partition's records cover (the tail then starts after it) and how
// many entries did not decode.
func (s *Store) readClaimed(ctx context.Context, parts []int) ([]uint64, int, error) {
	s.mu.Lock()
	pre := s.pre
	s.pre = nil // used once: a later claim reads afresh
	s.mu.Unlock()
	var fresh []int
	var used []int
	var kept = make(map[int]*prefetched)
	for _, p := range parts {
		if p < len(pre) && pre[p] != nil && s.sameSnapshot(ctx, p, pre[p].part.snap.cur.ID) {
			kept[p] = pre[p]
			used = append(used, p)
			continue
		}
		fresh = append(fresh, p)
	}
	covers, skipped, err := s.readSnapshots(ctx, s.parts, fresh)
	if err != nil {
		return nil, 0, err
	}
	s.mu.Lock()
	for _, p := range used {
		pt, kp := s.parts[p], kept[p]
		pt.recs, pt.lsn, pt.snap.cur = kp.part.recs, kp.part.lsn, kp.part.snap.cur
		covers[p] = kp.upTo
	}
	s.mu.Unlock()
	return covers, skipped, nil
}

// sameSnapshot says whether partition p's current manifest names snapshot
// id ("" for none).
func (s *Store) sameSnapshot(ctx context.Context, p int, id string) bool {
	msg, err := s.lastMsg(ctx, s.l.snap(p))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return id == ""
	}
	if err != nil {
		return false
	}
	var m manifest
	return jsonManifest(msg.Data, &m) && m.ID == id
}
