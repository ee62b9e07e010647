package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
)

// ingestKeys returns n distinct backend keys shaped like the README's.
func ingestKeys(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = prefix + "-" + strconv.Itoa(i%1000) + ".gopls." + strconv.Itoa(i)
	}
	return keys
}

// measureIngest measures the plain subscriber and the worker on the same
// message stream, cfg.Rounds times each, alternating which goes first. The
// best round of each is the figure (noise on a shared machine only slows a
// run down); every round is kept.
func measureIngest(ctx context.Context, url string, cfg config, name string, body []byte) (ingestResult, error) {
	subj := bus.MustSubjects(bus.DefaultPrefix)
	keys := ingestKeys("dev", cfg.Keys)
	subjects := make([]string, len(keys))
	for i, k := range keys {
		subjects[i] = subj.Activity(k)
	}
	r := ingestResult{Body: name, Keys: cfg.Keys, Messages: cfg.Messages, Publishers: cfg.Publishers, Window: cfg.Window}
	plain := func() (rate, error) {
		// The limit: a subscriber on its own connection, through a channel
		// as long as the worker's queue, that only counts.
		res, err := measurePlain(ctx, url, cfg, subj.Activity(">"), subjects, body)
		if err != nil {
			return res, fmt.Errorf("plain subscriber: %w", err)
		}
		return res, nil
	}
	worker := func() (rate, error) {
		rw, err := startWorker(url, cfg, time.Minute, nil)
		if err != nil {
			return rate{}, err
		}
		applied := func() uint64 { return rw.w.Stats().Heartbeats }
		dropped := func() uint64 { return rw.w.Stats().Dropped }
		res, err := pump(ctx, url, cfg, subjects, body, applied, dropped)
		if _, _, serr := rw.stop(); err == nil {
			err = serr
		}
		if err != nil {
			return res, fmt.Errorf("worker: %w", err)
		}
		return res, nil
	}
	for round := range cfg.Rounds {
		first, second := plain, worker
		if round%2 == 1 {
			first, second = worker, plain
		}
		a, err := first()
		if err != nil {
			return r, err
		}
		b, err := second()
		if err != nil {
			return r, err
		}
		if round%2 == 1 {
			a, b = b, a
		}
		r.LimitRounds = append(r.LimitRounds, a)
		r.WorkerRounds = append(r.WorkerRounds, b)
	}
	best := func(rs []rate) rate {
		var total uint64
		b := rs[0]
		for _, x := range rs {
			total += x.Dropped
			if x.PerSecond > b.PerSecond {
				b = x
			}
		}
		b.Dropped = total // every drop of every round counts
		return b
	}
	r.Limit, r.Worker = best(r.LimitRounds), best(r.WorkerRounds)
	if r.Limit.PerSecond > 0 {
		r.Ratio = r.Worker.PerSecond / r.Limit.PerSecond
	}
	return r, nil
}

func measurePlain(ctx context.Context, url string, cfg config, wildcard string, subjects []string, body []byte) (rate, error) {
	nc, err := nats.Connect(url, nats.Name("idle-bench plain subscriber"))
	if err != nil {
		return rate{}, err
	}
	defer nc.Close()
	ch := make(chan *nats.Msg, cfg.QueueLength)
	sub, err := nc.ChanSubscribe(wildcard, ch)
	if err != nil {
		return rate{}, err
	}
	if err := nc.FlushTimeout(waitBound); err != nil {
		return rate{}, err
	}
	var count atomic.Uint64
	var wg sync.WaitGroup
	wg.Go(func() {
		for m := range ch {
			if m == nil { // stop
				return
			}
			count.Add(1)
		}
	})
	res, err := pump(ctx, url, cfg, subjects, body, count.Load, func() uint64 { return dropped(sub) })
	if uerr := sub.Unsubscribe(); err == nil {
		err = uerr
	}
	ch <- nil // after Unsubscribe nothing else is sent, and the reader drains ch
	wg.Wait()
	return res, err
}

// pump publishes cfg.Messages heartbeats, message j to subjects[j %
// len(subjects)], from cfg.Publishers connections, never more than
// cfg.Window ahead of consumed(). It returns once consumed() + dropped()
// reaches the total, or fails when the consumer stops making progress.
func pump(ctx context.Context, url string, cfg config, subjects []string, body []byte, consumed, dropped func() uint64) (rate, error) {
	total := uint64(cfg.Messages)
	window := uint64(cfg.Window)
	conns := make([]*nats.Conn, cfg.Publishers)
	for i := range conns {
		nc, err := nats.Connect(url, nats.Name("idle-bench publisher"))
		if err != nil {
			return rate{}, err
		}
		defer nc.Close()
		conns[i] = nc
	}
	var sent, seen atomic.Uint64 // seen: the last consumed() reading
	// wait blocks until message s (1-based) is within the window, or ctx
	// is done.
	wait := func(s uint64) {
		for s > seen.Load()+window && ctx.Err() == nil {
			c := consumed() + dropped()
			if c > seen.Load() {
				seen.Store(c)
			}
			if s > c+window {
				time.Sleep(50 * time.Microsecond)
			}
		}
	}
	errs := make(chan error, len(conns))
	start := time.Now()
	var wg sync.WaitGroup
	for _, nc := range conns {
		wg.Go(func() {
			for {
				s := sent.Add(1)
				if s > total {
					errs <- nc.FlushTimeout(waitBound)
					return
				}
				if wait(s); ctx.Err() != nil {
					errs <- ctx.Err()
					return
				}
				if err := nc.Publish(subjects[(s-1)%uint64(len(subjects))], body); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return rate{}, err
		}
	}
	// Wait for the consumer to finish, failing when it stalls.
	last, lastChange := uint64(0), time.Now()
	for {
		c, d := consumed(), dropped()
		if c+d >= total {
			elapsed := time.Since(start)
			return rate{Consumed: c, Dropped: d, Seconds: elapsed.Seconds(), PerSecond: float64(c) / elapsed.Seconds()}, nil
		}
		if c+d != last {
			last, lastChange = c+d, time.Now()
		} else if time.Since(lastChange) > 5*time.Second {
			return rate{}, fmt.Errorf("consumer stalled at %d consumed, %d dropped of %d", c, d, total)
		}
		if err := ctx.Err(); err != nil {
			return rate{}, err
		}
		time.Sleep(100 * time.Microsecond)
	}
}
