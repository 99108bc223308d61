package node

import (
	"fmt"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// alertRulesFile holds the alerting rules shipped for operators.
const alertRulesFile = "../../contrib/prometheus/west-alerts.yml"

// alertRule is what checkAlertRules reads of one rule: its expression and
// the labels its annotations print.
type alertRule struct {
	name        string
	expr        string
	annotations []string // label names of {{ $labels.X }}
}

var (
	alertRe      = regexp.MustCompile(`^\s*- alert:\s*(\S+)`)
	exprRe       = regexp.MustCompile(`^(\s*)expr:\s*(.*)$`)
	labelsRefRe  = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)
	metricNameRe = regexp.MustCompile(`\b(?:west|process)_[a-z_]+`)
	selectorRe   = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}`)
	matcherRe    = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	clauseRe     = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	sampleRe     = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? `)
	sampleLblRe  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// parseAlertRules reads the rules of a Prometheus rule file written as
// west's is: "- alert:" opens a rule, and its "expr:" is on one line or a
// block ("|") of lines indented deeper than the key. A YAML parser would
// take a dependency for this one file.
func parseAlertRules(text string) []alertRule {
	var rules []alertRule
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if m := alertRe.FindStringSubmatch(line); m != nil {
			rules = append(rules, alertRule{name: m[1]})
			continue
		}
		if len(rules) == 0 {
			continue
		}
		r := &rules[len(rules)-1]
		if m := exprRe.FindStringSubmatch(line); m != nil {
			if v := strings.TrimSpace(m[2]); v != "|" && v != ">" {
				r.expr = v
				continue
			}
			var block []string
			for i+1 < len(lines) && (strings.TrimSpace(lines[i+1]) == "" ||
				len(lines[i+1])-len(strings.TrimLeft(lines[i+1], " ")) > len(m[1])) {
				i++
				block = append(block, strings.TrimSpace(lines[i]))
			}
			r.expr = strings.TrimSpace(strings.Join(block, " "))
			continue
		}
		for _, m := range labelsRefRe.FindAllStringSubmatch(line, -1) {
			r.annotations = append(r.annotations, m[1])
		}
	}
	return rules
}

// exported is what a /metrics body holds: each sample name with the
// label names it carries, and every label="value" pair.
type exported struct {
	labels map[string]map[string]bool
	pairs  map[string]bool
}

func parseExported(body string) exported {
	e := exported{labels: make(map[string]map[string]bool), pairs: make(map[string]bool)}
	for line := range strings.SplitSeq(body, "\n") {
		m := sampleRe.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if e.labels[m[1]] == nil {
			e.labels[m[1]] = make(map[string]bool)
		}
		for _, l := range sampleLblRe.FindAllStringSubmatch(m[2], -1) {
			e.labels[m[1]][l[1]] = true
			e.pairs[l[1]+`="`+l[2]+`"`] = true
		}
	}
	return e
}

// targetLabels are those Prometheus adds to every series it scrapes.
var targetLabels = map[string]bool{"instance": true, "job": true}

// checkAlertRules returns what the rules use that the exported metrics
// lack: a west_ or process_ metric name, a label in a selector or a
// by/without/on/ignoring/group clause, the value an equality matcher
// asks for, or a label an annotation prints that the expression does
// not keep.
func checkAlertRules(rules []alertRule, e exported) []string {
	var problems []string
	for _, r := range rules {
		if r.expr == "" {
			problems = append(problems, fmt.Sprintf("%s: no expr", r.name))
			continue
		}
		// The labels the rule's metrics carry, and those of its selectors.
		have := make(map[string]bool)
		for l := range targetLabels {
			have[l] = true
		}
		for _, name := range metricNameRe.FindAllString(r.expr, -1) {
			ls, ok := e.labels[name]
			if !ok {
				problems = append(problems, fmt.Sprintf("%s: metric %s is not exported", r.name, name))
			}
			for l := range ls {
				have[l] = true
			}
		}
		for _, sel := range selectorRe.FindAllStringSubmatch(r.expr, -1) {
			for _, m := range matcherRe.FindAllStringSubmatch(sel[2], -1) {
				label, op, value := m[1], m[2], m[3]
				switch {
				case targetLabels[label]:
				case !e.labels[sel[1]][label]:
					problems = append(problems, fmt.Sprintf("%s: %s has no label %s", r.name, sel[1], label))
				case op == "=" && !e.pairs[label+`="`+value+`"`]:
					problems = append(problems, fmt.Sprintf("%s: no series has %s=%q", r.name, label, value))
				}
			}
		}
		var kept []string // the labels of by (...) clauses, which alone survive them
		for _, c := range clauseRe.FindAllStringSubmatch(r.expr, -1) {
			for l := range strings.SplitSeq(c[2], ",") {
				l = strings.TrimSpace(l)
				if l == "" {
					continue
				}
				if !have[l] {
					problems = append(problems, fmt.Sprintf("%s: %s (%s): no metric of the rule has label %s", r.name, c[1], c[2], l))
				}
				if c[1] == "by" {
					kept = append(kept, l)
				}
			}
		}
		for _, l := range r.annotations {
			if !have[l] || kept != nil && !slices.Contains(kept, l) {
				problems = append(problems, fmt.Sprintf("%s: annotation prints $labels.%s, which its expression does not keep", r.name, l))
			}
		}
	}
	return problems
}

// TestAlertRulesMatchMetrics holds contrib/prometheus/west-alerts.yml to
// what a running west exports: every metric and label its rules use is
// in /metrics of G and L of use case 2 once L has a tunnel up, requests
// have passed and failed, and a stream has failed on each side. A
// metric renamed or a label dropped fails it, as it would silence the
// rule.
func TestAlertRulesMatchMetrics(t *testing.T) {
	text, err := os.ReadFile(alertRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	rules := parseAlertRules(string(text))
	if len(rules) == 0 {
		t.Fatalf("no rules in %s", alertRulesFile)
	}

	checkNoNewGoroutines(t)
	be := backend(t)
	g, _ := runNode(t, fmt.Sprintf(`{
		"west": {"nm": "ws://alerts.G", "cp": "127.0.0.1:0"},
		"wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://127.0.0.1:0": {"en": "ws://alerts.L",
			"/pa": {"ou": "%s/a"},
			"/dead": {"ou": "http://127.0.0.1:1/"}}}
	}`, be.URL), Options{})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	base := proxyURL(t, g)
	// Before L connects: peer_down on G.
	if code, _ := fetch(t, client, base+"/pa"); code != 503 {
		t.Fatalf("request before L connects: %d, want 503", code)
	}
	// And a lazy client that presents a certificate, for its expiry.
	cert, key := testutil.SelfSigned(t, "alerts.L", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	l, _ := runNode(t, fmt.Sprintf(`{
		"west": {"nm": "ws://alerts.L", "cp": "127.0.0.1:0"},
		"wstc": {"ws://%s": {}, "wss://127.0.0.1:9": {"ee": "no", "cert_file": %q, "key_file": %q}}
	}`, g.Addrs().Tunnel, cert, key), Options{})
	waitUp(t, g, "ws://alerts.L")
	if code, _ := fetch(t, client, base+"/pa"); code != 200 {
		t.Fatalf("request through the tunnel: %d, want 200", code)
	}
	// dial_failed on L, a 5xx on G.
	if code, _ := fetch(t, client, base+"/dead"); code != 502 {
		t.Fatalf("request to a dead target: %d, want 502", code)
	}

	var body strings.Builder
	for _, n := range []*Node{g, l} {
		code, b := fetch(t, client, "http://"+n.Addrs().Control+"/metrics")
		if code != 200 {
			t.Fatalf("/metrics: %d", code)
		}
		body.WriteString(b)
	}
	e := parseExported(body.String())
	if runtime.GOOS != "linux" {
		// The process collector exports descriptor counts on Linux alone.
		for name := range e.labels {
			if strings.HasPrefix(name, "process_") {
				delete(e.labels, name)
			}
		}
		e.labels["process_open_fds"], e.labels["process_max_fds"] = map[string]bool{}, map[string]bool{}
	}
	for _, p := range checkAlertRules(rules, e) {
		t.Errorf("%s: %s", alertRulesFile, p)
	}

	// The check itself finds what it is for.
	bogus := []alertRule{
		{name: "Name", expr: `rate(west_bogus_total[5m]) > 0`},
		{name: "Label", expr: `sum by (instance, bogus) (rate(west_requests_total[5m])) > 0`},
		{name: "Matcher", expr: `west_requests_total{bogus="x"}`},
		{name: "Value", expr: `west_requests_total{code_class="5XX"}`},
		{name: "Annotation", expr: `sum by (instance) (west_tunnels_up) > 0`, annotations: []string{"peer"}},
	}
	if got := checkAlertRules(bogus, e); len(got) != len(bogus) {
		t.Errorf("bogus rules: %d problems, want %d:\n%s", len(got), len(bogus), strings.Join(got, "\n"))
	}
}
