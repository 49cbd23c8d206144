package llmrouter

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
	"github.com/llmrouter/caddy-llm-router/internal/openai"
	"github.com/llmrouter/caddy-llm-router/internal/semantic"
)

// chatRequest builds a realistic chat body of about size bytes.
func chatRequest(size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"model":"simple_qa","temperature":0.3,"messages":[{"role":"system","content":"You are the shop assistant."}`)
	for i := 0; b.Len() < size-100; i++ {
		fmt.Fprintf(&b, `,{"role":"user","content":"Where is order %d? It was a pair of red shoes, size 42, \"express\" shipping."}`, i)
	}
	b.WriteString(`],"stream":true}`)
	return b.Bytes()
}

func BenchmarkRequestBody(b *testing.B) {
	for _, size := range []int{1 << 10, 100 << 10} {
		body := chatRequest(size)
		b.Run(fmt.Sprintf("parse_%dKB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			var rb openai.Request // in the exchange, as here: no allocation of its own
			for b.Loop() {
				if err := rb.Parse(body, openai.Chat); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("parse_and_rewrite_%dKB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			var rb openai.Request
			for b.Loop() {
				err := rb.Parse(body, openai.Chat)
				if err != nil {
					b.Fatal(err)
				}
				// as upstreamRequest sends it: one slice when small, the
				// pieces when large
				parts := rb.Upstream("deepseek-chat", openai.AskUsage, openai.OutputCap{})
				if parts.Size <= smallBody {
					_ = parts.Join()
				} else if _, err := io.Copy(io.Discard, parts.Reader()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSelectCandidates(b *testing.B) {
	mk := func(name string, prio int) *deployment {
		return &deployment{name: name, weight: 1, priority: prio, state: newSharedState(deploymentID{})}
	}
	p := plan{{mk("deepseek@a", 1), mk("deepseek@b", 1)}, {mk("gemini@a", 1)}}
	t0 := time.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	for b.Loop() {
		if got, _, _ := p.order(t0, rng, nil, balance{}); len(got) != 3 {
			b.Fatal("short order")
		}
	}
}

// sseChunk is a typical content chunk of an OpenAI stream.
const sseChunk = `data: {"id":"chatcmpl-abc123","object":"chat.completion.chunk","created":1700000000,"model":"deepseek-chat","system_fingerprint":null,"choices":[{"index":0,"delta":{"content":" shoes"},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n"

const sseUsageChunk = `data: {"id":"chatcmpl-abc123","object":"chat.completion.chunk","created":1700000000,"model":"deepseek-chat","choices":[],"usage":{"prompt_tokens":120,"completion_tokens":10,"total_tokens":130,"prompt_tokens_details":{"cached_tokens":64}}}` + "\n\n"

func BenchmarkStreamRelay(b *testing.B) {
	b.Run("content_chunk", func(b *testing.B) {
		benchRelay(b, sseChunk)
	})
	b.Run("usage_chunk", func(b *testing.B) {
		benchRelay(b, sseUsageChunk)
	})
}

func benchRelay(b *testing.B, chunk string) {
	stream := strings.Repeat(chunk, 64)
	relay := streamRelay{strip: true}
	src := strings.NewReader(stream)
	events := openai.NewEventReader(src)
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for b.Loop() {
		ev, err := events.Next()
		if err == io.EOF {
			src.Reset(stream)
			events.Release()
			events = openai.NewEventReader(src)
			ev, err = events.Next()
		}
		if err != nil {
			b.Fatal(err)
		}
		if err := relay.forward(io.Discard, ev); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMetricsUpdate(b *testing.B) {
	d := &deployment{name: "deepseek-v3.2", provider: &provider{name: "holysheep"}, price: builtinPrices["deepseek-v3.2"].unitPrice, state: newSharedState(deploymentID{})}
	d.metrics = metrics.forDeployment(d.name, d.provider.name, "CNY")
	u := usage{Input: 120, Output: 10, CachedInput: 64}
	b.ReportAllocs()
	for b.Loop() {
		d.metrics.inFlight.Inc()
		d.metrics.attempts[outcomeSuccess.index()].Inc()
		d.metrics.duration.Observe(0.42)
		d.metrics.ttft.Observe(0.12)
		sm := d.metrics.forClient("")
		sm.inputTokens.Add(float64(u.Input))
		sm.outputToks.Add(float64(u.Output))
		sm.cachedToks.Add(float64(u.CachedInput))
		sm.cost.Add(d.price.cost(u))
		requestCounters.with(requestLabels{"simple_qa", d.name, d.provider.name, 200, chatEndpoint}).Inc()
		d.state.stats.recordAttempt(outcomeSuccess)
		d.state.stats.recordRequest(chatEndpoint, 420*time.Millisecond)
		d.state.stats.recordUsage(u, d.price.cost(u), "USD")
		d.metrics.inFlight.Dec()
	}
}

// benchRouter provisions a router on the mock at url: one provider, two
// models, route simple_qa as default, probes off; edit adds a feature.
// Its provider's name is its own: the state of a deployment (health,
// stats) is shared by every loaded config that names the same model and
// provider, such as a gateway an earlier test left running (go test
// -count=2).
func benchRouter(b testing.TB, url string, edit func(*Router)) *Router {
	r := &Router{
		Providers:    []*Provider{{Name: fmt.Sprintf("bench%d", benchRouters.Add(1)), BaseURL: url + "/v1", APIKey: "sk-bench-key-000000000001"}},
		Models:       []*Model{{Name: "deepseek-v3.2", Upstream: "deepseek-chat"}, {Name: "gemini-2.5-flash"}},
		Routes:       map[string][]string{"simple_qa": {"deepseek-v3.2", "gemini-2.5-flash"}, "complex_reasoning": {"gemini-2.5-flash"}},
		DefaultRoute: "simple_qa",
		HealthCheck:  &HealthCheck{Off: true},
	}
	if edit != nil {
		edit(r)
	}
	ctx, cancel := caddy.NewContext(benchCaddyContext(b))
	b.Cleanup(cancel)
	if err := r.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Cleanup() })
	return r
}

var benchRouters atomic.Int64

// benchCaddyContext is the context of a running (empty) Caddy config, with
// its storage in a temporary directory: budgets keep their ledgers there.
func benchCaddyContext(b testing.TB) caddy.Context {
	if ctx := caddy.ActiveContext(); ctx.Context != nil {
		return ctx
	}
	cfg := `{"admin":{"disabled":true},"storage":{"module":"file_system","root":` + strconv.Quote(b.TempDir()) + `}}`
	if err := caddy.Load([]byte(cfg), true); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = caddy.Stop() })
	return caddy.ActiveContext()
}

// serveBench sends one request through r as Caddy would (a replacer in
// the context, with the team a map directive would have set).
func serveBench(b *testing.B, r *Router, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
	repl := caddy.NewReplacer()
	repl.Set("llm_team", "storefront")
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
	w := httptest.NewRecorder()
	if err := r.ServeHTTP(w, req, nil); err != nil || w.Code != 200 {
		b.Fatalf("%v %d %s", err, w.Code, w.Body)
	}
	return w
}

// BenchmarkServeHTTP runs whole requests through a provisioned router
// (no Caddy server around it) against the mock on loopback.
func BenchmarkServeHTTP(b *testing.B) {
	mock := mockllm.New()
	srv := httptest.NewServer(mock)
	defer srv.Close()
	r := benchRouter(b, srv.URL, nil)
	for _, stream := range []bool{false, true} {
		name := "json"
		if stream {
			name = "stream"
		}
		body := chatBody("simple_qa", stream)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				serveBench(b, r, body)
			}
		})
	}
}

// BenchmarkFeatures is the router's own cost of each optional feature: the
// same JSON requests with and without it (bench/run.sh measures the same
// through Caddy). Every request asks a different question, so that the
// cache runs are all misses that store an answer.
func BenchmarkFeatures(b *testing.B) {
	mock := mockllm.New()
	srv := httptest.NewServer(mock)
	defer srv.Close()
	features := []struct {
		name  string
		model string
		edit  func(*Router)
	}{
		{"off", "simple_qa", nil},
		{"budget", "simple_qa", func(r *Router) {
			r.Budgets = []*Budget{{Name: "bench_daily", Limits: []BudgetLimit{{Amount: 1e6, Period: "day"}}, Key: "{llm_team}", Downgrade: "simple_qa"}}
			r.BudgetSync = -1
			r.ClientLabel = &ClientLabel{Value: "{llm_team}"}
		}},
		{"rules_off", "auto", nil},
		{"rules", "auto", func(r *Router) {
			r.RouteRules = []*RouteRule{
				{Route: "complex_reasoning", When: []string{"has_tools || has_images", "messages > 8 || prompt_chars > 6000",
					`last_user_chars > 400 || contains_any(last_user, ["compare", "difference", "why", "explain", "recommend", "so sánh", "khác nhau", "tại sao", "giải thích", "tư vấn"])`}},
				{Route: "simple_qa", When: []string{"last_user_chars <= 400"}},
			}
		}},
		{"cache_miss", "simple_qa", func(r *Router) { r.Cache = &Cache{MaxSize: 128 << 20} }},
		// every cost feature at once, against rules_off (bench/run.sh's
		// feature all-costs)
		{"all", "auto", func(r *Router) {
			r.RouteRules = []*RouteRule{
				{Route: "complex_reasoning", When: []string{"has_tools || has_images", "messages > 8 || prompt_chars > 6000",
					`last_user_chars > 400 || contains_any(last_user, ["compare", "difference", "why", "explain", "recommend", "so sánh", "khác nhau", "tại sao", "giải thích", "tư vấn"])`}},
				{Route: "simple_qa", When: []string{"last_user_chars <= 400"}},
			}
			r.Budgets = []*Budget{{Name: "bench_daily_all", Limits: []BudgetLimit{{Amount: 1e6, Period: "day"}}, Key: "{llm_team}", Downgrade: "simple_qa"}}
			r.BudgetSync = -1
			r.ClientLabel = &ClientLabel{Value: "{llm_team}"}
			r.Cache = &Cache{MaxSize: 127 << 20}
		}},
	}
	for _, f := range features {
		r := benchRouter(b, srv.URL, f.edit)
		b.Run(f.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				n := benchQuestions.Add(1)
				serveBench(b, r, `{"model":"`+f.model+`","messages":[{"role":"system","content":"You are a support agent."},{"role":"user","content":"Summarise the shipping policy for order `+strconv.FormatInt(n, 10)+` placed on Monday with express delivery to Lyon."}],"max_tokens":64}`)
			}
		})
	}
}

// benchQuestions numbers BenchmarkFeatures' questions across runs: with
// -count, a later run must not find an earlier run's answers in the cache
// (its store lives in a pool shared by configs of the same size).
var benchQuestions atomic.Int64

// BenchmarkCacheHit serves a cached answer through a provisioned router
// (no Caddy server around it): the router's own cost of a hit.
func BenchmarkCacheHit(b *testing.B) {
	mock := mockllm.New()
	srv := httptest.NewServer(mock)
	defer srv.Close()
	r := benchRouter(b, srv.URL, func(r *Router) { r.Cache = &Cache{MaxSize: 1 << 20} })
	body := `{"model":"simple_qa","messages":[{"role":"system","content":"You are a support agent."},{"role":"user","content":"You are a helpful assistant. Summarise the shipping policy for an order placed on Monday with express delivery to Lyon."}],"max_tokens":64}`
	serveBench(b, r, body) // the miss that stores it
	b.ReportAllocs()
	for b.Loop() {
		if w := serveBench(b, r, body); w.Header().Get("X-LLM-Cache") != "hit" {
			b.Fatal(w.Header())
		}
	}
}

// BenchmarkSemanticStage is the semantic lookup's own cost on a miss,
// without the embedding request (bench/run.sh and BenchmarkFeatures
// measure that with the mock): the namespace key, the guard facts, the
// search of a namespace holding entries questions of 1024 dimensions, and
// storing the miss's vector with its answer. Compare with
// BenchmarkFeatures/cache_miss, the whole exact-miss path.
func BenchmarkSemanticStage(b *testing.B) {
	const dims = 1024
	rng := rand.New(rand.NewPCG(1, 2))
	vector := func() []float32 {
		v := make([]float32, dims)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	head := func(out []byte) []byte { return append(out, 'S') }
	for _, entries := range []int{0, 100, 1_000, 10_000} {
		b.Run(fmt.Sprintf("namespace=%d", entries), func(b *testing.B) {
			store, err := newSemanticStore(entries + 1)
			if err != nil {
				b.Fatal(err)
			}
			var req openai.Request
			body := []byte(`{"model":"simple_qa","messages":[{"role":"system","content":"You are a support agent."},{"role":"user","content":"Summarise the shipping policy for order 1 placed on Monday with express delivery to Lyon."}],"max_tokens":64}`)
			if err := req.Parse(body, openai.Chat); err != nil {
				b.Fatal(err)
			}
			nsKey, _ := req.QuestionKey(head)
			ns := binary.LittleEndian.Uint64(nsKey[:8])
			for i := range entries {
				var key answerKey
				binary.LittleEndian.PutUint64(key[:], uint64(i)+1<<40)
				store.remember(&semanticQuestion{ns: ns, vec: vector()}, key)
			}
			vecs := make([][]float32, 64)
			for i := range vecs {
				vecs[i] = vector()
			}
			b.ReportAllocs()
			n := uint64(0)
			for b.Loop() {
				n++
				key, _ := req.QuestionKey(head)
				q := &semanticQuestion{ns: binary.LittleEndian.Uint64(key[:8]), vec: vecs[n%64], facts: semantic.Extract(req.LastUser())}
				var found [semanticCandidates]semanticMatch
				store.lookup(q, found[:0]) // the search; its result does not matter here
				var answer answerKey
				binary.LittleEndian.PutUint64(answer[:], n)
				store.remember(q, answer)
			}
		})
	}
}

// stubUpstream answers a provider's requests in process, without a
// connection: registered on the provider's transport for "http", it takes
// the place of the network and the mock (http.Transport.RegisterProtocol),
// so that BenchmarkRouterOwn measures the router's own work (and the
// transport's few steps before a connection), which the loopback
// benchmarks bury under the mock's and the network's.
type stubUpstream struct{ answer, stream []byte }

var stubJSONHeader = http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"req-stub"}, "Openai-Processing-Ms": {"12"}}
var stubStreamHeader = http.Header{"Content-Type": {"text/event-stream"}, "X-Request-Id": {"req-stub"}, "Cache-Control": {"no-cache"}}

func (s *stubUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	// read the body as a provider would
	if _, err := io.Copy(io.Discard, req.Body); err != nil {
		return nil, err
	}
	_ = req.Body.Close()
	body, h := s.answer, stubJSONHeader
	if req.Header.Get("Accept") == "text/event-stream" {
		body, h = s.stream, stubStreamHeader
	}
	return &http.Response{
		Status: "200 OK", StatusCode: 200, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h.Clone(), Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)), Request: req,
	}, nil
}

func newStubUpstream() *stubUpstream {
	var stream strings.Builder
	for _, w := range []string{"Your", " order", " ships", " on", " Monday", "."} {
		stream.WriteString(`data: {"id":"chatcmpl-stub","object":"chat.completion.chunk","created":1700000000,"model":"deepseek-chat","choices":[{"index":0,"delta":{"content":"` + w + `"},"finish_reason":null}]}` + "\n\n")
	}
	stream.WriteString(`data: {"id":"chatcmpl-stub","object":"chat.completion.chunk","created":1700000000,"model":"deepseek-chat","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n")
	stream.WriteString(`data: {"id":"chatcmpl-stub","object":"chat.completion.chunk","created":1700000000,"model":"deepseek-chat","choices":[],"usage":{"prompt_tokens":31,"completion_tokens":6,"total_tokens":37}}` + "\n\n")
	stream.WriteString("data: [DONE]\n\n")
	return &stubUpstream{
		answer: []byte(`{"id":"chatcmpl-stub","object":"chat.completion","created":1700000000,"model":"deepseek-chat","choices":[{"index":0,"message":{"role":"assistant","content":"Your order ships on Monday."},"finish_reason":"stop"}],"usage":{"prompt_tokens":31,"completion_tokens":6,"total_tokens":37}}`),
		stream: []byte(stream.String()),
	}
}

// BenchmarkRouterOwn is a whole request through a provisioned router whose
// provider answers in process (stubUpstream): what the router itself costs
// a request, JSON and stream, without and with a budget.
func BenchmarkRouterOwn(b *testing.B) {
	stub := newStubUpstream()
	for _, f := range []struct {
		name string
		edit func(*Router)
	}{
		{"plain", nil},
		{"budget", func(r *Router) {
			r.Budgets = []*Budget{{Name: "bench_own_daily", Limits: []BudgetLimit{{Amount: 1e6, Period: "day"}}, Key: "{llm_team}", Downgrade: "simple_qa"}}
			r.BudgetSync = -1
			r.ClientLabel = &ClientLabel{Value: "{llm_team}"}
		}},
	} {
		r := benchRouter(b, "http://stub.invalid", f.edit)
		for _, p := range r.providers {
			p.transport.Transport.RegisterProtocol("http", stub)
		}
		for _, stream := range []bool{false, true} {
			name := f.name + "/json"
			tail := `"max_tokens":64}`
			if stream {
				name, tail = f.name+"/stream", `"max_tokens":64,"stream":true}`
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					n := benchQuestions.Add(1)
					serveBench(b, r, `{"model":"simple_qa","messages":[{"role":"system","content":"You are a support agent."},{"role":"user","content":"Summarise the shipping policy for order `+strconv.FormatInt(n, 10)+` placed on Monday with express delivery to Lyon."}],`+tail)
				}
			})
		}
	}
}

// BenchmarkUpstreamPrep is what the router does between reading a client
// request's head and handing its request to the provider's transport, the
// part of a -c1 cycle reverse_proxy does not have: the body read and its
// strict reading, the route, the candidates' order, and the upstream
// request (headers, edited body). The request is built by hand, without
// httptest's parse of a request line, so that only the router's steps are
// timed.
func BenchmarkUpstreamPrep(b *testing.B) {
	r := benchRouter(b, "http://stub.invalid", nil)
	repl := caddy.NewReplacer()
	ctx := context.WithValue(context.Background(), caddy.ReplacerCtxKey, repl)
	u, _ := url.Parse("http://gateway.example/v1/chat/completions")
	header := http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer client"}, "User-Agent": {"bench/1.0"}, "Accept": {"*/*"}}
	for _, stream := range []bool{false, true} {
		body := []byte(`{"model":"simple_qa","messages":[{"role":"system","content":"You are a support agent."},{"role":"user","content":"You are a helpful assistant. Summarise the shipping policy for an order placed on Monday with express delivery to Lyon."}],"max_tokens":64}`)
		name := "json"
		if stream {
			body = []byte(`{"model":"simple_qa","stream":true,"messages":[{"role":"system","content":"You are a support agent."},{"role":"user","content":"You are a helpful assistant. Summarise the shipping policy for an order placed on Monday with express delivery to Lyon."}],"max_tokens":64}`)
			name = "stream"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			rd := bytes.NewReader(body)
			for b.Loop() {
				rd.Reset(body)
				req := (&http.Request{Method: http.MethodPost, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
					Header: header, Body: io.NopCloser(rd), ContentLength: int64(len(body))}).WithContext(ctx)
				// as ServeHTTP runs them, up to the transport
				ex := &exchange{start: now(), router: r, w: nil, req: req, ctx: req.Context(), ep: chatEndpoint, repl: repl}
				if !ex.readRequest() {
					b.Fatal("refused")
				}
				p, ok := ex.resolve()
				if !ok {
					b.Fatal("no plan")
				}
				ex.outliveHalfClose()
				candidates, _, _ := p.order(now(), nil, r.logger, balance{})
				up := ex.upstreamRequest(ex.ctx, candidates[0])
				if up.ContentLength == 0 {
					b.Fatal("no body")
				}
				ex.leave()
			}
		})
	}
}
