package workerproc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
)

// GroupSize is the number of backends of one group of Keys: the most one
// idle.admin.list request returns in TrackedKeys (within bus.MaxListLimit).
const GroupSize = 1000

// listRequests bounds the idle.admin.list requests TrackedKeys has in
// flight, and listTimeout each one.
const (
	listRequests = 8
	listTimeout  = 30 * time.Second
)

// Keys names the backends of a run: backend i is "<Instance>.g<G>.<i>" with
// G = i / GroupSize. The instance (the key's first token) keeps runs apart;
// the group token lets idle.admin.list with the match "<Instance>.g<G>.>"
// return exactly one group, looking only at its keys.
type Keys struct {
	// Instance is the first token of every key: printable ASCII, no dot.
	Instance string
}

// Key returns backend i's key.
func (k Keys) Key(i int) string {
	return k.Instance + ".g" + strconv.Itoa(i/GroupSize) + "." + strconv.Itoa(i)
}

// Group returns the pattern that matches the keys of group g: backends
// g*GroupSize to (g+1)*GroupSize-1.
func (k Keys) Group(g int) string { return k.Instance + ".g" + strconv.Itoa(g) + ".>" }

// Index returns the backend number of key, and false when key is not one
// of k's keys.
func (k Keys) Index(key string) (int, bool) {
	rest, ok := strings.CutPrefix(key, k.Instance+".g")
	if !ok {
		return 0, false
	}
	_, num, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, false
	}
	// Key(i) == key refuses signs, leading zeros and a group that
	// does not fit i.
	i, err := strconv.Atoi(num)
	if err != nil || i < 0 || k.Key(i) != key {
		return 0, false
	}
	return i, true
}

// TrackedKeys asks the worker behind nc, through subj's idle.admin.list, a
// group of keys at a time, which of k's backends 0 to n-1 it tracks:
// tracked[i] says whether backend i is. Every key is checked by name, so
// the answer is exact. It fails when a request fails or a reply is not ok
// or truncated (more than GroupSize keys in a group).
func TrackedKeys(ctx context.Context, nc *nats.Conn, subj bus.Subjects, k Keys, n int) ([]bool, error) {
	tracked := make([]bool, n)
	groups := (n + GroupSize - 1) / GroupSize
	next := make(chan int)
	errs := make([]error, listRequests)
	var wg sync.WaitGroup
	for w := range listRequests {
		wg.Go(func() {
			for g := range next {
				if err := listGroup(ctx, nc, subj, k, g, tracked); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	func() {
		defer close(next)
		for g := range groups {
			select {
			case next <- g:
			case <-ctx.Done():
				return
			}
		}
	}()
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return tracked, nil
}

// listGroup marks the tracked backends of group g in tracked. The groups
// of two calls are disjoint, so they write disjoint elements.
func listGroup(ctx context.Context, nc *nats.Conn, subj bus.Subjects, k Keys, g int, tracked []bool) error {
	body, err := json.Marshal(bus.ListRequest{Match: k.Group(g), Limit: GroupSize})
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	m, err := nc.RequestWithContext(rctx, subj.AdminList(), body)
	if err != nil {
		return fmt.Errorf("workerproc: list %s: %w", k.Group(g), err)
	}
	var reply struct {
		OK       bool   `json:"ok"`
		Error    string `json:"error"`
		Backends []struct {
			Key string `json:"key"`
		} `json:"backends"`
		Truncated bool `json:"truncated"`
	}
	if err := json.Unmarshal(m.Data, &reply); err != nil {
		return fmt.Errorf("workerproc: list %s: %w", k.Group(g), err)
	}
	if !reply.OK || reply.Truncated {
		return fmt.Errorf("workerproc: list %s: ok %v, truncated %v, error %q", k.Group(g), reply.OK, reply.Truncated, reply.Error)
	}
	for _, b := range reply.Backends {
		if i, ok := k.Index(b.Key); ok && i/GroupSize == g && i < len(tracked) {
			tracked[i] = true
		}
	}
	return nil
}
