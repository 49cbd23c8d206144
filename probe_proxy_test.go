package llmrouter

import (
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync/atomic"
	"testing"
)

// TestProbeThroughPlaceholderProxy: a provider reached through a forward
// proxy whose URL is a placeholder ({env.*}, resolved per request by
// Caddy's network_proxy with the replacer of the request's context) is
// probed through it, as live requests are. A probe's context had no
// replacer: every probe failed ("failed to obtain replacer from request")
// and took 20 points, and a deployment serving well was disabled within
// four rounds.
func TestProbeThroughPlaceholderProxy(t *testing.T) {
	var proxied atomic.Int64
	proxy := newMockServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxied.Add(1)
		(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL, pr.Out.Host = r.URL, r.URL.Host
		}}).ServeHTTP(w, r)
	}))
	t.Setenv("LLM_ROUTER_TEST_PROXY", proxy.URL)
	router := strings.Replace(withHealth("\t\tinterval 20ms\n\t\ttimeout 1s"), "\t\ttimeout 2s\n\t}\n\tprovider backup",
		"\t\ttimeout 2s\n\t\ttransport http {\n\t\t\tforward_proxy_url {env.LLM_ROUTER_TEST_PROXY}\n\t\t}\n\t}\n\tprovider backup", 1)
	if !strings.Contains(router, "forward_proxy_url") {
		t.Fatal("no transport added")
	}
	g := newGateway(t, router)
	events := probeEvents(t, deploymentID{"deepseek-v3.2", "primary"})
	for range 3 {
		if r := waitFor(t, events, "a probe"); r != probeOK {
			st := statsFor(t, g, "deepseek-v3.2", "primary")
			t.Fatalf("probe through the proxy: %s (%s)", r, st.LastError)
		}
	}
	if proxied.Load() == 0 {
		t.Error("no probe went through the proxy")
	}
}

// TestProxyURLKnownOnlyPerRequestRefused: a forward proxy URL is resolved
// at load, as every provider setting: one known only per request (a
// client's header) let a client send the provider's requests, its API key
// in them, through a proxy of its choosing. Such a config now fails to
// load, naming the setting.
func TestProxyURLKnownOnlyPerRequestRefused(t *testing.T) {
	g := newGateway(t, defaultRouter)
	router := strings.Replace(defaultRouter, "\t\ttimeout 2s\n\t}\n\tprovider backup",
		"\t\ttimeout 2s\n\t\ttransport http {\n\t\t\tforward_proxy_url {http.request.header.X-Egress}\n\t\t}\n\t}\n\tprovider backup", 1)
	cf := globalOptions + "\n" + siteAddress + " {\n\tllm_router {" + g.fill(router) + "\n\t}\n}\n"
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := loadConfig(string(adapted)); err == nil || !strings.Contains(err.Error(), "forward_proxy_url") {
		// loaded: a client picks the proxy, which gets the provider's key
		var seen atomic.Value
		proxy := newMockServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen.Store(r.Header.Get("Authorization"))
			http.Error(w, "no", http.StatusBadGateway)
		}))
		g.post(chatBody("simple_qa", false), "X-Egress", proxy.URL)
		t.Fatalf("a per-request forward_proxy_url loaded (%v); the client's proxy got Authorization %q", err, seen.Load())
	}
}
