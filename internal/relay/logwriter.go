package relay

import (
	"io"
	"sync"
	"time"
)

// logWriter buffers the relay's log on its way to standard error. The
// access log writes a line per request, and a write system call per line
// was about 3 % of the CPU of a cached request; buffered, the lines of a
// busy relay go out a few dozen at a time. Each Write (slog writes a
// record in one) is kept whole and in order. The buffer is written out
// when the next line would overflow it, when it has held lines for
// logFlushEvery, and on Close, which serve calls after the last request
// has been answered: a drain loses no line. A crash loses what the last
// logFlushEvery wrote.
type logWriter struct {
	out  io.Writer
	stop chan struct{}
	done chan struct{}

	mu  sync.Mutex
	buf []byte
}

const (
	// logBufferSize holds a hundred or more access lines.
	logBufferSize = 32 << 10
	// logFlushEvery bounds how late a line appears.
	logFlushEvery = 100 * time.Millisecond
)

// newLogWriter returns a logWriter to out, and starts its flusher, which
// Close stops.
func newLogWriter(out io.Writer, every time.Duration) *logWriter {
	l := &logWriter{out: out, stop: make(chan struct{}), done: make(chan struct{}), buf: make([]byte, 0, logBufferSize)}
	go l.flusher(every)
	return l
}

func (l *logWriter) flusher(every time.Duration) {
	defer close(l.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.Flush()
		}
	}
}

// Write buffers p, writing the buffer out first when p would overflow it;
// a p larger than the buffer is written at once, after what is buffered.
// The error is the underlying writer's, if it refused what was buffered.
func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf)+len(p) > cap(l.buf) {
		if err := l.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > cap(l.buf) {
			return l.out.Write(p)
		}
	}
	l.buf = append(l.buf, p...)
	return len(p), nil
}

// Flush writes out what is buffered.
func (l *logWriter) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.flushLocked()
}

func (l *logWriter) flushLocked() error {
	if len(l.buf) == 0 {
		return nil
	}
	_, err := l.out.Write(l.buf)
	l.buf = l.buf[:0] // a failed write is not retried: standard error is gone
	return err
}

// Close stops the flusher and writes out what is buffered. Writes after
// Close are still buffered, and written by the next Flush or overflow.
func (l *logWriter) Close() error {
	close(l.stop)
	<-l.done
	return l.Flush()
}
