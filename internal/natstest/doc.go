// Package natstest starts embedded nats-servers for tests and benchmarks:
// one server, or a JetStream cluster of several, listening on 127.0.0.1
// only, on random ports, with no log and no signal handlers, after the
// habits of nats-server's own tests.
//
// In a test, Start returns a running server and shuts it down when the test
// ends:
//
//	s := natstest.Start(t, natstest.JetStream())
//	nc, err := nats.Connect(s.ClientURL())
//
// Code without a testing.TB (a benchmark program, an Example) uses Run and
// closes the server itself:
//
//	s, err := natstest.Run(natstest.JetStream())
//	if err != nil { ... }
//	defer s.Close()
//
// Options: JetStream turns JetStream on with its store in a fresh temporary
// directory; ConfigFile starts from a nats-server configuration file (its
// client listener, monitoring and store are moved out of the way, the rest
// is kept); Configure edits the server.Options last, for anything else
// (users, TLS, a fixed port).
//
// StartCluster starts n JetStream servers routed to each other and waits
// until they have formed one cluster with a JetStream meta leader. Cluster
// URLs gives the client URLs to connect to, StreamLeader finds the node
// leading a stream, and closing one node (Cluster.Servers[i].Close) fails
// it, for failover tests:
//
//	c := natstest.StartCluster(t, 3)
//	nc, err := nats.Connect(c.URLs())
//	...
//	c.StreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, "ORDERS").Close()
//
// WaitFor polls a condition until it holds, failing the test after a
// timeout, for the waits of tests that have no event to block on:
//
//	natstest.WaitFor(t, 10*time.Second, "the reconnection", connected)
//
// Every wait is bounded: a server not ready for connections within 10 s,
// or a cluster not formed within 20 s, is an error.
package natstest
