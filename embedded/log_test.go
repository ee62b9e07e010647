package embedded_test

import (
	"log/slog"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/embedded"
	"github.com/idle-worker/idle-worker/internal/logtest"
)

// TestServerErrorsRateLimited: many connections that each make the server
// log an error (here, a control line over the server's maximum) produce one
// line per second, not one per connection, with the count suppressed.
func TestServerErrorsRateLimited(t *testing.T) {
	var logs logtest.Buffer
	s := start(t, embedded.Config{Listen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	u, err := url.Parse(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	const conns = 50
	long := "PUB " + strings.Repeat("x", 8192) + " 0\r\n\r\n"
	for range conns {
		c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write([]byte("CONNECT {\"verbose\":false}\r\n" + long))
		// The server answers -ERR and closes the connection: read to EOF.
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
		c.Close()
	}
	lines := strings.Count(logs.String(), "control line")
	if lines == 0 {
		t.Fatalf("no control-line error logged; log:\n%s", logs.String())
	}
	if lines > 5 {
		t.Errorf("%d control-line error lines for %d connections; want about one per second", lines, conns)
	}
	if !strings.Contains(logs.String(), "suppressed=") {
		t.Errorf("log lacks the suppressed count:\n%s", logs.String())
	}
}
