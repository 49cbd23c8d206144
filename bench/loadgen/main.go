// Command loadgen is the Go side of bench/run.sh: load generators that wrk
// cannot replace, plus the small helpers the script needs.
//
//	loadgen freeport [-n N]                       print N free 127.0.0.1 TCP ports
//	loadgen check   -url U -body F [-stream] [-wait D] [-expect-header 'Name: value']...
//	                                              one request must answer 200 (and, for
//	                                              a stream, end with data: [DONE]); retried
//	                                              until -wait has passed; the first answer
//	                                              must carry the -expect-header values
//	loadgen get     -url U                        GET U (e.g. the admin API's stats), print
//	                                              the body; fails unless 200
//	loadgen closed  -url U -body F -c N -d D [-stream]
//	                                              closed loop, N connections: latency and
//	                                              time to first body byte (first SSE event)
//	loadgen open    -url U -body F -rate R -d D [-stream]
//	                                              open loop at R req/s with vegeta's attacker
//	                                              (github.com/tsenart/vegeta/v12/lib); also
//	                                              records time to first body byte
//	loadgen streams -url U -body F -n N -pid P [-ramp D]
//	                                              open N concurrent streams, sample the VmRSS
//	                                              of process P while they are all open
//	loadgen followers -url U -body F [-n N] [-rounds R]
//	                                              R rounds of N identical streams at once on
//	                                              a cached route: the followers' first event
//	                                              against their leader's
//	loadgen table   -in rows.jsonl -out latest.md render the results table
//
// The request-sending subcommands take -header 'Name: value' (repeatable) to
// add request headers. Every measuring subcommand prints one JSON object on
// stdout.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen freeport|check|get|closed|open|followers|streams|table [flags]")
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "freeport":
		err = cmdFreeport(args)
	case "check":
		err = cmdCheck(args)
	case "get":
		err = cmdGet(args)
	case "closed":
		err = cmdClosed(args)
	case "open":
		err = cmdOpen(args)
	case "followers":
		err = cmdFollowers(args)
	case "streams":
		err = cmdStreams(args)
	case "table":
		err = cmdTable(args)
	default:
		err = fmt.Errorf("unknown subcommand %q", cmd)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

// ------------------------------------------------------------------ helpers

func cmdFreeport(args []string) error {
	fs := flag.NewFlagSet("freeport", flag.ExitOnError)
	n := fs.Int("n", 1, "how many ports")
	_ = fs.Parse(args)
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	for range *n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		lns = append(lns, ln)
		fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	}
	return nil
}

// headerList is a repeatable "Name: value" flag.
type headerList []string

func (h *headerList) String() string { return strings.Join(*h, ", ") }

func (h *headerList) Set(v string) error {
	name, _, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(name) == "" {
		return fmt.Errorf("want 'Name: value', got %q", v)
	}
	*h = append(*h, v)
	return nil
}

// each calls f with every header's name and value.
func (h headerList) each(f func(name, value string)) {
	for _, kv := range h {
		name, value, _ := strings.Cut(kv, ":")
		f(strings.TrimSpace(name), strings.TrimSpace(value))
	}
}

// reqFlags are the flags shared by the request-sending subcommands.
type reqFlags struct {
	url, bodyFile string
	stream        bool
	timeout       time.Duration
	headers       headerList
	body          []byte
}

func (r *reqFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.url, "url", "", "target URL")
	fs.StringVar(&r.bodyFile, "body", "", "file with the JSON request body (POST)")
	fs.BoolVar(&r.stream, "stream", false, "the response is an SSE stream: it must end with data: [DONE]")
	fs.DurationVar(&r.timeout, "timeout", 30*time.Second, "per-request timeout")
	fs.Var(&r.headers, "header", "add a request header, 'Name: value' (repeatable)")
}

// header is the request header every subcommand sends.
func (r *reqFlags) header() http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Authorization", "Bearer sk-bench-client")
	r.headers.each(h.Set)
	return h
}

func (r *reqFlags) load() error {
	if r.url == "" || r.bodyFile == "" {
		return errors.New("-url and -body are required")
	}
	b, err := os.ReadFile(r.bodyFile)
	if err != nil {
		return err
	}
	r.body = b
	return nil
}

func (r *reqFlags) newRequest(ctx context.Context) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(r.body))
	if err != nil {
		return nil, err
	}
	req.Header = r.header()
	return req, nil
}

func newTransport(maxConns int) *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: maxConns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
}

var doneMarker = []byte("data: [DONE]")

// bodyWatch wraps a response body: it records the time of the first non-empty
// read (the first byte of the body: for SSE, the first event) and whether the
// stream's end marker went by.
type bodyWatch struct {
	rc      io.ReadCloser
	start   time.Time
	first   time.Duration // 0 until the first byte
	tail    []byte        // last bytes seen, to find doneMarker across reads
	sawDone bool
	onClose func(*bodyWatch)
	closed  bool
}

func (b *bodyWatch) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		if b.first == 0 {
			b.first = max(time.Since(b.start), 1)
		}
		if !b.sawDone {
			buf := append(b.tail, p[:n]...)
			if bytes.Contains(buf, doneMarker) {
				b.sawDone = true
			}
			keep := min(len(buf), len(doneMarker)-1)
			b.tail = append(b.tail[:0], buf[len(buf)-keep:]...)
		}
	}
	return n, err
}

func (b *bodyWatch) Close() error {
	err := b.rc.Close()
	if !b.closed {
		b.closed = true
		if b.onClose != nil {
			b.onClose(b)
		}
	}
	return err
}

// ------------------------------------------------------------------ stats

type durs []time.Duration

func (d durs) pct(p float64) float64 { // milliseconds
	if len(d) == 0 {
		return 0
	}
	i := int(p/100*float64(len(d))+0.5) - 1
	i = min(max(i, 0), len(d)-1)
	return float64(d[i]) / float64(time.Millisecond)
}

func (d durs) sorted() durs {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d
}

// Result is what the measuring subcommands print (fields in ms).
type Result struct {
	Tool       string         `json:"tool"`
	Requests   int            `json:"requests"`
	Errors     int            `json:"errors"`
	ErrorKinds map[string]int `json:"error_kinds,omitempty"`
	DurationS  float64        `json:"duration_s"`
	RPS        float64        `json:"rps"`
	Rate       float64        `json:"rate,omitempty"`
	P50        float64        `json:"p50_ms"`
	P90        float64        `json:"p90_ms"`
	P99        float64        `json:"p99_ms"`
	Max        float64        `json:"max_ms"`
	TTFB50     float64        `json:"ttfb_p50_ms,omitempty"`
	TTFB90     float64        `json:"ttfb_p90_ms,omitempty"`
	TTFB95     float64        `json:"ttfb_p95_ms,omitempty"`
	TTFB99     float64        `json:"ttfb_p99_ms,omitempty"`
}

type collector struct {
	mu    sync.Mutex
	lat   durs
	ttfb  durs
	errs  map[string]int
	nerr  int
	total int
}

func newCollector() *collector { return &collector{errs: map[string]int{}} }

func (c *collector) ok(lat, ttfb time.Duration) {
	c.mu.Lock()
	c.total++
	c.lat = append(c.lat, lat)
	if ttfb > 0 {
		c.ttfb = append(c.ttfb, ttfb)
	}
	c.mu.Unlock()
}

func (c *collector) fail(kind string) {
	c.mu.Lock()
	c.total++
	c.nerr++
	if len(kind) > 80 {
		kind = kind[:80]
	}
	c.errs[kind]++
	c.mu.Unlock()
}

func (c *collector) result(tool string, elapsed time.Duration) Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	lat, ttfb := c.lat.sorted(), c.ttfb.sorted()
	r := Result{Tool: tool, Requests: c.total, Errors: c.nerr, DurationS: elapsed.Seconds(),
		P50: lat.pct(50), P90: lat.pct(90), P99: lat.pct(99), Max: lat.pct(100),
		TTFB50: ttfb.pct(50), TTFB90: ttfb.pct(90), TTFB95: ttfb.pct(95), TTFB99: ttfb.pct(99)}
	if len(c.errs) > 0 {
		r.ErrorKinds = c.errs
	}
	if elapsed > 0 {
		r.RPS = float64(len(c.lat)) / elapsed.Seconds()
	}
	return r
}

func printJSON(v any) error {
	return json.NewEncoder(os.Stdout).Encode(v)
}

// do sends one request and reads the whole answer; it returns the latency,
// the time to the first body byte, an error kind ("" if fine) and the
// response headers (nil without a response).
func do(ctx context.Context, client *http.Client, rf *reqFlags) (lat, ttfb time.Duration, kind string, hdr http.Header) {
	req, err := rf.newRequest(ctx)
	if err != nil {
		return 0, 0, err.Error(), nil
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, errKind(err), nil
	}
	w := &bodyWatch{rc: resp.Body, start: start}
	_, err = io.Copy(io.Discard, w)
	_ = w.Close()
	lat = time.Since(start)
	switch {
	case err != nil:
		return lat, w.first, errKind(err), resp.Header
	case resp.StatusCode != http.StatusOK:
		return lat, w.first, "status " + strconv.Itoa(resp.StatusCode), resp.Header
	case rf.stream && !w.sawDone:
		return lat, w.first, "stream without [DONE]", resp.Header
	}
	return lat, w.first, "", resp.Header
}

func errKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

// ------------------------------------------------------------------ check

func cmdCheck(args []string) error {
	fs := flag.NewFlagSet("check", flag.ExitOnError)
	var rf reqFlags
	rf.register(fs)
	wait := fs.Duration("wait", 10*time.Second, "keep retrying this long")
	var expect headerList
	fs.Var(&expect, "expect-header", "the first 200 answer must carry this response header, 'Name: value' (repeatable; not retried)")
	_ = fs.Parse(args)
	if err := rf.load(); err != nil {
		return err
	}
	client := &http.Client{Transport: newTransport(1), Timeout: 5 * time.Second}
	deadline := time.Now().Add(*wait)
	for {
		_, _, kind, hdr := do(context.Background(), client, &rf)
		if kind == "" {
			var bad []string
			expect.each(func(name, value string) {
				if got := hdr.Get(name); got != value {
					bad = append(bad, fmt.Sprintf("%s: %q, want %q", name, got, value))
				}
			})
			if len(bad) > 0 {
				return fmt.Errorf("%s: response header %s", rf.url, strings.Join(bad, "; "))
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s", rf.url, kind)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ------------------------------------------------------------------ get

func cmdGet(args []string) error {
	fs := flag.NewFlagSet("get", flag.ExitOnError)
	url := fs.String("url", "", "URL to GET")
	_ = fs.Parse(args)
	if *url == "" {
		return errors.New("-url is required")
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(*url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d: %s", *url, resp.StatusCode, bytes.TrimSpace(b))
	}
	_, err = os.Stdout.Write(b)
	return err
}

// ------------------------------------------------------------------ closed loop

func cmdClosed(args []string) error {
	fs := flag.NewFlagSet("closed", flag.ExitOnError)
	var rf reqFlags
	rf.register(fs)
	conns := fs.Int("c", 1, "connections (each a worker sending back to back)")
	dur := fs.Duration("d", 5*time.Second, "duration")
	_ = fs.Parse(args)
	if err := rf.load(); err != nil {
		return err
	}
	client := &http.Client{Transport: newTransport(*conns), Timeout: rf.timeout}
	col := newCollector()
	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for range *conns {
		wg.Go(func() {
			for ctx.Err() == nil {
				lat, ttfb, kind, _ := do(ctx, client, &rf)
				if ctx.Err() != nil && kind != "" {
					return // cut off by the end of the run
				}
				if kind != "" {
					col.fail(kind)
				} else {
					col.ok(lat, ttfb)
				}
			}
		})
	}
	wg.Wait()
	return printJSON(col.result("loadgen-closed", time.Since(start)))
}

// ------------------------------------------------------------------ open loop

// watchTransport records, per response, the time to the first body byte and
// whether a stream ended properly.
type watchTransport struct {
	rt        http.RoundTripper
	stream    bool
	mu        sync.Mutex
	ttfb      durs
	truncated int
}

func (t *watchTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.rt.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	ok := resp.StatusCode == http.StatusOK
	resp.Body = &bodyWatch{rc: resp.Body, start: start, onClose: func(b *bodyWatch) {
		if !ok {
			return
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		if b.first > 0 {
			t.ttfb = append(t.ttfb, b.first)
		}
		if t.stream && !b.sawDone {
			t.truncated++
		}
	}}
	return resp, nil
}

func cmdOpen(args []string) error {
	fs := flag.NewFlagSet("open", flag.ExitOnError)
	var rf reqFlags
	rf.register(fs)
	rate := fs.Int("rate", 500, "requests per second")
	dur := fs.Duration("d", 10*time.Second, "duration")
	_ = fs.Parse(args)
	if err := rf.load(); err != nil {
		return err
	}
	wt := &watchTransport{rt: newTransport(10000), stream: rf.stream}
	atk := vegeta.NewAttacker(
		vegeta.Client(&http.Client{Transport: wt}),
		vegeta.Timeout(rf.timeout),
		vegeta.Workers(64),
		vegeta.MaxWorkers(20000),
		vegeta.MaxBody(0), // read and discard; bodies are checked by watchTransport
	)
	targeter := vegeta.NewStaticTargeter(vegeta.Target{Method: http.MethodPost, URL: rf.url, Body: rf.body, Header: rf.header()})
	pacer := vegeta.ConstantPacer{Freq: *rate, Per: time.Second}

	var m vegeta.Metrics
	col := newCollector()
	start := time.Now()
	for res := range atk.Attack(targeter, pacer, *dur, "bench") {
		m.Add(res)
		if res.Error != "" {
			col.fail(errKind(errors.New(res.Error)))
		} else {
			col.ok(res.Latency, 0)
		}
	}
	m.Close()
	elapsed := time.Since(start)
	r := col.result("vegeta", elapsed)
	wt.mu.Lock()
	ttfb := wt.ttfb.sorted()
	r.TTFB50, r.TTFB90, r.TTFB95, r.TTFB99 = ttfb.pct(50), ttfb.pct(90), ttfb.pct(95), ttfb.pct(99)
	if wt.truncated > 0 {
		r.Errors += wt.truncated
		if r.ErrorKinds == nil {
			r.ErrorKinds = map[string]int{}
		}
		r.ErrorKinds["stream without [DONE]"] += wt.truncated
	}
	wt.mu.Unlock()
	r.Rate = m.Rate
	// vegeta's throughput: successful requests over attack time plus the
	// wait for the last answers; truncated streams do not count.
	if secs := (m.Duration + m.Wait).Seconds(); secs > 0 {
		r.RPS = float64(r.Requests-r.Errors) / secs
	}
	return printJSON(r)
}

// ------------------------------------------------------------------ open streams

// StreamsResult is printed by the streams subcommand.
type StreamsResult struct {
	Streams      int            `json:"streams"`
	Opened       int            `json:"opened"` // got their first event
	AllOpen      bool           `json:"all_open"`
	Completed    int            `json:"completed"`
	Errors       int            `json:"errors"`
	ErrorKinds   map[string]int `json:"error_kinds,omitempty"`
	BaselineKB   int64          `json:"baseline_rss_kb"`
	OpenKB       int64          `json:"open_rss_kb"` // max VmRSS while all streams were open
	PeakKB       int64          `json:"peak_rss_kb"` // max VmRSS sampled during the run
	HWMKB        int64          `json:"hwm_kb"`      // VmHWM at the end
	KBPerStream  float64        `json:"kb_per_stream"`
	OpenAfterS   float64        `json:"open_after_s"`
	TTFB50       float64        `json:"ttfb_p50_ms"`
	TTFB99       float64        `json:"ttfb_p99_ms"`
	StreamSecs50 float64        `json:"stream_p50_s"`
}

func procStatusKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

func cmdStreams(args []string) error {
	fs := flag.NewFlagSet("streams", flag.ExitOnError)
	var rf reqFlags
	rf.register(fs)
	n := fs.Int("n", 5000, "concurrent streams")
	pid := fs.Int("pid", 0, "process whose VmRSS is sampled (Caddy)")
	ramp := fs.Duration("ramp", 2*time.Second, "spread the stream openings over this long")
	_ = fs.Parse(args)
	if err := rf.load(); err != nil {
		return err
	}
	if *pid <= 0 {
		return errors.New("-pid is required")
	}
	base, err := procStatusKB(*pid, "VmRSS")
	if err != nil {
		return err
	}
	res := StreamsResult{Streams: *n, BaselineKB: base}

	client := &http.Client{Transport: newTransport(*n), Timeout: rf.timeout}
	var opened atomic.Int64
	allOpen := make(chan struct{})
	col := newCollector()
	var wg sync.WaitGroup
	start := time.Now()
	for i := range *n {
		time.Sleep(time.Until(start.Add(*ramp * time.Duration(i) / time.Duration(*n))))
		wg.Go(func() {
			req, err := rf.newRequest(context.Background())
			if err != nil {
				col.fail(err.Error())
				return
			}
			t0 := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				col.fail(errKind(err))
				return
			}
			w := &bodyWatch{rc: resp.Body, start: t0}
			buf := make([]byte, 4096)
			counted := false
			var rerr error
			for {
				k, err := w.Read(buf)
				if k > 0 && !counted {
					counted = true
					if opened.Add(1) == int64(*n) {
						close(allOpen)
					}
				}
				if err != nil {
					if err != io.EOF {
						rerr = err
					}
					break
				}
			}
			_ = w.Close()
			switch {
			case rerr != nil:
				col.fail(errKind(rerr))
			case resp.StatusCode != http.StatusOK:
				col.fail("status " + strconv.Itoa(resp.StatusCode))
			case !w.sawDone:
				col.fail("stream without [DONE]")
			default:
				col.ok(time.Since(t0), w.first)
			}
		})
	}

	// Sample VmRSS every 50 ms until every stream is done.
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var openSince time.Time
	sample := func() int64 {
		kb, err := procStatusKB(*pid, "VmRSS")
		if err != nil {
			return 0
		}
		res.PeakKB = max(res.PeakKB, kb)
		return kb
	}
loop:
	for {
		select {
		case <-allOpen:
			allOpen = nil
			openSince = time.Now()
			res.AllOpen = true
			res.OpenAfterS = time.Since(start).Seconds()
			res.OpenKB = max(res.OpenKB, sample())
		case <-tick.C:
			kb := sample()
			// Streams all open and none finished yet: this is the figure.
			if !openSince.IsZero() && col.count() == 0 {
				res.OpenKB = max(res.OpenKB, kb)
			}
		case <-finished:
			break loop
		}
	}
	if hwm, err := procStatusKB(*pid, "VmHWM"); err == nil {
		res.HWMKB = hwm
	}
	r := col.result("streams", time.Since(start))
	res.Opened = int(opened.Load())
	res.Completed = r.Requests - r.Errors
	res.Errors, res.ErrorKinds = r.Errors, r.ErrorKinds
	res.TTFB50, res.TTFB99 = r.TTFB50, r.TTFB99
	res.StreamSecs50 = r.P50 / 1000
	if res.OpenKB > 0 && *n > 0 {
		res.KBPerStream = float64(res.OpenKB-res.BaselineKB) / float64(*n)
	}
	return printJSON(res)
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}
