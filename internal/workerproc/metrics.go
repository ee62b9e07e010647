package workerproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// ErrNoMetric: /metrics has no sample of the metric asked for.
var ErrNoMetric = errors.New("workerproc: no such metric")

// Metric names read from /metrics (see package metrics).
const (
	// MetricBackends is the gauge of tracked backends, one series per
	// state; their sum is every backend the worker tracks.
	MetricBackends = "idle_worker_backends"
	// MetricRestored is the gauge of backends loaded from the registry
	// when the worker started.
	MetricRestored = "idle_worker_restored_backends"
)

// Metric scrapes /metrics and returns the sum of every sample of the metric
// name (all its label sets). It fails with ErrNoMetric when there is none.
func (p *Process) Metric(ctx context.Context, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.httpAddr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("workerproc: scrape: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("workerproc: scrape: %s", resp.Status)
	}
	return sumMetric(resp.Body, name)
}

// Tracked returns how many backends the worker tracks, in every state: the
// sum of MetricBackends, which the worker keeps as gauges, so it costs one
// scrape however many there are.
func (p *Process) Tracked(ctx context.Context) (int, error) {
	v, err := p.Metric(ctx, MetricBackends)
	return int(v), err
}

// sumMetric adds up the samples of name in the Prometheus text format read
// from r.
func sumMetric(r io.Reader, name string) (float64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var sum float64
	found := false
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		rest, ok := strings.CutPrefix(line, name)
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(rest, "{"):
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				return 0, fmt.Errorf("workerproc: metric line %q: unclosed labels", line)
			}
			rest = rest[end+1:]
		case strings.HasPrefix(rest, " "):
		default:
			continue // another metric whose name starts with name
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return 0, fmt.Errorf("workerproc: metric line %q: no value", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, fmt.Errorf("workerproc: metric line %q: %w", line, err)
		}
		sum += v
		found = true
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("workerproc: reading metrics: %w", err)
	}
	if !found {
		return 0, fmt.Errorf("%w: %s", ErrNoMetric, name)
	}
	return sum, nil
}
