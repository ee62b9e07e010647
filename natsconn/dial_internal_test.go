package natsconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

func TestConnectHint(t *testing.T) {
	t.Parallel()
	idle := func(s Setting) string {
		return map[Setting]string{
			CredsFile: "IDLE_NATS_CREDS", NKeySeedFile: "IDLE_NATS_NKEY_SEED", User: "IDLE_NATS_USER",
			Password: "IDLE_NATS_PASSWORD", Token: "IDLE_NATS_TOKEN", TLSCAFile: "IDLE_NATS_TLS_CA",
			TLSCertFile: "IDLE_NATS_TLS_CERT", TLSKeyFile: "IDLE_NATS_TLS_KEY",
		}[s]
	}
	const (
		loginIdle = " (login refused: check IDLE_NATS_CREDS, IDLE_NATS_NKEY_SEED, IDLE_NATS_USER and IDLE_NATS_PASSWORD, or IDLE_NATS_TOKEN)"
		tlsIdle   = " (TLS failed: check IDLE_NATS_TLS_CA, IDLE_NATS_TLS_CERT and IDLE_NATS_TLS_KEY)"
		loginBare = " (login refused: check creds file, nkey seed file, user and password, or token)"
		tlsBare   = " (TLS failed: check TLS CA file, TLS certificate file and TLS key file)"
	)
	tests := []struct {
		name string
		err  error
		want string // the whole hint with idle-worker's names; "" for none
		bare string // the whole hint with the default names
	}{
		{"authorization violation", fmt.Errorf("connect: %w", nats.ErrAuthorization), loginIdle, loginBare},
		{"authentication expired", nats.ErrAuthExpired, loginIdle, loginBare},
		{"authentication revoked", nats.ErrAuthRevoked, loginIdle, loginBare},
		{"unknown CA", x509.UnknownAuthorityError{}, tlsIdle, tlsBare},
		{"hostname mismatch", x509.HostnameError{Certificate: &x509.Certificate{}, Host: "127.0.0.1"}, tlsIdle, tlsBare},
		{"server requires TLS", nats.ErrSecureConnRequired, tlsIdle, tlsBare},
		{"remote TLS alert", errors.New("remote error: tls: certificate required"), tlsIdle, tlsBare},
		{"closed after the handshake", fmt.Errorf("%w: connection closed by remote after TLS handshake: EOF", nats.ErrTLS), tlsIdle, tlsBare},
		{"connection refused", errors.New("dial tcp 127.0.0.1:4222: connect: connection refused"), "", ""},
		{"no servers", nats.ErrNoServers, "", ""},
		{"timeout", nats.ErrTimeout, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := connectHint(tt.err, idle); got != tt.want {
				t.Errorf("connectHint(%v, IDLE names): got %q; want %q", tt.err, got, tt.want)
			}
			if got := connectHint(tt.err, nil); got != tt.bare {
				t.Errorf("connectHint(%v, nil): got %q; want %q", tt.err, got, tt.bare)
			}
		})
	}
}

func TestIsTLSError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"certificate verification", fmt.Errorf("dial: %w", &tls.CertificateVerificationError{Err: errors.New("bad")}), true},
		{"alert", tls.AlertError(42), true},
		{"unknown authority", x509.UnknownAuthorityError{}, true},
		{"hostname", x509.HostnameError{Certificate: &x509.Certificate{}, Host: "h"}, true},
		{"invalid certificate", x509.CertificateInvalidError{Cert: &x509.Certificate{}, Reason: x509.Expired}, true},
		{"record header", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, true},
		{"nats TLS", nats.ErrTLS, true},
		{"secure connection required", nats.ErrSecureConnRequired, true},
		{"secure connection wanted", fmt.Errorf("x: %w", nats.ErrSecureConnWanted), true},
		{"tls text", errors.New("remote error: tls: bad certificate"), true},
		{"x509 text", errors.New("x509: certificate has expired"), true},
		{"connection refused", errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), false},
		{"authorization", nats.ErrAuthorization, false},
		{"no servers", nats.ErrNoServers, false},
	}
	for _, tt := range tests {
		if got := isTLSError(tt.err); got != tt.want {
			t.Errorf("%s: isTLSError(%v): got %v; want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in, want string }{
		{"no user", "nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"user and password", "nats://u:hunter2@127.0.0.1:4222", "nats://redacted@127.0.0.1:4222"},
		{"token, second URL", "nats://s3cr3t@127.0.0.1:4222,tls://a:b@h:4443", "nats://redacted@127.0.0.1:4222,tls://redacted@h:4443"},
		{"no scheme", "alice:s3cret@127.0.0.1:4222", "nats://redacted@127.0.0.1:4222"}, // nats.go implies nats://
		{"no scheme, no user", "127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"spaces around", " nats://u:pw@h:1 , nats://h:2", "nats://redacted@h:1,nats://h:2"},
		{"unparseable", "nats://u:pw@h:port\x7f", "(unparseable URL)"},
	}
	for _, tt := range tests {
		got := redact(tt.in)
		if got != tt.want {
			t.Errorf("%s: redact(%q): got %q; want %q", tt.name, tt.in, got, tt.want)
		}
		for _, secret := range []string{"hunter2", "s3cr3t", "s3cret", ":pw@", ":b@"} {
			if strings.Contains(got, secret) {
				t.Errorf("%s: redact(%q): got %q; it leaks %q", tt.name, tt.in, got, secret)
			}
		}
	}
}

func TestURLHasUser(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want bool
	}{
		{"nats://127.0.0.1:4222", false},
		{"127.0.0.1:4222", false},
		{"nats://u:pw@127.0.0.1:4222", true},
		{"alice:pw@127.0.0.1:4222", true},
		{"nats://127.0.0.1:4222,nats://tok@127.0.0.1:4223", true},
		{"nats://h:1,nats://h:2", false},
		{"nats://u:pw@h:port\x7f", true}, // unparseable with an @: assume credentials
		{"nats://h:port\x7f", false},
	}
	for _, tt := range tests {
		if got := URLHasUser(tt.in); got != tt.want {
			t.Errorf("URLHasUser(%q): got %v; want %v", tt.in, got, tt.want)
		}
	}
}
