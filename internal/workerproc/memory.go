package workerproc

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// Memory is a process's resident memory, from /proc/<pid>/status.
type Memory struct {
	// RSS is VmRSS, the resident set now, in bytes.
	RSS int64 `json:"rss_bytes"`
	// HWM is VmHWM, the highest resident set so far, in bytes.
	HWM int64 `json:"hwm_bytes"`
}

// Memory reads the process's VmRSS and VmHWM (Linux only).
func (p *Process) Memory() (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return Memory{}, fmt.Errorf("workerproc: memory: %w", err)
	}
	return parseStatus(b)
}

// parseStatus reads VmRSS and VmHWM from the text of /proc/<pid>/status.
func parseStatus(b []byte) (Memory, error) {
	var m Memory
	var seen int
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, value, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok {
			continue
		}
		var dst *int64
		switch string(name) {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.HWM
		default:
			continue
		}
		num, unit, _ := bytes.Cut(bytes.TrimSpace(value), []byte(" "))
		kb, err := strconv.ParseInt(string(num), 10, 64)
		if err != nil || string(unit) != "kB" {
			return Memory{}, fmt.Errorf("workerproc: status line %q: not a size in kB", sc.Bytes())
		}
		*dst = kb << 10
		seen++
	}
	if seen != 2 {
		return Memory{}, fmt.Errorf("workerproc: status has no VmRSS or no VmHWM")
	}
	return m, nil
}
