package llmrouter

import (
	"testing"
	"time"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// TestHedgeThroughForwardProxy: a hedge beside an attempt to a provider
// reached through a forward proxy. Caddy's transport notes the proxy it
// picks in the variables of the request's context (caddyhttp.SetVar, an
// unguarded map), which are the client request's: the two attempts of a
// hedge, on two goroutines, wrote that map at once (a data race, and
// Go's fatal "concurrent map writes").
func TestHedgeThroughForwardProxy(t *testing.T) {
	proxy, proxied := newForwardProxy()
	router := viaProxy(t, hedgeRouter(""), proxy.URL)
	g := newGateway(t, router)
	g.primary.Set("deepseek-chat", mockllm.Behavior{Latency: 3 * time.Second})
	for range 3 {
		resp, body := g.post(chatBody("simple_qa", false))
		expectModel(t, resp, body, "gemini-2.5-flash", "primary", 2)
	}
	if proxied.Load() < 6 {
		t.Errorf("the proxy relayed %d requests, want both attempts of each", proxied.Load())
	}
}
