package ctim

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"
)

// bigBundle is the answer of n observables with every kind of entity.
func bigBundle(t testing.TB, n int) Bundle {
	t.Helper()
	m := Mapper{Now: func() time.Time { return fixedNow }}
	var b Bundle
	for i := range n {
		obs := Observable{Type: "domain", Value: fmt.Sprintf("d%d.example", i)}
		rels, err := m.Relations(obs, benchLinks, 100)
		if err != nil {
			t.Fatal(err)
		}
		e, err := m.Observe(obs, benchReport(), rels, 100)
		if err != nil {
			t.Fatal(err)
		}
		b.Add(e)
	}
	return b
}

// TestStreamJSONChunks: streamed in chunks of any size, the answer is
// the bytes of the whole, flushed between documents only, each flush
// holding at least a chunk.
func TestStreamJSONChunks(t *testing.T) {
	b := bigBundle(t, 20)
	want := b.appendJSON([]byte("prefix"))
	for _, chunk := range []int{0, 1, 100, 4 << 10, 64 << 10, 1 << 30} {
		t.Run(fmt.Sprint(chunk), func(t *testing.T) {
			var got bytes.Buffer
			flushes := 0
			rest, err := b.StreamJSON([]byte("prefix"), chunk, func(p []byte) error {
				flushes++
				if len(p) < chunk {
					t.Errorf("flush %d holds %d bytes, less than a chunk of %d", flushes, len(p), chunk)
				}
				if last := p[len(p)-1]; last != '}' {
					t.Errorf("flush %d ends with %q, not between documents", flushes, last)
				}
				got.Write(p)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			got.Write(rest)
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("streamed bytes differ from the whole:\n got %s\nwant %s", got.Bytes(), want)
			}
			if wantMany := chunk > 0 && chunk < len(want)/2; wantMany != (flushes > 1) {
				t.Errorf("%d flushes of chunk %d for %d bytes", flushes, chunk, len(want))
			}
		})
	}
}

// TestStreamJSONStopsOnError: once flush fails, nothing more is encoded or
// flushed, and the error comes back.
func TestStreamJSONStopsOnError(t *testing.T) {
	b := bigBundle(t, 20)
	gone := errors.New("client gone")
	flushes := 0
	rest, err := b.StreamJSON(nil, 100, func([]byte) error {
		flushes++
		return gone
	})
	if !errors.Is(err, gone) {
		t.Fatalf("err = %v, want the flush's", err)
	}
	if flushes != 1 {
		t.Errorf("%d flushes after the first failed, want 1", flushes)
	}
	if len(rest) > 0 && bytes.HasSuffix(rest, []byte("]}}")) {
		t.Errorf("encoding went on to the end after the failure: %d bytes left", len(rest))
	}
}

func BenchmarkStreamJSON(b *testing.B) {
	bundle := bigBundle(b, 100)
	buf := make([]byte, 0, 128<<10)
	flush := func([]byte) error { return nil }
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = bundle.StreamJSON(buf[:0], 64<<10, flush)
	}
}
