package llmrouter

import (
	"net/http"
	"testing"

	"github.com/llmrouter/caddy-llm-router/internal/openai"
)

// TestPluginsUnpriced: OpenRouter's "plugins" (the web plugin, $4 per
// 1,000 results, up to $0.02 a request; the file parser's OCR, billed by
// the page) are billed apart from tokens, like web_search_options: a
// request asking for one gets 400 and reaches no provider unless
// allow_unpriced lists it ("plugin" for every plugin, "plugin_web" for
// the web plugin alone).
func TestPluginsUnpriced(t *testing.T) {
	g := newGateway(t, defaultRouter)
	msgs := `"messages":[{"role":"user","content":"Where is my order?"}]`
	for _, body := range []string{
		`{"model":"simple_qa",` + msgs + `,"plugins":[{"id":"web"}]}`,
		`{"model":"simple_qa",` + msgs + `,"plugins":[{"max_results":20,"\u0069d":"web"}]}`,
		`{"model":"simple_qa",` + msgs + `,"plugins":[{"id":"file-parser","pdf":{"engine":"mistral-ocr"}}]}`,
	} {
		resp, rb := g.post(body)
		e := apiErr(t, rb)
		if resp.StatusCode != http.StatusBadRequest || e.Code != openai.CodeInvalidValue || derefOr(e.Param) != "plugins" {
			t.Errorf("%s: %d %+v (param %s), want 400 invalid_value for plugins", body, resp.StatusCode, e, derefOr(e.Param))
		}
	}
	resp, rb := g.postPath("/v1/responses", `{"model":"simple_qa","input":"Where is my order?","plugins":[{"id":"web"}]}`)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("responses with the web plugin: %d %s", resp.StatusCode, rb)
	}
	if n := len(g.primary.Requests()) + len(g.backup.Requests()); n != 0 {
		t.Errorf("refused requests reached a provider (%d)", n)
	}
	// none asked for: served
	resp, rb = g.post(`{"model":"deepseek-v3.2",` + msgs + `,"plugins":[]}`)
	expectModel(t, resp, rb, "deepseek-v3.2", "primary", 1)

	g = newGateway(t, defaultRouter+"\tallow_unpriced plugin_web\n")
	resp, rb = g.post(`{"model":"deepseek-v3.2",` + msgs + `,"plugins":[{"id":"web"}]}`)
	expectModel(t, resp, rb, "deepseek-v3.2", "primary", 1)
	resp, rb = g.post(`{"model":"deepseek-v3.2",` + msgs + `,"plugins":[{"id":"file-parser"}]}`)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("file-parser passed an allow list of plugin_web: %d %s", resp.StatusCode, rb)
	}
	g = newGateway(t, defaultRouter+"\tallow_unpriced plugin\n")
	resp, rb = g.post(`{"model":"deepseek-v3.2",` + msgs + `,"plugins":[{"id":"web"},{"id":"file-parser"}]}`)
	expectModel(t, resp, rb, "deepseek-v3.2", "primary", 1)
}
