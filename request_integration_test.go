package llmrouter

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// TestUpstreamRequest: the provider sees its own key (trimmed) and
// headers, never the client's credentials, account selectors nor headers
// that steer another gateway, the upstream model id, and otherwise the
// client's body byte for byte.
func TestUpstreamRequest(t *testing.T) {
	router := strings.Replace(defaultRouter, "timeout 2s\n\t}\n\tprovider backup",
		"timeout 2s\n\t\theader OpenAI-Organization org-gateway\n\t}\n\tprovider backup", 1)
	g := newGateway(t, router)
	// odd spacing, unicode, escapes, nested tools: all must pass untouched
	const clientBody = "{ \"temperature\" : 0.2,\n \"model\":\"deepseek-v3.2\" ,\"messages\":[{\"role\":\"user\",\"content\":\"Größe \\\"XL\\\" \\u00e9 ✓\"}],\n\t\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"track\",\"parameters\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"}}}}}],\"user\":\"shopper-42\"}"
	resp, body := g.post(clientBody,
		"Authorization", "Bearer gateway-client-secret",
		"Cookie", "session=abc",
		"OpenAI-Organization", "org-client",
		"X-LLM-Route", "",
		"Connection", "X-Hop-Secret",
		"X-Hop-Secret", "hop-by-hop",
		"Keep-Alive", "timeout=5",
		"X-Portkey-Config", `{"targets":[{"override_params":{"model":"o3-pro"}}]}`,
		"Helicone-Target-Url", "https://pricey.example",
		"X-Request-Id", "req-7")
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)

	reqs := g.primary.Requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream saw %d requests", len(reqs))
	}
	up := reqs[0]
	if got := up.Header.Get("Authorization"); got != "Bearer sk-primary-test-key-0001" {
		t.Errorf("upstream Authorization = %q, want the trimmed provider key", got)
	}
	for _, h := range []string{"Cookie", "X-Hop-Secret", "Keep-Alive", "X-Llm-Route", "X-Portkey-Config", "Helicone-Target-Url"} {
		if v := up.Header.Get(h); v != "" {
			t.Errorf("client header %s = %q reached the provider", h, v)
		}
	}
	if got := up.Header.Values("OpenAI-Organization"); len(got) != 1 || got[0] != "org-gateway" {
		t.Errorf("OpenAI-Organization = %q, want only the provider's header", got)
	}
	if up.Header.Get("X-Request-Id") != "req-7" {
		t.Errorf("end-to-end header X-Request-Id was not forwarded")
	}
	if up.Path != "/v1/chat/completions" {
		t.Errorf("upstream path %q", up.Path)
	}
	want := strings.Replace(clientBody, `"model":"deepseek-v3.2"`, `"model":"deepseek-chat"`, 1)
	if string(up.Body) != want {
		t.Errorf("upstream body\n got %q\nwant %q", up.Body, want)
	}
	for _, r := range append(g.primary.Requests(), g.backup.Requests()...) {
		for k, v := range r.Header {
			if strings.Contains(strings.Join(v, " "), "gateway-client-secret") {
				t.Errorf("client secret forwarded in %s", k)
			}
		}
	}
}

// TestForwardHeaders: of the client's headers only the answer-neutral
// correlation ones reach the provider unless forward_header opens more:
// a beta switch, an SDK's telemetry or any other header could change what
// the provider serves and bills the operator for.
func TestForwardHeaders(t *testing.T) {
	g := newGateway(t, defaultRouter)
	const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	client := []string{
		"Anthropic-Beta", "context-1m-2025-08-07",
		"OpenAI-Beta", "assistants=v2",
		"X-Stainless-Lang", "python",
		"X-Custom", "tenant-a",
		"X-Request-Id", "req-11",
		"X-Client-Request-Id", "client-req-11",
		"User-Agent", "OpenAI/Python 1.99.0",
		"Traceparent", traceparent,
	}
	sent := func() http.Header {
		t.Helper()
		before := len(g.primary.Requests())
		resp, body := g.post(chatBody("deepseek-v3.2", false), client...)
		expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
		reqs := g.primary.Requests()[before:]
		if len(reqs) != 1 {
			t.Fatalf("upstream saw %d requests, want 1", len(reqs))
		}
		return reqs[0].Header
	}
	forwarded := map[string]string{"X-Request-Id": "req-11", "X-Client-Request-Id": "client-req-11", "User-Agent": "OpenAI/Python 1.99.0", "Traceparent": traceparent}
	up := sent()
	for _, f := range []string{"Anthropic-Beta", "OpenAI-Beta", "X-Stainless-Lang", "X-Custom"} {
		if v := up.Values(f); len(v) > 0 {
			t.Errorf("client header %s = %q reached the provider", f, v)
		}
	}
	for f, want := range forwarded {
		if got := up.Values(f); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q upstream, want the client's %q", f, got, want)
		}
	}

	g.reload(defaultRouter + "\tforward_header x-custom\n")
	up = sent()
	if got := up.Values("X-Custom"); len(got) != 1 || got[0] != "tenant-a" {
		t.Errorf("forward_header x-custom: X-Custom = %q upstream, want the client's", got)
	}
	for _, f := range []string{"Anthropic-Beta", "OpenAI-Beta", "X-Stainless-Lang"} {
		if v := up.Values(f); len(v) > 0 {
			t.Errorf("forward_header x-custom: client header %s = %q reached the provider", f, v)
		}
	}
	for f, want := range forwarded {
		if got := up.Values(f); len(got) != 1 || got[0] != want {
			t.Errorf("forward_header x-custom: %s = %q upstream, want the client's %q", f, got, want)
		}
	}
}

// TestStreamingUsage: the router always asks for usage, but only a client
// that asked itself sees the usage chunk.
func TestStreamingUsage(t *testing.T) {
	g := newGateway(t, defaultRouter)
	cases := []struct {
		name, body string
		wantUsage  bool
	}{
		{"not asked", `{"model":"deepseek-v3.2","stream":true,"messages":[{"role":"user","content":"hi"}]}`, false},
		{"stream_options without include_usage", `{"model":"deepseek-v3.2","stream":true,"stream_options":{},"messages":[{"role":"user","content":"hi"}]}`, false},
		{"include_usage false", `{"model":"deepseek-v3.2","stream":true,"stream_options":{"include_usage":false},"messages":[{"role":"user","content":"hi"}]}`, false},
		{"include_usage true", `{"model":"deepseek-v3.2","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g.primary.Reset()
			resp, body := g.post(tc.body)
			expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
			reqs := g.primary.Requests()
			if len(reqs) != 1 || !reqs[0].IncludeUsage {
				t.Fatalf("upstream was not asked for usage: %+v", reqs)
			}
			var usageChunks int
			for _, d := range sseData(body) {
				if d == "[DONE]" {
					continue
				}
				var chunk struct {
					Choices []json.RawMessage `json:"choices"`
					Usage   *struct {
						PromptTokens int `json:"prompt_tokens"`
					} `json:"usage"`
				}
				if err := json.Unmarshal([]byte(d), &chunk); err != nil {
					t.Fatalf("bad chunk %q: %v", d, err)
				}
				if chunk.Usage != nil {
					usageChunks++
				}
			}
			if tc.wantUsage && usageChunks != 1 {
				t.Errorf("client asked for usage and saw %d usage chunks", usageChunks)
			}
			if !tc.wantUsage && usageChunks != 0 {
				t.Errorf("client did not ask for usage and saw %d usage chunks: %s", usageChunks, body)
			}
			if data := sseData(body); data[len(data)-1] != "[DONE]" {
				t.Errorf("stream does not end with [DONE]")
			}
		})
	}
}

// TestBadRequests: the router's own errors use OpenAI's envelope.
func TestBadRequests(t *testing.T) {
	router := strings.Replace(defaultRouter, "default_route simple_qa", "default_route simple_qa\n\tmax_request_body 1KB", 1)
	g := newGateway(t, router)
	big := `{"model":"deepseek-v3.2","messages":[{"role":"user","content":"` + strings.Repeat("x", 2000) + `"}]}`
	cases := []struct {
		name, path, body string
		status           int
		code             string
	}{
		{"too large", "/v1/chat/completions", big, http.StatusRequestEntityTooLarge, "request_too_large"},
		{"not JSON", "/v1/chat/completions", `{"model": "deepseek-v3.2", "messages": [`, http.StatusBadRequest, "invalid_json"},
		{"not an object", "/v1/chat/completions", `["model"]`, http.StatusBadRequest, "invalid_json"},
		{"empty", "/v1/chat/completions", ``, http.StatusBadRequest, "invalid_json"},
		{"no messages", "/v1/chat/completions", `{"model":"deepseek-v3.2"}`, http.StatusBadRequest, "missing_required_parameter"},
		{"model not a string", "/v1/chat/completions", `{"model":7,"messages":[]}`, http.StatusBadRequest, "invalid_type"},
		{"embeddings without input", "/v1/embeddings", `{"model":"deepseek-v3.2"}`, http.StatusBadRequest, "missing_required_parameter"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := g.postPath(tc.path, tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			e := apiErr(t, body)
			if e.Code != tc.code || e.Type != "invalid_request_error" {
				t.Errorf("error = %+v, want code %s", e, tc.code)
			}
		})
	}
	if n := len(g.primary.Requests()); n != 0 {
		t.Errorf("bad requests reached the provider (%d)", n)
	}
}

// TestBodyLimitInFront: a Caddy request_body { max_size } in front of the
// router applies its own, smaller limit first (README, Troubleshooting):
// the 413 names that limit, the one the body is over, not the router's
// max_request_body, which the body is well under.
func TestBodyLimitInFront(t *testing.T) {
	g := newGatewayWith(t, globalOptions, "\trequest_body {\n\t\tmax_size 1KB\n\t}", defaultRouter)
	big := `{"model":"deepseek-v3.2","messages":[{"role":"user","content":"` + strings.Repeat("x", 2000) + `"}]}`
	// chunked: a declared length over the limit is Caddy's own 413
	req, _ := http.NewRequest(http.MethodPost, gatewayURL+"/v1/chat/completions", io.MultiReader(strings.NewReader(big)))
	resp, err := g.tc.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413: %s", resp.StatusCode, body)
	}
	if msg := apiErr(t, body).Message; !strings.Contains(msg, "limit of 1000 bytes") {
		t.Errorf("message %q, want the limit of 1000 bytes the body is over", msg)
	}
}

// TestEmbeddings are routed and failed over like chat completions.
func TestEmbeddings(t *testing.T) {
	g := newGateway(t, defaultRouter+`
	model text-embedding-3-small
	model text-embedding-3-small {
		provider backup
		priority 2
	}
	route search text-embedding-3-small`)
	g.primary.Set("text-embedding-3-small", mockllm.Behavior{Status: 503})
	resp, body := g.postPath("/v1/embeddings", `{"model":"search","input":["red shoes","blue hat"]}`)
	expectModel(t, resp, body, "text-embedding-3-small", "backup", 2)
	var out struct {
		Object string            `json:"object"`
		Data   []json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil || out.Object != "list" || len(out.Data) != 2 {
		t.Errorf("embeddings answer %s (%v)", body, err)
	}
	if reqs := g.backup.RequestsFor("text-embedding-3-small"); len(reqs) != 1 || reqs[0].Path != "/v1/embeddings" {
		t.Errorf("upstream embeddings requests: %+v", reqs)
	}
}

// TestLargeBodyPassesThrough: a body far larger than a socket buffer
// reaches the provider intact, model edited.
func TestLargeBodyPassesThrough(t *testing.T) {
	g := newGateway(t, defaultRouter)
	body := `{"model":"deepseek-v3.2","messages":[{"role":"user","content":"` + strings.Repeat("Größe 42, rot. ", 8000) + `"}]}`
	resp, out := g.post(body)
	expectModel(t, resp, out, "deepseek-v3.2", "primary", 1)
	want := strings.Replace(body, `"model":"deepseek-v3.2"`, `"model":"deepseek-chat"`, 1)
	if reqs := g.primary.Requests(); len(reqs) != 1 || string(reqs[0].Body) != want {
		t.Errorf("the provider did not get the %d-byte body intact", len(want))
	}
}

// TestAnswerContentLength: a JSON answer declares its length, whether
// net/http adds it (a short answer, written whole as the handler returns)
// or the router does (a long one), as a cache hit does
// (TestCacheHitContentLength).
func TestAnswerContentLength(t *testing.T) {
	g := newGateway(t, defaultRouter)
	long := `{"id":"chatcmpl-long","object":"chat.completion","created":1700000000,"model":"deepseek-v3.2","choices":[{"index":0,"message":{"role":"assistant","content":"` +
		strings.Repeat("All orders ship within two days. ", 100) + `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":700,"total_tokens":709}}`
	for _, answer := range []string{"", long} {
		g.primary.SetDefault(mockllm.Behavior{Body: answer})
		resp, body := g.post(chatBody("deepseek-v3.2", false))
		if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(body)) || len(resp.TransferEncoding) > 0 || (answer != "" && body != answer) {
			t.Errorf("an answer of %d bytes: status %d, Content-Length %d, Transfer-Encoding %v", len(body), resp.StatusCode, resp.ContentLength, resp.TransferEncoding)
		}
		if answer == "" && len(body) > netHTTPHeldBody {
			t.Errorf("the mock's answer is %d bytes: not a short one", len(body))
		}
	}
}
