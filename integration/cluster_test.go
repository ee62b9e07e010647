package integration

import (
	"fmt"
	"net/http"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// The cluster tests run idle-worker as it is meant to run in production:
// three nats-server processes as one JetStream cluster, three idle-worker
// processes sharing the prefix, their stream replicated on all three nodes
// (IDLE_STORE_REPLICAS=3), all on 127.0.0.1. Each scenario is a round of
// 2,000 backends (cluster_round_test.go) around one disruption: a worker
// killed, a worker frozen, a rolling restart, a fourth worker, the stream
// leader's node shut down. Each logs the workers' claims, releases,
// partitions lost and fenced writes, and what the round found: lost,
// duplicate ids and early quiesces, all required to be 0, and lateness
// (how long after its deadline, the last heartbeat the test sent plus the
// backend's timeout, its first event arrived), which is only reported: a
// takeover or hand-over restores a partition with a full timeout of grace,
// so a backend due around one is quiesced up to IDLE_OWNER_TIMEOUT plus
// its own timeout late. Drains are re-sent every 5 s during a round (the
// same id, by whichever worker owns the backend then); each round ends by
// reporting its backends quiesced, as their broker would.
//
// The tests are not parallel: each runs alone, about 40 s, so that neither
// they nor the timing tests disturb the other. -short skips them.

// clusterEnv is a running cluster: nodes, workers and the test's
// connections.
type clusterEnv struct {
	nats *natsCluster
	ws   *clusterWorkers
	nc   *nats.Conn     // requests and stream reads
	subs []*chaosEvents // two subscribers to every quiesce event, on different nodes
	mw   *memberWatch
}

// startClusterEnv starts three nodes, then w1, then w2 and w3, and waits
// until the three share the partitions.
func startClusterEnv(t *testing.T) *clusterEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the cluster tests run 3 nats-servers and 3 or 4 workers for about 40 s each")
	}
	stalls.start()
	e := &clusterEnv{nats: startNATSCluster(t, 3)}
	e.ws = &clusterWorkers{owner: t, urls: e.nats.urls(), http: &http.Client{Timeout: time.Second}, env: map[string]string{
		"IDLE_DEFAULT_TIMEOUT":   "3s",
		"IDLE_QUIESCE_RETRY":     "5s",
		"IDLE_QUIESCE_RETRY_MAX": "5s",
	}}
	// w1 alone first: it creates the stream (see
	// TestClusterSimultaneousStart).
	w1 := e.ws.add(t, "w1")
	e.ws.waitReady(t, 30*time.Second, w1)
	e.ws.add(t, "w2")
	e.ws.add(t, "w3")
	e.ws.waitReady(t, 30*time.Second)
	e.waitSettled(t, 20*time.Second)
	e.nc = clusterConnect(t, e.nats.urlsFrom(0), "requests")
	for i := range 2 {
		e.subs = append(e.subs, chaosCollect(t, clusterConnect(t, e.nats.urlsFrom(i), fmt.Sprintf("subscriber %d", i))))
	}
	e.mw = watchMembers(t, e.nc)
	return e
}

// clusterConnect connects to urls, in order, reconnecting at once to
// another node when its node goes.
func clusterConnect(t *testing.T, urls, what string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(urls, nats.Name(t.Name()+" "+what), nats.DontRandomize(), nats.Timeout(bound),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectJitter(0, 0))
	if err != nil {
		t.Fatalf("connect to %s: %v", urls, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// waitSettled waits until the workers that answer own every partition
// between them, each some, and returns who owns how many.
func (e *clusterEnv) waitSettled(t *testing.T, timeout time.Duration) string {
	t.Helper()
	var who string
	chaosWait(t, timeout, "partitions settled", func() bool {
		var ok bool
		ok, who = settled(e.ws.counters(), clusterPartitions)
		return ok
	})
	return who
}

// disruption acts at D and returns once the disruption is over, saying
// what it did and which partitions the disrupted worker owned at D (nil
// when none was disrupted).
type disruption func(t *testing.T, r *clusterRound) (note string, victim []int)

// round runs one scenario: a round of backends heartbeating from node
// loadNode, disrupt at D, wave 3 silent a second after it returns, then
// the tally, once every backend is quiesced (or 15 s after the last wave
// fell silent). It returns why to skip the test, from report: the caller
// skips it once done.
func (e *clusterEnv) round(t *testing.T, group string, loadNode int, disrupt disruption) {
	t.Helper()
	r := startRound(t, group, e.nats.urlsFrom(loadNode))
	r.waitTracked(t, e.ws, e.nc)
	before := e.ws.counters()
	d := r.schedule()
	<-time.After(time.Until(d))
	note, victim := disrupt(t, r)
	r.victim = victim
	r.silence(roundWaves-1, time.Now().Add(time.Second))
	r.waitQuiesced(t, 15*time.Second, e.subs...)
	// A second more for a duplicate or a stray event to show.
	<-time.After(time.Second)
	cutoff := time.Now()
	evs := r.collect(t, e.nc, cutoff, e.subs...)
	r.acknowledge(t, e.nc)
	after := e.ws.counters()
	tl := r.tally(evs)
	extra := note + "; " + deltas(before, after)
	if victim != nil {
		worst, n := r.worstOf(tl, victim)
		extra += fmt.Sprintf("; worst lateness of the %d backends of its %d partitions %v", n, len(victim), worst.Round(time.Millisecond))
	}
	extra += fmt.Sprintf("; heartbeats sent %d, refused %d", r.sent.Load(), r.failed.Load())
	if tl.idChanges > 0 {
		r.logIDChanges(t, evs, victim, 3)
	}
	if tl.lost > 0 {
		// Not quiesced by the cutoff: lost, or only late (a node's loss
		// can stall the stream's writes for seconds on a loaded machine).
		// Lost is what never comes.
		late := e.lateAfterAll(t, r, tl.lostKeys)
		tl.lostKeys = slices.DeleteFunc(tl.lostKeys, func(k string) bool { return late[k] })
		tl.lost = len(tl.lostKeys)
	}
	r.report(t, tl, extra)
}

// lateAfterAll waits up to 10 s more for events of the backends the round
// counted lost, and says whether they were only (very) late.
func (e *clusterEnv) lateAfterAll(t *testing.T, r *clusterRound, lost []string) (late map[string]bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		seen := map[string]time.Time{}
		for _, s := range e.subs {
			for k, evs := range s.byKey(time.Now()) {
				if slices.Contains(lost, k) && len(evs) > 0 {
					seen[k] = evs[0].arrived
				}
			}
		}
		if len(seen) == len(lost) || time.Now().After(deadline) {
			var latest time.Time
			for _, at := range seen {
				if at.After(latest) {
					latest = at
				}
			}
			late = make(map[string]bool, len(seen))
			for k := range seen {
				late[k] = true
			}
			if len(seen) == 0 {
				t.Logf("of the %d backends not quiesced by the cutoff, none was in the next 10 s", len(lost))
				return late
			}
			t.Logf("of the %d backends not quiesced by the cutoff, %d were in the next 10 s (late, not lost), the last at D%+v", len(lost), len(seen), latest.Sub(r.d).Round(time.Millisecond))
			return late
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// settledWithout waits until the workers but the one named name own every
// partition between them, and returns how long that took since from.
func (e *clusterEnv) settledWithout(t *testing.T, name string, from time.Time) time.Duration {
	t.Helper()
	others := slices.DeleteFunc(slices.Clone(e.ws.list), func(w *clusterWorker) bool { return w.name == name })
	chaosWait(t, 20*time.Second, "the others took the partitions of "+name, func() bool {
		ok, _ := settled(e.ws.counters(others...), clusterPartitions)
		return ok
	})
	return time.Since(from)
}

// Kill one of three workers with SIGKILL, then freeze another with SIGSTOP
// for 10 s: the others take their partitions over, every backend is
// quiesced once and none early, and the frozen one, fenced out by the
// store, publishes nothing for the partitions it lost, counts them lost,
// and rejoins.
func TestClusterWorkerFailures(t *testing.T) {
	e := startClusterEnv(t)

	t.Run("kill", func(t *testing.T) {
		victim := e.ws.list[1]
		e.round(t, "kill", 0, func(t *testing.T, r *clusterRound) (string, []int) {
			parts := e.mw.owned(victim.name)
			killed := time.Now()
			chaosKill(t, victim.p)
			took := e.settledWithout(t, victim.name, killed)
			return fmt.Sprintf("%s (%d partitions) killed; the others own all partitions %v later", victim.name, len(parts), took.Round(time.Millisecond)), parts
		})
		// It comes back under its name, for the next scenario.
		e.ws.start(t, victim)
		e.ws.waitReady(t, 20*time.Second, victim)
		t.Logf("%s restarted: %s", victim.name, e.waitSettled(t, 20*time.Second))
	})

	t.Run("freeze", func(t *testing.T) {
		const frozen = 10 * time.Second
		victim := e.ws.list[2]
		e.round(t, "freeze", 0, func(t *testing.T, r *clusterRound) (string, []int) {
			parts := e.mw.owned(victim.name)
			stopped := time.Now()
			victim.signal(t, syscall.SIGSTOP)
			took := e.settledWithout(t, victim.name, stopped)
			<-time.After(time.Until(stopped.Add(frozen)))
			victim.signal(t, syscall.SIGCONT)
			// It notices it lost its partitions (its writes fenced, or the
			// others' claims), and takes its share back.
			chaosWait(t, 20*time.Second, victim.name+" counts its partitions lost", func() bool {
				m, err := e.ws.metrics(victim)
				return err == nil && m[mLost] > 0
			})
			who := e.waitSettled(t, 20*time.Second)
			return fmt.Sprintf("%s (%d partitions) frozen %v; the others own all partitions %v later; after SIGCONT it counts partitions lost, then %s",
				victim.name, len(parts), frozen, took.Round(time.Millisecond), who), parts
		})
	})
}

// A rolling restart (SIGTERM each of three workers in turn, and start it
// again under its name), then a fourth worker, then the NATS node that
// leads the stream shut down: every backend is quiesced once and none
// early.
func TestClusterChanges(t *testing.T) {
	e := startClusterEnv(t)

	t.Run("rolling-restart", func(t *testing.T) {
		e.round(t, "roll", 0, func(t *testing.T, r *clusterRound) (string, []int) {
			var note string
			for _, w := range e.ws.list[:3] {
				t0 := time.Now()
				w.signal(t, syscall.SIGTERM)
				if code := w.p.exitCode(t, 10*time.Second); code != 0 {
					t.Fatalf("%s exited with %d after SIGTERM; want 0", w.name, code)
				}
				stopped := time.Since(t0)
				e.ws.start(t, w)
				e.ws.waitReady(t, 20*time.Second, w)
				again := time.Since(t0) - stopped
				// It left before it exited, so its name is free at once:
				// ready as fast as a new worker (joining takes two
				// membership heartbeats, half a second).
				if again > 5*time.Second {
					t.Errorf("%s ready %v after its restart; want it to join at once (within 5s)", w.name, again)
				}
				note += fmt.Sprintf("%s stopped in %v, ready again %v later; ", w.name, stopped.Round(time.Millisecond), again.Round(time.Millisecond))
			}
			return note + "then " + e.waitSettled(t, 20*time.Second), nil
		})
	})

	t.Run("add-worker", func(t *testing.T) {
		e.round(t, "add", 0, func(t *testing.T, r *clusterRound) (string, []int) {
			t0 := time.Now()
			w4 := e.ws.add(t, "w4")
			e.ws.waitReady(t, 20*time.Second, w4)
			ready := time.Since(t0)
			who := e.waitSettled(t, 20*time.Second)
			return fmt.Sprintf("w4 ready %v after its start, then %s", ready.Round(time.Millisecond), who), nil
		})
	})

	t.Run("stream-leader-down", func(t *testing.T) {
		var leader string
		chaosWait(t, 20*time.Second, "the stream's leader", func() bool {
			var err error
			leader, err = streamLeader(e.nc)
			return err == nil
		})
		// The heartbeats come through another node: a heartbeat lost
		// with its node would make its backend's deadline earlier than
		// the test thinks.
		loadNode := slices.IndexFunc(e.nats.nodes, func(nd *natsNode) bool { return nd.name != leader })
		e.round(t, "leader", loadNode, func(t *testing.T, r *clusterRound) (string, []int) {
			nd := e.nats.node(leader)
			if nd == nil {
				t.Fatalf("the stream's leader %q is none of the nodes", leader)
			}
			t0 := time.Now()
			nd.stop(t)
			stopped := time.Since(t0)
			var next string
			chaosWait(t, 30*time.Second, "a new stream leader", func() bool {
				l, err := streamLeader(e.nc)
				next = l
				return err == nil && l != leader
			})
			elected := time.Since(t0)
			return fmt.Sprintf("node %s (the stream's leader) shut down in %v; %s leads %v after the SIGTERM; %s",
				leader, stopped.Round(time.Millisecond), next, elected.Round(time.Millisecond), e.waitSettled(t, 20*time.Second)), nil
		})
	})
}

// Three workers started at the same moment on a cluster where the stream
// does not exist yet all come up.
func TestClusterSimultaneousStart(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts a 3-node cluster")
	}
	n := startNATSCluster(t, 3)
	ws := &clusterWorkers{owner: t, urls: n.urls(), http: &http.Client{Timeout: time.Second}}
	for _, name := range []string{"w1", "w2", "w3"} {
		ws.add(t, name)
	}
	ws.waitReady(t, 20*time.Second)
}
