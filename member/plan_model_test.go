package member_test

import (
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/idle-worker/idle-worker/member"
)

// cluster is a model of members that all see the same view, sharing a store
// whose claims always succeed (the model is sequential, so a claim never
// races another) and fence the previous owner.
type cluster struct {
	partitions int
	maxMoves   int
	live       []string // sorted
	owner      []string // the store's owner of each partition; may name a dead member
	nextID     int
}

func (c *cluster) owners() []string {
	out := make([]string, c.partitions)
	for p, o := range c.owner {
		if slices.Contains(c.live, o) {
			out[p] = o
		}
	}
	return out
}

func (c *cluster) owned(m string) []int {
	var ps []int
	for p, o := range c.owner {
		if o == m {
			ps = append(ps, p)
		}
	}
	return ps
}

func (c *cluster) input(self string) member.Input {
	return member.Input{Self: self, Members: c.live, Assigned: member.Assign(c.live, c.partitions),
		Owners: c.owners(), Owned: c.owned(self), MaxMoves: c.maxMoves}
}

// round lets the members in acting plan from one snapshot, checks their
// plans against each other, and applies them: releases, then claims.
func (c *cluster) round(t *rapid.T, acting []string) {
	snapshot := c.owners()
	assigned := member.Assign(c.live, c.partitions)
	claimed := map[int]string{}
	var releases []int
	for _, m := range acting {
		mv := member.Plan(c.input(m))
		for _, p := range mv.Claim {
			if snapshot[p] != "" {
				t.Fatalf("%s claims partition %d, which live %s owns", m, p, snapshot[p])
			}
			if assigned[p] != m {
				t.Fatalf("%s claims partition %d, assigned to %s", m, p, assigned[p])
			}
			if prev, ok := claimed[p]; ok {
				t.Fatalf("partition %d claimed by %s and %s from one view", p, prev, m)
			}
			claimed[p] = m
		}
		inFlight := 0 // released partitions waiting for another member's claim
		for p, o := range snapshot {
			if o == "" && assigned[p] != "" && assigned[p] != m {
				inFlight++
			}
		}
		if len(mv.Release) > max(0, c.maxMoves-inFlight) {
			t.Fatalf("%s releases %v with %d in flight; limit %d", m, mv.Release, inFlight, c.maxMoves)
		}
		for _, p := range mv.Release {
			if c.owner[p] != m || assigned[p] == m {
				t.Fatalf("%s releases partition %d (owner %q, assigned %q)", m, p, c.owner[p], assigned[p])
			}
		}
		releases = append(releases, mv.Release...)
	}
	for _, p := range releases {
		c.owner[p] = ""
	}
	for p, m := range claimed {
		c.owner[p] = m
	}
}

// settled reports whether every partition is owned by its assignee.
func (c *cluster) settled() bool {
	return slices.Equal(c.owner, member.Assign(c.live, c.partitions))
}

func (c *cluster) join() string {
	c.nextID++
	name := fmt.Sprintf("w%d", c.nextID)
	c.live = append(c.live, name)
	slices.Sort(c.live)
	return name
}

func (c *cluster) remove(m string) {
	c.live = slices.DeleteFunc(c.live, func(x string) bool { return x == m })
}

// TestPlanModel drives a cluster with joins, deaths, graceful leaves and
// members that miss rounds, checking every round that no two members claim
// one partition, nobody claims what a live member owns, and releases
// respect the hand-over limit; and after the events, that the cluster
// settles on the assignment within the rounds the limit allows.
func TestPlanModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := &cluster{partitions: rapid.SampledFrom([]int{1, 7, 64}).Draw(t, "partitions"),
			maxMoves: rapid.IntRange(1, 8).Draw(t, "max_moves")}
		c.owner = make([]string, c.partitions)
		c.join()
		steps := rapid.IntRange(1, 40).Draw(t, "steps")
		for range steps {
			switch ev := rapid.IntRange(0, 9).Draw(t, "event"); {
			case ev == 0 && len(c.live) < 6:
				c.join()
			case ev == 1 && len(c.live) > 1:
				c.remove(rapid.SampledFrom(c.live).Draw(t, "dies"))
			case ev == 2 && len(c.live) > 1:
				m := rapid.SampledFrom(c.live).Draw(t, "leaves")
				in := c.input(m)
				in.Leaving = true
				mv := member.Plan(in)
				if !slices.Equal(mv.Release, c.owned(m)) || len(mv.Claim) != 0 {
					t.Fatalf("leaving %s plans %+v; owns %v", m, mv, c.owned(m))
				}
				for _, p := range mv.Release {
					c.owner[p] = ""
				}
				c.remove(m)
			default:
				var acting []string
				for _, m := range c.live {
					if rapid.Bool().Draw(t, "acts") {
						acting = append(acting, m)
					}
				}
				c.round(t, acting)
			}
		}
		// Settle: a move takes two rounds (release, then claim), and at
		// least maxMoves partitions move per two rounds while any must.
		bound := 2*(c.partitions/c.maxMoves+1) + 2
		for i := 0; !c.settled(); i++ {
			if i == bound {
				t.Fatalf("not settled after %d rounds: owners %q; assigned %q", bound, c.owner, member.Assign(c.live, c.partitions))
			}
			c.round(t, c.live)
		}
	})
}
