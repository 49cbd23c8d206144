package llmrouter

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// TestProbeThroughPlaceholderProxy: a provider reached through a forward
// proxy whose URL is a placeholder ({env.*}) is probed through it, as live
// requests are. Caddy's network_proxy once resolved it per request with
// the replacer of the request's context, and a probe's had none: every
// probe failed ("failed to obtain replacer from request")
// and took 20 points, and a deployment serving well was disabled within
// four rounds.
func TestProbeThroughPlaceholderProxy(t *testing.T) {
	proxy, proxied := newForwardProxy()
	t.Setenv("LLM_ROUTER_TEST_PROXY", proxy.URL)
	router := viaProxy(t, withHealth("\t\tinterval 20ms\n\t\ttimeout 1s"), "{env.LLM_ROUTER_TEST_PROXY}")
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

// TestProxyURLPlaceholderAfterLoadRefused: a forward proxy URL is resolved
// at load, as every provider setting, and one known only per request (a
// client's header), or that still holds a placeholder once resolved (one
// escaped in the config, or one inside the value of an {env.*}), fails to
// load, naming the setting: Caddy resolves what it is given once more, per
// request, so the client's header picked the proxy that got the provider's
// key.
func TestProxyURLPlaceholderAfterLoadRefused(t *testing.T) {
	t.Setenv("LLM_ROUTER_TEST_EGRESS", "{http.request.header.X-Egress}")
	g := newGateway(t, defaultRouter)
	for _, proxyURL := range []string{"{http.request.header.X-Egress}", `\{http.request.header.X-Egress}`, "{env.LLM_ROUTER_TEST_EGRESS}"} {
		router := viaProxy(t, defaultRouter, proxyURL)
		cf := globalOptions + "\n" + siteAddress + " {\n\tllm_router {" + g.fill(router) + "\n\t}\n}\n"
		adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := loadConfig(string(adapted)); err == nil || !strings.Contains(err.Error(), "forward_proxy_url") {
			var seen atomic.Value
			proxy := newMockServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen.Store(r.Header.Get("Authorization"))
				http.Error(w, "no", http.StatusBadGateway)
			}))
			g.post(chatBody("simple_qa", false), "X-Egress", proxy.URL)
			t.Errorf("forward_proxy_url %s loaded (%v); the client's proxy got Authorization %v", proxyURL, err, seen.Load())
		}
	}
}

// TestURLCredentialsNotInLoadError: a forward proxy URL or a base_url
// that is malformed, given in an {env.*} (resolved at load) or written
// out, fails to load without its password in the error, which Caddy logs
// and the admin API returns: url.Parse's error quotes the whole URL,
// user:password@ included.
func TestURLCredentialsNotInLoadError(t *testing.T) {
	const password = "pr0xy-s3cr%zzet"
	g := newGateway(t, defaultRouter)
	t.Setenv("LLM_ROUTER_TEST_PROXY", "http://gw:"+password+"@127.0.0.1:3128")
	t.Setenv("LLM_ROUTER_TEST_BASE", "https://gw:"+password+"@llm.example/v1")
	// a password with text in braces, which reads as a placeholder
	t.Setenv("LLM_ROUTER_TEST_BRACES", "http://gw:pr0xy{s3cret}@127.0.0.1:3128")
	for name, router := range map[string]string{
		"forward_proxy_url from env":            viaProxy(t, defaultRouter, "{env.LLM_ROUTER_TEST_PROXY}"),
		"forward_proxy_url from env, in braces": viaProxy(t, defaultRouter, "{env.LLM_ROUTER_TEST_BRACES}"),
		"forward_proxy_url":                     viaProxy(t, defaultRouter, "http://gw:"+password+"@127.0.0.1:3128"),
		"base_url from env":                     strings.Replace(defaultRouter, "base_url {PRIMARY}/v1", "base_url {env.LLM_ROUTER_TEST_BASE}", 1),
		"base_url":                              strings.Replace(defaultRouter, "base_url {PRIMARY}/v1", "base_url https://gw:"+password+"@llm.example/v1", 1),
		"base_url of another scheme":            strings.Replace(defaultRouter, "base_url {PRIMARY}/v1", "base_url ftp://gw:pr0xy-s3cret@llm.example/v1", 1),
	} {
		cf := globalOptions + "\n" + siteAddress + " {\n\tllm_router {" + g.fill(router) + "\n\t}\n}\n"
		adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
		if err == nil { // else refused by the Caddyfile's validation
			err = loadConfig(string(adapted))
		}
		switch {
		case err == nil:
			t.Errorf("%s: a malformed URL loaded", name)
		case strings.Contains(err.Error(), "s3cr"):
			t.Errorf("%s: the load error shows the password: %v", name, err)
		}
	}
}
