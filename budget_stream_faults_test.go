package llmrouter

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestStreamRateLimitFirstEventNotCharged: a rate limit reported as a
// stream's first event (its output's, for a Responses API stream) is a 429
// (README, Failover): the provider generated nothing, and the attempt is
// charged nothing, as a 429 is; the budget pays for the answer of the
// deployment it failed over to, and holds nothing after.
func TestStreamRateLimitFirstEventNotCharged(t *testing.T) {
	const (
		created = `data: {"type":"response.created","response":{"id":"resp_1","status":"in_progress","usage":null}}` + "\n\n"
		chatReq = `{"model":"simple_qa","stream":true,"messages":[{"role":"user","content":"Write a long story about a lighthouse keeper."}]}`
		respReq = `{"model":"simple_qa","stream":true,"input":"Write a long story about a lighthouse keeper."}`
	)
	cases := []struct {
		name, path, body, limited string
	}{
		{"chat", "/v1/chat/completions", chatReq,
			`data: {"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}` + "\n\n"},
		{"responses, after its opening event", "/v1/responses", respReq,
			created + `data: {"type":"response.failed","response":{"id":"resp_1","status":"failed","error":{"code":"rate_limit_exceeded","message":"Rate limit reached."}}}` + "\n\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := reviewUpstream(t, func(w http.ResponseWriter, model string, _ map[string]any) {
				w.Header().Set("Content-Type", "text/event-stream")
				switch {
				case model == "deepseek-chat":
					io.WriteString(w, tc.limited)
				case strings.HasSuffix(tc.path, "responses"):
					io.WriteString(w, `data: {"type":"response.output_text.delta","delta":"Hi"}`+"\n\n"+
						`data: {"type":"response.completed","response":{"id":"resp_2","status":"completed","usage":{"input_tokens":5,"output_tokens":1,"total_tokens":6}}}`+"\n\n")
				default:
					io.WriteString(w, chunk("Hi")+`data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`+"\n\ndata: [DONE]\n\n")
				}
			})
			r := benchRouter(t, up.URL, func(r *Router) {
				price := &Price{Input: 1000}
				r.Models = []*Model{{Name: "deepseek-v3.2", Upstream: "deepseek-chat", Price: price}, {Name: "gemini-2.5-flash", Price: price}}
				r.Budgets = []*Budget{{Name: "stream_rate_limit", Limits: []BudgetLimit{{Amount: 100, Period: "day"}}}}
				r.BudgetSync = -1
			})
			srv := routerServer(t, r)
			done := requestsDone(t)
			resp, err := http.Post(srv.URL+tc.path, "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			waitFor(t, done, "the stream to be counted")
			if m := resp.Header.Get(hdrModel); m != "gemini-2.5-flash" {
				t.Fatalf("answered by %q, want the failover's gemini-2.5-flash", m)
			}
			if c := chargedTo(r, "deepseek-v3.2"); c.cost != 0 || c.in != 0 {
				t.Errorf("the rate-limited attempt was charged %d input tokens (%v), want nothing, as a 429", c.in, c.cost)
			}
			const want = 6 * 1000 / 1e6 // the answer's 5 input and 1 output tokens
			if got := spentIn(r, 0, periodDay); got < want*0.999 || got > want*1.001 {
				t.Errorf("budget spent %v, want the answer's %v", got, want)
			}
			l := r.budgets[0].ledger
			l.mu.Lock()
			ks, _ := l.keys.Peek("")
			reserved := ks.periods[periodDay].reserved
			l.mu.Unlock()
			if reserved != 0 {
				t.Errorf("%v still reserved after the request", reserved)
			}
		})
	}
}
