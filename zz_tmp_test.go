package llmrouter

import (
	"net/http/httptest"
	"os"
	"strconv"
	"testing"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

func BenchmarkTmpOneRule(b *testing.B) {
	mock := mockllm.New()
	srv := httptest.NewServer(mock)
	defer srv.Close()
	r := benchRouter(b, srv.URL, func(r *Router) {
		if os.Getenv("TMP_RULE") == "1" {
			r.RouteRules = []*RouteRule{{Route: "simple_qa", When: []string{"last_user_chars <= 400"}}}
		}
	})
	for b.Loop() {
		n := benchQuestions.Add(1)
		serveBench(b, r, `{"model":"auto","messages":[{"role":"system","content":"You are a support agent."},{"role":"user","content":"Summarise the shipping policy for order `+strconv.FormatInt(n, 10)+` placed on Monday with express delivery to Lyon."}],"max_tokens":64}`)
	}
}
