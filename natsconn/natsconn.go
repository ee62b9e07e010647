// Package natsconn connects a NATS client: it turns authentication and TLS
// settings into nats.go connect options, checking them first so that a bad
// setting is reported as such before any connection is tried, and Dial makes
// the long-lived, logged connection a service needs.
//
// A Config holds at most one authentication method: a .creds file (a user
// JWT and its nkey seed, for servers in operator/JWT mode), an nkey seed
// file, a user and password, or a token. TLS is independent of it: a CA file
// to verify the server with, and a certificate and key for mutual TLS.
//
//	cfg := natsconn.Config{CredsFile: "/etc/idle-worker/worker.creds", TLSCAFile: "/etc/idle-worker/ca.pem"}
//	opts, err := cfg.Options()
//	if err != nil {
//		return err // a *natsconn.Error naming the setting at fault
//	}
//	nc, err := nats.Connect(url, opts...)
//
// Dial connects once, bounded by a timeout, then reconnects for ever; it logs
// the connection's life and explains a first connection that retrying will
// not fix (a refused login, a failed TLS handshake):
//
//	nc, closed, err := natsconn.Dial(url, natsconn.DialConfig{
//		Name: "idle-worker", Timeout: 5 * time.Second, PingInterval: 5 * time.Second, Security: cfg,
//	}, logger)
//
// Secrets never reach an error, a log line or a formatted value: errors name
// the setting and the file, never their contents; Password and Token are of
// type Secret, which prints as "[redacted]"; the seeds read to check a file
// are wiped after use, and nats.go reads them again, from the file, only to
// sign the server's challenge.
package natsconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Sentinel errors; an *Error wraps one of them. Test with errors.Is.
var (
	// ErrConflict: more than one authentication method is set.
	ErrConflict = errors.New("natsconn: more than one authentication method")
	// ErrIncomplete: a setting is set without the one it needs (a user
	// without a password, a TLS certificate without its key).
	ErrIncomplete = errors.New("natsconn: incomplete setting")
	// ErrFile: a file is missing, unreadable, or does not hold what it
	// should.
	ErrFile = errors.New("natsconn: unusable file")
)

// Setting names one field of Config, so that callers can report a bad one in
// their own terms (idle-worker names its IDLE_NATS_* variable).
type Setting int

// The settings of a Config.
const (
	CredsFile Setting = iota + 1
	NKeySeedFile
	User
	Password
	Token
	TLSCAFile
	TLSCertFile
	TLSKeyFile
)

var settingNames = map[Setting]string{
	CredsFile:    "creds file",
	NKeySeedFile: "nkey seed file",
	User:         "user",
	Password:     "password",
	Token:        "token",
	TLSCAFile:    "TLS CA file",
	TLSCertFile:  "TLS certificate file",
	TLSKeyFile:   "TLS key file",
}

// String returns the setting's name in words, such as "creds file".
func (s Setting) String() string {
	if n, ok := settingNames[s]; ok {
		return n
	}
	return fmt.Sprintf("Setting(%d)", int(s))
}

// Error is a bad setting of a Config. Its text names the setting and, for a
// file, the path and what is wrong with it; it never holds a secret.
type Error struct {
	// Setting is the setting at fault.
	Setting Setting
	// With is the other setting involved: for ErrConflict the method
	// already chosen, for ErrIncomplete the missing companion; else zero.
	With Setting
	// Err is ErrConflict, ErrIncomplete or ErrFile.
	Err error
	// Detail says what is wrong, for people.
	Detail string
	// cause is the underlying error, when there is one and its text is
	// safe to show.
	cause error
}

// Error implements error.
func (e *Error) Error() string { return "natsconn: " + e.Setting.String() + ": " + e.Detail }

// Unwrap returns the sentinel and the underlying cause, if any.
func (e *Error) Unwrap() []error {
	if e.cause != nil {
		return []error{e.Err, e.cause}
	}
	return []error{e.Err}
}

// Secret is a string that does not print: fmt (every verb that prints a
// string), log/slog and encoding/json show "[redacted]" instead, or nothing
// when it is empty. Convert it with string(s) where the value is needed.
type Secret string

const redacted = "[redacted]"

// String returns "[redacted]", or "" for an empty Secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v from printing the secret.
func (s Secret) GoString() string { return fmt.Sprintf("natsconn.Secret(%q)", s.String()) }

// LogValue keeps log/slog from printing the secret.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText keeps encoding/json and friends from printing the secret.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Config is the authentication and TLS of a NATS connection. Every field is
// optional; set at most one of CredsFile, NKeySeedFile, User (with
// Password) and Token.
type Config struct {
	// CredsFile is a .creds file: a user JWT and its nkey seed.
	CredsFile string
	// NKeySeedFile is a file holding a user nkey seed (SU…).
	NKeySeedFile string
	// User and Password log in with a user name and password.
	User     string
	Password Secret
	// Token logs in with a token.
	Token Secret
	// TLSCAFile holds the PEM certificates that verify the server; empty:
	// the system's roots. Setting it turns TLS on.
	TLSCAFile string
	// TLSCertFile and TLSKeyFile are the client's PEM certificate and key
	// for mutual TLS. Setting them turns TLS on.
	TLSCertFile string
	TLSKeyFile  string
}

// Auth returns the authentication method the Config chooses: CredsFile,
// NKeySeedFile, User, Token, or zero for none. When more than one is set it
// returns the first of them in that order (Validate rejects that).
func (c Config) Auth() Setting {
	if m := c.methods(); len(m) > 0 {
		return m[0]
	}
	return 0
}

// TLS reports whether the Config turns TLS on.
func (c Config) TLS() bool {
	return c.TLSCAFile != "" || c.TLSCertFile != "" || c.TLSKeyFile != ""
}

// methods returns the authentication methods that are set, in order.
func (c Config) methods() []Setting {
	var m []Setting
	if c.CredsFile != "" {
		m = append(m, CredsFile)
	}
	if c.NKeySeedFile != "" {
		m = append(m, NKeySeedFile)
	}
	if c.User != "" || c.Password != "" {
		m = append(m, User)
	}
	if c.Token != "" {
		m = append(m, Token)
	}
	return m
}

// Validate checks that at most one authentication method is set, that every
// setting has its companion, and that every file exists and holds what it
// should. It returns nil or an *Error.
func (c Config) Validate() error {
	if m := c.methods(); len(m) > 1 {
		s := m[1]
		if s == User && c.User == "" {
			s = Password
		}
		return &Error{Setting: s, With: m[0], Err: ErrConflict,
			Detail: fmt.Sprintf("cannot be combined with the %v: choose one authentication method", m[0])}
	}
	switch {
	case c.User != "" && c.Password == "":
		return incomplete(User, Password)
	case c.Password != "" && c.User == "":
		return incomplete(Password, User)
	case c.TLSCertFile != "" && c.TLSKeyFile == "":
		return incomplete(TLSCertFile, TLSKeyFile)
	case c.TLSKeyFile != "" && c.TLSCertFile == "":
		return incomplete(TLSKeyFile, TLSCertFile)
	}
	if c.CredsFile != "" {
		if err := checkCreds(c.CredsFile, time.Now()); err != nil {
			return err
		}
	}
	if c.NKeySeedFile != "" {
		if err := checkSeed(c.NKeySeedFile); err != nil {
			return err
		}
	}
	if c.TLSCAFile != "" {
		if err := checkCA(c.TLSCAFile); err != nil {
			return err
		}
	}
	if c.TLSCertFile != "" {
		if err := checkKeyPair(c.TLSCertFile, c.TLSKeyFile); err != nil {
			return err
		}
	}
	return nil
}

// Options validates the Config and returns the nats.go options that apply
// it. With nothing set it returns no options.
func (c Config) Options() ([]nats.Option, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var opts []nats.Option
	switch c.Auth() {
	case CredsFile:
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	case NKeySeedFile:
		o, err := nats.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, &Error{Setting: NKeySeedFile, Err: ErrFile, Detail: c.NKeySeedFile + ": holds no valid user nkey seed"}
		}
		opts = append(opts, o)
	case User:
		opts = append(opts, nats.UserInfo(c.User, string(c.Password)))
	case Token:
		opts = append(opts, nats.Token(string(c.Token)))
	}
	if c.TLSCAFile != "" {
		opts = append(opts, nats.RootCAs(c.TLSCAFile))
	}
	if c.TLSCertFile != "" {
		opts = append(opts, nats.ClientCert(c.TLSCertFile, c.TLSKeyFile))
	}
	return opts, nil
}

func incomplete(s, with Setting) error {
	return &Error{Setting: s, With: with, Err: ErrIncomplete, Detail: fmt.Sprintf("is set but the %v is not", with)}
}

// readFile reads a settings file; its errors name the path and the OS
// reason, never the contents.
func readFile(s Setting, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{Setting: s, Err: ErrFile, Detail: err.Error(), cause: err}
	}
	return b, nil
}

// wipe overwrites a buffer that held a secret.
func wipe(b []byte) {
	for i := range b {
		b[i] = 'x'
	}
}

// checkCreds checks that path holds a user JWT, not expired at now, and a
// user nkey seed. Parser errors are not passed on: their text could quote
// the file.
func checkCreds(path string, now time.Time) error {
	b, err := readFile(CredsFile, path)
	if err != nil {
		return err
	}
	defer wipe(b)
	token, err := nkeys.ParseDecoratedJWT(b)
	if err != nil {
		return &Error{Setting: CredsFile, Err: ErrFile, Detail: path + ": holds no user JWT"}
	}
	claims, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return &Error{Setting: CredsFile, Err: ErrFile, Detail: path + ": holds no valid user JWT"}
	}
	if claims.Expires > 0 && time.Unix(claims.Expires, 0).Before(now) {
		return &Error{Setting: CredsFile, Err: ErrFile,
			Detail: fmt.Sprintf("%s: the user JWT expired at %s", path, time.Unix(claims.Expires, 0).UTC().Format(time.RFC3339))}
	}
	kp, err := nkeys.ParseDecoratedUserNKey(b)
	if err != nil {
		return &Error{Setting: CredsFile, Err: ErrFile, Detail: path + ": holds no valid user nkey seed"}
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil || pub != claims.Subject {
		return &Error{Setting: CredsFile, Err: ErrFile, Detail: path + ": the seed does not belong to the user JWT"}
	}
	return nil
}

// checkSeed checks that path holds a user nkey seed.
func checkSeed(path string) error {
	b, err := readFile(NKeySeedFile, path)
	if err != nil {
		return err
	}
	defer wipe(b)
	kp, err := nkeys.ParseDecoratedUserNKey(b)
	if err != nil {
		return &Error{Setting: NKeySeedFile, Err: ErrFile, Detail: path + ": holds no valid user nkey seed"}
	}
	kp.Wipe()
	return nil
}

// checkCA checks that path holds at least one PEM certificate.
func checkCA(path string) error {
	b, err := readFile(TLSCAFile, path)
	if err != nil {
		return err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return &Error{Setting: TLSCAFile, Err: ErrFile, Detail: path + ": holds no PEM certificate"}
	}
	return nil
}

// checkKeyPair checks that cert and key hold a matching PEM certificate and
// private key.
func checkKeyPair(cert, key string) error {
	if _, err := readFile(TLSCertFile, cert); err != nil {
		return err
	}
	kb, err := readFile(TLSKeyFile, key)
	if err != nil {
		return err
	}
	wipe(kb)
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		// crypto/tls's messages name what is wrong, never key material.
		return &Error{Setting: TLSCertFile, With: TLSKeyFile, Err: ErrFile,
			Detail: fmt.Sprintf("%s and %s: not a matching PEM certificate and key: %v", cert, key, err), cause: err}
	}
	return nil
}
