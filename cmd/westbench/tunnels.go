//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/west-tunnel/west/internal/tunnel"
	"github.com/west-tunnel/west/internal/wire"
)

// tunnelsMode is the hidden mode in which westbench holds many idle
// tunnels to one server.
const tunnelsMode = "_tunnels"

// runTunnels connects args[1] tunnel clients, each with its own name, to
// the tunnel server at args[0] and holds them until standard input closes.
// It prints "base" before it connects anything and waits for a line, so
// that its parent can read its resident size first, then "ready" once
// every tunnel is up.
func runTunnels(args []string) error {
	if len(args) != 2 {
		return errors.New("want the server URL and a count")
	}
	n, err := strconv.Atoi(args[1])
	if err != nil || n < 1 {
		return fmt.Errorf("bad count %q", args[1])
	}
	in := bufio.NewReader(os.Stdin)
	fmt.Println("base")
	if _, err := in.ReadString('\n'); err != nil {
		return err
	}
	refuse := tunnel.StreamHandlerFunc(func(_ context.Context, req *tunnel.Request) {
		req.Reject(wire.CodeForbidden, "an idle benchmark tunnel")
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	clients := make([]*tunnel.Client, n)
	for i := range clients {
		clients[i] = tunnel.NewClient(tunnel.ClientOptions{URL: args[0], Name: fmt.Sprintf("idle-%d", i), Handler: refuse})
		wg.Go(func() { clients[i].Run(ctx) })
	}
	defer func() { cancel(); wg.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for _, c := range clients {
		for c.Status().State != tunnel.StateUp {
			if time.Now().After(deadline) {
				return fmt.Errorf("tunnel %s not up after 30s: %v", c.Status().State, c.Status().LastError)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	fmt.Println("ready")
	io.Copy(io.Discard, in)
	return nil
}

// tunnelsResult is the memory of a tunnel server and of the process
// holding the tunnels, without and with them.
type tunnelsResult struct {
	n                    int
	server, serverWith   usage
	clients, clientsWith usage
}

// measureTunnels starts a fresh tunnel server and -idle-tunnels clients
// of it in one westbench child, and reads both sides' resident size
// before and after the tunnels come up.
func (b *bench) measureTunnels(ctx context.Context) error {
	n := b.opts.idleTunnels
	g, err := b.l.start(ctx, "tunnels.G", `{
		"west": {"nm": "tunnels.G"},
		"wsts": {"sp": "ws://127.0.0.1:0"}
	}`, "tunnel")
	if err != nil {
		return err
	}
	defer g.stop()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// Tied to ctx, so that Ctrl-C ends a child still connecting its tunnels.
	child := exec.CommandContext(ctx, self, tunnelsMode, "ws://"+g.addrs["tunnel"], strconv.Itoa(n))
	child.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		return err
	}
	if err := child.Start(); err != nil {
		return fmt.Errorf("start the tunnels child: %w", err)
	}
	defer func() { stdin.Close(); child.Wait() }()
	out := bufio.NewReader(stdout)
	expect := func(want string) error {
		line, err := out.ReadString('\n')
		if strings.TrimSpace(line) != want {
			return fmt.Errorf("tunnels child said %q, want %q: %v", line, want, err)
		}
		return nil
	}
	if err := expect("base"); err != nil {
		return err
	}
	sleep(ctx, time.Second)
	r := tunnelsResult{n: n}
	if r.server, err = procUsage(g.pid()); err != nil {
		return err
	}
	if r.clients, err = procUsage(child.Process.Pid); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "idle tunnels: connecting %d... ", n)
	io.WriteString(stdin, "go\n")
	if err := expect("ready"); err != nil {
		return b.explain(err, []*west{g})
	}
	sleep(ctx, 2*time.Second)
	if r.serverWith, err = procUsage(g.pid()); err != nil {
		return err
	}
	if r.clientsWith, err = procUsage(child.Process.Pid); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "done")
	b.tunnels = &r
	return ctx.Err()
}
