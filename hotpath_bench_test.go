package llmrouter

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
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
			for b.Loop() {
				if _, err := parseRequestBody(body); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("parse_and_rewrite_%dKB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				rb, err := parseRequestBody(body)
				if err != nil {
					b.Fatal(err)
				}
				// as upstreamRequest sends it: one slice when small, the
				// pieces when large
				parts := rb.upstreamParts("deepseek-chat")
				if parts.size <= smallBody {
					_ = parts.join()
				} else if _, err := io.Copy(io.Discard, parts.reader()); err != nil {
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
		if got, _ := p.order(t0, rng, nil); len(got) != 3 {
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
	events := newSSEReader(strings.NewReader(stream))
	src := strings.NewReader(stream)
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for b.Loop() {
		ev, err := events.next()
		if err == io.EOF {
			src.Reset(stream)
			events.r.Reset(src)
			ev, err = events.next()
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
	d := &deployment{name: "deepseek-v3.2", provider: &provider{name: "holysheep"}, price: builtinPrices["deepseek-v3.2"], state: newSharedState(deploymentID{})}
	d.metrics = metrics.forDeployment(d.name, d.provider.name, "CNY")
	u := usage{input: 120, output: 10, cachedInput: 64}
	b.ReportAllocs()
	for b.Loop() {
		d.metrics.inFlight.Inc()
		d.metrics.attempts[outcomeSuccess.index()].Inc()
		d.metrics.duration.Observe(0.42)
		d.metrics.ttft.Observe(0.12)
		sm := d.metrics.forClient("")
		sm.inputTokens.Add(float64(u.input))
		sm.outputToks.Add(float64(u.output))
		sm.cachedToks.Add(float64(u.cachedInput))
		sm.cost.Add(d.price.cost(u))
		metrics.requests.WithLabelValues("simple_qa", d.name, d.provider.name, statusLabel(200), "chat").Inc()
		d.state.stats.recordAttempt(outcomeSuccess)
		d.state.stats.recordRequest(chatEndpoint, 420*time.Millisecond)
		d.state.stats.recordUsage(u, d.price.cost(u), "USD")
		d.metrics.inFlight.Dec()
	}
}

// BenchmarkServeHTTP runs whole requests through a provisioned router
// (no Caddy server around it) against the mock on loopback.
func BenchmarkServeHTTP(b *testing.B) {
	mock := mockllm.New()
	srv := httptest.NewServer(mock)
	defer srv.Close()
	r := &Router{
		Providers:   []*Provider{{Name: "primary", BaseURL: srv.URL + "/v1", APIKey: "sk-bench-key-000000000001"}},
		Models:      []*Model{{Name: "deepseek-v3.2", Upstream: "deepseek-chat"}, {Name: "gemini-2.5-flash"}},
		Routes:      map[string][]string{"simple_qa": {"deepseek-v3.2", "gemini-2.5-flash"}},
		HealthCheck: &HealthCheck{Off: true},
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := r.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	defer r.Cleanup()
	for _, stream := range []bool{false, true} {
		name := "json"
		if stream {
			name = "stream"
		}
		body := chatBody("simple_qa", stream)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
				repl := caddy.NewReplacer()
				req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
				w := httptest.NewRecorder()
				if err := r.ServeHTTP(w, req, nil); err != nil || w.Code != 200 {
					b.Fatalf("%v %d", err, w.Code)
				}
			}
		})
	}
}
