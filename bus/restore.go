package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nuid"

	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/lograte"
)

// generationBlock is how far ahead the worker reserves generations in the
// registry's high-water mark, so ids are never reused after a crash.
const generationBlock = 1 << 16

// maxGeneration bounds the generations a registry may hold. A worker hands
// out at most a few million a day; one near 2^64 can only be forged or
// corrupt, and would make the next ids wrap.
const maxGeneration = 1 << 62

// restore reads the store's identity before the worker serves, reserves a
// block of generations, and, for a standalone worker, claims every
// partition and restores its backends. Stored data is the store writer's
// word, and the stream may have been written by someone else: a bad id or
// high-water mark starts a new id space instead of risking an id that was
// already sent, and every record is checked (see checkRecords).
func (w *Worker) restore(ctx context.Context) error {
	if w.reg == nil {
		return nil
	}
	t0 := time.Now()
	st, err := w.reg.Load(ctx)
	if err != nil {
		return err
	}
	if reason := checkIDSpace(st); reason != "" {
		old := st.ID
		st.ID, st.HighWater = nuid.Next(), 0
		w.log.Error("store id or high-water mark unusable; starting a new id space (re-sent events of draining backends get new ids)",
			"reason", reason, "stored_id", lograte.Clip(old, 80), "new_id", st.ID)
		if err := w.reg.StoreID(ctx, st.ID); err != nil {
			return err
		}
	}
	w.incarn = st.ID
	// Reserved before any id of this run is used, so a crash right after
	// start, or another worker, cannot hand out a generation twice.
	start, err := w.reg.Reserve(ctx, st.HighWater, generationBlock)
	if err != nil {
		return err
	}
	w.coord.SetGenerationFloor(start - 1)
	w.blockStart, w.hwm = start, start+generationBlock
	w.owned = make([]bool, w.reg.Partitions())
	w.stats.partitions.Store(int64(len(w.owned)))
	if w.cfg.Cluster {
		w.log.Info("store loaded; partitions are claimed as the cluster assigns them", "took", time.Since(t0))
		return nil
	}
	all := make([]int, len(w.owned))
	for p := range all {
		all[p] = p
	}
	c, err := w.reg.Claim(ctx, all)
	if err != nil {
		return err
	}
	restored, skipped := w.restoreRecords(c.Records, c.HighWater)
	w.setOwned(all, true)
	w.stats.claims.Add(uint64(len(all)))
	w.stats.restored.Store(int64(restored))
	w.stats.restoreSkipped.Store(int64(st.Skipped + c.Skipped + skipped))
	w.log.Info("registry loaded", "restored", restored, "skipped", st.Skipped+c.Skipped+skipped, "took", time.Since(t0),
		"running", w.coord.Count(coordinator.Running), "draining", w.coord.Count(coordinator.Draining),
		"quiesced", w.coord.Count(coordinator.Quiesced))
	return nil
}

// checkIDSpace says why st's id or high-water mark cannot be used, or "".
func checkIDSpace(st RegistryState) string {
	if st.Unreadable != "" {
		return st.Unreadable
	}
	if len(st.ID) == 0 || len(st.ID) > 64 {
		return fmt.Sprintf("id of %d bytes", len(st.ID))
	}
	for i := 0; i < len(st.ID); i++ {
		if !plain(st.ID[i]) || st.ID[i] == '-' {
			return "id holds bytes outside [A-Za-z0-9_]"
		}
	}
	if st.HighWater > maxGeneration {
		return fmt.Sprintf("high-water mark %d beyond %d", st.HighWater, uint64(maxGeneration))
	}
	if st.HighWater == 0 && !st.NewID {
		// Ids of this registry were handed out, but how far is unknown.
		return "high-water mark missing"
	}
	return ""
}

// checkRecords returns the records of st to restore and how many it had to
// renew or clamp. A running record, or a
// draining one that was sent a drain, keeps its generation, so a drain sent
// before a restart or crash is re-sent with the same id; that generation
// must be unique among them, at most the high-water mark (every generation
// handed out is) and far from wrapping, or it would reuse or wrap an event
// id: then the record gets a fresh generation instead (counted as
// renewed). Quiesced and report-drained records always get fresh ones:
// nothing will be re-sent with theirs. A timeout above MaxTimeout is clamped
// to it. Each kind of problem is logged once.
func (w *Worker) checkRecords(recs []coordinator.Record, hwm uint64) ([]coordinator.Record, int) {
	seen := make(map[uint64]struct{}, len(recs))
	out := recs[:0]
	skipped, clamped := 0, 0
	logged := map[string]bool{}
	renew := func(rec *coordinator.Record, why string) {
		skipped++
		if !logged[why] {
			logged[why] = true
			w.log.Warn("registry record's generation unusable; restoring it with a fresh one (a re-send gets a new id)",
				"backend", lograte.Clip(rec.Key, 200), "generation", rec.Generation, "reason", why)
		}
		rec.Generation = 0
	}
	for _, rec := range recs {
		resend := rec.State == coordinator.Running || (rec.State == coordinator.Draining && rec.Reason != 0)
		_, dup := seen[rec.Generation]
		switch {
		case !resend:
			rec.Generation = 0 // nothing re-sent with it: a fresh one
		case rec.Generation == 0 || rec.Generation > maxGeneration:
			renew(&rec, "generation out of range")
		case hwm > 0 && rec.Generation > hwm: // none in a new id space
			renew(&rec, "generation above the high-water mark")
		case rec.Generation >= w.blockStart && rec.Generation < w.hwm && rec.Generation > w.coord.Generation():
			// In this worker's block, yet not handed out by it.
			renew(&rec, "generation above the high-water mark")
		case dup:
			renew(&rec, "generation already used by another record")
		default:
			seen[rec.Generation] = struct{}{}
		}
		if rec.IdleTimeout > w.cfg.MaxTimeout {
			rec.IdleTimeout = w.cfg.MaxTimeout
			clamped++
		}
		out = append(out, rec)
	}
	if clamped > 0 {
		w.log.Warn("registry records had timeouts above the maximum; clamped", "records", clamped, "max_timeout", w.cfg.MaxTimeout)
	}
	return out, skipped + clamped
}
