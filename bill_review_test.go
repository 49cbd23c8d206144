package llmrouter

import (
	"io"
	"net/http"
	"testing"
)

// TestCachedCountPastPromptIsCappedAtIt: cached prompt tokens are a part of
// the prompt tokens (OpenAI's rule), so a provider's report of more cached
// tokens than prompt tokens (an odd answer, or a count of another kind)
// bills no more than the prompt it reports: the cached count is the
// prompt's at most, in the cost, the statistics and the metrics.
func TestCachedCountPastPromptIsCappedAtIt(t *testing.T) {
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, _ map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12,"prompt_tokens_details":{"cached_tokens":10000000000}}}`)
	})
	r := benchRouter(t, up.URL, nil)
	w := serveOnce(r, `{"model":"deepseek-v3.2","messages":[{"role":"user","content":"hi"}]}`)
	if w.Code != http.StatusOK {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	c := chargedTo(r, "deepseek-v3.2")
	p := builtinPrices["deepseek-v3.2"].unitPrice
	most := (10*p.input + 2*p.output) / 1e6 // the whole prompt uncached
	if c.in != 10 || c.out != 2 || c.cost > most+1e-12 {
		t.Errorf("charged %+v, want 10 input and 2 output tokens costing at most %g", c, most)
	}
	for _, d := range r.deployments {
		if d.name == "deepseek-v3.2" {
			d.state.stats.mu.Lock()
			cached := d.state.stats.cached
			d.state.stats.mu.Unlock()
			if cached > 10 {
				t.Errorf("%d cached input tokens counted, more than the 10 prompt tokens", cached)
			}
		}
	}
}
