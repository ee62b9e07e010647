package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/cluster"
	"github.com/idle-worker/idle-worker/member"
)

// startWorker runs w until ctx is done. With a store (peers not nil), the
// worker is one member of the prefix's workers: it joins the membership as
// it loads (and tells peers of it, for the admin service), and
// a cluster.Controller claims and releases its partitions; when ctx is done
// the controller hands them over and leaves first, then the worker stops.
// ready closes once the worker serves (and, with a store, holds its share
// of the partitions); wait returns Run's error and the controller's, and
// the worker's counters as they were when ctx was done (before the
// partitions were handed over).
func startWorker(ctx context.Context, w *bus.Worker, nc *nats.Conn, subjects bus.Subjects, peers *memberPeers, cfg config, logger *slog.Logger) (ready <-chan struct{}, wait func() (bus.Stats, error)) {
	wctx, stopWorker := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	var runErr error
	go func() {
		defer close(runDone)
		runErr = w.Run(wctx)
	}()
	if peers == nil {
		go func() {
			select {
			case <-ctx.Done():
			case <-runDone:
			}
			stopWorker()
		}()
		return w.Ready(), func() (bus.Stats, error) { <-runDone; stopWorker(); return w.Stats(), runErr }
	}
	// The controller stops once the counters at the stop are taken.
	cctx, stopController := context.WithCancel(context.Background())
	var atStop bus.Stats
	taken := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-runDone:
		}
		atStop = w.Stats()
		close(taken)
		stopController()
	}()
	settled := make(chan struct{})
	ctlDone := make(chan struct{})
	var ctlErr error
	go func() {
		defer close(ctlDone)
		defer stopWorker()
		ctlErr = control(cctx, w, nc, subjects, peers, cfg, logger, runDone, settled)
	}()
	return settled, func() (bus.Stats, error) {
		<-ctlDone
		<-runDone
		stopController()
		<-taken
		return atStop, errors.Join(runErr, ctlErr)
	}
}

// control joins the membership once the worker serves, then runs the
// controller until ctx is done and it has handed the partitions over.
// settled closes when the worker holds its share.
func control(ctx context.Context, w *bus.Worker, nc *nats.Conn, subjects bus.Subjects, peers *memberPeers, cfg config, logger *slog.Logger, runDone <-chan struct{}, settled chan<- struct{}) error {
	name := peers.name
	// While the membership listens, read the partitions ahead: the claims
	// that follow then read only what changed since.
	prefetched := make(chan struct{})
	go func() {
		defer close(prefetched)
		if p, ok := w.Store().(prefetcher); ok {
			if err := p.Prefetch(ctx); err != nil && ctx.Err() == nil {
				logger.Warn("reading the partitions ahead", "component", "cluster", "error", err)
			}
		}
	}()
	m, err := member.Start(ctx, nc, subjects, member.Config{
		Name: name, Interval: cfg.OwnerTimeout / 4, Timeout: cfg.OwnerTimeout, Partitions: cfg.Partitions, Logger: logger.With("component", "membership"),
	})
	if err != nil {
		if errors.Is(err, member.ErrNameTaken) {
			return fmt.Errorf("IDLE_WORKER_NAME: %w", err)
		}
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("joining the workers of the prefix: %w", err)
	}
	defer m.Stop()
	peers.m.Store(m)
	select {
	case <-w.Ready():
	case <-runDone:
		return nil
	}
	<-prefetched
	ctl, err := cluster.New(w, m, cluster.Config{Partitions: cfg.Partitions, Logger: logger})
	if err != nil {
		return err
	}
	go func() {
		select {
		case <-ctl.Settled():
			close(settled)
		case <-runDone:
		}
	}()
	logger.Info("joined the workers of the prefix", "component", "cluster", "name", name, "members", len(m.View().Live()))
	return ctl.Run(ctx, cfg.ShutdownTimeout/2)
}

// prefetcher is a store that can read every partition ahead of its claims
// (store.Store): the worker's start overlaps that read with the
// membership's listening.
type prefetcher interface {
	Prefetch(ctx context.Context) error
}
