//go:build durableresearch

package durable

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/internal/natstest"
)

// pending is one publish whose records wait for its ack.
type pending struct {
	f     jetstream.PubAckFuture
	since []int64 // when each record in it was "answered"
	p     int     // partition, for log publishes
}

// TestRegistration: RATE new backends per second (default 250k) for SECS
// seconds (default 2); each record is stored fenced, (per-key) as its own
// message on P.reg.<p>.<K>, or (log) appended to its partition's buffer,
// which is published every FLUSH_MS (default 2) as one message
// P.log.<p>.<n> holding all its records. Reports the answered -> acked
// time per record, p50/p99/max, and whether the store kept up.
func TestRegistration(t *testing.T) {
	rate := envInt("RATE", 250000)
	secs := envInt("SECS", 2)
	flush := time.Duration(envInt("FLUSH_MS", 2)) * time.Millisecond
	only := regexp.MustCompile(os.Getenv("MODES"))
	for _, mode := range []string{"per-key", "log", "log-r3"} {
		if !only.MatchString(mode) {
			continue
		}
		var url string
		replicas := 1
		var closeAll func()
		if mode == "log-r3" {
			c := natstest.StartCluster(t, 3)
			url, replicas = c.URLs(), 3
			closeAll = func() {
				for _, s := range c.Servers {
					_ = s.Close()
				}
			}
		} else {
			s := startServer(t, "")
			url, closeAll = s.ClientURL(), func() { _ = s.Close() }
		}
		nc, js := connect(t, url)
		createStream(t, js, idleStreamConfig(replicas))
		const parts = 64
		toks := make([]uint64, parts)
		for p := range parts {
			toks[p], _ = claim(t, nc, p, 0, "w")
		}
		ajs, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(65536))
		futs := make(chan pending, 1<<20)
		lat := make([]time.Duration, 0, rate*secs)
		var msgs int
		done := make(chan struct{})
		failed := 0
		var mu sync.Mutex
		inflight := make([]bool, parts)
		go func() {
			defer close(done)
			for p := range futs {
				select {
				case <-p.f.Ok():
				case err := <-p.f.Err():
					if failed == 0 {
						t.Logf("first failure: %v", err)
					}
					failed++
				}
				if mode == "log-r3" {
					mu.Lock()
					inflight[p.p] = false
					mu.Unlock()
				}
				now := time.Now().UnixNano()
				for _, s := range p.since {
					lat = append(lat, time.Duration(now-s))
				}
			}
		}()
		n := rate * secs
		bufs := make([]bytes.Buffer, parts)
		since := make([][]int64, parts)
		stopFlush := make(chan struct{})
		flushed := make(chan struct{})
		var seq int
		flushAll := func() {
			mu.Lock()
			defer mu.Unlock()
			for p := range parts {
				if len(since[p]) == 0 || inflight[p] {
					continue
				}
				// R3: one fenced write per partition in flight (10164 otherwise).
				inflight[p] = mode == "log-r3"
				seq++
				m := &nats.Msg{Subject: fmt.Sprintf("P.log.%d.%d", p, seq), Header: fence(toks[p], fmt.Sprintf("P.own.%d", p)), Data: slices.Clone(bufs[p].Bytes())}
				f, err := ajs.PublishMsgAsync(m)
				if err != nil {
					t.Error(err)
					return
				}
				msgs++
				futs <- pending{f, since[p], p}
				since[p] = nil
				bufs[p].Reset()
			}
		}
		if mode != "per-key" {
			go func() {
				defer close(flushed)
				tk := time.NewTicker(flush)
				defer tk.Stop()
				for {
					select {
					case <-tk.C:
						flushAll()
					case <-stopFlush:
						flushAll()
						return
					}
				}
			}()
		}
		cpu0, t0 := cpuNow(), time.Now()
		i := 0
		for i < n {
			// Everything due by now, at RATE per second.
			target := min(n, int(float64(rate)*time.Since(t0).Seconds())+1)
			now := time.Now().UnixNano()
			if mode == "per-key" {
				for ; i < target; i++ {
					k := keyOf(i)
					p := part(k, parts)
					f, err := ajs.PublishMsgAsync(&nats.Msg{Subject: fmt.Sprintf("P.reg.%d.%s", p, k), Header: fence(toks[p], fmt.Sprintf("P.own.%d", p)), Data: recordPayload(i, "running")}, jetstream.WithStallWait(10*time.Second))
					if err != nil {
						t.Fatal(err)
					}
					msgs++
					futs <- pending{f, []int64{now}, p}
				}
			} else {
				mu.Lock()
				for ; i < target; i++ {
					k := keyOf(i)
					p := part(k, parts)
					v := recordPayload(i, "running")
					b := &bufs[p]
					_ = binary.Write(b, binary.BigEndian, uint16(len(k)))
					b.WriteString(k)
					_ = binary.Write(b, binary.BigEndian, uint16(len(v)))
					b.Write(v)
					since[p] = append(since[p], now)
				}
				mu.Unlock()
			}
			time.Sleep(500 * time.Microsecond)
		}
		offered := time.Since(t0)
		if mode != "per-key" {
			close(stopFlush)
			<-flushed
			// Whatever is left behind partitions still in flight.
			waitFor(t, 30*time.Second, "last flush", func() bool {
				mu.Lock()
				left := 0
				for p := range parts {
					left += len(since[p])
				}
				mu.Unlock()
				if left > 0 {
					flushAll()
				}
				return left == 0
			})
		}
		close(futs)
		<-done
		el := time.Since(t0)
		cpu := cpuNow() - cpu0
		slices.Sort(lat)
		pct := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))].Round(time.Millisecond) }
		t.Logf("%-8s %d records offered at %d/s in %v, all acked after %v (%.0f/s): %d messages, %d failed; answered->acked p50 %v p99 %v max %v; cpu %.1f us/record; load %s",
			mode, n, rate, offered.Round(time.Millisecond), el.Round(time.Millisecond), float64(n)/el.Seconds(), msgs, failed,
			pct(0.5), pct(0.99), lat[len(lat)-1].Round(time.Millisecond), float64(cpu.Microseconds())/float64(n), load())
		nc.Close()
		closeAll()
	}
}
