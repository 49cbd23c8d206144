package llmrouter

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// TestWholeStreamChargesTextAfterEarlyUsage: a provider that reports
// usage early in its stream (prompt tokens, output so far) and then
// streams more text and ends cleanly with [DONE], without another usage
// report, billed all that text: the early report is not the bill, as it
// is not for a stream cut short after it.
func TestWholeStreamChargesTextAfterEarlyUsage(t *testing.T) {
	const more = 400 // chunks of 40 characters: 10 tokens each
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, _ map[string]any) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Once"},"finish_reason":null}],"usage":{"prompt_tokens":20,"completion_tokens":1,"total_tokens":21}}`+"\n\n")
		for range more {
			io.WriteString(w, chunk(strings.Repeat("word ", 8)))
		}
		io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\ndata: [DONE]\n\n")
	})
	if c := storyCharged(t, up); c.in != 20 || c.out < more*10 {
		t.Errorf("charged %+v, want the provider's 20 input tokens and at least the %d output streamed after its usage", c, more*10)
	}
}

// TestCleanlyCutAnswerIsCharged: a JSON 200 whose body is a cut answer
// that ends cleanly (a proxy that ends the body early at a length it
// declares, or a close-delimited body) was generated, and billed, before
// its headers went out, as one cut off with a read error is: it is charged
// its input and its output limit, not its input alone.
func TestCleanlyCutAnswerIsCharged(t *testing.T) {
	cut := `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"` +
		strings.Repeat("word ", 800)
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, _ map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(cut)))
		io.WriteString(w, cut)
	})
	r := benchRouter(t, up.URL, func(r *Router) {
		r.Routes = map[string][]string{"simple_qa": {"deepseek-v3.2"}, "complex_reasoning": {"gemini-2.5-flash"}}
	})
	w := serveOnce(r, `{"model":"simple_qa","max_tokens":3000,"messages":[{"role":"user","content":"Write a long story."}]}`)
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("%d %s, want 503", w.Code, w.Body)
	}
	if c := chargedTo(r, "deepseek-v3.2"); c.in <= 0 || c.out != 3000 || c.cost <= 0 {
		t.Errorf("the cut answer was charged %+v, want its input and the max_tokens 3000", c)
	}
}

// TestHedgeSparesAContinuation: a Responses API continuation can only be
// answered by the deployment that stored the response it continues (its
// home, tried first). A hedge beside it went to another deployment,
// whose quick 404 previous_response_not_found (the client's error, which
// is relayed) won: the client got a 404 while its home was generating,
// and the home's answer, billed by its provider, was thrown away (charged
// as the hedge's loser). A continuation is not hedged.
func TestHedgeSparesAContinuation(t *testing.T) {
	home, other := mockllm.New(), mockllm.New()
	homeSrv, otherSrv := httptest.NewServer(home), httptest.NewServer(other)
	defer homeSrv.Close()
	defer otherSrv.Close()
	r := benchRouter(t, otherSrv.URL, func(r *Router) {
		r.Providers = append(r.Providers, &Provider{Name: r.Providers[0].Name + "-home", BaseURL: homeSrv.URL + "/v1", APIKey: "sk-bench-key-000000000002"})
		r.Models[1].Provider = r.Providers[1].Name // gemini-2.5-flash at home
		r.Failover = &Failover{HedgeAfter: caddy.Duration(10 * time.Millisecond)}
	})
	post := func(body string) *httptest.ResponseRecorder { return serveOnceAt(r, "/v1/responses", body) }
	w := post(`{"model":"gemini-2.5-flash","input":"Which jacket is warmer?"}`)
	var first struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &first); err != nil || first.ID == "" {
		t.Fatalf("first response %d %s", w.Code, w.Body)
	}
	// the home answers after the hedge delay: time for the other
	// deployment's 404
	home.Set("gemini-2.5-flash", mockllm.Behavior{Latency: 2 * time.Second, Times: 1})
	w = post(`{"model":"simple_qa","input":"And the cheaper one?","previous_response_id":"` + first.ID + `"}`)
	if w.Code != http.StatusOK || w.Header().Get(hdrModel) != "gemini-2.5-flash" {
		t.Errorf("%d from %q: %.300s; want the home's answer", w.Code, w.Header().Get(hdrModel), w.Body)
	}
}

// TestBestOfAnswerWithoutUsageChargesEveryCandidate: a completions request
// with best_of has the provider generate, and bill, best_of completions
// for the n it returns. An answer without usage was estimated from the
// text returned alone, a quarter of what a best_of 4 request generated.
func TestBestOfAnswerWithoutUsageChargesEveryCandidate(t *testing.T) {
	text := strings.Repeat("word ", 80) // 400 bytes: 100 tokens
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, _ map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"`+text+`","logprobs":null,"finish_reason":"stop"}]}`)
	})
	r := benchRouter(t, up.URL, nil)
	w := serveOnceAt(r, "/v1/completions", `{"model":"deepseek-v3.2","prompt":"Write a long story.","best_of":4,"max_tokens":200}`)
	if w.Code != http.StatusOK {
		t.Fatalf("%d %s, want 200", w.Code, w.Body)
	}
	if c := chargedTo(r, "deepseek-v3.2"); c.out < 4*100 {
		t.Errorf("charged %+v, want the output of the 4 completions generated (at least 400 tokens), not of the one returned", c)
	}
}

// TestEmbeddingTotalOnlyUsageIsInput: an embedding's tokens are all input.
// A provider that reports only usage.total_tokens (Voyage AI does) had
// them taken for output tokens, which an embedding model prices at
// nothing when its price says so ("price 0.02 0", as list prices show no
// output price): such embeddings were free to every budget.
func TestEmbeddingTotalOnlyUsageIsInput(t *testing.T) {
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, _ map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"`+model+`","usage":{"total_tokens":1000000}}`)
	})
	zero := 0.0
	r := benchRouter(t, up.URL, func(r *Router) {
		r.Models = append(r.Models, &Model{Name: "text-embedding-3-small", Price: &Price{Input: 0.02, Output: &zero}})
	})
	w := serveOnceAt(r, "/v1/embeddings", `{"model":"text-embedding-3-small","input":"hello"}`)
	if w.Code != http.StatusOK {
		t.Fatalf("%d %s, want 200", w.Code, w.Body)
	}
	if c := chargedTo(r, "text-embedding-3-small"); c.in != 1000000 || c.out != 0 || c.cost < 0.0199 {
		t.Errorf("charged %+v, want the 1M tokens reported as input, at 0.02", c)
	}
}

// TestZeroUsageAnswerIsEstimated: a JSON answer whose usage is all zeros
// (a provider that fills the object in without counting) was charged
// nothing, its text free to every budget; a stream's report of zeros is
// a placeholder, never a bill, as every request has input. The answer is
// charged as one without usage: its input and its text as estimated.
func TestZeroUsageAnswerIsEstimated(t *testing.T) {
	text := strings.Repeat("word ", 80) // 400 bytes: 100 tokens
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, _ map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"`+text+`"},"finish_reason":"stop"}],"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}`)
	})
	// asked for as JSON, and as a stream (a provider that ignores
	// "stream" and answers in JSON)
	for _, stream := range []string{"false", "true"} {
		r := benchRouter(t, up.URL, nil)
		serveOnce(r, `{"model":"deepseek-v3.2","stream":`+stream+`,"messages":[{"role":"user","content":"Write a long story."}]}`)
		if c := chargedTo(r, "deepseek-v3.2"); c.in <= 0 || c.out < 100 || c.cost <= 0 {
			t.Errorf("stream %s: charged %+v, want the input and the 100 tokens of text as estimated", stream, c)
		}
	}
}

// storyCharged has a router for up serve a whole stream that asks for a
// long story, with usage, and returns what deepseek-v3.2 was charged.
func storyCharged(t *testing.T, up *httptest.Server) deploymentCharge {
	t.Helper()
	r := benchRouter(t, up.URL, nil)
	srv := routerServer(t, r)
	_, b, _ := postCounted(t, srv.URL+"/v1/chat/completions",
		`{"model":"deepseek-v3.2","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Write a long story."}]}`)
	if !strings.Contains(string(b), "[DONE]") {
		t.Fatalf("the stream did not end with [DONE]: %.200s", b)
	}
	return chargedTo(r, "deepseek-v3.2")
}
