package integration

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/micro"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/logtest"
	"github.com/idle-worker/idle-worker/internal/natstest"
)

// The log lines of the check a worker makes at start for other workers of
// its prefix.
const (
	aloneWarnMemory = "another idle-worker serves this subject prefix, and this one runs without JetStream"
	aloneWarnOther  = "an idle-worker without JetStream serves this subject prefix too"
	aloneFine       = "no uncoordinated idle-worker serves this subject prefix"
)

// Without JetStream nothing coordinates two workers of one prefix: a
// worker says so at start when another one answers for its prefix, or
// when one without JetStream does; workers of other prefixes, or with
// JetStream both, are fine.
func TestAloneWarning(t *testing.T) {
	tests := []struct {
		name        string
		firstPrefix string
		firstStore  bool
		secondStore bool
		want        string
	}{
		{name: "two in memory", firstPrefix: prefix, want: aloneWarnMemory},
		{name: "in memory after one with JetStream", firstPrefix: prefix, firstStore: true, want: aloneWarnMemory},
		{name: "with JetStream after one in memory", firstPrefix: prefix, secondStore: true, want: aloneWarnOther},
		{name: "both with JetStream", firstPrefix: prefix, firstStore: true, secondStore: true, want: aloneFine},
		{name: "in memory, another prefix", firstPrefix: "elsewhere", want: aloneFine},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, natstest.JetStream())
			first := bus.WorkerConfig{Subjects: bus.MustSubjects(tt.firstPrefix), Policy: coordinator.DefaultPolicy()}
			if tt.firstStore {
				nc := connect(t, s.ClientURL())
				first.Store = relOpenStore(t, nc, 4)
				startWorkerOn(t, nc, first)
			} else {
				startWorker(t, s.ClientURL(), first)
			}
			logs := new(logtest.Buffer)
			second := bus.WorkerConfig{Policy: coordinator.DefaultPolicy(),
				Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
			nc := connect(t, s.ClientURL())
			if tt.secondStore {
				second.Store = relOpenStore(t, nc, 4)
			}
			startWorkerOn(t, nc, second)
			var got string
			waitFor(t, bound, func() bool {
				out := logs.String()
				for _, line := range []string{aloneWarnMemory, aloneWarnOther, aloneFine} {
					if strings.Contains(out, line) {
						got = line
						return true
					}
				}
				return false
			})
			if got != tt.want {
				t.Errorf("got %q; want %q; log:\n%s", got, tt.want, logs)
			}
		})
	}
}

// A worker without Peers answers P.admin.members for itself alone: in
// memory with one partition that holds every key, named by its admin
// service's id; with a store, every partition of the store.
func TestMembersLoneWorker(t *testing.T) {
	tests := []struct {
		name       string
		store      bool
		partitions int
	}{
		{name: "in memory", partitions: 1},
		{name: "with a store", store: true, partitions: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, natstest.JetStream())
			nc := connect(t, s.ClientURL())
			cfg := bus.WorkerConfig{Policy: coordinator.DefaultPolicy()}
			if tt.store {
				cfg.Store = relOpenStore(t, nc, tt.partitions)
			}
			startWorkerOn(t, nc, cfg)
			client := connect(t, s.ClientURL())
			var r bus.MembersReply
			m := adminRequest(t, client, "members", "anything", &r)
			wantMembers(t, m.Data, "ok", "partitions", "members")
			ping, _ := micro.ControlSubject(micro.PingVerb, bus.ServiceName, "")
			var p micro.Ping
			if err := json.Unmarshal(request(t, client, ping, "").Data, &p); err != nil {
				t.Fatal(err)
			}
			if r.Partitions != tt.partitions || len(r.Members) != 1 || r.Members[0].Name != p.ID ||
				len(r.Members[0].Partitions) != tt.partitions || r.Members[0].Partitions[tt.partitions-1] != tt.partitions-1 {
				t.Errorf("members: got %s; want %d partitions, all owned by %s", m.Data, tt.partitions, p.ID)
			}
			if p.Metadata["prefix"] != prefix || p.Metadata["store"] != map[bool]string{true: "jetstream", false: "memory"}[tt.store] {
				t.Errorf("ping metadata: got %v; want prefix %s and the store mode", p.Metadata, prefix)
			}
		})
	}
}
