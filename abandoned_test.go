package llmrouter

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

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
	req := h2Request(ctx, `{"model":"simple_qa","max_tokens":500,"messages":[{"role":"user","content":"Write a long story."}]}`)
	go func() {
		<-mock.Arrived() // the provider has the request
		cancel()
	}()
	_ = r.ServeHTTP(httptest.NewRecorder(), req, nil)

	in, out, cost := estimatedCharge(r, "deepseek-v3.2")
	if in <= 0 || out != 500 || cost <= 0 {
		t.Errorf("abandoned attempt charged input %d, output %d (want > 0 and the max_tokens 500), cost %v", in, out, cost)
	}
	l := r.budgets[0].ledger
	var windows [periodCount]window
	for p := range periodCount {
		windows[p] = l.window(p, now())
	}
	l.mu.Lock()
	spent := l.committedIn("", l.keySpend(""), windows)
	l.mu.Unlock()
	if spent[periodDay] <= 0 {
		t.Errorf("the budget was not charged: %+v", spent)
	}
}

// h2Request is a chat request over HTTP/2 (where a client's leaving
// cancels ctx at once), ready for Router.ServeHTTP.
func h2Request(ctx context.Context, body string) *http.Request {
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
	req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/2.0", 2, 0
	return req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
}

// estimatedCharge is what deployment name of r was charged as estimated:
// input and output tokens, and the cost of everything it was charged.
func estimatedCharge(r *Router, name string) (in, out int64, cost float64) {
	c := chargedTo(r, name)
	return c.estIn, c.estOut, c.cost
}

// serveOnce sends a chat body to r as Caddy would and returns the response.
func serveOnce(r *Router, body string) *httptest.ResponseRecorder {
	return serveOnceAt(r, "/v1/chat/completions", body)
}

// serveOnceAt is serveOnce to the endpoint at path.
func serveOnceAt(r *Router, path, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	w := httptest.NewRecorder()
	if err := r.ServeHTTP(w, req, nil); err != nil {
		if he, ok := err.(caddyhttp.HandlerError); ok {
			w.Code = he.StatusCode
		}
	}
	return w
}

// stalledRouter is a router whose deployment deepseek-v3.2 (route
// simple_qa) never answers, its provider giving up after 50 ms, and
// gemini-2.5-flash serves complex_reasoning; edit, when set, changes more.
// The mock is returned for more faults.
func stalledRouter(t *testing.T, edit func(*Router)) (*Router, *mockllm.Server) {
	mock := mockllm.New()
	srv := httptest.NewServer(mock)
	t.Cleanup(srv.Close)
	mock.Set("deepseek-chat", mockllm.Behavior{Latency: time.Minute})
	return benchRouter(t, srv.URL, func(r *Router) {
		r.Routes = map[string][]string{"simple_qa": {"deepseek-v3.2"}, "complex_reasoning": {"gemini-2.5-flash"}}
		r.Providers[0].Timeout = caddy.Duration(50 * time.Millisecond)
		if edit != nil {
			edit(r)
		}
	}), mock
}

// TestTimedOutAttemptIsCharged: an attempt that passes the router's own
// deadline after the provider got the request is charged like one the
// client left: a JSON request its estimated input and its output limit
// (the provider generates on without a reader), a stream that never sent
// its first event its input. Stalling the provider escapes no budget.
func TestTimedOutAttemptIsCharged(t *testing.T) {
	r, mock := stalledRouter(t, func(r *Router) {
		r.Failover = &Failover{FirstByteTimeout: caddy.Duration(50 * time.Millisecond)}
	})
	mock.Set("gemini-2.5-flash", mockllm.Behavior{StallBeforeFirstChunk: true})

	w := serveOnce(r, `{"model":"simple_qa","max_tokens":400,"messages":[{"role":"user","content":"Write a long story."}]}`)
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "timeout") {
		t.Fatalf("JSON: %d %s, want the 503 of a timeout", w.Code, w.Body)
	}
	if in, out, cost := estimatedCharge(r, "deepseek-v3.2"); in <= 0 || out != 400 || cost <= 0 {
		t.Errorf("timed-out JSON attempt charged input %d, output %d (want > 0 and the max_tokens 400), cost %v", in, out, cost)
	}

	w = serveOnce(r, `{"model":"complex_reasoning","stream":true,"max_tokens":400,"messages":[{"role":"user","content":"Write a long story."}]}`)
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "no stream event") {
		t.Fatalf("stream: %d %s, want the 503 of a first byte timeout", w.Code, w.Body)
	}
	if in, out, cost := estimatedCharge(r, "gemini-2.5-flash"); in <= 0 || out != 0 || cost <= 0 {
		t.Errorf("timed-out stream attempt charged input %d, output %d (want > 0 and 0), cost %v", in, out, cost)
	}
}

// TestTimedOutCompletionsChargedItsDefault: a completions request without
// max_tokens generates at most the API's default of 16 tokens an answer
// (README, "Reservations"); given up after the provider had it, it is
// charged that, not the 1,024 of a chat request's reservation: what the
// provider could not have generated is not billed.
func TestTimedOutCompletionsChargedItsDefault(t *testing.T) {
	r, _ := stalledRouter(t, nil)
	w := serveOnceAt(r, "/v1/completions", `{"model":"simple_qa","n":2,"prompt":"Once upon a time"}`)
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "timeout") {
		t.Fatalf("%d %s, want the 503 of a timeout", w.Code, w.Body)
	}
	if in, out, _ := estimatedCharge(r, "deepseek-v3.2"); in <= 0 || out != 2*16 {
		t.Errorf("timed-out completions attempt charged input %d, output %d; want > 0 and 2 answers of 16", in, out)
	}
}

// TestTimedOutResponseChargedOneAnswer: the Responses API makes one
// answer a request, and has no "n": one above 1 is refused before any
// provider has it (a provider that honours it would bill answers the
// gateway counts as one), and a request given up after the provider had
// it is charged one answer's output limit.
func TestTimedOutResponseChargedOneAnswer(t *testing.T) {
	r, _ := stalledRouter(t, nil)
	w := serveOnceAt(r, "/v1/responses", `{"model":"simple_qa","n":100,"max_output_tokens":400,"input":"Write a long story."}`)
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), `"param":"n"`) {
		t.Fatalf("n 100: %d %s, want a 400 about n", w.Code, w.Body)
	}
	if in, out, _ := estimatedCharge(r, "deepseek-v3.2"); in != 0 || out != 0 {
		t.Errorf("the refused request was charged input %d, output %d", in, out)
	}
	w = serveOnceAt(r, "/v1/responses", `{"model":"simple_qa","n":1,"max_output_tokens":400,"input":"Write a long story."}`)
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "timeout") {
		t.Fatalf("%d %s, want the 503 of a timeout", w.Code, w.Body)
	}
	if in, out, _ := estimatedCharge(r, "deepseek-v3.2"); in <= 0 || out != 400 {
		t.Errorf("timed-out response charged input %d, output %d; want > 0 and one answer's 400", in, out)
	}
}

// TestJSONAnswerToAStreamIsCharged: a provider that answers a stream
// request with a JSON answer generated (and bills) it: the attempt fails
// over, and the answer's usage is charged.
func TestJSONAnswerToAStreamIsCharged(t *testing.T) {
	mock := mockllm.New()
	srv := httptest.NewServer(mock)
	defer srv.Close()
	mock.Set("deepseek-chat", mockllm.Behavior{Body: slowAnswer, ContentType: "application/json"})
	r := benchRouter(t, srv.URL, nil)
	w := serveOnce(r, chatBody("simple_qa", true))
	if w.Code != http.StatusOK || w.Header().Get(hdrModel) != "gemini-2.5-flash" {
		t.Fatalf("%d %s via %q, want the stream of the second candidate", w.Code, w.Body, w.Header().Get(hdrModel))
	}
	for _, d := range r.deployments {
		if d.name != "deepseek-v3.2" {
			continue
		}
		st := &d.state.stats
		st.mu.Lock()
		in, out := st.input, st.output
		st.mu.Unlock()
		if in != 3 || out != 1 {
			t.Errorf("the JSON answer to a stream was charged input %d, output %d; want its usage, 3 and 1", in, out)
		}
	}
}

// TestUnsentAttemptIsNotCharged: an attempt whose deadline passes while
// its request is still being written (a provider that stopped reading)
// never reached the provider's generation: it is charged nothing.
func TestUnsentAttemptIsNotCharged(t *testing.T) {
	ln, _ := nonReadingProvider(t)
	r := benchRouter(t, "http://"+ln.Addr().String(), func(r *Router) {
		r.Routes = map[string][]string{"simple_qa": {"deepseek-v3.2"}, "complex_reasoning": {"gemini-2.5-flash"}}
		r.Providers[0].Timeout = caddy.Duration(200 * time.Millisecond)
	})
	body := `{"model":"simple_qa","max_tokens":400,"messages":[{"role":"user","content":"` + strings.Repeat("a", 7_500_000) + `"}]}`
	w := serveOnce(r, body)
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "timeout") {
		t.Fatalf("%d %s, want the 503 of a timeout", w.Code, w.Body)
	}
	if in, out, cost := estimatedCharge(r, "deepseek-v3.2"); in != 0 || out != 0 || cost != 0 {
		t.Errorf("an attempt never written whole was charged input %d, output %d, cost %v", in, out, cost)
	}
}

// TestProviderTimeoutIsNotCharged: a provider's own 408 generated nothing:
// the attempt fails over and charges nothing, unlike a timeout of the
// router's after the provider had the request.
func TestProviderTimeoutIsNotCharged(t *testing.T) {
	mock := mockllm.New()
	srv := httptest.NewServer(mock)
	defer srv.Close()
	mock.Set("deepseek-chat", mockllm.Behavior{Status: http.StatusRequestTimeout})
	r := benchRouter(t, srv.URL, nil)
	w := serveOnce(r, `{"model":"simple_qa","max_tokens":400,"messages":[{"role":"user","content":"Hi"}]}`)
	if w.Code != http.StatusOK || w.Header().Get(hdrModel) != "gemini-2.5-flash" {
		t.Fatalf("%d via %q, want the second candidate's answer", w.Code, w.Header().Get(hdrModel))
	}
	if in, out, cost := estimatedCharge(r, "deepseek-v3.2"); in != 0 || out != 0 || cost != 0 {
		t.Errorf("the provider's 408 was charged input %d, output %d, cost %v; want nothing", in, out, cost)
	}
}

// TestCutOffAnswerIsCharged: a JSON answer cut off after its 200 headers
// was generated, and billed, before them: the attempt fails over and is
// charged its input and output limit, as admission reserved them.
func TestCutOffAnswerIsCharged(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "5000")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Yes`))
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer srv.Close()
	r := benchRouter(t, srv.URL, func(r *Router) {
		r.Routes = map[string][]string{"simple_qa": {"deepseek-v3.2"}, "complex_reasoning": {"gemini-2.5-flash"}}
	})
	w := serveOnce(r, `{"model":"simple_qa","max_tokens":300,"messages":[{"role":"user","content":"Can I return shoes?"}]}`)
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("%d %s, want 503", w.Code, w.Body)
	}
	if in, out, cost := estimatedCharge(r, "deepseek-v3.2"); in <= 0 || out != 300 || cost <= 0 {
		t.Errorf("the cut-off answer was charged input %d, output %d (want > 0 and the max_tokens 300), cost %v", in, out, cost)
	}
}

// TestStreamCutBeforeFirstEventIsCharged: a stream whose 200 came and was
// cut before its first event had reached the provider's generation (its
// headers go out first): charged its estimated input, as one that stalled
// there until first_byte_timeout is, or one whose first event is no
// answer; not nothing.
func TestStreamCutBeforeFirstEventIsCharged(t *testing.T) {
	for _, clean := range []bool{false, true} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			if clean {
				return // the response ends, with no event
			}
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
		}))
		r := benchRouter(t, srv.URL, func(r *Router) {
			r.Routes = map[string][]string{"simple_qa": {"deepseek-v3.2"}, "complex_reasoning": {"gemini-2.5-flash"}}
		})
		w := serveOnce(r, `{"model":"simple_qa","stream":true,"messages":[{"role":"user","content":"Can I return shoes?"}]}`)
		srv.Close()
		if w.Code != http.StatusServiceUnavailable {
			t.Fatalf("clean end %v: %d %s, want 503", clean, w.Code, w.Body)
		}
		if in, out, cost := estimatedCharge(r, "deepseek-v3.2"); in <= 0 || out != 0 || cost <= 0 {
			t.Errorf("clean end %v: the stream cut before its first event was charged input %d, output %d, cost %v; want its input", clean, in, out, cost)
		}
	}
}

// TestAbandonedChargeCountsEveryAnswer: an attempt given up without an
// output limit is charged the budget's reserve_output for each answer it
// asked for, as admission reserved: n does not divide what is charged.
func TestAbandonedChargeCountsEveryAnswer(t *testing.T) {
	r, _ := stalledRouter(t, func(r *Router) {
		r.Budgets = []*Budget{{Name: "n", Limits: []BudgetLimit{{Amount: 1e6, Period: "day"}}, ReserveOutput: 100}}
		r.BudgetSync = -1
	})
	w := serveOnce(r, `{"model":"simple_qa","n":3,"messages":[{"role":"user","content":"Write a long story."}]}`)
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("%d %s, want the 503 of a timeout", w.Code, w.Body)
	}
	if _, out, _ := estimatedCharge(r, "deepseek-v3.2"); out != 300 {
		t.Errorf("3 answers without max_tokens charged %d output tokens, want 3 × reserve_output 100", out)
	}
}

// TestFailoverHoldsTheBudgetAgain: an attempt that was charged (here one
// past its provider's timeout) used up the request's reservation; the
// next candidate is tried only if the budget can hold the reservation
// again, as concurrent requests must see it. Under a limit the first
// charge reached, the request ends without a second spend.
func TestFailoverHoldsTheBudgetAgain(t *testing.T) {
	mock := mockllm.New()
	srv := httptest.NewServer(mock)
	defer srv.Close()
	mock.Set("deepseek-chat", mockllm.Behavior{Latency: time.Minute})
	build := func(limit float64) *Router {
		return benchRouter(t, srv.URL, func(r *Router) {
			pricedPair(r, "team", limit)
			r.Providers[0].Timeout = caddy.Duration(50 * time.Millisecond)
		})
	}
	// 350 output tokens at 1000 per 1M: a reservation of about 0.35
	body := `{"model":"simple_qa","max_tokens":350,"messages":[{"role":"user","content":"Hi"}]}`

	r := build(0.3) // admitted (nothing spent), but the first charge reaches it
	w := serveOnce(r, body)
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "budget 'team' has no room") {
		t.Fatalf("%d %s, want the 503 that names the budget", w.Code, w.Body)
	}
	if n := len(mock.RequestsFor("gemini-2.5-flash")); n != 0 {
		t.Errorf("the second candidate was asked %d times past the budget", n)
	}
	if got := r.budgets[0].ledger.reserved("", periodDay); got != 0 {
		t.Errorf("%v still reserved after the request ended", got)
	}

	r = build(10) // room for both
	if w := serveOnce(r, body); w.Code != http.StatusOK || w.Header().Get(hdrModel) != "gemini-2.5-flash" {
		t.Fatalf("%d via %q, want the failover's answer", w.Code, w.Header().Get(hdrModel))
	}
	if got := r.budgets[0].ledger.reserved("", periodDay); got != 0 {
		t.Errorf("%v still reserved after the request ended", got)
	}
}

// TestHedgeHoldsTheBudgetTwice: while a hedge runs beside its first
// attempt, the request holds its reservation twice: both may be billed,
// and concurrent requests must see that.
func TestHedgeHoldsTheBudgetTwice(t *testing.T) {
	mock := mockllm.New()
	srv := httptest.NewServer(mock)
	defer srv.Close()
	mock.SetDefault(mockllm.Behavior{Latency: time.Minute})
	r := benchRouter(t, srv.URL, func(r *Router) {
		pricedPair(r, "team", 10)
		r.Failover = &Failover{HedgeAfter: caddy.Duration(time.Millisecond)}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := h2Request(ctx, `{"model":"simple_qa","max_tokens":350,"messages":[{"role":"user","content":"Hi"}]}`)
	held := make(chan float64, 1)
	go func() {
		<-mock.Arrived()
		<-mock.Arrived() // both attempts are at the provider
		held <- r.budgets[0].ledger.reserved("", periodDay)
		cancel()
	}()
	_ = r.ServeHTTP(httptest.NewRecorder(), req, nil)
	one := 350 * 1000 / 1e6
	if got := <-held; got < 2*one {
		t.Errorf("%v reserved with a hedge in flight, want twice the reservation (%v)", got, 2*one)
	}
}

// TestAbandonedStreamChargedAtProviderUsage: a client that leaves a
// stream (or stops reading it, then leaves) does not end what the provider
// sent meanwhile: the router reads on, within abandonedStreamGrace, and
// charges the provider's usage, not an estimate of what the client got.
func TestAbandonedStreamChargedAtProviderUsage(t *testing.T) {
	defer func(old time.Duration) { abandonedStreamGrace = old }(abandonedStreamGrace)
	abandonedStreamGrace = 10 * time.Second // a margin for the read: it returns at [DONE]
	clientLeft := make(chan struct{})
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, body map[string]any) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, chunk("Once "))
		w.(http.Flusher).Flush()
		<-clientLeft
		// what a provider generated while its client did not read: in
		// the sockets' buffers when the client leaves
		for range 1000 {
			io.WriteString(w, chunk("upon "))
		}
		io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":7777,"total_tokens":7797}}`+"\n\ndata: [DONE]\n\n")
	})
	r := benchRouter(t, up.URL, nil)
	srv := routerServer(t, r)
	done := requestsDone(t)
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"deepseek-v3.2","stream":true,"messages":[{"role":"user","content":"Write a long story."}]}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	cancel() // the client leaves
	resp.Body.Close()
	close(clientLeft)
	waitFor(t, done, "the abandoned stream to be counted")
	if c := chargedTo(r, "deepseek-v3.2"); c.in != 20 || c.out != 7777 || c.estOut != 0 {
		t.Errorf("charged %+v, want the provider's 20 input and 7777 output tokens, none estimated", c)
	}
}

// TestCutStreamChargesTextAfterEarlyUsage: a provider that sends a usage
// object early (prompt tokens, output so far) and then more text before
// its stream breaks: the early object is not the bill; the text after it
// is charged as estimated.
func TestCutStreamChargesTextAfterEarlyUsage(t *testing.T) {
	const more = 400 // chunks of 40 characters: 10 tokens each
	r := cutAfterEarlyUsage(t, "Once", strings.Repeat("word ", 8), more,
		`{"model":"deepseek-v3.2","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Write a long story."}]}`)
	if c := chargedTo(r, "deepseek-v3.2"); c.in != 20 || c.out < more*10 {
		t.Errorf("charged %+v, want the provider's 20 input tokens and at least the %d output streamed after its usage", c, more*10)
	}
}

// cutAfterEarlyUsage has a router serve body from a provider whose stream
// reports usage in its first chunk (first, 20 tokens in, 1 out), then
// sends more chunks of text, and breaks before its final usage and
// [DONE]; it returns the router once the request is counted.
func cutAfterEarlyUsage(t *testing.T, first, text string, more int, body string) *Router {
	t.Helper()
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, _ map[string]any) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":`+strconv.Quote(first)+`},"finish_reason":null}],"usage":{"prompt_tokens":20,"completion_tokens":1,"total_tokens":21}}`+"\n\n")
		for range more {
			io.WriteString(w, chunk(text))
		}
		w.(http.Flusher).Flush()
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
	})
	r := benchRouter(t, up.URL, nil)
	srv := routerServer(t, r)
	_, _, _ = postCounted(t, srv.URL+"/v1/chat/completions", body)
	return r
}

// TestCutStreamAfterZeroUsageIsCharged: a provider that puts a usage
// object of zeros in its early chunks (a placeholder until the last) and
// whose stream is cut before the real one (here: the client leaves while
// it generates) is charged its estimated input, as a stream without usage
// is: the zeros are not the bill, and leaving after the first chunk of a
// 30,000-token prompt escapes no budget.
func TestCutStreamAfterZeroUsageIsCharged(t *testing.T) {
	defer func(old time.Duration) { abandonedStreamGrace = old }(abandonedStreamGrace)
	abandonedStreamGrace = 20 * time.Millisecond // the provider generates on past it
	clientLeft := make(chan struct{})
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, body map[string]any) {
		w.Header().Set("Content-Type", "text/event-stream")
		// the role chunk, with a report of zeros, is held until the
		// next event, which the client reads first
		io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}`+"\n\n")
		io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}`+"\n\n")
		w.(http.Flusher).Flush()
		<-clientLeft
		<-t.Context().Done() // still generating when the router cuts it
	})
	r := benchRouter(t, up.URL, nil)
	srv := routerServer(t, r)
	done := requestsDone(t)
	prompt := strings.Repeat("lorem ipsum ", 10_000) // 120,000 characters: 30,000 tokens estimated
	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"deepseek-v3.2","stream":true,"messages":[{"role":"user","content":"`+prompt+`"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // the client leaves
	close(clientLeft)
	waitFor(t, done, "the abandoned stream to be counted")
	if c := chargedTo(r, "deepseek-v3.2"); c.in < 30_000 || c.estIn != c.in || c.cost <= 0 {
		t.Errorf("charged %+v, want the estimated input of the 30,000-token prompt", c)
	}
}

// TestCutStreamEstimateCountsCJKText: the estimate of a stream cut short
// (here after an early usage object) counts four characters a token,
// which holds for English; Chinese text takes about a token a character
// in the tokenizers of the models served (0.7 in o200k, 1 or more in
// cl100k), so 4,000 characters streamed are at least 2,800 tokens.
// Counted in characters, 1,001 tokens were charged: a client that asks
// for CJK output and leaves before the usage paid about a quarter of it.
// The estimate counts UTF-8 bytes (three a CJK character).
func TestCutStreamEstimateCountsCJKText(t *testing.T) {
	const more = 400 // chunks of 10 CJK characters
	r := cutAfterEarlyUsage(t, "从", "很久很久以前有一个国", more,
		`{"model":"deepseek-v3.2","stream":true,"messages":[{"role":"user","content":"用中文写一个很长的故事。"}]}`)
	if c := chargedTo(r, "deepseek-v3.2"); c.out < more*10*7/10 {
		t.Errorf("charged %+v, want at least %d output tokens for the %d CJK characters streamed", c, more*10*7/10, more*10)
	}
}

// nonReadingProvider is a provider that accepts connections and reads
// nothing, with a receive buffer of a few KB: a large body cannot be
// written to it whole. arrived is closed at its first connection; the
// connections close at the test's end.
func nonReadingProvider(t *testing.T) (ln net.Listener, arrived <-chan struct{}) {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		_ = c.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return err
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan struct{})
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if conns = append(conns, c); len(conns) == 1 {
				close(first)
			}
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln, first
}

// lateWriteUpstream answers the first model's request with a 429 at once,
// keeping its trace, and for the other model reports that trace's request
// written (an earlier attempt's transport finishing its write after its
// answer came) before it hangs until the attempt gives up, its own request
// never written.
type lateWriteUpstream struct {
	first string
	mu    sync.Mutex
	trace *httptrace.ClientTrace
}

func (u *lateWriteUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	body, _ := io.ReadAll(req.Body)
	u.mu.Lock()
	defer u.mu.Unlock()
	if strings.Contains(string(body), u.first) {
		u.trace = httptrace.ContextClientTrace(req.Context())
		return &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(`{"error":{"message":"slow down","type":"rate_limit"}}`)), Request: req}, nil
	}
	if u.trace != nil && u.trace.WroteRequest != nil {
		u.trace.WroteRequest(httptrace.WroteRequestInfo{})
	}
	<-req.Context().Done()
	return nil, req.Context().Err()
}

// TestLateWriteOfEarlierAttemptChargesNoOther: an earlier attempt's
// transport that reports its request written late (after its 429, while
// the next attempt runs) does not make the next attempt, never written,
// look sent: that one times out uncharged.
func TestLateWriteOfEarlierAttemptChargesNoOther(t *testing.T) {
	r := benchRouter(t, "http://stub.invalid", func(r *Router) {
		r.Providers[0].Timeout = caddy.Duration(200 * time.Millisecond)
	})
	for _, p := range r.providers {
		p.transport.Transport.RegisterProtocol("http", &lateWriteUpstream{first: `"deepseek-chat"`})
	}
	w := serveOnce(r, `{"model":"simple_qa","max_tokens":400,"messages":[{"role":"user","content":"Where is my order?"}]}`)
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("%d %s, want 503", w.Code, w.Body)
	}
	if in, out, cost := estimatedCharge(r, "gemini-2.5-flash"); in != 0 || out != 0 || cost != 0 {
		t.Errorf("an attempt never written was charged input %d, output %d, cost %v", in, out, cost)
	}
}
