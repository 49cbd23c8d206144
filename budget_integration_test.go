package llmrouter

import (
	"bytes"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// budgetRouter is defaultRouter where every model costs 1000 a million
// tokens, so that a chatBody answer (7 prompt + 10 completion tokens)
// costs exactly 0.017 USD.
var budgetRouter = strings.NewReplacer(
	"model deepseek-v3.2 {\n\t\tupstream deepseek-chat\n\t}", "model deepseek-v3.2 {\n\t\tupstream deepseek-chat\n\t\tprice 1000\n\t}",
	"model gemini-2.5-flash\n", "model gemini-2.5-flash {\n\t\tprice 1000\n\t}\n",
	"model gpt-4.1 {\n\t\tfallback claude-sonnet-4.5\n\t}", "model gpt-4.1 {\n\t\tfallback claude-sonnet-4.5\n\t\tprice 1000\n\t}",
	"model claude-sonnet-4.5 {\n\t\tprovider backup\n\t}", "model claude-sonnet-4.5 {\n\t\tprovider backup\n\t\tprice 1000\n\t}",
).Replace(defaultRouter)

const costPerAnswer = 0.017 // USD, of chatBody at budgetRouter's prices

// withStorage adds a file_system storage in a fresh directory to the
// global options, so that no test sees another's budget spend.
func withStorage(t *testing.T, global string) (string, string) {
	dir := t.TempDir()
	return strings.Replace(global, "grace_period 1ns", "grace_period 1ns\n\tstorage file_system "+dir, 1), dir
}

// setClock moves the router's clock to at for the rest of the test.
func setClock(t *testing.T, at time.Time) {
	d := at.Sub(now())
	clockSkew.Add(int64(d))
	t.Cleanup(func() { clockSkew.Add(-int64(d)) })
}

// budgetOf reads one budget from the stats API.
func budgetOf(t *testing.T, name string) BudgetStats {
	t.Helper()
	for _, b := range fetchStats(t).Budgets {
		if b.Name == name {
			return b
		}
	}
	t.Fatalf("no budget %s in the stats", name)
	return BudgetStats{}
}

// TestBudgetDowngradeRefuseRollover: a daily budget downgrades at its
// limit, refuses past its hard cap with OpenAI's insufficient_quota, and
// starts afresh at midnight in its time zone.
func TestBudgetDowngradeRefuseRollover(t *testing.T) {
	hcm, _ := time.LoadLocation("Asia/Ho_Chi_Minh")
	now0 := now().In(hcm)
	setClock(t, time.Date(now0.Year(), now0.Month(), now0.Day(), 23, 58, 0, 0, hcm))

	global, _ := withStorage(t, globalOptions)
	site := "\theader >X-Budget-Log {http.llm_router.budget}\n"
	g := newGatewayWith(t, global, site, budgetRouter+`
	budget reasoning_daily {
		limit 0.03 per day
		match complex_reasoning simple_qa
		downgrade simple_qa
		hard 0.05
		timezone Asia/Ho_Chi_Minh
	}
	budget_sync 1h
`)
	done := requestsDone(t)
	before := scrape(t)
	for i := range 2 {
		resp, body := g.post(chatBody("complex_reasoning", false))
		expectModel(t, resp, body, "gpt-4.1", "primary", 1)
		if h := resp.Header.Get("X-LLM-Budget"); h != "" {
			t.Errorf("request %d: X-LLM-Budget %q under the limit", i+1, h)
		}
		waitFor(t, done, "a request to be counted")
	}
	// 0.034 spent: at the limit, served from the downgrade route
	resp, body := g.post(chatBody("complex_reasoning", false))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	if resp.Header.Get("X-LLM-Budget") != "downgraded (reasoning_daily)" || resp.Header.Get("X-LLM-Route") != "simple_qa" ||
		resp.Header.Get("X-Budget-Log") != "downgraded (reasoning_daily)" {
		t.Errorf("downgrade headers: budget %q route %q placeholder %q", resp.Header.Get("X-LLM-Budget"), resp.Header.Get("X-LLM-Route"), resp.Header.Get("X-Budget-Log"))
	}
	waitFor(t, done, "a request to be counted")

	// 0.051 spent (the downgrade route is covered too): past the hard
	// cap, refused until midnight
	resp, body = g.post(chatBody("complex_reasoning", false))
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("past the hard cap: %d %s", resp.StatusCode, body)
	}
	waitFor(t, done, "a request to be counted")
	e := apiErr(t, body)
	if e.Type != "insufficient_quota" || e.Code != "budget_exceeded" || !strings.Contains(e.Message, "reasoning_daily") || !strings.Contains(e.Message, "+07:00") {
		t.Errorf("refusal %+v", e)
	}
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 50 || ra > 121 {
		t.Errorf("Retry-After %q, want the seconds to midnight in Ho Chi Minh City (about 2 minutes)", resp.Header.Get("Retry-After"))
	}

	b := budgetOf(t, "reasoning_daily")
	if len(b.Periods) != 1 || len(b.Periods[0].TopKeys) != 1 || math.Abs(b.Periods[0].TopKeys[0].Spent.Amount-3*costPerAnswer) > 1e-9 {
		t.Errorf("budget stats %+v, want 0.051 spent", b.Periods)
	}
	if b.Actions["warned"] != 1 || b.Actions["downgraded"] != 1 || b.Actions["refused"] != 1 {
		t.Errorf("actions %v, want one of each", b.Actions)
	}
	after := scrape(t)
	for key, want := range map[string]float64{
		sel("caddy_llm_router_budget_spend", "budget", "reasoning_daily", "period", "day"):   3 * costPerAnswer,
		sel("caddy_llm_router_budget_limit", "budget", "reasoning_daily", "period", "day"):   0.03,
		sel("caddy_llm_router_budget_warn_at", "budget", "reasoning_daily", "period", "day"): 0.8,
	} {
		if math.Abs(after[key]-want) > 1e-9 {
			t.Errorf("%s = %v, want %v", key, after[key], want)
		}
	}
	for action, want := range map[string]float64{"warned": 1, "downgraded": 1, "refused": 1} {
		if d := after.delta(before, sel("caddy_llm_router_budget_actions_total", "budget", "reasoning_daily", "action", action)); d != want {
			t.Errorf("budget_actions_total{%s} +%v, want %v", action, d, want)
		}
	}
	if d := after.delta(before, sel("caddy_llm_router_requests_total", "route", "complex_reasoning", "model", "", "provider", "", "code", "429", "endpoint", "chat")); d != 1 {
		t.Errorf("the refusal counted %v times in requests_total{code=429}", d)
	}

	// midnight in Ho Chi Minh City: a new day, a new budget
	advanceClock(t, 3*time.Minute)
	resp, body = g.post(chatBody("complex_reasoning", false))
	expectModel(t, resp, body, "gpt-4.1", "primary", 1)
	if h := resp.Header.Get("X-LLM-Budget"); h != "" {
		t.Errorf("after midnight: X-LLM-Budget %q", h)
	}
}

// teamsSite maps each team's gateway key to its name; unknown keys are
// refused before the router.
const teamsSite = `	map {http.request.header.Authorization} {llm_team} {
		"Bearer team-a-key" team-a
		"Bearer team-b-key" team-b
		default none
	}
	@unknown vars {llm_team} none
	respond @unknown "unknown key" 401
`

// TestBudgetPerTeam: a budget keyed by the team a gateway key maps to
// counts each team apart, and no header a client adds gets it out of its
// team's budget.
func TestBudgetPerTeam(t *testing.T) {
	global, _ := withStorage(t, globalOptions)
	g := newGatewayWith(t, global, teamsSite, budgetRouter+`
	budget team_daily {
		limit 0.03 per day
		key {llm_team} label
		downgrade simple_qa
	}
	client_label {llm_team}
	budget_sync 1h
`)
	teamA := []string{"Authorization", "Bearer team-a-key"}
	for range 2 {
		resp, body := g.post(chatBody("complex_reasoning", false), teamA...)
		expectModel(t, resp, body, "gpt-4.1", "primary", 1)
	}
	escapes := [][]string{
		nil,
		{"X-Team", "team-b"},
		{"X-LLM-Team", "team-b"},
		{"X-LLM-Budget", "none"},
		{"X-LLM-Route", "complex_reasoning"},
		{"Llm-Team", "team-b"},
	}
	for _, extra := range escapes {
		resp, body := g.post(chatBody("complex_reasoning", false), append(slices.Clone(teamA), extra...)...)
		if resp.StatusCode != 200 || resp.Header.Get("X-LLM-Budget") != "downgraded (team_daily)" || resp.Header.Get("X-LLM-Model") != "deepseek-v3.2" {
			t.Errorf("team a with %v: %d, budget %q, model %q: escaped its budget", extra, resp.StatusCode, resp.Header.Get("X-LLM-Budget"), resp.Header.Get("X-LLM-Model"))
		}
		_ = body
	}
	// team b has its own budget
	resp, body := g.post(chatBody("complex_reasoning", false), "Authorization", "Bearer team-b-key")
	expectModel(t, resp, body, "gpt-4.1", "primary", 1)
	// an unknown key never reaches the router
	resp, _ = g.post(chatBody("complex_reasoning", false), "Authorization", "Bearer forged", "X-Team", "team-b")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("an unknown key got %d", resp.StatusCode)
	}

	b := budgetOf(t, "team_daily")
	spent := map[string]float64{}
	for _, k := range b.Periods[0].TopKeys {
		spent[k.Key] = k.Spent.Amount
	}
	if math.Abs(spent["team-a"]-8*costPerAnswer) > 1e-9 || math.Abs(spent["team-b"]-costPerAnswer) > 1e-9 || len(spent) != 2 {
		t.Errorf("spend by team %v, want team-a 0.136 and team-b 0.017", spent)
	}
	clients := map[string]ClientStats{}
	for _, c := range fetchStats(t).Clients {
		clients[c.Client] = c
	}
	if clients["team-a"].Answers < 8 || clients["team-b"].Answers < 1 || clients["none"].Answers != 0 {
		t.Errorf("clients %+v", clients)
	}
	m := scrape(t)
	// the sync failure counter exists from the start, at 0, so that the
	// first failure is an increase the alert sees
	if v, ok := m[sel("caddy_llm_router_budget_sync_failures_total", "budget", "team_daily")]; !ok || v != 0 {
		t.Errorf("budget_sync_failures_total before any failure: %v (present %v), want 0", v, ok)
	}
	if m[sel("caddy_llm_router_cost_total", "model", "gpt-4.1", "provider", "primary", "currency", "USD", "client", "team-b")] < costPerAnswer-1e-9 {
		t.Errorf("team-b's cost is not labelled client=team-b")
	}
}

// TestBudgetSurvivesReload: a reload (of another config naming the same
// budget) keeps the spend.
func TestBudgetSurvivesReload(t *testing.T) {
	global, _ := withStorage(t, globalOptions)
	budget := `
	budget all_daily {
		limit 0.03 per day
	}
	budget_sync 1h
`
	g := newGatewayWith(t, global, "", budgetRouter+budget)
	for range 2 {
		resp, body := g.post(chatBody("simple_qa", false))
		expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	}
	g.reloadWith(global, "", budgetRouter+budget+"\tmax_request_body 4MB\n")
	// no downgrade route: the limit refuses
	resp, out := g.post(chatBody("simple_qa", false))
	if resp.StatusCode != http.StatusTooManyRequests || apiErr(t, out).Code != "budget_exceeded" {
		t.Errorf("after the reload: %d %s; the spend was lost", resp.StatusCode, out)
	}
}

// TestBudgetCountsStreams: streamed answers count, with and without
// include_usage, and estimated when the client leaves mid-stream.
func TestBudgetCountsStreams(t *testing.T) {
	global, _ := withStorage(t, globalOptions)
	g := newGatewayWith(t, global, "", budgetRouter+`
	budget all_daily {
		limit 1000 per day
	}
	budget_sync 1h
`)
	done := requestsDone(t)
	before := scrape(t)
	resp, body := g.post(chatBody("simple_qa", true))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	resp, body = g.post(`{"model":"simple_qa","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Where is my order?"}]}`)
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	waitFor(t, done, "a request to be counted")
	waitFor(t, done, "a request to be counted")

	g.primary.Set("deepseek-chat", mockllm.Behavior{HoldAfterChunks: 2})
	aresp, cancel := g.streamUntil(chatBody("simple_qa", true), "w1 ")
	cancel()
	aresp.Body.Close()
	waitFor(t, done, "the abandoned request to be counted")

	after := scrape(t)
	cost := after.delta(before, sel("caddy_llm_router_cost_total", "model", "deepseek-v3.2", "provider", "primary", "currency", "USD", "client", ""))
	if cost < 2*costPerAnswer {
		t.Fatalf("cost_total +%v, want at least two full answers", cost)
	}
	b := budgetOf(t, "all_daily")
	if got := b.Periods[0].TopKeys[0].Spent.Amount; math.Abs(got-cost) > 1e-9 {
		t.Errorf("budget spend %v, cost_total +%v: the budget missed streamed or abandoned answers", got, cost)
	}
}

// TestBudgetStorageDown: when storage fails, budgets keep counting locally
// (fail open), the failure is counted and shown.
func TestBudgetStorageDown(t *testing.T) {
	// Caddy's own use of the storage works; the router's directory is a
	// file, so every budget sync fails
	global, dir := withStorage(t, globalOptions)
	if err := os.WriteFile(filepath.Join(dir, "llm_router"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	g := newGatewayWith(t, global, "", budgetRouter+`
	budget all_daily {
		limit 0.03 per day
		downgrade simple_qa
		match complex_reasoning
	}
	budget_sync 1h
`)
	for range 2 {
		resp, body := g.post(chatBody("complex_reasoning", false))
		expectModel(t, resp, body, "gpt-4.1", "primary", 1)
	}
	resp, body := g.post(chatBody("complex_reasoning", false))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	b := budgetOf(t, "all_daily")
	if b.SyncFailures < 1 || b.LastSyncError == "" {
		t.Errorf("sync failures %d, last error %q", b.SyncFailures, b.LastSyncError)
	}
	if m := scrape(t)[sel("caddy_llm_router_budget_sync_failures_total", "budget", "all_daily")]; m < 1 {
		t.Errorf("budget_sync_failures_total = %v", m)
	}
}

// TestBudgetHardPeriodInStats: a hard cap of a period no limit has is
// shown in the stats with that period's spend, so that a refusal at the
// cap can be read there (README, "429 budget_exceeded"), and in the budget
// gauges, with the cap as that period's limit, so that the dashboard and
// LLMRouterBudgetNearlySpent see it.
func TestBudgetHardPeriodInStats(t *testing.T) {
	global, _ := withStorage(t, globalOptions)
	g := newGatewayWith(t, global, "", budgetRouter+`
	budget capped {
		limit 1000 per day
		hard 0.03 per week
	}
	budget_sync 1h
`)
	done := requestsDone(t)
	refused := false
	for range 4 {
		resp, _ := g.post(chatBody("complex_reasoning", false))
		waitFor(t, done, "a request to be counted")
		if resp.StatusCode == http.StatusTooManyRequests {
			refused = true
			break
		}
	}
	if !refused {
		t.Fatal("never refused at the weekly hard cap")
	}
	b := budgetOf(t, "capped")
	var week *BudgetPeriodStats
	for i, p := range b.Periods {
		if p.Period == "week" {
			week = &b.Periods[i]
		}
	}
	if week == nil {
		t.Fatalf("refused %d times at the weekly hard cap, but the stats show no week: %+v", b.Actions["refused"], b.Periods)
	}
	if !week.Hard || week.Limit.Amount != 0.03 || len(week.TopKeys) != 1 || week.TopKeys[0].Spent.Amount < 0.03 {
		t.Errorf("week %+v, want the hard cap of 0.03 and its spend past it", *week)
	}
	var out bytes.Buffer
	if err := writeStatsTable(&out, fetchStats(t)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "hard 0.03 USD") {
		t.Errorf("the stats table shows no hard cap row:\n%s", out.String())
	}
	m := scrape(t)
	spend, ok := m[sel("caddy_llm_router_budget_spend", "budget", "capped", "period", "week")]
	if !ok || spend < 0.03 {
		t.Errorf("budget_spend{period=week} = %v (present %v), want the spend past the weekly hard cap", spend, ok)
	}
	for key, want := range map[string]float64{
		sel("caddy_llm_router_budget_limit", "budget", "capped", "period", "week"):   0.03,
		sel("caddy_llm_router_budget_warn_at", "budget", "capped", "period", "week"): 0.8,
		sel("caddy_llm_router_budget_limit", "budget", "capped", "period", "day"):    1000,
	} {
		if got, ok := m[key]; !ok || math.Abs(got-want) > 1e-12 {
			t.Errorf("%s = %v (present %v), want %v", key, got, ok, want)
		}
	}
}

// TestBudgetCurrencyChangeRefused: a budget's spend is kept in its
// handler's currency. A reload from USD to JPY at 150 kept the ledger and
// read its 0.034 USD as 0.034 JPY: with the limit set to the same 0.03 USD
// (4.5 JPY), the budget spent to its limit let requests through again. Two
// handlers in different currencies naming one budget mixed them the same
// way. Such a config now fails to load, naming the budget, and the running
// config goes on refusing.
func TestBudgetCurrencyChangeRefused(t *testing.T) {
	g := newGateway(t, budgetRouter+`
	budget all_daily {
		limit 0.03 per day
	}
	budget_sync off
`)
	for range 2 {
		resp, body := g.post(chatBody("simple_qa", false))
		expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	}
	cf := globalOptions + "\n" + siteAddress + " {\n\tllm_router {" + g.fill(budgetRouter+`
	currency JPY 150
	budget all_daily {
		limit 4.5 per day
	}
	budget_sync off
`) + "\t}\n}\n"
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := loadConfig(string(adapted)); err == nil || !strings.Contains(err.Error(), "all_daily") || !strings.Contains(err.Error(), "JPY") {
		t.Fatalf("a reload to another currency over the budget's USD spend: %v", err)
	}
	resp, out := g.post(chatBody("simple_qa", false))
	if resp.StatusCode != http.StatusTooManyRequests || apiErr(t, out).Code != "budget_exceeded" {
		t.Errorf("after the refused reload: %d %s; the spend was read in another currency", resp.StatusCode, out)
	}
}
