package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
)

// Render returns the configuration as the seed's control port shows it:
// the four objects under "--- west object ---" and the like, each as JSON
// with sorted keys, four-space indents and no space after ':', including
// the derived "addr" and "port" and the "wstc" entries implied by "ea".
// It is the normalized form that `west check` prints.
func (c *Config) Render() string {
	return RenderSections(c.RenderObjects())
}

// RenderObjects returns the four objects that Render prints, for a caller
// that adds keys (live state, say) before passing them to RenderSections.
// Each call returns fresh maps.
func (c *Config) RenderObjects() (west, wsts, wstc, proxy map[string]any) {
	west = map[string]any{"nm": c.West.Name}
	if c.West.ControlAddr != "" {
		west["cp"] = c.West.ControlAddr
		addAddr(west, c.West.ControlAddr)
	}
	if len(c.West.ControlACL) > 0 {
		west["control_ca"] = list(c.West.ControlACL)
	}
	if len(c.West.DialAllow) > 0 {
		west["dial_allow"] = list(c.West.DialAllow)
	}
	putDuration(west, "keepalive", c.West.KeepAlive)
	putDuration(west, "dead_after", c.West.DeadAfter)
	putDuration(west, "shutdown_grace", c.West.ShutdownGrace)
	if c.West.StreamWindow != 0 {
		west["stream_window"] = formatSize(c.West.StreamWindow)
	}

	wsts = map[string]any{}
	if s := c.Server; s != nil {
		wsts["sp"] = s.URL.String()
		addAddr(wsts, s.Addr)
		if len(s.ACL) > 0 {
			wsts["ca"] = list(s.ACL)
		}
		putString(wsts, "tls_cert_file", s.TLSCertFile)
		putString(wsts, "tls_key_file", s.TLSKeyFile)
		putString(wsts, "client_ca_file", s.ClientCAFile)
		if s.CertNames {
			wsts["cert_names"] = "yes"
		}
		if len(s.Tokens) > 0 {
			tokens := map[string]any{}
			for name, sec := range s.Tokens {
				tokens[name] = string(sec) // where the secret is, never the secret
			}
			wsts["tokens"] = tokens
		}
		if s.MaxStreams > 0 {
			wsts["max_streams"] = s.MaxStreams
		}
	}

	wstc = map[string]any{}
	for _, cl := range c.Clients {
		ee := "yes"
		if !cl.Early {
			ee = "no"
		}
		o := map[string]any{"nm": cl.Name, "ee": ee}
		putString(o, "token", string(cl.Token))
		putString(o, "ca_file", cl.CAFile)
		putString(o, "server_name", cl.ServerName)
		putString(o, "cert_file", cl.CertFile)
		putString(o, "key_file", cl.KeyFile)
		if cl.MaxStreams > 0 {
			o["max_streams"] = cl.MaxStreams
		}
		wstc[cl.URL.String()] = o
	}

	proxy = map[string]any{}
	for _, p := range c.Proxies {
		o := map[string]any{}
		addAddr(o, p.Addr)
		if p.ServerURL != nil {
			o["ea"] = p.ServerURL.String()
		} else {
			o["en"] = p.Peer
		}
		if p.Timeout != 0 && p.Timeout != DefaultTimeout {
			o["timeout"] = p.Timeout.String()
		}
		for _, r := range p.Routes {
			ro := map[string]any{"ou": r.Outgoing.String()}
			if len(r.ACL) > 0 {
				ro["ca"] = list(r.ACL)
			}
			o[r.Path] = ro
		}
		if p.Target != nil {
			o["ou"] = p.Target.String()
		}
		if len(p.ACL) > 0 {
			o["ca"] = list(p.ACL)
		}
		putString(o, "tls_ca_file", p.TLSCAFile)
		if p.MaxConns > 0 {
			o["max_conns"] = p.MaxConns
		}
		if p.BriefErrors {
			o["error_detail"] = "no"
		}
		proxy[p.URL.String()] = o
	}
	return west, wsts, wstc, proxy
}

func putString(o map[string]any, key, v string) {
	if v != "" {
		o[key] = v
	}
}

func putDuration(o map[string]any, key string, d time.Duration) {
	if d != 0 {
		o[key] = d.String()
	}
}

// addAddr adds the seed's derived "addr" and "port" for a host:port.
func addAddr(o map[string]any, hostport string) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return
	}
	o["addr"] = host
	if n, err := strconv.Atoi(port); err == nil {
		o["port"] = n
	} else {
		o["port"] = port
	}
}

func list(s []string) []any {
	l := make([]any, len(s))
	for i, v := range s {
		l[i] = v
	}
	return l
}

// RenderSections prints the four objects in the seed's control port
// format. Values may be maps with string keys, slices, strings, numbers,
// booleans, nil, or anything else encoding/json can marshal.
func RenderSections(west, wsts, wstc, proxy map[string]any) string {
	var b strings.Builder
	for _, s := range []struct {
		name string
		obj  map[string]any
	}{{"west", west}, {"wsts", wsts}, {"wstc", wstc}, {"proxy", proxy}} {
		fmt.Fprintf(&b, "--- %s object ---\n", s.name)
		writeJSON(&b, s.obj, "")
		b.WriteByte('\n')
	}
	return b.String()
}

// writeJSON writes v as Python's json.dumps(v, indent=4, sort_keys=True,
// separators=(",", ":")) does, which is what the seed printed.
func writeJSON(b *strings.Builder, v any, indent string) {
	const step = "    "
	switch v := v.(type) {
	case map[string]any:
		if len(v) == 0 {
			b.WriteString("{}")
			return
		}
		b.WriteString("{\n")
		for i, k := range slices.Sorted(maps.Keys(v)) {
			if i > 0 {
				b.WriteString(",\n")
			}
			b.WriteString(indent + step)
			writeString(b, k)
			b.WriteByte(':')
			writeJSON(b, v[k], indent+step)
		}
		b.WriteString("\n" + indent + "}")
	case []any:
		if len(v) == 0 {
			b.WriteString("[]")
			return
		}
		b.WriteString("[\n")
		for i, e := range v {
			if i > 0 {
				b.WriteString(",\n")
			}
			b.WriteString(indent + step)
			writeJSON(b, e, indent+step)
		}
		b.WriteString("\n" + indent + "]")
	case string:
		writeString(b, v)
	case json.Number:
		b.WriteString(v.String())
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case int:
		b.WriteString(strconv.Itoa(v))
	default:
		// Anything else goes through encoding/json and back, so that its
		// maps and slices are laid out like the rest.
		data, err := json.Marshal(v)
		if err != nil {
			writeString(b, fmt.Sprint(v))
			return
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var x any
		if err := dec.Decode(&x); err != nil {
			writeString(b, fmt.Sprint(v))
			return
		}
		writeJSON(b, x, indent)
	}
}

// writeString writes s as a JSON string, leaving <, > and & as they are
// and writing every character past "~" as a \u escape, as Python's
// ensure_ascii does.
func writeString(b *strings.Builder, s string) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	for _, r := range strings.TrimSuffix(buf.String(), "\n") {
		switch {
		case r < 0x7f:
			b.WriteRune(r)
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(b, "\\u%04x\\u%04x", r1, r2)
		default:
			fmt.Fprintf(b, "\\u%04x", r)
		}
	}
}
