package llmrouter

import (
	"net/http"
	"strings"
	"testing"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// TestNotAnAnswerDetailScrubbed: what a failure's detail quotes of the
// provider (the Content-Type of a body that is not an answer) loses any
// provider key before it is cut to its bound, and so before it reaches the
// 503's message or the stats: cut first, a key across the cut is no longer
// the whole key, and its first characters went out as they were.
func TestNotAnAnswerDetailScrubbed(t *testing.T) {
	g := newGateway(t, withHealth("\t\tinterval off"))
	for _, ct := range []string{
		"text/plain; echo=" + primaryKey,                              // whole
		"text/plain; padding=" + strings.Repeat("x", 30) + primaryKey, // across the 64-byte cut
	} {
		bad := mockllm.Behavior{Body: "not json", ContentType: ct, Times: 1}
		g.primary.Set("deepseek-chat", bad)
		g.primary.Set("gemini-2.5-flash", bad)
		resp, body := g.post(chatBody("simple_qa", false))
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503: %s", resp.StatusCode, body)
		}
		if strings.Contains(body, "sk-primary") {
			t.Errorf("the 503 carries (part of) the provider's key: %s", body)
		}
		if st := statsFor(t, g, "deepseek-v3.2", "primary"); strings.Contains(st.LastError, "sk-primary") {
			t.Errorf("the stats' last error carries (part of) the provider's key: %s", st.LastError)
		}
	}
}
