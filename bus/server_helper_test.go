package bus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/internal/natstest"
)

// waitBound bounds every wait in this package's tests and examples.
const waitBound = 10 * time.Second

// env is an embedded NATS server on 127.0.0.1 (random port) with a running
// bus.Worker on its own connection. Tests get one from newEnv; examples,
// which have no *testing.T, from startEnv and must call Close.
type env struct {
	srv    *natstest.Server
	wnc    *nats.Conn // the worker's connection
	worker *bus.Worker
	cancel context.CancelFunc
	done   chan error // receives Run's result
	conns  []*nats.Conn
}

// startEnv starts a server and a worker serving cfg. Zero fields of cfg
// select the worker's defaults; Subjects defaults to the "idle" prefix.
func startEnv(cfg bus.WorkerConfig) (*env, error) {
	srv, err := natstest.Run()
	if err != nil {
		return nil, err
	}
	e := &env{srv: srv, done: make(chan error, 1)}
	e.wnc, err = nats.Connect(srv.ClientURL(), nats.Name("worker"))
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("worker connection: %w", err)
	}
	e.worker, err = bus.NewWorker(e.wnc, cfg)
	if err != nil {
		e.Close()
		return nil, err
	}
	var ctx context.Context
	ctx, e.cancel = context.WithCancel(context.Background())
	go func() { e.done <- e.worker.Run(ctx) }()
	select {
	case <-e.worker.Ready():
		return e, nil
	case err := <-e.done:
		e.done <- err // Close reads it again
		e.Close()
		return nil, fmt.Errorf("worker stopped before it was ready: %v", err)
	case <-time.After(waitBound):
		e.Close()
		return nil, errors.New("worker not ready in time")
	}
}

// newEnv is startEnv for tests: it fails t on error and closes the
// environment in cleanup.
func newEnv(tb testing.TB, cfg bus.WorkerConfig) *env {
	tb.Helper()
	e, err := startEnv(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := e.Close(); err != nil {
			tb.Error(err)
		}
	})
	return e
}

// Connect returns a new client connection to the environment's server; Close
// closes it.
func (e *env) Connect() (*nats.Conn, error) {
	nc, err := nats.Connect(e.srv.ClientURL())
	if err != nil {
		return nil, err
	}
	e.conns = append(e.conns, nc)
	return nc, nil
}

// Close stops the worker (waiting, bounded, for Run to return), closes every
// connection and shuts the server down. It returns Run's error, if any,
// joined with the server's.
func (e *env) Close() error {
	var err error
	if e.cancel != nil {
		e.cancel()
		select {
		case err = <-e.done:
		case <-time.After(waitBound):
			err = errors.New("worker did not stop in time")
		}
		e.cancel = nil
	}
	for _, nc := range e.conns {
		nc.Close()
	}
	e.conns = nil
	if e.wnc != nil {
		e.wnc.Close()
	}
	return errors.Join(err, e.srv.Close())
}
