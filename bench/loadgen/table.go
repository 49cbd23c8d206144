package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
)

// Row is one line of the raw results file bench/run.sh writes.
type Row struct {
	Kind string `json:"kind"` // "scenario", "feature", "streams", "followers" or "meta"

	// scenario
	Upstream string  `json:"upstream"` // mock latency, e.g. "0ms"
	Mode     string  `json:"mode"`     // "json" or "stream"
	Load     string  `json:"load"`     // e.g. "wrk -c50", "open 2000/s"
	Target   string  `json:"target"`   // "direct", "reverse_proxy", "llm_router" (feature: or a variant, "llm_router_cache")
	Main     *Result `json:"main"`
	TTFB     *Result `json:"ttfb"` // separate loadgen run for the time to first byte
	HWMKB    int64   `json:"hwm_kb"`
	CPUMS    int64   `json:"cpu_ms"`

	// feature (also Target, Main, HWMKB, CPUMS)
	Feature string `json:"feature"` // "budget", "rules", "cache-miss", "all-costs", "cache-hit"
	Variant string `json:"variant"` // "a" (without the feature) or "b" (with it)
	Body    string `json:"body"`    // request body file, e.g. "json.body"
	Script  string `json:"script"`  // wrk script, e.g. "unique.lua"
	Round   int    `json:"round"`

	// streams
	Streams *StreamsResult `json:"streams"`

	// followers
	Followers *FollowersResult `json:"followers"`

	// hedging (also Variant, Target, Main)
	UpstreamRequests int `json:"upstream_requests"`

	// meta
	Meta map[string]any `json:"meta"`
}

func cmdTable(args []string) error {
	fs := flag.NewFlagSet("table", flag.ExitOnError)
	in := fs.String("in", "", "raw results (JSON lines)")
	out := fs.String("out", "", "also write the table here")
	_ = fs.Parse(args)
	if *in == "" {
		return errors.New("-in is required")
	}
	f, err := os.Open(*in)
	if err != nil {
		return err
	}
	defer f.Close()
	var rows []Row
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var r Row
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return fmt.Errorf("%s: %v: %s", *in, err, line)
		}
		rows = append(rows, r)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	var sb strings.Builder
	render(&sb, rows)
	fmt.Print(sb.String())
	if *out != "" {
		return os.WriteFile(*out, []byte(sb.String()), 0o644)
	}
	return nil
}

func ms(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v < 1:
		return fmt.Sprintf("%.3f", v)
	case v < 100:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func signedMS(v float64) string {
	return fmt.Sprintf("%+.3f", v)
}

func mb(kb int64) string {
	if kb <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(kb)/1024)
}

type key struct{ upstream, mode, load, target string }

// ttfbOf is the first-byte figure of a scenario: from its own run when it has
// one (open loop), else from the separate loadgen run (closed loop).
func ttfbOf(r *Row) (p50, p99 float64) {
	if r.Main != nil && r.Main.TTFB50 > 0 {
		return r.Main.TTFB50, r.Main.TTFB99
	}
	if r.TTFB != nil {
		return r.TTFB.TTFB50, r.TTFB.TTFB99
	}
	return 0, 0
}

func render(w io.Writer, rows []Row) {
	// A pair's scenarios ran in rounds: byKey holds each target's median
	// round (by req/s), rounds all of them.
	byKey := map[key]*Row{}
	rounds := map[key][]*Row{}
	type group struct{ upstream, mode, load string }
	var groups []group
	seen := map[group]bool{}
	var streams, features, followers, hedging []*Row
	meta := map[string]any{}
	for i := range rows {
		r := &rows[i]
		switch r.Kind {
		case "meta":
			for k, v := range r.Meta {
				meta[k] = v
			}
		case "streams":
			streams = append(streams, r)
		case "followers":
			followers = append(followers, r)
		case "hedging":
			hedging = append(hedging, r)
		case "feature":
			features = append(features, r)
		default:
			k := key{r.Upstream, r.Mode, r.Load, r.Target}
			rounds[k] = append(rounds[k], r)
			g := group{r.Upstream, r.Mode, r.Load}
			if !seen[g] {
				seen[g] = true
				groups = append(groups, g)
			}
		}
	}

	for k, rs := range rounds {
		byKey[k] = medianRound(rs)
	}
	pairs := map[[3]string]*featureComparison{}
	for _, g := range groups {
		pairs[[3]string{g.upstream, g.mode, g.load}] = pairOf(rounds, g.upstream, g.mode, g.load)
	}

	fmt.Fprintf(w, "# caddy-llm-router benchmark\n\n")
	for _, k := range []string{"started", "duration", "host", "commit", "pinning", "loadavg_start", "loadavg_end", "note"} {
		if v, ok := meta[k]; ok {
			fmt.Fprintf(w, "- %s: %v\n", k, v)
		}
	}
	fmt.Fprintln(w)

	fmt.Fprintln(w, "## Throughput and latency")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| upstream | mode | load | target | req/s | p50 ms | p90 ms | p99 ms | TTFB p50 ms | TTFB p99 ms | errors | Caddy peak RSS MB | Caddy CPU µs/req |")
	fmt.Fprintln(w, "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, g := range groups {
		for _, t := range []string{"direct", "reverse_proxy", "llm_router"} {
			r := byKey[key{g.upstream, g.mode, g.load, t}]
			if r == nil || r.Main == nil {
				continue
			}
			m := r.Main
			t50, t99 := ttfbOf(r)
			cpu := "-"
			if r.CPUMS > 0 && m.Requests > 0 {
				cpu = fmt.Sprintf("%.0f", float64(r.CPUMS)*1000/float64(m.Requests))
			}
			errs := fmt.Sprint(m.Errors)
			if r.TTFB != nil && r.TTFB.Errors > 0 {
				errs += fmt.Sprintf(" (+%d)", r.TTFB.Errors)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s |\n",
				g.upstream, g.mode, g.load, t, m.RPS, ms(m.P50), ms(m.P90), ms(m.P99),
				ms(t50), ms(t99), errs, mb(r.HWMKB), cpu)
		}
	}
	fmt.Fprintln(w)

	fmt.Fprintln(w, "## llm_router vs reverse_proxy (added = minus direct, same upstream/mode/load)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| upstream | mode | load | llm_router / reverse_proxy req/s | per round | reverse_proxy +p50 ms | llm_router +p50 ms | reverse_proxy +TTFB p50 ms | llm_router +TTFB p50 ms | note |")
	fmt.Fprintln(w, "|---|---|---|---:|---|---:|---:|---:|---:|---|")
	for _, g := range groups {
		d := byKey[key{g.upstream, g.mode, g.load, "direct"}]
		rp := byKey[key{g.upstream, g.mode, g.load, "reverse_proxy"}]
		lr := byKey[key{g.upstream, g.mode, g.load, "llm_router"}]
		if rp == nil || lr == nil || rp.Main == nil || lr.Main == nil {
			continue
		}
		ratio, perRound := "-", "-"
		if p := pairs[[3]string{g.upstream, g.mode, g.load}]; strings.HasPrefix(g.load, "wrk") && p.ratio() > 0 {
			ratio, perRound = fmt.Sprintf("%.2f×", p.ratio()), p.roundRatios()
		}
		add := [4]string{"-", "-", "-", "-"}
		if d != nil && d.Main != nil {
			add[0] = signedMS(rp.Main.P50 - d.Main.P50)
			add[1] = signedMS(lr.Main.P50 - d.Main.P50)
			if g.mode == "stream" {
				dt, _ := ttfbOf(d)
				rt, _ := ttfbOf(rp)
				lt, _ := ttfbOf(lr)
				if dt > 0 && rt > 0 && lt > 0 {
					add[2] = signedMS(rt - dt)
					add[3] = signedMS(lt - dt)
				}
			}
		}
		note := ""
		if saturated(d, g.load) {
			note = "direct misses the offered rate: load side saturated, not a measure of the proxies"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			g.upstream, g.mode, g.load, ratio, perRound, add[0], add[1], add[2], add[3], note)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Under wrk, reverse_proxy and llm_router run in interleaved rounds (reverse_proxy first in odd rounds): the ratio")
	fmt.Fprintln(w, "is the geometric mean of the rounds' ratios, and the other figures (here and above) are each target's median round.")
	fmt.Fprintln(w, "Direct runs the mock on the load generator's CPU: under `wrk -c50` (and a saturated open loop) its latency")
	fmt.Fprintln(w, "is that CPU's queueing, so \"added\" over direct is meaningful only for `-c1` and unsaturated open loop.")
	fmt.Fprintln(w)

	comparisons := compareFeatures(features)
	renderFeatures(w, comparisons)

	if len(streams) > 0 {
		fmt.Fprintln(w, "## Concurrent open streams (mock -chunk-delay, each stream ~11 s)")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| target | streams | got first event | completed | errors | idle RSS MB | RSS all open MB | peak RSS MB | KB per stream (open − idle) |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, r := range streams {
			s := r.Streams
			if s == nil {
				continue
			}
			fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %s | %s | %s | %.1f |\n", r.Target, s.Streams, s.Opened,
				s.Completed, s.Errors, mb(s.BaselineKB), mb(s.OpenKB), mb(max(s.PeakKB, s.HWMKB)), s.KBPerStream)
		}
		fmt.Fprintln(w)
	}

	for _, r := range followers {
		f := r.Followers
		fmt.Fprintln(w, "## Single-flight followers (cache on, mock events 200 ms apart, 5 identical streams at once)")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| rounds | leaders (upstream requests) | followers | errors | leader first event p50 ms | follower first event p50 ms | p99 ms | follower lag behind its leader p50 ms | max ms | stream p50 ms |")
		fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		fmt.Fprintf(w, "| %d | %d | %d | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f |\n", f.Rounds, f.Leaders, f.Followers, f.Errors,
			f.LeaderTTFB50, f.FollowTTFB50, f.FollowTTFB99, f.LagP50, f.LagMax, f.StreamP50)
		fmt.Fprintln(w)
		fmt.Fprintln(w, "A follower relays its leader's events as they arrive: its first event comes with the leader's, not when the")
		fmt.Fprintln(w, "leader's stream (~2.2 s here) ends.")
		fmt.Fprintln(w)
	}

	if len(hedging) > 0 {
		fmt.Fprintln(w, "## Hedging (streams, 10 connections; the first deployment takes 1 s for 10 % of its first bytes, 20 ms otherwise)")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| hedging | requests | errors | TTFB p50 ms | p90 ms | p95 ms | p99 ms | upstream requests | extra upstream requests |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, r := range hedging {
			m := r.Main
			if m == nil {
				continue
			}
			extra := r.UpstreamRequests - m.Requests
			fmt.Fprintf(w, "| %s | %d | %d | %.2f | %.2f | %.2f | %.2f | %d | %d (%.1f %%) |\n", r.Variant, m.Requests, m.Errors,
				m.TTFB50, m.TTFB90, m.TTFB95, m.TTFB99, r.UpstreamRequests, extra, 100*float64(extra)/float64(max(m.Requests, 1)))
		}
		fmt.Fprintln(w)
	}

	renderTargets(w, byKey, rounds, pairs, streams, comparisons, followers)
}

// medianRound is the round of a scenario with the median req/s (the lower
// middle one of an even count).
func medianRound(rs []*Row) *Row {
	sorted := append([]*Row(nil), rs...)
	rps := func(r *Row) float64 {
		if r.Main == nil {
			return -1
		}
		return r.Main.RPS
	}
	sort.SliceStable(sorted, func(i, j int) bool { return rps(sorted[i]) < rps(sorted[j]) })
	return sorted[(len(sorted)-1)/2]
}

// pairOf is a pair's rounds as a comparison: A reverse_proxy, B llm_router.
func pairOf(rounds map[key][]*Row, upstream, mode, load string) *featureComparison {
	c := &featureComparison{runs: map[string]map[int]*Row{"a": {}, "b": {}}}
	for v, target := range map[string]string{"a": "reverse_proxy", "b": "llm_router"} {
		for _, r := range rounds[key{upstream, mode, load, target}] {
			if r.Main != nil {
				c.runs[v][r.Round] = r
			}
		}
	}
	return c
}

// medianTTFB is the median over a scenario's rounds of their p50 time to
// first byte (0: not measured).
func medianTTFB(rs []*Row) float64 {
	var xs []float64
	for _, r := range rs {
		if p50, _ := ttfbOf(r); p50 > 0 {
			xs = append(xs, p50)
		}
	}
	return median(xs)
}

func renderTargets(w io.Writer, byKey map[key]*Row, rounds map[key][]*Row, pairs map[[3]string]*featureComparison,
	streams []*Row, features []*featureComparison, followers []*Row) {
	fmt.Fprintln(w, "## Targets (llm_router)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | measured | verdict |")
	fmt.Fprintln(w, "|---|---|---|")
	get := func(mode, load, target string) *Result {
		if r := byKey[key{"0ms", mode, load, target}]; r != nil {
			return r.Main
		}
		return nil
	}
	verdict := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "**FAIL**"
	}
	line := func(name, measured string, ok, have bool) {
		if !have {
			fmt.Fprintf(w, "| %s | not measured | - |\n", name)
			return
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", name, measured, verdict(ok))
	}
	// throughput against reverse_proxy: the pair's geometric mean over rounds
	pairLine := func(name, upstream, mode, load string) {
		p := pairs[[3]string{upstream, mode, load}]
		have := p != nil && p.ratio() > 0
		measured := ""
		if have {
			measured = fmt.Sprintf("%.2f× (rounds: %s; medians %.0f vs %.0f req/s)", p.ratio(), p.roundRatios(), p.medianRPS("b"), p.medianRPS("a"))
		}
		line(name, measured, have && p.ratio() >= 1.0, have)
	}
	for _, mode := range []string{"json", "stream"} {
		pairLine(fmt.Sprintf("%s wrk -c50 throughput ≥ 1.0× reverse_proxy", mode), "0ms", mode, "wrk -c50")
	}
	pairLine("stream wrk -c1 throughput ≥ 1.0× reverse_proxy (every stream carries the usage chunk: see streams in the note)", "0ms", "stream", "wrk -c1")
	// an HTTPS upstream (HTTP/2), both through Caddy's HTTP transport
	for _, mode := range []string{"json", "stream"} {
		pairLine(fmt.Sprintf("HTTPS upstream (HTTP/2): %s wrk -c50 throughput ≥ 1.0× reverse_proxy", mode), "https", mode, "wrk -c50")
	}
	{
		// paired by round, as throughput is: the machine's time to first
		// event moves between rounds (a slower mode for minutes), and a
		// ratio of medians would be which target's rounds it hit
		a := medianTTFB(rounds[key{"https", "stream", "wrk -c1", "llm_router"}])
		b := medianTTFB(rounds[key{"https", "stream", "wrk -c1", "reverse_proxy"}])
		var ratio float64
		if p := pairs[[3]string{"https", "stream", "wrk -c1"}]; p != nil {
			ratio = p.ttfbRatio()
		}
		line("HTTPS upstream (HTTP/2): stream -c1 time to first event p50 ≤ reverse_proxy's (geometric mean of the rounds' ratios)",
			fmt.Sprintf("%.2f× (medians over rounds %.3f ms vs %.3f ms)", ratio, a, b), ratio <= 1.0, ratio > 0)
	}
	for _, mode := range []string{"json", "stream"} {
		d, rp, lr := get(mode, "wrk -c1", "direct"), get(mode, "wrk -c1", "reverse_proxy"), get(mode, "wrk -c1", "llm_router")
		have := d != nil && rp != nil && lr != nil
		var a, b float64
		if have {
			a, b = lr.P50-d.P50, rp.P50-d.P50
		}
		line(fmt.Sprintf("%s -c1 p50 added over direct ≤ reverse_proxy's", mode),
			fmt.Sprintf("%s ms vs %s ms", signedMS(a), signedMS(b)), a <= b, have)
	}
	{
		d, lr := byKey[key{"0ms", "stream", "wrk -c1", "direct"}], byKey[key{"0ms", "stream", "wrk -c1", "llm_router"}]
		var dt, lt float64
		if d != nil && lr != nil {
			dt, _ = ttfbOf(d)
			lt, _ = ttfbOf(lr)
		}
		have := dt > 0 && lt > 0
		line("TTFT (first event) added over direct ≤ 0.5 ms (stream, -c1, p50)",
			fmt.Sprintf("%s ms", signedMS(lt-dt)), lt-dt <= 0.5, have)
	}
	for _, mode := range []string{"json", "stream"} {
		const load = "open 2000/s"
		lr, d := get(mode, load, "llm_router"), byKey[key{"0ms", mode, load, "direct"}]
		name := fmt.Sprintf("%s open loop 2000 req/s: p99 ≤ 5 ms, no errors", mode)
		if lr == nil {
			line(name, "", false, false)
			continue
		}
		measured := fmt.Sprintf("p99 %s ms, %d errors", ms(lr.P99), lr.Errors)
		pass := lr.P99 <= 5 && lr.Errors == 0
		if d != nil && d.Main != nil {
			measured += fmt.Sprintf(" (direct: p99 %s ms, %d errors)", ms(d.Main.P99), d.Main.Errors)
			if !pass && (saturated(d, load) || d.Main.P99 > 5) {
				fmt.Fprintf(w, "| %s | %s | inconclusive: the direct baseline misses it too (load side) |\n", name, measured)
				continue
			}
		}
		line(name, measured, pass, true)
	}
	for _, mode := range []string{"json", "stream"} {
		r := byKey[key{"0ms", mode, "wrk -c50", "llm_router"}]
		have := r != nil && r.HWMKB > 0
		var kb int64
		if have {
			kb = r.HWMKB
		}
		line(fmt.Sprintf("%s wrk -c50 peak RSS ≤ 60 MB", mode), mb(kb)+" MB", float64(kb)/1024 <= 60, have)
	}
	for _, r := range streams {
		if r.Target != "llm_router" || r.Streams == nil {
			continue
		}
		s := r.Streams
		line(fmt.Sprintf("%d open streams: RSS ≤ 300 MB", s.Streams),
			fmt.Sprintf("%s MB (%.1f KB/stream), %d/%d open, %d errors", mb(s.OpenKB), s.KBPerStream, s.Opened, s.Streams, s.Errors),
			s.AllOpen && float64(s.OpenKB)/1024 <= 300 && s.Errors == 0, true)
	}
	for _, r := range followers {
		f := r.Followers
		line("single flight: one upstream request for 5 identical streams, each follower's first event within 50 ms of its leader's",
			fmt.Sprintf("%d leaders in %d rounds, lag max %.2f ms (p50 %.2f), %d errors", f.Leaders, f.Rounds, f.LagMax, f.LagP50, f.Errors),
			f.Leaders == f.Rounds && f.Followers == f.Rounds*(f.Streams-1) && f.LagMax <= 50 && f.Errors == 0, true)
	}
	for _, spec := range featureSpecs {
		var c *featureComparison
		for _, fc := range features {
			if fc.name == spec.name {
				c = fc
			}
		}
		have := c != nil && c.have()
		measured := ""
		if have {
			measured = fmt.Sprintf("%.2f× (rounds: %s; medians %.0f vs %.0f req/s)", c.ratio(), c.roundRatios(), c.medianRPS("b"), c.medianRPS("a"))
			if e := c.errors("a") + c.errors("b"); e > 0 {
				measured += fmt.Sprintf(", %d errors", e)
			}
		}
		line(spec.target, measured, have && c.pass(), have)
	}
	fmt.Fprintln(w)
}

// featureSpec is a feature's acceptance criterion: B/A req/s at least min.
type featureSpec struct {
	name      string
	criterion string // in the feature table
	target    string // in the targets table
	min       float64
}

var featureSpecs = []featureSpec{
	{"budget", "B/A ≥ 0.95", "budget + client_label: json wrk -c50 throughput ≥ 0.95× without them", 0.95},
	{"budget-stream", "B/A ≥ 0.95", "budget + client_label: stream wrk -c50 throughput ≥ 0.95× without them", 0.95},
	{"rules", "B/A ≥ 0.95", "routing rules (model auto): json wrk -c50 throughput ≥ 0.95× without rules", 0.95},
	{"cache-miss", "B/A ≥ 0.95", "cache miss: json wrk -c50 throughput ≥ 0.95× cache off", 0.95},
	{"all-costs", "B/A ≥ 0.95", "every cost feature (rules on model auto, budget + client_label, cache miss on unique questions): json wrk -c50 throughput ≥ 0.95× the plain router", 0.95},
	{"cache-hit", "B/A ≥ 3.0 (A = reverse_proxy)", "cache hit: json wrk -c50 throughput ≥ 3.0× reverse_proxy", 3.0},
	{"hedge-idle", "B/A ≥ 0.95", "hedging configured, never triggered: json wrk -c50 throughput ≥ 0.95× without it", 0.95},
	{"hedge-idle-stream", "B/A ≥ 0.95", "hedging configured, never triggered: stream wrk -c50 throughput ≥ 0.95× without it", 0.95},
}

// featureComparison is the interleaved runs of one feature: A without it,
// B with it, by round.
type featureComparison struct {
	name string
	spec *featureSpec // nil for a feature the table does not know
	runs map[string]map[int]*Row
	// target and requests of each variant, as the rows name them
	target, requests map[string]string
}

func compareFeatures(rows []*Row) []*featureComparison {
	byName := map[string]*featureComparison{}
	var order []string
	for _, r := range rows {
		if r.Main == nil || (r.Variant != "a" && r.Variant != "b") {
			continue
		}
		c := byName[r.Feature]
		if c == nil {
			c = &featureComparison{name: r.Feature, runs: map[string]map[int]*Row{"a": {}, "b": {}},
				target: map[string]string{}, requests: map[string]string{}}
			for i := range featureSpecs {
				if featureSpecs[i].name == r.Feature {
					c.spec = &featureSpecs[i]
				}
			}
			byName[r.Feature] = c
			order = append(order, r.Feature)
		}
		c.runs[r.Variant][r.Round] = r
		c.target[r.Variant] = r.Target
		c.requests[r.Variant] = requestsOf(r)
	}
	// Known features in the criteria's order, then the others as they came.
	var out []*featureComparison
	for _, spec := range featureSpecs {
		if c := byName[spec.name]; c != nil {
			out = append(out, c)
			delete(byName, spec.name)
		}
	}
	for _, name := range order {
		if c := byName[name]; c != nil {
			out = append(out, c)
		}
	}
	return out
}

// requestsOf describes a feature run's requests.
func requestsOf(r *Row) string {
	s := strings.TrimSuffix(r.Body, ".body")
	switch s {
	case "json_auto":
		s = `json, "model":"auto"`
	case "json":
		s = `json, "model":"simple_qa"`
	}
	if r.Script == "unique.lua" {
		s += ", every body different"
	}
	return s
}

func (c *featureComparison) have() bool { return len(c.runs["a"]) > 0 && len(c.runs["b"]) > 0 }

func (c *featureComparison) rounds() int { return max(len(c.runs["a"]), len(c.runs["b"])) }

func (c *featureComparison) medianRPS(v string) float64 {
	var xs []float64
	for _, r := range c.runs[v] {
		xs = append(xs, r.Main.RPS)
	}
	return median(xs)
}

// medianCPU is the median Caddy CPU µs per request (0: not measured).
func (c *featureComparison) medianCPU(v string) float64 {
	var xs []float64
	for _, r := range c.runs[v] {
		if r.CPUMS > 0 && r.Main.Requests > 0 {
			xs = append(xs, float64(r.CPUMS)*1000/float64(r.Main.Requests))
		}
	}
	return median(xs)
}

func (c *featureComparison) errors(v string) int {
	n := 0
	for _, r := range c.runs[v] {
		n += r.Main.Errors
	}
	return n
}

// ratio is the geometric mean of the rounds' B/A: each round's A and B ran
// next to each other (A,B then B,A), so a drift of the machine's speed
// cancels out, where a ratio of medians would keep it.
func (c *featureComparison) ratio() float64 {
	sum, n := 0.0, 0
	for round, a := range c.runs["a"] {
		if b := c.runs["b"][round]; b != nil && a.Main.RPS > 0 && b.Main.RPS > 0 {
			sum += math.Log(b.Main.RPS / a.Main.RPS)
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return math.Exp(sum / float64(n))
}

// ttfbRatio is ratio's geometric mean for the rounds' time to first event
// p50 (B/A; below 1, B is first sooner).
func (c *featureComparison) ttfbRatio() float64 {
	sum, n := 0.0, 0
	for round, a := range c.runs["a"] {
		b := c.runs["b"][round]
		if b == nil {
			continue
		}
		ta, _ := ttfbOf(a)
		tb, _ := ttfbOf(b)
		if ta > 0 && tb > 0 {
			sum += math.Log(tb / ta)
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return math.Exp(sum / float64(n))
}

// roundRatios is B/A of each round, in round order ("-" where one is missing).
func (c *featureComparison) roundRatios() string {
	var rounds []int
	seen := map[int]bool{}
	for _, v := range []string{"a", "b"} {
		for n := range c.runs[v] {
			if !seen[n] {
				seen[n] = true
				rounds = append(rounds, n)
			}
		}
	}
	sort.Ints(rounds)
	var parts []string
	for _, n := range rounds {
		a, b := c.runs["a"][n], c.runs["b"][n]
		if a == nil || b == nil || a.Main.RPS <= 0 {
			parts = append(parts, "-")
			continue
		}
		parts = append(parts, fmt.Sprintf("%.2f", b.Main.RPS/a.Main.RPS))
	}
	return strings.Join(parts, ", ")
}

func (c *featureComparison) pass() bool {
	return c.spec != nil && c.have() && c.ratio() >= c.spec.min && c.errors("a")+c.errors("b") == 0
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	sort.Float64s(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

func renderFeatures(w io.Writer, cs []*featureComparison) {
	if len(cs) == 0 {
		return
	}
	fmt.Fprintln(w, "## Feature overhead (JSON, wrk -c50, interleaved)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| feature | requests | A | B | rounds | A req/s | B req/s | B/A | B/A per round | A CPU µs/req | B CPU µs/req | errors A / B | criterion | verdict |")
	fmt.Fprintln(w, "|---|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|---|")
	cpu := func(v float64) string {
		if v <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f", v)
	}
	for _, c := range cs {
		req := c.requests["b"]
		if c.requests["a"] != "" && c.requests["a"] != req {
			req = c.requests["a"] + " / " + req
		}
		criterion, verdict := "-", "-"
		if c.spec != nil {
			criterion = c.spec.criterion
			switch {
			case !c.have():
				verdict = "not measured"
			case c.pass():
				verdict = "PASS"
			case c.errors("a")+c.errors("b") > 0 && c.ratio() >= c.spec.min:
				verdict = "**FAIL** (errors)"
			default:
				verdict = "**FAIL**"
			}
		}
		ratio := "-"
		if c.have() && c.ratio() > 0 {
			ratio = fmt.Sprintf("%.2f×", c.ratio())
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %d | %.0f | %.0f | %s | %s | %s | %s | %d / %d | %s | %s |\n",
			c.name, req, orDash(c.target["a"]), orDash(c.target["b"]), c.rounds(),
			c.medianRPS("a"), c.medianRPS("b"), ratio, c.roundRatios(),
			cpu(c.medianCPU("a")), cpu(c.medianCPU("b")), c.errors("a"), c.errors("b"), criterion, verdict)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Each round runs A and B next to each other (A, B in odd rounds, B, A in even ones), each with a fresh mock and Caddy,")
	fmt.Fprintln(w, "a warm-up, then the measured run. B/A is the geometric mean of the rounds' B/A, so that a drift of the machine's speed")
	fmt.Fprintln(w, "during the section cancels out; req/s and CPU are medians over the rounds. Run-to-run variance on a shared 2-core machine")
	fmt.Fprintln(w, "is about ±10 %: read a verdict near its threshold with the per-round ratios. cache-hit-ceiling is Caddy's own `respond`")
	fmt.Fprintln(w, "with the same answer: the most a cache hit served by any handler could reach.")
	fmt.Fprintln(w)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// saturated reports whether the direct run of an open-loop group fell short
// of the offered rate (or had errors): then the load generator and the mock
// (sharing a CPU) were the bottleneck, not the proxies.
func saturated(d *Row, load string) bool {
	var rate float64
	if _, err := fmt.Sscanf(load, "open %f/s", &rate); err != nil || d == nil || d.Main == nil {
		return false
	}
	return d.Main.RPS < 0.95*rate || d.Main.Errors > 0
}
