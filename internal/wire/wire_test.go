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
		{KindHTTP, "127.0.0.1:9921"},
		{KindTCP, "[::1]:22"},
		{KindHTTP, "backend.example:65535"},
		{KindTCP, strings.Repeat("a", MaxTargetLen-2) + ":1"},
		{KindDrain, ""},
	} {
		b, err := h.AppendBinary(nil)
		if err != nil {
			t.Fatalf("encode %+v: %v", h, err)
		}
		got, err := ReadHeader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("decode %+v: %v", h, err)
		}
		if got != h {
			t.Fatalf("round trip: got %+v, want %+v", got, h)
		}
	}
}

func TestHeaderRejects(t *testing.T) {
	for name, h := range map[string]Header{
		"kind zero":    {0, "a:1"},
		"kind unknown": {9, "a:1"},
		"no target":    {KindTCP, ""},
		"no port":      {KindTCP, "host"},
		"port zero":    {KindTCP, "host:0"},
		"port big":     {KindTCP, "host:65536"},
		"port name":    {KindTCP, "host:http"},
		"empty host":   {KindTCP, ":80"},
		"space":        {KindTCP, "a b:80"},
		"newline":      {KindTCP, "a\n:80"},
		"too long":     {KindTCP, strings.Repeat("a", MaxTargetLen) + ":1"},
		"drain target": {KindDrain, "a:1"},
	} {
		if _, err := h.AppendBinary(nil); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: encode error %v, want ErrMalformed", name, err)
		}
	}
}

func TestReadHeaderMalformed(t *testing.T) {
	for name, b := range map[string][]byte{
		"bad version":    {2, 1, 0, 3, 'a', ':', '1'},
		"zero length":    {1, 1, 0, 0},
		"length over":    {1, 1, 0xff, 0xff},
		"bad kind":       {1, 7, 0, 3, 'a', ':', '1'},
		"target no port": {1, 1, 0, 1, 'a'},
		"drain target":   {1, 4, 0, 3, 'a', ':', '1'},
		"http no target": {1, 2, 0, 0},
	} {
		_, err := ReadHeader(bytes.NewReader(b))
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: error %v, want ErrMalformed", name, err)
		}
	}
	// A header that lies about its length: the reader sees EOF, not a hang.
	_, err := ReadHeader(bytes.NewReader([]byte{1, 1, 0, 10, 'a', ':', '1'}))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short target: error %v, want unexpected EOF", err)
	}
	_, err = ReadHeader(bytes.NewReader([]byte{1}))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short fixed part: error %v, want unexpected EOF", err)
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
	for _, h := range []Header{{KindHTTP, "127.0.0.1:80"}, {KindTCP, "[::1]:22"}, {KindDrain, ""}} {
		b, _ := h.AppendBinary(nil)
		f.Add(b)
	}
	f.Add([]byte{1, 1, 0xff, 0xff})
	f.Add([]byte{1, 2, 0, 3, 'a', ':', '0'})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ReadHeader(bytes.NewReader(b))
		if err != nil {
			return
		}
		// Whatever decodes must encode back to the bytes it came from.
		enc, err := h.AppendBinary(nil)
		if err != nil {
			t.Fatalf("decoded header %+v does not encode: %v", h, err)
		}
		if !bytes.Equal(enc, b[:len(enc)]) {
			t.Fatalf("re-encoding differs: %x vs %x", enc, b[:len(enc)])
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
	if err := (Header{Kind: KindUDP, Target: "h:53"}).Validate(); err != nil {
		t.Fatalf("udp header: %v", err)
	}
}
