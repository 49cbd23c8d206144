package llmrouter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/dustin/go-humanize"
)

// Defaults of `caddy llm-router cost`: 3 million requests a month of 500
// tokens each, a quarter of them output.
const (
	defaultCostRequests    = 3_000_000
	defaultCostTokens      = 500
	defaultCostOutputRatio = 0.25
)

// costOptions is the traffic `caddy llm-router cost` projects.
type costOptions struct {
	Requests    int64   // per month
	Tokens      int64   // per request, input and output together
	OutputRatio float64 // share of Tokens that is output
	CacheHit    float64 // share of requests answered from the cache, at no cost
}

func (o costOptions) validate() error {
	switch {
	case o.Requests < 0:
		return errors.New("--requests must not be negative")
	case o.Tokens < 0:
		return errors.New("--tokens must not be negative")
	case o.OutputRatio < 0 || o.OutputRatio > 1 || math.IsNaN(o.OutputRatio):
		return errors.New("--output-ratio must be between 0 and 1")
	case o.CacheHit < 0 || o.CacheHit >= 1 || math.IsNaN(o.CacheHit):
		return errors.New("--cache-hit must be at least 0 and below 1")
	}
	return nil
}

// upstream is the requests a month that reach a model: those the cache
// does not answer.
func (o costOptions) upstream() float64 { return float64(o.Requests) * (1 - o.CacheHit) }

// mix is the assumed tokens of one request.
func (o costOptions) mix() tokenMix {
	out := float64(o.Tokens) * o.OutputRatio
	return tokenMix{input: float64(o.Tokens) - out, output: out}
}

// mixOf is the assumed tokens of one request to d: an embedding
// request's are all input.
func (o costOptions) mixOf(d *deployment) tokenMix {
	m := o.mix()
	if d.kind == kindEmbedding {
		return tokenMix{input: m.input + m.output}
	}
	return m
}

// tokenMix is the average tokens of one request.
type tokenMix struct {
	input, output, cached float64 // cached is part of input
}

// costOf is what n requests of mix m cost at price p, in currency c: the
// gateway's own formula (unitPrice.costOf) on the total usage, times the
// rate. The usage stays in floats: a month's tokens may be past int64,
// which would wrap.
func costOf(p unitPrice, c Currency, n float64, m tokenMix) float64 {
	return p.costOf(math.Round(n*m.input), math.Round(n*m.cached), math.Round(n*m.output)) * c.Rate
}

// costTarget is one llm_router handler found in a config.
type costTarget struct {
	Where  string // where it sits in the config, e.g. "server srv0 (:8080), path /v1/*"
	Router *Router
}

// loadCostTargets adapts the config file (Caddyfile or JSON) and returns
// every llm_router handler in it.
func loadCostTargets(path, adapter string) ([]costTarget, error) {
	if path == "" {
		return nil, errors.New("--config is required")
	}
	if adapter == "" && strings.Contains(strings.ToLower(filepath.Base(path)), "caddyfile") {
		adapter = "caddyfile"
	}
	cfg, _, _, err := caddycmd.LoadConfig(path, adapter)
	if err != nil {
		return nil, err
	}
	return findCostTargets(cfg)
}

// findCostTargets walks an adapted (JSON) config for objects with
// "handler": "llm_router", in document order, and decodes each into a
// Router as Caddy would (unknown fields are errors). Nothing is provisioned.
func findCostTargets(cfg []byte) ([]costTarget, error) {
	dec := json.NewDecoder(bytes.NewReader(cfg))
	dec.UseNumber()
	var root any
	if err := dec.Decode(&root); err != nil {
		return nil, fmt.Errorf("config is not JSON: %w", err)
	}
	var found []costTarget
	var errs []error
	type where struct {
		server       string
		hosts, paths []string
	}
	var walk func(v any, parentKey string, at where)
	walk = func(v any, parentKey string, at where) {
		switch v := v.(type) {
		case []any:
			for _, c := range v {
				walk(c, "", at)
			}
		case map[string]any:
			if v["handler"] == "llm_router" {
				var parts []string
				if at.server != "" {
					parts = append(parts, "server "+at.server)
				}
				if len(at.hosts) > 0 {
					parts = append(parts, "host "+strings.Join(at.hosts, " "))
				}
				if len(at.paths) > 0 {
					parts = append(parts, "path "+strings.Join(at.paths, " "))
				}
				r, err := decodeRouter(v)
				if err != nil {
					errs = append(errs, fmt.Errorf("llm_router #%d (%s): %w", len(found)+len(errs)+1, strings.Join(parts, ", "), err))
					return
				}
				found = append(found, costTarget{Where: strings.Join(parts, ", "), Router: r})
				return
			}
			if parentKey == "servers" {
				// v is the servers map: its keys are server names
				for _, name := range slices.Sorted(maps.Keys(v)) {
					next := at
					next.server = name
					if srv, ok := v[name].(map[string]any); ok {
						if listen := stringsOf(srv["listen"]); len(listen) > 0 {
							next.server += " (" + strings.Join(listen, " ") + ")"
						}
					}
					walk(v[name], "", next)
				}
				return
			}
			if sets, ok := v["match"].([]any); ok { // a route: its matchers apply to what it holds
				at.hosts, at.paths = slices.Clone(at.hosts), slices.Clone(at.paths)
				for _, s := range sets {
					if m, ok := s.(map[string]any); ok {
						at.hosts = append(at.hosts, stringsOf(m["host"])...)
						at.paths = append(at.paths, stringsOf(m["path"])...)
					}
				}
			}
			for _, k := range slices.Sorted(maps.Keys(v)) {
				walk(v[k], k, at)
			}
		}
	}
	walk(root, "", where{})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(found) == 0 {
		return nil, errors.New(`the config has no llm_router handler (no object with "handler": "llm_router")`)
	}
	return found, nil
}

func stringsOf(v any) []string {
	list, _ := v.([]any)
	var out []string
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// decodeRouter decodes one handler object strictly, sets the defaults and
// validates it, as Provision would, without its side effects.
func decodeRouter(obj map[string]any) (*Router, error) {
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	r := new(Router)
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&struct {
		Handler string `json:"handler"`
		*Router
	}{Router: r}); err != nil {
		return nil, err
	}
	r.setDefaults()
	if err := r.validate(); err != nil {
		return nil, err
	}
	return r, nil
}

// readCostStats reads a saved GET /llm_router/stats answer from a file, or
// fetches it from an http(s) URL.
func readCostStats(src string) (*Stats, error) {
	var body []byte
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		client := &http.Client{Timeout: 15 * time.Second}
		resp, err := client.Get(src)
		if err != nil {
			return nil, fmt.Errorf("reading stats: %w", err)
		}
		defer resp.Body.Close()
		body, err = io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		if err != nil {
			return nil, fmt.Errorf("reading stats from %s: %w", src, err)
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("reading stats from %s: %s: %s", src, resp.Status, bytes.TrimSpace(body[:min(len(body), 300)]))
		}
	} else {
		var err error
		if body, err = os.ReadFile(src); err != nil {
			return nil, fmt.Errorf("reading stats: %w", err)
		}
	}
	var s Stats
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, fmt.Errorf("decoding stats from %s: %w", src, err)
	}
	return &s, nil
}

// pricedRouter is a Router's deployments, priced and grouped exactly as the
// gateway does (newDeployments, buildRouting), without provisioning.
type pricedRouter struct {
	r        *Router
	routing  routing
	ds       []*deployment
	byModel  map[string][]*deployment // each by priority, then declaration
	names    []string                 // model names in declaration order
	warnings []string
}

func priceRouter(r *Router) pricedRouter {
	ds := r.newDeployments()
	pr := pricedRouter{r: r, ds: ds, routing: buildRouting(ds, r.Routes, r.DefaultRoute), byModel: make(map[string][]*deployment)}
	for _, d := range ds {
		if d.priceMsg != "" {
			pr.warnings = append(pr.warnings, d.label()+": "+d.priceMsg)
		}
		if _, ok := pr.byModel[d.name]; !ok {
			pr.byModel[d.name] = nil
			pr.names = append(pr.names, d.name)
		}
	}
	for _, name := range pr.names {
		for _, g := range pr.routing.byModel[name].plan {
			for _, d := range g {
				if d.name == name { // not one of its fallbacks
					pr.byModel[name] = append(pr.byModel[name], d)
				}
			}
		}
	}
	return pr
}

// costReport writes the projection for every handler: per model, per
// route, and, given stats, for the observed mix.
func costReport(w io.Writer, targets []costTarget, opts costOptions, stats *Stats) error {
	if err := opts.validate(); err != nil {
		return err
	}
	mix := opts.mix()
	var codes []string
	for _, t := range targets {
		c := t.Router.currency
		code := c.Code + " at " + humanize.FtoaWithDigits(c.Rate, 6) + " " + c.Code + " per price unit"
		if !slices.Contains(codes, code) {
			codes = append(codes, code)
		}
	}
	currency := "currency " + strings.Join(codes, ", ")
	if len(codes) > 1 {
		currency = "currency per router"
	}
	fmt.Fprintf(w, "%s requests/month × %s tokens/request (%s input + %s output) = %s tokens/month; %s\n",
		humanize.Comma(opts.Requests), humanize.Comma(opts.Tokens), humanize.FtoaWithDigits(mix.input, 1),
		humanize.FtoaWithDigits(mix.output, 1), humanize.BigComma(new(big.Int).Mul(big.NewInt(opts.Requests), big.NewInt(opts.Tokens))), currency)
	if opts.CacheHit > 0 {
		fmt.Fprintf(w, "cache hit ratio %s: %s requests/month reach a model, the rest are answered from the cache at no cost\n",
			humanPercent(opts.CacheHit), humanize.Comma(int64(math.Round(opts.upstream()))))
	}

	for i, t := range targets {
		fmt.Fprintf(w, "\nllm_router #%d", i+1)
		if t.Where != "" {
			fmt.Fprintf(w, ": %s", t.Where)
		}
		if len(codes) > 1 {
			fmt.Fprintf(w, " (currency %s, rate %s)", t.Router.currency.Code, humanize.FtoaWithDigits(t.Router.currency.Rate, 6))
		}
		fmt.Fprintln(w)
		if err := costReportOne(w, priceRouter(t.Router), opts, stats); err != nil {
			return err
		}
	}
	return nil
}

func costReportOne(w io.Writer, pr pricedRouter, opts costOptions, stats *Stats) error {
	r, cur := pr.r, pr.r.currency
	money := func(v float64) string { return humanMoney(v, cur.Code) }
	price := func(v float64) string { return humanPrice(v * cur.Rate) }
	mixOf := opts.mixOf
	monthly := func(d *deployment) string { return money(costOf(d.price, cur, opts.upstream(), mixOf(d))) }
	var notes []string

	// per model
	fmt.Fprintf(w, "\nIf all traffic went to one model (prices per 1M tokens, in %s):\n", cur.Code)
	rows := [][]string{{"MODEL", "PROVIDER", "INPUT/1M", "OUTPUT/1M", "PER 1K REQUESTS", "MONTHLY"}}
	for _, name := range pr.names {
		ds := pr.byModel[name]
		d := ds[0]
		rows = append(rows, []string{name, d.id.provider, price(d.price.input), price(d.price.output),
			money(costOf(d.price, cur, 1000*(1-opts.CacheHit), mixOf(d))), monthly(d)})
		var others []string
		for _, o := range ds[1:] {
			if o.price != d.price {
				split := ""
				if o.priority == d.priority {
					split = ", shares the traffic by weight"
				}
				others = append(others, fmt.Sprintf("%s (priority %d%s) costs %s/%s", o.id.provider, o.priority,
					split, price(o.price.input), price(o.price.output)))
			}
		}
		if len(others) > 0 {
			notes = append(notes, fmt.Sprintf("%s: priced as its first deployment, %s (priority %d); %s per 1M tokens",
				name, d.id.provider, d.priority, strings.Join(others, ", ")))
		}
	}
	if err := writeCostTable(w, rows, 2, 3, 4, 5); err != nil {
		return err
	}

	// per route
	fmt.Fprintln(w, "\nIf all traffic went to one route's primary model:")
	rows = [][]string{{"ROUTE", "PRIMARY", "MONTHLY"}}
	for _, name := range slices.Sorted(maps.Keys(r.Routes)) {
		d := pr.routing.byRoute[name].primary()
		label := name
		if name == r.DefaultRoute {
			label += " (default)"
		}
		rows = append(rows, []string{label, d.label(), monthly(d)})
	}
	if r.DefaultRoute == "" {
		first := pr.autoPrimary()
		rows = append(rows, []string{"auto (no default_route)", first.label(), monthly(first)})
		notes = append(notes, "auto: without default_route, requests naming no model go to every deployment by priority; shown: the first declared of the first priority")
	}
	if err := writeCostTable(w, rows, 2); err != nil {
		return err
	}

	var observed map[*deployment]float64
	if stats != nil {
		n, o, err := observedMix(w, pr, opts, stats)
		if err != nil {
			return err
		}
		notes, observed = append(notes, n...), o
	}
	if err := budgetProjection(w, pr, opts, observed); err != nil {
		return err
	}

	notes = append(notes, pr.warnings...)
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, "note: "+n)
		}
	}
	return nil
}

// observedMix projects opts.Requests at the traffic mix of stats, among
// this router's deployments.
func observedMix(w io.Writer, pr pricedRouter, opts costOptions, stats *Stats) ([]string, map[*deployment]float64, error) {
	monthly := map[*deployment]float64{}
	cur := pr.r.currency
	money := func(v float64) string { return humanMoney(v, cur.Code) }
	type observed struct {
		d                       *deployment
		requests                int64
		input, output, cachedIn int64
	}
	var obs []*observed
	index := make(map[string]*observed)
	for _, name := range pr.names {
		for _, d := range pr.byModel[name] {
			o := &observed{d: d}
			obs = append(obs, o)
			index[d.name+"\x00"+d.id.provider] = o
		}
	}
	var notes []string
	var total int64
	for _, s := range stats.Deployments {
		o, ok := index[s.Model+"\x00"+s.Provider]
		if !ok {
			if s.Requests > 0 {
				notes = append(notes, fmt.Sprintf("%s@%s: in the stats (%s requests) but not in this config; left out of the mix",
					s.Model, s.Provider, humanize.Comma(s.Requests)))
			}
			continue
		}
		o.requests += s.Requests
		o.input = addTokens(o.input, s.Tokens.Input)
		o.output = addTokens(o.output, s.Tokens.Output)
		o.cachedIn = addTokens(o.cachedIn, s.Tokens.CachedInput)
		total += s.Requests
	}

	when := ""
	if !stats.GeneratedAt.IsZero() {
		when = " of " + stats.GeneratedAt.UTC().Format("2006-01-02 15:04 MST")
	}
	fmt.Fprintf(w, "\nAt the observed mix (stats%s: %s requests), %s requests/month:\n",
		when, humanize.Comma(total), humanize.Comma(opts.Requests))
	if total == 0 {
		fmt.Fprintln(w, "no requests observed for this router's deployments")
		return notes, nil, nil
	}
	rows := [][]string{{"MODEL", "PROVIDER", "REQUESTS", "SHARE", "AVG IN", "AVG OUT", "MONTHLY"}}
	var sum float64
	var sumIn, sumOut, sumCached float64
	assumed := false
	for _, o := range obs {
		if o.requests == 0 {
			continue
		}
		share := float64(o.requests) / float64(total)
		n := opts.upstream() * share
		m := opts.mix()
		mark := ""
		if o.input+o.output > 0 {
			req := float64(o.requests)
			m = tokenMix{input: float64(o.input) / req, output: float64(o.output) / req, cached: float64(o.cachedIn) / req}
		} else {
			mark, assumed = " *", true
		}
		c := costOf(o.d.price, cur, n, m)
		sum += c
		monthly[o.d] += c
		sumIn, sumOut, sumCached = sumIn+n*m.input, sumOut+n*m.output, sumCached+n*m.cached
		in := humanize.FtoaWithDigits(math.Round(m.input*10)/10, 1)
		if m.cached > 0 {
			in += " (" + humanize.FtoaWithDigits(math.Round(m.cached*10)/10, 1) + " cached)"
		}
		rows = append(rows, []string{o.d.name, o.d.id.provider, humanize.Comma(o.requests) + mark,
			humanPercent(share), in, humanize.FtoaWithDigits(math.Round(m.output*10)/10, 1), money(c)})
	}
	avg := func(v float64) string {
		if opts.Requests == 0 {
			return "-"
		}
		return humanize.FtoaWithDigits(math.Round(v/opts.upstream()*10)/10, 1)
	}
	in := avg(sumIn)
	if sumCached > 0 {
		in += " (" + avg(sumCached) + " cached)"
	}
	rows = append(rows, []string{"TOTAL", "", humanize.Comma(total), "100%", in, avg(sumOut), money(sum)})
	if err := writeCostTable(w, rows, 2, 3, 4, 5, 6); err != nil {
		return nil, nil, err
	}
	if assumed {
		notes = append([]string{fmt.Sprintf("* no tokens recorded: assumed %s input + %s output tokens/request (--tokens, --output-ratio)",
			humanize.FtoaWithDigits(opts.mix().input, 1), humanize.FtoaWithDigits(opts.mix().output, 1))}, notes...)
	}
	return notes, monthly, nil
}

// budgetProjection writes, for each budget, when the projected traffic
// reaches each limit: the observed mix of the deployments the budget covers
// (with stats), else all traffic on the primary of the first route or model
// it matches; one key spending it all (the first key to reach the limit).
func budgetProjection(w io.Writer, pr pricedRouter, opts costOptions, observed map[*deployment]float64) error {
	r := pr.r
	if len(r.Budgets) == 0 {
		return nil
	}
	cur := r.currency
	money := func(v float64) string { return humanMoney(v, cur.Code) }
	fmt.Fprintln(w, "\nBudgets at the projected traffic (one key spending it all):")
	rows := [][]string{{"BUDGET", "TRAFFIC", "LIMIT", "PROJECTED", "REACHED"}}
	for _, bc := range r.Budgets {
		b, err := newBudget(bc, cur.Code)
		if err != nil {
			return err
		}
		monthly, basis := pr.budgetTraffic(b, opts, observed)
		then := "then refused"
		if b.downgrade != "" {
			then = "then served from " + b.downgrade
		}
		caps := slices.Clone(b.limits)
		if b.hard > 0 {
			caps = append(caps, budgetLimit{b.hard, b.hardPeriod})
		}
		for i, c := range caps {
			per := monthly * c.period.shareOfMonth()
			label := money(c.amount) + " per " + c.period.String()
			when := "not reached"
			if per >= c.amount {
				when = reachedAt(c.period, c.amount/per) + ", " + then
			}
			if i == len(b.limits) { // the hard cap
				label = "hard " + label
				if per >= c.amount {
					when = reachedAt(c.period, c.amount/per) + ", then refused"
				}
			}
			rows = append(rows, []string{b.name, basis, label, money(per) + " per " + c.period.String(), when})
		}
	}
	return writeCostTable(w, rows, 2, 3)
}

// budgetTraffic is the projected monthly spend a budget covers, and what it
// is based on.
func (pr pricedRouter) budgetTraffic(b *budget, opts costOptions, observed map[*deployment]float64) (float64, string) {
	rt := pr.routing
	names := b.matchNames
	if observed != nil {
		if b.covers == nil {
			b.cover(pr.ds, rt)
		}
		sum := 0.0
		for d, c := range observed {
			if b.covers[d] {
				sum += c
			}
		}
		return sum, "observed mix"
	}
	var d *deployment
	basis := ""
	switch {
	case len(names) > 0:
		basis = names[0]
		if d = rt.byRoute[basis].primary(); d == nil {
			d = rt.byModel[basis].primary()
		}
	case rt.defaultRoute != "":
		basis = rt.defaultRoute
		d = rt.byRoute[basis].primary()
	default:
		basis = "auto"
		d = pr.autoPrimary()
	}
	return costOf(d.price, pr.r.currency, opts.upstream(), opts.mixOf(d)), "all on " + basis
}

// autoPrimary is where a request naming no model goes first without a
// default_route: the first chat deployment, or in a router of embedding
// models alone, the first embedding one.
func (pr pricedRouter) autoPrimary() *deployment {
	if d := pr.routing.all[kindChat].primary(); d != nil {
		return d
	}
	return pr.routing.all[kindEmbedding].primary()
}

// shareOfMonth is the part of a (30-day) month a period is.
func (p period) shareOfMonth() float64 {
	switch p {
	case periodHour:
		return 1.0 / (30 * 24)
	case periodDay:
		return 1.0 / 30
	case periodWeek:
		return 7.0 / 30
	}
	return 1
}

// reachedAt says when, into each period, a limit is reached after frac of
// the period's traffic.
func reachedAt(p period, frac float64) string {
	switch p {
	case periodHour:
		return fmt.Sprintf("every hour after %d minutes", int(math.Ceil(frac*60)))
	case periodDay:
		at := time.Duration(frac * float64(24*time.Hour)).Round(time.Minute)
		return fmt.Sprintf("every day at %02d:%02d", int(at.Hours()), int(at.Minutes())%60)
	case periodWeek:
		return fmt.Sprintf("every week on day %d", int(math.Ceil(frac*7)))
	}
	return fmt.Sprintf("on day %d of the month", int(math.Ceil(frac*30)))
}

// humanPrice writes a price per 1M tokens with at least two and at most
// four decimals: 8.00, 0.42, 0.028, 0.3864.
func humanPrice(v float64) string {
	s := humanize.FormatFloat("#,###.####", v)
	for strings.HasSuffix(s, "0") && len(s)-strings.IndexByte(s, '.') > 3 {
		s = s[:len(s)-1]
	}
	return s
}

// writeCostTable writes rows (the first is the header) aligned, with the
// given columns right-aligned.
func writeCostTable(w io.Writer, rows [][]string, right ...int) error {
	width := make(map[int]int)
	for _, row := range rows[1:] {
		for _, c := range right {
			width[c] = max(width[c], utf8.RuneCountInString(row[c]), utf8.RuneCountInString(rows[0][c]))
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, row := range rows {
		cells := slices.Clone(row)
		for _, c := range right {
			cells[c] = strings.Repeat(" ", width[c]-utf8.RuneCountInString(cells[c])) + cells[c]
		}
		if _, err := fmt.Fprintln(tw, strings.Join(cells, "\t")); err != nil {
			return err
		}
	}
	return tw.Flush()
}

// runCost is `caddy llm-router cost`.
func runCost(w io.Writer, configFile, adapter string, opts costOptions, statsSrc, adminAddr string, useAdmin bool) error {
	if err := opts.validate(); err != nil {
		return err
	}
	targets, err := loadCostTargets(configFile, adapter)
	if err != nil {
		return err
	}
	var stats *Stats
	switch {
	case useAdmin:
		if stats, err = fetchAdminStats(adminAddr); err != nil {
			return err
		}
	case statsSrc != "":
		if stats, err = readCostStats(statsSrc); err != nil {
			return err
		}
	}
	return costReport(w, targets, opts, stats)
}

// parseCount reads a count flag: 3000000, 3,000,000 or 3_000_000.
func parseCount(flag, s string) (int64, error) {
	n, err := strconv.ParseInt(strings.NewReplacer(",", "", "_", "").Replace(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("--%s: %q is not a whole number", flag, s)
	}
	return n, nil
}
