package llmrouter

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"

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
