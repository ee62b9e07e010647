package bus

import (
	"context"

	"github.com/idle-worker/idle-worker/coordinator"
)

// generationBlock is how far ahead the worker reserves generations in the
// registry's high-water mark, so ids are never reused after a crash.
const generationBlock = 1 << 16

// restore loads the registry into the coordinator before the worker serves.
func (w *Worker) restore(ctx context.Context) error {
	if w.reg == nil {
		return nil
	}
	st, err := w.reg.Load(ctx)
	if err != nil {
		return err
	}
	now := w.now()
	restored := 0
	for _, rec := range st.Records {
		if err := w.coord.Restore(rec, now); err != nil {
			w.log.Warn("registry record not restored", "backend", rec.Key, "error", err)
			continue
		}
		restored++
	}
	w.coord.SetGenerationFloor(st.HighWater)
	w.incarn = st.ID
	w.hwm = w.coord.Generation() + generationBlock
	// Stored before any id of this run is used, so a crash right after
	// start cannot hand out a generation twice.
	if err := w.reg.StoreHighWater(ctx, w.hwm); err != nil {
		return err
	}
	w.stats.restored.Store(int64(restored))
	w.log.Info("registry loaded", "restored", restored, "skipped", st.Skipped,
		"running", w.coord.Count(coordinator.Running), "draining", w.coord.Count(coordinator.Draining),
		"quiesced", w.coord.Count(coordinator.Quiesced))
	return nil
}

// putRecord queues key's record for the registry.
func (w *Worker) putRecord(key string) {
	if rec, ok := w.coord.Record(key); ok {
		w.reg.Put(rec)
	}
}

// keepHighWater moves the stored generation high-water mark ahead of the
// generations in use, half a block early.
func (w *Worker) keepHighWater() {
	if g := w.coord.Generation(); g+generationBlock/2 > w.hwm {
		w.hwm = g + generationBlock
		w.reg.SetHighWater(w.hwm)
	}
}
