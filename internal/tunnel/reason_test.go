package tunnel

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/west-tunnel/west/internal/wire"
)

// A reply's reason is UTF-8 (docs/PROTOCOL.md), also when it is cut to
// wire.MaxReasonLen: a cut in the middle of a character sent bytes that
// are not. The bad header's reason quotes the target, whose bytes above
// 0x7f quote as \xNN and whose UTF-8 characters stay as they are.
func TestReplyReasonCutStaysUTF8(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	c := h.startClient(ClientOptions{Name: "n"})
	waitFor(t, "session", func() bool { return c.Status().State == StateUp })
	sess := c.Status().Session
	var bad *wire.RejectError
	// Shift where the cut falls by one byte at a time, so that one of the
	// attempts cuts a two-byte character whatever the prefix's length.
	for shift := range 2 {
		target := strings.Repeat("\xff", 240) + strings.Repeat("a", shift) + strings.Repeat("é", 100) + "\x01:1"
		junk := append([]byte{wire.Version, byte(wire.KindTCP), 0, byte(len(target))}, target...)
		junk[2] = byte(len(target) >> 8)
		st, err := sess.OpenRaw()
		if err != nil {
			t.Fatal(err)
		}
		st.Write(junk)
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		err = wire.ReadReply(st)
		st.Close()
		if !errors.As(err, &bad) || bad.Code != wire.CodeBadHeader {
			t.Fatalf("reply %v, want bad header", err)
		}
		if len(bad.Reason) > wire.MaxReasonLen {
			t.Fatalf("reason of %d bytes", len(bad.Reason))
		}
		if !utf8.ValidString(bad.Reason) {
			t.Fatalf("reason of %d bytes is not UTF-8; it ends %q", len(bad.Reason), bad.Reason[len(bad.Reason)-8:])
		}
	}
}
