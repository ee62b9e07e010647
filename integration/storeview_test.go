package integration

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/partition"
	"github.com/idle-worker/idle-worker/store"
)

// What a worker's store keeps in its stream (store.DefaultStreamName), read
// and written the way package store lays it out, so that the tests can
// check what is stored and write what a hostile or broken writer would:
//
//	P.store.meta                 JSON {format, id, partitions}
//	P.store.hwm                  the generation high-water mark, decimal
//	P.store.own.<p>              partition p's claims
//	P.store.log.<p>              partition p's log: binary entries
//	P.store.snap.<p>             partition p's snapshot manifest, JSON
//	P.store.chunk.<p>.<id>.<c>   chunk c of snapshot id: binary entries
//	P.store.qout.<p>.<K>         where the worker publishes K's event; the
//	                             stream stores it as P.quiesce.<K>, its
//	                             draining record in header Idle-Record
//
// An entry (store/entry.go) is
//
//	upsert: 0x01 <uvarint lsn> <uvarint len(key)> <key> <uvarint timeout_ns> <u8 state> <uvarint generation> <u8 reason>
//	delete: 0x02 <uvarint lsn> <uvarint len(key)> <key>
//
// and per key the entry with the highest lsn wins.

// storeBase is the prefix of the store's own subjects.
const storeBase = prefix + ".store."

// storeRecordHeader carries an event's draining record.
const storeRecordHeader = "Idle-Record"

// The store's subjects, as package store names them (store/layout.go).
func storeLog(p int) string  { return storeBase + "log." + strconv.Itoa(p) }
func storeSnap(p int) string { return storeBase + "snap." + strconv.Itoa(p) }
func storeChunk(p int, id string, c int) string {
	return storeBase + "chunk." + strconv.Itoa(p) + "." + id + "." + strconv.Itoa(c)
}
func storeEventIn(p int, key string) string { return storeBase + "qout." + strconv.Itoa(p) + "." + key }

const (
	storeMetaSubject = storeBase + "meta"
	storeHWMSubject  = storeBase + "hwm"
)

// appendUpsert appends rec as an upsert entry numbered lsn. The timeout is
// written as given, negative ones as 0.
func appendUpsert(b []byte, lsn uint64, rec coordinator.Record) []byte {
	b = append(b, 1)
	b = binary.AppendUvarint(b, lsn)
	b = binary.AppendUvarint(b, uint64(len(rec.Key)))
	b = append(b, rec.Key...)
	b = binary.AppendUvarint(b, uint64(max(rec.IdleTimeout, 0)))
	b = append(b, byte(rec.State))
	b = binary.AppendUvarint(b, rec.Generation)
	return append(b, byte(rec.Reason))
}

// appendDelete appends the deletion of key numbered lsn.
func appendDelete(b []byte, lsn uint64, key string) []byte {
	b = append(b, 2)
	b = binary.AppendUvarint(b, lsn)
	b = binary.AppendUvarint(b, uint64(len(key)))
	return append(b, key...)
}

// storeEntry is one decoded entry.
type storeEntry struct {
	lsn uint64
	del bool
	rec coordinator.Record
}

// decodeEntries decodes data, a sequence of entries.
func decodeEntries(data []byte) ([]storeEntry, error) {
	var out []storeEntry
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(data)
		if n <= 0 {
			return 0, false
		}
		data = data[n:]
		return v, true
	}
	for len(data) > 0 {
		var e storeEntry
		kind := data[0]
		data = data[1:]
		if kind != 1 && kind != 2 {
			return out, fmt.Errorf("entry kind %d", kind)
		}
		lsn, ok := next()
		n, ok2 := next()
		if !ok || !ok2 || n > uint64(len(data)) {
			return out, errors.New("truncated entry")
		}
		e.lsn, e.rec.Key, data = lsn, string(data[:n]), data[n:]
		if kind == 2 {
			e.del = true
			out = append(out, e)
			continue
		}
		to, ok := next()
		if !ok || len(data) < 1 {
			return out, errors.New("truncated entry")
		}
		e.rec.IdleTimeout, e.rec.State = time.Duration(to), coordinator.State(data[0])
		data = data[1:]
		gen, ok := next()
		if !ok || len(data) < 1 {
			return out, errors.New("truncated entry")
		}
		e.rec.Generation, e.rec.Reason = gen, coordinator.Reason(data[0])
		data = data[1:]
		out = append(out, e)
	}
	return out, nil
}

// storeMeta is the body of P.store.meta.
type storeMeta struct {
	Format       int    `json:"format"`
	ID           string `json:"id"`
	Partitions   int    `json:"partitions"`
	MigratedFrom string `json:"migrated_from,omitempty"`
}

// storeManifest is the body of P.store.snap.<p>.
type storeManifest struct {
	ID      string `json:"id"`
	Chunks  int    `json:"chunks"`
	Records int    `json:"records"`
	Covers  uint64 `json:"covers"`
	LSN     uint64 `json:"lsn"`
}

// storeView reads and writes the stream of a worker's store on a
// connection of the test.
type storeView struct {
	t      *testing.T
	js     jetstream.JetStream
	stream jetstream.Stream
}

// openStoreView opens the store's stream, waiting for a worker to create
// it.
func openStoreView(t *testing.T, nc *nats.Conn) *storeView {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	v := &storeView{t: t, js: js}
	waitFor(t, bound, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		v.stream, err = js.Stream(ctx, store.DefaultStreamName)
		return err == nil
	})
	return v
}

func (v *storeView) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), bound)
}

// last returns the last message on subject, or nil when there is none.
func (v *storeView) last(subject string) *jetstream.RawStreamMsg {
	v.t.Helper()
	ctx, cancel := v.ctx()
	defer cancel()
	m, err := v.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		v.t.Fatalf("read %s: %v", subject, err)
	}
	return m
}

// meta returns P.store.meta, and false when there is none.
func (v *storeView) meta() (storeMeta, bool) {
	v.t.Helper()
	var m storeMeta
	msg := v.last(storeMetaSubject)
	if msg == nil {
		return m, false
	}
	if err := json.Unmarshal(msg.Data, &m); err != nil {
		v.t.Fatalf("%s %q: %v", storeMetaSubject, msg.Data, err)
	}
	return m, true
}

// waitMeta waits for P.store.meta and returns it.
func (v *storeView) waitMeta() storeMeta {
	v.t.Helper()
	var m storeMeta
	waitFor(v.t, bound, func() bool {
		var ok bool
		m, ok = v.meta()
		return ok
	})
	return m
}

// highWater returns the body of P.store.hwm, waiting for one.
func (v *storeView) highWater() string {
	v.t.Helper()
	var hw string
	waitFor(v.t, bound, func() bool {
		m := v.last(storeHWMSubject)
		if m != nil {
			hw = string(m.Data)
		}
		return m != nil
	})
	return hw
}

// counts returns the number of messages per subject in the stream.
func (v *storeView) counts() map[string]uint64 {
	v.t.Helper()
	ctx, cancel := v.ctx()
	defer cancel()
	info, err := v.stream.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		v.t.Fatalf("stream info: %v", err)
	}
	return info.State.Subjects
}

// put stores a message on subject as is, with no fencing: what anyone
// allowed to publish under P.store. could write.
func (v *storeView) put(subject string, data []byte, h nats.Header) {
	v.t.Helper()
	ctx, cancel := v.ctx()
	defer cancel()
	if _, err := v.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: data, Header: h}); err != nil {
		v.t.Fatalf("store %s: %v", subject, err)
	}
}

// putRecords stores each of recs as an upsert in a log message of its own,
// on its key's partition's log, numbered from lsn on.
func (v *storeView) putRecords(partitions int, lsn uint64, recs ...coordinator.Record) {
	v.t.Helper()
	for _, rec := range recs {
		v.put(storeLog(partition.Of(rec.Key, partitions)), appendUpsert(nil, lsn, rec), nil)
		lsn++
	}
}

// purge removes every message on subject.
func (v *storeView) purge(subject string) {
	v.t.Helper()
	ctx, cancel := v.ctx()
	defer cancel()
	if err := v.stream.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
		v.t.Fatalf("purge %s: %v", subject, err)
	}
}

// records returns every record the store holds, by key, as a restart
// would read them: each partition's snapshot, then the log messages and
// events stored after it, the entry with the highest lsn winning per key.
// Like a restart, it skips what does not decode (entries after a bad one
// in the same message, an unreadable manifest, a missing chunk). It
// returns false when the stream changed under it (a snapshot replaced the
// one it read): the caller reads again.
func (v *storeView) records() (map[string]storeEntry, bool) {
	v.t.Helper()
	m, ok := v.meta()
	if !ok {
		return map[string]storeEntry{}, true
	}
	n := m.Partitions
	got := map[string]storeEntry{}
	apply := func(data []byte) {
		es, _ := decodeEntries(data) // those before a bad one count
		for _, e := range es {
			if old, ok := got[e.rec.Key]; !ok || e.lsn > old.lsn {
				got[e.rec.Key] = e
			}
		}
	}
	covers := make([]uint64, n)
	for p := range n {
		msg := v.last(storeSnap(p))
		if msg == nil {
			continue
		}
		var man storeManifest
		if err := json.Unmarshal(msg.Data, &man); err != nil {
			continue // the partition is read from its log alone
		}
		covers[p] = man.Covers
		for c := range man.Chunks {
			if cm := v.last(storeChunk(p, man.ID, c)); cm != nil {
				apply(cm.Data)
				continue
			}
			if again := v.last(storeSnap(p)); again == nil || again.Sequence != msg.Sequence {
				return nil, false // replaced and purged meanwhile
			}
		}
	}
	for _, msg := range v.read(storeBase+"log.>", prefix+".quiesce.>") {
		md, err := msg.Metadata()
		if err != nil {
			v.t.Fatalf("metadata: %v", err)
		}
		var p int
		var data []byte
		if rest, ok := strings.CutPrefix(msg.Subject(), storeBase+"log."); ok {
			if p, err = strconv.Atoi(rest); err != nil {
				continue
			}
			data = msg.Data()
		} else {
			raw := msg.Headers().Get(storeRecordHeader)
			if data, err = base64.RawStdEncoding.DecodeString(raw); err != nil || raw == "" {
				continue
			}
			p = partition.Of(strings.TrimPrefix(msg.Subject(), prefix+".quiesce."), n)
		}
		if p < 0 || p >= n || md.Sequence.Stream <= covers[p] {
			continue
		}
		apply(data)
	}
	for k, e := range got {
		if e.del {
			delete(got, k)
		}
	}
	return got, true
}

// read returns every message stored on the subjects filters match, read
// through an ephemeral consumer of the test's own.
func (v *storeView) read(filters ...string) []jetstream.Msg {
	v.t.Helper()
	ctx, cancel := v.ctx()
	defer cancel()
	cons, err := v.stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubjects: filters, DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute, MemoryStorage: true,
	})
	if err != nil {
		v.t.Fatalf("consumer on %v: %v", filters, err)
	}
	defer func() { _ = v.stream.DeleteConsumer(context.Background(), cons.CachedInfo().Name) }()
	var out []jetstream.Msg
	for pending := cons.CachedInfo().NumPending; uint64(len(out)) < pending; {
		batch, err := cons.Fetch(int(min(pending-uint64(len(out)), 1000)), jetstream.FetchMaxWait(bound))
		if err != nil {
			v.t.Fatalf("fetch: %v", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			out = append(out, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			v.t.Fatalf("fetch: %v", err)
		}
		if got == 0 {
			v.t.Fatalf("fetch on %v: %d of %d messages read, then none within %v", filters, len(out), pending, bound)
		}
	}
	return out
}

// record returns key's stored record, reading the store again while a
// snapshot replaces the one read.
func (v *storeView) record(key string) relRecord {
	v.t.Helper()
	for deadline := time.Now().Add(bound); ; {
		recs, ok := v.records()
		if !ok {
			if time.Now().After(deadline) {
				v.t.Fatalf("store records: snapshots still replaced after %v", bound)
			}
			continue
		}
		e, found := recs[key]
		if !found {
			return relRecord{}
		}
		return relRecordOf(e)
	}
}
