package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"strconv"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/nats-io/nuid"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/embedded"
	"github.com/idle-worker/idle-worker/member"
	"github.com/idle-worker/idle-worker/natsconn"
	"github.com/idle-worker/idle-worker/partition"
)

// envPrefix prefixes every environment variable: IDLE_NATS_URL and so on.
const envPrefix = "IDLE"

// config is the service's whole configuration, read from the environment.
// Keep the README's table in step with it.
type config struct {
	NATSURL             string        `envconfig:"NATS_URL" desc:"NATS server URL(s), comma-separated. Empty: start an embedded nats-server with JetStream."`
	EmbeddedListen      string        `envconfig:"EMBEDDED_LISTEN" default:"127.0.0.1:4222" desc:"host:port of the embedded server (port 0: random)."`
	EmbeddedStoreDir    string        `envconfig:"EMBEDDED_STORE_DIR" desc:"JetStream store of the embedded server. Empty: a temporary dir, removed at exit with every tracked backend."`
	EmbeddedAllowRemote bool          `envconfig:"EMBEDDED_ALLOW_REMOTE" default:"false" desc:"allow the embedded server (no authentication) to listen on a non-loopback address."`
	SubjectPrefix       string        `envconfig:"SUBJECT_PREFIX" default:"idle" desc:"prefix P of every subject: one or more literal tokens."`
	Partitions          int           `envconfig:"PARTITIONS" default:"64" desc:"partitions of the prefix's keys, 1 to 1024: the store writes each partition's records and events apart, and idle-worker mappings routes by them. Fixed for the life of a stream: a worker started with another count than the stream's refuses (exit 1)."`
	DefaultTimeout      time.Duration `envconfig:"DEFAULT_TIMEOUT" default:"30s" desc:"idle timeout of heartbeats that name none; 0 clamps to 1 ms."`
	MaxTimeout          time.Duration `envconfig:"MAX_TIMEOUT" default:"24h" desc:"largest idle_timeout_ms a heartbeat may ask for."`
	MaxBackends         int           `envconfig:"MAX_BACKENDS" default:"1000000" desc:"most tracked backends; beyond it new keys are refused (0: no limit)."`
	MaxBody             int           `envconfig:"MAX_BODY" default:"4096" desc:"largest heartbeat or state body, in bytes."`
	MaxPerInstance      int           `envconfig:"MAX_BACKENDS_PER_INSTANCE" default:"0" desc:"most tracked backends of one instance (keys sharing the first token); beyond it that instance's new keys are refused (0: no limit)."`
	ForgetAfter         time.Duration `envconfig:"FORGET_AFTER" default:"1h" desc:"forget a draining or quiesced backend with no activity or state report for this long, as if removed (0: never)."`
	QuiesceRate         int           `envconfig:"QUIESCE_RATE" default:"20000" desc:"most quiesce events per second; more due backends go out in deadline order as fast as it allows, never early (0: no limit)."`
	ReplyPrefixes       []string      `envconfig:"REPLY_PREFIXES" default:"_INBOX.,_INBOX_,_R_." desc:"comma-separated subject prefixes the worker answers requests on; it never answers on $-subjects or under its own prefix, whatever this says."`
	QueueLength         int           `envconfig:"QUEUE_LENGTH" default:"65536" desc:"messages buffered between NATS and the worker loop; overflow is counted as dropped."`
	ConnectTimeout      time.Duration `envconfig:"CONNECT_TIMEOUT" default:"5s" desc:"bound on the first connection to NATS; after it, the worker reconnects for ever."`
	PingInterval        time.Duration `envconfig:"NATS_PING_INTERVAL" default:"5s" desc:"client ping interval; a silent dead connection is noticed within 3 intervals. Keep it under a third of the shortest idle timeout."`
	Persist             string        `envconfig:"PERSIST" default:"auto" desc:"auto: use JetStream (one stream: events and tracked backends) when the server has it, else warn and run in memory; on: refuse to start without it; off: memory only."`
	RegistryBucket      string        `envconfig:"REGISTRY_BUCKET" default:"idle_registry" desc:"the KV bucket where idle-worker v1 kept its registry: migrated into the stream once, at the first start on a stream without a store, then no longer read (delete it with nats kv del)."`
	QuiesceStream       string        `envconfig:"QUIESCE_STREAM" default:"IDLE_QUIESCE" desc:"the JetStream stream of the prefix: quiesce events (stored as P.quiesce.>), the registry's snapshots and log, partition claims (P.store.>). A v1 stream of that name is updated in place, its events and consumers kept."`
	StoreReplicas       int           `envconfig:"STORE_REPLICAS" default:"1" desc:"replicas of the stream, 1 to 5 (3 on a 3-node cluster)."`
	StreamDuplicates    time.Duration `envconfig:"STREAM_DUPLICATES" default:"2m" desc:"the stream's de-duplication window on Nats-Msg-Id."`
	StreamMaxAge        time.Duration `envconfig:"STREAM_MAX_AGE" default:"24h" desc:"how long the stream keeps events."`
	QuiesceRetry        time.Duration `envconfig:"QUIESCE_RETRY" default:"30s" desc:"re-send a quiesce (same id) to a backend still draining after this long; 0 turns redelivery off."`
	QuiesceRetryMax     time.Duration `envconfig:"QUIESCE_RETRY_MAX" default:"10m" desc:"cap of the redelivery backoff, which doubles per attempt."`
	ShutdownTimeout     time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"5s" desc:"bound on the whole graceful shutdown: handing the partitions over to the other workers (half), draining subscriptions, flushing and closing the store, then draining the connection."`
	WorkerName          string        `envconfig:"WORKER_NAME" desc:"this worker's name among the workers of the prefix, 1 to 64 bytes of [A-Za-z0-9._-]; default: the host name and a random suffix. A second live worker with a name in use refuses to start (exit 1)."`
	Mapped              bool          `envconfig:"MAPPED" default:"false" desc:"the NATS servers route heartbeats and state reports with the partition mappings that idle-worker mappings prints (load them into every server first): each worker then receives only its own partitions' messages, so ingest grows with the workers; a takeover then restores backends with a full timeout of grace (no worker saw the others' heartbeats). Needs JetStream."`
	OwnerTimeout        time.Duration `envconfig:"OWNER_TIMEOUT" default:"1s" desc:"how long a worker may go unheard (its membership heartbeats, every quarter of this) before the others take its partitions over."`
	LogLevel            string        `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error."`
	LogFormat           string        `envconfig:"LOG_FORMAT" default:"text" desc:"text or json (log/slog)."`
	// HTTPAddr is where /metrics, /healthz and /readyz are served; set
	// but empty, nothing is. HTTPAddrSet says it was set explicitly: then
	// the address must be free, while the default is best effort.
	HTTPAddr    string `envconfig:"HTTP_ADDR" default:"127.0.0.1:9464" desc:"host:port of /metrics, /healthz and /readyz; set but empty: no HTTP. An address set here must be free (else exit 1); if the default is taken, the worker logs an error and runs without HTTP."`
	HTTPAddrSet bool   `ignored:"true"`

	// Authentication (at most one method) and TLS of the connection to
	// IDLE_NATS_URL. Secrets are of type natsconn.Secret, which never
	// prints.
	NATSCreds    string          `envconfig:"NATS_CREDS" desc:"a .creds file (user JWT and nkey seed) for a server in operator/JWT mode."`
	NATSNKeySeed string          `envconfig:"NATS_NKEY_SEED" desc:"a file holding a user nkey seed (SU…)."`
	NATSUser     string          `envconfig:"NATS_USER" desc:"user name; set with IDLE_NATS_PASSWORD or not at all."`
	NATSPassword natsconn.Secret `envconfig:"NATS_PASSWORD" desc:"password; set with IDLE_NATS_USER or not at all."`
	NATSToken    natsconn.Secret `envconfig:"NATS_TOKEN" desc:"an authentication token."`
	NATSTLSCA    string          `envconfig:"NATS_TLS_CA" desc:"PEM file of the CA(s) that verify the server; turns TLS on. Empty: the system's roots (with a tls:// URL)."`
	NATSTLSCert  string          `envconfig:"NATS_TLS_CERT" desc:"PEM client certificate, for mutual TLS; set with IDLE_NATS_TLS_KEY or not at all."`
	NATSTLSKey   string          `envconfig:"NATS_TLS_KEY" desc:"PEM client key, for mutual TLS; set with IDLE_NATS_TLS_CERT or not at all."`
}

// natsConn returns the authentication and TLS settings of the connection.
func (c config) natsConn() natsconn.Config {
	return natsconn.Config{
		CredsFile:    c.NATSCreds,
		NKeySeedFile: c.NATSNKeySeed,
		User:         c.NATSUser,
		Password:     c.NATSPassword,
		Token:        c.NATSToken,
		TLSCAFile:    c.NATSTLSCA,
		TLSCertFile:  c.NATSTLSCert,
		TLSKeyFile:   c.NATSTLSKey,
	}
}

// dial returns how to connect to NATS: to IDLE_NATS_URL with its
// authentication and TLS, or to the embedded server, which has neither.
func (c config) dial() natsconn.DialConfig {
	d := natsconn.DialConfig{
		Name:         "idle-worker",
		Timeout:      c.ConnectTimeout,
		PingInterval: c.PingInterval,
		SettingName:  func(s natsconn.Setting) string { return envPrefix + "_" + natsVars[s] },
		// Inboxes of its own, under _INBOX.> (which deploy/nats-server.conf
		// lets the worker read), so it can refuse replies into them.
		InboxPrefix: "_INBOX." + nuid.Next(),
	}
	if c.NATSURL != "" {
		d.Security = c.natsConn()
	}
	return d
}

// embedded returns the embedded nats-server's configuration.
func (c config) embedded(logger *slog.Logger) embedded.Config {
	return embedded.Config{
		Listen:      c.EmbeddedListen,
		AllowRemote: c.EmbeddedAllowRemote,
		StoreDir:    c.EmbeddedStoreDir,
		Logger:      logger,
	}
}

// natsVars names the variable of each natsconn setting, without the prefix.
var natsVars = map[natsconn.Setting]string{
	natsconn.CredsFile:    "NATS_CREDS",
	natsconn.NKeySeedFile: "NATS_NKEY_SEED",
	natsconn.User:         "NATS_USER",
	natsconn.Password:     "NATS_PASSWORD",
	natsconn.Token:        "NATS_TOKEN",
	natsconn.TLSCAFile:    "NATS_TLS_CA",
	natsconn.TLSCertFile:  "NATS_TLS_CERT",
	natsconn.TLSKeyFile:   "NATS_TLS_KEY",
}

// natsConnError turns a natsconn error into a configError naming the
// variables involved.
func natsConnError(err error) error {
	var ne *natsconn.Error
	if !errors.As(err, &ne) {
		return err
	}
	name := natsVars[ne.Setting]
	switch {
	case errors.Is(err, natsconn.ErrConflict):
		return bad(name, "cannot be combined with %s_%s: choose one authentication method", envPrefix, natsVars[ne.With])
	case errors.Is(err, natsconn.ErrIncomplete):
		return bad(name, "is set but %s_%s is not", envPrefix, natsVars[ne.With])
	default:
		return bad(name, "%s", ne.Detail)
	}
}

// configError is a bad configuration value; the process exits with status 2.
type configError struct {
	Var string // full variable name, such as IDLE_MAX_TIMEOUT
	Msg string
}

func (e *configError) Error() string { return e.Var + ": " + e.Msg }

func bad(name, format string, a ...any) error {
	return &configError{Var: envPrefix + "_" + name, Msg: fmt.Sprintf(format, a...)}
}

// loadConfig reads and validates the environment.
func loadConfig() (config, error) {
	var c config
	if err := processEnv(&c); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return c, &configError{Var: pe.KeyName, Msg: fmt.Sprintf("cannot parse %q as %s: %v", pe.Value, pe.TypeName, pe.Err)}
		}
		return c, err
	}
	_, c.HTTPAddrSet = os.LookupEnv(envPrefix + "_HTTP_ADDR")
	for name, why := range removedVars {
		if _, set := os.LookupEnv(envPrefix + "_" + name); set {
			return c, bad(name, "%s; unset it", why)
		}
	}
	return c, c.validate()
}

// removedVars are variables of earlier versions that no longer apply: set,
// they stop the worker rather than be ignored.
var removedVars = map[string]string{
	"STREAM_MAX_BYTES": "is no longer supported: a size limit would discard the stream's oldest messages first, partition claims and registry snapshots included; events are bounded by IDLE_STREAM_MAX_AGE",
}

// processEnv fills c from IDLE_* variables only. envconfig falls back to the
// bare tag name (NATS_URL for IDLE_NATS_URL) when the prefixed variable is
// unset; a stray NATS_TOKEN or LOG_LEVEL meant for another program must not
// configure the worker, so those are hidden from envconfig while it runs
// (main calls this once, before any goroutine starts).
func processEnv(c *config) error {
	t := reflect.TypeFor[config]()
	var hidden [][2]string
	for i := range t.NumField() {
		name := t.Field(i).Tag.Get("envconfig")
		if name == "" {
			continue
		}
		if _, ok := os.LookupEnv(envPrefix + "_" + name); ok {
			continue
		}
		if v, ok := os.LookupEnv(name); ok {
			hidden = append(hidden, [2]string{name, v})
			_ = os.Unsetenv(name)
		}
	}
	defer func() {
		for _, h := range hidden {
			_ = os.Setenv(h[0], h[1])
		}
	}()
	return envconfig.Process(envPrefix, c)
}

func (c config) validate() error {
	if c.NATSURL == "" {
		switch err := embedded.CheckListen(c.EmbeddedListen, c.EmbeddedAllowRemote); {
		case errors.Is(err, embedded.ErrNotLoopback):
			return bad("EMBEDDED_LISTEN", "%q is not a loopback address; the embedded server has no authentication, so set IDLE_EMBEDDED_ALLOW_REMOTE=true to expose it anyway", c.EmbeddedListen)
		case err != nil:
			return bad("EMBEDDED_LISTEN", "%v", err)
		}
	}
	if _, err := bus.NewSubjects(c.SubjectPrefix); err != nil || c.SubjectPrefix == "" {
		return bad("SUBJECT_PREFIX", "%q is not one or more literal subject tokens", c.SubjectPrefix)
	}
	if c.Partitions < 1 || c.Partitions > partition.MaxPartitions {
		return bad("PARTITIONS", "%d is not in 1..%d", c.Partitions, partition.MaxPartitions)
	}
	if err := bus.CheckReplyPrefixes(c.ReplyPrefixes, bus.MustSubjects(c.SubjectPrefix)); err != nil {
		return bad("REPLY_PREFIXES", "%v", err)
	}
	switch {
	case c.DefaultTimeout < 0:
		return bad("DEFAULT_TIMEOUT", "%v is negative", c.DefaultTimeout)
	case c.MaxTimeout <= 0:
		return bad("MAX_TIMEOUT", "%v must be positive", c.MaxTimeout)
	case c.DefaultTimeout > c.MaxTimeout:
		return bad("DEFAULT_TIMEOUT", "%v exceeds IDLE_MAX_TIMEOUT %v", c.DefaultTimeout, c.MaxTimeout)
	case c.MaxBackends < 0:
		return bad("MAX_BACKENDS", "%d is negative (0 means no limit)", c.MaxBackends)
	case c.MaxPerInstance < 0:
		return bad("MAX_BACKENDS_PER_INSTANCE", "%d is negative (0 means no limit)", c.MaxPerInstance)
	case c.ForgetAfter < 0:
		return bad("FORGET_AFTER", "%v is negative (0 means never)", c.ForgetAfter)
	case c.QuiesceRate < 0:
		return bad("QUIESCE_RATE", "%d is negative (0 means no limit)", c.QuiesceRate)
	case c.MaxBody < 2:
		return bad("MAX_BODY", "%d bytes is too small", c.MaxBody)
	case c.QueueLength < 1:
		return bad("QUEUE_LENGTH", "%d must be at least 1", c.QueueLength)
	case c.ConnectTimeout <= 0:
		return bad("CONNECT_TIMEOUT", "%v must be positive", c.ConnectTimeout)
	case c.Mapped && c.Persist == "off":
		return bad("MAPPED", "needs JetStream for partitions; IDLE_PERSIST is off")
	case c.WorkerName != "" && member.CheckName(c.WorkerName) != nil:
		return bad("WORKER_NAME", "%v", member.CheckName(c.WorkerName))
	case c.OwnerTimeout < 100*time.Millisecond:
		return bad("OWNER_TIMEOUT", "%v is below 100ms", c.OwnerTimeout)
	case c.ShutdownTimeout <= 0:
		return bad("SHUTDOWN_TIMEOUT", "%v must be positive", c.ShutdownTimeout)
	case c.PingInterval <= 0:
		return bad("NATS_PING_INTERVAL", "%v must be positive", c.PingInterval)
	case c.Persist != "auto" && c.Persist != "on" && c.Persist != "off":
		return bad("PERSIST", "%q is not auto, on or off", c.Persist)
	case !validName(c.RegistryBucket):
		return bad("REGISTRY_BUCKET", "%q is not a bucket name ([A-Za-z0-9_-]+)", c.RegistryBucket)
	case !validName(c.QuiesceStream):
		return bad("QUIESCE_STREAM", "%q is not a stream name ([A-Za-z0-9_-]+)", c.QuiesceStream)
	case c.StreamDuplicates <= 0:
		return bad("STREAM_DUPLICATES", "%v must be positive", c.StreamDuplicates)
	case c.StreamMaxAge <= 0:
		return bad("STREAM_MAX_AGE", "%v must be positive", c.StreamMaxAge)
	case c.StreamDuplicates > c.StreamMaxAge:
		return bad("STREAM_DUPLICATES", "%v exceeds IDLE_STREAM_MAX_AGE %v", c.StreamDuplicates, c.StreamMaxAge)
	case c.StoreReplicas < 1 || c.StoreReplicas > 5:
		return bad("STORE_REPLICAS", "%d is not in 1..5", c.StoreReplicas)
	case c.QuiesceRetry < 0:
		return bad("QUIESCE_RETRY", "%v is negative (0 disables redelivery)", c.QuiesceRetry)
	case c.QuiesceRetry > 0 && c.QuiesceRetryMax < c.QuiesceRetry:
		return bad("QUIESCE_RETRY_MAX", "%v is less than IDLE_QUIESCE_RETRY %v", c.QuiesceRetryMax, c.QuiesceRetry)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return bad("LOG_LEVEL", "%v", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return bad("LOG_FORMAT", "%q is not text or json", c.LogFormat)
	}
	if c.HTTPAddr != "" {
		_, port, err := net.SplitHostPort(c.HTTPAddr)
		if err != nil {
			return bad("HTTP_ADDR", "want host:port, or empty to serve no HTTP: %v", err)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			return bad("HTTP_ADDR", "port %q is not a number in 0..65535", port)
		}
	}
	return c.validateNATS()
}

// validateNATS checks the authentication and TLS settings. They apply to
// IDLE_NATS_URL only: the embedded server has neither.
func (c config) validateNATS() error {
	nc := c.natsConn()
	if c.NATSURL == "" {
		if s := firstSet(nc); s != 0 {
			return bad(natsVars[s], "applies only with IDLE_NATS_URL; the embedded server has no authentication or TLS")
		}
		return nil
	}
	if err := nc.Validate(); err != nil {
		return natsConnError(err)
	}
	if a := nc.Auth(); a != 0 && natsconn.URLHasUser(c.NATSURL) {
		return bad("NATS_URL", "carries credentials and %s_%s is set too: choose one authentication method", envPrefix, natsVars[a])
	}
	return nil
}

// firstSet returns the first natsconn setting that is set, or zero.
func firstSet(c natsconn.Config) natsconn.Setting {
	for _, f := range []struct {
		s   natsconn.Setting
		set bool
	}{
		{natsconn.CredsFile, c.CredsFile != ""},
		{natsconn.NKeySeedFile, c.NKeySeedFile != ""},
		{natsconn.User, c.User != ""},
		{natsconn.Password, c.Password != ""},
		{natsconn.Token, c.Token != ""},
		{natsconn.TLSCAFile, c.TLSCAFile != ""},
		{natsconn.TLSCertFile, c.TLSCertFile != ""},
		{natsconn.TLSKeyFile, c.TLSKeyFile != ""},
	} {
		if f.set {
			return f.s
		}
	}
	return 0
}

// validName reports whether s is a JetStream stream or bucket name.
func validName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%q is not debug, info, warn or error", s)
	}
	return l, nil
}

// newLogger builds the process's one slog handler from the configuration.
func newLogger(c config, w io.Writer) (*slog.Logger, error) {
	level, err := parseLevel(c.LogLevel)
	if err != nil {
		return nil, bad("LOG_LEVEL", "%v", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}
