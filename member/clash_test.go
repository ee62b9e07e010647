package member_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/internal/natstest"
	"github.com/idle-worker/idle-worker/member"
)

func TestMembershipNameTaken(t *testing.T) {
	s := natstest.Start(t)
	first := startMembers(t, s.ClientURL(), "a")[0]
	nc := connect(t, s.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	second, err := member.Start(ctx, nc, testSubjects, testConfig("a"))
	if !errors.Is(err, member.ErrNameTaken) {
		if second != nil {
			second.Stop()
		}
		t.Fatalf("second Start with name a: %v; want ErrNameTaken", err)
	}
	if !strings.Contains(err.Error(), first.Instance()) {
		t.Errorf("error %q does not name the other instance %s", err, first.Instance())
	}
	if n := nc.NumSubscriptions(); n != 0 {
		t.Errorf("%d subscriptions left after a failed Start; want 0", n)
	}
	select {
	case err := <-first.Conflict():
		t.Errorf("the first got %v; it should never hear the second", err)
	default:
	}
}

// TestMembershipConflict: after joining, a member that hears another
// instance of its name gives way (Conflict) if that one is older, and
// counts the clash and carries on if it is younger. Two real instances meet
// like this when one was frozen while the other started; the test plays
// the other instance by publishing its heartbeats.
func TestMembershipConflict(t *testing.T) {
	s := natstest.Start(t)
	ms := startMembers(t, s.ClientURL(), "old", "young")
	pub := connect(t, s.ClientURL())
	publish := func(name string, age time.Duration) {
		t.Helper()
		body := fmt.Sprintf(`{"name":%q,"instance":"OTHER","partitions":[1],"age_ms":%d}`, name, age.Milliseconds())
		if err := pub.Publish(member.Subject(testSubjects), []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	// "old" hears a younger instance of its name: it carries on.
	publish("old", 0)
	// "young" hears an older one: it gives way.
	publish("young", time.Hour)
	select {
	case err := <-ms[1].Conflict():
		if !errors.Is(err, member.ErrNameTaken) || !strings.Contains(err.Error(), "OTHER") {
			t.Errorf("Conflict() = %v; want ErrNameTaken naming instance OTHER", err)
		}
	case <-time.After(waitBound):
		t.Fatal("no conflict for the younger instance")
	}
	natstest.WaitFor(t, waitBound, "old counting the clash", func() bool { return ms[0].Stats().NameClashes == 1 })
	select {
	case err := <-ms[0].Conflict():
		t.Errorf("the older instance got %v; want no conflict", err)
	default:
	}
	// Neither lists the other instance, or its partition, under its own
	// name. (To everyone else, the two instances take turns.)
	for _, m := range ms {
		if got, _ := m.View().Member(m.Name()); got.Instance != m.Instance() || slices.Contains(got.Partitions, 1) {
			t.Errorf("%s lists %+v under its name; want itself, without partition 1", m.Name(), got)
		}
	}
	// Conflict says it once.
	publish("young", time.Hour)
	natstest.WaitFor(t, waitBound, "young counting both clashes", func() bool { return ms[1].Stats().NameClashes == 2 })
	select {
	case err := <-ms[1].Conflict():
		t.Errorf("a second conflict: %v", err)
	default:
	}
}
