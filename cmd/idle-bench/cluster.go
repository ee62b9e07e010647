package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/cluster"
	"github.com/idle-worker/idle-worker/internal/natstest"
	"github.com/idle-worker/idle-worker/member"
	"github.com/idle-worker/idle-worker/partition"
	"github.com/idle-worker/idle-worker/store"
)

// clusterWorkers is the worker count of the takeovers and of the larger
// ingest measurement.
const clusterWorkers = 3

// clusterResult is the cluster section: takeovers among three in-process
// workers and ingest with one and three.
type clusterResult struct {
	Workers        int     `json:"workers"`
	Partitions     int     `json:"partitions"`
	OwnerTimeoutMS float64 `json:"owner_timeout_ms"`
	QuiesceRate    int     `json:"quiesce_rate"`
	// How describes how the workers run.
	How       string              `json:"how"`
	Takeovers []takeoverResult    `json:"takeovers"`
	Ingest    []clusterIngestRate `json:"ingest"`
	// Limits are a plain subscriber's best rounds on the same stream:
	// without the mappings, and with them (subscribed to every
	// partition's subjects), the baseline of each routing.
	Limits []clusterLimit `json:"ingest_limits"`

	OtherCPUPercent float64 `json:"other_cpu_percent"`
}

// clusterHow says how the cluster section runs its workers, and why.
var clusterHow = fmt.Sprintf("in this process, each worker on its own connection with its own store.Open (stream %s_<n>, fresh per measurement, %d partitions), "+
	"QuiesceRate %d, the operator's policy; the takeovers run member.Start and cluster.Controller beside each worker as cmd/idle-worker wires them "+
	"(heartbeat every IDLE_OWNER_TIMEOUT/4), so a death is found by the real detection path; a kill closes the worker's connection "+
	"(the server drops its subscriptions and its membership heartbeats stop, as on kill -9), all on one clock",
	store.DefaultStreamName, store.DefaultPartitions, bus.DefaultQuiesceRate)

// measureCluster runs the takeovers (cfg.ClusterBackends > 0) and the
// ingest measurements (cfg.ClusterMessages > 0). The mapped ones run on a
// second server loaded with the block of partition.Mappings.
func measureCluster(ctx context.Context, url string, cfg config) (clusterResult, error) {
	r := clusterResult{Workers: clusterWorkers, Partitions: store.DefaultPartitions, OwnerTimeoutMS: ms(cfg.ClusterOwnerTimeout),
		QuiesceRate: bus.DefaultQuiesceRate, How: clusterHow}
	mapped, closeMapped, err := startMappedServer(bus.MustSubjects(bus.DefaultPrefix), store.DefaultPartitions)
	if err != nil {
		return r, err
	}
	defer closeMapped()
	if cfg.ClusterBackends > 0 {
		for _, tk := range []struct {
			mode   takeoverMode
			mapped bool
		}{{modeKill, false}, {modeHandOver, false}, {modeKill, true}} {
			u := url
			if tk.mapped {
				u = mapped
			}
			t, err := measureTakeover(ctx, u, cfg, tk.mode, tk.mapped)
			if err != nil {
				return r, fmt.Errorf("takeover, %s: %w", t.Mode, err)
			}
			r.Takeovers = append(r.Takeovers, t)
		}
	}
	if cfg.ClusterMessages > 0 {
		for _, mp := range []bool{false, true} {
			u := url
			if mp {
				u = mapped
			}
			lim, err := measureClusterLimit(ctx, u, cfg, mp)
			if err != nil {
				return r, fmt.Errorf("ingest limit (mapped %v): %w", mp, err)
			}
			r.Limits = append(r.Limits, lim)
			for _, n := range []int{1, clusterWorkers} {
				in, err := measureClusterIngest(ctx, u, cfg, n, mp)
				if err != nil {
					return r, fmt.Errorf("ingest, %s: %w", in.name(), err)
				}
				r.Ingest = append(r.Ingest, in)
			}
		}
	}
	return r, nil
}

// startMappedServer starts a JetStream server loaded with the partition
// mappings of s and n (what an operator loads for IDLE_MAPPED) and returns
// its URL and a function that shuts it down.
func startMappedServer(s bus.Subjects, n int) (string, func(), error) {
	b, err := partition.Mappings(s, n)
	if err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp("", "idle-bench-mappings-")
	if err != nil {
		return "", nil, err
	}
	path := filepath.Join(dir, "mappings.conf")
	if err := os.WriteFile(path, []byte(b.Config()), 0o600); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	srv, err := natstest.Run(natstest.JetStream(), natstest.ConfigFile(path))
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("server with the partition mappings: %w", err)
	}
	return srv.ClientURL(), func() { _ = srv.Close(); os.RemoveAll(dir) }, nil
}

// clusterNode is one worker of an in-process cluster: a clustered
// bus.Worker on its own connection with its own store, and, once joined,
// the membership and controller that cmd/idle-worker runs beside it.
type clusterNode struct {
	name string
	*runningWorker
	m         *member.Membership
	ctlCancel context.CancelFunc
	ctlDone   chan error
	ctlOnce   sync.Once
	ctlErr    error

	mu   sync.Mutex // held by kill and leave
	gone bool       // killed or stopped
}

// startNode runs a clustered worker named name on the store of names at
// url (with router, when not nil) and waits until it is ready. It owns no
// partition yet.
func startNode(ctx context.Context, url string, cfg config, names store.Config, name string, router bus.Router) (*clusterNode, error) {
	names.Worker = name
	wc := bus.WorkerConfig{Policy: operatorPolicy(), QueueLength: cfg.QueueLength, QuiesceRate: bus.DefaultQuiesceRate,
		Cluster: true, Router: router}
	rw, err := startWorkerWith(url, wc, func(nc *nats.Conn, wc *bus.WorkerConfig) error {
		st, err := openStore(ctx, nc, names)
		wc.Store = st
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("worker %s: %w", name, err)
	}
	return &clusterNode{name: name, runningWorker: rw}, nil
}

// startNodes starts n clustered workers named tag-0 to tag-(n-1) on one
// fresh store, stopping those already started when one fails.
func startNodes(ctx context.Context, url string, cfg config, names store.Config, tag string, n int, router bus.Router) ([]*clusterNode, error) {
	nodes := make([]*clusterNode, 0, n)
	for i := range n {
		node, err := startNode(ctx, url, cfg, names, fmt.Sprintf("%s-%d", tag, i), router)
		if err != nil {
			stopNodes(nodes)
			return nil, err
		}
		nodes = append(nodes, node)
	}
	return nodes, nil
}

// join starts each node's membership (concurrently: each listens two
// heartbeat intervals first), waits until every one sees all of them live,
// then starts their controllers and waits until the partitions are spread
// as member.Assign says.
func join(ctx context.Context, nodes []*clusterNode, ownerTimeout time.Duration) error {
	subj := bus.MustSubjects(bus.DefaultPrefix)
	errs := make(chan error, len(nodes))
	for _, node := range nodes {
		go func() {
			m, err := member.Start(ctx, node.nc, subj, member.Config{Name: node.name, Interval: ownerTimeout / 4,
				Timeout: ownerTimeout, Partitions: store.DefaultPartitions})
			node.m = m
			errs <- err
		}()
	}
	var err error
	for range nodes {
		err = errors.Join(err, <-errs)
	}
	if err != nil {
		return fmt.Errorf("joining the membership: %w", err)
	}
	names := make([]string, len(nodes))
	for i, node := range nodes {
		names[i] = node.name
	}
	slices.Sort(names)
	if err := waitFor(ctx, "every member sees the others", func() bool {
		for _, node := range nodes {
			if !slices.Equal(node.m.View().Live(), names) {
				return false
			}
		}
		return true
	}); err != nil {
		return err
	}
	for _, node := range nodes {
		ctl, err := cluster.New(node.w, node.m, cluster.Config{Partitions: store.DefaultPartitions})
		if err != nil {
			return err
		}
		cctx, cancel := context.WithCancel(context.Background())
		node.ctlCancel, node.ctlDone = cancel, make(chan error, 1)
		go func() { node.ctlDone <- ctl.Run(cctx, bus.DefaultShutdownTimeout/2) }()
	}
	assigned := member.Assign(names, store.DefaultPartitions)
	return waitFor(ctx, "the partitions spread as assigned", func() bool {
		for _, node := range nodes {
			if !slices.Equal(node.w.Owned(), ownedBy(assigned, node.name)) {
				return false
			}
		}
		return true
	})
}

// ownedBy returns the partitions assigned to name, ascending.
func ownedBy(assigned []string, name string) []int {
	var ps []int
	for p, owner := range assigned {
		if owner == name {
			ps = append(ps, p)
		}
	}
	return ps
}

// stopController stops the node's controller, which releases every
// partition and leaves the membership (on a closed connection both fail at
// once), and returns its error. Once; nil without a controller.
func (n *clusterNode) stopController() error {
	n.ctlOnce.Do(func() {
		if n.ctlCancel != nil {
			n.ctlCancel()
			n.ctlErr = waitErr(n.ctlDone, "controller")
		}
	})
	return n.ctlErr
}

// kill makes the node die as on kill -9: its connection closes at once
// (nothing more leaves it, the server drops its subscriptions), then its
// goroutines are ended; what they try afterwards fails on the closed
// connection. Nothing happens to a node already gone.
func (n *clusterNode) kill() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.gone {
		return nil
	}
	n.gone = true
	n.nc.Close()
	if n.m != nil {
		n.m.Stop()
	}
	n.cancel()
	err := waitErr(n.done, "worker")
	_ = n.stopController() // its hand-over fails on the stopped worker, as it should
	if errors.Is(err, errNotStopped) {
		return err
	}
	return nil // Run's error says the connection closed: that was the point
}

// leave stops the node as SIGTERM stops cmd/idle-worker: the controller
// releases every partition and leaves the membership, then the worker
// stops and its connection drains. Nothing happens to a node already gone.
func (n *clusterNode) leave() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.gone {
		return nil
	}
	n.gone = true
	err := n.stopController()
	if n.m != nil {
		n.m.Stop()
	}
	_, _, serr := n.stop()
	return errors.Join(err, serr)
}

// errNotStopped is waitErr's error when nothing came in time.
var errNotStopped = errors.New("did not stop in time")

// waitErr waits for the error on done, within waitBound.
func waitErr(done <-chan error, what string) error {
	select {
	case err := <-done:
		return err
	case <-time.After(waitBound):
		return fmt.Errorf("%s: %w (%v)", what, errNotStopped, waitBound)
	}
}

// stopNodes stops every node (concurrently: each hands its partitions
// over) and returns their errors.
func stopNodes(nodes []*clusterNode) error {
	errs := make(chan error, len(nodes))
	for _, node := range nodes {
		go func() { errs <- node.leave() }()
	}
	var err error
	for range nodes {
		err = errors.Join(err, <-errs)
	}
	return err
}
