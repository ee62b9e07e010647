package natsconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	neturl "net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/internal/lograte"
)

// MaxPingsOut is how many pings a connection made by Dial may leave
// unanswered before the client declares it dead.
const MaxPingsOut = 2

// reconnectWait is the pause between two reconnection attempts to the same
// server.
const reconnectWait = 250 * time.Millisecond

// DialConfig says how Dial connects. Zero durations take nats.go's
// defaults.
type DialConfig struct {
	// Name is the client name the server shows, such as "idle-worker".
	Name string
	// Timeout bounds the first connection; after it succeeds the client
	// reconnects for ever.
	Timeout time.Duration
	// PingInterval is how often the client pings the server; a silent
	// dead connection is noticed within DeadAfter.
	PingInterval time.Duration
	// Security is the authentication and TLS of the connection; zero for
	// none (an embedded server).
	Security Config
	// SettingName names a setting in the hints of a failed first
	// connection, in the caller's terms (idle-worker names its IDLE_NATS_*
	// variable). Nil: Setting.String.
	SettingName func(Setting) string
	// InboxPrefix, when set, is the prefix of the connection's own inboxes
	// (its requests' and JetStream acknowledgements' replies) instead of
	// the shared "_INBOX". A prefix of its own lets the worker refuse
	// replies that point into its own inboxes.
	InboxPrefix string
}

// DeadAfter is the longest a dead connection that says nothing goes
// unnoticed: MaxPingsOut unanswered pings, and the next one.
func (c DialConfig) DeadAfter() time.Duration { return c.PingInterval * (MaxPingsOut + 1) }

// Dial connects to the comma-separated NATS server URLs, once, bounded by
// cfg.Timeout; after that first success the connection reconnects for ever.
// It logs, with component=nats, the connection and every disconnection,
// reconnection and asynchronous error (a nil logger discards them). closed is
// closed once the connection is closed for good.
//
// A bad cfg.Security returns its *Error. A failed first connection returns
// an error that names the URLs with their user information redacted and,
// when retrying would not help (a refused login, a failed TLS handshake),
// says which settings to check.
func Dial(urls string, cfg DialConfig, logger *slog.Logger) (_ *nats.Conn, closed <-chan struct{}, _ error) {
	secure, err := cfg.Security.Options()
	if err != nil {
		return nil, nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	log := logger.With("component", "nats")
	errLimit := lograte.New(time.Second, nil)
	done := make(chan struct{})
	// The handlers run one at a time on nats.go's callback goroutine.
	var disconnectedAt time.Time
	opts := append(secure,
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.MaxPingsOutstanding(MaxPingsOut),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			disconnectedAt = time.Now()
			if err != nil { // nil when we close the connection ourselves
				log.Warn("disconnected from NATS", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("reconnected to NATS", "url", c.ConnectedUrlRedacted(), "outage", time.Since(disconnectedAt).Round(time.Millisecond))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			// A slow consumer or a permissions error can repeat for every
			// message: one line per kind and subject per second.
			if ok, n := errLimit.Allow(subject + "\x00" + err.Error()); ok {
				log.Error("NATS error", "subject", subject, "error", err, "suppressed", n)
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(done) }),
	)
	if cfg.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(cfg.InboxPrefix))
	}
	if cfg.Timeout > 0 {
		opts = append(opts, nats.Timeout(cfg.Timeout))
	}
	if cfg.PingInterval > 0 {
		opts = append(opts, nats.PingInterval(cfg.PingInterval))
	}
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s%s: %w", redact(urls), connectHint(err, cfg.SettingName), err)
	}
	auth := "none"
	switch a := cfg.Security.Auth(); {
	case a != 0:
		auth = a.String()
	case URLHasUser(urls):
		auth = "URL user information"
	}
	_, tlsErr := nc.TLSConnectionState()
	log.Info("connected to NATS", "url", nc.ConnectedUrlRedacted(), "auth", auth, "tls", tlsErr == nil)
	return nc, done, nil
}

// connectHint explains a failed first connection that retrying will not
// fix: a refused login or a failed TLS handshake. name names the settings
// to check; nil: Setting.String.
func connectHint(err error, name func(Setting) string) string {
	if name == nil {
		name = Setting.String
	}
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		return fmt.Sprintf(" (login refused: check %s, %s, %s and %s, or %s)",
			name(CredsFile), name(NKeySeedFile), name(User), name(Password), name(Token))
	case isTLSError(err):
		return fmt.Sprintf(" (TLS failed: check %s, %s and %s)", name(TLSCAFile), name(TLSCertFile), name(TLSKeyFile))
	}
	return ""
}

// isTLSError reports whether err comes from TLS: a certificate the client
// or the server refused (a server that refuses the client's certificate
// closes the connection right after the handshake: nats.ErrTLS), or a TLS
// requirement one side does not meet.
func isTLSError(err error) bool {
	var (
		verify    *tls.CertificateVerificationError
		alert     tls.AlertError
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		record    tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &verify), errors.As(err, &alert), errors.As(err, &unknownCA),
		errors.As(err, &hostname), errors.As(err, &invalid), errors.As(err, &record):
		return true
	case errors.Is(err, nats.ErrTLS), errors.Is(err, nats.ErrSecureConnRequired), errors.Is(err, nats.ErrSecureConnWanted):
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "tls: ") || strings.Contains(msg, "x509: ")
}

// redact hides user information in a comma-separated list of NATS URLs, for
// logs and errors.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := parseURL(p)
		if err != nil {
			parts[i] = "(unparseable URL)"
			continue
		}
		if u.User != nil {
			u.User = neturl.User("redacted")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// URLHasUser reports whether any of the comma-separated NATS URLs carries
// user information (user:password@ or token@). A URL that does not parse
// but holds an "@" counts as carrying it.
func URLHasUser(urls string) bool {
	for _, p := range strings.Split(urls, ",") {
		u, err := parseURL(p)
		if err != nil {
			if strings.Contains(p, "@") {
				return true // cannot tell; assume credentials
			}
			continue
		}
		if u.User != nil {
			return true
		}
	}
	return false
}

// parseURL parses one NATS server URL the way nats.go reads it: without a
// scheme, "nats://" is implied (so "alice:secret@host:4222" has a user).
func parseURL(s string) (*neturl.URL, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "://") {
		s = "nats://" + s
	}
	return neturl.Parse(s)
}
