//go:build linux

package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// row is one line of the main table.
type row struct {
	label  string
	metric string
	format func(float64) string
	target string               // the target for one hop
	meets  func(r float64) bool // whether ratio r meets it
}

func perSec(v float64) string { return fmt.Sprintf("%.0f", v) }
func mbps(v float64) string   { return fmt.Sprintf("%.0f MB/s", v) }
func micros(v float64) string {
	d := time.Duration(v)
	if d >= 10*time.Millisecond {
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.0f µs", float64(d)/1e3)
}

func (b *bench) report(w io.Writer) {
	o := b.opts
	fmt.Fprintf(w, "\nwestbench: %s\n", machine())
	load := "the built-in Go client"
	if o.wrk != "" {
		load = "wrk -t1 (whole seconds)"
	}
	fmt.Fprintf(w, "medians of %d rounds, direct and tunnelled alternating; requests/s rounds %s after %s warm-up, load from %s\n\n",
		o.rounds, o.duration, o.warmup, load)

	rows := []row{
		{"small GET, 1 conn", mRPS1, perSec, "", nil},
		{fmt.Sprintf("small GET, %d conns", o.conns), mRPSN, perSec, "≥ 0.35", func(r float64) bool { return r >= 0.35 }},
		{"latency p50, 1 conn", mP50, micros, "≤ 3×", func(r float64) bool { return r <= 3 }},
		{"latency p99, 1 conn", mP99, micros, "", nil},
		{"download " + formatSize(o.download), mDownload, mbps, "≥ 0.30", func(r float64) bool { return r >= 0.30 }},
		{"upload " + formatSize(o.upload), mUpload, mbps, "≥ 0.30", func(r float64) bool { return r >= 0.30 }},
	}
	if o.rtt > 0 {
		rows = append(rows, row{fmt.Sprintf("download %s, %s RTT", formatSize(o.rttDownload), o.rtt), mRTT, mbps, "≥ 0.80",
			func(r float64) bool { return r >= 0.80 }},
			row{"small GET p50 beside it", mRTTBusy, micros, "", nil})
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := "metric\tdirect\t"
	for _, p := range b.paths[1:] {
		header += fmt.Sprintf("%s\t%s/direct\t", p.name, p.name)
	}
	fmt.Fprintln(tw, header+"target (1 hop)\t")
	for _, r := range rows {
		res, ok := b.results[r.metric]
		if !ok {
			continue
		}
		direct := median(res["direct"])
		line := fmt.Sprintf("%s\t%s\t", r.label, r.format(direct))
		for _, p := range b.paths[1:] {
			vs, ok := res[p.name]
			if !ok || direct == 0 {
				line += "-\t-\t"
				continue
			}
			v := median(vs)
			ratio := fmt.Sprintf("%.2f", v/direct)
			if r.metric == mP50 || r.metric == mP99 || r.metric == mRTTBusy {
				ratio = fmt.Sprintf("%.2f×", v/direct)
			}
			line += fmt.Sprintf("%s\t%s\t", r.format(v), ratio)
		}
		target := r.target
		if r.meets != nil && direct > 0 {
			if r.meets(median(res["1 hop"]) / direct) {
				target += " met"
			} else {
				target += " MISSED"
			}
		}
		fmt.Fprintf(tw, "%s%s\t\n", line, target)
	}
	tw.Flush()
	b.reportFloor(w, rows)

	fmt.Fprintf(w, "\nwest processes (RSS from /proc/PID/status, CPU = utime+stime from /proc/PID/stat):\n\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "west\tRSS ready\tRSS peak\tRSS end\tCPU total\tCPU/req %d conns\tCPU/GiB down\tCPU/GiB up\t\n", o.conns)
	for _, wst := range b.wests {
		end, _ := procUsage(wst.pid())
		st := b.start[wst]
		per := func(metric, format string, scale float64) string {
			if b.work[wst][metric] == 0 {
				return "-"
			}
			return fmt.Sprintf(format, b.cpu[wst][metric]/b.work[wst][metric]*scale)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.1f s\t%s\t%s\t%s\t\n", wst.name,
			mib(st.RSS), mib(end.HWM), mib(end.RSS), end.CPU,
			per(mRPSN, "%.0f µs", 1e6), per(mDownload, "%.2f s", 1<<30), per(mUpload, "%.2f s", 1<<30))
	}
	tw.Flush()

	if len(b.idle) > 0 {
		n := int64(o.idleStreams)
		fmt.Fprintf(w, "\nidle memory: a fresh pair with a tcp:// listener, %d idle streams to a sink (targets: idle west < 15 MB, < 20 KiB per stream):\n\n", n)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "west\tRSS idle, tunnel up\tRSS with %d streams\tper stream\tRSS 3 s after closing\t\n", n)
		for _, r := range b.idle {
			per := float64(r.loaded.RSS-r.base.RSS) / float64(n) / 1024
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f KiB\t%s\t\n", r.name, mib(r.base.RSS), mib(r.loaded.RSS), per, mib(r.released.RSS))
		}
		tw.Flush()
	}
	if r := b.tunnels; r != nil {
		fmt.Fprintf(w, "\nidle tunnels: %d tunnel clients in one westbench process to a fresh tunnel server west, no streams:\n\n", r.n)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "side\tRSS before\tRSS with %d tunnels\tper tunnel\t\n", r.n)
		for _, side := range []struct {
			name         string
			before, with usage
		}{{"server (west)", r.server, r.serverWith}, {"clients", r.clients, r.clientsWith}} {
			per := float64(side.with.RSS-side.before.RSS) / float64(r.n) / 1024
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f KiB\t\n", side.name, mib(side.before.RSS), mib(side.with.RSS), per)
		}
		tw.Flush()
	}
	if len(b.notes) > 0 {
		fmt.Fprintf(w, "\nnotes:\n  %s\n", strings.Join(b.notes, "\n  "))
	}
}

// floorPath names the floor: two plain relays in the places of the wests.
const floorPath = "2 relays"

// reportFloor prints each one-hop path against the floor measured in the
// same rounds, if there is one: how much of what any two-process relay
// reaches on this machine the tunnel reaches.
func (b *bench) reportFloor(w io.Writer, rows []row) {
	var hops []*path
	for _, p := range b.paths[1:] {
		if strings.HasPrefix(p.name, "1 hop") {
			hops = append(hops, p)
		}
	}
	var lines []string
	for _, r := range rows {
		floor := median(b.results[r.metric][floorPath])
		if floor == 0 {
			continue
		}
		line := r.label + "\t"
		for _, p := range hops {
			v := median(b.results[r.metric][p.name])
			switch {
			case v == 0:
				line += "-\t"
			case r.metric == mP50 || r.metric == mP99:
				line += fmt.Sprintf("%.2f×\t", v/floor)
			default:
				line += fmt.Sprintf("%.2f\t", v/floor)
			}
		}
		lines = append(lines, line)
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "\nagainst the floor (%s) in the same rounds:\n\n", floorPath)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := "metric\t"
	for _, p := range hops {
		header += p.name + "/floor\t"
	}
	fmt.Fprintln(tw, header)
	for _, l := range lines {
		fmt.Fprintln(tw, l)
	}
	tw.Flush()
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
