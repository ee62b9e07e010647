package metrics_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/idle-worker/idle-worker/metrics"
)

// dashboardFile is the Grafana dashboard shipped for these metrics.
const dashboardFile = "../deploy/grafana-dashboard.json"

// describedNames returns the metric names the collectors describe, read from
// their Descs, with the type of each gathered family where known.
func describedNames(t *testing.T, cs ...prometheus.Collector) []string {
	t.Helper()
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	var names []string
	for _, c := range cs {
		ch := make(chan *prometheus.Desc, 64)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			m := fq.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("Desc %s: no fqName", d)
			}
			names = append(names, m[1])
		}
	}
	return names
}

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	Title  string `json:"title"`
	UID    string `json:"uid"`
	Panels []struct {
		ID      int    `json:"id"`
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

// Every metric the dashboard queries exists: idle_worker_* ones in the
// collectors' Describe output (histograms with their _bucket, _sum and
// _count series), go_* and process_* ones in what NewRegistry gathers. And
// every idle_worker_* metric is on the dashboard.
func TestDashboardMetricsExist(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardFile, err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("%s: got title %q uid %q and %d panels; want a titled dashboard with panels", dashboardFile, d.Title, d.UID, len(d.Panels))
	}

	lateness := metrics.NewLateness()
	collector := metrics.NewCollector(&fakeSource{s: sampleStats()}, nil)
	described := describedNames(t, collector, lateness)
	histograms := describedNames(t, lateness)
	reg, err := metrics.NewRegistry(metrics.NewCollector(&fakeSource{s: sampleStats()}, nil), metrics.NewLateness())
	if err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	runtime := map[string]bool{}
	for _, f := range fams {
		runtime[f.GetName()] = true
		if f.GetType() == dto.MetricType_HISTOGRAM || f.GetType() == dto.MetricType_SUMMARY {
			runtime[f.GetName()+"_sum"], runtime[f.GetName()+"_count"] = true, true
		}
	}

	exists := func(name string) bool {
		if !strings.HasPrefix(name, metrics.Namespace+"_") {
			return runtime[name]
		}
		if slices.Contains(described, name) {
			return true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && slices.Contains(histograms, base) {
				return true
			}
		}
		return false
	}

	metricName := regexp.MustCompile(`\b(?:idle_worker|go|process)_[a-z0-9_]+\b`)
	used := map[string]bool{}
	ids := map[int]bool{}
	var exprs []string
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: got no targets; want at least one query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Expr == "" {
				t.Errorf("panel %q target %s: got an empty expr", p.Title, tg.RefID)
			}
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		exprs = append(exprs, v.Definition)
	}
	for _, e := range exprs {
		for _, name := range metricName.FindAllString(e, -1) {
			used[name] = true
			if !exists(name) {
				t.Errorf("dashboard query %q: metric %s does not exist; want one the collectors describe or the registry gathers", e, name)
			}
		}
	}
	for _, name := range described {
		covered := used[name] || used[name+"_bucket"]
		if !covered {
			t.Errorf("metric %s: not on the dashboard; want every idle_worker metric shown", name)
		}
	}
	if len(used) < 10 {
		t.Errorf("dashboard: got %d metric names in its queries; want the worker's metrics", len(used))
	}
}
