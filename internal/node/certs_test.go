package node

import (
	"fmt"
	"log/slog"
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
