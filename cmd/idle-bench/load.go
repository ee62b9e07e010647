package main

import (
	"bytes"
	"os"
	"strconv"
)

// cpuSample is a reading of the machine's and this process's CPU time
// (with its children that exited), in clock ticks, from /proc (Linux). Comparing two samples tells how much of
// the machine other processes used meanwhile: on a shared machine they
// compete with everything measured here.
type cpuSample struct {
	busy, total, self uint64
	ok                bool
}

func sampleCPU() cpuSample {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuSample{}
	}
	line, _, _ := bytes.Cut(stat, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 9 || string(f[0]) != "cpu" {
		return cpuSample{}
	}
	var s cpuSample
	for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
		n, err := strconv.ParseUint(string(v), 10, 64)
		if err != nil {
			return cpuSample{}
		}
		s.total += n
		if i != 3 && i != 4 {
			s.busy += n
		}
	}
	self, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return cpuSample{}
	}
	// Fields after the command (which may hold spaces) in parentheses.
	if i := bytes.LastIndexByte(self, ')'); i >= 0 {
		g := bytes.Fields(self[i+1:])
		// utime, stime, cutime and cstime are fields 14 to 17 of the
		// line: this process and its children that were waited for (the
		// idle-worker processes of the process section, once they exit).
		if len(g) > 14 {
			var sum uint64
			s.ok = true
			for _, f := range g[11:15] {
				n, err := strconv.ParseUint(string(f), 10, 64)
				if err != nil {
					s.ok = false
				}
				sum += n
			}
			s.self = sum
		}
	}
	return s
}

// otherLoad returns the share of the machine's CPU time (0 to 100) that
// other processes used between a and b, and -1 when unknown.
func otherLoad(a, b cpuSample) float64 {
	if !a.ok || !b.ok || b.total <= a.total {
		return -1
	}
	other := float64(b.busy-a.busy) - float64(b.self-a.self)
	return max(0, 100*other/float64(b.total-a.total))
}

// selfLoad returns the share of the machine's CPU time (0 to 100) that this
// process used between a and b, and -1 when unknown.
func selfLoad(a, b cpuSample) float64 {
	if !a.ok || !b.ok || b.total <= a.total {
		return -1
	}
	return 100 * float64(b.self-a.self) / float64(b.total-a.total)
}
