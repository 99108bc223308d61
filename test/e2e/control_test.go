package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// killable starts the binary with args and returns a function that kills
// it with SIGKILL, as an operator's crash would; the test's end kills it
// too if it is still running.
func killable(t *testing.T, args ...string) (kill func()) {
	t.Helper()
	cmd := exec.Command(westBin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	kill = func() {
		cmd.Process.Kill()
		<-exited
	}
	t.Cleanup(func() {
		kill()
		if t.Failed() {
			t.Logf("west %s output:\n%.4000s", strings.Join(args, " "), out.String())
		}
	})
	return kill
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestSeedCase2ControlPort is the acceptance check: with the seed's
// case 2 configs running, G's control port (":9701") names the connected
// client, counts the requests sent, and turns unhealthy within seconds of
// the client being killed.
func TestSeedCase2ControlPort(t *testing.T) {
	backend(t, "127.0.0.1:9941")
	west(t, "-c", sample("case2-G"))
	killL := killable(t, "-c", sample("case2-L"))
	const cp = "http://127.0.0.1:9701"

	const n = 5
	for i := range n {
		eventually(t, "GET", "http://127.0.0.1:9931/pa/"+strconv.Itoa(i), "")
	}

	code, body := get(t, cp+"/")
	if code != 200 || !strings.Contains(body, "--- wsts object ---") || !strings.Contains(body, `"name":"ws://case2.L.fiap.org"`) {
		t.Errorf("GET /: %d, want the four sections naming ws://case2.L.fiap.org; got %.2000s", code, body)
	}

	code, body = get(t, cp+"/api/state")
	var st struct {
		Server struct {
			Peers []struct {
				Name       string `json:"name"`
				RemoteAddr string `json:"remote_addr"`
			} `json:"peers"`
		} `json:"server"`
	}
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil {
		t.Fatalf("GET /api/state: %d, decode: %v", code, err)
	}
	if len(st.Server.Peers) != 1 || st.Server.Peers[0].Name != "ws://case2.L.fiap.org" || st.Server.Peers[0].RemoteAddr == "" {
		t.Errorf("/api/state peers: %+v", st.Server.Peers)
	}

	_, body = get(t, cp+"/metrics")
	want := fmt.Sprintf(`west_requests_total{code_class="2xx",listener="http://127.0.0.1:9931",route="/pa"} %d`, n)
	if !strings.Contains(body, want+"\n") {
		t.Errorf("/metrics lacks %s", want)
	}

	if code, body := get(t, cp+"/healthz"); code != 200 {
		t.Errorf("/healthz with L up: %d %q", code, body)
	}
	killL()
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body := get(t, cp+"/healthz")
		if code == 503 && strings.Contains(body, "ws://case2.L.fiap.org") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz 5s after L was killed: %d %q", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
