package bus

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/coordinator"
)

// TestQuiesceSummary: the info-level summary counts first emissions by
// reason and redeliveries apart, logs nothing when nothing was published,
// and starts again after each line.
func TestQuiesceSummary(t *testing.T) {
	var buf bytes.Buffer
	s := quiesceSummary{logger: slog.New(slog.NewTextHandler(&buf, nil))}
	s.flush(10 * time.Second)
	if buf.Len() != 0 {
		t.Fatalf("empty summary logged %q; want nothing", buf.String())
	}
	for _, d := range []coordinator.Due{
		{Reason: coordinator.IdleTimeout, Attempt: 1},
		{Reason: coordinator.IdleTimeout, Attempt: 1},
		{Reason: coordinator.Maintenance, Attempt: 1},
		{Reason: coordinator.IdleTimeout, Attempt: 2},
	} {
		s.add(d)
	}
	s.flush(10 * time.Second)
	line := buf.String()
	for _, want := range []string{"quiesce events published", "idle_timeout=2", "maintenance=1", "broker_shutdown=0", "redeliveries=1", "interval=10s"} {
		if !strings.Contains(line, want) {
			t.Errorf("summary %q lacks %q", line, want)
		}
	}
	buf.Reset()
	s.flush(10 * time.Second)
	if buf.Len() != 0 {
		t.Errorf("second flush logged %q; want nothing after a reset", buf.String())
	}
	s.add(coordinator.Due{Reason: coordinator.BrokerShutdown, Attempt: 1})
	s.flush(0)
	if line := buf.String(); !strings.Contains(line, "broker_shutdown=1") || strings.Contains(line, "interval=") {
		t.Errorf("final summary %q; want broker_shutdown=1 and no interval", line)
	}
}
