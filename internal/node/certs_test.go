package node

import (
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/config"
	"github.com/west-tunnel/west/internal/testutil"
)

func TestCertWarnings(t *testing.T) {
	now := time.Now()
	day := 24 * time.Hour
	expired, expiredKey := testutil.SelfSigned(t, "expired", now.Add(-90*day), now.Add(-day))
	early, earlyKey := testutil.SelfSigned(t, "early", now.Add(day), now.Add(90*day))
	soon, soonKey := testutil.SelfSigned(t, "soon", now.Add(-60*day), now.Add(3*day+time.Hour))
	fine, fineKey := testutil.SelfSigned(t, "fine", now.Add(-day), now.Add(60*day))
	cfg, err := config.Parse(fmt.Appendf(nil, `{"west": {"nm": "n"},
		"wsts": {"sp": "wss://127.0.0.1:0", "tls_cert_file": %q, "tls_key_file": %q},
		"wstc": {
			"wss://a.test:1": {"cert_file": %q, "key_file": %q},
			"wss://b.test:1": {"cert_file": %q, "key_file": %q},
			"wss://c.test:1": {"cert_file": %q, "key_file": %q}}}`,
		expired, expiredKey, early, earlyKey, soon, soonKey, fine, fineKey))
	if err != nil {
		t.Fatal(err)
	}
	got := CertWarnings(cfg, now)
	want := []struct{ start, end string }{
		{`wsts.tls_cert_file ` + expired + `: the certificate for "expired" expired on `, "; peers refuse it"},
		{`wstc["wss://a.test:1"].cert_file ` + early + `: the certificate for "early" is not valid until `, "; peers refuse it until then"},
		{`wstc["wss://b.test:1"].cert_file ` + soon + `: the certificate for "soon" expires in 3 days, on `, "; peers will refuse it from then: renew it"},
	}
	if len(got) != len(want) {
		t.Fatalf("warnings:\n%s\nwant %d, none for the certificate valid 60 days more", strings.Join(got, "\n"), len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w.start) || !strings.HasSuffix(got[i], w.end) {
			t.Errorf("warning %d: %s\nwant it to start %s and end %s", i, got[i], w.start, w.end)
		}
	}

	// A node built on it says so in its log, as it starts.
	var log testutil.Buffer
	if _, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(&log, nil))}); err != nil {
		t.Fatal(err)
	}
	if out := log.String(); strings.Count(out, "level=WARN msg=\"certificate ") != 3 {
		t.Errorf("node log:\n%s\nwant the three warnings", out)
	}
}

// TestCertificateExpiryMetric: /metrics says when each certificate west
// presents expires, as loaded at start and at each reload, so that an
// alert sees the end coming however long west runs; CertWarnings speaks
// only at start and reload. A certificate renewed on disk shows once a
// reload has loaded it, and one a reload takes away leaves.
func TestCertificateExpiryMetric(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	day := 24 * time.Hour
	server, serverKey := testutil.SelfSigned(t, "server", now.Add(-day), now.Add(30*day))
	client, clientKey := testutil.SelfSigned(t, "client", now.Add(-day), now.Add(40*day))
	conf := func(withClient bool) string {
		wstc := ""
		if withClient {
			wstc = fmt.Sprintf(`, "wstc": {"wss://127.0.0.1:9": {"ee": "no", "cert_file": %q, "key_file": %q}}`, client, clientKey)
		}
		return fmt.Sprintf(`{"west": {"nm": "n", "cp": "127.0.0.1:0"},
			"wsts": {"sp": "wss://127.0.0.1:0", "tls_cert_file": %q, "tls_key_file": %q}%s}`, server, serverKey, wstc)
	}
	n := startNode(t, conf(true), Options{})
	httpClient := &http.Client{Timeout: 5 * time.Second}
	expiry := func(key string) (float64, int) {
		_, body := fetch(t, httpClient, "http://"+n.Addrs().Control+"/metrics")
		return metric(body, "west_certificate_expiry_timestamp_seconds", `key="`+key+`"`)
	}
	clientKeyLabel := `wstc[\"wss://127.0.0.1:9\"].cert_file` // as the text format escapes it
	for key, want := range map[string]time.Time{"wsts.tls_cert_file": now.Add(30 * day), clientKeyLabel: now.Add(40 * day)} {
		if got, k := expiry(key); k != 1 || got != float64(want.Unix()) {
			t.Errorf("%s: %v (%d series), want %d", key, got, k, want.Unix())
		}
	}

	// Renewed on disk: the metric follows once a reload loads it.
	renewed, renewedKey := testutil.SelfSigned(t, "server", now.Add(-day), now.Add(90*day))
	for from, to := range map[string]string{renewed: server, renewedKey: serverKey} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := expiry("wsts.tls_cert_file"); got != float64(now.Add(30*day).Unix()) {
		t.Errorf("renewed on disk, before a reload: %v, want the certificate in force, %d", got, now.Add(30*day).Unix())
	}
	if err := n.Reload(mustParse(t, conf(false))); err != nil {
		t.Fatal(err)
	}
	if got, k := expiry("wsts.tls_cert_file"); k != 1 || got != float64(now.Add(90*day).Unix()) {
		t.Errorf("after the reload: %v (%d series), want the renewed certificate's end, %d", got, k, now.Add(90*day).Unix())
	}
	if _, k := expiry(clientKeyLabel); k != 0 {
		t.Errorf("the tunnel client the reload removed still has %d series", k)
	}
}
