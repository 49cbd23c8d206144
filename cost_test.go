package llmrouter

import (
	"bytes"
	"errors"
	"io/fs"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/mholt/caddy-ratelimit"
)

var defaultCostOpts = costOptions{Requests: defaultCostRequests, Tokens: defaultCostTokens, OutputRatio: defaultCostOutputRatio}

// checkCostGolden compares got with testdata/<name>; -update rewrites it.
func checkCostGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := "testdata/" + name
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (run go test -run TestCost -update):\n%s", path, got)
	}
}

func costReportOf(t *testing.T, config string, opts costOptions, stats *Stats) []byte {
	t.Helper()
	targets, err := loadCostTargets(config, "")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := costReport(&buf, targets, opts, stats); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestCostFullGolden: testdata/full.caddyfile at the default traffic.
func TestCostFullGolden(t *testing.T) {
	checkCostGolden(t, "cost_full.golden", costReportOf(t, "testdata/full.caddyfile", defaultCostOpts, nil))
}

// TestCostExampleGolden: the shipped example.Caddyfile at the default
// traffic; its {env.X} keys need not be set since nothing is provisioned.
func TestCostExampleGolden(t *testing.T) {
	if _, err := os.Stat("example.Caddyfile"); errors.Is(err, fs.ErrNotExist) {
		t.Skip("example.Caddyfile does not exist yet")
	}
	t.Setenv("GATEWAY_HOST", "") // the example's default host; restored afterwards
	os.Unsetenv("GATEWAY_HOST")
	checkCostGolden(t, "cost_example.golden", costReportOf(t, "example.Caddyfile", defaultCostOpts, nil))
}

// TestCostStatsGolden: the observed mix of a saved stats answer, read from
// a file and from a URL.
func TestCostStatsGolden(t *testing.T) {
	stats, err := readCostStats("testdata/stats_sample.json")
	if err != nil {
		t.Fatal(err)
	}
	got := costReportOf(t, "testdata/full.caddyfile", defaultCostOpts, stats)
	checkCostGolden(t, "cost_stats.golden", got)

	sample, _ := os.ReadFile("testdata/stats_sample.json")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/llm_router/stats" {
			http.NotFound(w, r)
			return
		}
		w.Write(sample)
	}))
	defer srv.Close()
	fromURL, err := readCostStats(srv.URL + "/llm_router/stats")
	if err != nil {
		t.Fatal(err)
	}
	if again := costReportOf(t, "testdata/full.caddyfile", defaultCostOpts, fromURL); !bytes.Equal(again, got) {
		t.Errorf("stats from a URL give another report:\n%s", again)
	}
	if _, err := readCostStats(srv.URL + "/nope"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a 404 from the stats URL: err = %v", err)
	}
}

// TestCostMultiGolden: a JSON config with two llm_router handlers, one
// without default_route, with a model that has no price and a currency
// with a rate.
func TestCostMultiGolden(t *testing.T) {
	cfg := []byte(`{"apps":{"http":{"servers":{
		"public":{"listen":[":443"],"routes":[{"match":[{"host":["api.example.com"]}],"handle":[{"handler":"subroute","routes":[
			{"match":[{"path":["/v1/*"]}],"handle":[{"handler":"llm_router",
				"providers":[{"name":"holysheep","api_key":"{env.HOLYSHEEP_API_KEY}"}],
				"models":[{"name":"gpt-4.1"},{"name":"deepseek-v3.2","price":{"input":0.28,"output":0.42,"cached_input":0.028}}],
				"routes":{"cheap":["deepseek-v3.2"],"smart":["gpt-4.1","deepseek-v3.2"]},
				"default_route":"cheap","currency":{"code":"eur","rate":0.92}}]}]}]}]},
		"internal":{"listen":[":8080"],"routes":[{"handle":[{"handler":"llm_router",
			"providers":[{"name":"a"},{"name":"b","base_url":"https://b.example/v1"}],
			"models":[{"name":"local-llama","priority":2},{"name":"gemini-2.5-flash","provider":"b","priority":1,"weight":3,"price":{"input":2.5}},
				{"name":"gemini-2.5-flash","provider":"a","priority":1,"price":{"input":1.25}}]}]}]}
	}}}}`)
	targets, err := findCostTargets(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) != 2 {
		t.Fatalf("found %d handlers, want 2", len(targets))
	}
	var buf bytes.Buffer
	if err := costReport(&buf, targets, costOptions{Requests: 1_000_000, Tokens: 1_000, OutputRatio: 0.5}, nil); err != nil {
		t.Fatal(err)
	}
	checkCostGolden(t, "cost_multi.golden", buf.Bytes())
	out := buf.String()
	for _, want := range []string{"server internal (:8080)", "server public (:443), host api.example.com, path /v1/*",
		"local-llama@a: model has no price", "auto (no default_route)", "currency per router",
		"gemini-2.5-flash: priced as its first deployment, b (priority 1); a (priority 1, shares the traffic by weight) costs 1.25/1.25"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

// TestCostArithmetic: each built-in price, in USD, in CNY at rate 1 and
// in EUR at 0.92, for 3,000,000 requests × 500 tokens (375 in, 125 out):
// (1.125e9 input tokens × input price + 3.75e8 output tokens × output
// price) per 1M × rate. Worked by hand: gpt-4.1 is 3M × (375 × 2 + 125 ×
// 8) / 1M = 5,250 USD.
func TestCostArithmetic(t *testing.T) {
	tests := []struct {
		model   string
		in, out float64 // per 1M
		monthly string  // USD, and CNY at rate 1
		eur     string  // at 0.92
	}{
		{"gpt-4.1", 2, 8, "5,250.00", "4,830.00"},
		{"claude-sonnet-4.5", 3, 15, "9,000.00", "8,280.00"},
		{"gemini-2.5-flash", 0.30, 2.50, "1,275.00", "1,173.00"},
		{"deepseek-v3.2", 0.28, 0.42, "472.50", "434.70"},
	}
	currencies := []struct {
		json string
		code string
		rate float64
	}{
		{``, "USD", 1},
		{`,"currency":{"code":"cny","rate":1}`, "CNY", 1},
		{`,"currency":{"code":"EUR","rate":0.92}`, "EUR", 0.92},
	}
	for _, tt := range tests {
		for _, c := range currencies {
			t.Run(tt.model+"/"+c.code, func(t *testing.T) {
				cfg := `{"handler":"llm_router","providers":[{"name":"p"}],"models":[{"name":"` + tt.model + `"}]` + c.json + `}`
				targets, err := findCostTargets([]byte(cfg))
				if err != nil {
					t.Fatal(err)
				}
				r := targets[0].Router
				if r.currency.Code != c.code || r.currency.Rate != c.rate {
					t.Fatalf("currency = %+v", r.currency)
				}
				pr := priceRouter(r)
				if len(pr.warnings) > 0 {
					t.Fatalf("warnings: %v", pr.warnings)
				}
				p := pr.byModel[tt.model][0].price
				if p.input != tt.in || p.output != tt.out {
					t.Fatalf("price = %+v, want %v/%v", p, tt.in, tt.out)
				}
				want := (1.125e9*tt.in + 3.75e8*tt.out) / 1e6 * c.rate
				if got := costOf(p, r.currency, 3_000_000, defaultCostOpts.mix()); math.Abs(got-want) > 1e-6 {
					t.Errorf("monthly = %v, want %v", got, want)
				}
				if got := costOf(p, r.currency, 1000, defaultCostOpts.mix()); math.Abs(got-want/3000) > 1e-9 {
					t.Errorf("per 1K requests = %v, want %v", got, want/3000)
				}
				var buf bytes.Buffer
				if err := costReport(&buf, targets, defaultCostOpts, nil); err != nil {
					t.Fatal(err)
				}
				money := tt.monthly + " " + c.code
				if c.rate != 1 {
					money = tt.eur + " " + c.code
				}
				// the model's row and the route-less "auto" row
				if n := strings.Count(buf.String(), " "+money+"\n"); n != 2 {
					t.Errorf("report shows %q %d times, want 2:\n%s", money, n, buf.String())
				}
			})
		}
	}
}

// TestCostOptions: bad flags are refused; counts accept separators.
func TestCostOptions(t *testing.T) {
	for _, o := range []costOptions{{Requests: -1}, {Tokens: -1}, {OutputRatio: 1.5}, {OutputRatio: -0.1}} {
		if o.validate() == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	for in, want := range map[string]int64{"3000000": 3_000_000, "3,000,000": 3_000_000, "3_000_000": 3_000_000} {
		if n, err := parseCount("requests", in); err != nil || n != want {
			t.Errorf("parseCount(%q) = %d, %v", in, n, err)
		}
	}
	if _, err := parseCount("requests", "3M"); err == nil {
		t.Error("3M accepted")
	}
	if _, err := findCostTargets([]byte(`{"apps":{}}`)); err == nil {
		t.Error("a config without llm_router accepted")
	}
	if _, err := findCostTargets([]byte(`{"handler":"llm_router","providers":[{"name":"p"}],"models":[{"name":"m"}],"bogus":1}`)); err == nil {
		t.Error("an unknown field accepted")
	}
}

func TestBudgetReachedAt(t *testing.T) {
	cases := []struct {
		p    period
		frac float64
		want string
	}{
		{periodHour, 0.5, "every hour after 30 minutes"},
		{periodDay, 0.75, "every day at 18:00"},
		{periodDay, 0.2571, "every day at 06:10"},
		{periodWeek, 0.3, "every week on day 3"},
		{periodMonth, 0.4, "on day 12 of the month"},
		{periodMonth, 1, "on day 30 of the month"},
	}
	for _, c := range cases {
		if got := reachedAt(c.p, c.frac); got != c.want {
			t.Errorf("reachedAt(%s, %v) = %q, want %q", c.p, c.frac, got, c.want)
		}
	}
	total := 0.0
	for p := range periodCount {
		total += p.shareOfMonth()
	}
	if math.Abs(periodDay.shareOfMonth()*30-1) > 1e-12 || math.Abs(periodHour.shareOfMonth()*720-1) > 1e-12 {
		t.Errorf("shares of a month: %v", total)
	}
}

// TestCostCacheHit: with --cache-hit, only the requests the cache does not
// answer cost anything.
func TestCostCacheHit(t *testing.T) {
	full := string(costReportOf(t, "testdata/full.caddyfile", defaultCostOpts, nil))
	opts := defaultCostOpts
	opts.CacheHit = 0.3
	cached := string(costReportOf(t, "testdata/full.caddyfile", opts, nil))
	if !strings.Contains(cached, "cache hit ratio 30%: 2,100,000 requests/month reach a model") {
		t.Errorf("no cache line:\n%s", cached)
	}
	// gpt-4.1: 12,000.00 CNY a month without the cache, 70 % of it with
	if !strings.Contains(full, "12,000.00 CNY") || !strings.Contains(cached, "8,400.00 CNY") {
		t.Errorf("gpt-4.1's monthly cost does not drop by 30%%:\n%s", cached)
	}
	if err := (costOptions{CacheHit: 1}).validate(); err == nil {
		t.Error("--cache-hit 1 accepted")
	}
}

// TestCostHugeTraffic: traffic past int64 tokens a month is priced as
// asked, not wrapped into a negative count or a cost that leaves out the
// input.
func TestCostHugeTraffic(t *testing.T) {
	opts := costOptions{Requests: 10_000_000_000_000, Tokens: 2_000_000, OutputRatio: 0.25}
	got := string(costReportOf(t, "testdata/full.caddyfile", opts, nil))
	if !strings.Contains(got, "= 20,000,000,000,000,000,000 tokens/month") {
		t.Errorf("tokens a month not 2×10^19:\n%s", got)
	}
	// deepseek-v3.2: 1.5×10^19 input at 0.28 and 5×10^18 output at 0.42 per 1M
	if !strings.Contains(got, "6,300,000,000,000.00 CNY") {
		t.Errorf("deepseek-v3.2's monthly cost is not 6,300,000,000,000.00 CNY:\n%s", got)
	}
}

// TestCostEmbeddingsOnly: a router of embedding models alone, without
// default_route, is projected (it panicked on the chat primary it lacks):
// requests naming no model and a budget matching nothing go to its first
// embedding model, whose tokens are all input.
func TestCostEmbeddingsOnly(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(cfg, []byte(`:8080 {
	llm_router {
		provider p {
			base_url http://localhost:1/v1
			api_key k
		}
		model embed-a {
			kind embedding
			price 0.02 1
		}
		budget b {
			limit 1 per day
		}
	}
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	var got string
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("panic: %v", r)
			}
		}()
		got = string(costReportOf(t, cfg, defaultCostOpts, nil))
	}()
	// 3,000,000 requests × 500 input tokens at 0.02 per 1M: 30.00 USD a month, 1.00 a day
	if !strings.Contains(got, "auto (no default_route)  embed-a@p  30.00 USD") {
		t.Errorf("no auto row on the embedding model:\n%s", got)
	}
	if !strings.Contains(got, "all on auto  1.00 USD per day  1.00 USD per day") {
		t.Errorf("budget not projected on the embedding model's input:\n%s", got)
	}
}
