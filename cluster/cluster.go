// Package cluster makes a worker one of several sharing a subject prefix:
// a Controller keeps the partitions the worker decides for in line with
// the membership's assignment. It claims the partitions assigned to the
// worker that no live member owns (at start, from a dead or leaving
// member, or released to it), hands the others over a few at a time, and
// on shutdown releases everything before it leaves, so the others claim at
// once. It only decides when to claim and release; package store's fenced
// claims decide who owns what.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/idle-worker/idle-worker/member"
)

// Worker is what the Controller drives: bus.Worker.
type Worker interface {
	Acquire(ctx context.Context, parts []int) error
	Release(ctx context.Context, parts []int) error
	ReleaseAll(ctx context.Context) error
	Verify(ctx context.Context, parts []int) error
	Owned() []int
}

// Members is what the Controller reads: member.Membership.
type Members interface {
	Name() string
	View() member.View
	Changes() <-chan struct{}
	Conflict() <-chan error
	SetOwned(parts []int)
	Leave(ctx context.Context) error
}

// Config tunes a Controller.
type Config struct {
	// Partitions is the partition count of the prefix.
	Partitions int
	// Interval is how often the Controller plans even when the membership
	// does not change (default member.DefaultInterval).
	Interval time.Duration
	// MaxMoves bounds the hand-overs in flight (default
	// member.DefaultMaxMoves).
	MaxMoves int
	// Logger receives the Controller's logs (default: none).
	Logger *slog.Logger
}

// Controller keeps one worker's partitions in line with the membership.
type Controller struct {
	w   Worker
	m   Members
	cfg Config
	log *slog.Logger

	settled     chan struct{}
	settledOnce sync.Once
	reported    []int // what the membership was last told this worker owns
}

// New returns a Controller of w as the member m sees the cluster.
func New(w Worker, m Members, cfg Config) (*Controller, error) {
	if cfg.Partitions < 1 {
		return nil, fmt.Errorf("cluster: %d partitions", cfg.Partitions)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = member.DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Controller{w: w, m: m, cfg: cfg, log: cfg.Logger.With("component", "cluster"), settled: make(chan struct{})}, nil
}

// Settled is closed once the worker holds every partition assigned to it
// that it could claim: the first time a plan asks it to claim nothing.
// Readiness waits for it.
func (c *Controller) Settled() <-chan struct{} { return c.settled }

// Run plans and carries out claims and releases until ctx is done, then
// releases every partition and leaves the membership, bounded by
// leaveTimeout. It returns an error when the membership reports that
// another live worker has this one's name (after releasing), else nil.
func (c *Controller) Run(ctx context.Context, leaveTimeout time.Duration) error {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	var runErr error
loop:
	for {
		c.step(ctx)
		select {
		case <-ctx.Done():
			break loop
		case err := <-c.m.Conflict():
			runErr = err
			break loop
		case <-c.m.Changes():
		case <-t.C:
		}
	}
	lctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	return errors.Join(runErr, c.leave(lctx))
}

// step plans once and carries the plan out.
func (c *Controller) step(ctx context.Context) {
	owned := c.w.Owned()
	c.report(owned)
	v := c.m.View()
	live := v.Live()
	if contested := c.contested(v, owned); len(contested) > 0 {
		// Another live member reports owning some of ours: one of us
		// claimed after the other (views differed). The store knows which.
		if err := c.w.Verify(ctx, contested); err != nil && ctx.Err() == nil {
			c.log.Warn("checking contested partitions", "partitions", contested, "error", err)
		}
	}
	mv := member.Plan(member.Input{
		Self:     c.m.Name(),
		Members:  live,
		Assigned: member.Assign(live, c.cfg.Partitions),
		Owners:   v.Owners(),
		Owned:    owned,
		MaxMoves: c.cfg.MaxMoves,
	})
	if len(mv.Release) > 0 {
		if err := c.w.Release(ctx, mv.Release); err != nil && ctx.Err() == nil {
			c.log.Warn("releasing partitions", "partitions", mv.Release, "error", err)
		}
		c.report(c.w.Owned())
	}
	if len(mv.Claim) > 0 {
		if err := c.w.Acquire(ctx, mv.Claim); err != nil && ctx.Err() == nil {
			// Another member's claim won (views differed): the next plan
			// sees who owns it.
			c.log.Info("claiming partitions", "partitions", mv.Claim, "error", err)
		}
		c.report(c.w.Owned())
		return
	}
	if slices.Contains(live, c.m.Name()) {
		c.settledOnce.Do(func() {
			close(c.settled)
			c.log.Info("ready: holding the free partitions assigned to this worker", "owned", len(owned), "members", len(live))
		})
	}
}

// contested returns the partitions in owned that another live member of v
// reports owning too.
func (c *Controller) contested(v member.View, owned []int) []int {
	var out []int
	for _, m := range v.Members {
		if m.Name == c.m.Name() || m.Leaving {
			continue
		}
		for _, p := range m.Partitions {
			if slices.Contains(owned, p) && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	slices.Sort(out)
	return out
}

// report tells the membership what the worker owns, when it changed.
func (c *Controller) report(owned []int) {
	if slices.Equal(owned, c.reported) {
		return
	}
	c.reported = slices.Clone(owned)
	c.m.SetOwned(owned)
}

// leave releases every partition the worker owns (what is pending stored,
// a snapshot, a release each), tells the others, and leaves, so they claim
// at once.
func (c *Controller) leave(ctx context.Context) error {
	var errs []error
	if err := c.w.ReleaseAll(ctx); err != nil {
		errs = append(errs, err)
	}
	c.report(c.w.Owned())
	if err := c.m.Leave(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
