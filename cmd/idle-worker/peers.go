package main

import (
	"sync/atomic"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/member"
)

// memberPeers adapts the worker's membership to bus.Peers, so the admin
// service answers for every partition of the prefix. The worker is built
// before it joins: until control sets the Membership, the worker knows of
// no other member.
type memberPeers struct {
	name string
	m    atomic.Pointer[member.Membership]
}

// Self returns the worker's name.
func (p *memberPeers) Self() string { return p.name }

// Members returns the live members (leaving ones own nothing) and the
// partitions each reports owning.
func (p *memberPeers) Members() []bus.MemberInfo {
	m := p.m.Load()
	if m == nil {
		return nil
	}
	var out []bus.MemberInfo
	for _, mb := range m.View().Members {
		if !mb.Leaving {
			out = append(out, bus.MemberInfo{Name: mb.Name, Partitions: mb.Partitions})
		}
	}
	return out
}
