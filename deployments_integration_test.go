package llmrouter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// TestDistinctDeploymentsDoNotMerge: an alias of an upstream id and two
// providers on one URL and key are distinct deployments: own stats rows,
// own health gauges, own prices in the cost projection.
func TestDistinctDeploymentsDoNotMerge(t *testing.T) {
	router := `
	provider primary {
		base_url {PRIMARY}/v1
		api_key sk-primary-test-key-0001
	}
	provider twin {
		base_url {PRIMARY}/v1
		api_key sk-primary-test-key-0001
	}
	model deepseek-v3.2 {
		upstream deepseek-chat
	}
	model cheap {
		upstream deepseek-chat
		price 0.06
	}
	model gemini-2.5-flash
	model gemini-2.5-flash {
		provider twin
		priority 2
		price 5
	}
	health_check {
		interval off
	}
`
	g := newGateway(t, router)
	done := requestsDone(t)
	for _, model := range []string{"deepseek-v3.2", "cheap", "cheap", "gemini-2.5-flash"} {
		resp, body := g.post(chatBody(model, false))
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", model, resp.StatusCode, body)
		}
		waitFor(t, done, "a request to be counted")
	}
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 503, Times: 1})
	resp, body := g.post(chatBody("gemini-2.5-flash", false))
	expectModel(t, resp, body, "gemini-2.5-flash", "twin", 2)
	waitFor(t, done, "a request to be counted")

	want := map[string]struct {
		requests, attempts int64
		score              int
	}{
		"deepseek-v3.2@primary":    {1, 1, 100},
		"cheap@primary":            {2, 2, 100},
		"gemini-2.5-flash@primary": {1, 2, 90},
		"gemini-2.5-flash@twin":    {1, 1, 100},
	}
	stats := fetchStats(t)
	rows := map[string]DeploymentStats{}
	for _, d := range stats.Deployments {
		rows[d.Model+"@"+d.Provider] = d
	}
	metrics := scrape(t)
	for id, w := range want {
		d, ok := rows[id]
		if !ok {
			t.Errorf("%s: no stats row", id)
			continue
		}
		if d.Requests != w.requests || d.Attempts != w.attempts || d.HealthScore != w.score {
			t.Errorf("%s: requests %d attempts %d score %d, want %d %d %d", id, d.Requests, d.Attempts, d.HealthScore, w.requests, w.attempts, w.score)
		}
		model, provider, _ := strings.Cut(id, "@")
		if got, ok := metrics[sel("caddy_llm_router_health_score", "model", model, "provider", provider)]; !ok || got != float64(w.score) {
			t.Errorf("%s: health_score gauge %v (present %v), want %d", id, got, ok, w.score)
		}
		if _, ok := metrics[sel("caddy_llm_router_up", "model", model, "provider", provider)]; !ok {
			t.Errorf("%s: no up gauge", id)
		}
	}

	// cost --address prices each deployment's traffic at its own price
	cfgPath := filepath.Join(t.TempDir(), "Caddyfile")
	cf := globalOptions + "\n" + siteAddress + " {\n\tllm_router {" +
		strings.NewReplacer("{PRIMARY}", g.primaryURL).Replace(router) + "\n\t}\n}\n"
	if err := os.WriteFile(cfgPath, []byte(cf), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	opts := costOptions{Requests: 5_000_000, Tokens: 500, OutputRatio: 0.25}
	if err := runCost(&out, cfgPath, "", opts, "", strings.TrimPrefix(adminURL, "http://"), true); err != nil {
		t.Fatal(err)
	}
	report := out.String()
	mix := report[strings.Index(report, "At the observed mix"):]
	cheapRow := regexp.MustCompile(`(?m)^cheap\s+primary\s+2\s+40%\s+(\S+)\s+(\S+)\s+(\S+) USD$`).FindStringSubmatch(mix)
	if cheapRow == nil {
		t.Fatalf("no row for cheap in the observed mix:\n%s", mix)
	}
	st := rows["cheap@primary"]
	perRequest := float64(st.Tokens.Input+st.Tokens.Output) / 2
	wantMonthly := 2_000_000 * perRequest * 0.06 / 1e6
	if cheapRow[3] != humanAmount(wantMonthly) {
		t.Errorf("cheap priced at %s USD a month, want %s (its own price 0.06)\n%s", cheapRow[3], humanAmount(wantMonthly), mix)
	}
}

// TestEmbeddingDeployments: an embedding model is probed with a one-word
// /embeddings request and stays up; chat requests never reach it and
// embeddings requests naming no model go to it.
func TestEmbeddingDeployments(t *testing.T) {
	g := newGateway(t, defaultRouter+`
	model text-embedding-3-small
	model bge-m3 {
		kind embedding
		priority 2
	}
	health_check {
		interval 20ms
	}
`)
	events := probeEvents(t, deploymentID{"bge-m3", "primary"})
	for range 3 {
		if r := waitFor(t, events, "a probe of bge-m3"); r != probeOK {
			t.Fatalf("embedding probe: %s", r)
		}
	}
	probes := g.primary.RequestsFor("bge-m3")
	if len(probes) == 0 || probes[0].Path != "/v1/embeddings" || string(probes[0].Body) != `{"model":"bge-m3","input":"ping"}` {
		t.Fatalf("embedding probes: %+v", probes)
	}
	for _, id := range []deploymentID{{"bge-m3", "primary"}, {"text-embedding-3-small", "primary"}} {
		if st := statsFor(t, g, id.model, id.provider); st.State != stateUp || st.HealthScore != 100 || st.Kind != "embedding" {
			t.Errorf("%s: %s %d %s", id, st.State, st.HealthScore, st.Kind)
		}
	}

	resp, body := g.postPath("/v1/embeddings", `{"input":"red shoes"}`)
	expectModel(t, resp, body, "text-embedding-3-small", "primary", 1)
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 500})
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 500})
	resp, body = g.post(chatBody("", false))
	if resp.StatusCode != 503 || strings.Contains(body, "embed") || strings.Contains(body, "bge") {
		t.Errorf("a chat request reached an embedding model: %d %s", resp.StatusCode, body)
	}
}

// TestProbeBody: probe_body replaces the probe (model set to the upstream
// id), per model or for all chat models; a probe the provider rejects is
// logged with the provider's message.
func TestProbeBody(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	global := strings.Replace(globalOptions, "level WARN", "level INFO\n\t\toutput file "+logFile, 1)
	router := strings.NewReplacer(
		"model gemini-2.5-flash\n", "model gemini-2.5-flash {\n\t\tprobe_body `{\"input\":\"ping\",\"max_output_tokens\":16}`\n\t}\n",
		"default_route simple_qa", "default_route simple_qa\n\thealth_check {\n\t\tinterval 20ms\n\t\tprobe_body `{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_completion_tokens\":16}`\n\t}",
	).Replace(defaultRouter)
	const providerMsg = "Unsupported parameter: 'max_completion_tokens' is not supported with this model."
	g := newGatewayWith(t, global, "", router)
	g.primary.Set("gpt-4.1", mockllm.Behavior{Status: 400, Body: `{"error":{"message":"` + providerMsg + `","type":"invalid_request_error","param":"max_completion_tokens","code":"unsupported_parameter"}}`})
	deepseek := probeEvents(t, deploymentID{"deepseek-v3.2", "primary"})
	waitFor(t, deepseek, "a probe of deepseek")
	waitFor(t, deepseek, "a second probe of deepseek")

	if got := g.primary.RequestsFor("deepseek-chat"); len(got) == 0 || !jsonEqual(got[0].Body, []byte(`{"model":"deepseek-chat","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":16}`)) {
		t.Errorf("deepseek's probes: %+v", got)
	}
	if got := g.primary.RequestsFor("gemini-2.5-flash"); len(got) == 0 || !jsonEqual(got[0].Body, []byte(`{"model":"gemini-2.5-flash","input":"ping","max_output_tokens":16}`)) {
		t.Errorf("gemini's own probe body: %+v", got)
	}
	if st := statsFor(t, g, "gpt-4.1", "primary"); !strings.Contains(st.LastError, providerMsg) {
		t.Errorf("gpt-4.1's last error %q does not give the provider's reason", st.LastError)
	}
	logs, _ := os.ReadFile(logFile)
	var rejections int
	for _, line := range bytes.Split(logs, []byte("\n")) {
		var entry struct {
			Msg, Model, Detail string
		}
		if json.Unmarshal(line, &entry) == nil && strings.HasPrefix(entry.Msg, "health probe rejected") && entry.Model == "gpt-4.1" {
			rejections++
			if !strings.Contains(entry.Detail, providerMsg) {
				t.Errorf("log detail %q lacks the provider's message", entry.Detail)
			}
		}
	}
	if rejections != 1 {
		t.Errorf("%d rejection logs for gpt-4.1, want 1 (once per distinct answer):\n%s", rejections, logs)
	}
}

// TestCostFormsAndCurrencies: a sub-cent cost shows its digits, and two
// handlers in different currencies are totalled per currency.
func TestCostFormsAndCurrencies(t *testing.T) {
	g := newGateway(t, defaultRouter)
	body := g.fill(defaultRouter)
	g.tc.InitServer(globalOptions+"\n"+siteAddress+` {
	handle /a/* {
		llm_router {`+body+`
			currency CNY 7.2
		}
	}
	handle /b/* {
		llm_router {`+body+`
		}
	}
}
`, "caddyfile")
	for _, prefix := range []string{"/a", "/b"} {
		resp, body := g.postPath(prefix+"/v1/chat/completions", chatBody("simple_qa", false))
		expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	}
	st := statsFor(t, g, "deepseek-v3.2", "primary")
	served := g.primary.Served("deepseek-chat")
	usd := (float64(served.Prompt)*0.28 + float64(served.Completion)*0.42) / 2 / 1e6 // deepseek-v3.2's built-in prices, one of two answers
	if len(st.Costs) != 2 || st.Costs[0].Currency != "CNY" || st.Costs[1].Currency != "USD" {
		t.Fatalf("costs %+v, want CNY and USD apart", st.Costs)
	}
	subCent := regexp.MustCompile(`^0\.0*[1-9][0-9]{0,2} USD$`)
	if !subCent.MatchString(st.Costs[1].Human) || st.Costs[1].Human != humanAmount(usd)+" USD" {
		t.Errorf("a cost of %v USD shows as %q", usd, st.Costs[1].Human)
	}
	tot := fetchStats(t).Totals
	var codes []string
	for _, c := range tot.Costs {
		codes = append(codes, c.Currency)
	}
	if strings.Join(codes, ",") != "CNY,USD" {
		t.Errorf("totals by currency %v, want CNY and USD", codes)
	}
	var table bytes.Buffer
	if err := runStats(&table, strings.TrimPrefix(adminURL, "http://")); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), st.Costs[1].Human) || strings.Contains(table.String(), "0.00 USD") {
		t.Errorf("stats table:\n%s", table.String())
	}
}

func TestHumanAmount(t *testing.T) {
	for v, want := range map[float64]string{
		0: "0.00", 0.000614: "0.000614", 0.00061449: "0.000614", 0.0099: "0.0099", 0.5: "0.50", 0.123456: "0.123",
		0.999: "1.00", 1: "1.00", 311.0868: "311.09", 1234567.891: "1,234,567.89",
	} {
		if got := humanAmount(v); got != want {
			t.Errorf("humanAmount(%v) = %q, want %q", v, got, want)
		}
	}
	if got := fmt.Sprint(humanMoney(0.000614, "CNY")); got != "0.000614 CNY" {
		t.Errorf("humanMoney = %q", got)
	}
}

// TestTwoHandlersOneNameTwoUpstreams: two handlers that each name a
// provider "primary", at different upstreams (two tenants' accounts),
// shared one health state by the name: the first's 429 cooled down the
// second's deployment, whose own upstream was healthy, and its requests
// went to a lower priority.
func TestTwoHandlersOneNameTwoUpstreams(t *testing.T) {
	g := newGateway(t, defaultRouter)
	g.tc.InitServer(globalOptions+"\n"+siteAddress+` {
	handle /a/* {
		llm_router {
			provider primary {
				base_url `+g.primaryURL+`/v1
			}
			model m
		}
	}
	handle /b/* {
		llm_router {
			provider primary {
				base_url `+g.backupURL+`/v1
			}
			provider spare {
				base_url `+g.backupURL+`/v1
			}
			model m
			model m {
				provider spare
				priority 2
			}
		}
	}
}
`, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	g.primary.Set("m", mockllm.Behavior{Status: 429, RetryAfter: "600"})
	resp, body := g.postPath("/a/v1/chat/completions", chatBody("m", false))
	if resp.StatusCode != 503 {
		t.Fatalf("/a: %d %s", resp.StatusCode, body)
	}
	resp, body = g.postPath("/b/v1/chat/completions", chatBody("m", false))
	expectModel(t, resp, body, "m", "primary", 1)
}
