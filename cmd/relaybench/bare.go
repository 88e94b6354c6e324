package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The bare server is the throughput scenario's baseline: a net/http server
// that reads each request's body and answers the relay's bytes with the
// relay's headers, doing nothing else. For the comparison to be fair it
// runs as the relay does, in a process of its own (relaybench started
// again with bareEnv naming its configuration), so that both servers
// share the machine with the load generator the same way.

// bareEnv names the bare server's configuration file; set, relaybench is
// the bare server.
const bareEnv = "RELAYBENCH_BARE_SERVER"

// bareConfig is what the bare server serves.
type bareConfig struct {
	Answer []byte `json:"answer"`
	// ContentType is the relay's Content-Type; Content-Length, Date and
	// X-Request-Id (kept when the caller sent one, else 32 random hex
	// digits) are written as the relay writes them.
	ContentType string `json:"content_type"`
}

// bareMain serves as the bare server on a free loopback port, prints
// "listening ADDR" on stdout and serves until SIGTERM. It returns the
// process's exit status.
func bareMain(configPath string, stdout, stderr io.Writer) int {
	raw, err := os.ReadFile(configPath)
	var cfg bareConfig
	if err == nil {
		err = json.Unmarshal(raw, &cfg)
	}
	if err != nil {
		fmt.Fprintln(stderr, "bare server: configuration:", err)
		return 1
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(stderr, "bare server:", err)
		return 1
	}
	srv := &http.Server{Handler: bareHandler(cfg), ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	fmt.Fprintln(stdout, "listening", ln.Addr().String())
	select {
	case <-ctx.Done():
	case err := <-done:
		fmt.Fprintln(stderr, "bare server:", err)
		return 1
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if srv.Shutdown(shutdown) != nil {
		srv.Close()
	}
	return 0
}

// bareHandler reads the body and writes the answer with the relay's
// headers.
func bareHandler(cfg bareConfig) http.Handler {
	contentType := []string{cfg.ContentType}
	length := []string{strconv.Itoa(len(cfg.Answer))}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h := w.Header()
		h["X-Request-Id"] = []string{requestIDOf(r)}
		h["Content-Type"] = contentType
		h["Content-Length"] = length
		_, _ = w.Write(cfg.Answer)
	})
}

// requestIDOf is the caller's X-Request-Id, or a new one of the relay's
// form.
func requestIDOf(r *http.Request) string {
	if id := r.Header.Get("X-Request-Id"); id != "" {
		return id
	}
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	return hex.EncodeToString(b[:])
}

// bareServer is the bare server's child process.
type bareServer struct {
	cmd    *exec.Cmd
	url    string
	done   chan struct{} // closed when the process has exited
	stdout chan struct{} // closed when its stdout is read to the end
}

// startBare starts relaybench again as the bare server, answering answer
// with contentType, and waits until it listens. dir holds its
// configuration.
func startBare(ctx context.Context, dir string, answer []byte, contentType string) (*bareServer, error) {
	raw, err := json.Marshal(bareConfig{Answer: answer, ContentType: contentType})
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "bare-server.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		return nil, fmt.Errorf("bare server: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bare server: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), bareEnv+"="+path)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bare server: %w", err)
	}
	s := &bareServer{cmd: cmd, done: make(chan struct{}), stdout: make(chan struct{})}
	lines := make(chan string, 1)
	go func() {
		defer close(s.stdout)
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, out)
	}()
	go func() {
		<-s.stdout // Wait closes the pipe: read it first
		_ = cmd.Wait()
		close(s.done)
	}()
	select {
	case line, ok := <-lines:
		addr, found := strings.CutPrefix(line, "listening ")
		if !ok || !found {
			s.close()
			return nil, errors.New("bare server: it did not start")
		}
		s.url = "http://" + addr
		return s, nil
	case <-ctx.Done():
		s.close()
		return nil, ctx.Err()
	case <-time.After(20 * time.Second):
		s.close()
		return nil, errors.New("bare server: not listening after 20 s")
	}
}

// pid is the bare server's process id.
func (s *bareServer) pid() int { return s.cmd.Process.Pid }

// close stops the bare server with SIGTERM, then SIGKILL after 5 s.
func (s *bareServer) close() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}
