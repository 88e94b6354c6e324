package relay

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// The relay terminates TLS itself when RELAY_TLS_CERT_FILE and
// RELAY_TLS_KEY_FILE are set: TLS 1.2 or newer, HTTP/1.1 (every bound of
// the listener is per connection), and the certificate reloaded when its
// files change, so a renewed certificate (cert-manager, certbot) is served
// without a restart.

// certCheckEvery is how often, at most, the certificate files are looked
// at for a change: on a handshake, never on a timer.
const certCheckEvery = 2 * time.Second

// certReloader serves the certificate of two files, read again when
// either file's identity, size or modification time changed. A reload
// that fails keeps the certificate served and is logged once per cause.
type certReloader struct {
	certFile, keyFile string
	every             time.Duration
	log               *slog.Logger

	mu       sync.Mutex
	cert     *tls.Certificate
	certStat os.FileInfo // of the files as they were when cert was read
	keyStat  os.FileInfo
	checked  time.Time // the last look at the files
	failed   string    // the reload failure logged last; "" since a success
}

// newCertReloader reads the certificate once; an error names the setting
// at fault.
func newCertReloader(certFile, keyFile string, every time.Duration, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, every: every, log: log}
	cert, certStat, keyStat, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cert, r.certStat, r.keyStat, r.checked = cert, certStat, keyStat, time.Now()
	return r, nil
}

// load reads both files, taking their stamps first: a file replaced while
// it is read is then read again at the next check.
func (r *certReloader) load() (*tls.Certificate, os.FileInfo, os.FileInfo, error) {
	certStat, err := os.Stat(r.certFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("RELAY_TLS_CERT_FILE %s: %w", r.certFile, fileError(err))
	}
	keyStat, err := os.Stat(r.keyFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("RELAY_TLS_KEY_FILE %s: %w", r.keyFile, fileError(err))
	}
	certPEM, err := readTLSCertificate(r.certFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("RELAY_TLS_CERT_FILE %s: %w", r.certFile, err)
	}
	keyPEM, err := readPEMFile(r.keyFile)
	if err == nil {
		err = checkPrivateKeyPEM(keyPEM)
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("RELAY_TLS_KEY_FILE %s: %w", r.keyFile, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("RELAY_TLS_KEY_FILE %s does not go with the certificate of RELAY_TLS_CERT_FILE %s: %w", r.keyFile, r.certFile, err)
	}
	return &cert, certStat, keyStat, nil
}

// GetCertificate is the tls.Config hook: the current certificate, after a
// look at the files when the last one is certCheckEvery old.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= r.every {
		r.checked = now
		r.reloadIfChanged()
	}
	return r.cert, nil
}

// reloadIfChanged reads the files again if they changed since the
// certificate served was read; r.mu held.
func (r *certReloader) reloadIfChanged() {
	certStat, err1 := os.Stat(r.certFile)
	keyStat, err2 := os.Stat(r.keyFile)
	if err1 == nil && err2 == nil && sameFile(certStat, r.certStat) && sameFile(keyStat, r.keyStat) {
		return
	}
	cert, certStat, keyStat, err := r.load()
	if err != nil {
		if msg := err.Error(); msg != r.failed {
			r.failed = msg
			r.log.Warn("TLS certificate reload failed: serving the previous certificate", "error", msg)
		}
		return
	}
	r.cert, r.certStat, r.keyStat, r.failed = cert, certStat, keyStat, ""
	logCertificate(r.log, "TLS certificate reloaded", cert, time.Now())
}

// sameFile says whether a file is as it was: the same file, size and
// modification time (a Kubernetes Secret volume swaps a symbolic link;
// os.Stat follows it).
func sameFile(now, then os.FileInfo) bool {
	return then != nil && os.SameFile(now, then) && now.Size() == then.Size() && now.ModTime().Equal(then.ModTime())
}

// logCertificate logs the certificate served, its names and validity: at
// info level, or at warn level once it has expired (clients refuse it).
func logCertificate(l *slog.Logger, msg string, cert *tls.Certificate, now time.Time) {
	leaf := cert.Leaf
	if leaf == nil {
		l.Info(msg)
		return
	}
	names := slices.Clone(leaf.DNSNames)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	level, expired := slog.LevelInfo, now.After(leaf.NotAfter)
	if expired {
		level = slog.LevelWarn
	}
	l.Log(context.Background(), level, msg, "subject", leaf.Subject.String(), "names", names,
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "expired", expired)
}

// serverTLSConfig is the TLS of the relay's listener.
func serverTLSConfig(r *certReloader) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.GetCertificate,
		// HTTP/1.1 only: the connection bound, the idle-connection
		// replacement and the timeouts are per connection, which HTTP/2's
		// streams would bypass.
		NextProtos: []string{"http/1.1"},
	}
}

// noHTTP2 is the http.Server's TLSNextProto that turns HTTP/2 off.
var noHTTP2 = map[string]func(*http.Server, *tls.Conn, http.Handler){}

// serverErrorLog is the http.Server's ErrorLog. Failed TLS handshakes,
// which anyone can cause (scanners, TCP health checks, clients that do
// not trust the certificate), are logged at debug level each and at warn
// level at most once per handshakeWarnEvery, with how many were left out;
// a client closing before its handshake is only ever debug. Each failed
// handshake but those is counted by failed (nil: not counted). Everything
// else net/http reports is a warning, as before.
type serverErrorLog struct {
	log    *slog.Logger
	failed func()

	mu         sync.Mutex
	lastWarn   time.Time
	suppressed int
}

// handshakeWarnEvery bounds the warn lines about failed handshakes.
const handshakeWarnEvery = time.Minute

func newServerErrorLog(l *slog.Logger, failed func()) *log.Logger {
	return log.New(&serverErrorLog{log: l, failed: failed}, "", 0)
}

func (s *serverErrorLog) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	rest, ok := strings.CutPrefix(line, "http: TLS handshake error from ")
	if !ok {
		s.log.Warn(line)
		return len(p), nil
	}
	remote, cause, _ := strings.Cut(rest, ": ")
	s.log.Debug("TLS handshake failed", "remote", remote, "error", cause)
	if cause == "EOF" || strings.HasSuffix(cause, "connection reset by peer") {
		return len(p), nil // a TCP probe, or a client gone
	}
	if s.failed != nil {
		s.failed()
	}
	s.mu.Lock()
	now := time.Now()
	warn := s.lastWarn.IsZero() || now.Sub(s.lastWarn) >= handshakeWarnEvery
	suppressed := s.suppressed
	if warn {
		s.lastWarn, s.suppressed = now, 0
	} else {
		s.suppressed++
	}
	s.mu.Unlock()
	if warn {
		s.log.LogAttrs(context.Background(), slog.LevelWarn, "TLS handshake failed",
			slog.String("remote", remote), slog.String("error", cause), slog.Int("suppressed", suppressed))
	}
	return len(p), nil
}
