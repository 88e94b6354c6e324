package ctim

import (
	"crypto/sha1"
	"encoding/hex"
)

// namespaceX500 is RFC 4122's name space for X.500 distinguished names,
// 6ba7b814-9dad-11d1-80b4-00c04fd430c8, which the original relay used for
// indicator ids.
var namespaceX500 = [16]byte{0x6b, 0xa7, 0xb8, 0x14, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}

// prefixedUUID5 is prefix followed by the name-based (SHA-1, version 5)
// UUID of name in the given name space, or of kind+":"+name when kind is
// set, in its 36-character text form, built in one allocation: the hot
// path makes several per observable.
func prefixedUUID5(prefix string, namespace [16]byte, kind, name string) string {
	var buf [256]byte
	in := append(buf[:0], namespace[:]...)
	if kind != "" {
		in = append(append(in, kind...), ':')
	}
	in = append(in, name...)
	sum := sha1.Sum(in)
	var u [16]byte
	copy(u[:], sum[:16])
	u[6] = u[6]&0x0f | 0x50
	u[8] = u[8]&0x3f | 0x80
	return format(prefix, u)
}

func format(prefix string, u [16]byte) string {
	var buf [64]byte
	return string(appendUUID(append(buf[:0], prefix...), u))
}

// appendUUID appends u in its 36-character text form.
func appendUUID(b []byte, u [16]byte) []byte {
	n := len(b)
	b = append(b, "00000000-0000-0000-0000-000000000000"...)
	hex.Encode(b[n:n+8], u[0:4])
	hex.Encode(b[n+9:n+13], u[4:6])
	hex.Encode(b[n+14:n+18], u[6:8])
	hex.Encode(b[n+19:n+23], u[8:10])
	hex.Encode(b[n+24:n+36], u[10:16])
	return b
}
