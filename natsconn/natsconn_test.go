package natsconn_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/idle-worker/idle-worker/natsconn"
	"github.com/idle-worker/idle-worker/natsconn/natsconntest"
)

// fixtures are valid and broken credential files for the table tests.
type fixtures struct {
	dir, creds, expiredCreds, seed, ca, cert, key string
	accountSeed, garbage, missing, otherKey       string
	mismatchedCreds                               string
}

func newFixtures(t *testing.T) fixtures {
	t.Helper()
	dir := t.TempDir()
	op := natsconntest.NewOperator(t)
	pki := natsconntest.NewPKI(t, dir, "a")
	other := natsconntest.NewPKI(t, dir, "b")
	f := fixtures{
		dir:          dir,
		creds:        op.UserCreds(t, dir, "worker.creds", 0),
		expiredCreds: op.UserCreds(t, dir, "expired.creds", -time.Hour),
		ca:           pki.CAFile,
		cert:         pki.ClientCertFile,
		key:          pki.ClientKeyFile,
		otherKey:     other.ClientKeyFile,
		garbage:      filepath.Join(dir, "garbage"),
		missing:      filepath.Join(dir, "missing"),
		accountSeed:  filepath.Join(dir, "account.nk"),
	}
	f.seed, _ = natsconntest.UserSeed(t, dir, "worker.nk")
	write := func(path, data string) {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(f.garbage, "not a credential\n")
	// An account seed is a valid nkey, but not a user's.
	acc, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	accSeed, err := acc.Seed()
	if err != nil {
		t.Fatal(err)
	}
	write(f.accountSeed, string(accSeed)+"\n")
	// A creds file whose seed is not the JWT's user.
	creds, err := os.ReadFile(f.creds)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := os.ReadFile(f.seed)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(creds, []byte("\nSU")) + 1
	if i == 0 {
		t.Fatalf("creds file %s holds no user seed", f.creds)
	}
	f.mismatchedCreds = filepath.Join(dir, "mismatched.creds")
	write(f.mismatchedCreds, string(creds[:i])+strings.TrimSpace(string(seed))+string(creds[i+58:]))
	return f
}

func TestValidate(t *testing.T) {
	t.Parallel()
	f := newFixtures(t)
	tests := []struct {
		name        string
		cfg         natsconn.Config
		wantErr     error // nil: valid
		wantSetting natsconn.Setting
		wantWith    natsconn.Setting
		wantDetail  string // a substring of the error text
		wantAuth    natsconn.Setting
		wantOptions int
	}{
		{name: "nothing", cfg: natsconn.Config{}},
		{name: "creds", cfg: natsconn.Config{CredsFile: f.creds}, wantAuth: natsconn.CredsFile, wantOptions: 1},
		{name: "nkey seed", cfg: natsconn.Config{NKeySeedFile: f.seed}, wantAuth: natsconn.NKeySeedFile, wantOptions: 1},
		{name: "user and password", cfg: natsconn.Config{User: "worker", Password: "pw"}, wantAuth: natsconn.User, wantOptions: 1},
		{name: "token", cfg: natsconn.Config{Token: "tk"}, wantAuth: natsconn.Token, wantOptions: 1},
		{name: "CA only", cfg: natsconn.Config{TLSCAFile: f.ca}, wantOptions: 1},
		{name: "mutual TLS and creds", cfg: natsconn.Config{CredsFile: f.creds, TLSCAFile: f.ca, TLSCertFile: f.cert, TLSKeyFile: f.key},
			wantAuth: natsconn.CredsFile, wantOptions: 3},

		{name: "creds and token", cfg: natsconn.Config{CredsFile: f.creds, Token: "tk"},
			wantErr: natsconn.ErrConflict, wantSetting: natsconn.Token, wantWith: natsconn.CredsFile, wantDetail: "choose one"},
		{name: "nkey and user", cfg: natsconn.Config{NKeySeedFile: f.seed, User: "u", Password: "p"},
			wantErr: natsconn.ErrConflict, wantSetting: natsconn.User, wantWith: natsconn.NKeySeedFile},
		{name: "creds and password alone", cfg: natsconn.Config{CredsFile: f.creds, Password: "p"},
			wantErr: natsconn.ErrConflict, wantSetting: natsconn.Password, wantWith: natsconn.CredsFile},
		{name: "user and token", cfg: natsconn.Config{User: "u", Password: "p", Token: "t"},
			wantErr: natsconn.ErrConflict, wantSetting: natsconn.Token, wantWith: natsconn.User},
		{name: "conflict beats a missing file", cfg: natsconn.Config{CredsFile: f.missing, NKeySeedFile: f.missing},
			wantErr: natsconn.ErrConflict, wantSetting: natsconn.NKeySeedFile, wantWith: natsconn.CredsFile},

		{name: "user without password", cfg: natsconn.Config{User: "u"},
			wantErr: natsconn.ErrIncomplete, wantSetting: natsconn.User, wantWith: natsconn.Password},
		{name: "password without user", cfg: natsconn.Config{Password: "p"},
			wantErr: natsconn.ErrIncomplete, wantSetting: natsconn.Password, wantWith: natsconn.User},
		{name: "cert without key", cfg: natsconn.Config{TLSCertFile: f.cert},
			wantErr: natsconn.ErrIncomplete, wantSetting: natsconn.TLSCertFile, wantWith: natsconn.TLSKeyFile},
		{name: "key without cert", cfg: natsconn.Config{TLSKeyFile: f.key},
			wantErr: natsconn.ErrIncomplete, wantSetting: natsconn.TLSKeyFile, wantWith: natsconn.TLSCertFile},

		{name: "missing creds", cfg: natsconn.Config{CredsFile: f.missing},
			wantErr: os.ErrNotExist, wantSetting: natsconn.CredsFile, wantDetail: f.missing},
		{name: "missing seed", cfg: natsconn.Config{NKeySeedFile: f.missing},
			wantErr: os.ErrNotExist, wantSetting: natsconn.NKeySeedFile, wantDetail: f.missing},
		{name: "missing CA", cfg: natsconn.Config{TLSCAFile: f.missing},
			wantErr: os.ErrNotExist, wantSetting: natsconn.TLSCAFile, wantDetail: f.missing},
		{name: "missing cert", cfg: natsconn.Config{TLSCertFile: f.missing, TLSKeyFile: f.key},
			wantErr: os.ErrNotExist, wantSetting: natsconn.TLSCertFile, wantDetail: f.missing},
		{name: "missing key", cfg: natsconn.Config{TLSCertFile: f.cert, TLSKeyFile: f.missing},
			wantErr: os.ErrNotExist, wantSetting: natsconn.TLSKeyFile, wantDetail: f.missing},
		{name: "a directory as creds", cfg: natsconn.Config{CredsFile: f.dir},
			wantErr: natsconn.ErrFile, wantSetting: natsconn.CredsFile, wantDetail: f.dir},

		{name: "garbage creds", cfg: natsconn.Config{CredsFile: f.garbage},
			wantErr: natsconn.ErrFile, wantSetting: natsconn.CredsFile, wantDetail: "no valid user JWT"},
		{name: "a seed as creds", cfg: natsconn.Config{CredsFile: f.seed},
			wantErr: natsconn.ErrFile, wantSetting: natsconn.CredsFile, wantDetail: "no valid user JWT"},
		{name: "expired creds", cfg: natsconn.Config{CredsFile: f.expiredCreds},
			wantErr: natsconn.ErrFile, wantSetting: natsconn.CredsFile, wantDetail: "expired"},
		{name: "creds with another user's seed", cfg: natsconn.Config{CredsFile: f.mismatchedCreds},
			wantErr: natsconn.ErrFile, wantSetting: natsconn.CredsFile, wantDetail: "does not belong"},
		{name: "garbage seed", cfg: natsconn.Config{NKeySeedFile: f.garbage},
			wantErr: natsconn.ErrFile, wantSetting: natsconn.NKeySeedFile, wantDetail: "no valid user nkey seed"},
		{name: "account seed", cfg: natsconn.Config{NKeySeedFile: f.accountSeed},
			wantErr: natsconn.ErrFile, wantSetting: natsconn.NKeySeedFile, wantDetail: "no valid user nkey seed"},
		{name: "garbage CA", cfg: natsconn.Config{TLSCAFile: f.garbage},
			wantErr: natsconn.ErrFile, wantSetting: natsconn.TLSCAFile, wantDetail: "no PEM certificate"},
		{name: "cert with another key", cfg: natsconn.Config{TLSCertFile: f.cert, TLSKeyFile: f.otherKey},
			wantErr: natsconn.ErrFile, wantSetting: natsconn.TLSCertFile, wantWith: natsconn.TLSKeyFile, wantDetail: "not a matching"},
	}
	secrets := secretsOf(t, f)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.cfg.Auth(); tt.wantErr == nil && got != tt.wantAuth {
				t.Errorf("Auth(): got %v; want %v", got, tt.wantAuth)
			}
			err := tt.cfg.Validate()
			opts, oerr := tt.cfg.Options()
			if tt.wantErr == nil {
				if err != nil || oerr != nil {
					t.Fatalf("Validate: got %v, Options: got %v; want nil", err, oerr)
				}
				if len(opts) != tt.wantOptions {
					t.Errorf("Options: got %d options; want %d", len(opts), tt.wantOptions)
				}
				return
			}
			if oerr == nil || err == nil {
				t.Fatalf("Validate: got %v, Options: got %v; want errors wrapping %v", err, oerr, tt.wantErr)
			}
			if oerr.Error() != err.Error() {
				t.Errorf("Options error %q; want Validate's %q", oerr, err)
			}
			var ne *natsconn.Error
			if !errors.As(err, &ne) {
				t.Fatalf("Validate: got %T %v; want a *natsconn.Error", err, err)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Validate: got %v; want it to wrap %v", err, tt.wantErr)
			}
			if ne.Setting != tt.wantSetting || ne.With != tt.wantWith {
				t.Errorf("Validate: got setting %v with %v; want %v with %v", ne.Setting, ne.With, tt.wantSetting, tt.wantWith)
			}
			if !strings.Contains(err.Error(), tt.wantDetail) || !strings.Contains(err.Error(), tt.wantSetting.String()) {
				t.Errorf("Validate: got %q; want it to name the %v and say %q", err, tt.wantSetting, tt.wantDetail)
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("Validate: got %q; it leaks a secret", err)
				}
			}
		})
	}
}

// secretsOf returns the secret parts of the fixtures' files: seeds, JWTs and
// private keys, line by line.
func secretsOf(t *testing.T, f fixtures) []string {
	t.Helper()
	var out []string
	for _, p := range []string{f.creds, f.expiredCreds, f.seed, f.key, f.otherKey, f.accountSeed, f.mismatchedCreds} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); len(line) >= 20 && !strings.HasPrefix(line, "-----") {
				out = append(out, line)
			}
		}
	}
	if len(out) < 7 {
		t.Fatalf("got %d secret lines from the fixtures; want at least 7", len(out))
	}
	return out
}

// A Secret never prints: not through fmt, log/slog or encoding/json, not as
// a field of a struct.
func TestSecretDoesNotPrint(t *testing.T) {
	t.Parallel()
	const pw, tok = "hunter2-password", "s3cr3t-token"
	cfg := natsconn.Config{User: "worker", Password: pw, Token: tok}
	var textLog, jsonLog bytes.Buffer
	slog.New(slog.NewTextHandler(&textLog, nil)).Info("config", "cfg", cfg, "password", cfg.Password)
	slog.New(slog.NewJSONHandler(&jsonLog, nil)).Info("config", "cfg", cfg, "token", cfg.Token)
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%v":         fmt.Sprintf("%v", cfg),
		"%+v":        fmt.Sprintf("%+v", cfg),
		"%#v":        fmt.Sprintf("%#v", cfg),
		"%s":         fmt.Sprintf("%s", cfg.Password),
		"%q":         fmt.Sprintf("%q", cfg.Token),
		"%x":         fmt.Sprintf("%x", cfg.Token),
		"%v pointer": fmt.Sprintf("%v", &cfg),
		"slog text":  textLog.String(),
		"slog json":  jsonLog.String(),
		"json":       string(js),
	}
	for name, out := range outputs {
		for _, secret := range []string{pw, tok, fmt.Sprintf("%x", tok)} {
			if strings.Contains(out, secret) {
				t.Errorf("%s: got %q; it prints a secret", name, out)
			}
		}
		if !strings.Contains(out, "redacted") && !strings.Contains(out, fmt.Sprintf("%x", "[redacted]")) {
			t.Errorf("%s: got %q; want it to show [redacted]", name, out)
		}
	}
	if got := natsconn.Secret("").String(); got != "" {
		t.Errorf("empty Secret: got %q; want \"\"", got)
	}
	if got := string(cfg.Password); got != pw {
		t.Errorf("string(Password): got %q; want the value", got)
	}
}

func TestSettingString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s    natsconn.Setting
		want string
	}{
		{natsconn.CredsFile, "creds file"},
		{natsconn.TLSKeyFile, "TLS key file"},
		{natsconn.Setting(0), "Setting(0)"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("Setting(%d).String(): got %q; want %q", int(tt.s), got, tt.want)
		}
	}
}
