package llmrouter

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// contextOverflow is an error that names the request as its cause: OpenAI's
// context_length_exceeded, which some OpenAI-compatible providers send with
// a 5xx status, or with a 200.
const contextOverflow = `{"error":{"message":"This model's maximum context length is 8192 tokens. However, your messages resulted in 90000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}`

// TestRequestsFaultSparesHealth: an error answer whose error blames the
// request (openai.RequestsFault), with a 5xx status or dressed as a 2xx,
// is the client's, as a 400 or a stream's first event that says so is:
// one client repeating such a request (a prompt too long for the model)
// neither disables a healthy deployment nor is tried on every other
// deployment; it gets a 400 with the provider's error.
func TestRequestsFaultSparesHealth(t *testing.T) {
	for _, c := range []struct {
		name   string
		status int
		stream bool
	}{
		{"500", http.StatusInternalServerError, false},
		{"200", http.StatusOK, false},
		{"500 to a stream", http.StatusInternalServerError, true},
		{"200 JSON to a stream", http.StatusOK, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := newGateway(t, withHealth("\t\tinterval off"))
			g.primary.Set("gpt-4.1", mockllm.Behavior{Status: c.status, Body: contextOverflow, ContentType: "application/json"})
			for range 10 {
				resp, body := g.post(chatBody("complex_reasoning", c.stream)) // gpt-4.1, then claude
				if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("X-LLM-Attempts") != "1" {
					t.Fatalf("status %d after %s attempts, want 400 after 1: %s", resp.StatusCode, resp.Header.Get("X-LLM-Attempts"), body)
				}
				if e := apiErr(t, body); e.Code != "context_length_exceeded" || e.Type != "invalid_request_error" {
					t.Fatalf("error %+v, want the provider's context_length_exceeded", e)
				}
			}
			if st := statsFor(t, g, "gpt-4.1", "primary"); st.State != stateUp || st.HealthScore != maxScore {
				t.Errorf("gpt-4.1 %s at %d after the client's own errors, want up at %d", st.State, st.HealthScore, maxScore)
			}
			// a real fault still counts: a 500 that blames the provider
			g.primary.Set("gpt-4.1", mockllm.Behavior{Status: 500})
			for range 7 {
				g.post(chatBody("complex_reasoning", false))
			}
			if st := statsFor(t, g, "gpt-4.1", "primary"); st.State != stateDisabled {
				t.Errorf("gpt-4.1 %s after seven 500s, want disabled", st.State)
			}
		})
	}
}

// TestFlaggedPromptSparesHealth: OpenRouter answers a prompt its
// moderation flagged with a 403 that names the reasons: the request's
// fault, relayed to the client, tried nowhere else, and no health lost;
// a 403 without them is the account's, as before.
func TestFlaggedPromptSparesHealth(t *testing.T) {
	const flagged = `{"error":{"code":403,"message":"gpt-4.1 requires moderation. Your input was flagged for \"harassment\". No credits were charged.","metadata":{"reasons":["harassment"],"flagged_input":"you ...","provider_name":"OpenAI","model_slug":"openai/gpt-4.1"}}}`
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprint("stream ", stream), func(t *testing.T) {
			g := newGateway(t, withHealth("\t\tinterval off"))
			g.primary.Set("gpt-4.1", mockllm.Behavior{Status: http.StatusForbidden, Body: flagged, ContentType: "application/json"})
			for range 10 {
				resp, body := g.post(chatBody("complex_reasoning", stream)) // gpt-4.1, then claude
				if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-LLM-Attempts") != "1" || !strings.Contains(body, "flagged") {
					t.Fatalf("status %d after %s attempts, want the provider's 403 after 1: %s", resp.StatusCode, resp.Header.Get("X-LLM-Attempts"), body)
				}
			}
			if st := statsFor(t, g, "gpt-4.1", "primary"); st.State != stateUp || st.HealthScore != maxScore {
				t.Errorf("gpt-4.1 %s at %d after flagged prompts, want up at %d", st.State, st.HealthScore, maxScore)
			}
			// a 403 that flags nothing is the account's: fails over
			g.primary.Set("gpt-4.1", mockllm.Behavior{Status: http.StatusForbidden})
			if resp, body := g.post(chatBody("complex_reasoning", stream)); resp.StatusCode != http.StatusOK || resp.Header.Get("X-LLM-Attempts") != "2" {
				t.Errorf("a plain 403: status %d after %s attempts, want 200 after 2: %s", resp.StatusCode, resp.Header.Get("X-LLM-Attempts"), body)
			}
		})
	}
}

// tooLarge is OpenAI's 429 for one request over the account's whole
// tokens-per-minute limit, coded as any rate limit is; rateLimited is its
// 429 for a limit reached by all the requests of the minute.
const (
	tooLarge    = `{"error":{"message":"Request too large for gpt-4.1 in organization org-test on tokens per min (TPM): Limit 30000, Requested 45000. The input or output tokens must be reduced in order to run successfully.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`
	rateLimited = `{"error":{"message":"Rate limit reached for gpt-4.1 in organization org-test on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. Please try again in 2s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`
)

// TestRequestOverLimitCoolsNothing: a 429 that says the request alone is
// over the deployment's whole limit ("Request too large ... Limit 30000,
// Requested 45000") cooled the deployment down for every client, as a
// limit reached does, though no pause serves that request and the next
// one fits. It is the request's: no cooldown, no health lost; it fails
// over (a deployment with a larger limit may serve it), and when every
// deployment says so the client gets the 429 it would have got, without
// Retry-After and with X-Should-Retry: false, as retrying cannot help.
func TestRequestOverLimitCoolsNothing(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprint("stream ", stream), func(t *testing.T) {
			g := newGateway(t, withHealth("\t\tinterval off"))
			g.primary.Set("gpt-4.1", mockllm.Behavior{Status: 429, Body: tooLarge, ContentType: "application/json", RetryAfter: "30", Times: 1})
			resp, body := g.post(chatBody("complex_reasoning", stream))
			expectModel(t, resp, body, "claude-sonnet-4.5", "backup", 2)
			if st := statsFor(t, g, "gpt-4.1", "primary"); st.State != stateUp || st.HealthScore != maxScore {
				t.Errorf("gpt-4.1 %s at %d after one request over its limit, want up at %d", st.State, st.HealthScore, maxScore)
			}
			resp, body = g.post(chatBody("complex_reasoning", stream))
			expectModel(t, resp, body, "gpt-4.1", "primary", 1)

			// over every deployment's limit: the client's 429, once
			g.primary.Set("gpt-4.1", mockllm.Behavior{Status: 429, Body: tooLarge, ContentType: "application/json", Times: 1})
			g.backup.Set("claude-sonnet-4.5", mockllm.Behavior{Status: 429, Body: tooLarge, ContentType: "application/json", Times: 1})
			resp, body = g.post(chatBody("complex_reasoning", stream))
			if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "" || resp.Header.Get("X-Should-Retry") != "false" {
				t.Errorf("%d (Retry-After %q, X-Should-Retry %q) %s; want 429 with no retry", resp.StatusCode,
					resp.Header.Get("Retry-After"), resp.Header.Get("X-Should-Retry"), body)
			}
			if e := apiErr(t, body); e.Code != "rate_limit_exceeded" || !strings.Contains(e.Message, "Requested 45000") || strings.Contains(e.Message, "org-test") {
				t.Errorf("error %+v, want rate_limit_exceeded saying what was requested, without the gateway's organization", e)
			}
			for _, d := range [][2]string{{"gpt-4.1", "primary"}, {"claude-sonnet-4.5", "backup"}} {
				if st := statsFor(t, g, d[0], d[1]); st.State != stateUp {
					t.Errorf("%s %s after a request over its limit, want up", d[0], st.State)
				}
			}

			// a limit reached still cools the deployment down
			g.primary.Set("gpt-4.1", mockllm.Behavior{Status: 429, Body: rateLimited, ContentType: "application/json", Times: 1})
			resp, body = g.post(chatBody("complex_reasoning", stream))
			expectModel(t, resp, body, "claude-sonnet-4.5", "backup", 2)
			if st := statsFor(t, g, "gpt-4.1", "primary"); st.State != stateCooldown {
				t.Errorf("gpt-4.1 %s after its limit was reached, want cooldown", st.State)
			}
		})
	}
}

// TestRequestOverLimitInAnAnswerCoolsNothing: the error of a request over
// the deployment's whole limit sent in a 200 (a JSON answer, to a stream
// request too, or a stream's first event), as rate limits are by some
// providers, is the request's as its 429 is: it cooled the deployment
// down for every client (30 s), and with every deployment so refused the
// client got a 503 with a Retry-After that its SDK waited out in vain.
func TestRequestOverLimitInAnAnswerCoolsNothing(t *testing.T) {
	for _, c := range []struct {
		name, body, contentType string
		stream                  bool
	}{
		{"JSON", tooLarge, "application/json", false},
		{"JSON to a stream", tooLarge, "application/json", true},
		{"stream's first event", "data: " + tooLarge + "\n\n", "text/event-stream", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := newGateway(t, withHealth("\t\tinterval off"))
			over := mockllm.Behavior{Body: c.body, ContentType: c.contentType}
			g.primary.Set("gpt-4.1", over)
			g.backup.Set("claude-sonnet-4.5", mockllm.Behavior{Times: 1})
			resp, body := g.post(chatBody("complex_reasoning", c.stream))
			expectModel(t, resp, body, "claude-sonnet-4.5", "backup", 2)
			if st := statsFor(t, g, "gpt-4.1", "primary"); st.State != stateUp || st.HealthScore != maxScore {
				t.Errorf("gpt-4.1 %s at %d after one request over its limit, want up at %d", st.State, st.HealthScore, maxScore)
			}
			g.backup.Set("claude-sonnet-4.5", over)
			resp, body = g.post(chatBody("complex_reasoning", c.stream))
			if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "" || resp.Header.Get("X-Should-Retry") != "false" {
				t.Errorf("%d (Retry-After %q, X-Should-Retry %q) %s; want 429 with no retry", resp.StatusCode,
					resp.Header.Get("Retry-After"), resp.Header.Get("X-Should-Retry"), body)
			}
		})
	}
}
