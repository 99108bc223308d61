package node

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"time"

	"github.com/west-tunnel/west/internal/config"
)

// certSoon is how far ahead a certificate's end is worth a warning: time
// to renew it before the tunnels it carries are refused.
const certSoon = 14 * 24 * time.Hour

// CertWarnings names the certificates cfg presents (the tunnel server's,
// and each tunnel client's) that have expired, are not valid yet, or
// expire within 14 days of now. A file that does not load is not for
// here: starting, reloading and `west check` refuse it.
func CertWarnings(cfg *config.Config, now time.Time) []string {
	var out []string
	check := func(key, file string) {
		if file == "" {
			return
		}
		c, err := leafCert(file)
		if err != nil {
			return
		}
		var problem string
		switch {
		case now.After(c.NotAfter):
			problem = "expired on " + c.NotAfter.UTC().Format(time.DateTime+" MST") + "; peers refuse it"
		case now.Before(c.NotBefore):
			problem = "is not valid until " + c.NotBefore.UTC().Format(time.DateTime+" MST") + "; peers refuse it until then"
		case c.NotAfter.Sub(now) < certSoon:
			problem = fmt.Sprintf("expires in %s, on %s; peers will refuse it from then: renew it", daysLeft(c.NotAfter.Sub(now)), c.NotAfter.UTC().Format(time.DateTime+" MST"))
		default:
			return
		}
		out = append(out, fmt.Sprintf("%s %s: the certificate for %q %s", key, file, c.Subject.CommonName, problem))
	}
	if s := cfg.Server; s != nil && s.URL.Scheme == "wss" {
		check("wsts.tls_cert_file", s.TLSCertFile)
	}
	for _, c := range cfg.Clients {
		check(fmt.Sprintf("wstc[%q].cert_file", c.URL.String()), c.CertFile)
	}
	return out
}

// leafCert parses the first certificate of a PEM file: the one presented.
func leafCert(file string) (*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, fmt.Errorf("%s holds no PEM certificate", file)
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

func daysLeft(d time.Duration) string {
	if d < 48*time.Hour {
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
}
