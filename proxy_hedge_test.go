package llmrouter

import (
	"net/http"
	"net/http/httputil"
	"strings"
	"sync/atomic"
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
	var proxied atomic.Int64
	proxy := newMockServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxied.Add(1)
		(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL, pr.Out.Host = r.URL, r.URL.Host
		}}).ServeHTTP(w, r)
	}))
	router := strings.Replace(hedgeRouter(""), "\t\ttimeout 2s\n\t}\n\tprovider backup",
		"\t\ttimeout 2s\n\t\ttransport http {\n\t\t\tforward_proxy_url "+proxy.URL+"\n\t\t}\n\t}\n\tprovider backup", 1)
	if router == hedgeRouter("") {
		t.Fatal("no transport added")
	}
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
