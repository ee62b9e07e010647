// Command idle-worker runs the idle-worker service: it watches backend
// heartbeats on NATS and asks brokers to drain backends that went idle.
//
// It takes no arguments but -h (usage and every variable), -version and
// mappings (print the nats-server subject mappings that partition the
// prefix; package partition), and is configured entirely from IDLE_*
// environment variables (see the README, or idle-worker -h). With IDLE_NATS_URL empty it starts an embedded
// nats-server with JetStream on IDLE_EMBEDDED_LISTEN (127.0.0.1:4222; package
// embedded), so it runs alone; otherwise it connects there with the
// authentication and TLS of the IDLE_NATS_* variables (package natsconn). It
// serves Prometheus metrics, /healthz and /readyz on IDLE_HTTP_ADDR
// (127.0.0.1:9464; package metrics).
//
// Exit status: 0 after a clean shutdown on SIGINT or SIGTERM (or after -h,
// -version or mappings), 1 when the service fails, 2 when the configuration or an
// argument is bad.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
)

// version is the service version reported by -version, the first log line
// and the admin micro service. It must be a semantic version; the Makefile
// may override it with -ldflags.
var version = "0.1.0"

func main() {
	cmd, err := parseArgs(os.Args[1:])
	switch {
	case err != nil:
		fmt.Fprintf(os.Stderr, "idle-worker: %v; see idle-worker -h\n", err)
		os.Exit(2)
	case cmd == help:
		if err := usage(os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "idle-worker: %v\n", err)
			os.Exit(1)
		}
		return
	case cmd == printVersion:
		fmt.Printf("idle-worker %s\n", version)
		return
	}

	cfg, err := loadConfig()
	if err != nil {
		fmt.Fprintf(os.Stderr, "idle-worker: bad configuration: %v\n", err)
		os.Exit(2)
	}
	if cmd == printMappings {
		if err := writeMappings(os.Stdout, cfg); err != nil {
			var ce *configError
			if errors.As(err, &ce) {
				fmt.Fprintf(os.Stderr, "idle-worker: bad configuration: %v\n", err)
				os.Exit(2)
			}
			fmt.Fprintf(os.Stderr, "idle-worker: %v\n", err)
			os.Exit(1)
		}
		return
	}
	logger, err := newLogger(cfg, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "idle-worker: bad configuration: %v\n", err)
		os.Exit(2)
	}
	if gc := tuneGC(); gc != "" {
		logger.Debug("garbage collector tuned", "setting", gc)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, logger); err != nil {
		logger.Error("idle-worker failed", "error", err)
		stop()
		var ce *configError
		if errors.As(err, &ce) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// defaultGCPercent is the worker's GOGC when the environment sets neither
// GOGC nor GOMEMLIMIT. The worker's heap is mostly long-lived backends (a
// million take about 330 MB with the store's index) and allocates little
// once they are registered, so collecting at half the live heap instead of
// all of it costs little CPU and keeps the process within 600 MB at a
// million backends (embedded server included): 707 MB at GOGC 100, 535 MB
// at 50, with the same registration rate and restart time (idle-bench
// -only process).
const defaultGCPercent = 50

// tuneGC applies defaultGCPercent unless the environment tunes the
// collector itself, and says what it set ("" when nothing).
func tuneGC() string {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return ""
	}
	debug.SetGCPercent(defaultGCPercent)
	return "GOGC=" + strconv.Itoa(defaultGCPercent)
}
