package pulsedivetest

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
)

// Server is a Fake listening on a loopback port. The Fake's methods are
// promoted, so a test sets faults and reads counters on the Server.
type Server struct {
	*Fake
	// HTTP is the underlying server; its Client trusts its certificate.
	HTTP *httptest.Server
}

// NewServer starts a plain-HTTP server on 127.0.0.1 for a new Fake.
func NewServer(cfg Config) (*Server, error) { return start(cfg, false) }

// NewTLSServer starts an HTTPS server on 127.0.0.1 for a new Fake, with a
// certificate that only Client trusts: a client with the system roots fails
// verification ("certificate signed by unknown authority").
func NewTLSServer(cfg Config) (*Server, error) { return start(cfg, true) }

func start(cfg Config, tls bool) (*Server, error) {
	fk, err := New(cfg)
	if err != nil {
		return nil, err
	}
	srv := httptest.NewUnstartedServer(fk)
	srv.Config.ErrorLog = cfg.ErrorLog
	if srv.Config.ErrorLog == nil {
		srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	}
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	return &Server{Fake: fk, HTTP: srv}, nil
}

// URL is the API base to give the Pulsedive client, such as
// "http://127.0.0.1:41234/api/", with the trailing slash.
func (s *Server) URL() string {
	return s.HTTP.URL + strings.TrimSuffix(s.infoPath, "info.php")
}

// Client returns an HTTP client configured for the server (trusting its
// certificate under TLS). Its connections close with the server.
func (s *Server) Client() *http.Client { return s.HTTP.Client() }

// Close releases every waiting call (see Fake.Close), closes every client
// connection, and shuts the server down, blocking until all calls have
// returned. It is idempotent.
func (s *Server) Close() {
	s.Fake.Close()
	s.HTTP.CloseClientConnections()
	s.HTTP.Close()
}
