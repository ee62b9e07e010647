package store

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Snapshot sizing.
const (
	// chunkBytes bounds one snapshot chunk (the default max_payload is
	// 1 MiB).
	chunkBytes = 256 << 10
	// minSnapshotLog is the least log and event bytes that make a partition
	// worth a snapshot; beyond it, a snapshot is due once the log since the
	// last one outgrows the last one, so the bytes a restart reads stay
	// within twice the partition's size and snapshots cost at most as much
	// writing as the log.
	minSnapshotLog = 256 << 10
	// maxLag: a partition whose snapshot covers nothing newer than this
	// many messages ago is snapshotted again (even unchanged), so a restart
	// never reads the tail from far back.
	maxLag = 1 << 17
)

// manifest is the body of P.store.snap.<p>: which chunks make the
// partition's current snapshot and what it covers.
type manifest struct {
	ID      string `json:"id"`
	Chunks  int    `json:"chunks"`
	Records int    `json:"records"`
	// Covers is a stream sequence: every log message and event of the
	// partition stored at or below it is in the snapshot.
	Covers uint64 `json:"covers"`
	LSN    uint64 `json:"lsn"`
}

// snapState is a partition's snapshot bookkeeping.
type snapState struct {
	cur     manifest // the stored snapshot
	bytes   int      // its size
	running bool     // chunks or manifest in flight
	retryAt time.Time
}

// snapshotDue starts the snapshots that are due. A snapshot holds every
// change the partition's owner made so far, stored or not, and covers its
// highest acknowledged sequence: writes stored after it may repeat changes
// the snapshot has, which the lsn sorts out. Writes stored in order keep
// that true; a write that failed once may land after newer ones of the same
// keys, so no snapshot starts while one of the partition's writes is being
// retried (its older change could otherwise outlive a newer deletion that
// the snapshot covered). Under Store.mu.
func (s *Store) snapshotDue(now time.Time) {
	if s.closing {
		return
	}
	for pi, p := range s.parts {
		if p.snap.running || p.lost || p.token == 0 || p.retrying > 0 || now.Before(p.snap.retryAt) {
			continue
		}
		grown := p.written >= max(p.snap.bytes, minSnapshotLog)
		behind := p.written > 0 && s.lastSeq-p.snap.cur.Covers > maxLag
		if grown || behind {
			s.startSnapshot(pi)
		}
	}
}

// startSnapshot writes partition pi's records as chunks, then, once every
// chunk is stored, the manifest that makes them current, then purges what
// the new snapshot replaced. Under Store.mu.
func (s *Store) startSnapshot(pi int) {
	p := s.parts[pi]
	m := manifest{ID: nuid.Next(), Covers: p.acked, LSN: p.lsn, Records: len(p.recs)}
	var chunks [][]byte
	var buf []byte
	for key, v := range p.recs {
		if len(buf) >= chunkBytes-len(key)-48 {
			chunks, buf = append(chunks, buf), nil
		}
		rec := v.record(key)
		buf = appendUpsert(buf, v.lsn(), &rec)
	}
	if len(buf) > 0 || len(chunks) == 0 {
		chunks = append(chunks, buf)
	}
	m.Chunks = len(chunks)
	p.snap.running = true
	p.written = 0
	size := 0
	left := len(chunks)
	failed := false
	for c, data := range chunks {
		size += len(data)
		h := nats.Header{hdrTTL: []string{ttlNever}}
		s.fence(h, pi)
		s.send(&write{msg: &nats.Msg{Subject: s.l.chunk(pi, m.ID, c), Data: data, Header: h}, part: -1, fence: pi, kind: kindChunk,
			then: func(_ uint64, err error) {
				if err != nil {
					failed = true
				}
				if left--; left == 0 {
					s.finishSnapshot(pi, m, size, failed)
				}
			}})
	}
}

// finishSnapshot writes the manifest once every chunk of m is stored.
// Under Store.mu.
func (s *Store) finishSnapshot(pi int, m manifest, size int, failed bool) {
	p := s.parts[pi]
	if failed || p.lost {
		p.snap.running = false
		p.snap.retryAt = time.Now().Add(time.Second)
		s.purgeLater(s.l.chunks(pi, m.ID), 0)
		return
	}
	body, _ := json.Marshal(m)
	h := nats.Header{hdrTTL: []string{ttlNever}, hdrRollup: []string{rollupSubject}}
	s.fence(h, pi)
	old := p.snap.cur
	s.send(&write{msg: &nats.Msg{Subject: s.l.snap(pi), Data: body, Header: h}, part: -1, fence: pi, kind: kindManifest,
		then: func(_ uint64, err error) {
			p.snap.running = false
			if err != nil {
				p.snap.retryAt = time.Now().Add(time.Second)
				s.purgeLater(s.l.chunks(pi, m.ID), 0)
				return
			}
			p.snap.cur, p.snap.bytes = m, size
			if old.ID != "" {
				s.purgeLater(s.l.chunks(pi, old.ID), 0)
			}
			if m.Covers > 0 {
				s.purgeLater(s.l.log(pi), m.Covers+1)
			}
		}})
}

// purgeLater purges on a goroutine of its own, which Close waits for.
func (s *Store) purgeLater(subject string, before uint64) {
	s.purges.Go(func() { s.purge(subject, before) })
}

// sweepChunks purges the chunks of snapshots no manifest names: left by a
// crash between a snapshot's chunks and its manifest, or before a purge.
func (s *Store) sweepChunks(ctx context.Context, parts []int) {
	info, err := s.stream.Info(ctx, jetstream.WithSubjectFilter(s.l.base+"chunk.>"))
	if err != nil {
		return
	}
	s.mu.Lock()
	current := make(map[string]bool, len(parts))
	mine := make(map[string]bool, len(parts))
	for _, pi := range parts {
		p := s.parts[pi]
		mine[s.l.base+"chunk."+strconv.Itoa(pi)+"."] = true
		if p.snap.cur.ID != "" {
			current[s.l.chunks(pi, p.snap.cur.ID)] = true
		}
	}
	s.mu.Unlock()
	orphans := map[string]bool{}
	for subject := range info.State.Subjects {
		// P.store.chunk.<p>.<id>.<c>: the snapshot's pattern is all but <c>.
		i := strings.LastIndexByte(subject, '.')
		if i < 0 {
			continue
		}
		j := strings.LastIndexByte(subject[:i], '.') // P.store.chunk.<p>.
		if j < 0 || !mine[subject[:j+1]] {
			continue // another owner's partition
		}
		if pattern := subject[:i] + ".>"; !current[pattern] {
			orphans[pattern] = true
		}
	}
	for pattern := range orphans {
		s.purgeLater(pattern, 0)
	}
}

// purge removes the messages on subject (below sequence before, when not
// 0): what a stored snapshot replaced. Best effort: what is left only
// costs a restart some reading.
func (s *Store) purge(subject string, before uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts := []jetstream.StreamPurgeOpt{jetstream.WithPurgeSubject(subject)}
	if before > 0 {
		opts = append(opts, jetstream.WithPurgeSequence(before))
	}
	err := s.stream.Purge(ctx, opts...)
	if ok, _ := s.why.Allow("purge"); err != nil && ok {
		s.log.Warn("purging what a snapshot replaced", "subject", subject, "error", err)
	}
}
