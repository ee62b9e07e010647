package store

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/internal/lograte"
)

// readTail applies the log messages and events stored after the oldest
// snapshot, each to its partition when it is newer than the partition's
// snapshot. It returns how many messages it read and how many did not
// decode.
func (s *Store) readTail(ctx context.Context, tbl []*part, parts []int, covers []uint64) (read, bad int, last uint64, err error) {
	if len(parts) == 0 {
		return 0, 0, 0, nil
	}
	start := covers[parts[0]]
	for _, p := range parts {
		start = min(start, covers[p])
	}
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("store: stream info: %w", err)
	}
	last = info.State.LastSeq
	if start >= last {
		return 0, 0, last, nil
	}
	// One consumer per subject filter: the log (one partition's subject,
	// or all of them), then the events. The order of the two passes does
	// not matter: the lsn decides.
	logs := s.l.base + "log.>"
	if len(parts) == 1 {
		logs = s.l.log(parts[0])
	}
	for _, filter := range []string{logs, s.l.subj.Quiesce(">")} {
		r, b, err := s.readFiltered(ctx, tbl, filter, start, last, covers)
		read, bad = read+r, bad+b
		if err != nil {
			return read, bad, 0, err
		}
	}
	return read, bad, last, nil
}

// readFiltered applies the messages on filter stored after start, up to
// last, with one consumer: until a message says nothing matching is left
// or last is reached; a consumer on a replicated stream may take a moment
// before it delivers.
func (s *Store) readFiltered(ctx context.Context, tbl []*part, filter string, start, last uint64, covers []uint64) (read, bad int, err error) {
	cons, err := s.stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject:     filter,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       start + 1,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
	})
	if err != nil {
		return 0, 0, fmt.Errorf("store: read %s: %w", filter, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = s.stream.DeleteConsumer(dctx, cons.CachedInfo().Name)
		cancel()
	}()
	pending := cons.CachedInfo().NumPending
	logged := lograte.New(time.Second, nil)
	empty := 0
	for done := pending == 0; !done; {
		batch, err := cons.FetchNoWait(4096)
		if err != nil {
			return read, bad, fmt.Errorf("store: read %s: %w", filter, err)
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			md, err := msg.Metadata()
			if err != nil {
				continue
			}
			if md.NumPending == 0 || md.Sequence.Stream >= last {
				done = true
			}
			if md.Sequence.Stream > last {
				continue
			}
			read++
			if err := s.applyTail(tbl, msg.Subject(), msg.Headers().Get(hdrRecord), msg.Data(), md.Sequence.Stream, covers); err != nil {
				bad++
				if ok, _ := logged.Allow("tail"); ok {
					s.log.Warn("skipping a stored log message or event that does not decode", "subject", lograte.Clip(msg.Subject(), 200), "sequence", md.Sequence.Stream, "error", err)
				}
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, nats.ErrNoResponders) {
			return read, bad, fmt.Errorf("store: read %s: %w", filter, err)
		}
		if got > 0 {
			empty = 0
			continue
		}
		if err := ctx.Err(); err != nil {
			return read, bad, fmt.Errorf("store: read %s: %w", filter, err)
		}
		if empty++; empty >= tailStall {
			return read, bad, fmt.Errorf("store: read %s: nothing delivered for %v with %d messages pending", filter, tailStall*tailWait, pending)
		}
		time.Sleep(tailWait) // nothing ready yet (a replicated consumer starting)
	}
	return read, bad, nil
}

// Bounds of a tail read: after a fetch that found nothing ready, the next
// comes tailWait later; so many empty fetches in a row fail the read.
const (
	tailWait  = 5 * time.Millisecond
	tailStall = 2000
)

// applyTail applies one log message or event stored at seq.
func (s *Store) applyTail(tbl []*part, subject, record string, data []byte, seq uint64, covers []uint64) error {
	if rest, ok := strings.CutPrefix(subject, s.l.base+"log."); ok {
		p, err := strconv.Atoi(rest)
		if err != nil || p < 0 || p >= len(s.parts) || strconv.Itoa(p) != rest {
			return fmt.Errorf("%w: log subject of no partition", ErrCorrupt)
		}
		if seq <= covers[p] {
			return nil
		}
		_, err = s.applyEntries(tbl, p, data, false)
		return err
	}
	key, ok := s.l.subj.QuiesceKey(subject)
	if !ok {
		return fmt.Errorf("%w: unexpected subject", ErrCorrupt)
	}
	if record == "" {
		return nil // an event without its record: written by idle-worker v1
	}
	raw, err := base64.RawStdEncoding.DecodeString(record)
	if err != nil {
		return fmt.Errorf("%w: %s header: %w", ErrCorrupt, hdrRecord, err)
	}
	p := s.partOf(key)
	if seq <= covers[p] {
		return nil
	}
	e, rest, err := decodeEntry(raw)
	if err != nil {
		return err
	}
	if len(rest) != 0 || e.rec.Key != key {
		return fmt.Errorf("%w: event record not of its own key", ErrCorrupt)
	}
	_, err = s.applyEntries(tbl, p, raw, true)
	return err
}
