package bus

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/idle-worker/idle-worker/coordinator"
)

// Partition ownership. With a Store, keys fall into the store's partitions
// and the worker decides only for the partitions it claimed: it ignores
// heartbeats and reports of the others (their owner answers them), and
// its coordinator holds only its own partitions' backends. A standalone
// worker claims every partition at start; in a cluster a controller calls
// Acquire and Release, and a partition another worker claimed arrives on
// Store.Lost.

// owns reports whether the worker decides for key's partition. Loop only.
func (w *Worker) owns(key string) bool {
	return w.ownsAll || w.owned[PartitionOf(key, len(w.owned))]
}

// Owned returns the partitions the worker decides for, ascending; nil
// without a Store.
func (w *Worker) Owned() []int {
	w.ownMu.Lock()
	defer w.ownMu.Unlock()
	return slices.Clone(w.ownedList)
}

// setOwned records parts as owned or not, and with a Router subscribes to
// their messages or drops them. Loop only.
func (w *Worker) setOwned(parts []int, own bool) {
	for _, p := range parts {
		w.owned[p] = own
	}
	if own {
		w.subscribeParts(parts)
	} else {
		w.unsubscribeParts(parts)
	}
	var list []int
	for p, o := range w.owned {
		if o {
			list = append(list, p)
		}
	}
	w.ownsAll = len(list) == len(w.owned) // no hash per heartbeat then
	w.ownMu.Lock()
	w.ownedList = list
	w.ownMu.Unlock()
	w.stats.owned.Store(int64(len(list)))
}

// Acquire claims parts in the store and restores their backends: from then
// on the worker decides for them. Running backends get a full timeout of
// grace from now (a takeover may delay a drain, never bring it early);
// draining ones keep their event ids. It blocks for the store's read.
func (w *Worker) Acquire(ctx context.Context, parts []int) error {
	if w.reg == nil || len(parts) == 0 {
		return nil
	}
	c, err := w.reg.Claim(ctx, parts)
	if err != nil {
		return fmt.Errorf("bus: acquire partitions %v: %w", parts, err)
	}
	return w.do(func() {
		w.warmTrust()
		restored, skipped := w.restoreRecords(c.Records, c.HighWater)
		w.setOwned(parts, true)
		w.stats.claims.Add(uint64(len(parts)))
		w.stats.restored.Add(int64(restored))
		w.stats.restoreSkipped.Add(int64(c.Skipped + skipped))
		w.log.Info("partitions acquired", "partitions", parts, "restored", restored, "skipped", c.Skipped+skipped)
	})
}

// Release stops deciding for parts, forgets their backends here, and hands
// them back to the store (pending writes stored, a snapshot, a release),
// so another worker can claim them at once.
func (w *Worker) Release(ctx context.Context, parts []int) error {
	if w.reg == nil || len(parts) == 0 {
		return nil
	}
	if err := w.drop(parts); err != nil {
		return err
	}
	w.stats.releases.Add(uint64(len(parts)))
	if err := w.reg.Release(ctx, parts); err != nil {
		return fmt.Errorf("bus: release partitions %v: %w", parts, err)
	}
	w.log.Info("partitions released", "partitions", parts)
	return nil
}

// ReleaseAll hands every partition back to the store, as Release does,
// when the worker is about to stop: it stops deciding for them at once but
// does not take the time to forget their backends one by one.
func (w *Worker) ReleaseAll(ctx context.Context) error {
	if w.reg == nil {
		return nil
	}
	var parts []int
	if err := w.do(func() {
		parts = slices.Clone(w.ownedList)
		w.setOwned(parts, false)
	}); err != nil {
		return err
	}
	if len(parts) == 0 {
		return nil
	}
	w.stats.releases.Add(uint64(len(parts)))
	if err := w.reg.Release(ctx, parts); err != nil {
		return fmt.Errorf("bus: release partitions %v: %w", parts, err)
	}
	w.log.Info("partitions released", "partitions", len(parts))
	return nil
}

// Verify asks the store whether the worker's claims on parts still hold
// (another member reports owning them): a partition claimed since is
// dropped, as if a write had been refused.
func (w *Worker) Verify(ctx context.Context, parts []int) error {
	if w.reg == nil || len(parts) == 0 {
		return nil
	}
	return w.reg.Verify(ctx, parts)
}

// drop marks parts as not owned and removes their backends from the
// coordinator, a slice of keys per turn of the loop.
func (w *Worker) drop(parts []int) error {
	var set []bool
	if err := w.do(func() {
		set = make([]bool, len(w.owned))
		for _, p := range parts {
			set[p] = true
		}
		w.setOwned(parts, false)
	}); err != nil {
		return err
	}
	return w.removeWhere(func(key string) bool { return set[PartitionOf(key, len(set))] })
}

// lose handles a partition another worker claimed: the store refused this
// worker's write. Loop only; the removal runs off the loop.
func (w *Worker) lose(p int) {
	if w.owned == nil || !w.owned[p] {
		return
	}
	w.setOwned([]int{p}, false)
	w.stats.lost.Add(1)
	w.log.Warn("partition claimed by another worker; no longer deciding for it", "partition", p)
	n := len(w.owned)
	go func() {
		if err := w.removeWhere(func(key string) bool { return PartitionOf(key, n) == p }); err != nil {
			w.log.Debug("forgetting a lost partition", "partition", p, "error", err)
		}
	}()
}

// removeWhere removes from the coordinator every backend whose key match
// says so, scanning the keys in slices on the loop. A key whose partition
// the worker owns again by the time its slice runs (acquired back while
// the scan went on) is kept: it was restored anew.
func (w *Worker) removeWhere(match func(key string) bool) error {
	after := ""
	for more := true; more; {
		var doomed []string
		err := w.do(func() {
			var next string
			next, more = w.coord.Scan(w.now(), after, "", w.sliceSize(), func(b coordinator.Backend) bool {
				if match(b.Key) && !w.owns(b.Key) {
					doomed = append(doomed, b.Key)
					w.warmKeep(b)
				}
				return true
			})
			for _, k := range doomed {
				w.coord.Remove(k)
			}
			after = next
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// restoreRecords checks recs and restores them into the coordinator at
// now; hwm is the stored generation high-water mark they were read with.
// The worker's own generation counter stays where it was: it hands out
// generations from the block it reserved, and restored backends keep
// theirs (from any worker's block). Loop only.
func (w *Worker) restoreRecords(recs []coordinator.Record, hwm uint64) (restored, skipped int) {
	recs, skipped = w.checkRecords(recs, hwm)
	gen := w.coord.Generation()
	now := w.now()
	refused := 0
	w.coord.Grow(len(recs))
	for _, rec := range recs {
		if rec.Generation == 0 {
			// A fresh one from this worker's block.
			gen++
			rec.Generation = gen
		}
		last := now
		if rec.State == coordinator.Running {
			if t, ok := w.warm.lastActive(rec.Key); ok {
				last = t
			}
		}
		delete(w.warm.seen, rec.Key)
		if err := w.coord.RestoreAt(rec, now, last); err != nil {
			if refused++; refused == 1 {
				w.log.Warn("stored records not restored: a backend limit is reached", "first", rec.Key, "error", err)
			}
			continue
		}
		restored++
	}
	w.coord.SetGeneration(gen)
	return restored, skipped + refused
}

// reserveAhead reserves the next block of generations when the current one
// is half used, off the loop. Loop only.
func (w *Worker) reserveAhead() {
	if w.reg == nil || w.reserving || w.coord.Generation()+generationBlock/2 <= w.hwm {
		return
	}
	if w.coord.Generation() >= w.hwm && !w.overrun {
		w.overrun = true
		w.log.Error("generations handed out beyond the reserved block; the store did not answer in time", "generation", w.coord.Generation(), "reserved_to", w.hwm)
	}
	w.reserving = true
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start, err := w.reg.Reserve(ctx, 0, generationBlock)
		_ = w.do(func() {
			w.reserving = false
			if err != nil {
				w.log.Warn("reserving generations", "error", err)
				return
			}
			w.coord.SetGenerationFloor(start - 1)
			w.blockStart, w.hwm, w.overrun = start, start+generationBlock, false
		})
	}()
}
