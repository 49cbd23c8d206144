package llmrouter

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// TestSecretsStayOutOfLogs: with debug logging, failures and warnings, no
// API key appears in Caddy's log; the fingerprint does.
func TestSecretsStayOutOfLogs(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	global := strings.Replace(globalOptions, "level WARN", "level DEBUG\n\t\toutput file "+logFile, 1)
	const oddKey = "key-without-the-usual-prefix-9f3e"
	router := strings.Replace(defaultRouter, "api_key sk-backup-test-key-0002", "api_key "+oddKey, 1)
	g := newGatewayWith(t, global, "", router)

	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 401, Times: 1})
	g.primary.Set("gpt-4.1", mockllm.Behavior{Reset: true})
	g.backup.Set("claude-sonnet-4.5", mockllm.Behavior{Status: 500})
	g.post(chatBody("simple_qa", false), "Authorization", "Bearer client-secret-123")
	g.post(chatBody("complex_reasoning", true), "Authorization", "Bearer client-secret-123")

	logs, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	text := string(logs)
	for _, secret := range []string{primaryKey, oddKey, "client-secret-123"} {
		if strings.Contains(text, secret) {
			t.Errorf("secret %q is in the log", secret)
		}
	}
	if !strings.Contains(text, `does not start with \"sk-\"`) || !strings.Contains(text, "…9f3e") {
		t.Errorf("no fingerprinted warning about the backup key in the log:\n%s", text)
	}
	if !strings.Contains(text, "upstream attempt failed") {
		t.Errorf("debug log of the failed attempt missing:\n%s", text)
	}
	// one line at load says what the handler serves, keys as fingerprints
	host := strings.TrimPrefix(g.primaryURL, "http://")
	var loaded string
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, `"msg":"llm_router loaded"`) {
			loaded = line
		}
	}
	for _, want := range []string{"primary " + host + " key sk-…0001", "deepseek-v3.2@primary (chat, priority 1, weight 1)", "simple_qa: deepseek-v3.2 gemini-2.5-flash", `"default_route":"simple_qa"`, `"probes":"every 30s"`, "USD at 1 per price unit"} {
		if !strings.Contains(loaded, want) {
			t.Errorf("load log line %q lacks %q", loaded, want)
		}
	}
}

// TestVerifyKey: a key the provider rejects stops the config from loading,
// with an error that names the provider and the key's fingerprint only.
func TestVerifyKey(t *testing.T) {
	newGateway(t, defaultRouter) // a running Caddy to load into
	mock := mockllm.New()
	mock.SetRequireKey("sk-the-right-key-000000001")
	srv := httptest.NewServer(mock)
	defer srv.Close()
	load := func(key string) error {
		cf := globalOptions + "\n" + siteAddress + " {\n\tllm_router {\n\t\tprovider holysheep {\n\t\t\tbase_url " + srv.URL +
			"/v1\n\t\t\tapi_key \"" + key + "\"\n\t\t\tverify_key\n\t\t}\n\t\tmodel deepseek-v3.2\n\t}\n}\n"
		cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
		if err != nil {
			t.Fatal(err)
		}
		return loadConfig(string(cfg))
	}
	err := load("sk-a-wrong-key-0000000042")
	if err == nil {
		t.Fatal("a rejected key loaded")
	}
	for _, want := range []string{"holysheep", "verify_key", "401", "sk-…0042"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "sk-a-wrong-key") {
		t.Errorf("error leaks the key: %v", err)
	}
	// white space around the key is trimmed, so the right key loads
	if err := load("  sk-the-right-key-000000001 \t"); err != nil {
		t.Errorf("the right key (with white space) did not load: %v", err)
	}
	if got := mock.Requests(); len(got) != 2 || got[1].Path != "/v1/models" || got[1].Header.Get("Authorization") != "Bearer sk-the-right-key-000000001" {
		t.Errorf("verify_key requests: %+v", got)
	}
}

// TestPlaceholders: the {http.llm_router.*} placeholders carry the
// request's routing and usage to other handlers (here: deferred headers).
func TestPlaceholders(t *testing.T) {
	site := "\theader >X-Log {http.llm_router.route}|{http.llm_router.model}|{http.llm_router.provider}|{http.llm_router.attempts}|{http.llm_router.input_tokens}|{http.llm_router.output_tokens}|{http.llm_router.cost}|{http.llm_router.route_reason}|{http.llm_router.budget}|{http.llm_router.cache}|{http.llm_router.nonesuch}"
	g := newGatewayWith(t, globalOptions, site, defaultRouter)
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 502, Times: 1})
	resp, body := g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "gemini-2.5-flash", "primary", 2)
	served := g.primary.Served("gemini-2.5-flash")
	cost := (float64(served.Prompt)*0.30 + float64(served.Completion)*2.5) / 1e6 // gemini-2.5-flash's built-in prices
	want := "simple_qa|gemini-2.5-flash|primary|2|" + strconv.Itoa(served.Prompt) + "|" + strconv.Itoa(served.Completion) + "|" + strconv.FormatFloat(cost, 'f', -1, 64) +
		"|model|{http.llm_router.budget}|{http.llm_router.cache}|{http.llm_router.nonesuch}" // unknown: left as written
	if got := resp.Header.Get("X-Log"); got != want {
		t.Errorf("placeholders = %q, want %q", got, want)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatal(resp.StatusCode)
	}

	// a request no model answers: what is known is reported, the rest is
	// unknown (not a zero value)
	g.primary.SetDefault(mockllm.Behavior{Status: 500})
	resp, body = g.post(chatBody("simple_qa", false))
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	attempts := resp.Header.Get("X-LLM-Attempts")
	want = "simple_qa|{http.llm_router.model}|{http.llm_router.provider}|" + attempts +
		"|{http.llm_router.input_tokens}|{http.llm_router.output_tokens}|{http.llm_router.cost}|model|{http.llm_router.budget}|{http.llm_router.cache}|{http.llm_router.nonesuch}"
	if resp.Header.Get("X-Log") != want || attempts == "" {
		t.Errorf("placeholders after a 503 = %q, want %q", resp.Header.Get("X-Log"), want)
	}

	// the router's own error before routing: nothing is known
	resp, body = g.post(`{"model":"simple_qa"`)
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-Log"); got != strings.ReplaceAll(site[len("\theader >X-Log "):], "\n", "") {
		t.Errorf("placeholders after a 400 = %q", got)
	}
}

// TestProviderPlaceholdersResolvedAtLoad: a provider's base_url, api_key
// and headers are resolved once, at load. A placeholder known only per
// request ({http.request.header.X-Tenant}) loaded and went upstream as
// written, the literal text, on every request; it is now a config error
// that names it. {env.*} still resolves, and braces that are no
// placeholder (a JSON value) are sent as they are.
func TestProviderPlaceholdersResolvedAtLoad(t *testing.T) {
	g := newGateway(t, defaultRouter) // a running Caddy to load into
	mock := g.primary
	srv := struct{ URL string }{g.primaryURL}
	t.Setenv("LLMR_TEST_ORG", "org-from-env")
	load := func(headers string) error {
		cf := globalOptions + "\n" + siteAddress + " {\n\tllm_router {\n\t\tprovider p {\n\t\t\tbase_url " + srv.URL +
			"/v1\n\t\t\tapi_key sk-placeholder-test-0001\n" + headers + "\t\t}\n\t\tmodel deepseek-v3.2\n\t}\n}\n"
		cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
		if err != nil {
			t.Fatal(err)
		}
		return loadConfig(string(cfg))
	}
	err := load("\t\t\theader X-Tenant {http.request.header.X-Tenant}\n")
	if err == nil || !strings.Contains(err.Error(), "{http.request.header.X-Tenant}") {
		t.Fatalf("a per-request placeholder in a provider header loaded (err %v)", err)
	}
	err = load("\t\t\theader X-Org {env.LLMR_TEST_ORG}\n\t\t\theader X-Meta `{\"a\":1}`\n")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(gatewayURL+"/v1/chat/completions", "application/json", strings.NewReader(chatBody("deepseek-v3.2", false)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got := mock.Requests()
	if len(got) != 1 || got[0].Header.Get("X-Org") != "org-from-env" || got[0].Header.Get("X-Meta") != `{"a":1}` {
		t.Errorf("upstream headers: %+v", got)
	}
}

// TestShortKeyNotScrubbedFromAnswers: a placeholder key of a local
// server (vLLM's "EMPTY", Ollama's "ollama") is no secret, and scrubbing
// it replaced the word in every answer: a model that wrote "EMPTY" was
// relayed as "…". Keys too short to be secrets are left alone, as short
// header credentials are.
func TestShortKeyNotScrubbedFromAnswers(t *testing.T) {
	g := newGateway(t, `
	provider primary {
		base_url {PRIMARY}/v1
		api_key EMPTY
	}
	model local
`)
	answer := `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"local","choices":[{"index":0,"message":{"role":"assistant","content":"Set OPENAI_API_KEY=EMPTY for vLLM."},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}`
	g.primary.Set("local", mockllm.Behavior{Body: answer})
	resp, body := g.post(chatBody("local", false))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if !strings.Contains(body, "OPENAI_API_KEY=EMPTY for vLLM") {
		t.Errorf("the answer was altered: %s", body)
	}
	if got := g.primary.Requests(); len(got) != 1 || got[0].Header.Get("Authorization") != "Bearer EMPTY" {
		t.Errorf("upstream requests: %+v", got)
	}
}

// TestProviderHeadersValidAtLoad: a provider header whose name or value
// no HTTP request can carry (a space in the name; a line break inside a
// key read from a variable) loaded, and every request to the provider
// then failed in Go's transport, a 503 for every client. It is now a load
// error that names the setting and never the key.
func TestProviderHeadersValidAtLoad(t *testing.T) {
	g := newGateway(t, defaultRouter) // a running Caddy to load into
	t.Setenv("LLMR_TEST_BROKEN_KEY", "sk-first-half-0001\nsk-second-half-0002")
	load := func(lines string) error {
		cf := globalOptions + "\n" + siteAddress + " {\n\tllm_router {\n\t\tprovider p {\n\t\t\tbase_url " + g.primaryURL +
			"/v1\n" + lines + "\t\t}\n\t\tmodel deepseek-v3.2\n\t}\n}\n"
		cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
		if err != nil {
			return err // what validation finds, the adapter reports
		}
		return loadConfig(string(cfg))
	}
	for _, tc := range []struct{ lines, want string }{
		{"\t\t\tapi_key sk-placeholder-test-0001\n\t\t\theader \"X Bad\" v\n", `header "X Bad" is not a header field name`},
		{"\t\t\tapi_key {env.LLMR_TEST_BROKEN_KEY}\n", "api_key: not a valid header value"},
		{"\t\t\tapi_key sk-placeholder-test-0001\n\t\t\theader X-Org {env.LLMR_TEST_BROKEN_KEY}\n", "header X-Org: not a valid header value"},
	} {
		err := load(tc.lines)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: load error %v, want %q", tc.lines, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "half") {
			t.Errorf("the error shows the key: %v", err)
		}
	}
}

// TestVerifyKeyErrorHasNoQuery: verify_key's refusal names the URL it
// asked without the base_url's query, which may hold a credential (a
// provider that takes its key as ?key=), as transport errors drop it.
func TestVerifyKeyErrorHasNoQuery(t *testing.T) {
	newGateway(t, defaultRouter) // a running Caddy to load into
	mock := mockllm.New()
	mock.SetRequireKey("sk-the-right-key-000000001")
	srv := httptest.NewServer(mock)
	defer srv.Close()
	cf := globalOptions + "\n" + siteAddress + " {\n\tllm_router {\n\t\tprovider holysheep {\n\t\t\tbase_url " + srv.URL +
		"/v1?key=query-secret-0001\n\t\t\tapi_key sk-a-wrong-key-0000000042\n\t\t\tverify_key\n\t\t}\n\t\tmodel deepseek-v3.2\n\t}\n}\n"
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = loadConfig(string(cfg))
	if err == nil || !strings.Contains(err.Error(), "verify_key") {
		t.Fatalf("a rejected key loaded: %v", err)
	}
	if strings.Contains(err.Error(), "query-secret") {
		t.Errorf("the error shows the base_url's query: %v", err)
	}
}

// TestBudgetInstanceResolvedAtLoad: budget_instance is read once, at load,
// as provider settings are. A placeholder known only per request
// ({http.request.header.X-Pod}) was resolved to "" and the config loaded
// with the host's identity, without a word; it is now a load error that
// names it, and the config that was serving still serves.
func TestBudgetInstanceResolvedAtLoad(t *testing.T) {
	global, _ := withStorage(t, globalOptions)
	g := newGatewayWith(t, global, "", defaultRouter)
	cf := global + "\n" + siteAddress + " {\n\tllm_router {" + g.fill(defaultRouter) +
		"\tbudget all_daily {\n\t\tlimit 10 per day\n\t}\n\tbudget_sync 1h\n\tbudget_instance {http.request.header.X-Pod}\n\t}\n}\n"
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = loadConfig(string(cfg))
	if err == nil || !strings.Contains(err.Error(), "budget_instance") || !strings.Contains(err.Error(), "{http.request.header.X-Pod}") {
		t.Fatalf("a per-request placeholder in budget_instance loaded (err %v)", err)
	}
	resp, body := g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
}
