package store

import (
	"encoding/base64"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/partition"
)

// part is one partition as its owner keeps it; guarded by Store.mu.
type part struct {
	token uint64 // the sequence of this worker's claim; 0: not claimed
	// fenceSeq and fenceSubj are the fence headers' values for token,
	// rendered once per claim and shared by every write (read-only).
	fenceSeq, fenceSubj []string
	lost                bool // another worker's claim fenced this one out
	// releasing: Release has begun; no write is taken any more.
	releasing bool
	recs      map[string]value
	lsn       uint64 // the last lsn handed out

	buf     []byte        // log entries not yet written
	bufAt   time.Time     // when buf got its first entry
	waiters []func(error) // called once buf's message is stored

	inflight int    // writes of this partition not yet acknowledged
	retrying int    // of those, writes that failed once: they may land after newer ones
	acked    uint64 // the highest stream sequence acknowledged for its log and events
	written  int    // bytes of log and events since the last snapshot began
	// On a replicated stream: the fenced write in flight (or waiting for
	// its retry), and those queued behind it, in order.
	fenceHolder *write
	fenceQueue  []*write
	snap        snapState
}

// writeKind says what a write is, for counting and for what its
// acknowledgement means.
type writeKind uint8

const (
	kindLog writeKind = iota + 1
	kindEvent
	kindChunk
	kindManifest
	kindClaim
	kindMeta
	kindHighWater
)

// write is one message to the stream and what waits on it.
type write struct {
	msg  *nats.Msg
	part int // -1: not a partition's
	// fence is the partition whose claim fences the write, -1 for none.
	// On a replicated stream one fenced write per partition is in flight
	// at a time: the server refuses a second (10164) while the first is
	// being replicated.
	fence   int
	kind    writeKind
	waiters []func(error)
	// then, when set, runs under Store.mu with the outcome: the stored
	// sequence, or the refusal (a fenced or final error).
	then    func(seq uint64, err error)
	n       uint64 // acknowledgement number while in flight; 0 otherwise
	tries   int    // failed attempts so far
	sentAt  time.Time
	retryAt time.Time
}

// partOf returns key's partition number.
func (s *Store) partOf(key string) int { return partition.Of(key, s.cfg.Partitions) }

// fence adds the headers that make the server refuse w unless p's last
// claim is still this worker's.
func (s *Store) fence(h nats.Header, p int) {
	pt := s.parts[p]
	h[hdrExpectSeq], h[hdrExpectSubj] = pt.fenceSeq, pt.fenceSubj
}

// setToken makes token partition p's owner token. Under Store.mu.
func (s *Store) setToken(p int, token uint64) {
	pt := s.parts[p]
	pt.token, pt.lost = token, false
	pt.fenceSeq, pt.fenceSubj = []string{strconv.FormatUint(token, 10)}, []string{s.l.own(p)}
}

// Put implements bus.Store: rec is written to its partition's log with the
// next flush; stored, if not nil, is called (from another goroutine) once
// it is stored, or with the error that keeps it from being stored. A record
// equal to the one kept costs nothing.
func (s *Store) Put(rec coordinator.Record, stored func(error)) {
	s.mu.Lock()
	err := s.put(&rec, stored)
	s.mu.Unlock()
	if err != nil && stored != nil {
		stored(err)
	}
}

func (s *Store) put(rec *coordinator.Record, stored func(error)) error {
	if s.closed {
		return ErrClosed
	}
	pi := s.partOf(rec.Key)
	p := s.parts[pi]
	if err := s.writable(p); err != nil {
		return err
	}
	if old, ok := p.recs[rec.Key]; ok && stored == nil && old.record(rec.Key) == *rec {
		return nil
	}
	p.lsn++
	p.recs[rec.Key] = valueOf(rec, p.lsn)
	s.appendLog(pi, appendUpsert(p.buf, p.lsn, rec), stored)
	return nil
}

// Delete implements bus.Store: key's deletion goes to its partition's log.
func (s *Store) Delete(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	pi := s.partOf(key)
	p := s.parts[pi]
	if s.writable(p) != nil {
		return
	}
	if _, ok := p.recs[key]; !ok {
		return
	}
	delete(p.recs, key)
	p.lsn++
	s.appendLog(pi, appendDelete(p.buf, p.lsn, key), nil)
}

// writable says why partition p takes no write, or nil. Under Store.mu.
func (s *Store) writable(p *part) error {
	switch {
	case p.lost:
		s.fenced.Add(1)
		return ErrFenced
	case p.token == 0 || p.releasing:
		return ErrNotOwner
	}
	return nil
}

// appendLog makes buf partition pi's pending log and writes it when it is
// large enough; the flusher writes it flushEvery after its first entry.
func (s *Store) appendLog(pi int, buf []byte, stored func(error)) {
	p := s.parts[pi]
	first := len(p.buf) == 0
	p.buf = buf
	if stored != nil {
		p.waiters = append(p.waiters, stored)
	}
	if len(p.buf) >= flushBytes {
		s.flushPart(pi)
		return
	}
	if first {
		p.bufAt = time.Now()
		s.kick()
	}
}

// flushPart writes partition pi's pending log as one fenced message.
func (s *Store) flushPart(pi int) {
	p := s.parts[pi]
	if len(p.buf) == 0 {
		return
	}
	h := nats.Header{hdrTTL: []string{ttlNever}}
	s.fence(h, pi)
	w := &write{msg: &nats.Msg{Subject: s.l.log(pi), Data: p.buf, Header: h}, part: pi, fence: pi, kind: kindLog, waiters: p.waiters}
	p.written += len(p.buf)
	p.buf, p.waiters = nil, nil
	s.send(w)
}

// flushAll writes every partition's pending log.
func (s *Store) flushAll(time.Time) {
	for pi := range s.parts {
		s.flushPart(pi)
	}
}

// Publish implements bus.Store: the event goes out as one fenced message
// that also carries rec, its draining record, so the two are stored
// together or not at all. Brokers see it once the stream stored it (its
// RePublish). The first emission's Nats-Msg-Id is the event id; a re-send's
// is <id>.<attempt>.<run>, so the stream stores and republishes it too.
func (s *Store) Publish(ev *bus.QuiesceEvent, rec coordinator.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	pi := s.partOf(rec.Key)
	p := s.parts[pi]
	if err := s.writable(p); err != nil {
		return err
	}
	p.lsn++
	p.recs[rec.Key] = valueOf(&rec, p.lsn)
	var ent [bus.MaxKeyBytes + 48]byte
	raw := appendUpsert(ent[:0], p.lsn, &rec)
	id := ev.ID
	if ev.Attempt > 1 {
		id += "." + strconv.Itoa(ev.Attempt) + "." + s.run
	}
	h := nats.Header{
		hdrMsgID:  []string{id},
		hdrRecord: []string{base64.RawStdEncoding.EncodeToString(raw)},
	}
	s.fence(h, pi)
	data := ev.AppendJSON(make([]byte, 0, 160+len(ev.Key)))
	p.written += len(data) + len(raw)
	s.send(&write{msg: &nats.Msg{Subject: s.l.event(pi, rec.Key), Data: data, Header: h}, part: pi, fence: pi, kind: kindEvent})
	return nil
}

// kick wakes the flusher.
func (s *Store) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}
