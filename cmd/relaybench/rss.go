package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// rssSampler reads a process's resident set size from /proc/<pid>/status
// every period until finish.
type rssSampler struct {
	pid  int
	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu      sync.Mutex
	peak    int64
	last    int64
	hwm     int64
	lastErr error
}

func startRSS(pid int, period time.Duration) *rssSampler {
	s := &rssSampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	go s.loop(period)
	return s
}

func (s *rssSampler) loop(period time.Duration) {
	defer close(s.done)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		s.sample()
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

func (s *rssSampler) sample() {
	rss, hwm, err := readStatus(s.pid)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.lastErr = err
		return
	}
	s.peak = max(s.peak, rss)
	s.last = rss
	s.hwm = max(s.hwm, hwm)
}

// finish takes a last sample, stops sampling and returns the peak and last
// VmRSS and the VmHWM, in bytes; err is the last failed read, if any (the
// process may have exited). Later calls return the same figures.
func (s *rssSampler) finish() (peak, last, hwm int64, err error) {
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		s.sample()
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.peak == 0 {
		err = s.lastErr
	}
	return s.peak, s.last, s.hwm, err
}

// readStatus returns VmRSS and VmHWM of pid, in bytes.
func readStatus(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("read process status: %w", err)
	}
	return parseStatus(b)
}

// parseStatus reads VmRSS and VmHWM ("VmRSS:    12345 kB") from the text
// of /proc/<pid>/status.
func parseStatus(b []byte) (rss, hwm int64, err error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	var found int
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, 0, fmt.Errorf("process status: %s %q is not in kB", name, v)
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("process status: %s: %w", name, err)
		}
		if name == "VmRSS" {
			rss = n << 10
		} else {
			hwm = n << 10
		}
		found++
	}
	if found < 2 {
		return 0, 0, fmt.Errorf("process status: VmRSS or VmHWM missing")
	}
	return rss, hwm, nil
}

// cpuTime is the CPU time a process has used, user and system, from
// /proc/<pid>/stat; 0 when it cannot be read (not Linux, process gone).
// It resolves to the kernel's clock tick, 10 ms at the usual 100 Hz.
func cpuTime(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from the last ')'; utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(string(raw[i+1:]))
	if len(fields) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// clockTicks is the kernel's USER_HZ, fixed at 100 on every Linux
// architecture Go runs on.
const clockTicks = 100
