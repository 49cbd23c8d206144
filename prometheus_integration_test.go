package llmrouter

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/llmrouter/caddy-llm-router/deploy"
	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// The dashboard and the alert rules that TestDashboardAgainstPrometheus runs
// through a real Prometheus.
const (
	promDashboardPath = "deploy/grafana/llm-router.json"
	promAlertsPath    = "deploy/prometheus/alerts.yml"
	promJob           = "llmrouter"
	promMissing       = "prometheus not installed (apt-get install prometheus)"
	// promWait bounds every wait on the Prometheus process together.
	promWait = 60 * time.Second
)

// promBudget is the budget of TestDashboardAgainstPrometheus, per team on
// its own routes capped_qa and capped_cheap, whose deployments nothing else
// uses (a budget covers deployments, whatever route reaches them): the
// first answer (about 0.000007 USD at 0.42 per 1M tokens) is past the tiny
// limit (warned), the second request is served from capped_cheap
// (downgraded, and covered too) and takes the team past the hard cap, the
// third is refused. Each traffic round spends as another team, so each
// round sees all three actions; the teams are also the client label.
const (
	promBudget       = "team_capped"
	promBudgetRouter = `
	model capped-deepseek {
		upstream capped-chat
		price 0.42
	}
	model capped-cheap {
		upstream capped-cheap
		price 0.42
	}
	route capped_qa capped-deepseek
	route capped_cheap capped-cheap
	budget ` + promBudget + ` {
		limit 0.0000001 per day
		key {llm_team} label
		match capped_qa capped_cheap
		downgrade capped_cheap
		hard 0.00001
	}
	budget_sync 1s
	client_label {llm_team}
`
	// promTeamsSite is teamsSite letting requests without a gateway key
	// through with an empty {llm_team}: the client label of the rest of the
	// traffic stays empty.
	promTeamsSite = `	map {http.request.header.Authorization} {llm_team} {
		"Bearer team-a-key" team-a
		"Bearer team-b-key" team-b
	}
`
)

// promCacheRouter is the response cache of TestDashboardAgainstPrometheus,
// on a route of its own, cached_qa (simple_qa's models): the rest of the
// traffic is not cached, and keeps its exact token, cost and unavailable
// checks. An answer is fresh for a minute: moving the router's clock two
// minutes makes it stale, and stale_if_error still serves it when every
// candidate fails.
const promCacheRouter = `
	route cached_qa deepseek-v3.2 gemini-2.5-flash
	model embed-words {
		kind embedding
		price 0.02
	}
	cache {
		max_size 1MB
		ttl 1m
		stale_if_error 1h
		match cached_qa
		semantic {
			model embed-words
			threshold 0.5
		}
	}
`

// promRuleRouter gives the dashboard's rule panel its series: a routing
// rule (rule_cost_exceeded_total exists from provision, at 0), which no
// request of the test reaches (each names its model or route).
const promRuleRouter = `
	route ruled_qa deepseek-v3.2 {
		when messages > 1000
	}
`

// promCacheResults are the results of caddy_llm_router_cache_requests_total.
var promCacheResults = []string{"hit", "miss", "stale", "bypass", cacheSemanticHit, cacheSemanticBlocked}

// promRounds are the traffic rounds of TestDashboardAgainstPrometheus: each
// spends as one team.
var promRounds = []struct{ key, client string }{
	{"Bearer team-a-key", "team-a"},
	{"Bearer team-b-key", "team-b"},
}

// promTraffic is what the traffic rounds sent and were answered.
type promTraffic struct {
	sent   int            // requests
	tokens map[string]int // prompt + completion tokens answered, by client label ("" for none)
	cache  map[string]int // X-LLM-Cache results of the requests on cached_qa
	saved  float64        // USD: what the answers served from the cache cost when first given
}

// TestDashboardAgainstPrometheus drives traffic through the gateway that
// gives every router metric family series, lets a real Prometheus scrape
// Caddy's admin /metrics, and checks that every dashboard expression returns
// data, that the token and cost series Prometheus stored equal both Caddy's
// own /metrics and what the mocks served, and that the alert rules load and
// evaluate without errors.
//
// The gateway has a budget (promBudgetRouter) whose syncs all fail: the
// router's directory in Caddy's storage is a file, as in
// TestBudgetStorageDown, so budget_sync_failures_total grows every second
// (the budget panels and alerts get data, the budget keeps counting
// locally). It also has a response cache on a route of its own
// (promCacheRouter) that each round drives through a miss, hits, a bypass
// and a stale answer.
func TestDashboardAgainstPrometheus(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(promMissing + " (CI=true, so this is a failure rather than a skip)")
		}
		t.Skip(promMissing)
	}
	exprs, err := deploy.DashboardExprs(promDashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(exprs) == 0 {
		t.Fatal("no expressions in the dashboard")
	}

	// a 429 cools a deployment down for 1ms only, so that both traffic
	// rounds below take the same paths
	cfg := withHealth("\t\tinterval off")
	if !strings.Contains(cfg, "first_byte_timeout 2s") {
		t.Fatal("defaultRouter has no first_byte_timeout 2s line to add a cooldown to")
	}
	cfg = strings.Replace(cfg, "first_byte_timeout 2s", "first_byte_timeout 2s\n\t\tcooldown 1ms", 1)
	global, storage := withStorage(t, globalOptions)
	if err := os.WriteFile(filepath.Join(storage, "llm_router"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	g := newGatewayWith(t, global, promTeamsSite, cfg+promBudgetRouter+promCacheRouter+promRuleRouter)
	done := requestsDone(t)
	g.primary.SetDefault(mockllm.Behavior{CachedTokens: 2, WordVectors: 256}) // word vectors for the semantic cache
	g.backup.SetDefault(mockllm.Behavior{CachedTokens: 2})

	p := startPrometheus(t, bin)
	deadline := time.Now().Add(promWait)
	p.waitReady(t, deadline)
	// a scrape before any traffic: every counter has a sample to rate from
	p.waitScrapeAfter(t, time.Now(), deadline)

	before := scrape(t)
	traffic := promTraffic{tokens: map[string]int{}, cache: map[string]int{}}
	for i, r := range promRounds {
		if i > 0 {
			p.waitScrapeAfter(t, time.Now(), deadline)
		}
		driveAllPanels(t, g, done, r.key, r.client, &traffic)
	}
	// three scrapes after the last traffic
	p.waitScrapeAfter(t, time.Now().Add(2*time.Second), deadline)
	after := scrape(t)

	t.Run("families", func(t *testing.T) { p.checkFamilies(t) })
	t.Run("dashboard", func(t *testing.T) { p.checkExprs(t, exprs) })
	t.Run("model variable", func(t *testing.T) { p.checkModelVariable(t) })
	t.Run("same as caddy", func(t *testing.T) { p.checkSameAsCaddy(t, after) })
	t.Run("deltas", func(t *testing.T) { p.checkDeltas(t, g, before, traffic) })
	t.Run("alert rules", func(t *testing.T) { p.checkRules(t, deadline) })
}

// driveAllPanels sends one round of traffic that feeds every panel and
// waits until the router counted it, adding it to tr. Every request
// completes normally (no abandoned streams), so token counts are exactly
// what the mocks served. Its budget traffic spends with gateway key key,
// whose team is client; the team must not have spent yet. Its cache
// traffic (driveCache) asks a question of its own, naming client, and
// moves the router's clock two minutes forward.
func driveAllPanels(t *testing.T, g *gateway, done <-chan struct{}, key, client string, tr *promTraffic) {
	t.Helper()
	n, counted := 0, 0
	settle := func() {
		t.Helper()
		for ; counted < n; counted++ {
			waitFor(t, done, fmt.Sprintf("request %d of %d to be counted", counted+1, n))
		}
	}
	defer func() { tr.sent += n }()
	answered := func(client, body string) {
		t.Helper()
		var r struct {
			Usage struct {
				Prompt     int `json:"prompt_tokens"`
				Completion int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(body), &r); err != nil || r.Usage.Prompt == 0 || r.Usage.Completion == 0 {
			t.Fatalf("no usage in the answer (%v): %s", err, body)
		}
		tr.tokens[client] += r.Usage.Prompt + r.Usage.Completion
	}
	ok := func(body, model, provider string, attempts int) {
		t.Helper()
		resp, b := g.post(body)
		expectModel(t, resp, b, model, provider, attempts)
		n++
	}
	const usageStream = `{"model":%q,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Where is my order?"}]}`

	// both routes, JSON and streams with and without include_usage
	for range 2 {
		ok(chatBody("simple_qa", false), "deepseek-v3.2", "primary", 1)
		ok(chatBody("complex_reasoning", false), "gpt-4.1", "primary", 1)
	}
	ok(chatBody("simple_qa", true), "deepseek-v3.2", "primary", 1)
	ok(fmt.Sprintf(usageStream, "simple_qa"), "deepseek-v3.2", "primary", 1)
	ok(fmt.Sprintf(usageStream, "complex_reasoning"), "gpt-4.1", "primary", 1)

	post := func(body string, header ...string) (*http.Response, string) {
		t.Helper()
		resp, b := g.post(body, header...)
		n++
		return resp, b
	}
	driveCache(t, g, client, tr, post, settle)

	// the budget, as the team: warned on the first answer, downgraded, then
	// refused past the hard cap. Each request is counted (and charged)
	// before the next is checked against the budget.
	settle()
	auth := []string{"Authorization", key}
	resp, body := g.post(chatBody("capped_qa", false), auth...)
	n++
	expectModel(t, resp, body, "capped-deepseek", "primary", 1)
	if h, r := resp.Header.Get("X-LLM-Budget"), resp.Header.Get("X-LLM-Route"); h != "" || r != "capped_qa" {
		t.Errorf("%s's first budget request: X-LLM-Budget %q, X-LLM-Route %q; want none, capped_qa", client, h, r)
	}
	answered(client, body)
	settle()
	resp, body = g.post(chatBody("capped_qa", false), auth...)
	n++
	expectModel(t, resp, body, "capped-cheap", "primary", 1)
	if h, r := resp.Header.Get("X-LLM-Budget"), resp.Header.Get("X-LLM-Route"); h != "downgraded ("+promBudget+")" || r != "capped_cheap" {
		t.Errorf("%s at its limit: X-LLM-Budget %q, X-LLM-Route %q; want downgraded (%s), capped_cheap", client, h, r, promBudget)
	}
	answered(client, body)
	settle()
	resp, body = g.post(chatBody("capped_qa", false), auth...)
	n++
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("%s past its hard cap: status %d, want 429; body: %s", client, resp.StatusCode, body)
	}
	if e := apiErr(t, body); e.Type != "insufficient_quota" || e.Code != "budget_exceeded" {
		t.Errorf("%s past its hard cap: error %+v, want insufficient_quota / budget_exceeded", client, e)
	}
	settle()

	// a failover on a 503
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 503, Times: 1})
	ok(chatBody("simple_qa", false), "gemini-2.5-flash", "primary", 2)

	// a failover on a 429
	g.primary.Set("gpt-4.1", mockllm.Behavior{Status: 429, Times: 1})
	ok(chatBody("complex_reasoning", false), "claude-sonnet-4.5", "backup", 2)

	// every candidate failing: 503 all_models_unavailable
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 503, Times: 1})
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 429, Times: 1})
	resp, body = g.post(chatBody("simple_qa", false))
	n++
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("both candidates failing: status %d, want 503; body: %s", resp.StatusCode, body)
	}
	apiErr(t, body)
	settle()
}

// driveCache sends one round's response cache traffic on route cached_qa
// with post (which counts the requests sent; settle waits until the router
// counted them), adding their cache results and savings to tr: a miss that
// stores the answer, two hits (the JSON answer as stored, and a stream
// replayed from it) that ask no model, a bypass (Cache-Control: no-store)
// that does, and, past the ttl with every candidate failing, the stale
// answer instead of a 503. The question names round: no earlier round's
// entry answers it. It moves the router's clock two minutes forward: call
// it before the round's budget spends, so that the spend and the budget's
// checks see one clock.
func driveCache(t *testing.T, g *gateway, round string, tr *promTraffic, post func(string, ...string) (*http.Response, string), settle func()) {
	t.Helper()
	// a system prompt of the round's own: no earlier round's question is
	// in the namespace of a semantic lookup
	ask := func(q, extra string) string {
		return `{"model":"cached_qa","messages":[{"role":"system","content":"Round ` + round + `"},{"role":"user","content":"` + q + `"}]` + extra + `}`
	}
	question := func(extra string) string { return ask("Is there a discount for "+round+"?", extra) }
	// an exact miss is looked up by meaning too: each lookup embeds the
	// question, a request of the router's own
	embedded := g.primary.Served("embed-words").Requests
	asked := func() int { return len(g.primary.RequestsFor("deepseek-chat")) }
	cached := func(body, result string, attempts int, header ...string) (*http.Response, string) {
		t.Helper()
		resp, b := post(body, header...)
		expectModel(t, resp, b, "deepseek-v3.2", "primary", attempts)
		if got := resp.Header.Get("X-LLM-Cache"); got != result {
			t.Fatalf("round %s: X-LLM-Cache %q, want %q; body: %s", round, got, result, b)
		}
		tr.cache[result]++
		return resp, b
	}

	before := asked()
	_, first := cached(question(""), "miss", 1)
	var u struct {
		Usage struct {
			Prompt     int `json:"prompt_tokens"`
			Completion int `json:"completion_tokens"`
			Details    struct {
				Cached int `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
		} `json:"usage"`
	}
	if err := json.Unmarshal([]byte(first), &u); err != nil || u.Usage.Prompt == 0 || u.Usage.Completion == 0 {
		t.Fatalf("no usage in the answer (%v): %s", err, first)
	}
	// what the answer cost (deepseek-v3.2: 0.28 USD per 1M input tokens,
	// 0.028 per 1M cached ones, 0.42 per 1M output tokens), and so what
	// each answer served from the cache saves
	hitTokens := u.Usage.Details.Cached
	cost := (float64(u.Usage.Prompt-hitTokens)*0.28 + float64(hitTokens)*0.028 + float64(u.Usage.Completion)*0.42) / 1e6

	if _, b := cached(question(""), "hit", 0); b != first {
		t.Errorf("round %s: the hit differs from the stored answer:\n%s\n%s", round, b, first)
	}
	_, b := cached(question(`,"stream":true,"stream_options":{"include_usage":true}`), "hit", 0)
	if !strings.HasSuffix(b, "data: [DONE]\n\n") || !strings.Contains(b, `"prompt_tokens"`) {
		t.Errorf("round %s: the stream replayed from the cache: %q", round, b)
	}
	tr.saved += 2 * cost
	cached(question(""), "bypass", 1, "Cache-Control", "no-store")
	if got := asked() - before; got != 2 {
		t.Errorf("round %s: deepseek-chat asked %d times for a miss, two hits and a bypass; want 2 (the hits ask no model)", round, got)
	}

	// the semantic lookup (threshold 0.5, the mock's word vectors): a
	// paraphrase served the stored answer; a negated question, above the
	// threshold, refused by the guard; a question below it; an embedding
	// that fails. Every embedding is a request of the router's own.
	semantic := func(q, header, label string, attempts int) {
		t.Helper()
		resp, b := post(ask(q, ""))
		expectModel(t, resp, b, "deepseek-v3.2", "primary", attempts)
		if got := resp.Header.Get("X-LLM-Cache"); got != header {
			t.Fatalf("round %s: %q: X-LLM-Cache %q, want %q", round, q, got, header)
		}
		tr.cache[label]++
	}
	semantic("Is there a discount for "+round+" please?", "semantic-hit", cacheSemanticHit, 0)
	tr.saved += cost
	semantic("Is there no discount for "+round+"?", "miss", cacheSemanticBlocked, 1)
	semantic("What are the opening hours for "+round+"?", "miss", "miss", 1)
	g.primary.Set("embed-words", mockllm.Behavior{Status: 500, Times: 1})
	semantic("Which discounts apply to "+round+"?", "miss", "miss", 1)

	// past the ttl, every candidate of cached_qa failing: the stale answer,
	// not a 503
	settle() // the clock must not move under a request being counted
	advanceClock(t, 2*time.Minute)
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 503, Times: 1})
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 503, Times: 1})
	resp, b := cached(question(""), "stale", 2)
	if w := resp.Header.Get("Warning"); !strings.Contains(w, "all models unavailable") || b != first {
		t.Errorf("round %s: stale answer with Warning %q, body equal to the stored one: %v", round, w, b == first)
	}
	tr.saved += cost
	tr.sent += g.primary.Served("embed-words").Requests - embedded + 1 // and the one that failed
	settle()
}

// ---------------------------------------------------------------------------
// Checks.

// checkFamilies: every router metric family has series in Prometheus.
func (p *promServer) checkFamilies(t *testing.T) {
	res := p.mustQuery(t, `count by (__name__) ({__name__=~"caddy_llm_router_.+"})`)
	have := map[string]bool{}
	for _, s := range res.samples {
		have[s.metric["__name__"]] = true
	}
	for _, name := range []string{
		"caddy_llm_router_requests_total", "caddy_llm_router_attempts_total",
		"caddy_llm_router_request_duration_seconds_bucket", "caddy_llm_router_request_duration_seconds_count",
		"caddy_llm_router_time_to_first_token_seconds_bucket", "caddy_llm_router_time_to_first_token_seconds_count",
		"caddy_llm_router_tokens_total", "caddy_llm_router_cost_total", "caddy_llm_router_failovers_total",
		"caddy_llm_router_unavailable_total", "caddy_llm_router_health_score", "caddy_llm_router_up",
		"caddy_llm_router_in_flight", "caddy_llm_router_estimated_tokens_total", "caddy_llm_router_hedges_total",
		"caddy_llm_router_hedge_lost_cost_total", "caddy_llm_router_last_resort_attempts_total",
		"caddy_llm_router_rule_cost_exceeded_total",
		"caddy_llm_router_budget_spend", "caddy_llm_router_budget_limit", "caddy_llm_router_budget_warn_at",
		"caddy_llm_router_budget_actions_total", "caddy_llm_router_budget_sync_failures_total",
		"caddy_llm_router_cache_requests_total", "caddy_llm_router_cache_saved_cost_total",
		"caddy_llm_router_cache_entries", "caddy_llm_router_cache_bytes",
	} {
		if !have[name] {
			t.Errorf("Prometheus has no series of %s", name)
		}
	}
	for _, q := range []string{
		`caddy_llm_router_tokens_total{model="deepseek-v3.2",provider="primary",type="cached_input"} > 0`,
		`caddy_llm_router_failovers_total{reason="server_error"} > 0`,
		`caddy_llm_router_failovers_total{reason="rate_limited"} > 0`,
		`caddy_llm_router_unavailable_total{route="simple_qa"} > 0`,
		`caddy_llm_router_time_to_first_token_seconds_count{model="gpt-4.1"} > 0`,
		`caddy_llm_router_requests_total{endpoint="chat"} > 0`,
		`caddy_llm_router_requests_total{route="capped_qa",code="429"} > 0`,
		`caddy_llm_router_cost_total{client="team-a"} > 0`,
		`caddy_llm_router_cost_total{client="team-b"} > 0`,
		`caddy_llm_router_budget_spend{budget="` + promBudget + `",period="day"} > 0`,
		`caddy_llm_router_budget_limit{budget="` + promBudget + `",period="day"} == 0.0000001`,
		`caddy_llm_router_budget_warn_at{budget="` + promBudget + `",period="day"} == 0.8`,
		`caddy_llm_router_budget_sync_failures_total{budget="` + promBudget + `"} > 0`,
		`caddy_llm_router_cache_requests_total{route="cached_qa",result="hit"} > 0`,
		`caddy_llm_router_cache_requests_total{route="cached_qa",result="miss"} > 0`,
		`caddy_llm_router_cache_requests_total{route="cached_qa",result="stale"} > 0`,
		`caddy_llm_router_cache_requests_total{route="cached_qa",result="bypass"} > 0`,
		`caddy_llm_router_cache_saved_cost_total{currency="USD"} > 0`,
		`caddy_llm_router_cache_entries > 0`,
		`caddy_llm_router_cache_bytes > 0`,
	} {
		if res := p.mustQuery(t, q); len(res.samples) == 0 {
			t.Errorf("no data: %s", q)
		}
	}
}

// checkExprs: every dashboard expression succeeds and returns data.
func (p *promServer) checkExprs(t *testing.T, exprs []string) {
	for _, e := range exprs {
		res, err := p.query(e)
		switch {
		case err != nil:
			t.Errorf("dashboard expression failed: %v\n%s", err, e)
		case res.resultType == "scalar" || res.resultType == "string":
		case len(res.samples) == 0:
			t.Errorf("dashboard expression returned no data (%s):\n%s", res.resultType, e)
		default:
			nonZero := 0
			for _, s := range res.samples {
				if !math.IsNaN(s.value) && s.value != 0 {
					nonZero++
				}
			}
			if nonZero == 0 {
				t.Logf("note: every value is 0 or NaN for: %s", e)
			}
		}
	}
}

// checkModelVariable: the dashboard's $model variable,
// label_values(caddy_llm_router_requests_total, model), lists the models.
func (p *promServer) checkModelVariable(t *testing.T) {
	var models []string
	p.mustGet(t, "/api/v1/label/model/values?"+url.Values{"match[]": {"caddy_llm_router_requests_total"}}.Encode(), &models)
	for _, m := range []string{"deepseek-v3.2", "gemini-2.5-flash", "gpt-4.1", "claude-sonnet-4.5"} {
		if !slices.Contains(models, m) {
			t.Errorf("$model values %v lack %s", models, m)
		}
	}
}

// checkSameAsCaddy: after the last traffic, Prometheus' latest value of
// every router series equals Caddy's own /metrics.
func (p *promServer) checkSameAsCaddy(t *testing.T, caddy series) {
	res := p.mustQuery(t, `{__name__=~"caddy_llm_router_.+",job="`+promJob+`"}`)
	prom := series{}
	for _, s := range res.samples {
		name := s.metric["__name__"]
		if strings.HasSuffix(name, "_bucket") {
			continue // scrape() keeps a histogram's _count and _sum only
		}
		var labels []string
		for k, v := range s.metric {
			if k != "__name__" && k != "job" && k != "instance" {
				labels = append(labels, k, v)
			}
		}
		prom[sel(name, labels...)] = s.value
	}
	// Prometheus drops empty labels (the model="" and provider="" of a
	// request no deployment answered)
	norm := series{}
	for k, v := range caddy {
		k = emptyLabel.ReplaceAllString(k, "")
		k = strings.Replace(k, "{,", "{", 1)
		norm[k] = v
	}
	caddy = norm
	for k, v := range caddy {
		pv, ok := prom[k]
		switch {
		case !ok:
			t.Errorf("Prometheus has no %s (Caddy: %v)", k, v)
		case k == sel("caddy_llm_router_budget_sync_failures_total", "budget", promBudget):
			// the blocked budget's grows every budget_sync (1s):
			// Prometheus' last scrape and Caddy's differ by a few (the
			// others' series exist at 0 and are compared below)
			if pv <= 0 || v <= 0 {
				t.Errorf("%s: Prometheus %v, Caddy %v; want both > 0", k, pv, v)
			}
		case pv != v:
			t.Errorf("%s: Prometheus %v, Caddy %v", k, pv, v)
		}
	}
	for k, v := range prom {
		if _, ok := caddy[k]; !ok {
			t.Errorf("Prometheus has %s = %v, Caddy's /metrics has not", k, v)
		}
	}
	if len(caddy) == 0 {
		t.Error("Caddy's /metrics has no router series")
	}
}

var emptyLabel = regexp.MustCompile(`,?[a-zA-Z_][a-zA-Z0-9_]*=""`)

// sumOf adds up the series of name in s whose labels include the given
// ones, whatever their other labels (e.g. every client).
func sumOf(s series, name string, labels ...string) float64 {
	total := 0.0
	for k, v := range s {
		inner, ok := strings.CutPrefix(k, name+"{")
		if !ok {
			continue
		}
		inner = "," + strings.TrimSuffix(inner, "}") + ","
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			match = match && strings.Contains(inner, fmt.Sprintf(",%s=%q,", labels[i], labels[i+1]))
		}
		if match {
			total += v
		}
	}
	return total
}

// checkDeltas: what this test added to the token, cost and request series
// in Prometheus is what the mocks served, summed over clients, and what
// each client was answered; the budget acted as planned; the response
// cache counted the results the rounds caused and what they saved.
func (p *promServer) checkDeltas(t *testing.T, g *gateway, before series, traffic promTraffic) {
	deployments := []struct {
		model, provider string
		mock            *mockllm.Server
		upstream        string
		in, out, cached float64 // built-in prices per million tokens
	}{
		{"deepseek-v3.2", "primary", g.primary, "deepseek-chat", 0.28, 0.42, 0.028},
		{"gemini-2.5-flash", "primary", g.primary, "gemini-2.5-flash", 0.30, 2.50, 0.075},
		{"gpt-4.1", "primary", g.primary, "gpt-4.1", 2, 8, 0.50},
		{"claude-sonnet-4.5", "backup", g.backup, "claude-sonnet-4.5", 3, 15, 0.30},
	}
	for _, d := range deployments {
		served := d.mock.Served(d.upstream)
		if served.Requests == 0 || served.Cached == 0 {
			t.Errorf("%s: the mock served %+v; the traffic should reach every deployment, with cached tokens", d.model, served)
		}
		// every client: the mocks served the team's answers too (other
		// tests' series of other clients are in before)
		match := fmt.Sprintf(`model=%q,provider=%q`, d.model, d.provider)
		byType := map[string]float64{}
		for _, s := range p.mustQuery(t, `sum by (type) (caddy_llm_router_tokens_total{`+match+`})`).samples {
			byType[s.metric["type"]] = s.value
		}
		for _, c := range []struct {
			typ  string
			want int
		}{{"input", served.Prompt}, {"output", served.Completion}, {"cached_input", served.Cached}} {
			got := byType[c.typ] - sumOf(before, "caddy_llm_router_tokens_total", "model", d.model, "provider", d.provider, "type", c.typ)
			if got != float64(c.want) {
				t.Errorf("%s/%s %s tokens: Prometheus +%v, the mock served %d", d.model, d.provider, c.typ, got, c.want)
			}
		}
		cost := p.mustScalarish(t, `sum(caddy_llm_router_cost_total{`+match+`,currency="USD"})`)
		got := cost - sumOf(before, "caddy_llm_router_cost_total", "model", d.model, "provider", d.provider, "currency", "USD")
		want := (float64(served.Prompt-served.Cached)*d.in + float64(served.Cached)*d.cached + float64(served.Completion)*d.out) / 1e6
		if math.Abs(got-want) > 1e-9 {
			t.Errorf("%s/%s cost: Prometheus +%v USD, want %v (%d+%d tokens, %d cached, at %v/%v/%v per M)", d.model, d.provider, got, want, served.Prompt, served.Completion, served.Cached, d.in, d.out, d.cached)
		}
	}

	// the input and output tokens of each team's client label are those of
	// the answers it got (the rest, client "", follows from the totals
	// above)
	clients := map[string]float64{}
	for _, s := range p.mustQuery(t, `sum by (client) (caddy_llm_router_tokens_total{type=~"input|output"})`).samples {
		clients[s.metric["client"]] = s.value
	}
	for client, want := range traffic.tokens {
		got := clients[client] - sumOf(before, "caddy_llm_router_tokens_total", "client", client, "type", "input") -
			sumOf(before, "caddy_llm_router_tokens_total", "client", client, "type", "output")
		if got != float64(want) {
			t.Errorf("client %q: Prometheus +%v input and output tokens, the answers it got had %d", client, got, want)
		}
	}
	for _, r := range promRounds {
		if traffic.tokens[r.client] == 0 {
			t.Errorf("client %q was answered nothing", r.client)
		}
	}

	if got := p.mustScalarish(t, `sum(caddy_llm_router_requests_total)`) - sumOf(before, "caddy_llm_router_requests_total"); got != float64(traffic.sent) {
		t.Errorf("requests_total: Prometheus +%v, %d requests sent", got, traffic.sent)
	}
	// each round: one of each action
	for _, action := range []string{"warned", "downgraded", "refused"} {
		q := fmt.Sprintf(`sum(caddy_llm_router_budget_actions_total{budget=%q,action=%q})`, promBudget, action)
		if got := p.mustScalarish(t, q) - sumOf(before, "caddy_llm_router_budget_actions_total", "budget", promBudget, "action", action); got != float64(len(promRounds)) {
			t.Errorf("budget_actions_total{action=%q}: Prometheus +%v, want %d (one a round)", action, got, len(promRounds))
		}
	}
	if got := p.mustScalarish(t, `sum(caddy_llm_router_requests_total{route="capped_qa",code="429",endpoint="chat"})`) -
		sumOf(before, "caddy_llm_router_requests_total", "route", "capped_qa", "code", "429"); got != float64(len(promRounds)) {
		t.Errorf("requests_total{route=capped_qa,code=429}: Prometheus +%v, want %d refusals", got, len(promRounds))
	}
	if got := p.mustScalarish(t, `sum(caddy_llm_router_unavailable_total{route="simple_qa"})`) - before[sel("caddy_llm_router_unavailable_total", "route", "simple_qa")]; got != 2 {
		t.Errorf("unavailable_total{route=simple_qa}: Prometheus +%v, want 2", got)
	}

	// the response cache: each result as often as the rounds caused it,
	// on cached_qa only
	total := func(q string) float64 { // 0 for no series
		sum := 0.0
		for _, s := range p.mustQuery(t, q).samples {
			sum += s.value
		}
		return sum
	}
	for _, result := range promCacheResults {
		want := traffic.cache[result]
		if want == 0 {
			t.Errorf("the traffic caused no cache %s", result)
		}
		q := fmt.Sprintf(`sum(caddy_llm_router_cache_requests_total{route="cached_qa",result=%q})`, result)
		if got := total(q) - sumOf(before, "caddy_llm_router_cache_requests_total", "route", "cached_qa", "result", result); got != float64(want) {
			t.Errorf("cache_requests_total{route=cached_qa,result=%q}: Prometheus +%v, want %d", result, got, want)
		}
	}
	cachedQA := 0
	for _, n := range traffic.cache {
		cachedQA += n
	}
	if got := total(`sum(caddy_llm_router_cache_requests_total)`) - sumOf(before, "caddy_llm_router_cache_requests_total"); got != float64(cachedQA) {
		t.Errorf("cache_requests_total: Prometheus +%v over every route, want %d (cached_qa's: no other route is cached)", got, cachedQA)
	}
	got := total(`sum(caddy_llm_router_cache_saved_cost_total{currency="USD"})`) - sumOf(before, "caddy_llm_router_cache_saved_cost_total", "currency", "USD")
	if math.Abs(got-traffic.saved) > 1e-12 {
		t.Errorf("cache_saved_cost_total{currency=USD}: Prometheus +%v, want %v (what the hits and stale answers cost when first given)", got, traffic.saved)
	}
	// a stale answer is an answer, not a 503
	if got := total(`sum(caddy_llm_router_unavailable_total{route="cached_qa"})`) - before[sel("caddy_llm_router_unavailable_total", "route", "cached_qa")]; got != 0 {
		t.Errorf("unavailable_total{route=cached_qa}: Prometheus +%v, want 0 (the stale answers were answers)", got)
	}
}

type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

// checkRules: alerts.yml loaded into the real Prometheus, and every rule
// evaluated without error; the unavailable, budget and stale-answer
// alerts are at least pending where the traffic made them.
func (p *promServer) checkRules(t *testing.T, deadline time.Time) {
	src, err := os.ReadFile(promAlertsPath)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, m := range regexp.MustCompile(`(?m)^\s*- alert:\s*(\S+)`).FindAllSubmatch(src, -1) {
		want = append(want, string(m[1]))
	}
	if len(want) == 0 {
		t.Fatalf("%s: no alert rules", promAlertsPath)
	}

	type rule struct {
		Name           string      `json:"name"`
		Health         string      `json:"health"`
		LastError      string      `json:"lastError"`
		LastEvaluation time.Time   `json:"lastEvaluation"`
		Alerts         []promAlert `json:"alerts"`
	}
	var rules []rule
	evaluatedAfter := time.Now() // after the last traffic reached Prometheus
	for {
		var data struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []rule `json:"rules"`
			} `json:"groups"`
		}
		p.mustGet(t, "/api/v1/rules", &data)
		rules = nil
		for _, g := range data.Groups {
			if g.Name == "llm-router" {
				rules = g.Rules
			}
		}
		evaluated := len(rules) > 0
		for _, r := range rules {
			evaluated = evaluated && r.LastEvaluation.After(evaluatedAfter)
		}
		if evaluated {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rule group llm-router not evaluated in time: %+v\nPrometheus log:\n%s", data, p.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	var names []string
	for _, r := range rules {
		names = append(names, r.Name)
		if r.Health != "ok" || r.LastError != "" {
			t.Errorf("rule %s: health %q, last error %q", r.Name, r.Health, r.LastError)
		}
		var states []string
		for _, a := range r.Alerts {
			states = append(states, a.Labels["model"]+a.Labels["route"]+a.Labels["budget"]+"="+a.State)
		}
		t.Logf("rule %s: health %s, alerts %v", r.Name, r.Health, states)
		active := func(label, value string) bool {
			return slices.ContainsFunc(r.Alerts, func(a promAlert) bool {
				return a.Labels[label] == value && (a.State == "pending" || a.State == "firing")
			})
		}
		switch r.Name {
		case "LLMRouterAllModelsUnavailable":
			if !active("route", "simple_qa") {
				t.Errorf("LLMRouterAllModelsUnavailable is not pending for route simple_qa after two 503 all_models_unavailable: %+v", r.Alerts)
			}
			if active("route", "cached_qa") {
				t.Errorf("LLMRouterAllModelsUnavailable is active for route cached_qa, whose clients got stale answers, not 503s: %+v", r.Alerts)
			}
		case "LLMRouterServingStale":
			// (other routes may be active too: the series of other tests
			// in this process are new to this Prometheus)
			if !active("route", "cached_qa") {
				t.Errorf("LLMRouterServingStale is not pending for route cached_qa after two stale answers: %+v", r.Alerts)
			}
		case "LLMRouterBudgetNearlySpent":
			if !active("budget", promBudget) {
				t.Errorf("LLMRouterBudgetNearlySpent is not pending for budget %s, spent past its limit: %+v", promBudget, r.Alerts)
			}
		case "LLMRouterBudgetSyncFailing":
			if !active("budget", promBudget) {
				t.Errorf("LLMRouterBudgetSyncFailing is not pending for budget %s, whose storage is blocked: %+v", promBudget, r.Alerts)
			}
		}
	}
	for _, w := range want {
		if !slices.Contains(names, w) {
			t.Errorf("alert %s of %s not loaded (loaded: %v)", w, promAlertsPath, names)
		}
	}
}

// ---------------------------------------------------------------------------
// The Prometheus process.

type promServer struct {
	base   string
	log    *syncBuffer
	client *http.Client
	// at is the time queries are evaluated at: that of the last scrape
	// waitScrapeAfter saw succeed ("" for now). A later scrape that times
	// out, as one may on a loaded machine, marks every series stale, and
	// a query at "now" would find none of what that scrape held.
	at string
}

// syncBuffer collects the process' output; it is read while the process
// still writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startPrometheus runs Prometheus on a free port of 127.0.0.1, scraping
// Caddy's admin /metrics every second and evaluating alerts.yml every
// second; it is stopped (and waited for) when the test ends.
func startPrometheus(t *testing.T, bin string) *promServer {
	t.Helper()
	dir := t.TempDir()
	alerts, err := os.ReadFile(promAlertsPath)
	if err != nil {
		t.Fatal(err)
	}
	rulesPath := filepath.Join(dir, "alerts.yml")
	if err := os.WriteFile(rulesPath, alerts, 0o644); err != nil {
		t.Fatal(err)
	}
	admin, err := url.Parse(adminURL)
	if err != nil {
		t.Fatal(err)
	}
	config := map[string]any{
		"global": map[string]any{
			"scrape_interval":     "1s",
			"scrape_timeout":      "1s",
			"evaluation_interval": "1s",
		},
		"rule_files": []string{rulesPath},
		"scrape_configs": []any{map[string]any{
			"job_name":       promJob,
			"metrics_path":   "/metrics",
			"scheme":         "http",
			"static_configs": []any{map[string]any{"targets": []string{admin.Host}}},
		}},
	}
	configPath := filepath.Join(dir, "prometheus.yml")
	b, err := json.MarshalIndent(config, "", "  ") // JSON is YAML
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(configPath, b, 0o644); err != nil {
		t.Fatal(err)
	}

	addr := freeLocalAddr(t)
	p := &promServer{
		base:   "http://" + addr,
		log:    &syncBuffer{},
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin,
		"--config.file="+configPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
	)
	cmd.Stdout, cmd.Stderr = p.log, p.log
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second // then SIGKILL
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cancel()
		<-exited
		if t.Failed() {
			t.Logf("Prometheus log:\n%s", p.log.String())
		}
	})
	return p
}

func freeLocalAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitReady polls /-/ready until Prometheus answers 200.
func (p *promServer) waitReady(t *testing.T, deadline time.Time) {
	t.Helper()
	for {
		resp, err := p.client.Get(p.base + "/-/ready")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus not ready (last: %v)\nPrometheus log:\n%s", err, p.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitScrapeAfter polls until Prometheus holds a successful scrape of Caddy
// that started after t0, so that it includes everything counted before t0.
func (p *promServer) waitScrapeAfter(t *testing.T, t0 time.Time, deadline time.Time) {
	t.Helper()
	target := float64(t0.UnixMilli()) / 1000
	p.at = ""
	for {
		up := p.mustQuery(t, `up{job="`+promJob+`"}`)
		ts := p.mustQuery(t, `timestamp(up{job="`+promJob+`"})`)
		if len(up.samples) == 1 && up.samples[0].value == 1 && len(ts.samples) == 1 && ts.samples[0].value > target {
			p.at = strconv.FormatFloat(ts.samples[0].value, 'f', 3, 64)
			return
		}
		if time.Now().After(deadline) {
			var targets any
			p.mustGet(t, "/api/v1/targets", &targets)
			t.Fatalf("no successful scrape after %v (up: %+v, timestamp: %+v); targets: %+v\nPrometheus log:\n%s",
				t0.Format(time.RFC3339Nano), up.samples, ts.samples, targets, p.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type promSample struct {
	metric map[string]string
	value  float64
}

type promResult struct {
	resultType string
	samples    []promSample // a scalar is one sample without labels
}

// get fetches an API path and decodes its data field into out.
func (p *promServer) get(path string, out any) error {
	resp, err := p.client.Get(p.base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var env struct {
		Status    string          `json:"status"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	if env.Status != "success" {
		return fmt.Errorf("GET %s: status %q, %s: %s", path, env.Status, env.ErrorType, env.Error)
	}
	if err := json.Unmarshal(env.Data, out); err != nil {
		return fmt.Errorf("GET %s: decoding data: %v: %s", path, err, env.Data)
	}
	return nil
}

func (p *promServer) mustGet(t *testing.T, path string, out any) {
	t.Helper()
	if err := p.get(path, out); err != nil {
		t.Fatalf("%v\nPrometheus log:\n%s", err, p.log.String())
	}
}

// query runs an instant query at p.at, else at the current time.
func (p *promServer) query(expr string) (promResult, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	q := url.Values{"query": {expr}}
	if p.at != "" {
		q.Set("time", p.at)
	}
	if err := p.get("/api/v1/query?"+q.Encode(), &data); err != nil {
		return promResult{}, err
	}
	res := promResult{resultType: data.ResultType}
	parseValue := func(pair []json.RawMessage) (float64, error) {
		var s string
		if len(pair) != 2 || json.Unmarshal(pair[1], &s) != nil {
			return 0, fmt.Errorf("bad value %s", pair)
		}
		return strconv.ParseFloat(s, 64)
	}
	switch data.ResultType {
	case "vector":
		var vec []struct {
			Metric map[string]string `json:"metric"`
			Value  []json.RawMessage `json:"value"`
		}
		if err := json.Unmarshal(data.Result, &vec); err != nil {
			return res, err
		}
		for _, s := range vec {
			v, err := parseValue(s.Value)
			if err != nil {
				return res, err
			}
			res.samples = append(res.samples, promSample{s.Metric, v})
		}
	case "scalar":
		var pair []json.RawMessage
		if err := json.Unmarshal(data.Result, &pair); err != nil {
			return res, err
		}
		v, err := parseValue(pair)
		if err != nil {
			return res, err
		}
		res.samples = []promSample{{value: v}}
	default:
		return res, fmt.Errorf("result type %q (an instant query should give a vector or a scalar)", data.ResultType)
	}
	return res, nil
}

func (p *promServer) mustQuery(t *testing.T, expr string) promResult {
	t.Helper()
	res, err := p.query(expr)
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return res
}

// mustScalarish runs a query that must give exactly one value.
func (p *promServer) mustScalarish(t *testing.T, expr string) float64 {
	t.Helper()
	res := p.mustQuery(t, expr)
	if len(res.samples) != 1 {
		t.Fatalf("%s: %d results, want 1: %+v", expr, len(res.samples), res.samples)
	}
	return res.samples[0].value
}
