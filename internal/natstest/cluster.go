package natstest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

const (
	// clusterName names every cluster StartCluster starts; clusters of
	// different tests never meet, as none has a route to another.
	clusterName = "natstest"
	// formBound bounds the wait for a cluster to form. On loopback it forms
	// in well under a second; the bound leaves room for a failed first
	// election, retried after nats-server's election timeout (4 to 9 s).
	formBound = 20 * time.Second
	// pollEvery is how often a wait checks its condition.
	pollEvery = 20 * time.Millisecond
)

// Cluster is a JetStream cluster of embedded nats-servers on 127.0.0.1,
// started by StartCluster.
type Cluster struct {
	// Servers are the nodes in the order they started; node i is named
	// "n<i+1>" (server.Options.ServerName). Close one to fail it; the test
	// closes the others when it ends.
	Servers []*Server
}

// StartCluster starts n (at least 2; 3 for R3 streams) servers with
// JetStream, each with its store in a test directory, its client listener
// on 127.0.0.1 and a random port, and routes to every node on 127.0.0.1.
// It returns once every node is routed to every other, the JetStream meta
// group has a leader that counts all n nodes as peers, and every node is
// current with it (within 20 s); otherwise it fails tb. opts apply to
// every node, after the cluster settings.
func StartCluster(tb testing.TB, n int, opts ...Option) *Cluster {
	tb.Helper()
	if n < 2 {
		tb.Fatalf("natstest: a cluster of %d nodes; want at least 2", n)
	}
	ports, err := freePorts(n)
	if err != nil {
		tb.Fatal(err)
	}
	routes := make([]*url.URL, n)
	for i, p := range ports {
		routes[i] = &url.URL{Scheme: "nats-route", Host: net.JoinHostPort(loopback, strconv.Itoa(p))}
	}
	c := &Cluster{}
	for i := range n {
		node := func(st *settings) {
			st.jetStream, st.storeDir = true, tb.TempDir()
			st.configure = append(st.configure, func(o *server.Options) {
				o.ServerName = fmt.Sprintf("n%d", i+1)
				o.Cluster.Name = clusterName
				o.Cluster.Host, o.Cluster.Port = loopback, ports[i]
				o.Routes = routes // its own is ignored, as nats-server's cluster tests do
			})
		}
		c.Servers = append(c.Servers, Start(tb, append([]Option{node}, opts...)...))
	}
	deadline := time.Now().Add(formBound)
	for {
		err := c.formed()
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			tb.Fatalf("natstest: cluster of %d not formed within %v: %v", n, formBound, err)
		}
		time.Sleep(pollEvery)
	}
}

// freePorts returns n distinct ports free on 127.0.0.1 for the route
// listeners. A JetStream cluster needs its routes configured when it
// starts, so unlike client ports they cannot be left to the server to
// pick; the listeners are held together, so the ports differ, and closed
// just before the servers take them.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(loopback, "0"))
		if err != nil {
			return nil, fmt.Errorf("natstest: free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// formed reports why the cluster has not formed yet, or nil once it has.
func (c *Cluster) formed() error {
	var leader *Server
	for _, s := range c.Servers {
		rz, err := s.Routez(nil)
		if err != nil {
			return fmt.Errorf("%s: routez: %w", s.Name(), err)
		}
		peers := map[string]bool{}
		for _, r := range rz.Routes {
			peers[r.RemoteID] = true
		}
		if len(peers) != len(c.Servers)-1 {
			return fmt.Errorf("%s is routed to %d of its %d peers", s.Name(), len(peers), len(c.Servers)-1)
		}
		if !s.JetStreamIsCurrent() {
			return fmt.Errorf("%s: JetStream meta group not current", s.Name())
		}
		if s.JetStreamIsLeader() {
			leader = s
		}
	}
	if leader == nil {
		return errors.New("no JetStream meta leader")
	}
	if got := len(leader.JetStreamClusterPeers()); got != len(c.Servers) {
		return fmt.Errorf("meta leader %s counts %d peers", leader.Name(), got)
	}
	return nil
}

// URLs returns the client URLs of every node, stopped ones included,
// separated by commas, as nats.Connect takes them.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		urls[i] = s.ClientURL()
	}
	return strings.Join(urls, ",")
}

// StreamLeader returns the running node that leads stream in account
// (server.DEFAULT_GLOBAL_ACCOUNT without accounts), or nil if none does
// now, as during an election.
func (c *Cluster) StreamLeader(account, stream string) *Server {
	for _, s := range c.Servers {
		if s.Running() && s.JetStreamIsStreamLeader(account, stream) {
			return s
		}
	}
	return nil
}
