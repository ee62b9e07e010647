package member

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/idle-worker/idle-worker/partition"
)

// Defaults of Config.
const (
	// DefaultInterval is how often a member sends its heartbeat.
	DefaultInterval = 250 * time.Millisecond
	// DefaultTimeout is how long a member may go unheard before the others
	// count it dead (IDLE_OWNER_TIMEOUT).
	DefaultTimeout = time.Second
)

// Config configures a Membership.
type Config struct {
	// Name is this worker's name (IDLE_WORKER_NAME; DefaultName for none).
	// Required; it must pass CheckName.
	Name string
	// Interval is how often the heartbeat is sent: DefaultInterval when
	// zero.
	Interval time.Duration
	// Timeout is how long a member may go unheard before it counts as dead,
	// and how long Start listens before joining: DefaultTimeout when zero.
	// It must be at least twice Interval, so that one lost heartbeat does
	// not kill a member.
	Timeout time.Duration
	// Partitions is the prefix's partition count (IDLE_PARTITIONS), 1 to
	// partition.MaxPartitions. Every member of a prefix must use the same.
	Partitions int
	// Logger receives the membership's log lines (joins, deaths, name
	// clashes, rejected heartbeats at most once a second per reason); nil
	// discards them.
	Logger *slog.Logger
}

// withDefaults fills the zero values and checks cfg. Errors wrap ErrBadName
// or ErrBadConfig.
func (cfg Config) withDefaults() (Config, error) {
	if err := CheckName(cfg.Name); err != nil {
		return cfg, fmt.Errorf("member: config Name: %w", err)
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Interval < 0 {
		return cfg, fmt.Errorf("%w: Interval %v is negative", ErrBadConfig, cfg.Interval)
	}
	if cfg.Timeout < 2*cfg.Interval {
		return cfg, fmt.Errorf("%w: Timeout %v is less than twice Interval %v", ErrBadConfig, cfg.Timeout, cfg.Interval)
	}
	if cfg.Partitions < 1 || cfg.Partitions > partition.MaxPartitions {
		return cfg, fmt.Errorf("%w: Partitions %d is not in 1..%d", ErrBadConfig, cfg.Partitions, partition.MaxPartitions)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}
