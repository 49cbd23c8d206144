package llmrouter

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
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

// TestBudgetSharedAcrossCurrenciesIsRefused: a budget's name is shared by
// every handler that declares it, and its ledger adds their costs as they
// come, each in its handler's currency. A handler in CNY (7 per price unit)
// that declared the budget beside one in USD would read the USD spend as
// yuan: a client that spent nearly the USD handler's limit (1 USD) could
// spend 7 CNY more (another USD) through the other. A handler that declares
// a budget another running handler counts in another currency is refused.
func TestBudgetSharedAcrossCurrenciesIsRefused(t *testing.T) {
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, _ map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":3000000,"completion_tokens":1,"total_tokens":3000001}}`)
	})
	budget := func(limit float64) []*Budget {
		return []*Budget{{Name: "shared-currency", Limits: []BudgetLimit{{Amount: limit, Period: "day"}}, ReserveOutput: 10}}
	}
	// local only: a ledger synced to the default storage would keep this
	// test's spend for the next run of the day
	usd := benchRouter(t, up.URL, func(r *Router) { r.Budgets, r.BudgetSync = budget(1), -1 })
	// 3M input tokens of deepseek-v3.2 at 0.28 USD per 1M: 0.84 USD
	if w := serveOnce(usd, `{"model":"deepseek-v3.2","messages":[{"role":"user","content":"hi"}]}`); w.Code != http.StatusOK {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	cny := &Router{
		Providers:   []*Provider{{Name: "cny", BaseURL: up.URL + "/v1", APIKey: "sk-bench-key-000000000002"}},
		Models:      []*Model{{Name: "deepseek-v3.2", Upstream: "deepseek-chat"}},
		HealthCheck: &HealthCheck{Off: true},
		Currency:    &Currency{Code: "CNY", Rate: 7},
		Budgets:     budget(7),
		BudgetSync:  -1,
	}
	ctx, cancel := caddy.NewContext(benchCaddyContext(t))
	t.Cleanup(cancel)
	if err := cny.Provision(ctx); err != nil {
		if !strings.Contains(err.Error(), "USD") {
			t.Errorf("refused, but the error does not name the currency the budget is counted in: %v", err)
		}
		return // refused: what is wanted
	}
	t.Cleanup(func() { _ = cny.Cleanup() })
	if w := serveOnce(cny, `{"model":"deepseek-v3.2","messages":[{"role":"user","content":"hi"}]}`); w.Code == http.StatusOK {
		t.Errorf("after 0.84 USD of a 1 USD budget, the CNY handler served another 0.84 USD (5.88 CNY) under the same budget")
	}
}

// TestStreamUsageThatDoesNotGrowIsNotTheBill: a provider that puts the
// same usage in every chunk (a placeholder with the prompt's count and no
// output, or each chunk's own count rather than a running total) streams
// text its reports do not count: the text that came after the output count
// last grew is estimated, as text after a last report is, rather than
// billed at the report's 0 or 1 output token.
func TestStreamUsageThatDoesNotGrowIsNotTheBill(t *testing.T) {
	const more = 400 // chunks of 40 characters: 10 tokens each
	for _, out := range []int{0, 1} {
		up := reviewUpstream(t, func(w http.ResponseWriter, model string, _ map[string]any) {
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range more {
				role := ""
				if i == 0 {
					role = `"role":"assistant",`
				}
				fmt.Fprintf(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{%s"content":%q},"finish_reason":null}],"usage":{"prompt_tokens":20,"completion_tokens":%d,"total_tokens":%d}}`+"\n\n",
					role, strings.Repeat("word ", 8), out, 20+out)
			}
			io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\ndata: [DONE]\n\n")
		})
		if c := storyCharged(t, up); c.in != 20 || c.out < (more-1)*10 {
			t.Errorf("%d output tokens in every report: charged %+v, want the provider's 20 input tokens and about the %d output streamed", out, c, more*10)
		}
	}
}

// TestCostPlaceholderIsWhatTheRequestSpent: {http.llm_router.cost}, which
// the example logs per team to bill from, is what the request spent, as its
// budgets and cost_total count it: an attempt charged before a failover
// (here a JSON answer cut short, billed its input and max_tokens) is part
// of it, not only the answer's cost.
func TestCostPlaceholderIsWhatTheRequestSpent(t *testing.T) {
	cut := `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"` +
		strings.Repeat("word ", 800)
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, _ map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		if model == "deepseek-chat" {
			w.Header().Set("Content-Length", strconv.Itoa(len(cut)))
			io.WriteString(w, cut)
			return
		}
		io.WriteString(w, `{"id":"c2","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}`)
	})
	r := benchRouter(t, up.URL, func(r *Router) { r.Models[1].Priority = 2 })
	req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions",
		strings.NewReader(`{"model":"simple_qa","max_tokens":3000,"messages":[{"role":"user","content":"Write a long story."}]}`))
	repl := caddy.NewReplacer()
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
	w := httptest.NewRecorder()
	if err := r.ServeHTTP(w, req, nil); err != nil || w.Code != http.StatusOK {
		t.Fatalf("%d %s %v", w.Code, w.Body, err)
	}
	spent := chargedTo(r, "deepseek-v3.2").cost + chargedTo(r, "gemini-2.5-flash").cost
	if chargedTo(r, "deepseek-v3.2").cost <= 0 {
		t.Fatalf("the cut attempt was charged nothing")
	}
	v, _ := repl.Get("http.llm_router.cost")
	got, err := strconv.ParseFloat(fmt.Sprint(v), 64)
	if err != nil || math.Abs(got-spent) > 1e-12 {
		t.Errorf("{http.llm_router.cost} is %v, want %g, what the request's attempts were charged", v, spent)
	}
}
