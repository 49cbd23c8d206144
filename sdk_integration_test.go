package llmrouter

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// runSDK runs one case of sdktest/sdk.mjs (the official openai npm package)
// against the in-process gateway and decodes the JSON line it prints into
// out. Without node or `npm ci` in sdktest/ the test is skipped, except in CI
// (CI=true), where that is a failure.
func runSDK(t *testing.T, name string, out any, env ...string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join("sdktest", "node_modules", "openai"))
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node and sdktest/node_modules are required in CI (cd sdktest && npm ci): %v", err)
		}
		t.Skipf("needs node and `npm ci` in sdktest/: %v", err)
	}
	cmd := exec.Command(node, "sdk.mjs", name)
	cmd.Dir = "sdktest"
	cmd.Env = append(os.Environ(), append([]string{
		"OPENAI_BASE_URL=" + gatewayURL + "/v1",
		"OPENAI_API_KEY=sk-client-key-for-the-gateway",
	}, env...)...)
	b, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("node sdk.mjs %s: %v\n%s", name, err, stderr)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("node sdk.mjs %s printed %q: %v", name, b, err)
	}
}

// sdkError is what the SDK raised, as sdk.mjs reports it.
type sdkError struct {
	Name    string  `json:"name"`
	Status  *int    `json:"status"`
	Code    *string `json:"code"`
	Type    *string `json:"type"`
	Message string  `json:"message"`
}

type sdkChatStream struct {
	Text         string          `json:"text"`
	Chunks       int             `json:"chunks"`
	FinishReason *string         `json:"finish_reason"`
	Usage        json.RawMessage `json:"usage"`
	Error        *sdkError       `json:"error"`
}

// TestSDKStreamBreakRaises: a stream that breaks mid-way makes the official
// SDK raise, rather than return a truncated answer.
func TestSDKStreamBreakRaises(t *testing.T) {
	g := newGateway(t, defaultRouter)
	g.primary.Set("deepseek-chat", mockllm.Behavior{BreakAfterChunks: 3})
	var got sdkChatStream
	runSDK(t, "stream-error", &got)
	if got.Error == nil {
		t.Fatalf("the SDK returned a truncated answer without raising: %+v", got)
	}
	if got.Error.Name != "APIError" || got.Error.Code == nil || *got.Error.Code != "upstream_stream_broken" {
		t.Errorf("the SDK raised %+v, want APIError with code upstream_stream_broken", *got.Error)
	}
	if got.Text != "w0 w1 w2 " {
		t.Errorf("text before the error %q, want the 3 words relayed", got.Text)
	}
}

// TestSDKResponsesCompletionsModels: responses.create (plain and stream),
// completions.create (plain and stream) and models.retrieve through the
// gateway, with tokens counted from each API's own usage.
func TestSDKResponsesCompletionsModels(t *testing.T) {
	g := newGateway(t, defaultRouter)
	before := scrape(t)

	var resp struct {
		Plain struct {
			Value struct {
				Status     string `json:"status"`
				OutputText string `json:"output_text"`
				Usage      struct {
					InputTokens  int `json:"input_tokens"`
					OutputTokens int `json:"output_tokens"`
				} `json:"usage"`
			} `json:"value"`
			Error *sdkError `json:"error"`
		} `json:"plain"`
		Streamed struct {
			Value struct {
				Types []string `json:"types"`
				Text  string   `json:"text"`
				Usage struct {
					InputTokens  int `json:"input_tokens"`
					OutputTokens int `json:"output_tokens"`
				} `json:"usage"`
			} `json:"value"`
			Error *sdkError `json:"error"`
		} `json:"streamed"`
	}
	runSDK(t, "responses", &resp)
	if resp.Plain.Error != nil || resp.Plain.Value.Status != "completed" || resp.Plain.Value.OutputText == "" || resp.Plain.Value.Usage.OutputTokens == 0 {
		t.Errorf("responses.create: %+v", resp.Plain)
	}
	types := resp.Streamed.Value.Types
	if resp.Streamed.Error != nil || len(types) == 0 || types[0] != "response.created" || types[len(types)-1] != "response.completed" || resp.Streamed.Value.Text == "" {
		t.Errorf("responses.create stream: %+v", resp.Streamed)
	}

	var comp struct {
		Plain struct {
			Value struct {
				Text  string `json:"text"`
				Usage struct {
					CompletionTokens int `json:"completion_tokens"`
				} `json:"usage"`
			} `json:"value"`
			Error *sdkError `json:"error"`
		} `json:"plain"`
		Streamed struct {
			Value struct {
				Text string `json:"text"`
			} `json:"value"`
			Error *sdkError `json:"error"`
		} `json:"streamed"`
	}
	runSDK(t, "completions", &comp)
	if comp.Plain.Error != nil || comp.Plain.Value.Text != "w0 w1 w2 w3 w4 " || comp.Plain.Value.Usage.CompletionTokens != 5 {
		t.Errorf("completions.create: %+v", comp.Plain)
	}
	if comp.Streamed.Error != nil || !strings.HasPrefix(comp.Streamed.Value.Text, "w0 w1 ") {
		t.Errorf("completions.create stream: %+v", comp.Streamed)
	}

	var models struct {
		Model struct {
			Value struct {
				ID      string `json:"id"`
				OwnedBy string `json:"owned_by"`
			} `json:"value"`
			Error *sdkError `json:"error"`
		} `json:"model"`
		Route struct {
			Value struct {
				ID    string `json:"id"`
				Route bool   `json:"llm_router_route"`
			} `json:"value"`
		} `json:"route"`
		Missing struct {
			Error *sdkError `json:"error"`
		} `json:"missing"`
		List struct {
			Value []string `json:"value"`
		} `json:"list"`
	}
	runSDK(t, "models", &models)
	if models.Model.Error != nil || models.Model.Value.ID != "gpt-4.1" || models.Model.Value.OwnedBy != "primary" {
		t.Errorf("models.retrieve(gpt-4.1): %+v", models.Model)
	}
	if models.Route.Value.ID != "simple_qa" || !models.Route.Value.Route {
		t.Errorf("models.retrieve(simple_qa): %+v", models.Route)
	}
	if e := models.Missing.Error; e == nil || e.Name != "NotFoundError" {
		t.Errorf("models.retrieve(gpt-9): %+v, want NotFoundError", e)
	}
	if strings.Join(models.List.Value, " ") != "deepseek-v3.2 gemini-2.5-flash gpt-4.1 claude-sonnet-4.5 complex_reasoning simple_qa" {
		t.Errorf("models.list: %v", models.List.Value)
	}

	// every routed call was counted with its endpoint and its tokens
	after := scrape(t)
	m := []string{"route", "simple_qa", "model", "deepseek-v3.2", "provider", "primary", "code", "200"}
	for ep, want := range map[string]float64{"responses": 2, "completions": 2} {
		if d := after.delta(before, sel("caddy_llm_router_requests_total", append(slices.Clone(m), "endpoint", ep)...)); d != want {
			t.Errorf("requests_total{endpoint=%q} +%v, want %v", ep, d, want)
		}
	}
	served := g.primary.Served("deepseek-chat")
	if d := after.delta(before, sel("caddy_llm_router_tokens_total", "model", "deepseek-v3.2", "provider", "primary", "type", "output", "client", "")); d != float64(served.Completion) {
		t.Errorf("output tokens +%v, the mock served %d", d, served.Completion)
	}
}

// TestSDKResponsesErrorEventRaises: a Responses API stream whose provider
// sends its "error" event mid-way makes the official SDK raise an
// APIError, as a chat stream's error does. The SDKs raise only on an event
// with an "error" object; they yield the Responses API's own error event
// (and response.failed) as one more event, and the aborted response that
// follows was a bare transport error ("terminated").
func TestSDKResponsesErrorEventRaises(t *testing.T) {
	g := newGateway(t, defaultRouter)
	g.primary.Set("deepseek-chat", mockllm.Behavior{ErrorEvent: true})
	var got struct {
		Types []string  `json:"types"`
		Error *sdkError `json:"error"`
	}
	runSDK(t, "responses-stream", &got)
	if got.Error == nil {
		t.Fatalf("the SDK returned a failed stream without raising: %+v", got)
	}
	if got.Error.Name != "APIError" || got.Error.Code == nil || *got.Error.Code != "upstream_stream_broken" {
		t.Errorf("the SDK raised %+v, want APIError with code upstream_stream_broken", *got.Error)
	}
	if !slices.Contains(got.Types, "error") {
		t.Errorf("events %v: the provider's error event was not relayed", got.Types)
	}
}

// TestSDKBudgetRefusalRaisesAtOnce: a request refused by a budget past
// its hard cap makes the official SDK raise its RateLimitError at once,
// with its default retries on. The Node SDK sleeps whatever Retry-After
// says before each retry, and the refusal's Retry-After is the time to the
// period's end (hours, for a daily budget): the call hung that long, twice.
// A refusal that cannot clear within a minute says X-Should-Retry: false,
// which both SDKs obey.
func TestSDKBudgetRefusalRaisesAtOnce(t *testing.T) {
	global, _ := withStorage(t, globalOptions)
	g := newGatewayWith(t, global, "", budgetRouter+`
	budget daily {
		limit 0.000001 per day
	}
`)
	g.post(chatBody("simple_qa", false)) // spends past the limit
	resp, body := g.post(chatBody("simple_qa", false))
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("past the limit: %d %s", resp.StatusCode, body)
	}
	var got struct {
		Hung  bool      `json:"hung"`
		Error *sdkError `json:"error"`
	}
	runSDK(t, "chat-default-retries", &got)
	if got.Hung || got.Error == nil || got.Error.Name != "RateLimitError" || got.Error.Code == nil || *got.Error.Code != "budget_exceeded" {
		t.Errorf("the SDK, Retry-After %s: %+v (error %+v), want RateLimitError budget_exceeded at once", resp.Header.Get("Retry-After"), got, got.Error)
	}
}

// TestSDKBudgetRefusalAfterDowngradeRetriedWhenRouteReopens: a request
// that a budget at its hourly limit downgrades onto a route whose monthly
// budget is spent is refused with the Retry-After of the route it left,
// which reopens first, and the official SDK, with its default retries,
// waits that out and is answered there. The refusal's Retry-After was the
// month's end, weeks away, with X-Should-Retry: false: the SDK raised at
// once, and a client obeying Retry-After waited weeks for an hour's reset.
func TestSDKBudgetRefusalAfterDowngradeRetriedWhenRouteReopens(t *testing.T) {
	n := now().UTC()
	setClock(t, time.Date(n.Year(), n.Month(), 10, 10, 59, 57, 0, time.UTC))
	global, _ := withStorage(t, globalOptions)
	g := newGatewayWith(t, global, "", budgetRouter+`
	budget reasoning_hourly {
		limit 0.000001 per hour
		match complex_reasoning
		downgrade simple_qa
		timezone UTC
	}
	budget qa_monthly {
		limit 0.000001 per month
		match simple_qa
		timezone UTC
	}
`)
	g.post(chatBody("complex_reasoning", false)) // spends past the hour's limit
	g.post(chatBody("simple_qa", false))         // and past the month's
	resp, body := g.post(chatBody("complex_reasoning", false))
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("X-LLM-Budget") != "refused (qa_monthly)" {
		t.Fatalf("downgraded onto a spent route: %d %s %s", resp.StatusCode, resp.Header.Get("X-LLM-Budget"), body)
	}
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 1 || ra > 3 || resp.Header.Get("X-Should-Retry") == "false" {
		t.Errorf("Retry-After %q, X-Should-Retry %q: want the 3 s to the hour's end, retryable",
			resp.Header.Get("Retry-After"), resp.Header.Get("X-Should-Retry"))
	}
	var got struct {
		Hung  bool            `json:"hung"`
		Value json.RawMessage `json:"value"`
		Error *sdkError       `json:"error"`
	}
	runSDK(t, "chat-default-retries", &got, "MODEL=complex_reasoning", "WAIT_MS=8000")
	if got.Hung || got.Error != nil || !strings.Contains(string(got.Value), `"model":"gpt-4.1"`) {
		t.Errorf("the SDK %s (hung %v, error %+v), want gpt-4.1's answer once the hour reset", got.Value, got.Hung, got.Error)
	}
}

// TestSDKBudgetRefusalAtTwoLimitsRaisesAtOnce: a budget at both its
// hourly and its daily limit refuses with the Retry-After of the later,
// the day's end, when it lets a request through again, and with
// X-Should-Retry: false, so that the official SDK raises at once. The
// refusal named the first limit listed: the hour's end, 10 s away, which
// the SDK slept before sending the request again, only to be refused until
// the day's end.
//
// So does a budget without a downgrade route past its hourly hard cap and
// at its daily limit: once the hour's cap resets, the day's limit still
// refuses. The refusal said the hour's end, the hard cap's alone. And so
// do two budgets of the route, at an hourly and at a daily limit: the
// refusal said the first's.
func TestSDKBudgetRefusalAtTwoLimitsRaisesAtOnce(t *testing.T) {
	for _, tc := range []struct{ name, limits string }{
		{"two limits", "limit 0.000001 per hour\n\t\tlimit 0.000001 per day"},
		{"hard cap and limit", "limit 0.000001 per day\n\t\thard 0.000001 per hour"},
		{"two budgets", "limit 0.000001 per hour\n\t\tmatch simple_qa\n\t\ttimezone UTC\n\t}\n\tbudget qa_daily {\n\t\tlimit 0.000001 per day"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := now().UTC()
			setClock(t, time.Date(n.Year(), n.Month(), 10, 10, 59, 50, 0, time.UTC))
			global, _ := withStorage(t, globalOptions)
			g := newGatewayWith(t, global, "", budgetRouter+`
	budget qa {
		`+tc.limits+`
		match simple_qa
		timezone UTC
	}
`)
			g.post(chatBody("simple_qa", false)) // spends past both limits
			resp, body := g.post(chatBody("simple_qa", false))
			if resp.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("past both limits: %d %s", resp.StatusCode, body)
			}
			if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 13*3600 || resp.Header.Get("X-Should-Retry") != "false" {
				t.Errorf("Retry-After %q, X-Should-Retry %q: want the 13 h to the day's end, not retried (%s)",
					resp.Header.Get("Retry-After"), resp.Header.Get("X-Should-Retry"), body)
			}
			var got struct {
				Hung  bool      `json:"hung"`
				Error *sdkError `json:"error"`
			}
			runSDK(t, "chat-default-retries", &got)
			if got.Hung || got.Error == nil || got.Error.Name != "RateLimitError" || deref(got.Error.Code) != "budget_exceeded" {
				t.Errorf("the SDK %+v (error %+v), want RateLimitError budget_exceeded at once", got, got.Error)
			}
		})
	}
}

// TestSDKResponsesRequestsOwnErrorRaisesIt: a Responses API stream whose
// provider flags the prompt mid-way (its "error" event, or response.failed,
// with cyber_policy or invalid_prompt: the request's own fault, relayed
// and counted against no deployment) makes the official SDK raise that
// error, as the same error in a 400 would: the router's own event that
// follows (the SDKs yield those two events without raising) said
// server_error / upstream_stream_broken, a provider failure the client
// could retry forever.
func TestSDKResponsesRequestsOwnErrorRaisesIt(t *testing.T) {
	const (
		created = `data: {"type":"response.created","response":{"id":"resp_1","status":"in_progress","usage":null}}` + "\n\n"
		delta   = `data: {"type":"response.output_text.delta","delta":"Sure"}` + "\n\n"
	)
	for _, tc := range []struct{ name, event, code, message string }{
		{"error event", `data: {"type":"error","code":"invalid_prompt","message":"Invalid prompt: flagged.","param":null}` + "\n\n",
			"invalid_prompt", "Invalid prompt: flagged."},
		{"response.failed", `data: {"type":"response.failed","response":{"id":"resp_1","status":"failed","error":{"code":"cyber_policy","message":"Flagged for possible cybersecurity risk."}}}` + "\n\n",
			"cyber_policy", "Flagged for possible cybersecurity risk."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGateway(t, defaultRouter)
			g.primary.Set("deepseek-chat", mockllm.Behavior{Body: created + delta + tc.event, ContentType: "text/event-stream"})
			var got struct {
				Types []string  `json:"types"`
				Error *sdkError `json:"error"`
			}
			runSDK(t, "responses-stream", &got)
			if got.Error == nil {
				t.Fatalf("the SDK returned a failed stream without raising: %+v", got)
			}
			if got.Error.Code == nil || *got.Error.Code != tc.code || !strings.Contains(got.Error.Message, tc.message) {
				t.Errorf("the SDK raised %+v (code %v), want the provider's error %s %q", *got.Error, deref(got.Error.Code), tc.code, tc.message)
			}
		})
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// TestSDKRetriesWhatCanSucceed: with its default retries (two), the
// official SDK sends again only what can succeed. A request over every
// deployment's whole tokens-per-minute limit (429, X-Should-Retry: false,
// no Retry-After) and a prompt the provider blames (context_length_exceeded
// in a 500, relayed as a 400) raise at once, after one request; a 503
// all_models_unavailable keeps its Retry-After and is retried.
func TestSDKRetriesWhatCanSucceed(t *testing.T) {
	for _, tc := range []struct {
		name, code, errName, message string
		status                       int
		behavior                     mockllm.Behavior
		requests                     int // the gateway's requests the SDK made
	}{
		{"over the whole limit", "rate_limit_exceeded", "RateLimitError", "Requested 45000", 429,
			mockllm.Behavior{Status: 429, Body: tooLarge, ContentType: "application/json", RetryAfter: "30"}, 1},
		{"the request's fault in a 500", "context_length_exceeded", "BadRequestError", "maximum context length is 8192 tokens", 400,
			mockllm.Behavior{Status: 500, Body: contextOverflow, ContentType: "application/json"}, 1},
		{"all models unavailable", "all_models_unavailable", "InternalServerError", "All models are unavailable", 503,
			mockllm.Behavior{Status: 500}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGateway(t, defaultRouter)
			g.primary.Set("gpt-4.1", tc.behavior)
			g.backup.Set("claude-sonnet-4.5", tc.behavior)
			var got struct {
				Hung  bool      `json:"hung"`
				Error *sdkError `json:"error"`
			}
			runSDK(t, "chat-default-retries", &got, "MODEL=complex_reasoning", "WAIT_MS=8000")
			if got.Hung || got.Error == nil {
				t.Fatalf("the SDK %+v, want it to raise", got)
			}
			e := got.Error
			if e.Name != tc.errName || e.Status == nil || *e.Status != tc.status || deref(e.Code) != tc.code || !strings.Contains(e.Message, tc.message) {
				t.Errorf("the SDK raised %+v (status %v, code %s), want %s %d %s %q", *e, e.Status, deref(e.Code), tc.errName, tc.status, tc.code, tc.message)
			}
			if n := g.primary.RequestCounts()["gpt-4.1"]; n != tc.requests {
				t.Errorf("the SDK sent %d requests, want %d", n, tc.requests)
			}
		})
	}
}

// TestSDKChatStreamFailsOverAfterItsRoleChunk: a chat stream whose
// provider sends its role chunk, then an error event, fails over; the
// official SDK iterates the next candidate's stream alone, without error.
func TestSDKChatStreamFailsOverAfterItsRoleChunk(t *testing.T) {
	g := newGateway(t, defaultRouter)
	g.primary.Set("deepseek-chat", mockllm.Behavior{ErrorEvent: true})
	var got sdkChatStream
	runSDK(t, "chat-stream", &got)
	if got.Error != nil {
		t.Fatalf("the SDK raised %+v after %d chunks %q", *got.Error, got.Chunks, got.Text)
	}
	served := g.primary.Served("gemini-2.5-flash")
	// the role chunk, the content chunks, the finishing chunk, the usage chunk
	if got.Text != "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 " || deref(got.FinishReason) != "stop" || got.Chunks != mockllm.DefaultChunks+3 || served.Requests != 1 {
		t.Errorf("the SDK iterated %d chunks %q (finish %s); want gemini-2.5-flash's stream alone (served %+v)", got.Chunks, got.Text, deref(got.FinishReason), served)
	}
	var u struct {
		CompletionTokens int `json:"completion_tokens"`
	}
	if err := json.Unmarshal(got.Usage, &u); err != nil || u.CompletionTokens != served.Completion {
		t.Errorf("usage %s, want the second candidate's %d completion tokens", got.Usage, served.Completion)
	}
}

// TestSDKRequestsFaultIn5xxNotRetried: a provider's 5xx whose error blames
// the request (context_length_exceeded) is relayed as a 400, and the
// official SDK, with its default retries, raises BadRequestError after one
// request. The provider's retry hints for its 5xx (X-Should-Retry: true,
// Retry-After) were relayed with the 400, and the SDK obeys
// X-Should-Retry: true whatever the status: it sent the prompt that
// cannot fit twice more.
func TestSDKRequestsFaultIn5xxNotRetried(t *testing.T) {
	var requests atomic.Int32
	up := newMockServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Should-Retry", "true")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, contextOverflow)
	}))
	newGateway(t, `
	provider blaming {
		base_url `+up.URL+`/v1
		api_key sk-blaming-test-key-0003
	}
	model deepseek-v3.2
	route simple_qa deepseek-v3.2
`)
	var got struct {
		Hung  bool      `json:"hung"`
		Error *sdkError `json:"error"`
	}
	runSDK(t, "chat-default-retries", &got)
	if got.Hung || got.Error == nil || got.Error.Name != "BadRequestError" || deref(got.Error.Code) != "context_length_exceeded" {
		t.Errorf("the SDK %+v (error %+v), want BadRequestError context_length_exceeded", got, got.Error)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("the SDK sent the request %d times, want once", n)
	}
}
