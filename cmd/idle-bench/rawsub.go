package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/url"
	"time"
)

// rawSub is a minimal NATS subscriber speaking the client protocol over TCP
// itself. It stamps each message as soon as its control line is read and
// allocates nothing per message, so, unlike a nats.go subscription (which
// builds a Msg and parses headers for every event), it adds no garbage to
// the process it observes: the worker and the server share this process and
// its garbage collector.
type rawSub struct {
	conn net.Conn
	done chan error
}

// rawSubscribe subscribes to subject on the server at serverURL and calls
// onMsg from its own goroutine with each message's subject (valid only
// during the call) and arrival time.
func rawSubscribe(serverURL, subject string, onMsg func(subject []byte, at time.Time)) (*rawSub, error) {
	u, err := url.Parse(serverURL)
	if err != nil {
		return nil, err
	}
	conn, err := net.DialTimeout("tcp", u.Host, waitBound)
	if err != nil {
		return nil, err
	}
	r := bufio.NewReaderSize(conn, 1<<16)
	_ = conn.SetDeadline(time.Now().Add(waitBound))
	if line, err := r.ReadSlice('\n'); err != nil || !bytes.HasPrefix(line, []byte("INFO ")) {
		conn.Close()
		return nil, fmt.Errorf("raw subscriber: no INFO from the server: %q %v", line, err)
	}
	_, err = fmt.Fprintf(conn, "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"protocol\":1,\"name\":\"idle-bench raw subscriber\"}\r\nSUB %s 1\r\nPING\r\n", subject)
	if err != nil {
		conn.Close()
		return nil, err
	}
	// The server answers PING after it has processed SUB.
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("raw subscriber: %w", err)
		}
		if bytes.HasPrefix(line, []byte("PONG")) {
			break
		}
		if bytes.HasPrefix(line, []byte("-ERR")) {
			conn.Close()
			return nil, fmt.Errorf("raw subscriber: %s", bytes.TrimSpace(line))
		}
	}
	_ = conn.SetDeadline(time.Time{})
	s := &rawSub{conn: conn, done: make(chan error, 1)}
	go func() { s.done <- s.read(r, onMsg) }()
	return s, nil
}

func (s *rawSub) read(r *bufio.Reader, onMsg func([]byte, time.Time)) error {
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		at := time.Now()
		switch {
		case bytes.HasPrefix(line, []byte("MSG ")), bytes.HasPrefix(line, []byte("HMSG ")):
			// [H]MSG <subject> <sid> [reply] [hdr_len] <total_len>\r\n
			subject, n, ok := parseMsgLine(line)
			if !ok {
				return fmt.Errorf("raw subscriber: bad line %q", line)
			}
			onMsg(subject, at)
			if _, err := r.Discard(n + 2); err != nil {
				return err
			}
		case bytes.HasPrefix(line, []byte("PING")):
			if _, err := s.conn.Write([]byte("PONG\r\n")); err != nil {
				return err
			}
		case bytes.HasPrefix(line, []byte("-ERR")):
			return fmt.Errorf("raw subscriber: %s", bytes.TrimSpace(line))
		}
	}
}

// Close closes the connection and waits for the reader.
func (s *rawSub) Close() {
	s.conn.Close()
	select {
	case <-s.done:
	case <-time.After(waitBound):
	}
}

// parseMsgLine returns the subject and the payload length (headers
// included) of a MSG or HMSG control line.
func parseMsgLine(line []byte) (subject []byte, n int, ok bool) {
	line = bytes.TrimRight(line, "\r\n")
	i := bytes.IndexByte(line, ' ')
	if i < 0 {
		return nil, 0, false
	}
	rest := line[i+1:]
	j := bytes.IndexByte(rest, ' ')
	k := bytes.LastIndexByte(line, ' ')
	// At least a sid between the subject and the size.
	if j <= 0 || k <= i+1+j || k == len(line)-1 {
		return nil, 0, false
	}
	for _, c := range line[k+1:] {
		if c < '0' || c > '9' || n > 1<<30 {
			return nil, 0, false
		}
		n = n*10 + int(c-'0')
	}
	return rest[:j], n, true
}
