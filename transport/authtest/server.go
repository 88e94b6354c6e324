package authtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"time"
)

// JWKSPath is where Threat Response, and JWKSServer, publish the keys.
const JWKSPath = "/.well-known/jwks"

// ServerConfig configures a JWKSServer.
type ServerConfig struct {
	// JWKS is the document served at JWKSPath; nil serves {"keys":[]}.
	JWKS []byte
	// Addr is the listen address; empty takes a free loopback port
	// ("127.0.0.1:0"). The certificate is valid for 127.0.0.1, ::1 and
	// example.com only, so clients must dial one of those.
	Addr string
	// OwnCertificate makes the server present a self-signed certificate
	// of its own instead of the one every httptest server shares, so that
	// a client trusting other JWKSServers (through SSL_CERT_FILE, say)
	// does not trust this one: a JWKS host whose private CA is missing.
	OwnCertificate bool
}

// JWKSServer serves a JWKS document over TLS on loopback, with a
// self-signed certificate that clients trust through CertPool, Client or an
// SSL_CERT_FILE written by WriteCAFile. It counts requests per path, and a
// test can swap the document, answer a status, delay, hold or redirect. It is
// safe for concurrent use. Every path other than JWKSPath answers 404 (and is
// counted).
type JWKSServer struct {
	srv *httptest.Server

	mu       sync.Mutex
	jwks     []byte
	status   int
	redirect string
	delay    time.Duration
	hold     *gate
	requests map[string]int
}

type gate struct {
	arrived     chan struct{}
	arrivedOnce sync.Once
	release     chan struct{}
	releaseOnce sync.Once
}

// NewJWKSServer starts a server. Close it when done.
func NewJWKSServer(cfg ServerConfig) (*JWKSServer, error) {
	s := &JWKSServer{jwks: cfg.JWKS, requests: map[string]int{}}
	if s.jwks == nil {
		s.jwks = []byte(`{"keys":[]}`)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	// Clients that do not trust the certificate are part of what tests
	// exercise; their handshake errors are not worth a log line.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if cfg.OwnCertificate {
		cert, err := selfSigned()
		if err != nil {
			srv.Close()
			return nil, fmt.Errorf("jwks server: %w", err)
		}
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	if cfg.Addr != "" {
		l, err := net.Listen("tcp", cfg.Addr)
		if err != nil {
			srv.Close()
			return nil, fmt.Errorf("jwks server: %w", err)
		}
		_ = srv.Listener.Close()
		srv.Listener = l
	}
	srv.StartTLS()
	s.srv = srv
	return s, nil
}

// Close releases any held requests, shuts the server down, waits for
// outstanding requests and closes the idle connections of Client.
func (s *JWKSServer) Close() {
	s.mu.Lock()
	g := s.hold
	s.hold = nil
	s.mu.Unlock()
	if g != nil {
		g.open()
	}
	s.srv.Close()
}

// Host is the server's "host:port", what a token names as jwks_host.
func (s *JWKSServer) Host() string { return s.srv.Listener.Addr().String() }

// URL is the address of the JWKS document.
func (s *JWKSServer) URL() string { return "https://" + s.Host() + JWKSPath }

// Certificate is the server's self-signed certificate, which is its own CA.
func (s *JWKSServer) Certificate() *x509.Certificate { return s.srv.Certificate() }

// CertPool is a pool trusting only this server.
func (s *JWKSServer) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(s.srv.Certificate())
	return p
}

// CAPEM is the server's certificate in PEM, for SSL_CERT_FILE.
func (s *JWKSServer) CAPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}

// WriteCAFile writes CAPEM to path (mode 0644). Go reads SSL_CERT_FILE
// once per process, when it first verifies a certificate against the system
// roots: set the variable before that, or in a child process.
func (s *JWKSServer) WriteCAFile(path string) error {
	if err := os.WriteFile(path, s.CAPEM(), 0o644); err != nil {
		return fmt.Errorf("write CA: %w", err)
	}
	return nil
}

// Client is an HTTP client trusting this server that does not follow
// redirects, as the relay's JWKS client. Close closes its idle connections.
func (s *JWKSServer) Client() *http.Client {
	c := s.srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

// SetJWKS replaces the document served at JWKSPath; any bytes will do
// (malformed or huge documents included).
func (s *JWKSServer) SetJWKS(doc []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jwks = doc
}

// SetStatus makes JWKSPath answer code with an empty JSON object; 0
// restores the document.
func (s *JWKSServer) SetStatus(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = code
}

// SetRedirect makes JWKSPath answer 302 Found to location; "" stops it.
func (s *JWKSServer) SetRedirect(location string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.redirect = location
}

// SetDelay makes every request wait d (or until the client gives up)
// before it is answered; 0 stops it. Prefer Hold in tests: it needs no
// timing.
func (s *JWKSServer) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// Hold makes every request that arrives from now on wait until release is
// called, the client gives up, or the server is closed. arrived is closed
// when the first held request arrives. release may be called more than once.
func (s *JWKSServer) Hold() (arrived <-chan struct{}, release func()) {
	g := &gate{arrived: make(chan struct{}), release: make(chan struct{})}
	s.mu.Lock()
	s.hold = g
	s.mu.Unlock()
	return g.arrived, func() {
		s.mu.Lock()
		if s.hold == g {
			s.hold = nil
		}
		s.mu.Unlock()
		g.open()
	}
}

func (g *gate) open() { g.releaseOnce.Do(func() { close(g.release) }) }

// Requests is how many requests arrived for path so far.
func (s *JWKSServer) Requests(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[path]
}

// TotalRequests is how many requests arrived for any path so far.
func (s *JWKSServer) TotalRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.requests {
		n += c
	}
	return n
}

func (s *JWKSServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests[r.URL.Path]++
	doc, status, redirect, delay, g := s.jwks, s.status, s.redirect, s.delay, s.hold
	s.mu.Unlock()

	if g != nil {
		g.arrivedOnce.Do(func() { close(g.arrived) })
		select {
		case <-g.release:
		case <-r.Context().Done():
			// The client gave up: drop the connection rather than answer
			// an empty 200 it might still read.
			panic(http.ErrAbortHandler)
		}
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			panic(http.ErrAbortHandler)
		}
	}

	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path != JWKSPath:
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{}`))
	case redirect != "":
		http.Redirect(w, r, redirect, http.StatusFound)
	case status != 0:
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{}`))
	default:
		_, _ = w.Write(doc)
	}
}

// selfSigned makes a P-256 certificate, its own CA, valid for an hour
// either side of now for 127.0.0.1, ::1 and example.com, as httptest's.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"authtest JWKS server"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"example.com"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
