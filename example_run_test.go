package llmrouter

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// TestExampleCaddyfileServes runs example.Caddyfile in-process, its
// providers pointed at two mocks: the team keys, the rules, the fallback
// for paths outside /v1/ and the per-team rate limit answer as its
// comments say.
func TestExampleCaddyfileServes(t *testing.T) {
	src, err := os.ReadFile("example.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	primary, backup := mockllm.New(), mockllm.New()
	ps, bs := newMockServer(primary), newMockServer(backup)
	t.Setenv("GATEWAY_HOST", gatewayURL)
	t.Setenv("TEAM_STOREFRONT_KEY", "sk-example-storefront-key-00000004")
	t.Setenv("TEAM_SUPPORT_KEY", "sk-example-support-key-000000005")
	t.Setenv("HOLYSHEEP_API_KEY", "sk-example-holysheep-key-00000002")
	t.Setenv("BACKUP_API_KEY", "sk-example-backup-key-0000000003")
	global, _ := withStorage(t, globalOptions)
	cfg := strings.NewReplacer(
		"https://api.holysheep.ai/v1", ps.URL+"/v1",
		"https://api.openai.com/v1", bs.URL+"/v1",
		"\tadmin localhost:2019\n", strings.TrimSuffix(strings.TrimPrefix(global, "{\n"), "}\n"),
	).Replace(string(src))
	tc := caddytest.NewTester(t)
	tc.InitServer(cfg, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	t.Cleanup(tc.Client.CloseIdleConnections)
	t.Cleanup(func() {
		if err := loadConfig(emptyConfig); err != nil {
			t.Errorf("unloading the example: %v", err)
		}
	})
	g := &gateway{t: t, tc: tc, primary: primary, backup: backup, primaryURL: ps.URL, backupURL: bs.URL}
	storefront := []string{"Authorization", "Bearer sk-example-storefront-key-00000004"}

	resp, body := g.post(`{"model":"auto","messages":[{"role":"user","content":"Where is my order?"}]}`)
	if e := apiErr(t, body); resp.StatusCode != http.StatusUnauthorized || e.Code != "invalid_api_key" {
		t.Errorf("no key: %d %s", resp.StatusCode, body)
	}
	resp, body = g.post(`{"model":"auto","messages":[{"role":"user","content":"Where is my order?"}]}`, storefront...)
	expectModel(t, resp, body, "deepseek-v3.2", "holysheep", 1)
	if r := resp.Header.Get("X-LLM-Route"); r != "simple_qa" {
		t.Errorf("a short question: route %q, want simple_qa", r)
	}
	resp, body = g.post(`{"model":"auto","messages":[{"role":"user","content":"Why is the blue one cheaper? Compare them."}]}`, storefront...)
	expectModel(t, resp, body, "gpt-4.1", "holysheep", 1)

	req, _ := http.NewRequest(http.MethodGet, gatewayURL+"/elsewhere", nil)
	req.Header.Set(storefront[0], storefront[1])
	resp, err = tc.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("a path outside /v1/: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	// 600 requests a minute per team (three already spent): the 601st is
	// refused with an OpenAI-style 429 and Retry-After
	for i := 4; i <= 601; i++ {
		req, _ := http.NewRequest(http.MethodGet, gatewayURL+"/v1/models", nil)
		req.Header.Set(storefront[0], storefront[1])
		resp, err := tc.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4096)
		n, _ := resp.Body.Read(b)
		resp.Body.Close()
		if i <= 600 && resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b[:n])
		}
		if i == 601 {
			e := apiErr(t, string(b[:n]))
			if resp.StatusCode != http.StatusTooManyRequests || e.Code != "rate_limit_exceeded" || resp.Header.Get("Retry-After") == "" || resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("request 601: %d, Retry-After %q, Content-Type %q, %s", resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get("Content-Type"), b[:n])
			}
		}
	}
	// the other team has its own
	resp, body = g.post(`{"model":"simple_qa","messages":[{"role":"user","content":"Hi"}]}`, "Authorization", "Bearer sk-example-support-key-000000005")
	expectModel(t, resp, body, "deepseek-v3.2", "holysheep", 1)
}
