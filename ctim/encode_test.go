package ctim

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive"
)

// stdJSON is what encoding/json writes for v with HTML escaping off, the
// way the transport used to encode answers.
func stdJSON(t testing.TB, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func TestEncoderMatchesEncodingJSON(t *testing.T) {
	m := Mapper{Now: func() time.Time { return fixedNow }}
	hostile := Observable{Type: "url", Value: "http://x/\"<&>\\\n\t\u2028\x01é\xff"}
	r := benchReport()
	r.RiskFactors = append(r.RiskFactors, pulsedive.RiskFactor{Description: "quote \" and \u2029 and \x7f"})
	r.Feeds[0].Category = ""
	var b Bundle
	for _, obs := range []Observable{{Type: "ip", Value: "185.141.25.242"}, hostile, {Type: "domain", Value: "a.example"}} {
		rels, err := m.Relations(obs, benchLinks, 100)
		if err != nil {
			t.Fatal(err)
		}
		e, err := m.Observe(obs, r, rels, 100)
		if err != nil {
			t.Fatal(err)
		}
		b.Add(e)
	}
	b.AddVerdict(Verdict{Type: "verdict"}) // zero fields, as deliberate would never send
	b.Indicators = append(b.Indicators, Indicator{ID: "i", Tags: []string{}})
	b.Sightings = append(b.Sightings, Sighting{ID: "s"})

	tests := map[string]*Bundle{
		"full":  &b,
		"empty": {},
		"verdicts only": func() *Bundle {
			var v Bundle
			v.AddVerdict(b.Verdicts[0])
			return &v
		}(),
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			want := stdJSON(t, b.Data())
			got := b.appendJSON(nil)
			if !bytes.Equal(got, want) {
				t.Errorf("the encoder differs from encoding/json:\n got %s\nwant %s", got, want)
			}
		})
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", `"\`, "\x00\x1f\b\f\n\r\t", "<&>", "é€𝄞", "\xff\xfe", "\u2028\u2029", "a\xc3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := stdJSON(t, s)
		if got := appendString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("appendString(%q) = %s, want %s", s, got, want)
		}
	})
}

func BenchmarkAppendJSON(b *testing.B) {
	m := Mapper{Now: func() time.Time { return fixedNow }}
	obs := Observable{Type: "ip", Value: "185.141.25.242"}
	rels, _ := m.Relations(obs, benchLinks, 100)
	e, err := m.Observe(obs, benchReport(), rels, 100)
	if err != nil {
		b.Fatal(err)
	}
	var bundle Bundle
	bundle.Add(e)
	buf := make([]byte, 0, 16<<10)
	b.ReportAllocs()
	for b.Loop() {
		buf = bundle.appendJSON(buf[:0])
		b.SetBytes(int64(len(buf)))
	}
}

// TestPlain8: every byte value at every position of eight, among plain
// ones, is told apart exactly as a byte-wise check tells it.
func TestPlain8(t *testing.T) {
	plain := func(c byte) bool { return c >= 0x20 && c < 0x80 && c != '"' && c != '\\' }
	for pos := range 8 {
		for c := range 256 {
			s := []byte("abcdefgh")
			s[pos] = byte(c)
			if got, want := plain8(string(s)), plain(byte(c)); got != want {
				t.Errorf("plain8(%q) = %v, want %v", s, got, want)
			}
		}
	}
}
