package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/internal/workerproc"
	"github.com/idle-worker/idle-worker/member"
)

// config holds the sizes and knobs of a run.
type config struct {
	Keys        int `json:"keys"`
	Messages    int `json:"messages"`
	Publishers  int `json:"publishers"`
	Window      int `json:"window"`
	Rounds      int `json:"rounds"`
	QueueLength int `json:"queue_length"`

	Timely       int           `json:"timely"`
	TimelyWindow int           `json:"timely_window"`
	TimelyRounds int           `json:"timely_rounds"`
	Subscriber   string        `json:"subscriber"`
	Spread       time.Duration `json:"spread_ns"`
	Lead         time.Duration `json:"lead_ns"`
	// TunedMemLimit, when positive, repeats the timeliness section with the
	// collector driven by a memory limit instead of GOGC (GOGC=off,
	// GOMEMLIMIT=TunedMemLimit), the setting the README recommends when
	// lateness matters.
	TunedMemLimit int64 `json:"tuned_mem_limit"`

	KVKeys        int           `json:"kv_keys"`
	KVConcurrency int           `json:"kv_concurrency"`
	KVLead        time.Duration `json:"kv_lead_ns"`
	KVStorage     string        `json:"kv_storage"`

	MemoryBackends   int `json:"memory_backends"`
	ShutdownBackends int `json:"shutdown_backends"`

	AdminBackends int           `json:"admin_backends"`
	AdminClients  int           `json:"admin_clients"`
	AdminInterval time.Duration `json:"admin_interval_ns"`
	AdminPhase    time.Duration `json:"admin_phase_ns"`
	// AdminQuiesceRate is the admin worker's QuiesceRate (default
	// bus.DefaultQuiesceRate, what idle-worker runs with; 0: unlimited),
	// which paces the pattern quiesce's events.
	AdminQuiesceRate int `json:"admin_quiesce_rate"`

	HerdBackends int           `json:"herd_backends"`
	HerdRate     int           `json:"herd_rate"`
	HerdLead     time.Duration `json:"herd_lead_ns"`
	HerdBaseline time.Duration `json:"herd_baseline_ns"`

	// DurableBackends is the events of the durable section's limit and the
	// backends of its burst and spread (0: skip the section).
	DurableBackends    int           `json:"durable_backends"`
	DurableBurst       time.Duration `json:"durable_burst_ns"`
	DurableSpread      time.Duration `json:"durable_spread_ns"`
	DurableLead        time.Duration `json:"durable_lead_ns"`
	DurableLimitRounds int           `json:"durable_limit_rounds"`
	// DurableRegister is the new backends of the registration and restart
	// (0: skip them), sent from DurableConns connections with at most
	// DurableWindow unanswered each.
	DurableRegister int `json:"durable_register"`
	DurableConns    int `json:"durable_conns"`
	DurableWindow   int `json:"durable_window"`
	// DurableParts lists the durable section's parts to run
	// (comma-separated names from durablePartNames; empty: all).
	DurableParts string `json:"durable_parts,omitempty"`

	// WorkerBin is the idle-worker binary the process section runs, with
	// ProcessBackends new backends (0: skip the section) sent at
	// ProcessRate per second (negative: unpaced) from ProcessConns
	// connections with at most ProcessWindow unanswered; memory is read
	// again ProcessSettle after the last reply.
	WorkerBin       string        `json:"worker_bin"`
	ProcessBackends int           `json:"process_backends"`
	ProcessRate     int           `json:"process_rate"`
	ProcessConns    int           `json:"process_conns"`
	ProcessWindow   int           `json:"process_window"`
	ProcessSettle   time.Duration `json:"process_settle_ns"`

	// ClusterBackends is the backends of the cluster section's takeovers
	// (0: skip them), each heartbeating once with a timeout that puts its
	// deadline within ClusterSpread, ClusterLead after the start; one
	// worker of three leaves ClusterKillAt after the first deadline
	// (negative: before). ClusterOwnerTimeout is IDLE_OWNER_TIMEOUT.
	ClusterBackends     int           `json:"cluster_backends"`
	ClusterLead         time.Duration `json:"cluster_lead_ns"`
	ClusterSpread       time.Duration `json:"cluster_spread_ns"`
	ClusterKillAt       time.Duration `json:"cluster_kill_at_ns"`
	ClusterOwnerTimeout time.Duration `json:"cluster_owner_timeout_ns"`
	// ClusterMessages is the heartbeats of each round of the cluster
	// ingest (0: skip it), over Keys keys, Rounds rounds.
	ClusterMessages int `json:"cluster_messages"`

	// Only, when not empty, lists the sections to run (comma-separated
	// names from sectionNames); the others are skipped.
	Only string `json:"only,omitempty"`

	Out string `json:"out"`
	// CPUProfile and MemProfile name pprof files for the whole run
	// (empty: none).
	CPUProfile string `json:"-"`
	MemProfile string `json:"-"`
}

// defaultConfig returns the sizes of the performance issue.
func defaultConfig() config {
	return config{
		Keys:             100_000,
		Messages:         2_000_000,
		Publishers:       1,
		Window:           1 << 15,
		Rounds:           3,
		QueueLength:      1 << 16,
		Timely:           100_000,
		TimelyWindow:     256,
		TimelyRounds:     3,
		Subscriber:       "raw",
		Spread:           time.Second,
		Lead:             time.Second,
		TunedMemLimit:    2 << 30,
		KVKeys:           -1, // same as Timely
		KVConcurrency:    64,
		KVLead:           5 * time.Second,
		KVStorage:        "memory",
		MemoryBackends:   1_000_000,
		ShutdownBackends: 1_000_000,
		AdminBackends:    1_000_000,
		AdminClients:     1,
		AdminInterval:    2 * time.Millisecond,
		AdminPhase:       5 * time.Second,
		AdminQuiesceRate: bus.DefaultQuiesceRate,
		HerdBackends:     100_000,
		HerdRate:         bus.DefaultQuiesceRate,
		HerdLead:         3 * time.Second,
		HerdBaseline:     5 * time.Second,

		DurableBackends:    50_000,
		DurableBurst:       100 * time.Millisecond,
		DurableSpread:      time.Second,
		DurableLead:        3 * time.Second,
		DurableLimitRounds: 3,
		DurableRegister:    1_000_000,
		DurableConns:       4,
		DurableWindow:      1024,
		WorkerBin:          "bin/idle-worker",
		ProcessBackends:    1_000_000,
		ProcessRate:        workerproc.DefaultRate,
		ProcessConns:       workerproc.DefaultConns,
		ProcessWindow:      workerproc.DefaultWindow,
		ProcessSettle:      5 * time.Second,

		ClusterBackends:     30_000,
		ClusterLead:         2 * time.Second,
		ClusterSpread:       2 * time.Second,
		ClusterKillAt:       -100 * time.Millisecond,
		ClusterOwnerTimeout: member.DefaultTimeout,
		ClusterMessages:     1_000_000,
		Out:                 "bench-results.json",
	}
}

// quickSizes are the sizes of -quick: a smoke run of a few seconds.
func quickSizes(c *config) map[string]func() {
	return map[string]func(){
		"keys":              func() { c.Keys = 1_000 },
		"messages":          func() { c.Messages = 20_000 },
		"rounds":            func() { c.Rounds = 1 },
		"window":            func() { c.Window = 4096 },
		"timely":            func() { c.Timely = 1_000 },
		"timely-rounds":     func() { c.TimelyRounds = 1 },
		"spread":            func() { c.Spread = 200 * time.Millisecond },
		"lead":              func() { c.Lead = 200 * time.Millisecond },
		"kv-keys":           func() { c.KVKeys = 200 },
		"kv-concurrency":    func() { c.KVConcurrency = 16 },
		"kv-lead":           func() { c.KVLead = time.Second },
		"memory-backends":   func() { c.MemoryBackends = 10_000 },
		"shutdown-backends": func() { c.ShutdownBackends = 10_000 },
		"admin-backends":    func() { c.AdminBackends = 10_000 },
		"admin-phase":       func() { c.AdminPhase = 500 * time.Millisecond },
		"herd-backends":     func() { c.HerdBackends = 2_000 },
		"herd-rate":         func() { c.HerdRate = 5_000 },
		"herd-lead":         func() { c.HerdLead = 300 * time.Millisecond },
		"herd-baseline":     func() { c.HerdBaseline = 300 * time.Millisecond },

		"durable-backends":     func() { c.DurableBackends = 500 },
		"durable-lead":         func() { c.DurableLead = 200 * time.Millisecond },
		"durable-spread":       func() { c.DurableSpread = 200 * time.Millisecond },
		"durable-limit-rounds": func() { c.DurableLimitRounds = 1 },
		"durable-register":     func() { c.DurableRegister = 2_000 },
		"process-backends":     func() { c.ProcessBackends = 20_000 },
		"process-settle":       func() { c.ProcessSettle = 200 * time.Millisecond },
		"cluster-backends":     func() { c.ClusterBackends = 1_000 },
		"cluster-lead":         func() { c.ClusterLead = 500 * time.Millisecond },
		"cluster-spread":       func() { c.ClusterSpread = 200 * time.Millisecond },
		"cluster-messages":     func() { c.ClusterMessages = 20_000 },
	}
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	c := defaultConfig()
	fs := flag.NewFlagSet("idle-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "small sizes for a smoke run (explicit size flags win)")
	fs.IntVar(&c.Keys, "keys", c.Keys, "ingest: distinct keys")
	fs.IntVar(&c.Messages, "messages", c.Messages, "ingest: heartbeats per measurement")
	fs.IntVar(&c.Publishers, "publishers", c.Publishers, "ingest: publisher connections")
	fs.IntVar(&c.Rounds, "rounds", c.Rounds, "ingest: rounds per consumer and body (the best counts)")
	fs.IntVar(&c.Window, "window", c.Window, "ingest: most messages published ahead of the consumer")
	fs.IntVar(&c.QueueLength, "queue", c.QueueLength, "worker queue length (and the plain subscriber's)")
	fs.IntVar(&c.Timely, "timely", c.Timely, "timeliness: backends whose deadlines fall within -spread (0: skip)")
	fs.IntVar(&c.TimelyWindow, "timely-window", c.TimelyWindow, "timeliness: most heartbeats published ahead of the worker")
	fs.IntVar(&c.TimelyRounds, "timely-rounds", c.TimelyRounds, "timeliness: rounds, whose events are pooled")
	fs.Int64Var(&c.TunedMemLimit, "tuned-mem-limit", c.TunedMemLimit, "timeliness: repeat it with GOGC=off and this GOMEMLIMIT in bytes (0: skip)")
	fs.StringVar(&c.Subscriber, "subscriber", c.Subscriber, "timeliness: quiesce subscriber, raw (protocol-level, allocation-free) or nats (nats.go)")
	fs.DurationVar(&c.Spread, "spread", c.Spread, "timeliness: window of the deadlines")
	fs.DurationVar(&c.Lead, "lead", c.Lead, "timeliness: time from the start of publishing to the first deadline")
	fs.IntVar(&c.KVKeys, "kv-keys", c.KVKeys, "KV alternative: keys (-1: as -timely, 0: skip)")
	fs.IntVar(&c.KVConcurrency, "kv-concurrency", c.KVConcurrency, "KV alternative: goroutines calling kv.Create")
	fs.DurationVar(&c.KVLead, "kv-lead", c.KVLead, "KV alternative: time from the start of the puts to the first deadline")
	fs.StringVar(&c.KVStorage, "kv-storage", c.KVStorage, "KV alternative: bucket storage, memory or file")
	fs.IntVar(&c.MemoryBackends, "memory-backends", c.MemoryBackends, "memory: backends in the coordinator (0: skip)")
	fs.IntVar(&c.ShutdownBackends, "shutdown-backends", c.ShutdownBackends, "shutdown: backends tracked by the worker (0: skip)")
	fs.IntVar(&c.AdminBackends, "admin-backends", c.AdminBackends, "admin under load: backends tracked (0: skip)")
	fs.IntVar(&c.AdminClients, "admin-clients", c.AdminClients, "admin under load: clients listing in a loop")
	fs.DurationVar(&c.AdminInterval, "admin-interval", c.AdminInterval, "admin under load: time between heartbeat requests")
	fs.DurationVar(&c.AdminPhase, "admin-phase", c.AdminPhase, "admin under load: duration of each phase")
	fs.IntVar(&c.AdminQuiesceRate, "admin-quiesce-rate", c.AdminQuiesceRate, "admin under load: the worker's QuiesceRate, events per second (0: unlimited)")
	fs.IntVar(&c.HerdBackends, "herd-backends", c.HerdBackends, "herd: backends due at once (0: skip)")
	fs.IntVar(&c.HerdRate, "herd-rate", c.HerdRate, "herd: the worker's QuiesceRate, events per second")
	fs.DurationVar(&c.HerdLead, "herd-lead", c.HerdLead, "herd: time to send the heartbeats and store them, before the baseline")
	fs.DurationVar(&c.HerdBaseline, "herd-baseline", c.HerdBaseline, "herd: duration of the prober's baseline, just before the deadlines")
	fs.IntVar(&c.DurableBackends, "durable-backends", c.DurableBackends, "durable: events of the limit, backends of the burst and the spread (0: skip the section)")
	fs.DurationVar(&c.DurableBurst, "durable-burst", c.DurableBurst, "durable: window of the burst's deadlines")
	fs.DurationVar(&c.DurableSpread, "durable-spread", c.DurableSpread, "durable: window of the spread's deadlines")
	fs.DurationVar(&c.DurableLead, "durable-lead", c.DurableLead, "durable: time from the start of the heartbeats to the first deadline")
	fs.IntVar(&c.DurableLimitRounds, "durable-limit-rounds", c.DurableLimitRounds, "durable: rounds of the limit (the best counts)")
	fs.IntVar(&c.DurableRegister, "durable-register", c.DurableRegister, "durable: new backends registered, then restored by a restart (0: skip both)")
	fs.IntVar(&c.DurableConns, "durable-conns", c.DurableConns, "durable: connections sending the registrations")
	fs.IntVar(&c.DurableWindow, "durable-window", c.DurableWindow, "durable: most unanswered registrations per connection")
	fs.StringVar(&c.WorkerBin, "worker-bin", c.WorkerBin, "process: the idle-worker binary to run")
	fs.IntVar(&c.ProcessBackends, "process-backends", c.ProcessBackends, "process: new backends registered, then restored after SIGTERM and after SIGKILL (0: skip the section)")
	fs.IntVar(&c.ProcessRate, "process-rate", c.ProcessRate, "process: target registrations per second (negative: unpaced)")
	fs.IntVar(&c.ProcessConns, "process-conns", c.ProcessConns, "process: connections sending the registrations")
	fs.IntVar(&c.ProcessWindow, "process-window", c.ProcessWindow, "process: most unanswered registrations over every connection")
	fs.DurationVar(&c.ProcessSettle, "process-settle", c.ProcessSettle, "process: time from the last reply to the second memory reading and SIGTERM")
	fs.IntVar(&c.ClusterBackends, "cluster-backends", c.ClusterBackends, "cluster: backends of the takeovers, due just after one worker of three dies or hands over (0: skip the takeovers)")
	fs.DurationVar(&c.ClusterLead, "cluster-lead", c.ClusterLead, "cluster: time from the start of the takeovers' heartbeats to the first deadline")
	fs.DurationVar(&c.ClusterSpread, "cluster-spread", c.ClusterSpread, "cluster: window of the takeovers' deadlines (0: all at once, a herd)")
	fs.DurationVar(&c.ClusterKillAt, "cluster-kill-at", c.ClusterKillAt, "cluster: when a worker dies or hands over, from the first deadline (negative: before)")
	fs.DurationVar(&c.ClusterOwnerTimeout, "cluster-owner-timeout", c.ClusterOwnerTimeout, "cluster: IDLE_OWNER_TIMEOUT of the takeovers' memberships")
	fs.IntVar(&c.ClusterMessages, "cluster-messages", c.ClusterMessages, "cluster: heartbeats per ingest round with 1 and 3 workers, over -keys keys (0: skip the ingest)")
	fs.StringVar(&c.DurableParts, "durable-parts", c.DurableParts, "durable: run only these parts, comma-separated: "+strings.Join(durablePartNames(), ", ")+" (empty: all)")
	fs.StringVar(&c.Only, "only", c.Only, "run only these sections, comma-separated: "+strings.Join(sectionNames(), ", "))
	fs.StringVar(&c.Out, "out", c.Out, "file to write the results to as JSON (empty: none)")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile of the run to this file")
	fs.StringVar(&c.MemProfile, "memprofile", "", "write an allocation profile of the run to this file")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, apply := range quickSizes(&c) {
			if !set[name] {
				apply()
			}
		}
	}
	if c.KVKeys < 0 {
		c.KVKeys = c.Timely
	}
	return c, c.validate()
}

func (c config) validate() error {
	switch {
	case c.Keys <= 0 || c.Messages < c.Keys:
		return errors.New("-keys must be positive and at most -messages")
	case c.Publishers <= 0 || c.Rounds <= 0:
		return errors.New("-publishers and -rounds must be positive")
	case c.QueueLength <= 0 || c.Window <= 0 || c.TimelyWindow <= 0:
		return errors.New("-queue, -window and -timely-window must be positive")
	case c.Timely < 0 || c.KVKeys < 0 || c.MemoryBackends < 0 || c.ShutdownBackends < 0 || c.TunedMemLimit < 0 || c.AdminBackends < 0 || c.HerdBackends < 0 || c.AdminQuiesceRate < 0:
		return errors.New("sizes must not be negative")
	case c.Spread <= 0 || c.Lead <= 0 || c.KVLead < time.Second:
		return errors.New("-spread and -lead must be positive, -kv-lead at least 1s")
	case c.TimelyRounds <= 0:
		return errors.New("-timely-rounds must be positive")
	case c.Subscriber != "raw" && c.Subscriber != "nats":
		return errors.New("-subscriber must be raw or nats")
	case c.KVConcurrency <= 0:
		return errors.New("-kv-concurrency must be positive")
	case c.KVStorage != "memory" && c.KVStorage != "file":
		return errors.New("-kv-storage must be memory or file")
	case c.AdminClients <= 0 || c.AdminInterval <= 0 || c.AdminPhase <= 0:
		return errors.New("-admin-clients, -admin-interval and -admin-phase must be positive")
	case c.HerdRate <= 0 || c.HerdLead <= 0 || c.HerdBaseline <= herdGuard:
		return fmt.Errorf("-herd-rate and -herd-lead must be positive, -herd-baseline more than %v", herdGuard)
	case c.DurableBackends < 0 || c.DurableRegister < 0:
		return errors.New("-durable sizes must not be negative")
	case c.DurableBurst <= 0 || c.DurableSpread <= 0 || c.DurableLead <= 0 || c.DurableLimitRounds <= 0 || c.DurableConns <= 0 || c.DurableWindow <= 0:
		return errors.New("-durable-burst, -durable-spread, -durable-lead, -durable-limit-rounds, -durable-conns and -durable-window must be positive")
	case c.ProcessBackends < 0 || c.ProcessSettle < 0:
		return errors.New("-process-backends and -process-settle must not be negative")
	case c.ProcessRate == 0 || c.ProcessConns <= 0 || c.ProcessWindow < c.ProcessConns:
		return errors.New("-process-rate must not be 0, -process-conns must be positive and -process-window at least -process-conns")
	case c.ClusterBackends < 0 || c.ClusterMessages < 0:
		return errors.New("-cluster-backends and -cluster-messages must not be negative")
	case c.ClusterLead <= 0 || c.ClusterSpread < 0 || c.ClusterKillAt <= -c.ClusterLead:
		return errors.New("-cluster-lead must be positive, -cluster-spread not negative, and -cluster-kill-at later than -cluster-lead before the first deadline")
	case c.ClusterOwnerTimeout < 100*time.Millisecond:
		return errors.New("-cluster-owner-timeout must be at least 100ms, as IDLE_OWNER_TIMEOUT")
	}
	for _, list := range []struct {
		flag, value string
		names       []string
	}{{"-only", c.Only, sectionNames()}, {"-durable-parts", c.DurableParts, durablePartNames()}} {
		if list.value == "" {
			continue
		}
		for name := range strings.SplitSeq(list.value, ",") {
			if !slices.Contains(list.names, name) {
				return fmt.Errorf("%s: unknown name %q; want some of %s", list.flag, name, strings.Join(list.names, ", "))
			}
		}
	}
	return nil
}

// sectionNames returns the sections -only may name, in the order they run.
func sectionNames() []string {
	return []string{"ingest", "timeliness", "kv", "memory", "shutdown", "admin", "herd", "durable", "process", "cluster"}
}

// durablePartNames returns the parts -durable-parts may name, in the order
// they run.
func durablePartNames() []string { return []string{"limit", "burst", "spread", "register"} }

// durableRuns reports whether the durable section's part name runs:
// -durable-parts names it, or is empty.
func (c config) durableRuns(name string) bool {
	return c.DurableParts == "" || slices.Contains(strings.Split(c.DurableParts, ","), name)
}

// runs reports whether section name runs: -only names it, or -only is
// empty.
func (c config) runs(name string) bool {
	return c.Only == "" || slices.Contains(strings.Split(c.Only, ","), name)
}
