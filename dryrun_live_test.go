package llmrouter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestRouteDryRunMatchesLive: `caddy llm-router route` chooses the route,
// and the reason, the gateway does for the same request, over many bodies
// and headers (client_label written with a header name in lower case, as
// Caddy's placeholders allow).
func TestRouteDryRunMatchesLive(t *testing.T) {
	router := strings.Replace(rulesRouter, "\t\twhen has_tools || has_images\n",
		"\t\twhen `client == \"vip\"`\n\t\twhen has_tools || has_images\n", 1) +
		"\n\t\tclient_label {http.request.header.x-team}\n"
	site := "\theader >X-Route-Reason {http.llm_router.route_reason}\n"
	g := newGatewayWith(t, globalOptions, site, router)
	dir := t.TempDir()
	config := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(config, []byte("{\n\tadmin off\n}\n:8080 {\n\tllm_router /v1/* {"+g.fill(router)+"\n\t}\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	msgs := []string{
		`[{"role":"user","content":"Where is my order?"}]`,
		`[{"role":"user","content":"COMPARE these"}]`,
		`[{"role":"system","content":"compare"},{"role":"user","content":"hi"}]`,
		`[{"role":"user","content":[{"type":"text","text":"so s\u00e1nh"},{"type":"text","text":" x"}]}]`,
		`[{"role":"user","content":"` + strings.Repeat("a", 201) + `"}]`,
		`[{"role":"user","content":"compare"},{"role":"assistant","content":"ok"},{"role":"user","content":"thanks"}]`,
		`[` + strings.Repeat(`{"role":"user","content":"ok"},`, 6) + `{"role":"user","content":"ok"}]`,
	}
	models := []string{``, `"model":"auto",`, `"model":"simple_qa",`, `"model":"gpt-4.1",`, `"model":"GPT-4.1",`}
	headers := [][]string{nil, {"X-Team", "vip"}, {"X-LLM-Route", "simple_qa"}, {"X-Query-Type", "complex_reasoning"}}
	routeLine := regexp.MustCompile(`(?m)^(Route: .*|Answer: .*)$`)
	n := 0
	for _, m := range msgs {
		for _, model := range models {
			for _, h := range headers {
				body := `{` + model + `"messages":` + m + `}`
				resp, _ := g.post(body, h...)
				live := "404"
				if resp.StatusCode == 200 {
					route := resp.Header.Get("X-LLM-Route")
					if route == "" {
						live = "Route: none, model " + resp.Header.Get("X-LLM-Model") + " (" + resp.Header.Get("X-Route-Reason") + ")"
					} else {
						live = "Route: " + route + " (" + resp.Header.Get("X-Route-Reason") + ")"
					}
				}
				req := filepath.Join(dir, "request.json")
				if err := os.WriteFile(req, []byte(body), 0o600); err != nil {
					t.Fatal(err)
				}
				var hs []string
				if h != nil {
					hs = []string{h[0] + ": " + h[1]}
				}
				var out bytes.Buffer
				if err := runRoute(&out, config, "", routeOptions{Endpoint: "chat", Headers: hs, Handler: 1}, req, nil); err != nil {
					t.Fatal(err)
				}
				dry := routeLine.FindString(out.String())
				if strings.HasPrefix(dry, "Answer: 404") {
					dry = "404"
				}
				if dry != live {
					t.Errorf("%s %v: dry run %q, live %q", body, h, dry, live)
				}
				n++
			}
		}
	}
	t.Logf("%d requests compared", n)
}

// TestRouteDryRunRefusesAsLive: a request the gateway refuses before
// routing (a body over max_request_body, a budget's key header given
// twice, a service tier it does not offer, a background response, a hosted
// tool it cannot bill) is refused by the dry run too, with the same status,
// code and param, rather than shown a route it would never get.
func TestRouteDryRunRefusesAsLive(t *testing.T) {
	router := rulesRouter + "\n\t\tallow_unpriced file_search\n\t\tmax_request_body 2KB\n" +
		"\t\tbudget team {\n\t\t\tlimit 100 per day\n\t\t\tkey {http.request.header.X-Team}\n\t\t}\n"
	g := newGatewayWith(t, globalOptions, "", router)
	dir := t.TempDir()
	config := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(config, []byte("{\n\tadmin off\n}\n:8080 {\n\tllm_router /v1/* {"+g.fill(router)+"\n\t}\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const msgs = `"messages":[{"role":"user","content":"Where is my order?"}]`
	answer := regexp.MustCompile(`(?m)^(Route: [a-z_]+|Answer: [0-9]+ [a-z_]+( \(param [a-z_]+\))?)`)
	for _, tc := range []struct {
		body   string
		header []string
	}{
		{`{` + msgs + `}`, nil},
		{`{` + msgs + `}`, []string{"X-Team", "a"}},
		{`{` + msgs + `}`, []string{"X-Team", "a", "X-Team", "b"}},
		{`{"user":"` + strings.Repeat("u", 2100) + `",` + msgs + `}`, nil},
		{`{"service_tier":"priority",` + msgs + `}`, nil},
		{`{"service_tier":"flex",` + msgs + `}`, nil},
		{`{"background":true,` + msgs + `}`, nil},
		{`{"tools":[{"type":"web_search_preview"}],` + msgs + `}`, nil},
		{`{"tools":[{"type":"file_search"}],` + msgs + `}`, nil},
		{`{"web_search_options":{},` + msgs + `}`, nil},
	} {
		resp, out := g.post(tc.body, tc.header...)
		live := "Route: " + resp.Header.Get("X-LLM-Route")
		if resp.StatusCode != http.StatusOK {
			var e struct {
				Error struct {
					Code  string  `json:"code"`
					Param *string `json:"param"`
				} `json:"error"`
			}
			if err := json.Unmarshal([]byte(out), &e); err != nil {
				t.Fatalf("%s: %d %s", tc.body, resp.StatusCode, out)
			}
			live = fmt.Sprintf("Answer: %d %s", resp.StatusCode, e.Error.Code)
			if e.Error.Param != nil {
				live += " (param " + *e.Error.Param + ")"
			}
		}
		req := filepath.Join(dir, "request.json")
		if err := os.WriteFile(req, []byte(tc.body), 0o600); err != nil {
			t.Fatal(err)
		}
		var hs []string
		for i := 0; i+1 < len(tc.header); i += 2 {
			hs = append(hs, tc.header[i]+": "+tc.header[i+1])
		}
		var dry bytes.Buffer
		if err := runRoute(&dry, config, "", routeOptions{Endpoint: "chat", Headers: hs, Handler: 1}, req, nil); err != nil {
			t.Fatal(err)
		}
		if got := answer.FindString(dry.String()); got != live {
			t.Errorf("%.60s %v: dry run %q, live %q", tc.body, tc.header, got, live)
		}
	}
}
