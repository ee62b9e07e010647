package integration

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/partition"
)

// roundTally is what a round found.
type roundTally struct {
	lost       int // silent backends with no event, live or stored
	lostKeys   []string
	storedOnly int // backends whose events no subscriber received, but the stream holds
	dupFirsts  int // ids whose first emission a subscriber received twice, or the stream holds twice
	idChanges  int // backends with more than one id
	renewedIDs int // of those, backends whose later ids came only as re-sends (attempt > 1)
	sharedIDs  int // ids of more than one backend
	early      int // events received before their backend's deadline (less earlyMargin)
	firstEarly string
	resent     int // stored events with attempt > 1
	reAttempts int // stored re-sends whose id and attempt another stored re-send has (two workers counted alike)
	late       []time.Duration
	lateOf     map[string]time.Duration // lateness of each backend's first event
	worstKey   string
}

// tally checks evs against the heartbeats the round sent.
func (r *clusterRound) tally(evs roundEvents) roundTally {
	tl := roundTally{lateOf: map[string]time.Duration{}}
	index := make(map[string]int, len(r.keys))
	for i, k := range r.keys {
		index[k] = i
	}
	first := map[string]time.Time{}        // key -> earliest arrival of any of its events
	idsOf := map[string]map[string]bool{}  // key -> id -> sent with attempt 1
	keysOf := map[string]map[string]bool{} // id -> keys
	note := func(key, id string, attempt int) {
		if idsOf[key] == nil {
			idsOf[key] = map[string]bool{}
		}
		idsOf[key][id] = idsOf[key][id] || attempt == 1
		if keysOf[id] == nil {
			keysOf[id] = map[string]bool{}
		}
		keysOf[id][key] = true
	}
	for _, sub := range evs.subs {
		firsts := map[string]int{}
		for _, ev := range sub {
			i, ok := index[ev.Key]
			if !ok {
				continue
			}
			note(ev.Key, ev.ID, ev.Attempt)
			if ev.Attempt == 1 {
				firsts[ev.ID]++
			}
			if dl := r.deadline(i).Add(-earlyMargin); ev.arrived.Before(dl) {
				tl.early++
				if tl.firstEarly == "" {
					tl.firstEarly = fmt.Sprintf("%s (attempt %d) arrived %v before its deadline", ev.Key, ev.Attempt, r.deadline(i).Sub(ev.arrived))
				}
			}
			if f, ok := first[ev.Key]; !ok || ev.arrived.Before(f) {
				first[ev.Key] = ev.arrived
			}
		}
		for _, n := range firsts {
			if n > 1 {
				tl.dupFirsts++
			}
		}
	}
	storedFirsts := map[string]int{}
	attempts := map[string]int{} // "id attempt" -> stored events
	for key, es := range evs.stored {
		i, ok := index[key]
		if !ok {
			continue
		}
		for _, ev := range es {
			note(key, ev.ID, ev.Attempt)
			if ev.Attempt == 1 {
				storedFirsts[ev.ID]++
			} else {
				tl.resent++
				attempts[fmt.Sprint(ev.ID, " ", ev.Attempt)]++
			}
		}
		if _, seen := first[key]; !seen && len(es) > 0 {
			// No subscriber received it: judge it by the worker's clock.
			tl.storedOnly++
			if es[0].At.Before(r.deadline(i).Add(-earlyMargin)) {
				tl.early++
			}
		}
	}
	for _, n := range storedFirsts {
		if n > 1 {
			tl.dupFirsts++
		}
	}
	for _, n := range attempts {
		tl.reAttempts += n - 1
	}
	for _, ids := range idsOf {
		if len(ids) < 2 {
			continue
		}
		tl.idChanges++
		firstSends := 0
		for _, sentFirst := range ids {
			if sentFirst {
				firstSends++
			}
		}
		if firstSends <= 1 {
			tl.renewedIDs++
		}
	}
	for _, keys := range keysOf {
		if len(keys) > 1 {
			tl.sharedIDs++
		}
	}
	for i, k := range r.keys {
		f, ok := first[k]
		if !ok {
			if len(evs.stored[k]) == 0 {
				tl.lost++
				tl.lostKeys = append(tl.lostKeys, k)
			}
			continue
		}
		late := f.Sub(r.deadline(i))
		if tl.worstKey == "" || late > tl.lateOf[tl.worstKey] {
			tl.worstKey = k
		}
		tl.late = append(tl.late, late)
		tl.lateOf[k] = late
	}
	slices.Sort(tl.late)
	return tl
}

// quantile returns the q-quantile of sorted, or 0 when it is empty.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// worstOf returns the worst lateness among the backends of the round whose
// partition is in parts, and how many there are.
func (r *clusterRound) worstOf(tl roundTally, parts []int) (time.Duration, int) {
	var worst time.Duration
	n := 0
	for _, k := range r.keys {
		if !slices.Contains(parts, partition.Of(k, clusterPartitions)) {
			continue
		}
		n++
		worst = max(worst, tl.lateOf[k])
	}
	return worst, n
}

// describe says of each of keys its partition, wave, timeout and deadline.
func (r *clusterRound) describe(keys []string) string {
	var out []string
	for _, k := range keys {
		i := slices.Index(r.keys, k)
		if i < 0 {
			continue
		}
		out = append(out, fmt.Sprintf("%s (partition %d, wave %d, timeout %v, deadline D%+v)",
			k, partition.Of(k, clusterPartitions), i%roundWaves, r.timeouts[i], r.deadline(i).Sub(r.d).Round(time.Millisecond)))
	}
	return strings.Join(out, ", ")
}

// report logs the tally and fails the test on a lost, duplicated or early
// quiesce.
func (r *clusterRound) report(t *testing.T, tl roundTally, extra string) {
	t.Helper()
	target := ownerTimeout + time.Second
	over := len(tl.late) - sort.Search(len(tl.late), func(i int) bool { return tl.late[i] > target })
	t.Logf("%s: backends %d, lost %d, duplicate ids %d (first emissions twice %d, backends with two ids %d, of which re-sent under a new id %d, ids of two backends %d), early %d; "+
		"lateness p50 %v, p99 %v, worst %v (%s), over the target of %v: %d; re-sends %d (with an attempt number already sent %d); only in the stream %d; %s",
		r.group, roundBackends, tl.lost, tl.dupFirsts+tl.idChanges+tl.sharedIDs, tl.dupFirsts, tl.idChanges, tl.renewedIDs, tl.sharedIDs, tl.early,
		quantile(tl.late, 0.5).Round(time.Millisecond), quantile(tl.late, 0.99).Round(time.Millisecond), quantile(tl.late, 1).Round(time.Millisecond),
		r.describe([]string{tl.worstKey}), target, over, tl.resent, tl.reAttempts, tl.storedOnly, extra)
	if tl.lost != 0 {
		t.Errorf("lost: got %d backends never quiesced; want 0; the first: %s", tl.lost, r.describe(tl.lostKeys[:min(len(tl.lostKeys), 5)]))
	}
	if tl.dupFirsts != 0 || tl.idChanges != 0 || tl.sharedIDs != 0 {
		t.Errorf("duplicate ids: got %d first emissions received twice, %d backends with two ids (%d re-sent under a new id), %d ids of two backends; want 0, 0, 0",
			tl.dupFirsts, tl.idChanges, tl.renewedIDs, tl.sharedIDs)
	}
	if tl.early != 0 {
		t.Errorf("early: got %d quiesces before their backend's deadline, first: %s; want 0", tl.early, tl.firstEarly)
	}
}

// logIDChanges logs the stored events of up to maxKeys backends with more
// than one id.
func (r *clusterRound) logIDChanges(t *testing.T, evs roundEvents, victim []int, maxKeys int) {
	t.Helper()
	shown := 0
	for i, k := range r.keys {
		ids := map[string]bool{}
		for _, ev := range evs.stored[k] {
			ids[ev.ID] = true
		}
		if len(ids) < 2 || shown >= maxKeys {
			continue
		}
		shown++
		p := partition.Of(k, clusterPartitions)
		t.Logf("backend with two ids: %s, partition %d (the disrupted worker's: %v), wave %d, timeout %v, deadline D%+v",
			k, p, slices.Contains(victim, p), i%roundWaves, r.timeouts[i], r.deadline(i).Sub(r.d).Round(time.Millisecond))
		for _, ev := range evs.stored[k] {
			t.Logf("  stored: id %s, attempt %d, emitted D%+v, Nats-Msg-Id %s", ev.ID, ev.Attempt, ev.At.Sub(r.d).Round(time.Millisecond), ev.msgID)
		}
	}
}
