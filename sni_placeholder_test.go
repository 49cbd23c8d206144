package llmrouter

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// TestTLSServerNamePlaceholder: a provider whose transport's
// tls_server_name is a placeholder ({env.*}) is probed, and serves, like
// any other: Caddy's transport resolved such a name at each dial with the
// replacer of the request's context, and a probe's context had none, so
// the dial (on a goroutine of Go's transport, past any recover) panicked
// and took the whole server down. It is now resolved at load, as every
// provider setting, and one known only per request is a config error.
func TestTLSServerNamePlaceholder(t *testing.T) {
	t.Setenv("LLM_ROUTER_TEST_SNI", "127.0.0.1") // the mock's certificate's
	secure := mockllm.New()
	url, ca := newTLSMock(t, secure)
	g := newGateway(t, `
	provider secure {
		base_url `+url+`/v1
		api_key sk-secure-test-key-0003
		transport http {
			tls_trust_pool file `+ca+`
			tls_server_name {env.LLM_ROUTER_TEST_SNI}
		}
	}
	model sni-probed {
		provider secure
		upstream deepseek-chat
	}
	health_check {
		interval 20ms
		timeout 1s
	}
`)
	events := probeEvents(t, deploymentID{"sni-probed", "secure"})
	// the probe first: its dial makes the connection
	if r := waitFor(t, events, "a probe"); r != probeOK {
		t.Errorf("probe: %s", r)
	}
	resp, body := g.post(chatBody("sni-probed", false))
	expectModel(t, resp, body, "sni-probed", "secure", 1)

	// a name known per request: written as such, or left in the value of
	// an {env.*}, which Caddy's transport would resolve again at each dial
	t.Setenv("LLM_ROUTER_TEST_SNI_HOST", "{http.request.host}")
	for _, name := range []string{"{http.request.host}", "{env.LLM_ROUTER_TEST_SNI_HOST}"} {
		cf := globalOptions + "\n" + siteAddress + " {\n\tllm_router {\n\t\tprovider secure {\n\t\t\tbase_url " + url +
			"/v1\n\t\t\ttransport http {\n\t\t\t\ttls_server_name " + name + "\n\t\t\t}\n\t\t}\n\t\tmodel sni-probed {\n\t\t\tprovider secure\n\t\t}\n\t}\n}\n"
		adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
		if err != nil {
			t.Fatal(err)
		}
		err = loadConfig(string(adapted))
		if err == nil || !strings.Contains(err.Error(), "tls_server_name") {
			t.Errorf("a per-request tls_server_name %s loaded: %v", name, err)
		}
	}
}
