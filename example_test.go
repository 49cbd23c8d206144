package llmrouter

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/mholt/caddy-ratelimit"
)

// TestExampleCaddyfile: example.Caddyfile adapts and passes Caddy's
// validation in-process exactly as `caddy validate --config
// example.Caddyfile` does (adapt, then caddy.Validate, which provisions
// every module without starting the servers), and its secrets stay
// placeholders in the adapted JSON.
func TestExampleCaddyfile(t *testing.T) {
	secrets := map[string]string{
		"HOLYSHEEP_API_KEY": "sk-example-holysheep-key-00000002",
		"BACKUP_API_KEY":    "sk-example-backup-key-0000000003",
	}
	// the team keys are compared literally by map, so they are read when
	// the Caddyfile is adapted and are part of the config (README, Budgets)
	t.Setenv("TEAM_STOREFRONT_KEY", "sk-example-storefront-key-00000004")
	t.Setenv("TEAM_SUPPORT_KEY", "sk-example-support-key-000000005")
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	// the example's default site address: GATEWAY_HOST unset (t.Setenv
	// restores it afterwards)
	t.Setenv("GATEWAY_HOST", "")
	os.Unsetenv("GATEWAY_HOST")

	src, err := os.ReadFile("example.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(src,
		map[string]any{"filename": "example.Caddyfile"})
	if err != nil {
		t.Fatalf("adapting example.Caddyfile: %v", err)
	}
	for _, w := range warnings {
		t.Errorf("adapter warning: %s", w)
	}

	// secrets are read at load (api keys) or at request time (the
	// gateway key), never written into the JSON
	js := string(adapted)
	if !strings.Contains(js, `"persist":false`) {
		t.Error("the config holds the team keys but is persisted to disk (persist_config off is missing)")
	}
	for _, ph := range []string{"{env.HOLYSHEEP_API_KEY}", "{env.BACKUP_API_KEY}"} {
		if !strings.Contains(js, ph) {
			t.Errorf("adapted JSON lost the placeholder %s", ph)
		}
	}
	for k, v := range secrets {
		if strings.Contains(js, v) {
			t.Errorf("adapted JSON holds the value of %s", k)
		}
	}

	// the router's part is what the example documents
	var r Router
	dec := json.NewDecoder(bytes.NewReader(findHandler(t, adapted)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&struct {
		Handler string `json:"handler"`
		*Router
	}{Router: &r}); err != nil {
		t.Fatalf("llm_router JSON does not decode: %v", err)
	}
	if len(r.Providers) != 2 || r.Providers[0].Name != "holysheep" || r.Providers[0].BaseURL != DefaultBaseURL {
		t.Errorf("want HolySheep (%s) as the first of two providers, got %+v", DefaultBaseURL, r.Providers)
	}
	for _, p := range r.Providers {
		// caddy.Validate provisions the router: verify_key would need
		// the network
		if p.VerifyKey {
			t.Errorf("provider %s has verify_key: validating the example would call %s", p.Name, p.BaseURL)
		}
	}
	models := make(map[string]bool)
	backup := false
	for _, m := range r.Models {
		models[m.Name] = true
		backup = backup || m.Provider == "backup"
	}
	for _, name := range []string{"gpt-4.1", "claude-sonnet-4.5", "gemini-2.5-flash", "deepseek-v3.2"} {
		if !models[name] {
			t.Errorf("model %s is missing", name)
		}
	}
	if !backup {
		t.Error("no deployment on the backup provider")
	}
	if len(r.Routes["simple_qa"]) == 0 || len(r.Routes["complex_reasoning"]) == 0 || r.DefaultRoute != "simple_qa" {
		t.Errorf("routes %v, default_route %q", r.Routes, r.DefaultRoute)
	}
	if r.Currency == nil || r.Currency.Code != "CNY" || r.Currency.Rate != 1 {
		t.Errorf("currency %+v, want CNY 1", r.Currency)
	}
	var daily *Budget
	for _, b := range r.Budgets {
		if slices.Contains(b.Match, "complex_reasoning") && b.Downgrade == "simple_qa" && b.Key == "{llm_team}" && b.Limits[0].Period == "day" {
			daily = b
		}
	}
	if len(r.RouteRules) != 2 || r.RouteRules[0].Route != "complex_reasoning" || !strings.Contains(strings.Join(r.RouteRules[0].When, " "), "has_tools") {
		t.Errorf("want rules sending tool-using requests to complex_reasoning first: %+v", r.RouteRules)
	}
	if r.Cache == nil || len(r.Cache.Match) != 1 || r.Cache.Match[0] != "simple_qa" {
		t.Errorf("want the cache on simple_qa: %+v", r.Cache)
	}
	if daily == nil || r.ClientLabel == nil || r.ClientLabel.Value != "{llm_team}" {
		t.Errorf("want a daily budget on complex_reasoning per {llm_team}, downgrading to simple_qa, and client_label {llm_team}: %+v %+v", r.Budgets, r.ClientLabel)
	}

	// what `caddy validate` does after adapting
	var cfg caddy.Config
	if err := json.Unmarshal(adapted, &cfg); err != nil {
		t.Fatalf("adapted JSON does not decode into caddy.Config: %v", err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatalf("caddy validate: %v", err)
	}
}

// TestExampleMonthlyBudgetCaps: the example's team_monthly, "a monthly cap
// on everything a team spends", caps it. The budget covers every
// deployment, simple_qa's too, and a budget no longer stops the requests
// it moved to its downgrade route: without a hard cap a team past the
// limit would be served from simple_qa for as long as it asks.
func TestExampleMonthlyBudgetCaps(t *testing.T) {
	src, err := os.ReadFile("example.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)\n\t*(budget team_monthly \{.*?\n\t*\})`).FindSubmatch(src)
	if m == nil {
		t.Fatal("example.Caddyfile has no budget team_monthly")
	}
	// at 500,000 CNY a price unit, an answer (17 tokens at 1000 a
	// million) costs 8,500 CNY: a few of them reach the 20,000 CNY limit
	global, _ := withStorage(t, globalOptions)
	g := newGatewayWith(t, global, teamsSite, budgetRouter+"\tcurrency CNY 500000\n\tbudget_sync off\n\t"+string(m[1])+"\n")
	done := requestsDone(t)
	const ask = `{"model":"simple_qa","max_tokens":10,"messages":[{"role":"user","content":"Where is my order?"}]}`
	served := 0
	for range 10 {
		resp, body := g.post(ask, "Authorization", "Bearer team-a-key")
		waitFor(t, done, "the request to be counted")
		if resp.StatusCode == http.StatusTooManyRequests {
			if e := apiErr(t, body); e.Code != "budget_exceeded" {
				t.Errorf("429 %+v, want budget_exceeded", e)
			}
			return
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		served++
	}
	t.Errorf("team_monthly (limit 20,000 CNY a month) served all %d requests of about 8,500 CNY each: a team's spend has no bound", served)
}
