package relay

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
	"github.com/pulsedive-relay/relay/transport/authtest"
)

// testCA issues certificates for the relay's own TLS in tests.
type testCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	pem    []byte
	serial atomic.Int64
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "relay test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	ca.serial.Store(1)
	return ca
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// leaf is a server certificate and its key, PEM-encoded.
type leaf struct {
	serial            *big.Int
	certPEM, keyPEM   []byte
	certFile, keyFile string // where write put them
}

// issue makes a certificate for 127.0.0.1 and localhost, named name.
func (ca *testCA) issue(t *testing.T, name string, notAfter time.Time) leaf {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial := big.NewInt(ca.serial.Add(1))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return leaf{
		serial:  serial,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
}

// write puts the leaf's files in dir, each replaced at once by a rename,
// as a Secret volume or certbot replaces them.
func (l *leaf) write(t *testing.T, dir string) {
	t.Helper()
	l.certFile, l.keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	replaceFile(t, l.certFile, l.certPEM)
	replaceFile(t, l.keyFile, l.keyPEM)
}

func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// validTLSFiles are a certificate and key files that go together, made
// once for the package.
var validTLSFiles = func() func(t *testing.T) (certFile, keyFile string) {
	var once sync.Once
	var l leaf
	return func(t *testing.T) (string, string) {
		t.Helper()
		once.Do(func() {
			dir, err := os.MkdirTemp(shared.dir, "tls-")
			if err != nil {
				t.Fatal(err)
			}
			l = newTestCA(t).issue(t, "relay", time.Now().Add(time.Hour))
			l.write(t, dir)
		})
		if l.certFile == "" {
			t.Fatal("no TLS files")
		}
		return l.certFile, l.keyFile
	}
}()

// servedSerial is the serial number of the certificate served at addr,
// verified against roots.
func servedSerial(addr string, roots *x509.CertPool) (*big.Int, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// TestTLSServing runs the relay binary with RELAY_TLS_CERT_FILE and
// RELAY_TLS_KEY_FILE: it serves HTTPS with a certificate of a test CA,
// derives https audiences, refuses TLS 1.1 and plain HTTP, keeps /metrics
// on METRICS_ADDR plain, and serves a replaced certificate without a
// restart, keeping the last good one while the files are broken.
func TestTLSServing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the relay binary")
	}
	ca := newTestCA(t)
	dir := t.TempDir()
	first := ca.issue(t, "first", time.Now().Add(time.Hour))
	first.write(t, dir)
	fake := startFake(t, pulsedivetest.Config{})
	p := startProcess(t, relayEnv(fake.URL(), map[string]string{
		"RELAY_TLS_CERT_FILE": first.certFile,
		"RELAY_TLS_KEY_FILE":  first.keyFile,
		"METRICS_ADDR":        "127.0.0.1:0",
	}))
	base := "https://" + p.addr

	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: ca.pool()}
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)

	t.Run("serves HTTPS", func(t *testing.T) {
		resp, err := c.Get(base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.TLS == nil {
			t.Fatalf("GET /healthz: status %d, TLS %v", resp.StatusCode, resp.TLS != nil)
		}
		if resp.TLS.Version < tls.VersionTLS12 || resp.ProtoMajor != 1 {
			t.Errorf("TLS version %x, HTTP/%d; want TLS 1.2 or newer, HTTP/1.1", resp.TLS.Version, resp.ProtoMajor)
		}
	})

	t.Run("audience derived as https", func(t *testing.T) {
		tok := p.token(t, "tls-key") // audience http://host:port: refused
		got := send(t, c, base, request{method: http.MethodPost, path: "/health", auth: "Bearer " + tok}).object(t)
		if _, refused := got["errors"]; !refused {
			t.Errorf("a token for http://%s was accepted over HTTPS: %v", p.addr, got)
		}
		tok = mintFor(t, base, "tls-key")
		got = send(t, c, base, request{method: http.MethodPost, path: "/health", auth: "Bearer " + tok}).object(t)
		if diff := cmp.Diff(map[string]any{"data": map[string]any{"status": "ok"}}, got); diff != "" {
			t.Errorf("/health with a token for %s (-want +got):\n%s", base, diff)
		}
	})

	t.Run("refuses TLS 1.1", func(t *testing.T) {
		conn, err := tls.Dial("tcp", p.addr, &tls.Config{RootCAs: ca.pool(), MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
		if err == nil {
			conn.Close()
			t.Fatal("a TLS 1.1 handshake succeeded")
		}
		if !strings.Contains(err.Error(), "protocol version") {
			t.Errorf("TLS 1.1 handshake failed with %v, want a protocol version alert", err)
		}
		conn, err = tls.Dial("tcp", p.addr, &tls.Config{RootCAs: ca.pool(), MaxVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatalf("a TLS 1.2 handshake failed: %v", err)
		}
		conn.Close()
	})

	t.Run("refuses plain HTTP", func(t *testing.T) {
		resp, err := newClient(t).Get("http://" + p.addr + "/healthz")
		if err != nil {
			return // refused outright: fine
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS listener: status %d, want 400", resp.StatusCode)
		}
	})

	t.Run("metrics stay plain HTTP", func(t *testing.T) {
		got := send(t, newClient(t), "http://"+p.metricsAddr, request{method: http.MethodGet, path: "/metrics"})
		if got.status != http.StatusOK || !bytes.Contains(got.body, []byte("pulsedive_relay_")) {
			t.Errorf("GET /metrics on METRICS_ADDR: status %d\n%.300s", got.status, got.body)
		}
	})

	// The relay looks at the files at most every certCheckEvery: poll the
	// served certificate, within a bound that only fails a broken test.
	waitServed := func(t *testing.T, want *big.Int) {
		t.Helper()
		eventually(t, 30*time.Second, fmt.Sprintf("certificate serial %v served", want), func() (bool, error) {
			got, err := servedSerial(p.addr, ca.pool())
			if err != nil {
				return false, err
			}
			return got.Cmp(want) == 0, fmt.Errorf("serial %v served", got)
		})
	}
	t.Run("reloads a replaced certificate", func(t *testing.T) {
		second := ca.issue(t, "second", time.Now().Add(time.Hour))
		second.write(t, dir)
		waitServed(t, second.serial)

		// A broken key file: the last good certificate stays, and the
		// cause is logged.
		replaceFile(t, second.keyFile, []byte("not a key\n"))
		// The files are looked at on a handshake: shake hands until the
		// failure is logged.
		eventually(t, 30*time.Second, "a reload failure logged", func() (bool, error) {
			if _, err := servedSerial(p.addr, ca.pool()); err != nil {
				return false, err
			}
			return strings.Contains(p.logs.String(), "TLS certificate reload failed"), nil
		})
		if got, err := servedSerial(p.addr, ca.pool()); err != nil || got.Cmp(second.serial) != 0 {
			t.Errorf("with a broken key file the relay served serial %v (%v), want the last good %v", got, err, second.serial)
		}
		var failure map[string]string
		for _, line := range p.logs.lines() {
			if f := logFields(line); f["msg"] == "TLS certificate reload failed: serving the previous certificate" {
				failure = f
			}
		}
		if failure["level"] != "WARN" || !strings.Contains(failure["error"], "RELAY_TLS_KEY_FILE") || !strings.Contains(failure["error"], "no PEM private key") {
			t.Errorf("reload failure line %v, want a warning naming RELAY_TLS_KEY_FILE and the cause", failure)
		}

		third := ca.issue(t, "third", time.Now().Add(time.Hour))
		third.write(t, dir)
		waitServed(t, third.serial)
	})
}

// mintFor mints a token of the suite's key for the audience aud.
func mintFor(t *testing.T, aud, apiKey string) string {
	t.Helper()
	tok, err := shared.key.Mint(authtest.Claims(shared.jwks.Host(), aud, apiKey, time.Now(), time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestCertReloader drives the reloader in a synctest bubble, whose clock
// moves only when the test sleeps: files are looked at only once
// certCheckEvery has passed, a replaced pair is served, and a broken one
// keeps the last good certificate, logged once per cause.
func TestCertReloader(t *testing.T) {
	synctest.Test(t, testCertReloader)
}

func testCertReloader(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	first := ca.issue(t, "first", time.Now().Add(time.Hour))
	first.write(t, dir)
	var logs bytes.Buffer
	r, err := newCertReloader(first.certFile, first.keyFile, 5*time.Second, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	served := func() *big.Int {
		t.Helper()
		cert, err := r.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return cert.Leaf.SerialNumber
	}
	logged := func() []string {
		var out []string
		for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			var e struct{ Level, Msg, Error string }
			if json.Unmarshal([]byte(line), &e) == nil {
				out = append(out, e.Level+" "+e.Msg+" "+e.Error)
			}
		}
		return out
	}
	step := time.Sleep // on the bubble's clock, which nothing else reads

	second := ca.issue(t, "second", time.Now().Add(time.Hour))
	second.write(t, dir)
	step(4 * time.Second)
	if got := served(); got.Cmp(first.serial) != 0 {
		t.Errorf("before certCheckEvery: serial %v, want the first %v", got, first.serial)
	}
	step(time.Second)
	if got := served(); got.Cmp(second.serial) != 0 {
		t.Errorf("after certCheckEvery: serial %v, want the second %v", got, second.serial)
	}

	// A key that does not go with the certificate, looked at three times.
	third := ca.issue(t, "third", time.Now().Add(time.Hour))
	replaceFile(t, second.keyFile, third.keyPEM)
	for range 3 {
		step(5 * time.Second)
		if got := served(); got.Cmp(second.serial) != 0 {
			t.Errorf("with a mismatched key: serial %v, want the last good %v", got, second.serial)
		}
	}
	// Another cause: the certificate file gone.
	if err := os.Remove(second.certFile); err != nil {
		t.Fatal(err)
	}
	step(5 * time.Second)
	served()
	// Both files right again.
	third.write(t, dir)
	step(5 * time.Second)
	if got := served(); got.Cmp(third.serial) != 0 {
		t.Errorf("after the repair: serial %v, want the third %v", got, third.serial)
	}

	want := []string{
		"INFO TLS certificate reloaded ",
		"WARN TLS certificate reload failed: serving the previous certificate RELAY_TLS_KEY_FILE " + second.keyFile +
			" does not go with the certificate of RELAY_TLS_CERT_FILE " + second.certFile + ": tls: private key does not match public key",
		"WARN TLS certificate reload failed: serving the previous certificate RELAY_TLS_CERT_FILE " + second.certFile + ": does not exist",
		"INFO TLS certificate reloaded ",
	}
	if diff := cmp.Diff(want, logged()); diff != "" {
		t.Errorf("log lines (-want +got):\n%s", diff)
	}
}

// TestCertReloaderStart: a pair that does not load stops the relay at
// start, naming the setting.
func TestCertReloaderStart(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	good := ca.issue(t, "good", time.Now().Add(time.Hour))
	good.write(t, dir)
	other := ca.issue(t, "other", time.Now().Add(time.Hour))
	otherKey := filepath.Join(dir, "other.key")
	replaceFile(t, otherKey, other.keyPEM)
	tests := []struct {
		name, cert, key, want string
	}{
		{"missing certificate", filepath.Join(dir, "absent.crt"), good.keyFile, "RELAY_TLS_CERT_FILE " + filepath.Join(dir, "absent.crt") + ": does not exist"},
		{"key as certificate", good.keyFile, good.keyFile, "RELAY_TLS_CERT_FILE " + good.keyFile + ": holds no PEM certificate"},
		{"certificate as key", good.certFile, good.certFile, "RELAY_TLS_KEY_FILE " + good.certFile + ": holds a certificate, not a private key"},
		{"mismatched key", good.certFile, otherKey, "RELAY_TLS_KEY_FILE " + otherKey + " does not go with the certificate of RELAY_TLS_CERT_FILE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newCertReloader(tt.cert, tt.key, time.Second, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestServerErrorLog: failed handshakes, which anyone can cause, are
// warned about at most once a minute with a count of those left out, and
// each counted; a client leaving before its handshake only at debug level,
// uncounted; anything else net/http reports is a warning each time.
func TestServerErrorLog(t *testing.T) {
	synctest.Test(t, testServerErrorLog)
}

// testServerErrorLog runs in a synctest bubble: time.Sleep moves its
// clock at once.
func testServerErrorLog(t *testing.T) {
	var logs bytes.Buffer
	failed := 0
	l := newServerErrorLog(slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})), func() { failed++ })
	l.Print("http: TLS handshake error from 192.0.2.1:1234: tls: client offered only unsupported versions: [302 301]")
	l.Print("http: TLS handshake error from 192.0.2.2:1234: remote error: tls: bad certificate")
	l.Print("http: TLS handshake error from 192.0.2.3:1234: EOF")
	time.Sleep(30 * time.Second)
	l.Print("http: TLS handshake error from 192.0.2.4:1234: remote error: tls: unknown certificate authority")
	time.Sleep(31 * time.Second)
	l.Print("http: TLS handshake error from 192.0.2.5:1234: remote error: tls: bad certificate")
	l.Print("http: Accept error: too many open files; retrying in 5ms")

	var got []string
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var e struct {
			Level, Msg, Remote, Error string
			Suppressed                *int
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		s := e.Level + " " + e.Msg
		if e.Remote != "" {
			s += fmt.Sprintf(" %s %s suppressed=%d", e.Remote, e.Error, *e.Suppressed)
		}
		got = append(got, s)
	}
	want := []string{
		"WARN TLS handshake failed 192.0.2.1:1234 tls: client offered only unsupported versions: [302 301] suppressed=0",
		"WARN TLS handshake failed 192.0.2.5:1234 remote error: tls: bad certificate suppressed=2",
		"WARN http: Accept error: too many open files; retrying in 5ms",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("log lines (-want +got):\n%s", diff)
	}
	if failed != 4 {
		t.Errorf("failed handshakes counted %d, want 4 (not the client closing first)", failed)
	}
}

// TestTLSConnectionBound: over TLS the connection bound still counts each
// connection in and out (its hooks see the TLS connection the listener
// gave), so connections made and closed one after another never fill it.
func TestTLSConnectionBound(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the relay binary")
	}
	ca := newTestCA(t)
	l := ca.issue(t, "bound", time.Now().Add(time.Hour))
	l.write(t, t.TempDir())
	fake := startFake(t, pulsedivetest.Config{})
	p := startProcess(t, relayEnv(fake.URL(), map[string]string{
		"RELAY_TLS_CERT_FILE":   l.certFile,
		"RELAY_TLS_KEY_FILE":    l.keyFile,
		"RELAY_MAX_CONNECTIONS": "2",
		"METRICS_ADDR":          "127.0.0.1:0",
	}))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool()}, DisableKeepAlives: true}
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	for i := range 6 {
		got := send(t, c, "https://"+p.addr, request{method: http.MethodGet, path: "/healthz"})
		if got.status != http.StatusOK {
			t.Fatalf("connection %d: status %d, want 200\n%s", i+1, got.status, got.body)
		}
	}
	mc := newClient(t)
	eventually(t, 30*time.Second, "no connection counted open", func() (bool, error) {
		open := scrapeMetrics(t, mc, "http://"+p.metricsAddr+"/metrics").value("pulsedive_relay_admission_in_use", "bound", "connections")
		return open == 0, fmt.Errorf("%v connections counted open", open)
	})

	// Two fresh connections fill the bound (neither may be replaced before
	// it has been quiet for 2 s): a third is answered 503 over TLS. On a
	// machine slow enough for them to age first, the third is served
	// instead; try again.
	eventually(t, 60*time.Second, "a connection over the bound answered 503 over TLS", func() (bool, error) {
		for range 2 {
			conn, err := tls.Dial("tcp", p.addr, &tls.Config{RootCAs: ca.pool()})
			if err != nil {
				return false, err
			}
			defer conn.Close()
		}
		resp, err := c.Get("https://" + p.addr + "/healthz")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable && resp.TLS != nil, fmt.Errorf("status %d", resp.StatusCode)
	})
}

// TestLogCertificate: the certificate served is logged with its names and
// validity; an expired one, which clients refuse, at warn level.
func TestLogCertificate(t *testing.T) {
	ca := newTestCA(t)
	for _, tt := range []struct {
		name     string
		notAfter time.Time
		want     string
	}{
		{"valid", time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC), `"level":"INFO","msg":"m","subject":"CN=valid","names":["localhost","127.0.0.1"],"not_after":"2031-01-02T03:04:05Z","expired":false}`},
		{"expired", time.Now().Add(-time.Minute).Truncate(time.Second), `"level":"WARN","msg":"m","subject":"CN=expired","names":["localhost","127.0.0.1"],"not_after":"` + time.Now().Add(-time.Minute).Truncate(time.Second).UTC().Format(time.RFC3339) + `","expired":true}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := ca.issue(t, tt.name, tt.notAfter)
			cert, err := tls.X509KeyPair(l.certPEM, l.keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			logCertificate(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{
				ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
					if a.Key == slog.TimeKey {
						return slog.Attr{}
					}
					return a
				},
			})), "m", &cert, time.Now())
			if got := strings.TrimSpace(buf.String()); got != "{"+tt.want {
				t.Errorf("got  %s\nwant {%s", got, tt.want)
			}
		})
	}
}
