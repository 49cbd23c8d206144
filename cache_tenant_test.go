package llmrouter

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestCacheKeyHasForwardedHeadersAsSent: a forwarded header that the
// client's Connection header names is hop-by-hop, and the router does not
// send it upstream; the answer it gets is the answer without the header,
// so it must not be stored under the header's value. Otherwise one client
// (here in a shared scope) asks with X-Tenant-Locale: vi and
// "Connection: X-Tenant-Locale", the model answers as if no locale were
// given, and every later client that sends X-Tenant-Locale: vi is served
// that answer: a poisoned entry.
func TestCacheKeyHasForwardedHeadersAsSent(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 1043KB\n\t\tscope shared")+"\tforward_header X-Tenant-Locale\n")
	upstream := func() int { return len(g.primary.RequestsFor("deepseek-chat")) }
	q := question("Which sizes does the red coat come in?", false, "")

	// the attacker: the locale in the key, but not sent upstream
	resp, _ := g.post(q, "Authorization", "Bearer attacker", "X-Tenant-Locale", "vi", "Connection", "X-Tenant-Locale")
	expectCache(t, resp, "miss")
	if n := upstream(); n != 1 {
		t.Fatalf("%d upstream requests, want 1", n)
	}
	if got := g.primary.RequestsFor("deepseek-chat")[0].Header.Values("X-Tenant-Locale"); len(got) != 0 {
		t.Fatalf("a header the client's Connection names reached the provider: %q", got)
	}
	// another client with the locale: never the answer given without it
	resp, _ = g.post(q, "Authorization", "Bearer victim", "X-Tenant-Locale", "vi")
	expectCache(t, resp, "miss")
	if n := upstream(); n != 2 {
		t.Fatalf("%d upstream requests, want 2: the client with the locale was served the answer given without it", n)
	}
	if got := g.primary.RequestsFor("deepseek-chat")[1].Header.Get("X-Tenant-Locale"); got != "vi" {
		t.Errorf("X-Tenant-Locale upstream = %q, want vi", got)
	}
	// and the answer given with it is the one that client gets again
	resp, _ = g.post(q, "Authorization", "Bearer victim", "X-Tenant-Locale", "vi")
	expectCache(t, resp, "hit")
}

// TestCacheStorePerServer: two handlers of one config on two servers
// (sites on two ports, as two tenants' or an internal and a public
// gateway's may be) have a store each, as two handlers of one server do.
// Caddy provisions each server's handlers under a context of its own, so
// numbering the handlers by context started again at 0 on every server:
// the first cached handler of each server got the same store, and a
// client of one site was served, and learnt of, the other's answers.
func TestCacheStorePerServer(t *testing.T) {
	g := newGateway(t, defaultRouter)
	other := fmt.Sprintf("http://localhost:%d", freePort())
	body := g.fill(cacheRouter("\t\tmax_size 1044KB\n\t\tscope shared"))
	g.tc.InitServer(globalOptions+"\n"+siteAddress+" {\n\tllm_router {"+body+"\n\t}\n}\n"+
		other+" {\n\tllm_router {"+body+"\n\t}\n}\n", "caddyfile")
	q := question("Is the store on Le Loi street open on Sundays?", false, "")
	resp, _ := g.post(q)
	expectCache(t, resp, "miss")

	resp, err := g.tc.Client.Post(other+"/v1/chat/completions", "application/json", strings.NewReader(q))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the other site: %d %s", resp.StatusCode, b)
	}
	if got := resp.Header.Get("X-LLM-Cache"); got != "miss" {
		t.Errorf("the other server's handler, the same question: X-LLM-Cache %q (Age %q), want miss: it sees the first one's answers",
			got, resp.Header.Get("Age"))
	}
	resp, _ = g.post(q)
	expectCache(t, resp, "hit")
}

// TestCacheScopeEmptyBypasses: a scope placeholder that resolves to
// nothing (a client the map does not know, a misspelt placeholder) names
// no tenant: such requests must not share answers with each other, so
// they are not cached at all, while those with a value share within it.
func TestCacheScopeEmptyBypasses(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 1042KB\n\t\tscope {http.request.header.X-Team}"))
	upstream := func() int { return len(g.primary.RequestsFor("deepseek-chat")) }
	q := question("Which coupons does my account have?", false, "")

	for i, client := range []string{"Bearer team-less-a", "Bearer team-less-b"} {
		resp, _ := g.post(q, "Authorization", client)
		expectCache(t, resp, "bypass")
		if n := upstream(); n != i+1 {
			t.Fatalf("%d upstream requests after %d requests without a team, want %d: one was served another's answer", n, i+1, i+1)
		}
	}
	resp, _ := g.post(q, "Authorization", "Bearer a", "X-Team", "shop")
	expectCache(t, resp, "miss")
	resp, _ = g.post(q, "Authorization", "Bearer b", "X-Team", "shop")
	expectCache(t, resp, "hit")
	if n := upstream(); n != 3 {
		t.Errorf("%d upstream requests, want 3", n)
	}
}

// TestCacheScopeNotBothSharedAndScoped: a JSON config with shared_scope
// and scope placeholders loaded, and shared_scope won: answers meant to
// stay within a team were served to every client. It must not load.
func TestCacheScopeNotBothSharedAndScoped(t *testing.T) {
	var r Router
	cfg := `{"providers":[{"name":"p","base_url":"http://127.0.0.1:1/v1"}],"models":[{"name":"a"}],
		"cache":{"shared_scope":true,"scope":["{http.request.header.X-Team}"]}}`
	if err := json.Unmarshal([]byte(cfg), &r); err != nil {
		t.Fatal(err)
	}
	r.setDefaults()
	err := r.Validate()
	if err == nil || !strings.Contains(err.Error(), "cannot be combined with scope placeholders") {
		t.Fatalf("Validate() = %v, want the contradiction refused", err)
	}
}

// TestCacheStoreNotAnotherHandlersAfterReorder: a handler's own store was
// found again at a reload by the handler's place among its server's
// handlers; a reload that puts another handler in that place (here a
// tenant's route added before the others: the Caddyfile puts the longer
// path first) must not hand that handler the answers of the one that was
// there: the new tenant /shop was served what /a's clients asked, and /a
// what /b's did. handle_path strips the prefix before the handler: the
// path the client sent tells the tenants apart all the same.
func TestCacheStoreNotAnotherHandlersAfterReorder(t *testing.T) {
	for _, directive := range []string{"handle", "handle_path"} {
		t.Run(directive, func(t *testing.T) {
			g := newGateway(t, defaultRouter)
			body := g.fill(cacheRouter("\t\tmax_size 1016KB\n\t\tscope shared"))
			handle := func(path string) string {
				return "\t" + directive + " " + path + " {\n\t\tllm_router {" + body + "\n\t\t}\n\t}\n"
			}
			g.tc.InitServer(globalOptions+"\n"+siteAddress+" {\n"+handle("/a/*")+handle("/b/*")+"}\n", "caddyfile")
			qa := question("What did a customer of tenant a ask? "+directive, false, "")
			qb := question("What did a customer of tenant b ask? "+directive, false, "")
			resp, _ := g.postPath("/a/v1/chat/completions", qa)
			expectCache(t, resp, "miss")
			resp, _ = g.postPath("/b/v1/chat/completions", qb)
			expectCache(t, resp, "miss")

			g.tc.InitServer(globalOptions+"\n"+siteAddress+" {\n"+handle("/a/*")+handle("/b/*")+handle("/shop/*")+"}\n", "caddyfile")
			for _, c := range []struct{ path, q string }{{"/shop", qa}, {"/a", qb}} {
				resp, _ = g.postPath(c.path+"/v1/chat/completions", c.q)
				if got := resp.Header.Get("X-LLM-Cache"); got != "miss" {
					t.Errorf("handler %s after the reload: X-LLM-Cache %q (Age %q), want miss: it was served another handler's answer",
						c.path, got, resp.Header.Get("Age"))
				}
			}
			// and the handlers cache their own answers as before
			resp, _ = g.postPath("/shop/v1/chat/completions", qa)
			expectCache(t, resp, "hit")
		})
	}
}

// TestCacheStoreNotAnotherHandlersByMatcher: two handlers on one host and
// path, told apart only by a header matcher (a tenant each, each with a
// store of its own, answers shared within the tenant), have the same host
// and path in their keys; a reload that swaps their places must not hand
// one the other's store: tenant b was served, and learnt of, what tenant
// a's clients asked. Nor must a handler whose config changed take the
// store of the one that had its place.
func TestCacheStoreNotAnotherHandlersByMatcher(t *testing.T) {
	g := newGateway(t, defaultRouter)
	same := g.fill(cacheRouter("\t\tmax_size 1015KB\n\t\tscope shared"))
	other := g.fill(cacheRouter("\t\tmax_size 1015KB\n\t\tscope shared\n\t\tmatch simple_qa deepseek-v3.2"))
	tenant := func(name, body string) string {
		return "\t@" + name + " header X-Tenant " + name + "\n\thandle @" + name + " {\n\t\tllm_router {" + body + "\n\t\t}\n\t}\n"
	}
	site := func(tenants ...string) {
		g.tc.InitServer(globalOptions+"\n"+siteAddress+" {\n"+strings.Join(tenants, "")+"}\n", "caddyfile")
	}
	site(tenant("a", same), tenant("b", same))
	q := question("What did a customer of tenant a ask?", false, "")
	resp, _ := g.post(q, "X-Tenant", "a")
	expectCache(t, resp, "miss")
	resp, _ = g.post(q, "X-Tenant", "a")
	expectCache(t, resp, "hit")

	site(tenant("b", same), tenant("a", same))
	resp, _ = g.post(q, "X-Tenant", "b")
	if got := resp.Header.Get("X-LLM-Cache"); got != "miss" {
		t.Errorf("tenant b after the reload that swapped the handlers: X-LLM-Cache %q (Age %q), want miss: it was served tenant a's answer",
			got, resp.Header.Get("Age"))
	}

	q = question("What else did a customer of tenant a ask?", false, "")
	site(tenant("a", same), tenant("b", other))
	resp, _ = g.post(q, "X-Tenant", "a")
	expectCache(t, resp, "miss")
	site(tenant("b", other), tenant("a", same))
	resp, _ = g.post(q, "X-Tenant", "b")
	if got := resp.Header.Get("X-LLM-Cache"); got != "miss" {
		t.Errorf("tenant b (its own config) after the reload that swapped the handlers: X-LLM-Cache %q (Age %q), want miss: it was served tenant a's answer",
			got, resp.Header.Get("Age"))
	}
}
