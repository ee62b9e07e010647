package member_test

import (
	"slices"
	"testing"

	"github.com/idle-worker/idle-worker/member"
)

func TestViewLive(t *testing.T) {
	v := member.View{Self: "b", Partitions: 4, Members: []member.Member{
		{Name: "a"}, {Name: "b"}, {Name: "c", Leaving: true}, {Name: "d"},
	}}
	if got, want := v.Live(), []string{"a", "b", "d"}; !slices.Equal(got, want) {
		t.Errorf("Live() = %q; want %q", got, want)
	}
	if got := (member.View{}).Live(); len(got) != 0 {
		t.Errorf("empty view: Live() = %q; want none", got)
	}
}

func TestViewOwners(t *testing.T) {
	tests := []struct {
		name    string
		self    string
		members []member.Member
		want    []string
	}{
		{name: "no members", want: []string{"", "", "", ""}},
		{name: "one owner each", self: "a",
			members: []member.Member{{Name: "a", Partitions: []int{0, 2}}, {Name: "b", Partitions: []int{3}}},
			want:    []string{"a", "", "a", "b"}},
		{name: "leaving members own nothing", self: "a",
			members: []member.Member{{Name: "a", Partitions: []int{0}}, {Name: "b", Partitions: []int{1, 2}, Leaving: true}},
			want:    []string{"a", "", "", ""}},
		{name: "two others report one: the smaller name", self: "z",
			members: []member.Member{{Name: "b", Partitions: []int{1}}, {Name: "c", Partitions: []int{1}}},
			want:    []string{"", "b", "", ""}},
		{name: "self and another report one: the other", self: "a",
			members: []member.Member{{Name: "a", Partitions: []int{1, 2}}, {Name: "b", Partitions: []int{2}}},
			want:    []string{"", "a", "b", ""}},
		{name: "out of range partitions are ignored", self: "a",
			members: []member.Member{{Name: "a", Partitions: []int{-1, 3, 4, 99}}},
			want:    []string{"", "", "", "a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := member.View{Self: tt.self, Partitions: 4, Members: tt.members}
			if got := v.Owners(); !slices.Equal(got, tt.want) {
				t.Errorf("Owners() = %q; want %q", got, tt.want)
			}
		})
	}
}

func TestViewMember(t *testing.T) {
	v := member.View{Members: []member.Member{{Name: "a", Instance: "1"}, {Name: "c", Instance: "3"}}}
	for _, tt := range []struct {
		name     string
		ok       bool
		instance string
	}{{"a", true, "1"}, {"b", false, ""}, {"c", true, "3"}, {"d", false, ""}} {
		m, ok := v.Member(tt.name)
		if ok != tt.ok || m.Instance != tt.instance {
			t.Errorf("Member(%q) = %+v, %v; want instance %q, %v", tt.name, m, ok, tt.instance, tt.ok)
		}
	}
}
