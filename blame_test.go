package llmrouter

import (
	"net/http"
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
