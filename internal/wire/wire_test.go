package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	for _, h := range []Header{
		{Kind: KindHTTP, Target: "127.0.0.1:9921"},
		{Kind: KindTCP, Target: "[::1]:22", Hops: 3},
		{Kind: KindUDP, Target: "h:53", Hops: 255},
		{Kind: KindHTTP, Target: "backend.example:65535"},
		{Kind: KindTCP, Target: strings.Repeat("a", MaxTargetLen-2) + ":1"},
		{Kind: KindDrain},
	} {
		for _, v := range []byte{Version, VersionHops} {
			b, err := h.AppendBinary(nil, v)
			if err != nil {
				t.Fatalf("encode %+v as version %d: %v", h, v, err)
			}
			if b[0] != v || len(b) != 4+len(h.Target)+int(v-Version) {
				t.Fatalf("encode %+v as version %d: % x", h, v, b)
			}
			got, err := ReadHeader(bytes.NewReader(b), VersionHops)
			if err != nil {
				t.Fatalf("decode %+v, version %d: %v", h, v, err)
			}
			want := h
			if v == Version {
				want.Hops = 0 // version 1 has no hop count
			}
			if got != want {
				t.Fatalf("round trip as version %d: got %+v, want %+v", v, got, want)
			}
			// A west that reads version 1 alone (one that predates
			// version 2) reads version 1 as before, and refuses 2.
			got, err = ReadHeader(bytes.NewReader(b), Version)
			switch {
			case v == Version && (err != nil || got != want):
				t.Fatalf("version 1 read by a version-1 reader: %+v, %v", got, err)
			case v == VersionHops && !errors.Is(err, ErrMalformed):
				t.Fatalf("version 2 read by a version-1 reader: %+v, %v; want ErrMalformed", got, err)
			}
		}
	}
	// The layouts, byte by byte.
	h := Header{Kind: KindTCP, Target: "a:1", Hops: 7}
	for v, want := range map[byte][]byte{
		Version:     {1, 1, 0, 3, 'a', ':', '1'},
		VersionHops: {2, 1, 7, 0, 3, 'a', ':', '1'},
	} {
		if b, _ := h.AppendBinary(nil, v); !bytes.Equal(b, want) {
			t.Errorf("version %d: % x, want % x", v, b, want)
		}
	}
}

func TestHeaderRejects(t *testing.T) {
	for name, h := range map[string]Header{
		"kind zero":    {Kind: 0, Target: "a:1"},
		"kind unknown": {Kind: 9, Target: "a:1"},
		"no target":    {Kind: KindTCP},
		"no port":      {Kind: KindTCP, Target: "host"},
		"port zero":    {Kind: KindTCP, Target: "host:0"},
		"port big":     {Kind: KindTCP, Target: "host:65536"},
		"port name":    {Kind: KindTCP, Target: "host:http"},
		"empty host":   {Kind: KindTCP, Target: ":80"},
		"space":        {Kind: KindTCP, Target: "a b:80"},
		"newline":      {Kind: KindTCP, Target: "a\n:80"},
		"too long":     {Kind: KindTCP, Target: strings.Repeat("a", MaxTargetLen) + ":1"},
		"drain target": {Kind: KindDrain, Target: "a:1"},
		"drain hops":   {Kind: KindDrain, Hops: 1},
	} {
		for _, v := range []byte{Version, VersionHops} {
			if _, err := h.AppendBinary(nil, v); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: encode as version %d: error %v, want ErrMalformed", name, v, err)
			}
		}
	}
	for _, v := range []byte{0, 3} {
		if _, err := (Header{Kind: KindTCP, Target: "a:1"}).AppendBinary(nil, v); !errors.Is(err, ErrMalformed) {
			t.Errorf("encode as version %d: error %v, want ErrMalformed", v, err)
		}
	}
}

func TestReadHeaderMalformed(t *testing.T) {
	for name, b := range map[string][]byte{
		"version zero":      {0, 1, 0, 3, 'a', ':', '1'},
		"version three":     {3, 1, 0, 0, 3, 'a', ':', '1'},
		"zero length":       {1, 1, 0, 0},
		"length over":       {1, 1, 0xff, 0xff},
		"bad kind":          {1, 7, 0, 3, 'a', ':', '1'},
		"target no port":    {1, 1, 0, 1, 'a'},
		"drain target":      {1, 4, 0, 3, 'a', ':', '1'},
		"http no target":    {1, 2, 0, 0},
		"v2 zero length":    {2, 1, 5, 0, 0},
		"v2 length over":    {2, 1, 5, 0xff, 0xff},
		"v2 bad kind":       {2, 7, 0, 0, 3, 'a', ':', '1'},
		"v2 drain target":   {2, 4, 0, 0, 3, 'a', ':', '1'},
		"v2 drain hops":     {2, 4, 1, 0, 0},
		"v2 target no port": {2, 1, 0, 0, 1, 'a'},
	} {
		_, err := ReadHeader(bytes.NewReader(b), VersionHops)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: error %v, want ErrMalformed", name, err)
		}
	}
	// A header that lies about its length, or stops within its fixed
	// part: the reader sees EOF, not a hang.
	for name, b := range map[string][]byte{
		"short target":       {1, 1, 0, 10, 'a', ':', '1'},
		"short fixed part":   {1},
		"v2 short target":    {2, 1, 0, 0, 10, 'a', ':', '1'},
		"v2 short fixed":     {2, 1, 0},
		"v2 one byte short":  {2, 1, 0, 0},
		"v2 drain truncated": {2, 4, 0, 0},
	} {
		if _, err := ReadHeader(bytes.NewReader(b), VersionHops); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: error %v, want unexpected EOF", name, err)
		}
	}
	if _, err := ReadHeader(bytes.NewReader(nil), VersionHops); !errors.Is(err, io.EOF) {
		t.Errorf("nothing: error %v, want EOF", err)
	}
}

func TestReply(t *testing.T) {
	if err := ReadReply(bytes.NewReader(Reply{Code: CodeOK}.AppendBinary(nil))); err != nil {
		t.Fatalf("ok reply: %v", err)
	}
	b := Reply{Code: CodeDialFailed, Reason: "connection refused"}.AppendBinary(nil)
	var re *RejectError
	if err := ReadReply(bytes.NewReader(b)); !errors.As(err, &re) || re.Code != CodeDialFailed || re.Reason != "connection refused" {
		t.Fatalf("reject reply: %v", err)
	}
	if re.Timeout() {
		t.Fatal("dial failure reported as timeout")
	}
	long := Reply{Code: CodeTimeout, Reason: strings.Repeat("x", 2*MaxReasonLen)}.AppendBinary(nil)
	err := ReadReply(bytes.NewReader(long))
	if !errors.As(err, &re) || len(re.Reason) != MaxReasonLen || !re.Timeout() {
		t.Fatalf("long reason: %v", err)
	}
	if err := ReadReply(bytes.NewReader([]byte{1, 0, 0, 2, 'h', 'i'})); !errors.Is(err, ErrMalformed) {
		t.Fatalf("ok with reason: %v", err)
	}
	if err := ReadReply(bytes.NewReader([]byte{1, 1, 0xff, 0xff})); !errors.Is(err, ErrMalformed) {
		t.Fatalf("oversized reason: %v", err)
	}
}

func FuzzReadHeader(f *testing.F) {
	for _, h := range []Header{
		{Kind: KindHTTP, Target: "127.0.0.1:80"}, {Kind: KindTCP, Target: "[::1]:22", Hops: 16},
		{Kind: KindUDP, Target: "h:53", Hops: 1}, {Kind: KindDrain},
	} {
		for _, v := range []byte{Version, VersionHops} {
			b, _ := h.AppendBinary(nil, v)
			f.Add(b)
		}
	}
	f.Add([]byte{1, 1, 0xff, 0xff})
	f.Add([]byte{1, 2, 0, 3, 'a', ':', '0'})
	f.Add([]byte{2, 1, 0xff, 0xff, 0xff})
	f.Add([]byte{2, 4, 1, 0, 0})
	f.Add([]byte{3, 1, 0, 0, 3, 'a', ':', '1'})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ReadHeader(bytes.NewReader(b), VersionHops)
		if err != nil {
			return
		}
		if b[0] == Version && h.Hops != 0 {
			t.Fatalf("a version-1 header decoded with a hop count: %+v", h)
		}
		// Whatever decodes must encode back, in its version, to the
		// bytes it came from.
		enc, err := h.AppendBinary(nil, b[0])
		if err != nil {
			t.Fatalf("decoded header %+v does not encode: %v", h, err)
		}
		if !bytes.Equal(enc, b[:len(enc)]) {
			t.Fatalf("re-encoding differs: %x vs %x", enc, b[:len(enc)])
		}
		// A version-1 reader takes it alike, or refuses version 2.
		h1, err := ReadHeader(bytes.NewReader(b), Version)
		if b[0] == Version && (err != nil || h1 != h) || b[0] != Version && !errors.Is(err, ErrMalformed) {
			t.Fatalf("version-1 reader: %+v, %v; the full reader: %+v", h1, err, h)
		}
	})
}

func FuzzReadReply(f *testing.F) {
	f.Add(Reply{Code: CodeOK}.AppendBinary(nil))
	f.Add(Reply{Code: CodeForbidden, Reason: "no"}.AppendBinary(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		err := ReadReply(bytes.NewReader(b))
		var re *RejectError
		if errors.As(err, &re) && len(re.Reason) > MaxReasonLen {
			t.Fatalf("reason over limit: %d", len(re.Reason))
		}
	})
}

func TestDatagramFraming(t *testing.T) {
	var stream []byte
	want := [][]byte{{}, []byte("a"), bytes.Repeat([]byte("x"), MaxDatagram)}
	for _, d := range want {
		stream = AppendDatagram(stream, d)
	}
	r := bytes.NewReader(stream)
	buf := make([]byte, MaxDatagram)
	for i, w := range want {
		got, err := ReadDatagram(r, buf)
		if err != nil || !bytes.Equal(got, w) {
			t.Fatalf("datagram %d: %d bytes, %v; want %d bytes", i, len(got), err, len(w))
		}
	}
	if _, err := ReadDatagram(r, buf); err != io.EOF {
		t.Fatalf("after the last datagram: %v, want io.EOF", err)
	}
	// A frame cut short is an error, not a short datagram.
	cut := AppendDatagram(nil, []byte("hello"))[:4]
	if _, err := ReadDatagram(bytes.NewReader(cut), buf); err != io.ErrUnexpectedEOF {
		t.Fatalf("cut frame: %v, want io.ErrUnexpectedEOF", err)
	}
	if err := (Header{Kind: KindUDP, Target: "h:53", Hops: 1}).Validate(); err != nil {
		t.Fatalf("udp header: %v", err)
	}
}
