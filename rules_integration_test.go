package llmrouter

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rulesRouter is defaultRouter with example.Caddyfile's kind of rules.
var rulesRouter = strings.Replace(defaultRouter,
	"\troute simple_qa deepseek-v3.2 gemini-2.5-flash\n\troute complex_reasoning gpt-4.1 claude-sonnet-4.5\n",
	"\troute complex_reasoning gpt-4.1 claude-sonnet-4.5 {\n\t\twhen has_tools || has_images\n\t\twhen messages > 6\n"+
		"\t\twhen `last_user_chars > 200 || contains_any(last_user, [\"compare\", \"so sánh\", \"tại sao\"])`\n\t}\n"+
		"\troute simple_qa deepseek-v3.2 gemini-2.5-flash {\n\t\twhen last_user_chars <= 200\n\t}\n", 1)

// TestRoutingRules: requests naming no route are classified by the rules;
// a route header or a route or model name still wins.
func TestRoutingRulesClassify(t *testing.T) {
	if !strings.Contains(rulesRouter, "when has_tools") {
		t.Fatal("defaultRouter's routes moved: rulesRouter has no rules")
	}
	site := "\theader >X-Route-Reason {http.llm_router.route_reason}\n"
	g := newGatewayWith(t, globalOptions, site, rulesRouter)
	msg := func(content string) string {
		return `{"messages":[{"role":"user","content":"` + content + `"}]}`
	}
	cases := []struct {
		name, body string
		header     []string
		model      string
		route      string
		reason     string
	}{
		{"a short question", msg("Where is my order?"), nil, "deepseek-v3.2", "simple_qa", "rule:simple_qa#1"},
		{"auto", `{"model":"auto","messages":[{"role":"user","content":"Hi"}]}`, nil, "deepseek-v3.2", "simple_qa", "rule:simple_qa#1"},
		{"a Vietnamese why", msg("Tại sao đơn hàng bị hủy?"), nil, "gpt-4.1", "complex_reasoning", "rule:complex_reasoning#3"},
		{"a long question", msg(strings.Repeat("ờ", 201)), nil, "gpt-4.1", "complex_reasoning", "rule:complex_reasoning#3"},
		{"tools", `{"messages":[{"role":"user","content":"track 42"}],"tools":[{"type":"function","function":{"name":"track","parameters":{}}}]}`, nil, "gpt-4.1", "complex_reasoning", "rule:complex_reasoning#1"},
		{"an image", `{"messages":[{"role":"user","content":[{"type":"text","text":"this?"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}`, nil, "gpt-4.1", "complex_reasoning", "rule:complex_reasoning#1"},
		{"a long conversation", `{"messages":[` + strings.Repeat(`{"role":"user","content":"ok"},`, 6) + `{"role":"user","content":"ok"}]}`, nil, "gpt-4.1", "complex_reasoning", "rule:complex_reasoning#2"},
		{"the route header wins", msg("Tại sao?"), []string{"X-LLM-Route", "simple_qa"}, "deepseek-v3.2", "simple_qa", "header"},
		{"a route name wins", `{"model":"simple_qa","messages":[{"role":"user","content":"Tại sao?"}]}`, nil, "deepseek-v3.2", "simple_qa", "model"},
		{"a model name wins", `{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"Tại sao?"}]}`, nil, "gemini-2.5-flash", "", "model"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := g.post(tc.body, tc.header...)
			expectModel(t, resp, body, tc.model, "primary", 1)
			if got := resp.Header.Get("X-LLM-Route"); got != tc.route {
				t.Errorf("X-LLM-Route = %q, want %q", got, tc.route)
			}
			if got := resp.Header.Get("X-Route-Reason"); got != tc.reason {
				t.Errorf("route_reason = %q, want %q", got, tc.reason)
			}
		})
	}
	// no rule true: the default route
	g.reload(strings.Replace(rulesRouter, "when last_user_chars <= 200", "when false", 1))
	resp, body := g.post(msg("Where is my order?"))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
}

// dryRunFiles writes a Caddyfile with rulesRouter, a client label and a
// budget, and a request body that its rules send to complex_reasoning, for
// `caddy llm-router route`.
func dryRunFiles(t *testing.T) (config, request string) {
	t.Helper()
	dir := t.TempDir()
	cf := "{\n\tadmin off\n}\n:8080 {\n\tllm_router /v1/* {" +
		strings.NewReplacer("{PRIMARY}", "http://127.0.0.1:1", "{BACKUP}", "http://127.0.0.1:2").Replace(rulesRouter) + "\n\t\tclient_label {http.request.header.X-Team}\n\t\tbudget reasoning_daily {\n\t\t\tlimit 10 per day\n\t\t\tmatch gpt-4.1\n\t\t}\n\t}\n}\n"
	config = filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(config, []byte(cf), 0o600); err != nil {
		t.Fatal(err)
	}
	request = filepath.Join(dir, "request.json")
	if err := os.WriteFile(request, []byte(`{"model":"auto","messages":[{"role":"system","content":"You are the shop's assistant."},{"role":"user","content":"So sánh hai áo khoác này giúp tôi?"}],"temperature":0.3}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return config, request
}

// TestRouteDryRun: `caddy llm-router route` explains a request's route;
// its output is golden.
func TestRouteDryRun(t *testing.T) {
	config, req := dryRunFiles(t)
	var out bytes.Buffer
	if err := runRoute(&out, config, "", routeOptions{Endpoint: "chat", Headers: []string{"X-Team: storefront"}, Handler: 1}, req, nil); err != nil {
		t.Fatal(err)
	}
	checkCostGolden(t, "route_dryrun.golden", out.Bytes())
	if !strings.Contains(out.String(), "Route: complex_reasoning (rule:complex_reasoning#3)") {
		t.Errorf("dry run chose otherwise:\n%s", out.String())
	}
	// the budget that pays for gpt-4.1's answers, and only those
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, "upstream") && strings.Contains(line, "budgets reasoning_daily") != strings.Contains(line, "gpt-4.1@") {
			t.Errorf("candidate line %q: the covering budget is not shown as it should", line)
		}
	}
}

// TestRuleClientPastLabelMax: a rule reads the client's own client_label
// value, also once the labels the metrics keep apart are all taken (max,
// shared by every handler and config) and the metrics count it as
// "other": which route a client gets must not depend on how many other
// clients came first.
func TestRuleClientPastLabelMax(t *testing.T) {
	router := strings.Replace(rulesRouter, "\t\twhen has_tools || has_images\n",
		"\t\twhen `client == \"vip\"`\n\t\twhen has_tools || has_images\n", 1) +
		"\n\t\tclient_label {http.request.header.x-team} max 1\n"
	site := "\theader >X-Route-Reason {http.llm_router.route_reason}\n"
	g := newGatewayWith(t, globalOptions, site, router)
	body := `{"messages":[{"role":"user","content":"Where is my order?"}]}`
	// fills the one label the metrics keep (if no earlier test did)
	resp, out := g.post(body, "X-Team", "filler-team")
	expectModel(t, resp, out, "deepseek-v3.2", "primary", 1)
	resp, out = g.post(body, "X-Team", "vip")
	expectModel(t, resp, out, "gpt-4.1", "primary", 1)
	if got := resp.Header.Get("X-Route-Reason"); got != "rule:complex_reasoning#1" {
		t.Errorf("route_reason = %q, want rule:complex_reasoning#1", got)
	}
}

// TestRouteDryRunHidesCredentials: the dry run's output (a CI log) shows
// the header variable with credential headers' values hidden, and in one
// order; the rules still read the values.
func TestRouteDryRunHidesCredentials(t *testing.T) {
	config, req := dryRunFiles(t)
	const secret = "sk-team-secret-0000000001"
	headers := []string{"Authorization: Bearer " + secret, "X-Api-Key: " + secret, "X-Team: storefront", "Accept: application/json"}
	var first string
	for range 5 {
		var out bytes.Buffer
		if err := runRoute(&out, config, "", routeOptions{Endpoint: "chat", Headers: headers, Handler: 1}, req, nil); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out.String(), secret) {
			t.Fatalf("the dry run shows a client credential:\n%s", out.String())
		}
		if first == "" {
			first = out.String()
		} else if out.String() != first {
			t.Fatalf("two runs differ:\n%s\n%s", first, out.String())
		}
	}
	if !strings.Contains(first, "x-team: storefront") || !strings.Contains(first, "authorization: (hidden)") {
		t.Errorf("the header variable is not shown as it should be:\n%s", first)
	}
}
