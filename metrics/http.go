package metrics

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves the worker's HTTP endpoints:
//
//	GET /metrics  the registry, in the Prometheus text or OpenMetrics format
//	GET /healthz  200 "ok" while the process runs
//	GET /readyz   200 "ready" when ready returns nil, else 503 and its reason
//
// logger receives errors met while gathering metrics.
func Handler(g prometheus.Gatherer, ready func() error, logger *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:          errorLog{logger},
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		plain(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			plain(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
			return
		}
		plain(w, http.StatusOK, "ready")
	})
	return mux
}

func plain(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body+"\n")
}

// errorLog adapts log/slog to promhttp's error logger.
type errorLog struct{ l *slog.Logger }

func (e errorLog) Println(v ...any) { e.l.Error("serving metrics", "error", fmt.Sprint(v...)) }

// Readiness errors, as /readyz reports them.
var (
	// ErrNotServing: the worker has not yet loaded its state and
	// subscribed.
	ErrNotServing = errors.New("metrics: worker not serving yet (loading its store, joining the workers of its prefix, claiming partitions)")
	// ErrDisconnected: the NATS connection is not connected.
	ErrDisconnected = errors.New("metrics: NATS connection not connected")
)

// Readiness returns the check of a worker that serves on nc: ready once
// serving is closed (bus.Worker.Ready: the state is loaded and the
// subscriptions confirmed) while nc is connected. It fails with
// ErrNotServing or ErrDisconnected (naming the connection's status).
func Readiness(nc *nats.Conn, serving <-chan struct{}) func() error {
	return func() error {
		select {
		case <-serving:
		default:
			return ErrNotServing
		}
		if s := nc.Status(); s != nats.CONNECTED {
			return fmt.Errorf("%w: %v", ErrDisconnected, s)
		}
		return nil
	}
}
