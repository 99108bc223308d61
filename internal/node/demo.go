package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/west-tunnel/west/internal/config"
)

// Demo runs the seed's use case 1 inside one process on loopback: a backend
// standing for a server near G, a west "G" with a tunnel server, and a
// west "L" that dials G and offers a proxy listener. It sends one request
// across the tunnel, prints what happened, and keeps running until ctx ends
// so that the printed curl command can be tried.
func Demo(ctx context.Context, out io.Writer, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	backendLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for demo backend: %w", err)
	}
	backend := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from the backend behind G: you asked for %s %s\n", r.Method, r.URL.RequestURI())
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go backend.Serve(backendLn)
	defer backend.Close()

	g, err := demoNode(`{"west": {"nm": "demo.G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, log.With("node", "G"))
	if err != nil {
		return err
	}
	l, err := demoNode(fmt.Sprintf(`{
		"west": {"nm": "demo.L"},
		"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/px": {"ou": "http://%s/x"}}}
	}`, g.Addrs().Tunnel, backendLn.Addr()), log.With("node", "L"))
	if err != nil {
		g.closeListeners() // G has its socket but will never run
		return err
	}
	done := make(chan error, 2)
	go func() { done <- g.Run(ctx) }()
	go func() { done <- l.Run(ctx) }()
	running := 2
	defer func() {
		cancel()
		for ; running > 0; running-- {
			<-done
		}
	}()

	var listen string
	for _, a := range l.Addrs().Proxies {
		listen = a
	}
	url := "http://" + listen + "/px/hello?from=demo"
	fmt.Fprintf(out, "west demo: use case 1 on loopback\n")
	fmt.Fprintf(out, "  backend (the server behind G)    http://%s/x\n", backendLn.Addr())
	fmt.Fprintf(out, "  west G: tunnel server            ws://%s\n", g.Addrs().Tunnel)
	fmt.Fprintf(out, "  west L: tunnel client to G, proxy listener http://%s/px -> G -> backend /x\n\n", listen)

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("demo request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil // Ctrl-C before the answer: a stop, not a failure
		}
		return fmt.Errorf("demo request: %w", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Fprintf(out, "GET %s\n  -> %s\n  -> %s\n", url, resp.Status, strings.TrimSpace(string(body)))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("demo request: %s, where the backend answers 200", resp.Status)
	}
	fmt.Fprintf(out, "The request crossed the tunnel from L to G and came back.\n\n")
	fmt.Fprintf(out, "Try it yourself:\n  curl -v '%s'\nPress Ctrl-C to stop.\n", url)
	select {
	case <-ctx.Done():
		return nil
	case err := <-done:
		// A west ended before Ctrl-C: the curl above would fail.
		running--
		return fmt.Errorf("demo west stopped: %v", err)
	}
}

func demoNode(js string, log *slog.Logger) (*Node, error) {
	cfg, err := config.Parse([]byte(js))
	if err != nil {
		return nil, fmt.Errorf("demo config: %w", err)
	}
	n, err := New(cfg, Options{Logger: log})
	if err != nil {
		return nil, err
	}
	return n, n.Start()
}
