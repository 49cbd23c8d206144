package llmrouter

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// TestAbandonedAttemptIsCharged: a client that leaves while its JSON
// answer is being generated (over HTTP/2, where leaving cancels the
// upstream request at once) is charged its estimated input and its output
// limit, as admission reserved them: the provider has the request and may
// well bill it, so leaving just before the answer escapes no budget.
func TestAbandonedAttemptIsCharged(t *testing.T) {
	mock := mockllm.New()
	srv := httptest.NewServer(mock)
	defer srv.Close()
	mock.Set("deepseek-chat", mockllm.Behavior{Latency: time.Minute})
	r := benchRouter(t, srv.URL, func(r *Router) {
		r.Budgets = []*Budget{{Name: "abandoned", Limits: []BudgetLimit{{Amount: 1e6, Period: "day"}}}}
		r.BudgetSync = -1
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/chat/completions",
		strings.NewReader(`{"model":"simple_qa","max_tokens":500,"messages":[{"role":"user","content":"Write a long story."}]}`))
	req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/2.0", 2, 0
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	go func() {
		<-mock.Arrived() // the provider has the request
		cancel()
	}()
	_ = r.ServeHTTP(httptest.NewRecorder(), req, nil)

	var d *deployment
	for _, x := range r.deployments {
		if x.name == "deepseek-v3.2" {
			d = x
		}
	}
	st := &d.state.stats
	st.mu.Lock()
	in, out, costs := st.estIn, st.estOut, append([]money(nil), st.costs...)
	st.mu.Unlock()
	if in <= 0 || out != 500 || len(costs) != 1 || costs[0].amount <= 0 {
		t.Errorf("abandoned attempt charged input %d, output %d (want > 0 and the max_tokens 500), costs %+v", in, out, costs)
	}
	l := r.budgets[0].ledger
	var windows [periodCount]string
	for p := range periodCount {
		windows[p] = l.window(p, now()).id
	}
	l.mu.Lock()
	spent := l.keySpend("").committedIn(windows)
	l.mu.Unlock()
	if spent[periodDay] <= 0 {
		t.Errorf("the budget was not charged: %+v", spent)
	}
}
