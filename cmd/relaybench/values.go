package main

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"net/netip"
	"slices"
	"sync/atomic"
)

// observable is one item of an observe, deliberate or refer body.
type observable struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// valueSource makes observable values no relay has seen: each call gives a
// new one, and the run's nonce keeps them apart from earlier runs'. The fake
// Pulsedive answers them with synthetic documents.
type valueSource struct {
	nonce  string
	ipBase uint32
	n      atomic.Uint64
}

func newValueSource(nonce string) *valueSource {
	h := fnv.New32a()
	_, _ = h.Write([]byte(nonce))
	// Public-looking IPv4 space from 11.0.0.0 up, away from 0/8, 10/8 and
	// 127/8, at an offset that differs between runs.
	return &valueSource{nonce: nonce, ipBase: 11<<24 + h.Sum32()%(80<<24)}
}

// next returns a new observable; types take turns: ip, domain, url, ipv6.
func (s *valueSource) next() observable {
	i := s.n.Add(1)
	switch i % 4 {
	case 0:
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], s.ipBase+uint32(i))
		return observable{"ip", netip.AddrFrom4(a).String()}
	case 1:
		return observable{"domain", fmt.Sprintf("d%d.%s.relaybench.example", i, s.nonce)}
	case 2:
		return observable{"url", fmt.Sprintf("http://u%d.%s.relaybench.example/p/%d", i, s.nonce, i)}
	default:
		var a [16]byte
		copy(a[:], []byte{0x20, 0x01, 0x0d, 0xb8})
		binary.BigEndian.PutUint32(a[4:8], s.ipBase)
		binary.BigEndian.PutUint64(a[8:], i)
		return observable{"ipv6", netip.AddrFrom16(a).String()}
	}
}

// batch returns n new observables.
func (s *valueSource) batch(n int) []observable {
	out := make([]observable, n)
	for i := range out {
		out[i] = s.next()
	}
	return out
}

// named returns a new domain observable whose value starts with label, for
// values the fake is told to treat specially (unknown, faulty).
func (s *valueSource) named(label string) observable {
	return observable{"domain", fmt.Sprintf("%s-%d.%s.relaybench.example", label, s.n.Add(1), s.nonce)}
}

// unknown returns a new domain observable meant to be unknown to Pulsedive;
// stack.unknown also tells the fake so.
func (s *valueSource) unknown() observable { return s.named("unknown") }

// body encodes observables as a request body.
func body(obs []observable) []byte {
	b, err := json.Marshal(obs)
	if err != nil {
		panic(fmt.Sprintf("relaybench: encoding observables: %v", err)) // strings only: cannot fail
	}
	return b
}

func sortedKeys[K cmp.Ordered, V any](m map[K]V) []K {
	return slices.Sorted(maps.Keys(m))
}
