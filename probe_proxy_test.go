package llmrouter

import (
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
