package tunnel

import (
	"bufio"
	"bytes"
	"compress/flate"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A tunnel runs with compression off, and a message longer than a full
// frame and 1 KiB closes it. A server that answers the handshake with
// permessage-deflate, which the client never offered, must not get
// compressed messages past that bound: the read limit counts the bytes
// on the wire, so 2 KiB could carry megabytes.
func TestClientRefusesUnofferedCompression(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			c.Close()
			return
		}
		sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: "+base64.StdEncoding.EncodeToString(sum[:])+"\r\n"+
			"Sec-WebSocket-Protocol: west.v2\r\n"+
			"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n\r\n")
		// One compressed binary message of 8 MiB of zeros: yamux reads
		// them as empty frames of stream 0, and ignores them.
		var z bytes.Buffer
		fw, _ := flate.NewWriter(&z, flate.BestCompression)
		fw.Write(make([]byte, 8<<20))
		fw.Flush()
		payload := bytes.TrimSuffix(z.Bytes(), []byte{0, 0, 0xff, 0xff})
		frame := []byte{0xc2, 127}
		frame = binary.BigEndian.AppendUint64(frame, uint64(len(payload)))
		c.Write(append(frame, payload...))
		served <- c
		io.Copy(io.Discard, c)
	}()
	c, _ := runClient(t, ClientOptions{URL: "ws://" + ln.Addr().String() + "/", Name: "n", Handler: echoHandler, MinBackoff: time.Hour})
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		st := c.Status()
		if st.State == StateBackoff {
			if st.LastError == nil || !strings.Contains(st.LastError.Error(), "permessage-deflate") {
				t.Fatalf("refused, but the error does not say why: %v", st.LastError)
			}
			return // refused: right
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case conn := <-served:
		conn.Close()
	default:
	}
	t.Fatalf("tunnel still %s 5s after a compressed message of 8 MiB: compression was taken, and the read limit passed", c.Status().State)
}
