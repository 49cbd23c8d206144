package llmrouter

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// failoverRouter is defaultRouter with short timeouts, so timeout triggers
// fire quickly. {PRIMARY_URL} lets a test point the primary elsewhere.
var failoverRouter = strings.NewReplacer(
	"base_url {PRIMARY}/v1", "base_url {PRIMARY_URL}",
	"timeout 2s\n\t}\n\tprovider backup", "timeout 300ms\n\t}\n\tprovider backup",
	"first_byte_timeout 2s", "first_byte_timeout 300ms",
).Replace(defaultRouter)

func TestFailoverTriggers(t *testing.T) {
	cases := []struct {
		name      string
		behavior  mockllm.Behavior
		deadURL   bool // primary provider refuses connections
		streams   []bool
		wantCause string // in the 503 message when the backup fails too; 429s put the deployment in cooldown instead
	}{
		{name: "500", behavior: mockllm.Behavior{Status: 500}, streams: both, wantCause: "500 Internal Server Error"},
		{name: "502", behavior: mockllm.Behavior{Status: 502}, streams: both, wantCause: "502 Bad Gateway"},
		{name: "503", behavior: mockllm.Behavior{Status: 503}, streams: both, wantCause: "503 Service Unavailable"},
		{name: "429", behavior: mockllm.Behavior{Status: 429}, streams: both},
		{name: "429 with Retry-After", behavior: mockllm.Behavior{Status: 429, RetryAfter: "7"}, streams: both},
		{name: "408", behavior: mockllm.Behavior{Status: 408}, streams: both, wantCause: "408 Request Timeout"},
		{name: "401", behavior: mockllm.Behavior{Status: 401}, streams: both, wantCause: "401 Unauthorized"},
		{name: "403", behavior: mockllm.Behavior{Status: 403}, streams: both, wantCause: "403 Forbidden"},
		{name: "404", behavior: mockllm.Behavior{Status: 404}, streams: both, wantCause: "404 Not Found"},
		{name: "connection refused", deadURL: true, streams: both, wantCause: "connection refused"},
		{name: "connection reset", behavior: mockllm.Behavior{Reset: true}, streams: both, wantCause: "deepseek-v3.2@primary"},
		{name: "attempt timeout", behavior: mockllm.Behavior{Hang: true}, streams: nonStream, wantCause: "timeout after"},
		{name: "stall before the first event", behavior: mockllm.Behavior{StallBeforeFirstChunk: true}, streams: stream, wantCause: "no stream event within 300ms"},
		{name: "headers never come (stream)", behavior: mockllm.Behavior{Hang: true}, streams: stream, wantCause: "no stream event within 300ms"},
	}
	for _, tc := range cases {
		for _, isStream := range tc.streams {
			name := tc.name
			if isStream {
				name += " stream"
			}
			t.Run(name, func(t *testing.T) {
				router := strings.ReplaceAll(failoverRouter, "{PRIMARY_URL}", "{PRIMARY}/v1")
				if tc.deadURL { // deepseek's provider refuses connections
					router = strings.Replace(router, "upstream deepseek-chat", "upstream deepseek-chat\n\t\tprovider dead", 1) +
						"\tprovider dead {\n\t\tbase_url " + closedPortURL(t) + "/v1\n\t}\n"
				}
				g := newGateway(t, router)
				g.primary.Set("deepseek-chat", tc.behavior)

				resp, body := g.post(chatBody("simple_qa", isStream))
				expectModel(t, resp, body, "gemini-2.5-flash", "primary", 2)
				if isStream {
					data := sseData(body)
					if len(data) == 0 || data[len(data)-1] != "[DONE]" || strings.Count(body, "[DONE]") != 1 {
						t.Errorf("stream is not one clean answer: %q", body)
					}
				} else if !strings.Contains(body, `"model":"gemini-2.5-flash"`) {
					t.Errorf("answer is not gemini's: %s", body)
				}
				if strings.Contains(body, "error") {
					t.Errorf("the failed attempt leaked into the response: %s", body)
				}

				// and when the second candidate fails too, the 503 says why
				// the first one failed
				g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 500})
				resp, body = g.post(chatBody("simple_qa", isStream))
				if resp.StatusCode != http.StatusServiceUnavailable {
					t.Fatalf("status %d, want 503: %s", resp.StatusCode, body)
				}
				msg := apiErr(t, body).Message
				if !strings.Contains(msg, tc.wantCause) || !strings.Contains(msg, "gemini-2.5-flash@primary: 500 Internal Server Error") {
					t.Errorf("503 message %q does not give the causes (%q)", msg, tc.wantCause)
				}
			})
		}
	}
}

var (
	both      = []bool{false, true}
	nonStream = []bool{false}
	stream    = []bool{true}
)

// TestClientErrorPassesThrough: a 4xx that is the client's fault goes back
// as the provider sent it, without failover.
func TestClientErrorPassesThrough(t *testing.T) {
	g := newGateway(t, defaultRouter)
	const providerBody = `{"error":{"message":"max_tokens is too large","type":"invalid_request_error","param":"max_tokens","code":null}}`
	for _, status := range []int{400, 422} {
		for _, isStream := range both {
			g.primary.Reset()
			g.backup.Reset()
			g.primary.Set("deepseek-chat", mockllm.Behavior{Status: status, Body: providerBody})
			resp, body := g.post(chatBody("simple_qa", isStream))
			if resp.StatusCode != status || body != providerBody {
				t.Fatalf("status %d body %q, want the provider's %d as-is", resp.StatusCode, body, status)
			}
			if got := resp.Header.Get("X-LLM-Attempts"); got != "1" {
				t.Errorf("X-LLM-Attempts = %q, want 1", got)
			}
			if n := len(g.primary.RequestsFor("gemini-2.5-flash")); n != 0 {
				t.Errorf("failed over on a %d: gemini saw %d requests", status, n)
			}
		}
	}
}

// TestCooldownAfter429: a 429 with Retry-After keeps the deployment out of
// rotation for that long, and it is used again afterwards.
func TestCooldownAfter429(t *testing.T) {
	g := newGateway(t, defaultRouter)
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 429, RetryAfter: "2", Times: 1})

	resp, body := g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "gemini-2.5-flash", "primary", 2)

	resp, body = g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "gemini-2.5-flash", "primary", 1)
	if n := len(g.primary.RequestsFor("deepseek-chat")); n != 1 {
		t.Fatalf("deepseek saw %d requests during its cooldown, want only the first", n)
	}

	advanceClock(t, 1900*time.Millisecond)
	resp, body = g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "gemini-2.5-flash", "primary", 1)

	advanceClock(t, 200*time.Millisecond)
	resp, body = g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
}

// TestCooldownCapAndDefault: without Retry-After the configured cooldown
// applies; a huge Retry-After is capped by max_cooldown.
func TestCooldownCapAndDefault(t *testing.T) {
	router := strings.Replace(defaultRouter, "first_byte_timeout 2s", "first_byte_timeout 2s\n\t\tcooldown 10s\n\t\tmax_cooldown 1m", 1)
	g := newGateway(t, router)
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 429, Times: 1})
	g.primary.Set("gpt-4.1", mockllm.Behavior{Status: 429, RetryAfter: "86400", Times: 1})
	g.post(chatBody("simple_qa", false))
	g.post(chatBody("complex_reasoning", false))

	advanceClock(t, 10*time.Second)
	resp, body := g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	resp, body = g.post(chatBody("complex_reasoning", false))
	expectModel(t, resp, body, "claude-sonnet-4.5", "backup", 1)

	advanceClock(t, 50*time.Second)
	resp, body = g.post(chatBody("complex_reasoning", false))
	expectModel(t, resp, body, "gpt-4.1", "primary", 1)
}

// TestCooldownLongerThanMaxCooldown: max_cooldown caps a provider's
// Retry-After, not the operator's own cooldown. A cooldown of 10m was cut
// to the default max_cooldown of 5m without a word.
func TestCooldownLongerThanMaxCooldown(t *testing.T) {
	router := strings.Replace(defaultRouter, "first_byte_timeout 2s", "first_byte_timeout 2s\n\t\tcooldown 10m", 1)
	g := newGateway(t, router)
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 429, Times: 1})
	resp, body := g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "gemini-2.5-flash", "primary", 2)

	advanceClock(t, 6*time.Minute)
	resp, body = g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "gemini-2.5-flash", "primary", 1) // deepseek still cooling down

	advanceClock(t, 4*time.Minute)
	resp, body = g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
}

// TestAllCandidatesFail: a 503 envelope that lists every attempt and says
// when to come back.
func TestAllCandidatesFail(t *testing.T) {
	g := newGateway(t, defaultRouter)
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 429, RetryAfter: "42"})
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 502})
	resp, body := g.post(chatBody("simple_qa", false), "Authorization", "Bearer client-secret")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", resp.StatusCode)
	}
	e := apiErr(t, body)
	if e.Code != "all_models_unavailable" || e.Type != "server_error" {
		t.Errorf("error = %+v", e)
	}
	for _, want := range []string{"simple_qa", "deepseek-v3.2@primary: 429 Too Many Requests", "gemini-2.5-flash@primary: 502 Bad Gateway"} {
		if !strings.Contains(e.Message, want) {
			t.Errorf("message %q lacks %q", e.Message, want)
		}
	}
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 41 || ra > 42 {
		t.Errorf("Retry-After = %q, want the 42s cooldown", resp.Header.Get("Retry-After"))
	}
	if resp.Header.Get("X-LLM-Attempts") != "2" {
		t.Errorf("X-LLM-Attempts = %q", resp.Header.Get("X-LLM-Attempts"))
	}
	for _, secret := range []string{"sk-primary-test-key-0001", "client-secret"} {
		if strings.Contains(body, secret) || strings.Contains(strings.Join(headerValues(resp.Header), " "), secret) {
			t.Errorf("secret %q in the response", secret)
		}
	}

	// every candidate in cooldown: still tried rather than refused
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 429})
	g.post(chatBody("simple_qa", false))
	g.primary.Clear()
	resp, body = g.post(chatBody("simple_qa", false))
	// healthiest first: a 429 costs no score, gemini's 502 cost it 10
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
}

func headerValues(h http.Header) []string {
	var out []string
	for k, v := range h {
		out = append(out, k)
		out = append(out, v...)
	}
	return out
}

// TestMaxAttemptsAndTryDuration bound the retries.
func TestMaxAttempts(t *testing.T) {
	router := strings.Replace(defaultRouter, "first_byte_timeout 2s", "first_byte_timeout 2s\n\t\tmax_attempts 1", 1)
	g := newGateway(t, router)
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 500})
	resp, body := g.post(chatBody("simple_qa", false))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-LLM-Attempts") != "1" {
		t.Fatalf("status %d attempts %q: %s", resp.StatusCode, resp.Header.Get("X-LLM-Attempts"), body)
	}
	if n := len(g.primary.RequestsFor("gemini-2.5-flash")); n != 0 {
		t.Errorf("max_attempts 1 still tried gemini %d times", n)
	}
}

// TestMidStreamBreak: once the first event is out, a broken upstream ends
// the client's stream with an error event the SDKs raise on, then an
// aborted response; nothing from another model is appended.
func TestMidStreamBreak(t *testing.T) {
	g := newGateway(t, defaultRouter)
	g.primary.Set("deepseek-chat", mockllm.Behavior{BreakAfterChunks: 3})
	resp, body, err := g.postRaw("/v1/chat/completions", chatBody("simple_qa", true))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	if err == nil {
		t.Errorf("the response ended cleanly; want an aborted one")
	}
	data := sseData(body)
	if len(data) != 5 { // role chunk + 3 words + the error event
		t.Fatalf("client saw %d events, want 5: %q", len(data), body)
	}
	var last struct {
		Error apiErrorBody `json:"error"`
	}
	if json.Unmarshal([]byte(data[4]), &last) != nil || last.Error.Code != "upstream_stream_broken" || last.Error.Type != "server_error" {
		t.Errorf("last event %q is not the stream error", data[4])
	}
	if strings.Contains(body, "[DONE]") || strings.Contains(body, "gemini") {
		t.Errorf("a second response was spliced on: %q", body)
	}
	if n := len(g.primary.RequestsFor("gemini-2.5-flash")); n != 0 {
		t.Errorf("failed over after the response was committed (%d requests)", n)
	}
}

// TestClientDisconnectCancelsUpstream: a client that goes away mid-stream
// cancels the upstream request.
func TestClientDisconnectCancelsUpstream(t *testing.T) {
	g := newGateway(t, withHealth("\t\tinterval off")) // a probe is no failover
	done := requestsDone(t)
	g.primary.Set("deepseek-chat", mockllm.Behavior{HoldAfterChunks: 2})
	// read until the second word has arrived, then hang up
	resp, cancel := g.streamUntil(chatBody("simple_qa", true), "w1 ")
	defer resp.Body.Close()
	cancel()
	if got := waitFor(t, g.primary.Canceled(), "the upstream request to be canceled"); got != "deepseek-chat" {
		t.Errorf("canceled %q, want deepseek-chat", got)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if n := len(g.primary.RequestsFor("gemini-2.5-flash")); n != 0 {
		t.Errorf("a client's hang-up caused a failover (%d requests)", n)
	}
	waitFor(t, done, "the abandoned request to be counted")
	if st := statsFor(t, g, "deepseek-v3.2", "primary"); st.HealthScore != 100 || st.Errors != 0 || st.LastError != "" {
		t.Errorf("the client's hang-up counted against the deployment: score %d, errors %d, last error %q", st.HealthScore, st.Errors, st.LastError)
	}
}

// TestProviderAccountStatusesFailOver: 402 (the gateway's account with
// the provider out of credit, as DeepSeek and OpenRouter send it) and 407
// (a forward proxy's refusal) are about the gateway, not the client's
// request: the request fails over, and the provider's text (its account
// and billing owner) never reaches the client.
func TestProviderAccountStatusesFailOver(t *testing.T) {
	for _, status := range []int{http.StatusPaymentRequired, http.StatusProxyAuthRequired} {
		up := reviewUpstream(t, func(w http.ResponseWriter, model string, body map[string]any) {
			w.Header().Set("Content-Type", "application/json")
			if model == "deepseek-chat" {
				w.WriteHeader(status)
				io.WriteString(w, `{"error":{"message":"Insufficient Balance: account acct_7Hq2 (billing owner ops@acme.example) has $0.03 left","type":"insufficient_balance","code":"invalid_request_error"}}`)
				return
			}
			io.WriteString(w, `{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`)
		})
		srv := routerServer(t, benchRouter(t, up.URL, nil))
		resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"simple_qa","messages":[{"role":"user","content":"hello"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.Contains(string(b), "acct_7Hq2") || resp.Header.Get("X-LLM-Attempts") != "2" {
			t.Errorf("%d from the first deployment: %d (attempts %s) %s, want the fallback's answer", status, resp.StatusCode, resp.Header.Get("X-LLM-Attempts"), b)
		}
	}
}
