// Package wire is west's tunnel protocol: the WebSocket subprotocol that names
// its version, and the small header that begins every stream carried by the
// tunnel's multiplexer, with the far side's reply.
//
// A stream's opener writes a Header; the far side answers with a Reply before
// any payload moves. A header of version 2 (VersionHops) also carries a hop
// count, which a west sends only to a peer that said in its handshake that
// it reads it. CodeOK means the far side has dialled the target and the
// stream now carries raw bytes both ways; any other code carries a reason and
// the far side closes the stream. The byte layouts are in docs/PROTOCOL.md.
//
// The package is a pure codec: it does no I/O beyond the io.Reader and
// io.Writer it is handed, and every length it reads is bounded.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Subprotocol is the WebSocket subprotocol of this version of the protocol.
// A server refuses a tunnel that does not offer it. Version 2 multiplexes
// with yamux; version 1 used smux, which a version 2 west cannot read.
const Subprotocol = "west.v2"

// Version is the first byte of every reply, and of a header of version 1,
// which has no hop count.
const Version byte = 1

// VersionHops is the header version that adds a hop count (Header.Hops).
// A west that predates it answers it with CodeBadHeader, so a west sends it
// only to a peer that announced, in the tunnel's handshake, that it reads
// it; replies stay at Version.
const VersionHops byte = 2

// Limits on the variable parts, so that a peer cannot make us allocate much.
const (
	MaxTargetLen = 512
	MaxReasonLen = 1024
)

// MaxNameLen bounds a node's name, which a tunnel client sends as its
// Origin: names label logs, state and metrics, so a stranger must not
// make them large.
const MaxNameLen = 256

// Kind says what a stream carries. For TCP and HTTP the far side dials the
// target and pipes bytes; for UDP the stream carries datagrams, each
// framed by AppendDatagram, to and from a UDP socket. A KindDrain stream
// carries nothing: it is a notice, with no target, that its opener has
// begun to drain, answered and closed at once.
type Kind byte

const (
	KindTCP   Kind = 1 // raw bytes for a tcp:// listener
	KindHTTP  Kind = 2 // HTTP/1.1 from an http:// listener
	KindUDP   Kind = 3 // datagrams of one flow of a udp:// listener
	KindDrain Kind = 4 // notice: the opener is draining
)

func (k Kind) String() string {
	switch k {
	case KindTCP:
		return "tcp"
	case KindHTTP:
		return "http"
	case KindUDP:
		return "udp"
	case KindDrain:
		return "drain"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Header opens a stream: what it carries and where the far side should
// connect.
type Header struct {
	Kind   Kind
	Target string // host:port
	// Hops is how many wests' own listeners the stream's traffic has
	// already been handed through, so that a far side can refuse a
	// stream going round a loop of routes. Only VersionHops carries it:
	// a version-1 header drops it, and reads as 0. A drain notice has 0.
	Hops uint8
}

// ErrMalformed is wrapped by every decoding error caused by bad bytes, as
// opposed to an I/O error of the underlying reader.
var ErrMalformed = errors.New("malformed")

// Validate reports whether h can be sent.
func (h Header) Validate() error {
	if h.Kind == KindDrain {
		if h.Target != "" {
			return fmt.Errorf("stream header: %w: a drain notice has a target (%d bytes)", ErrMalformed, len(h.Target))
		}
		if h.Hops != 0 {
			return fmt.Errorf("stream header: %w: a drain notice has a hop count (%d)", ErrMalformed, h.Hops)
		}
		return nil
	}
	if h.Kind != KindTCP && h.Kind != KindHTTP && h.Kind != KindUDP {
		return fmt.Errorf("stream header: %w: unknown kind %d", ErrMalformed, h.Kind)
	}
	if len(h.Target) == 0 || len(h.Target) > MaxTargetLen {
		return fmt.Errorf("stream header: %w: target length %d not in 1..%d", ErrMalformed, len(h.Target), MaxTargetLen)
	}
	host, port, err := net.SplitHostPort(h.Target)
	if err != nil {
		return fmt.Errorf("stream header: %w: target %q: %v", ErrMalformed, h.Target, err)
	}
	if host == "" {
		return fmt.Errorf("stream header: %w: target %q has no host", ErrMalformed, h.Target)
	}
	for i := 0; i < len(host); i++ {
		if c := host[i]; c <= ' ' || c == 0x7f {
			return fmt.Errorf("stream header: %w: target %q has a control or space character", ErrMalformed, h.Target)
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("stream header: %w: target %q: port not in 1..65535", ErrMalformed, h.Target)
	}
	return nil
}

// AppendBinary appends the header to b, encoded as version (Version or
// VersionHops):
//
//	version 1: version(1) kind(1) targetLen(2, big endian) target(targetLen)
//	version 2: version(1) kind(1) hops(1) targetLen(2, big endian) target(targetLen)
//
// Version 1 has no hop count: h.Hops is dropped.
func (h Header) AppendBinary(b []byte, version byte) ([]byte, error) {
	if err := h.Validate(); err != nil {
		return b, err
	}
	switch version {
	case Version:
		b = append(b, Version, byte(h.Kind))
	case VersionHops:
		b = append(b, VersionHops, byte(h.Kind), h.Hops)
	default:
		return b, fmt.Errorf("stream header: %w: version %d, want %d or %d", ErrMalformed, version, Version, VersionHops)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.Target)))
	return append(b, h.Target...), nil
}

// ReadHeader reads and validates one header from r, of a version from 1 to
// maxVersion: a west reads VersionHops; one that predates it read only
// Version, and a test may make a west behave as such.
func ReadHeader(r io.Reader, maxVersion byte) (Header, error) {
	var fixed [5]byte
	if _, err := io.ReadFull(r, fixed[:4]); err != nil {
		return Header{}, fmt.Errorf("read stream header: %w", err)
	}
	var h Header
	var n int
	switch v := fixed[0]; {
	case v == Version:
		n = int(binary.BigEndian.Uint16(fixed[2:4]))
	case v == VersionHops && maxVersion >= VersionHops:
		if _, err := io.ReadFull(r, fixed[4:]); err != nil {
			return Header{}, fmt.Errorf("read stream header: %w", noEOF(err))
		}
		h.Hops = fixed[2]
		n = int(binary.BigEndian.Uint16(fixed[3:5]))
	case maxVersion > Version:
		return Header{}, fmt.Errorf("stream header: %w: version %d, want %d to %d", ErrMalformed, v, Version, min(maxVersion, VersionHops))
	default:
		return Header{}, fmt.Errorf("stream header: %w: version %d, want %d", ErrMalformed, v, Version)
	}
	h.Kind = Kind(fixed[1])
	if h.Kind == KindDrain && n == 0 {
		if h.Hops != 0 {
			return Header{}, fmt.Errorf("stream header: %w: a drain notice has a hop count (%d)", ErrMalformed, h.Hops)
		}
		return h, nil
	}
	if n == 0 || n > MaxTargetLen {
		return Header{}, fmt.Errorf("stream header: %w: target length %d not in 1..%d", ErrMalformed, n, MaxTargetLen)
	}
	target := make([]byte, n)
	if _, err := io.ReadFull(r, target); err != nil {
		return Header{}, fmt.Errorf("read stream header target: %w", err)
	}
	h.Target = string(target)
	if err := h.Validate(); err != nil {
		return Header{}, err
	}
	return h, nil
}

// noEOF turns the end of r within a header into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Code is the far side's answer to a header.
type Code byte

const (
	CodeOK         Code = 0 // connected; raw bytes follow
	CodeDialFailed Code = 1 // the target refused or could not be reached
	CodeTimeout    Code = 2 // dialling the target timed out
	CodeForbidden  Code = 3 // the far side's dial policy refuses the target
	CodeBadHeader  Code = 4 // the header could not be decoded
	CodeOverloaded Code = 5 // the far side is at a limit; try later
	// CodeLoop: the stream's hop count (Header.Hops) reached the far
	// side's limit, so a route leads back to itself. Only a stream sent
	// with VersionHops can meet it, so only a peer that reads that
	// version is sent it (one that predates it gets CodeDialFailed).
	CodeLoop Code = 6
)

func (c Code) String() string {
	switch c {
	case CodeOK:
		return "ok"
	case CodeDialFailed:
		return "dial failed"
	case CodeTimeout:
		return "dial timeout"
	case CodeForbidden:
		return "forbidden"
	case CodeBadHeader:
		return "bad header"
	case CodeOverloaded:
		return "overloaded"
	case CodeLoop:
		return "loop"
	}
	return "code(" + strconv.Itoa(int(c)) + ")"
}

// Reply answers a header.
type Reply struct {
	Code   Code
	Reason string // empty for CodeOK; cut to MaxReasonLen
}

// AppendBinary appends the encoded reply to b:
//
//	version(1) code(1) reasonLen(2, big endian) reason(reasonLen)
func (r Reply) AppendBinary(b []byte) []byte {
	// The reason is UTF-8 on the wire: it may quote a peer's target,
	// whose bytes need not be, and the cut must not split a character.
	reason := strings.ToValidUTF8(r.Reason, "\uFFFD")
	if len(reason) > MaxReasonLen {
		n := MaxReasonLen
		for n > 0 && !utf8.RuneStart(reason[n]) {
			n--
		}
		reason = reason[:n]
	}
	b = append(b, Version, byte(r.Code))
	b = binary.BigEndian.AppendUint16(b, uint16(len(reason)))
	return append(b, reason...)
}

// ReadReply reads one reply from r. A reply with a code other than CodeOK
// is returned as a *RejectError.
func ReadReply(r io.Reader) error {
	var fixed [4]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return fmt.Errorf("read stream reply: %w", err)
	}
	if fixed[0] != Version {
		return fmt.Errorf("stream reply: %w: version %d, want %d", ErrMalformed, fixed[0], Version)
	}
	n := int(binary.BigEndian.Uint16(fixed[2:]))
	if n > MaxReasonLen {
		return fmt.Errorf("stream reply: %w: reason length %d over %d", ErrMalformed, n, MaxReasonLen)
	}
	code := Code(fixed[1])
	if code == CodeOK && n == 0 {
		return nil
	}
	reason := make([]byte, n)
	if _, err := io.ReadFull(r, reason); err != nil {
		return fmt.Errorf("read stream reply reason: %w", err)
	}
	if code == CodeOK {
		return fmt.Errorf("stream reply: %w: ok with a reason", ErrMalformed)
	}
	return &RejectError{Code: code, Reason: string(reason)}
}

// RejectError is the far side's refusal of a stream.
type RejectError struct {
	Code   Code
	Reason string
}

func (e *RejectError) Error() string {
	if e.Reason == "" {
		return "far side refused stream: " + e.Code.String()
	}
	return "far side refused stream: " + e.Code.String() + ": " + e.Reason
}

// Timeout reports whether the far side gave up dialling in time, so that
// callers treating errors as net.Error map it to a gateway timeout.
func (e *RejectError) Timeout() bool { return e.Code == CodeTimeout }

// MaxDatagram is the largest datagram a UDP stream carries.
const MaxDatagram = 65535

// AppendDatagram appends d to b as one frame of a UDP stream: its length as
// two big-endian bytes, then its bytes. A stream is a byte pipe, so the
// frames keep the datagrams' boundaries.
func AppendDatagram(b, d []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(d)))
	return append(b, d...)
}

// ReadDatagram reads one frame written by AppendDatagram into buf, which
// must hold MaxDatagram bytes, and returns the datagram.
func ReadDatagram(r io.Reader, buf []byte) ([]byte, error) {
	size, err := ReadDatagramSize(r)
	if err != nil {
		return nil, err
	}
	return ReadDatagramBody(r, buf[:size])
}

// ReadDatagramSize reads the length that begins a frame written by
// AppendDatagram, so that the caller may take a buffer for the datagram
// only once it is coming.
func ReadDatagramSize(r io.Reader) (int, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return 0, err
	}
	return int(binary.BigEndian.Uint16(n[:])), nil
}

// ReadDatagramBody reads the datagram that follows ReadDatagramSize into
// buf, whose length is that size.
func ReadDatagramBody(r io.Reader, buf []byte) ([]byte, error) {
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf, nil
}
