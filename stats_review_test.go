package llmrouter

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// embedFallbackRouter is semanticRouter whose embedding model fails over
// to the same upstream model at the backup provider, labelled by client.
const embedFallbackRouter = defaultRouter + `
	client_label {http.request.header.X-Team}
	model embed-words {
		kind embedding
		price 0.02
		fallback embed-backup
	}
	model embed-backup {
		kind embedding
		provider backup
		upstream embed-words
		price 0.02
	}
	cache {
		semantic {
			model embed-words
			threshold 0.9
		}
	}
`

// clientAnswers is the stats' answers of a client label (0 without any).
func clientAnswers(t *testing.T, client string) int64 {
	t.Helper()
	for _, c := range fetchStats(t).Clients {
		if c.Client == client {
			return c.Answers
		}
	}
	return 0
}

// TestClientAnswersOnePerRequest: a client request is one answer in the
// stats' clients section, however many attempts were charged on the way:
// the semantic lookup's embedding, and a failed attempt the provider
// billed before the failover.
func TestClientAnswersOnePerRequest(t *testing.T) {
	g := newGatewayWith(t, globalOptions, cacheLogSite, embedFallbackRouter)
	g.primary.Set("embed-words", mockllm.Behavior{WordVectors: 256})
	// a 200 that is not an answer: charged as estimated, then failed over
	g.primary.Set("deepseek-chat", mockllm.Behavior{Malformed: true})
	done := requestsDone(t)
	const team = "stats-review-answers"
	before := clientAnswers(t, team)
	resp, body := g.ask("Where is my parcel today?", "", "Authorization", clientKey, "X-Team", team)
	expectModel(t, resp, body, "gemini-2.5-flash", "primary", 2)
	waitFor(t, done, "the request to be counted")
	if got := clientAnswers(t, team) - before; got != 1 {
		t.Errorf("one client request counted as %d answers", got)
	}
}

// TestSemanticEmbeddingCostCountsFailedAttempts: the semantic lookup's
// embedding cost is all its attempts cost (what cost_total counts for
// them), not only the attempt that answered, so the cache's net saving is
// not overstated.
func TestSemanticEmbeddingCostCountsFailedAttempts(t *testing.T) {
	g := newGatewayWith(t, globalOptions, cacheLogSite, embedFallbackRouter)
	g.primary.Set("embed-words", mockllm.Behavior{Malformed: true})
	g.backup.Set("embed-words", mockllm.Behavior{WordVectors: 256})
	done := requestsDone(t)
	before, statsBefore := scrape(t), fetchStats(t)
	resp, _ := g.ask("Which sizes does the blue coat come in?", "")
	expectCache(t, resp, "miss")
	waitFor(t, done, "the request to be counted")
	after, statsAfter := scrape(t), fetchStats(t)
	billed := after.delta(before, sel("caddy_llm_router_cost_total", "model", "embed-words", "provider", "primary", "currency", "USD", "client", "")) +
		after.delta(before, sel("caddy_llm_router_cost_total", "model", "embed-backup", "provider", "backup", "currency", "USD", "client", ""))
	if failed := after.delta(before, sel("caddy_llm_router_cost_total", "model", "embed-words", "provider", "primary", "currency", "USD", "client", "")); failed <= 0 {
		t.Fatalf("the failed embedding attempt was not charged (+%v): the test tests nothing", failed)
	}
	if got := after.delta(before, sel("caddy_llm_router_cache_semantic_embedding_cost_total", "currency", "USD")); math.Abs(got-billed) > 1e-15 {
		t.Errorf("cache_semantic_embedding_cost_total +%v, want +%v (what the lookup's attempts were billed)", got, billed)
	}
	embedded := func(s Stats) float64 {
		for _, m := range s.Caches[0].EmbeddingCost {
			if m.Currency == "USD" {
				return m.Amount
			}
		}
		return 0
	}
	if got := embedded(statsAfter) - embedded(statsBefore); math.Abs(got-billed) > 1e-15 {
		t.Errorf("stats embedding_cost +%v, want +%v", got, billed)
	}
}

// TestStatsTellDeploymentsApart: two handlers declaring provider primary
// at different URLs have two deployments of deepseek-v3.2@primary, with
// health and counters of their own; the stats API and `caddy llm-router
// stats` show which is which (the base URL's host and the key's
// fingerprint), and never the key.
func TestStatsTellDeploymentsApart(t *testing.T) {
	g := newGateway(t, defaultRouter)
	atBackup := strings.ReplaceAll(defaultRouter, "{PRIMARY}", "{BACKUP}")
	g.tc.InitServer(globalOptions+"\n"+siteAddress+` {
	handle /a/* {
		llm_router {`+g.fill(defaultRouter)+`
		}
	}
	handle /b/* {
		llm_router {`+g.fill(atBackup)+`
		}
	}
}
`, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	g.backup.Set("deepseek-chat", mockllm.Behavior{})
	for _, prefix := range []string{"/a", "/b"} {
		resp, body := g.postPath(prefix+"/v1/chat/completions", chatBody("simple_qa", false))
		expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	}
	resp, err := http.Get(adminURL + "/llm_router/stats")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("sk-primary-test-key-0001")) {
		t.Fatal("the stats show a provider key")
	}
	var st struct{ Deployments []json.RawMessage }
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	hosts := map[string]int{}
	for _, d := range st.Deployments {
		var id struct{ Model, Provider string }
		if err := json.Unmarshal(d, &id); err != nil {
			t.Fatal(err)
		}
		if id.Model != "deepseek-v3.2" || id.Provider != "primary" {
			continue
		}
		for _, u := range []string{g.primaryURL, g.backupURL} {
			if bytes.Contains(d, []byte(strings.TrimPrefix(u, "http://"))) {
				hosts[u]++
			}
		}
	}
	if hosts[g.primaryURL] != 1 || hosts[g.backupURL] != 1 {
		t.Errorf("deepseek-v3.2@primary rows naming each upstream host: %v; the two deployments cannot be told apart", hosts)
	}
	var table bytes.Buffer
	if err := runStats(&table, strings.TrimPrefix(adminURL, "http://")); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{g.primaryURL, g.backupURL} {
		if !strings.Contains(table.String(), strings.TrimPrefix(u, "http://")) {
			t.Errorf("the stats table does not name %s:\n%s", u, table.String())
		}
	}
}

// sumOf adds up the series of metric name whose labels include every
// name, value pair given.
func (s series) sumOf(name string, labels ...string) float64 { return sumOf(s, name, labels...) }

// TestStatsAgreeWithPrometheus: after a mixed workload (answers, a
// stream, a failover past a billed failure, a hedge whose loser is
// billed, a cache hit, a stream the client leaves, an embeddings request,
// a cache follower, a budget's refusal, a 503), the stats' totals,
// clients, hedges, cache counts and budget spend moved by what the
// Prometheus counters of the same meaning did.
func TestStatsAgreeWithPrometheus(t *testing.T) {
	router := strings.Replace(withHealth("\t\tinterval off"), "first_byte_timeout 2s", "first_byte_timeout 5s\n\t\thedge_after 200ms", 1) + `
	client_label {http.request.header.X-Team}
	model bge-m3 {
		kind embedding
		price 0.02
	}
	cache {
		max_size 1003KB
	}
	budget stats_review {
		match complex_reasoning
		limit 1 per day
		hard 0.0000001
	}
	budget_sync 1h
`
	global, _ := withStorage(t, globalOptions)
	g := newGatewayWith(t, global, cacheLogSite, router)
	done := requestsDone(t)
	const team = "stats-review-mixed"
	as := []string{"Authorization", clientKey, "X-Team", team}
	before, sBefore := scrape(t), fetchStats(t)
	requests := 0
	send := func(path, body string, want int, extra ...string) *http.Response {
		t.Helper()
		resp, b := g.postPath(path, body, append(slices.Clone(as), extra...)...)
		if resp.StatusCode != want {
			t.Fatalf("%s: %d %s, want %d", body, resp.StatusCode, b, want)
		}
		requests++
		waitFor(t, done, "a request to be counted")
		return resp
	}

	send("/v1/chat/completions", question("Where is my order?", false, ""), 200)
	expectCache(t, send("/v1/chat/completions", question("Where is my order?", false, ""), 200), "hit")
	send("/v1/chat/completions", question("Is it raining?", true, ""), 200)
	send("/v1/embeddings", `{"model":"bge-m3","input":"red shoes"}`, 200)
	// a stream and its cache follower
	g.primary.Set("deepseek-chat", mockllm.Behavior{ChunkDelay: 100 * time.Millisecond, Chunks: 4})
	lead := question("Where is the nearest store?", true, "")
	leader := leadStream(context.Background(), t, g.tc.Client, gatewayURL, lead)
	if f := g.readStream(context.Background(), lead, nil); f.err != nil || f.cache != "hit" {
		t.Fatalf("follower: %s %v", f.cache, f.err)
	}
	if l := <-leader; l.err != nil || l.cache != "miss" {
		t.Fatalf("leader: %s %v", l.cache, l.err)
	}
	requests += 2
	waitFor(t, done, "the leader to be counted")
	waitFor(t, done, "the follower to be counted")
	// a budget's hard cap: the first request spends past it, the next is
	// refused
	send("/v1/chat/completions", `{"model":"complex_reasoning","messages":[{"role":"user","content":"Why is the sky blue?"}]}`, 200)
	send("/v1/chat/completions", `{"model":"complex_reasoning","messages":[{"role":"user","content":"Why is the sea blue?"}]}`, 429)
	// a hedge: the first attempt is slow, the second answers, the first
	// is billed as given up mid-generation
	g.primary.Set("deepseek-chat", mockllm.Behavior{Latency: 3 * time.Second})
	// (a request the cache may store is never hedged)
	send("/v1/chat/completions", question("Do you ship abroad?", true, ""), 200, "Cache-Control", "no-store")
	// a stream the client leaves
	g.primary.Set("deepseek-chat", mockllm.Behavior{HoldAfterChunks: 2})
	resp, cancel := g.streamUntil(question("Tell me a story", true, ""), "w1 ")
	cancel()
	resp.Body.Close()
	requests++ // of no client label
	waitFor(t, done, "the abandoned stream to be counted")
	// a 200 that is no answer, billed as estimated, then a failover
	g.primary.Set("deepseek-chat", mockllm.Behavior{Malformed: true})
	send("/v1/chat/completions", question("Can I pay later?", false, ""), 200)
	// every model down: the router's own 503
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 500})
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 500})
	send("/v1/chat/completions", question("Anyone there?", false, ""), 503)

	after, sAfter := scrape(t), fetchStats(t)
	dm := func(name string, labels ...string) float64 {
		return after.sumOf(name, labels...) - before.sumOf(name, labels...)
	}
	usd := func(ms []MoneyStats) float64 {
		for _, m := range ms {
			if m.Currency == "USD" {
				return m.Amount
			}
		}
		return 0
	}
	near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-12+1e-9*math.Abs(b) }
	ta, tb := sAfter.Totals, sBefore.Totals
	answered := dm("caddy_llm_router_requests_total") - dm("caddy_llm_router_requests_total", "provider", "")
	if got := float64(ta.Requests - tb.Requests); got != answered {
		t.Errorf("stats requests +%v, requests_total answered by a deployment +%v", got, answered)
	}
	if got, want := float64(ta.Attempts-tb.Attempts), dm("caddy_llm_router_attempts_total"); got != want {
		t.Errorf("stats attempts +%v, attempts_total +%v", got, want)
	}
	for _, c := range []struct {
		typ       string
		got, want int64
	}{
		{"input", ta.Tokens.Input, tb.Tokens.Input},
		{"output", ta.Tokens.Output, tb.Tokens.Output},
		{"cached_input", ta.Tokens.CachedInput, tb.Tokens.CachedInput},
	} {
		if got, want := float64(c.got-c.want), dm("caddy_llm_router_tokens_total", "type", c.typ); got != want {
			t.Errorf("stats %s tokens +%v, tokens_total +%v", c.typ, got, want)
		}
	}
	if got, want := usd(ta.Costs)-usd(tb.Costs), dm("caddy_llm_router_cost_total", "currency", "USD"); !near(got, want) || want <= 0 {
		t.Errorf("stats cost +%v, cost_total +%v", got, want)
	}

	// the client's own figures: all its billed attempts, one answer a
	// request a deployment answered (not the hit, not the 503)
	client := func(s Stats) ClientStats {
		for _, c := range s.Clients {
			if c.Client == team {
				return c
			}
		}
		return ClientStats{}
	}
	ca, cb := client(sAfter), client(sBefore)
	if got := ca.Answers - cb.Answers; got != int64(requests-6) {
		t.Errorf("client answers +%d, want %d (requests %d, less the cache hit, the refusal, the 503 and the three unlabelled streams)", got, requests-6, requests)
	}
	if got, want := float64(ca.Tokens.Input-cb.Tokens.Input), dm("caddy_llm_router_tokens_total", "type", "input", "client", team); got != want || want <= 0 {
		t.Errorf("client input tokens +%v, tokens_total{client} +%v", got, want)
	}
	if got, want := usd(ca.Costs)-usd(cb.Costs), dm("caddy_llm_router_cost_total", "client", team); !near(got, want) || want <= 0 {
		t.Errorf("client cost +%v, cost_total{client} +%v", got, want)
	}

	// hedges, and what their losers cost
	var hedges, lost float64
	for _, s := range []Stats{sAfter, sBefore} {
		sign := 1.0
		if s.GeneratedAt.Equal(sBefore.GeneratedAt) {
			sign = -1
		}
		for _, d := range s.Deployments {
			hedges += sign * float64(d.Hedges)
			lost += sign * usd(d.HedgeLostCosts)
		}
	}
	if want := dm("caddy_llm_router_hedges_total"); hedges != want || want != 1 {
		t.Errorf("stats hedges +%v, hedges_total +%v, want 1", hedges, want)
	}
	if want := dm("caddy_llm_router_hedge_lost_cost_total"); !near(lost, want) || want <= 0 {
		t.Errorf("stats hedge_lost_costs +%v, hedge_lost_cost_total +%v", lost, want)
	}

	// the cache's results
	if len(sAfter.Caches) != len(sBefore.Caches) {
		t.Fatalf("caches %d then %d", len(sBefore.Caches), len(sAfter.Caches))
	}
	var hits, misses int64
	for i := range sAfter.Caches {
		hits += sAfter.Caches[i].Hits - sBefore.Caches[i].Hits
		misses += sAfter.Caches[i].Misses - sBefore.Caches[i].Misses
	}
	if want := dm("caddy_llm_router_cache_requests_total", "result", "hit"); float64(hits) != want || want != 2 {
		t.Errorf("stats cache hits +%d, cache_requests_total{hit} +%v, want 2 (a hit, a follower)", hits, want)
	}
	if want := dm("caddy_llm_router_cache_requests_total", "result", "miss"); float64(misses) != want {
		t.Errorf("stats cache misses +%d, cache_requests_total{miss} +%v", misses, want)
	}

	// the budget's spend is what its deployments were billed
	b := budgetOf(t, "stats_review")
	billed := dm("caddy_llm_router_cost_total", "model", "gpt-4.1") + dm("caddy_llm_router_cost_total", "model", "claude-sonnet-4.5")
	if len(b.Periods) != 1 || len(b.Periods[0].TopKeys) != 1 || !near(b.Periods[0].TopKeys[0].Spent.Amount, billed) || billed <= 0 {
		t.Errorf("budget spend %+v, cost_total of its deployments +%v", b.Periods, billed)
	}
	if b.Actions["refused"] != 1 || dm("caddy_llm_router_budget_actions_total", "budget", "stats_review", "action", "refused") != 1 {
		t.Errorf("refusals: stats %v, budget_actions_total{refused} +%v, want 1", b.Actions, dm("caddy_llm_router_budget_actions_total", "budget", "stats_review", "action", "refused"))
	}
}
