//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"

	"github.com/west-tunnel/west/internal/config"
	"github.com/west-tunnel/west/internal/node"
	"github.com/west-tunnel/west/internal/procs"
)

// chunk is the buffer every download is written from.
var chunk = func() []byte {
	b := make([]byte, 256<<10)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}()

// runBackend serves, on a loopback port it logs as a west does:
//
//	GET  /small          a 12-byte body
//	GET  /download?n=N   N bytes, written from one reused buffer
//	POST /upload         reads and discards the body, answers its length
//
// It runs in a process of its own, as the backend of a tunnel does. In the
// load generator's process the direct path skipped a wake-up of another
// process on each request, and was faster than any real backend could be.
func runBackend() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	announce("backend", ln.Addr())
	srv := &http.Server{Handler: backendHandler(), ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}

// announce logs a bound address as a west's JSON "listening" line, which
// the launcher waits for.
func announce(role string, addr net.Addr) {
	fmt.Printf("{\"msg\":\"listening\",\"role\":%q,\"addr\":%q}\n", role, addr.String())
}

func backendHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /small", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello, west\n")
	})
	mux.HandleFunc("GET /download", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "want n=BYTES", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		for n > 0 {
			k := min(n, int64(len(chunk)))
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		n, err := discard(r.Body, make([]byte, 256<<10))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		io.WriteString(w, strconv.FormatInt(n, 10))
	})
	return mux
}

// discard reads r to EOF with buf and returns how much it read.
func discard(r io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		k, err := r.Read(buf)
		n += int64(k)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// Hidden modes in which westbench re-executes itself.
const (
	nodeMode    = "_node"    // a west node that writes CPU and allocation profiles
	sinkMode    = "_sink"    // a TCP server holding idle connections
	relayMode   = "_relay"   // a plain TCP relay: the floor a tunnel hop is measured against
	backendMode = "_backend" // the HTTP backend every path leads to
)

// runRelay forwards every connection on a loopback port to args[0],
// copying the bytes through a 64 KiB buffer in user space as a tunnel
// must, with no framing, multiplexing or HTTP (and no splice, which no
// tunnel can use). Two of them chained are the least any two-process
// relay can cost: the floor of a one-hop tunnel on this machine. It logs
// its address as a west does and runs until killed.
func runRelay(args []string) error {
	if len(args) != 1 {
		return errors.New("want one argument: the target host:port")
	}
	target := args[0]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	announce("proxy", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			t, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer t.Close()
			done := make(chan struct{})
			go func() { relayHalf(t, c); close(done) }()
			relayHalf(c, t)
			<-done
		}()
	}
}

// relayHalf copies src to dst, then half-closes dst.
func relayHalf(dst, src net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	dst.(*net.TCPConn).CloseWrite()
}

// runSink accepts connections on a loopback port, which it prints, sends
// one byte on each and holds them open until its standard input closes.
// It runs in its own process so that the idle-stream test's two ends do
// not share one file limit.
func runSink() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String())
	go func() {
		var held []net.Conn
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte{'!'})
			held = append(held, c)
		}
	}()
	io.Copy(io.Discard, bufio.NewReader(os.Stdin))
	return nil
}

// runNode runs a west node on a config, like cmd/west, while recording a
// CPU profile, and writes an allocation profile when it stops.
func runNode(args []string) error {
	fs := flag.NewFlagSet(nodeMode, flag.ContinueOnError)
	cfgPath := fs.String("c", "", "config file")
	cpuProfile := fs.String("cpuprofile", "", "CPU profile output")
	memProfile := fs.String("memprofile", "", "allocation profile output")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	n, err := node.New(cfg, node.Options{Logger: log})
	if err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	defer procs.Start(log)()
	if err := n.Run(ctx); err != nil {
		return err
	}
	if *memProfile != "" {
		f, err := os.Create(*memProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		return pprof.Lookup("allocs").WriteTo(f, 0)
	}
	return nil
}
