package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/internal/logtest"
	"github.com/idle-worker/idle-worker/store"
)

// The cluster tests run three nats-server processes (the binary TestMain
// builds for the chaos tests) as one JetStream cluster on 127.0.0.1, each
// from a configuration file as an operator would write it, so that a test
// can shut down any node, the stream's leader included.

// natsNode is one nats-server process of a test cluster.
type natsNode struct {
	name    string // server_name
	port    int    // client port
	monitor int    // monitoring port (/healthz)
	conf    string // its configuration file
	log     *logtest.Buffer

	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// natsCluster is a JetStream cluster of nats-server processes.
type natsCluster struct {
	nodes []*natsNode
	http  *http.Client
}

// clusterConf is a node's configuration: what deploy/cluster/n1.conf has,
// on ports of the test's own.
const clusterConf = `server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
cluster {
  name: idle-test
  listen: 127.0.0.1:%d
  routes: [%s]
}
jetstream {
  store_dir: %q
}
`

// startNATSCluster starts n nats-server processes routed to each other and
// waits until every one reports itself healthy (JetStream current with a
// meta leader); it kills them when the test ends, printing their logs if
// it failed.
func startNATSCluster(t *testing.T, n int) *natsCluster {
	t.Helper()
	if chaosServerBin.err != nil {
		t.Fatalf("building nats-server: %v\n%s", chaosServerBin.err, chaosServerBin.output)
	}
	dir := t.TempDir()
	c := &natsCluster{http: &http.Client{Timeout: time.Second}}
	ports := freePorts(t, 3*n) // client, monitoring and route port of each node
	routes := make([]string, n)
	for i := range n {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3*i+2])
	}
	for i := range n {
		nd := &natsNode{name: fmt.Sprintf("n%d", i+1), port: ports[3*i], monitor: ports[3*i+1], log: new(logtest.Buffer)}
		nd.conf = filepath.Join(dir, nd.name+".conf")
		body := fmt.Sprintf(clusterConf, nd.name, nd.port, nd.monitor, ports[3*i+2], strings.Join(routes, ", "), filepath.Join(dir, nd.name))
		if err := os.WriteFile(nd.conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, nd)
		t.Cleanup(func() {
			nd.kill(t)
			if t.Failed() {
				t.Logf("nats-server %s log:\n%s", nd.name, nd.log)
			}
		})
		nd.start(t)
	}
	for _, nd := range c.nodes {
		chaosWait(t, 30*time.Second, "nats-server "+nd.name+" healthy", func() bool {
			for _, other := range c.nodes {
				if !other.running() {
					t.Fatalf("nats-server %s exited; its log:\n%s", other.name, other.log)
				}
			}
			return c.healthy(nd)
		})
	}
	// Healthy is not yet JetStream: wait until each node answers for it
	// (the cluster has elected its meta leader), as workers need at start.
	for _, nd := range c.nodes {
		chaosWait(t, 30*time.Second, "JetStream through nats-server "+nd.name, func() bool {
			return jetStreamReady(fmt.Sprintf("nats://127.0.0.1:%d", nd.port))
		})
	}
	return c
}

// jetStreamReady says whether the server at url answers JetStream's
// account info.
func jetStreamReady(url string) bool {
	nc, err := nats.Connect(url, nats.Timeout(time.Second))
	if err != nil {
		return false
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err == nil
}

// freePorts returns n distinct loopback ports that nothing listened on a
// moment ago: unlike n calls of freePort, which may return one port twice,
// it holds every listener until it has them all.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// urls is every node's client URL, comma-separated, as IDLE_NATS_URL and
// nats.Connect take them.
func (c *natsCluster) urls() string { return c.urlsFrom(0) }

// urlsFrom is urls starting with node i, then the others in order.
func (c *natsCluster) urlsFrom(i int) string {
	urls := make([]string, len(c.nodes))
	for j := range c.nodes {
		urls[j] = c.nodes[(i+j)%len(c.nodes)].url()
	}
	return strings.Join(urls, ",")
}

func (nd *natsNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", nd.port) }

// start runs the node's process; it does not wait for it to serve.
func (nd *natsNode) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(chaosServerBin.path, "-c", nd.conf)
	cmd.Stdout, cmd.Stderr = nd.log, nd.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nats-server %s: %v", nd.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	nd.cmd, nd.done = cmd, done
}

func (nd *natsNode) running() bool {
	if nd.cmd == nil {
		return false
	}
	select {
	case <-nd.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM (nats-server's graceful shutdown) and waits for the
// process to exit.
func (nd *natsNode) stop(t *testing.T) {
	t.Helper()
	if !nd.running() {
		return
	}
	if err := nd.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM nats-server %s: %v", nd.name, err)
	}
	select {
	case <-nd.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("nats-server %s still running 15s after SIGTERM", nd.name)
	}
}

// kill kills the process with SIGKILL, if it runs, and waits for it.
func (nd *natsNode) kill(t *testing.T) {
	t.Helper()
	if !nd.running() {
		return
	}
	_ = nd.cmd.Process.Kill()
	select {
	case <-nd.done:
	case <-time.After(bound):
		t.Errorf("nats-server %s (pid %d) still running %v after SIGKILL", nd.name, nd.cmd.Process.Pid, bound)
	}
}

// healthy reports whether the node answers /healthz with 200: it serves,
// and its JetStream is current with a meta leader.
func (c *natsCluster) healthy(nd *natsNode) bool {
	resp, err := c.http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", nd.monitor))
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// streamLeader returns the name of the node that leads the store's stream,
// as the JetStream API's stream info says, or "" with the reason when
// there is none now.
func streamLeader(nc *nats.Conn) (string, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s, err := js.Stream(ctx, store.DefaultStreamName)
	if err != nil {
		return "", err
	}
	info := s.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", errors.New("no leader")
	}
	return info.Cluster.Leader, nil
}

// node returns the node named name, or nil.
func (c *natsCluster) node(name string) *natsNode {
	for _, nd := range c.nodes {
		if nd.name == name {
			return nd
		}
	}
	return nil
}
