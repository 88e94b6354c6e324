package transport

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// pendingInput says whether bytes wait unread on conn: an idle keep-alive
// connection with a request arriving is not idle, whatever its state says
// (the server may not have read it yet).
func pendingInput(conn net.Conn) bool {
	// A TLS connection (the relay's own TLS): its socket's bytes.
	if tc, ok := conn.(interface{ NetConn() net.Conn }); ok {
		conn = tc.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	if err := raw.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		return false
	}
	return n > 0
}
