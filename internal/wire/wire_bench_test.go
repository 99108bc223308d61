package wire

import (
	"bytes"
	"testing"
)

var benchHeader = Header{Kind: KindHTTP, Target: "127.0.0.1:9921"}

func BenchmarkHeaderAppend(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 64)
	for b.Loop() {
		var err error
		if buf, err = benchHeader.AppendBinary(buf[:0], VersionHops); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadHeader(b *testing.B) {
	b.ReportAllocs()
	enc, err := benchHeader.AppendBinary(nil, VersionHops)
	if err != nil {
		b.Fatal(err)
	}
	r := bytes.NewReader(enc)
	for b.Loop() {
		r.Reset(enc)
		if _, err := ReadHeader(r, VersionHops); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReplyAppend(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 64)
	for b.Loop() {
		buf = Reply{Code: CodeOK}.AppendBinary(buf[:0])
	}
}

func BenchmarkReadReplyOK(b *testing.B) {
	b.ReportAllocs()
	enc := Reply{Code: CodeOK}.AppendBinary(nil)
	r := bytes.NewReader(enc)
	for b.Loop() {
		r.Reset(enc)
		if err := ReadReply(r); err != nil {
			b.Fatal(err)
		}
	}
}
