package relay

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// recordingWriter records each Write it is given.
type recordingWriter struct {
	mu     sync.Mutex
	writes []string
	fail   error
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fail != nil {
		return 0, w.fail
	}
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func (w *recordingWriter) all() (string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.writes, ""), len(w.writes)
}

// TestLogWriter: lines go out whole, in order, together; after
// logFlushEvery at the latest; at once when the next would overflow the
// buffer; and every one of them on Close.
func TestLogWriter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &recordingWriter{}
		l := newLogWriter(out, logFlushEvery)
		for i := range 3 {
			fmt.Fprintf(l, "line %d\n", i)
		}
		if got, n := out.all(); n != 0 {
			t.Fatalf("written before the interval: %q", got)
		}
		time.Sleep(logFlushEvery)
		synctest.Wait()
		if got, n := out.all(); got != "line 0\nline 1\nline 2\n" || n != 1 {
			t.Errorf("after %s: %d writes of %q, want the three lines in one", logFlushEvery, n, got)
		}

		// Past the buffer: what is buffered goes first, a huge line alone.
		big := strings.Repeat("x", logBufferSize-10) + "\n"
		fmt.Fprint(l, "small\n")
		fmt.Fprint(l, big)
		fmt.Fprint(l, big)
		huge := strings.Repeat("y", 2*logBufferSize) + "\n"
		fmt.Fprint(l, huge)
		fmt.Fprint(l, "last\n")
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		got, n := out.all()
		if want := "line 0\nline 1\nline 2\nsmall\n" + big + big + huge + "last\n"; got != want {
			t.Errorf("lines out of order or lost: %d bytes, want %d", len(got), len(want))
		}
		if n != 5 {
			t.Errorf("%d writes, want 5 (the three, small+big, big, huge, last)", n)
		}
	})
}

// TestLogWriterConcurrent: lines written at once from many goroutines
// come out whole, none lost.
func TestLogWriterConcurrent(t *testing.T) {
	out := &recordingWriter{}
	l := newLogWriter(out, time.Millisecond)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				fmt.Fprintf(l, "{\"g\":%d,\"i\":%d,\"pad\":%q}\n", g, i, strings.Repeat("p", i%300))
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ := out.all()
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != 8*500 {
		t.Fatalf("%d lines, want %d", len(lines), 8*500)
	}
	for _, line := range lines {
		if !strings.HasPrefix(line, "{\"g\":") || !strings.HasSuffix(line, "\"}") {
			t.Fatalf("a line was cut or mixed: %q", line)
		}
	}
}

// TestLogWriterError: a failing standard error is reported, not retried.
func TestLogWriterError(t *testing.T) {
	out := &recordingWriter{fail: errors.New("closed")}
	l := newLogWriter(out, time.Hour)
	if _, err := l.Write([]byte("a\n")); err != nil {
		t.Fatalf("a buffered write failed: %v", err)
	}
	if err := l.Close(); err == nil {
		t.Error("Close hid the write error")
	}
	out.fail = nil
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, _ := out.all(); got != "" {
		t.Errorf("the failed lines were written again: %q", got)
	}
}
