package authtest_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/transport/authtest"
)

func newServer(t *testing.T, cfg authtest.ServerConfig) *authtest.JWKSServer {
	t.Helper()
	s, err := authtest.NewJWKSServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

type answer struct {
	Status   int
	Location string
	Body     string
}

func get(t *testing.T, c *http.Client, url string) answer {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{Status: resp.StatusCode, Location: resp.Header.Get("Location")}
	if resp.StatusCode != http.StatusFound {
		a.Body = string(b)
	}
	return a
}

func TestJWKSServer(t *testing.T) {
	tests := []struct {
		name  string
		setup func(s *authtest.JWKSServer)
		path  string
		want  answer
	}{
		{name: "the document", path: authtest.JWKSPath, want: answer{Status: 200, Body: `{"keys":["doc"]}`}},
		{name: "swapped document", setup: func(s *authtest.JWKSServer) { s.SetJWKS([]byte("<html>")) }, path: authtest.JWKSPath, want: answer{Status: 200, Body: "<html>"}},
		{name: "status", setup: func(s *authtest.JWKSServer) { s.SetStatus(503) }, path: authtest.JWKSPath, want: answer{Status: 503, Body: "{}"}},
		{name: "status reset", setup: func(s *authtest.JWKSServer) { s.SetStatus(503); s.SetStatus(0) }, path: authtest.JWKSPath, want: answer{Status: 200, Body: `{"keys":["doc"]}`}},
		{name: "redirect", setup: func(s *authtest.JWKSServer) { s.SetRedirect("https://evil.example/jwks") }, path: authtest.JWKSPath, want: answer{Status: 302, Location: "https://evil.example/jwks"}},
		{name: "other path", path: "/jwks", want: answer{Status: 404, Body: "{}"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, authtest.ServerConfig{JWKS: []byte(`{"keys":["doc"]}`)})
			if tt.setup != nil {
				tt.setup(s)
			}
			got := get(t, s.Client(), "https://"+s.Host()+tt.path)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
			if got := s.Requests(tt.path); got != 1 {
				t.Errorf("Requests(%s) = %d, want 1", tt.path, got)
			}
			if got := s.TotalRequests(); got != 1 {
				t.Errorf("TotalRequests() = %d, want 1", got)
			}
		})
	}
}

func TestJWKSServerDefaults(t *testing.T) {
	s := newServer(t, authtest.ServerConfig{Addr: "127.0.0.1:0"})
	if !strings.HasPrefix(s.Host(), "127.0.0.1:") {
		t.Errorf("Host() = %q, want loopback", s.Host())
	}
	if got, want := s.URL(), "https://"+s.Host()+"/.well-known/jwks"; got != want {
		t.Errorf("URL() = %q, want %q", got, want)
	}
	if diff := cmp.Diff(answer{Status: 200, Body: `{"keys":[]}`}, get(t, s.Client(), s.URL())); diff != "" {
		t.Errorf("answer (-want +got):\n%s", diff)
	}
	if _, err := authtest.NewJWKSServer(authtest.ServerConfig{Addr: "256.0.0.1:0"}); err == nil {
		t.Error("NewJWKSServer on a bad address succeeded")
	}
}

func TestJWKSServerTrust(t *testing.T) {
	s := newServer(t, authtest.ServerConfig{})

	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := s.WriteCAFile(path); err != nil {
		t.Fatal(err)
	}
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fromFile := x509.NewCertPool()
	if !fromFile.AppendCertsFromPEM(pemBytes) {
		t.Fatal("the CA file holds no certificate")
	}

	for _, tt := range []struct {
		name    string
		pool    *x509.CertPool
		wantErr bool
	}{
		{name: "CertPool", pool: s.CertPool()},
		{name: "CA file", pool: fromFile},
		{name: "empty pool", pool: x509.NewCertPool(), wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tt.pool}}
			t.Cleanup(tr.CloseIdleConnections)
			resp, err := (&http.Client{Transport: tr}).Get(s.URL())
			if err == nil {
				_ = resp.Body.Close()
			}
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Errorf("Get() error = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

// result is the outcome of a GET made on another goroutine.
type result struct {
	status int
	err    error
}

func getAsync(c *http.Client, url string) <-chan result {
	done := make(chan result, 1)
	go func() {
		resp, err := c.Get(url)
		if err != nil {
			done <- result{err: err}
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		done <- result{status: resp.StatusCode}
	}()
	return done
}

func TestJWKSServerHold(t *testing.T) {
	s := newServer(t, authtest.ServerConfig{})
	arrived, release := s.Hold()
	done := getAsync(s.Client(), s.URL())
	<-arrived
	select {
	case r := <-done:
		t.Fatalf("answered while held: %+v", r)
	default:
	}
	release()
	release() // a second release is harmless
	if got := <-done; got.err != nil || got.status != http.StatusOK {
		t.Errorf("after release: %+v, want status 200", got)
	}
	// Requests after the release are not held.
	if got := get(t, s.Client(), s.URL()); got.Status != http.StatusOK {
		t.Errorf("status %d, want 200", got.Status)
	}
}

// TestJWKSServerCloseReleases: Close does not wait forever on a held
// request.
func TestJWKSServerCloseReleases(t *testing.T) {
	s, err := authtest.NewJWKSServer(authtest.ServerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	arrived, _ := s.Hold()
	done := getAsync(s.Client(), s.URL())
	<-arrived
	s.Close()
	if got := <-done; got.err != nil || got.status != http.StatusOK {
		t.Errorf("held request: %+v, want status 200", got)
	}
}

func TestJWKSServerDelay(t *testing.T) {
	s := newServer(t, authtest.ServerConfig{})
	s.SetDelay(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := s.Client()
	_, err = c.Do(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Do() error = %v, want the deadline", err)
	}
	s.SetDelay(0)
	if got := get(t, c, s.URL()); got.Status != http.StatusOK {
		t.Errorf("status %d without delay, want 200", got.Status)
	}
}

// TestOwnCertificate: a server with a certificate of its own is trusted
// through its own pool and not through another server's, while two
// ordinary servers trust each other's pool (httptest shares one
// certificate).
func TestOwnCertificate(t *testing.T) {
	plain := newServer(t, authtest.ServerConfig{})
	other := newServer(t, authtest.ServerConfig{})
	own := newServer(t, authtest.ServerConfig{OwnCertificate: true})
	tests := []struct {
		name    string
		pool    *authtest.JWKSServer
		target  *authtest.JWKSServer
		trusted bool
	}{
		{name: "ordinary servers share a certificate", pool: plain, target: other, trusted: true},
		{name: "own certificate, own pool", pool: own, target: own, trusted: true},
		{name: "own certificate, another server's pool", pool: plain, target: own},
		{name: "ordinary server, the own certificate's pool", pool: own, target: plain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tt.pool.CertPool()}}
			t.Cleanup(tr.CloseIdleConnections)
			resp, err := (&http.Client{Transport: tr}).Get(tt.target.URL())
			if err == nil {
				_ = resp.Body.Close()
			}
			var unknown x509.UnknownAuthorityError
			if got := err == nil; got != tt.trusted {
				t.Fatalf("trusted = %v (%v), want %v", got, err, tt.trusted)
			}
			if !tt.trusted && !errors.As(err, &unknown) {
				t.Errorf("error %v, want x509.UnknownAuthorityError", err)
			}
		})
	}
}
