package llmrouter

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// TestStreamRateLimitFirstEventNotCharged: a rate limit reported as a
// stream's first event (its output's, for a Responses API stream), or as
// the error of a 200 JSON answer, is a 429 (README, Failover): the
// provider generated nothing, and the attempt is charged nothing, as a 429
// is, and costs its deployment a cooldown, not health; the budget pays for
// the answer of the deployment it failed over to, and holds nothing after.
func TestStreamRateLimitFirstEventNotCharged(t *testing.T) {
	const (
		created = `data: {"type":"response.created","response":{"id":"resp_1","status":"in_progress","usage":null}}` + "\n\n"
		chatReq = `{"model":"simple_qa","stream":true,"messages":[{"role":"user","content":"Write a long story about a lighthouse keeper."}]}`
		respReq = `{"model":"simple_qa","stream":true,"input":"Write a long story about a lighthouse keeper."}`
	)
	cases := []struct {
		name, path, body, limited string
		jsonLimit                 bool // the rate limit comes as a 200 JSON body, whatever the request asked
	}{
		{"chat", "/v1/chat/completions", chatReq,
			`data: {"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}` + "\n\n", false},
		{"responses, after its opening event", "/v1/responses", respReq,
			created + `data: {"type":"response.failed","response":{"id":"resp_1","status":"failed","error":{"code":"rate_limit_exceeded","message":"Rate limit reached."}}}` + "\n\n", false},
		{"chat JSON, a 200 with an error", "/v1/chat/completions", strings.Replace(chatReq, `"stream":true,`, "", 1),
			`{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}`, true},
		{"chat stream, a 200 JSON error", "/v1/chat/completions", chatReq,
			`{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}`, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			jsonAnswers := !strings.Contains(tc.body, `"stream":true`)
			up := reviewUpstream(t, func(w http.ResponseWriter, model string, _ map[string]any) {
				w.Header().Set("Content-Type", "text/event-stream")
				if jsonAnswers || model == "deepseek-chat" && tc.jsonLimit {
					w.Header().Set("Content-Type", "application/json")
				}
				switch {
				case model == "deepseek-chat":
					io.WriteString(w, tc.limited)
				case jsonAnswers:
					io.WriteString(w, `{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`)
				case strings.HasSuffix(tc.path, "responses"):
					io.WriteString(w, `data: {"type":"response.output_text.delta","delta":"Hi"}`+"\n\n"+
						`data: {"type":"response.completed","response":{"id":"resp_2","status":"completed","usage":{"input_tokens":5,"output_tokens":1,"total_tokens":6}}}`+"\n\n")
				default:
					io.WriteString(w, chunk("Hi")+`data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`+"\n\ndata: [DONE]\n\n")
				}
			})
			r := benchRouter(t, up.URL, func(r *Router) {
				pricedPair(r, "stream_rate_limit", 100)
			})
			srv := routerServer(t, r)
			resp, _, _ := postCounted(t, srv.URL+tc.path, tc.body)
			if m := resp.Header.Get(hdrModel); m != "gemini-2.5-flash" {
				t.Fatalf("answered by %q, want the failover's gemini-2.5-flash", m)
			}
			if c := chargedTo(r, "deepseek-v3.2"); c.cost != 0 || c.in != 0 {
				t.Errorf("the rate-limited attempt was charged %d input tokens (%v), want nothing, as a 429", c.in, c.cost)
			}
			for _, d := range r.deployments {
				if d.name != "deepseek-v3.2" {
					continue
				}
				if s := d.state.health.score.Load(); s != maxScore {
					t.Errorf("%s: health score %d, want %d: a rate limit costs no health", d.name, s, maxScore)
				}
				if v := d.state.viewAt(time.Now()); v.cooldownUntil.IsZero() {
					t.Errorf("%s: %s, want a cooldown after its rate limit", d.name, v.state)
				}
				d.state.stats.mu.Lock()
				limited, failed := d.state.stats.outcomes[outcomeRateLimited.index()], d.state.stats.outcomes[outcomeServerError.index()]
				d.state.stats.mu.Unlock()
				if limited != 1 || failed != 0 {
					t.Errorf("%s: attempts %d rate_limited, %d server_error; want its one attempt rate_limited", d.name, limited, failed)
				}
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

// TestStreamRequestsFaultFirstEventNotCharged: an error event that blames
// the request (a prompt too long for the model's context, one the
// provider's policy flags), sent before any output, is the provider's
// 400 in a stream (README, Failover): it generated nothing, and the
// attempt is charged nothing, as the 400 is. One that reports usage is
// charged that.
func TestStreamRequestsFaultFirstEventNotCharged(t *testing.T) {
	const created = `data: {"type":"response.created","response":{"id":"resp_1","status":"in_progress","usage":null}}` + "\n\n"
	cases := []struct {
		name, path, body, stream string
		want                     float64
	}{
		{"chat, context_length_exceeded", "/v1/chat/completions",
			`{"model":"simple_qa","stream":true,"messages":[{"role":"user","content":"` + strings.Repeat("Write a long story. ", 200) + `"}]}`,
			`data: {"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}` + "\n\n", 0},
		{"responses, invalid_prompt after its opening event", "/v1/responses",
			`{"model":"simple_qa","stream":true,"input":"Write a long story about a lighthouse keeper."}`,
			created + `data: {"type":"error","code":"invalid_prompt","message":"Invalid prompt: your prompt was flagged as potentially violating our usage policy.","param":null}` + "\n\n", 0},
		{"responses, response.failed with usage", "/v1/responses",
			`{"model":"simple_qa","stream":true,"input":"Write a long story about a lighthouse keeper."}`,
			created + `data: {"type":"response.failed","response":{"id":"resp_1","status":"failed","error":{"code":"invalid_prompt","message":"Invalid prompt."},"usage":{"input_tokens":7,"output_tokens":3,"total_tokens":10}}}` + "\n\n", 10 * 1000 / 1e6},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := reviewUpstream(t, func(w http.ResponseWriter, _ string, _ map[string]any) {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, tc.stream)
			})
			r := benchRouter(t, up.URL, func(r *Router) {
				pricedPair(r, "stream_requests_fault", 100)
			})
			srv := routerServer(t, r)
			resp, body, _ := postCounted(t, srv.URL+tc.path, tc.body) // ends with an abort
			if !strings.Contains(string(body), `"error"`) {
				t.Fatalf("%d %q, want the provider's error relayed", resp.StatusCode, body)
			}
			if got := spentIn(r, 0, periodDay); got < tc.want*0.999 || got > tc.want*1.001 {
				t.Errorf("budget spent %v, want %v", got, tc.want)
			}
			for _, d := range r.deployments {
				d.state.stats.mu.Lock()
				n := d.state.stats.ttft.n
				d.state.stats.mu.Unlock()
				if n != 0 {
					t.Errorf("%s: %d times to first token observed, want none: a refusal has no first token, as the 400 it stands for has not", d.name, n)
				}
			}
		})
	}
}

// TestHedgeStreamRefusalWaitsForFirst: a hedge whose stream opens with an
// error that blames the request (context_length_exceeded: its deployment's
// context window is smaller) does not win over the first attempt, which
// may well answer, as a hedge's 400 does not (hedgeGate.claimError): the
// client gets the first attempt's answer, and the budget pays for that
// answer, not for the first attempt as a loser and the hedge's refusal.
func TestHedgeStreamRefusalWaitsForFirst(t *testing.T) {
	mock := mockllm.New()
	srv := httptest.NewServer(mock)
	t.Cleanup(srv.Close)
	mock.Set("deepseek-chat", mockllm.Behavior{Latency: time.Second}) // slow, but answers
	mock.Set("gemini-2.5-flash", mockllm.Behavior{ContentType: "text/event-stream",
		Body: `data: {"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}` + "\n\n"})
	r := benchRouter(t, srv.URL, func(r *Router) {
		pricedPair(r, "hedge_refusal", 100)
		r.Failover = &Failover{HedgeAfter: caddy.Duration(20 * time.Millisecond)}
	})
	done := requestsDone(t)
	resp, err := http.Post(routerServer(t, r).URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"simple_qa","stream":true,"messages":[{"role":"user","content":"Write a long story."}]}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body) // a relayed refusal ends with an abort
	resp.Body.Close()
	waitFor(t, done, "the stream to be counted")
	if resp.StatusCode != http.StatusOK || resp.Header.Get(hdrModel) != "deepseek-v3.2" || !strings.Contains(string(body), "[DONE]") {
		t.Fatalf("%d via %q: %q, want the first attempt's answer", resp.StatusCode, resp.Header.Get(hdrModel), body)
	}
	if c := chargedTo(r, "deepseek-v3.2"); c.estIn != 0 || c.in == 0 {
		t.Errorf("the first attempt was charged %+v, want its answer's usage", c)
	}
	if c := chargedTo(r, "gemini-2.5-flash"); c.cost != 0 {
		t.Errorf("the hedge's refusal was charged %+v, want nothing", c)
	}
}

// pricedPair gives r the two deployments deepseek-v3.2 (upstream
// deepseek-chat) and gemini-2.5-flash at 1000 an input token's million,
// and one daily budget, name, of limit, synced never (the ledger's
// figures are the test's).
func pricedPair(r *Router, name string, limit float64) {
	price := &Price{Input: 1000}
	r.Models = []*Model{{Name: "deepseek-v3.2", Upstream: "deepseek-chat", Price: price}, {Name: "gemini-2.5-flash", Price: price}}
	r.Budgets = []*Budget{{Name: name, Limits: []BudgetLimit{{Amount: limit, Period: "day"}}}}
	r.BudgetSync = -1
}
