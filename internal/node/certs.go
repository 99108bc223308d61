package node

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"time"

	"github.com/west-tunnel/west/internal/config"
	"github.com/west-tunnel/west/internal/control"
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
	for _, pc := range presentedCerts(cfg) {
		c, err := leafCert(pc.file)
		if err != nil {
			continue
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
			continue
		}
		out = append(out, fmt.Sprintf("%s %s: the certificate for %q %s", pc.key, pc.file, c.Subject.CommonName, problem))
	}
	return out
}

// presentedCert is a certificate file cfg has west present, with the
// config key that names it.
type presentedCert struct{ key, file string }

// presentedCerts lists the certificates cfg has west present: the wss://
// tunnel server's, and each tunnel client's.
func presentedCerts(cfg *config.Config) []presentedCert {
	var out []presentedCert
	if s := cfg.Server; s != nil && s.URL.Scheme == "wss" && s.TLSCertFile != "" {
		out = append(out, presentedCert{"wsts.tls_cert_file", s.TLSCertFile})
	}
	for _, c := range cfg.Clients {
		if c.CertFile != "" {
			out = append(out, presentedCert{fmt.Sprintf("wstc[%q].cert_file", c.URL.String()), c.CertFile})
		}
	}
	return out
}

// recordCerts exports when each certificate cfg presents expires
// (west_certificate_expiry_timestamp_seconds), as loaded now, at start or
// at a reload: CertWarnings speaks only then.
func (n *Node) recordCerts(cfg *config.Config) {
	var certs []control.CertInForce
	for _, pc := range presentedCerts(cfg) {
		if c, err := leafCert(pc.file); err == nil {
			certs = append(certs, control.CertInForce{Key: pc.key, File: pc.file, NotAfter: c.NotAfter})
		}
	}
	n.metrics.CertificatesInForce(certs)
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
