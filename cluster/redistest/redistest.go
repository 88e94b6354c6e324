// Package redistest runs a real redis-server (Debian's redis-server
// package) on a loopback port for tests and load runs: started, killed and
// restarted on the same port, so that a test can take Redis away under a
// running relay and give it back.
//
// A test that kills Redis owns its server (Start): it must not pull it
// from under another, and go test runs packages at once. A test that
// only uses Redis takes an empty database (Database) of the suite's
// server, the one .ci/run starts and names in RELAY_TEST_REDIS, or of a
// server of its own when none is named. It speaks just enough RESP to
// know the server is up and to empty a database, so it needs no client
// library.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// EnvSuite names the variable that gives a test run the suite's Redis:
// redis://127.0.0.1:port, started with enough databases (.ci/run: 64).
const EnvSuite = "RELAY_TEST_REDIS"

// suiteDatabases is how many databases Database hands out in one process
// before it starts again at 1 (each emptied as it is handed out; 0 is
// left alone).
const suiteDatabases = 63

var nextDatabase atomic.Int64

// Database returns the URL of an empty database for a test that never
// takes Redis away, and what to call when the test ends. With
// RELAY_TEST_REDIS set it is a database of that server, a different one
// for each call in this process, emptied first; else a server of the
// caller's own, started with its files under dir (a test's TempDir).
// Only one test process at a time should take databases of the suite's
// server (today the cluster package's).
func Database(dir string) (url string, done func(), err error) {
	base := strings.TrimRight(strings.TrimSpace(os.Getenv(EnvSuite)), "/")
	if base == "" {
		s, err := Start(dir)
		if err != nil {
			return "", nil, err
		}
		return s.URL(), s.Close, nil
	}
	addr, ok := strings.CutPrefix(base, "redis://")
	if !ok || strings.ContainsAny(addr, "/@?") {
		return "", nil, fmt.Errorf("redistest: %s=%q: want redis://host:port", EnvSuite, base)
	}
	db := int(nextDatabase.Add(1)-1)%suiteDatabases + 1
	if err := flushDB(addr, db); err != nil {
		return "", nil, fmt.Errorf("redistest: the suite's Redis (%s=%s), database %d: %w", EnvSuite, base, db, err)
	}
	return base + "/" + strconv.Itoa(db), func() {}, nil
}

// flushDB empties database db of the server at addr.
func flushDB(addr string, db int) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	n := strconv.Itoa(db)
	cmd := "*2\r\n$6\r\nSELECT\r\n$" + strconv.Itoa(len(n)) + "\r\n" + n + "\r\n*1\r\n$7\r\nFLUSHDB\r\n"
	if _, err := io.WriteString(conn, cmd); err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	for _, what := range []string{"SELECT", "FLUSHDB"} {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if line != "+OK\r\n" {
			return fmt.Errorf("%s answered %q", what, strings.TrimSpace(line))
		}
	}
	return nil
}

// ErrNoServer is returned by Start when redis-server is not on PATH.
var ErrNoServer = errors.New("redistest: redis-server is not on PATH (apt-get install redis-server)")

// Server is one redis-server process on 127.0.0.1, without persistence.
type Server struct {
	bin  string
	dir  string
	port int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start runs redis-server on a free loopback port with its files under dir
// (a test's TempDir) and returns once it answers PING.
func Start(dir string) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNoServer
	}
	var last error
	for range 3 { // a port taken between choosing and binding it: another
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s := &Server{bin: bin, dir: dir, port: port}
		if last = s.start(); last == nil {
			return s, nil
		}
	}
	return nil, last
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("redistest: free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// start launches the process on s.port and waits for PING.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	logFile := filepath.Join(s.dir, "redis-"+strconv.Itoa(s.port)+".log")
	cmd := exec.Command(s.bin,
		"--bind", "127.0.0.1", "--port", strconv.Itoa(s.port),
		"--save", "", "--appendonly", "no", "--dir", s.dir,
		"--logfile", logFile, "--daemonize", "no", "--protected-mode", "yes")
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redistest: start redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := ping(s.Addr()); err == nil {
			return nil
		}
		select {
		case <-done:
			log, _ := os.ReadFile(logFile)
			return fmt.Errorf("redistest: redis-server exited at start:\n%s", lastLines(string(log), 5))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return errors.New("redistest: redis-server did not answer PING within 10s")
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// ping sends one RESP PING and wants +PONG.
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("redistest: PING answered %q", line)
	}
	return nil
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// URL is the server's redis:// URL, database 0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Kill ends the server at once (SIGKILL), as a crash or a network cut
// would; its data is gone. Killing a stopped server does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts a killed server again on the same port, empty.
func (s *Server) Restart() error {
	s.Kill()
	var err error
	for range 50 { // the port may linger a moment after the kill
		if err = s.start(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// Close kills the server; tests call it from Cleanup.
func (s *Server) Close() { s.Kill() }
