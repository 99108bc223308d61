package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

func runArgs(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{nil, exitConfig, "no configuration"},
		{[]string{"-x"}, exitConfig, "west: flag provided but not defined: -x\nusage:"},
		{[]string{"--debug", "x", "-c", "a.json"}, exitConfig, `west: invalid value "x" for flag -debug`},
		{[]string{"--ver", "-c", "a.json"}, exitConfig, "ambiguous option: --ver could match --verbose, --version"},
		{[]string{"-c", "a.json", "extra"}, exitConfig, `unexpected argument "extra"`},
		{[]string{"--log-format", "xml", "-c", "a.json"}, exitConfig, "neither text nor json"},
		{[]string{"-c", "/nonexistent/west.json"}, exitConfig, "no such file"},
		{[]string{"-d=maybe", "-c", "a.json"}, exitConfig, "west: invalid boolean value \"maybe\" for -d: want -d alone"},
	} {
		code, _, stderr := runArgs(t, context.Background(), tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.says) {
			t.Errorf("west %v: exit %d, stderr %q; want %d saying %q", tc.args, code, stderr, tc.code, tc.says)
		}
	}
}

// TestDebugFlag: -d counts, and -d=false turns debug logging off, as a
// boolean flag's "=false" does.
func TestDebugFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want counter
	}{
		{[]string{"-d"}, 1},
		{[]string{"-d", "-d"}, 2},
		{[]string{"-d=false"}, 0},
		{[]string{"-d", "-d=false"}, 0},
		{[]string{"-d=true"}, 1},
		{[]string{"-dd"}, 2},
		{[]string{"-ddd", "-d"}, 4},
		{[]string{"-c", "-dd"}, 0}, // a file named -dd
	} {
		f, _, err := parseFlags("west", tc.args, &bytes.Buffer{})
		if err != nil || f.debug != tc.want {
			t.Errorf("west %v: debug %d, err %v; want %d", tc.args, f.debug, err, tc.want)
		}
	}
}

func TestBadConfigNamesPath(t *testing.T) {
	p := writeFile(t, "bad.json", `{"west": {"nm": "x"}, "wstc": {"ws://127.0.0.1:1": {"ee": "maybe"}}}`)
	code, _, stderr := runArgs(t, context.Background(), "-c", p)
	if code != exitConfig || !strings.Contains(stderr, `wstc["ws://127.0.0.1:1"].ee`) {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func TestCheck(t *testing.T) {
	p := writeFile(t, "ok.json", `{"west": {"nm": "n"}, "proxy": {"http://127.0.0.1:0": {"ea": "ws://127.0.0.1:9", "/": {"ou": "http://127.0.0.1:1/"}}}}`)
	code, out, stderr := runArgs(t, context.Background(), "check", "-c", p)
	if code != exitOK || !strings.Contains(out, `"ws://127.0.0.1:9":{`) {
		t.Fatalf("check: exit %d, out %q, stderr %q", code, out, stderr)
	}
}

func TestCheckInvalid(t *testing.T) {
	p := writeFile(t, "bad.json", `{"west": {"nm": "n"}, "wstc": {"ws://h": {"ee": "maybe"}}}`)
	code, _, stderr := runArgs(t, context.Background(), "check", "-c", p)
	if code != exitCheckFailed || !strings.Contains(stderr, `wstc["ws://h"].ee`) {
		t.Fatalf("check of an invalid config: exit %d, stderr %q; want %d naming the path", code, stderr, exitCheckFailed)
	}
}

// TestCheckListenClashBehindAName: west check resolves the names of
// listen addresses as a listen would, and refuses two that bind one
// address under other spellings, which start would refuse with "address
// already in use".
func TestCheckListenClashBehindAName(t *testing.T) {
	ln, err := net.Listen("tcp", "localhost:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	local := net.JoinHostPort(ln.Addr().(*net.TCPAddr).AddrPort().Addr().Unmap().String(), "8080") // 127.0.0.1:8080, most often
	p := writeFile(t, "clash.json", fmt.Sprintf(`{"west": {"nm": "n"}, "proxy": {
		"http://localhost:8080": {"ea": "ws://127.0.0.1:9", "/": {"ou": "http://127.0.0.1:1/"}},
		"http://%s": {"ea": "ws://127.0.0.1:9", "/": {"ou": "http://127.0.0.1:1/"}}}}`, local))
	code, out, stderr := runArgs(t, context.Background(), "check", "-c", p)
	want := fmt.Sprintf(`west: config %s: proxy["http://localhost:8080"]: want a listen address of its own, got localhost:8080 (resolved to %s), which proxy["http://%s"] listens on too as %s`+"\n",
		p, local, local, local)
	if code != exitCheckFailed || stderr != want || out != "" {
		t.Errorf("check: exit %d, out %q\nstderr %q\nwant exit %d, stderr %q", code, out, stderr, exitCheckFailed, want)
	}
}

// TestCheckListenNamesApart: names resolved, listen addresses that bind
// side by side pass west check: TCP and UDP on one port, and addresses
// apart.
func TestCheckListenNamesApart(t *testing.T) {
	p := writeFile(t, "apart.json", `{"west": {"nm": "n", "cp": "localhost:8080"}, "proxy": {
		"udp://localhost:8080": {"ea": "ws://127.0.0.1:9", "ou": "udp://127.0.0.1:53"},
		"tcp://127.0.0.2:8080": {"ea": "ws://127.0.0.1:9", "ou": "tcp://127.0.0.1:22"},
		"http://localhost:8081": {"ea": "ws://127.0.0.1:9", "/": {"ou": "http://127.0.0.1:1/"}}}}`)
	if code, _, stderr := runArgs(t, context.Background(), "check", "-c", p); code != exitOK || stderr != "" {
		t.Errorf("check: exit %d, stderr %q; want %d and nothing", code, stderr, exitOK)
	}
}

// TestCheckLoadsTLSFiles: check reads the certificates, keys and CAs the
// config names, as starting would, so that a renewal checked before a
// reload or restart is checked for real.
func TestCheckLoadsTLSFiles(t *testing.T) {
	dir := t.TempDir()
	notPEM := writeFile(t, "not.pem", "not a certificate\n")
	// A bundle whose second certificate is cut short: not skipped unsaid.
	good, _ := testutil.SelfSigned(t, "ca.test", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	goodPEM, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	cut := writeFile(t, "cut.pem", string(goodPEM)+"-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3\n-----END CERTIFICATE-----\n")
	for _, tc := range []struct{ conf, says string }{
		{fmt.Sprintf(`{"west": {"nm": "n"}, "wsts": {"sp": "wss://127.0.0.1:0",
			"tls_cert_file": "%[1]s/tls.pem", "tls_key_file": "%[1]s/tls.key"}}`, dir), dir + "/tls.pem"},
		{fmt.Sprintf(`{"west": {"nm": "n"}, "wstc": {"wss://127.0.0.1:9": {"ca_file": %q}}}`, notPEM), notPEM},
		{fmt.Sprintf(`{"west": {"nm": "n"}, "wstc": {"wss://127.0.0.1:9": {"ca_file": %q}}}`, cut), cut + ": certificate 2: x509: "},
		{fmt.Sprintf(`{"west": {"nm": "n"}, "proxy": {"http://127.0.0.1:0": {"ea": "ws://127.0.0.1:9",
			"tls_ca_file": "%s/ca.pem", "/": {"ou": "https://127.0.0.1:1/"}}}}`, dir), dir + "/ca.pem"},
	} {
		p := writeFile(t, "tls.json", tc.conf)
		code, _, stderr := runArgs(t, context.Background(), "check", "-c", p)
		if code != exitCheckFailed || !strings.Contains(stderr, tc.says) {
			t.Errorf("check of %s: exit %d, stderr %q; want %d naming %s", tc.conf, code, stderr, exitCheckFailed, tc.says)
		}
	}
}

// A certificate about to expire passes the check, with a warning that
// names it; one that loads is not the check's to refuse.
func TestCheckWarnsOfExpiringCertificate(t *testing.T) {
	cert, key := testutil.SelfSigned(t, "tunnel.test", time.Now().Add(-80*24*time.Hour), time.Now().Add(5*24*time.Hour+time.Hour))
	p := writeFile(t, "soon.json", fmt.Sprintf(`{"west": {"nm": "n"}, "wsts": {"sp": "wss://127.0.0.1:0",
		"tls_cert_file": %q, "tls_key_file": %q}}`, cert, key))
	code, _, stderr := runArgs(t, context.Background(), "check", "-c", p)
	want := "west: warning: wsts.tls_cert_file " + cert + `: the certificate for "tunnel.test" expires in 5 days`
	if code != exitOK || !strings.Contains(stderr, want) {
		t.Errorf("check: exit %d, stderr %q; want %d and %q", code, stderr, exitOK, want)
	}
}

// A token sent in the clear passes the check, with a warning that names
// it; so do a short one and a proxy variable that does not parse.
func TestCheckWarnsOfTokens(t *testing.T) {
	t.Setenv("WEST_TEST_TOKEN", "letmein")
	t.Setenv("HTTP_PROXY", "http://west:50%off@proxy.test:3128")
	p := writeFile(t, "clear.json", `{"west": {"nm": "n"}, "wsts": {"sp": "ws://127.0.0.1:0", "tokens": {"L": "env:WEST_TEST_TOKEN"}},
		"wstc": {"ws://203.0.113.7:9801": {"token": "env:WEST_TEST_TOKEN"}}}`)
	code, _, stderr := runArgs(t, context.Background(), "check", "-c", p)
	for _, want := range []string{
		`west: warning: wsts.tokens["L"] is 7 characters; use at least 16 random ones`,
		`west: warning: wstc["ws://203.0.113.7:9801"].token: sent in the clear at each handshake`,
		`west: warning: HTTP_PROXY does not parse as a proxy URL, so ws:// tunnel clients may go direct or fail`,
	} {
		if code != exitOK || !strings.Contains(stderr, want) {
			t.Errorf("check: exit %d, stderr %q; want %d and %q", code, stderr, exitOK, want)
		}
	}
}

// A tunnel server that anyone who reaches it may use passes the check,
// with the warning west logs as it starts; one on loopback, or with
// tokens, has none.
func TestCheckWarnsOfOpenTunnelServer(t *testing.T) {
	t.Setenv("WEST_TEST_TOKEN", "a-token-of-24-characters")
	for _, tc := range []struct {
		server string
		warn   bool
	}{
		{`{"sp": "ws://0.0.0.0:9801"}`, true},
		{`{"sp": "ws://127.0.0.1:9801"}`, false},
		{`{"sp": "ws://0.0.0.0:9801", "tokens": {"L": "env:WEST_TEST_TOKEN"}}`, false},
	} {
		p := writeFile(t, "open.json", `{"west": {"nm": "n"}, "wsts": `+tc.server+`}`)
		code, _, stderr := runArgs(t, context.Background(), "check", "-c", p)
		want := "west: warning: UNAUTHENTICATED TUNNEL SERVER on a non-loopback address"
		if code != exitOK || strings.Contains(stderr, want) != tc.warn {
			t.Errorf("check of %s: exit %d, stderr %q; want %d, and the warning: %v", tc.server, code, stderr, exitOK, tc.warn)
		}
	}
}

// TestRunLogsToFileAndStops: -O sends logs to a file, --input is noted and
// ignored, -d enables debug, and cancelling the context stops the node.
// TestArgparseForms: the command lines the seed's argparse read, west
// reads alike; what argparse refused, west refuses.
func TestArgparseForms(t *testing.T) {
	type want struct {
		config, output string
		verbose        bool
		debug          counter
	}
	for _, tc := range []struct {
		args []string
		want want
	}{
		{[]string{"-cconfig.json"}, want{config: "config.json"}},
		{[]string{"-c", "config.json", "-Olog.txt"}, want{config: "config.json", output: "log.txt"}},
		{[]string{"-vd", "-c", "config.json"}, want{config: "config.json", verbose: true, debug: 1}},
		{[]string{"-dv"}, want{verbose: true, debug: 1}},
		{[]string{"-vc", "config.json"}, want{config: "config.json", verbose: true}},
		{[]string{"-ddvcconfig.json"}, want{config: "config.json", verbose: true, debug: 2}},
		{[]string{"--verb", "--out", "log.txt", "--outp=b.txt"}, want{output: "b.txt", verbose: true}},
		{[]string{"-verbose", "-c=a.json", "--output", "-vd"}, want{config: "a.json", output: "-vd", verbose: true}},
		{[]string{"-c", "-vd"}, want{config: "-vd"}}, // a file named -vd
		{[]string{"-O", "-"}, want{output: "-"}},
	} {
		f, _, err := parseFlags("west", tc.args, &bytes.Buffer{})
		if err != nil {
			t.Errorf("west %q: %v", tc.args, err)
			continue
		}
		if got := (want{f.config, f.output, f.verbose, f.debug}); got != tc.want {
			t.Errorf("west %q: got %+v, want %+v", tc.args, got, tc.want)
		}
	}
	for _, args := range [][]string{
		{"--ver"},    // verbose or version
		{"-verb"},    // one dash: the letters v, e, r, b
		{"-vx"},      // no flag x
		{"-c"},       // no value
		{"---c=a"},   // three dashes
		{"--", "-v"}, // an argument
	} {
		if _, _, err := parseFlags("west", args, &bytes.Buffer{}); err == nil {
			t.Errorf("west %q: no error", args)
		}
	}
}

// TestArgparseOneLetterPrefix: after two dashes argparse reads only its
// long options, so "--d" is --debug cut short, not -d, and "--v" is
// --verbose or --version.
func TestArgparseOneLetterPrefix(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		debugN int
		help   bool
	}{
		{[]string{"--d", "3", "-c", "a.json"}, 3, false},
		{[]string{"--d=2", "-c", "a.json"}, 2, false},
		{[]string{"--h"}, 0, true},
	} {
		f, _, err := parseFlags("west", tc.args, &bytes.Buffer{})
		if err != nil {
			t.Errorf("west %q: %v", tc.args, err)
			continue
		}
		if f.debugN != tc.debugN || f.help != tc.help || f.debug != 0 {
			t.Errorf("west %q: debug level %d, -d %d, help %v; want level %d, help %v", tc.args, f.debugN, f.debug, f.help, tc.debugN, tc.help)
		}
	}
	var stderr bytes.Buffer
	if _, _, err := parseFlags("west", []string{"--v", "-c", "a.json"}, &stderr); err == nil || !strings.Contains(stderr.String(), "could match --verbose, --version") {
		t.Errorf("west --v: err %v, stderr %q; want ambiguous between --verbose and --version", err, stderr.String())
	}
}

// TestOutputDashIsStdout: "-O -" is the seed's default, standard output,
// not a file named "-".
func TestOutputDashIsStdout(t *testing.T) {
	cfg := writeFile(t, "c.json", `{"west": {"nm": "n"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`)
	t.Chdir(t.TempDir())
	var stdout testutil.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() { done <- run(ctx, []string{"-O", "-", "-c", cfg}, &stdout, &bytes.Buffer{}) }()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(stdout.String(), "msg=listening") {
		if time.Now().After(deadline) {
			t.Fatalf("no listening line on stdout:\n%s", stdout.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Fatalf("exit %d after cancel", code)
	}
	if _, err := os.Stat("-"); err == nil {
		t.Errorf(`west -O - wrote its logs to a file named "-"`)
	}
}

func TestRunLogsToFileAndStops(t *testing.T) {
	cfg := writeFile(t, "c.json", `{"west": {"nm": "n"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`)
	logFile := filepath.Join(t.TempDir(), "west.log")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		code, _, _ := runArgs(t, ctx, "-c", cfg, "-O", logFile, "-d", "-d", "--input", "x", "--log-format", "json")
		done <- code
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(logFile)
		if strings.Contains(string(b), `"msg":"listening"`) {
			if !strings.Contains(string(b), "--input is accepted") || !strings.Contains(string(b), `"level":"DEBUG"`) {
				t.Errorf("log lacks the --input notice or debug lines:\n%s", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no listening line in the log file:\n%s", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("exit %d after cancel", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("west did not stop")
	}
}

func TestTakenPortIsRuntimeError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := writeFile(t, "c.json", fmt.Sprintf(`{"west": {"nm": "n"}, "wsts": {"sp": "ws://%s"}}`, ln.Addr()))
	code, _, stderr := runArgs(t, context.Background(), "-c", cfg)
	if code != exitRuntime || !strings.Contains(stderr, ln.Addr().String()) {
		t.Fatalf("exit %d, stderr %q; want %d naming %s", code, stderr, exitRuntime, ln.Addr())
	}
}

// TestCheckReadsSecrets: west check refuses a file whose tunnel tokens
// cannot be read, as starting (and a reload) does: the systemd unit's
// ExecReload runs west check to fail a bad reload visibly, and the
// README says check loads what the file names "as starting does".
func TestCheckReadsSecrets(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.token")
	t.Setenv("WEST_TEST_UNSET_TOKEN", "")
	os.Unsetenv("WEST_TEST_UNSET_TOKEN")
	for _, tc := range []struct{ conf, says string }{
		{fmt.Sprintf(`{"west": {"nm": "n"}, "wsts": {"sp": "ws://127.0.0.1:0",
			"tokens": {"L": "file:%s"}}}`, missing), missing},
		{`{"west": {"nm": "n"}, "wsts": {"sp": "ws://127.0.0.1:0",
			"tokens": {"L": "env:WEST_TEST_UNSET_TOKEN"}}}`, "WEST_TEST_UNSET_TOKEN"},
		{fmt.Sprintf(`{"west": {"nm": "n"}, "wstc": {"ws://127.0.0.1:9": {"token": "file:%s"}}}`, missing), missing},
	} {
		p := writeFile(t, "tokens.json", tc.conf)
		code, _, stderr := runArgs(t, context.Background(), "check", "-c", p)
		if code != exitCheckFailed || !strings.Contains(stderr, tc.says) {
			t.Errorf("check of %s: exit %d, stderr %q; want %d naming %s", tc.conf, code, stderr, exitCheckFailed, tc.says)
		}
	}
}

// TestHelpGoesToStdout: -h and --help print the usage on standard output
// and exit 0, as the seed's argparse does (and GNU tools), so that
// "west --help | less" shows it; a usage error still prints it on
// standard error.
func TestHelpGoesToStdout(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"check", "--help"}, {"-vh"}} {
		code, stdout, stderr := runArgs(t, context.Background(), args...)
		if code != exitOK || !strings.Contains(stdout, "usage: west") || stderr != "" {
			t.Errorf("west %q: exit %d, stdout %q, stderr %q; want %d and the usage on stdout alone", args, code, stdout, stderr, exitOK)
		}
	}
	code, stdout, stderr := runArgs(t, context.Background(), "--bogus")
	if code != exitConfig || stdout != "" || !strings.Contains(stderr, "usage: west") {
		t.Errorf("west --bogus: exit %d, stdout %q, stderr %q; want %d and the usage on stderr", code, stdout, stderr, exitConfig)
	}
}

// Short tokens are warned of in the order of their names, as every other
// list west check prints: the gate read them in the map's order, which
// changes from run to run.
func TestCheckWarnsOfShortTokensInOrder(t *testing.T) {
	t.Setenv("WEST_TEST_TOKEN", "letmein")
	names := []string{"a", "b", "c", "d", "e", "f"}
	var tokens, want []string
	for _, n := range names {
		tokens = append(tokens, fmt.Sprintf("%q: \"env:WEST_TEST_TOKEN\"", n))
		want = append(want, fmt.Sprintf("west: warning: wsts.tokens[%q] is 7 characters", n))
	}
	p := writeFile(t, "short.json", `{"west": {"nm": "n"}, "wsts": {"sp": "ws://127.0.0.1:0", "tokens": {`+strings.Join(tokens, ", ")+`}}}`)
	for range 5 {
		code, _, stderr := runArgs(t, context.Background(), "check", "-c", p)
		var got []string
		for _, line := range strings.Split(stderr, "\n") {
			if strings.Contains(line, " is 7 characters") {
				got = append(got, line[:strings.Index(line, " characters")+len(" characters")])
			}
		}
		if code != exitOK || strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("check: exit %d, short-token warnings\n%s\nwant, in order,\n%s", code, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

// TestFileErrorsNameTheConfig: an error in a file or secret the config
// names (a certificate, a token) says which config named it, as the
// config's own errors do, both at start and in west check.
func TestFileErrorsNameTheConfig(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.token")
	p := writeFile(t, "tokens.json", fmt.Sprintf(`{"west": {"nm": "n"}, "wsts": {"sp": "ws://127.0.0.1:0",
		"tokens": {"L": "file:%s"}}}`, missing))
	want := fmt.Sprintf(`west: config %s: wsts.tokens["L"]: `, p)
	if code, _, stderr := runArgs(t, context.Background(), "-c", p); code != exitConfig || !strings.HasPrefix(stderr, want) {
		t.Errorf("west -c: exit %d, stderr %q; want %d starting %q", code, stderr, exitConfig, want)
	}
	if code, _, stderr := runArgs(t, context.Background(), "check", "-c", p); code != exitCheckFailed || !strings.HasPrefix(stderr, want) {
		t.Errorf("west check: exit %d, stderr %q; want %d starting %q", code, stderr, exitCheckFailed, want)
	}
	tls := writeFile(t, "tls.json", fmt.Sprintf(`{"west": {"nm": "n"}, "wsts": {"sp": "wss://127.0.0.1:0",
		"tls_cert_file": %q, "tls_key_file": %q}}`, missing, missing))
	want = fmt.Sprintf(`west: config %s: wsts.tls_cert_file`, tls)
	if code, _, stderr := runArgs(t, context.Background(), "check", "-c", tls); code != exitCheckFailed || !strings.HasPrefix(stderr, want) {
		t.Errorf("west check: exit %d, stderr %q; want %d starting %q", code, stderr, exitCheckFailed, want)
	}
}
