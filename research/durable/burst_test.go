//go:build durableresearch

package durable

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// burstMode is one way of storing the events of a burst.
type burstMode int

const (
	// modeLimit: bare async publishes, unfenced, of the events (the issue's
	// "limit": same stream, per-key subjects, RePublish).
	modeLimit burstMode = iota
	// modeSingle: one async fenced publish per event; the event's payload
	// is also its draining record (no separate record message).
	modeSingle
	// modeBatch: per partition, one atomic batch at a time holding one log
	// message with the draining records of its events, then the events;
	// fenced on the first message.
	modeBatch
	// modeBatchPairs: per partition, one atomic batch at a time of event +
	// per-key record message pairs (P.reg.<p>.<K>).
	modeBatchPairs
	// modeBatchAll: one writer (WRITERS of them) for all partitions; each
	// batch holds, per partition present, one log message (fenced on that
	// partition's claim) and its events, up to the batch cap.
	modeBatchAll
)

func (m burstMode) String() string {
	return [...]string{"limit: async unfenced events", "single: async fenced events (event = record)",
		"batch: [log msg + events] per partition", "batch: [event, record] pairs per partition",
		"batch: all partitions, [log+events] per part."}[m]
}

// TestBurst: N events due within D (default 50k in 100 ms), 64 partitions,
// R1 file storage; for each mode, the time until a core subscriber of
// P.quiesce.> on its own connection has seen the last event, and each
// event's lateness (arrival minus due) p50/p99/max. MODES filters by name.
func TestBurst(t *testing.T) {
	n := envInt("N", 50000)
	spread := time.Duration(envInt("SPREAD_MS", 100)) * time.Millisecond
	maxBatch := envInt("MAXBATCH", 1000)
	only := regexp.MustCompile(os.Getenv("MODES"))
	rounds := envInt("ROUNDS", 2)
	t.Logf("%d events due within %v, 64 partitions, batch cap %d messages; load %s", n, spread, maxBatch, load())
	for round := range rounds {
		for _, mode := range []burstMode{modeLimit, modeSingle, modeBatch, modeBatchPairs, modeBatchAll} {
			if !only.MatchString(mode.String()) {
				continue
			}
			runBurst(t, mode, n, spread, maxBatch, round)
		}
	}
}

func runBurst(t *testing.T, mode burstMode, n int, spread time.Duration, maxBatch, round int) {
	s := startServer(t, "", func(o *server.Options) {
		if maxBatch > 1000 {
			o.JetStreamLimits.MaxBatchSize = maxBatch
		}
	})
	defer s.Close()
	nc, js := connect(t, s.ClientURL())
	defer nc.Close()
	createStream(t, js, idleStreamConfig(1))
	const parts = 64
	toks := make([]uint64, parts)
	for p := range parts {
		toks[p], _ = claim(t, nc, p, 0, "w")
	}
	snc, _ := connect(t, s.ClientURL())
	defer snc.Close()
	arrive := make([]int64, n)
	var seen atomic.Int64
	sub, err := snc.Subscribe("P.quiesce.>", func(m *nats.Msg) {
		// The event index is the key's last token.
		i, err := strconv.Atoi(m.Subject[bytes.LastIndexByte([]byte(m.Subject), '.')+1:])
		if err == nil && i < n {
			if arrive[i] == 0 {
				arrive[i] = time.Now().UnixNano()
			}
			seen.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	_ = snc.Flush()

	// Queues per partition, filled by the releaser at each event's due time.
	type pq struct {
		mu   sync.Mutex
		due  []int
		wake chan struct{}
	}
	qs := make([]*pq, parts)
	for p := range qs {
		qs[p] = &pq{wake: make(chan struct{}, 1)}
	}
	ajs, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(65536))
	b := newBatcher(t, nc)
	var failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	nb := atomic.Int64{}
	allWake := make(chan struct{}, 1)
	if mode == modeBatchAll {
		var takeMu sync.Mutex
		for w := range envInt("WRITERS", 1) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-allWake:
					case <-stop:
						return
					}
					for {
						// Take up to maxBatch messages across partitions.
						takeMu.Lock()
						var msgs []batchMsg
						room := maxBatch
						for p := 0; p < parts && room > 1; p++ {
							q := qs[p]
							q.mu.Lock()
							k := min(room-1, len(q.due))
							take := slices.Clone(q.due[:k])
							q.due = q.due[k:]
							q.mu.Unlock()
							if k == 0 {
								continue
							}
							room -= k + 1
							var log bytes.Buffer
							for _, i := range take {
								key := keyOf(i)
								v := recordPayload(i, "draining")
								_ = binary.Write(&log, binary.BigEndian, uint16(len(key)))
								log.WriteString(key)
								_ = binary.Write(&log, binary.BigEndian, uint16(len(v)))
								log.Write(v)
							}
							msgs = append(msgs, batchMsg{subject: fmt.Sprintf("P.log.%d.%d", p, nb.Add(1)), hdr: fence(toks[p], fmt.Sprintf("P.own.%d", p)), data: log.Bytes()})
							for _, i := range take {
								key := keyOf(i)
								msgs = append(msgs, batchMsg{subject: fmt.Sprintf("P.qout.%d.%s", p, key),
									hdr: nats.Header{hdrMsgID: {fmt.Sprintf("p%d.%d.%d.1", p, toks[p], i)}}, data: eventPayload(strconv.Itoa(i), key)})
							}
						}
						takeMu.Unlock()
						if len(msgs) == 0 {
							break
						}
						a, err := b.send(fmt.Sprintf("r%d-w%d-%d", round, w, nb.Add(1)), msgs, 30*time.Second)
						if err != nil || a.Error != nil {
							if failed.Add(1) == 1 {
								t.Errorf("batch: %v %s", err, a)
							}
						}
					}
				}
			}()
		}
	}
	for p := range parts {
		if mode == modeBatchAll {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := qs[p]
			claimSubj := fmt.Sprintf("P.own.%d", p)
			for {
				select {
				case <-q.wake:
				case <-stop:
					return
				}
				for {
					q.mu.Lock()
					per := maxBatch
					if mode == modeBatch {
						per = maxBatch - 1
					} else if mode == modeBatchPairs {
						per = maxBatch / 2
					}
					if mode == modeLimit || mode == modeSingle {
						per = len(q.due)
					}
					k := min(per, len(q.due))
					take := slices.Clone(q.due[:k])
					q.due = q.due[k:]
					q.mu.Unlock()
					if len(take) == 0 {
						break
					}
					switch mode {
					case modeLimit, modeSingle:
						for _, i := range take {
							key := keyOf(i)
							m := &nats.Msg{Subject: fmt.Sprintf("P.qout.%d.%s", p, key), Data: eventPayload(strconv.Itoa(i), key)}
							if mode == modeSingle {
								m.Header = fence(toks[p], claimSubj)
								m.Header.Set(hdrMsgID, fmt.Sprintf("p%d.%d.%d.1", p, toks[p], i))
							}
							if _, err := ajs.PublishMsgAsync(m); err != nil {
								failed.Add(1)
							}
						}
					case modeBatch, modeBatchPairs:
						var msgs []batchMsg
						if mode == modeBatch {
							var log bytes.Buffer
							for _, i := range take {
								key := keyOf(i)
								v := recordPayload(i, "draining")
								_ = binary.Write(&log, binary.BigEndian, uint16(len(key)))
								log.WriteString(key)
								_ = binary.Write(&log, binary.BigEndian, uint16(len(v)))
								log.Write(v)
							}
							msgs = append(msgs, batchMsg{subject: fmt.Sprintf("P.log.%d.%d", p, nb.Add(1)), hdr: fence(toks[p], claimSubj), data: log.Bytes()})
						}
						for _, i := range take {
							key := keyOf(i)
							h := nats.Header{hdrMsgID: {fmt.Sprintf("p%d.%d.%d.1", p, toks[p], i)}}
							if len(msgs) == 0 {
								for k, v := range fence(toks[p], claimSubj) {
									h[k] = v
								}
							}
							msgs = append(msgs, batchMsg{subject: fmt.Sprintf("P.qout.%d.%s", p, key), hdr: h, data: eventPayload(strconv.Itoa(i), key)})
							if mode == modeBatchPairs {
								msgs = append(msgs, batchMsg{subject: fmt.Sprintf("P.reg.%d.%s", p, key), data: recordPayload(i, "draining")})
							}
						}
						a, err := b.send(fmt.Sprintf("r%d-p%d-%d", round, p, nb.Add(1)), msgs, 30*time.Second)
						if err != nil || a.Error != nil {
							if failed.Add(int64(len(take))) == int64(len(take)) {
								t.Errorf("batch: %v %s", err, a)
							}
						}
					}
				}
			}
		}()
	}

	// Release events at their due times, 1 ms at a time.
	due := make([]int64, n)
	t0 := time.Now().Add(20 * time.Millisecond)
	for i := range due {
		due[i] = t0.Add(time.Duration(int64(spread) * int64(i) / int64(n))).UnixNano()
	}
	cpu0 := cpuNow()
	next := 0
	for next < n {
		now := time.Now().UnixNano()
		touched := map[int]bool{}
		for next < n && due[next] <= now {
			p := part(keyOf(next), parts)
			q := qs[p]
			q.mu.Lock()
			q.due = append(q.due, next)
			q.mu.Unlock()
			touched[p] = true
			next++
		}
		for p := range touched {
			select {
			case qs[p].wake <- struct{}{}:
			default:
			}
		}
		if len(touched) > 0 && mode == modeBatchAll {
			// Wake every writer that is idle.
			for range envInt("WRITERS", 1) {
				select {
				case allWake <- struct{}{}:
				default:
				}
			}
		}
		time.Sleep(time.Millisecond)
	}
	waitFor(t, 60*time.Second, "all events seen", func() bool { return seen.Load() >= int64(n) || failed.Load() > 0 })
	cpu := cpuNow() - cpu0
	close(stop)
	wg.Wait()
	var last int64
	late := make([]time.Duration, 0, n)
	missing := 0
	for i, a := range arrive {
		if a == 0 {
			missing++
			continue
		}
		last = max(last, a)
		late = append(late, time.Duration(a-due[i]))
	}
	if len(late) == 0 {
		t.Errorf("round %d %s: nothing arrived", round, mode)
		return
	}
	slices.Sort(late)
	pct := func(q float64) time.Duration { return late[int(q*float64(len(late)-1))].Round(time.Millisecond) }
	total := time.Duration(last - t0.UnixNano())
	t.Logf("round %d %-44s all seen %6.0f ms after the first due (%6.0f ev/s); lateness p50 %v p99 %v max %v; missing %d, seen %d; cpu %.1f us/event; load %s",
		round, mode, float64(total.Milliseconds()), float64(n)/total.Seconds(), pct(0.5), pct(0.99), late[len(late)-1].Round(time.Millisecond),
		missing, seen.Load(), float64(cpu.Microseconds())/float64(n), load())
}
