// Package natsconntest makes throwaway credentials for tests of NATS
// authentication and TLS: a certificate authority with a server and a client
// certificate for 127.0.0.1, user nkeys, and an operator with an account
// whose users get .creds files. Everything is written to files in a
// directory of the test's choosing, with short validity, and configures an
// embedded nats-server through its Options.
package natsconntest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// Validity is how long the certificates and JWTs made here stay valid.
const Validity = time.Hour

// PKI is a certificate authority with one server and one client
// certificate, as PEM files.
type PKI struct {
	// CAFile verifies both certificates.
	CAFile string
	// ServerCertFile and ServerKeyFile are for a server on 127.0.0.1
	// (IP SAN) and localhost.
	ServerCertFile, ServerKeyFile string
	// ClientCertFile and ClientKeyFile are a client certificate for mutual
	// TLS.
	ClientCertFile, ClientKeyFile string
}

// NewPKI writes a fresh CA, server and client certificate to dir. name
// prefixes the files and the CA's common name, so two PKIs can share dir.
func NewPKI(t testing.TB, dir, name string) *PKI {
	t.Helper()
	now := time.Now()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name + " test CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatalf("natsconntest: CA certificate: %v", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatalf("natsconntest: CA certificate: %v", err)
	}
	p := &PKI{CAFile: writePEM(t, dir, name+"-ca.pem", "CERTIFICATE", caDER, 0o644)}
	leaf := func(cn string, usage x509.ExtKeyUsage, server bool) (string, string) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: serial(t),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Minute),
			NotAfter:     now.Add(Validity),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		if server {
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
			tmpl.DNSNames = []string{"localhost"}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatalf("natsconntest: %s certificate: %v", cn, err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatalf("natsconntest: %s key: %v", cn, err)
		}
		return writePEM(t, dir, name+"-"+cn+"-cert.pem", "CERTIFICATE", der, 0o644),
			writePEM(t, dir, name+"-"+cn+"-key.pem", "PRIVATE KEY", keyDER, 0o600)
	}
	p.ServerCertFile, p.ServerKeyFile = leaf("server", x509.ExtKeyUsageServerAuth, true)
	p.ClientCertFile, p.ClientKeyFile = leaf("client", x509.ExtKeyUsageClientAuth, false)
	return p
}

// ServerTLS turns TLS on in opts with the PKI's server certificate. With
// verify, the server also requires a client certificate signed by the CA
// (mutual TLS).
func (p *PKI) ServerTLS(t testing.TB, opts *server.Options, verify bool) {
	t.Helper()
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: p.ServerCertFile,
		KeyFile:  p.ServerKeyFile,
		CaFile:   p.CAFile,
		Verify:   verify,
	})
	if err != nil {
		t.Fatalf("natsconntest: server TLS config: %v", err)
	}
	opts.TLSConfig = tc
	opts.TLS = true
	opts.TLSVerify = verify
	opts.TLSTimeout = 2
}

// UserSeed writes a fresh user nkey seed to dir/name and returns the file
// and the user's public key, for server.Options.Nkeys.
func UserSeed(t testing.TB, dir, name string) (file, public string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatalf("natsconntest: user nkey: %v", err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatalf("natsconntest: user seed: %v", err)
	}
	public, err = kp.PublicKey()
	if err != nil {
		t.Fatalf("natsconntest: user public key: %v", err)
	}
	return writeFile(t, dir, name, append(seed, '\n'), 0o600), public
}

// Operator is a NATS operator with one account, for a server in JWT mode.
type Operator struct {
	operator, account nkeys.KeyPair
	accountPublic     string
	accountJWT        string
}

// NewOperator makes an operator and an account with JetStream enabled.
func NewOperator(t testing.TB) *Operator {
	t.Helper()
	op, err := nkeys.CreateOperator()
	if err != nil {
		t.Fatalf("natsconntest: operator nkey: %v", err)
	}
	acc, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatalf("natsconntest: account nkey: %v", err)
	}
	accPub, err := acc.PublicKey()
	if err != nil {
		t.Fatalf("natsconntest: account public key: %v", err)
	}
	ac := jwt.NewAccountClaims(accPub)
	ac.Name = "IDLE"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	accJWT, err := ac.Encode(op)
	if err != nil {
		t.Fatalf("natsconntest: account JWT: %v", err)
	}
	return &Operator{operator: op, account: acc, accountPublic: accPub, accountJWT: accJWT}
}

// Configure puts opts in JWT mode: it trusts the operator and resolves its
// account from memory.
func (o *Operator) Configure(t testing.TB, opts *server.Options) {
	t.Helper()
	pub, err := o.operator.PublicKey()
	if err != nil {
		t.Fatalf("natsconntest: operator public key: %v", err)
	}
	r := &server.MemAccResolver{}
	if err := r.Store(o.accountPublic, o.accountJWT); err != nil {
		t.Fatalf("natsconntest: store account JWT: %v", err)
	}
	opts.TrustedKeys = []string{pub}
	opts.AccountResolver = r
}

// UserCreds writes the .creds file of a new user of the account, signed by
// the account, valid for validity (0: Validity), to dir/name.
func (o *Operator) UserCreds(t testing.TB, dir, name string, validity time.Duration) string {
	t.Helper()
	if validity == 0 {
		validity = Validity
	}
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatalf("natsconntest: user nkey: %v", err)
	}
	pub, err := user.PublicKey()
	if err != nil {
		t.Fatalf("natsconntest: user public key: %v", err)
	}
	seed, err := user.Seed()
	if err != nil {
		t.Fatalf("natsconntest: user seed: %v", err)
	}
	uc := jwt.NewUserClaims(pub)
	uc.Name = name
	uc.Expires = time.Now().Add(validity).Unix()
	userJWT, err := uc.Encode(o.account)
	if err != nil {
		t.Fatalf("natsconntest: user JWT: %v", err)
	}
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		t.Fatalf("natsconntest: creds: %v", err)
	}
	return writeFile(t, dir, name, creds, 0o600)
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("natsconntest: key: %v", err)
	}
	return k
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatalf("natsconntest: serial: %v", err)
	}
	return n
}

func writePEM(t testing.TB, dir, name, typ string, der []byte, mode os.FileMode) string {
	t.Helper()
	return writeFile(t, dir, name, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

func writeFile(t testing.TB, dir, name string, data []byte, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatalf("natsconntest: %v", err)
	}
	return path
}
