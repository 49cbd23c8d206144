package llmrouter

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// hedgeRouter is defaultRouter with hedging after 300 ms, and a first
// byte timeout long enough that only the hedge can help.
func hedgeRouter(extra string) string {
	return strings.Replace(defaultRouter, "first_byte_timeout 2s", "first_byte_timeout 5s\n\t\thedge_after 300ms"+extra, 1)
}

const hedgeWon = `caddy_llm_router_hedges_total{model="gemini-2.5-flash",provider="primary",result="won"}`

// TestHedgedFirstByte: a stream whose first deployment holds its first
// byte for 3 s gets its first event from the second, started after 300 ms;
// the slow attempt is canceled, counted, and its input charged as an
// estimate.
func TestHedgedFirstByte(t *testing.T) {
	g := newGateway(t, hedgeRouter(""))
	g.primary.Set("deepseek-chat", mockllm.Behavior{Latency: 3 * time.Second})
	done := requestsDone(t)
	before := scrape(t)
	start := time.Now()
	s := g.readStream(context.Background(), chatBody("simple_qa", true), nil)
	if s.err != nil || answerText(t, s.body) == "" {
		t.Fatalf("stream: %v %q", s.err, s.body)
	}
	if took := s.first.Sub(start); took >= time.Second {
		t.Errorf("first event after %s, want under 1s from the hedge", took)
	}
	if got := waitFor(t, g.primary.Canceled(), "the slow attempt to be canceled"); got != "deepseek-chat" {
		t.Errorf("canceled %q, want the slow deepseek-chat", got)
	}
	waitFor(t, done, "the request to be counted")
	after := scrape(t)
	if d := after[hedgeWon] - before[hedgeWon]; d != 1 {
		t.Errorf("%s +%v, want 1", hedgeWon, d)
	}
	const lost = `caddy_llm_router_attempts_total{model="deepseek-v3.2",outcome="hedge_lost",provider="primary"}`
	const estimated = `caddy_llm_router_estimated_tokens_total{model="deepseek-v3.2",provider="primary",type="input"}`
	if after[lost]-before[lost] != 1 || after[estimated]-before[estimated] <= 0 {
		t.Errorf("lost attempt: %s +%v, %s +%v; want counted and its input charged as an estimate",
			lost, after[lost]-before[lost], estimated, after[estimated]-before[estimated])
	}
	if st := statsFor(t, g, "deepseek-v3.2", "primary"); st.HealthScore != 100 || len(st.HedgeLostCosts) != 1 || st.HedgeLostCosts[0].Amount <= 0 {
		t.Errorf("the slow deployment: score %d (losing a hedge is not a failure), lost hedges cost %+v", st.HealthScore, st.HedgeLostCosts)
	}
	if st := statsFor(t, g, "gemini-2.5-flash", "primary"); st.Hedges != 1 || st.HedgesWon != 1 {
		t.Errorf("the hedge's deployment: %d hedges, %d won; want 1 and 1", st.Hedges, st.HedgesWon)
	}
}

// TestNoHedge: a first deployment that answers within the delay is never
// hedged; max_hedges 0 and a budget that could not pay twice turn hedging
// off.
func TestNoHedge(t *testing.T) {
	check := func(name, router string, latency time.Duration) {
		t.Helper()
		g := newGateway(t, router)
		g.primary.Set("deepseek-chat", mockllm.Behavior{Latency: latency})
		done := requestsDone(t)
		before := scrape(t)
		resp, body := g.post(chatBody("simple_qa", false), "X-Team", "storefront")
		expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
		waitFor(t, done, "the request to be counted")
		if n := len(g.primary.RequestsFor("gemini-2.5-flash")); n != 0 {
			t.Errorf("%s: the second deployment got %d requests", name, n)
		}
		if d := scrape(t)[hedgeWon] - before[hedgeWon]; d != 0 {
			t.Errorf("%s: hedged", name)
		}
	}
	check("fast first deployment", hedgeRouter(""), 100*time.Millisecond)
	check("max_hedges 0", hedgeRouter("\n\t\tmax_hedges 0"), 600*time.Millisecond)
	// a reservation of about 0.35 USD (budgetRouter's prices, 350 output
	// tokens reserved) against a limit of 0.5: one fits, two would not
	budget := strings.Replace(hedgeRouter(""), "default_route simple_qa",
		"default_route simple_qa\n\tbudget team {\n\t\tlimit 0.5 per day\n\t\tkey {http.request.header.X-Team}\n\t\treserve_output 350\n\t}\n\tbudget_sync off", 1)
	budget = strings.NewReplacer(
		"model deepseek-v3.2 {\n\t\tupstream deepseek-chat\n\t}", "model deepseek-v3.2 {\n\t\tupstream deepseek-chat\n\t\tprice 1000\n\t}",
		"model gemini-2.5-flash\n", "model gemini-2.5-flash {\n\t\tprice 1000\n\t}\n",
	).Replace(budget)
	check("budget near its limit", budget, 600*time.Millisecond)
}

// TestHedgedJSON: a JSON request whose first deployment answers after 3 s
// is answered by the hedge.
func TestHedgedJSON(t *testing.T) {
	g := newGateway(t, hedgeRouter(""))
	g.primary.Set("deepseek-chat", mockllm.Behavior{Latency: 3 * time.Second})
	start := time.Now()
	resp, body := g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "gemini-2.5-flash", "primary", 2)
	if took := time.Since(start); took >= time.Second {
		t.Errorf("answered after %s, want under 1s from the hedge", took)
	}
	if got := waitFor(t, g.primary.Canceled(), "the slow attempt to be canceled"); got != "deepseek-chat" {
		t.Errorf("canceled %q", got)
	}
}

// TestHedgeSparesAConversation: a Responses API request in a
// conversation ("conversation": an id, or {"id": …}) has its input and
// output appended to that conversation by the provider once it completes,
// and a JSON generation completes without a reader: a hedge beside it
// would add the turn to the conversation twice (the loser's too), and the
// conversation lives at one provider only. It is not hedged.
func TestHedgeSparesAConversation(t *testing.T) {
	g := newGateway(t, hedgeRouter(""))
	for _, conv := range []string{`"conv_68c1d2e3f4a5b6c7d8e9f0a1"`, `{"id":"conv_68c1d2e3f4a5b6c7d8e9f0a1"}`} {
		g.primary.Set("deepseek-chat", mockllm.Behavior{Latency: 600 * time.Millisecond, Times: 1})
		resp, body := g.postPath("/v1/responses", `{"model":"simple_qa","input":"And the cheaper one?","conversation":`+conv+`}`)
		expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
		if n := len(g.primary.RequestsFor("gemini-2.5-flash")); n != 0 {
			t.Errorf("conversation %s: hedged, the second deployment got %d requests", conv, n)
		}
	}
}

// TestHedgeErrorAnswerWaitsForTheFirst: a hedge's quick error answer (a
// 400 from a deployment that cannot take the request: a smaller context
// window, a parameter it lacks) is no reason to drop the first attempt,
// which may well answer: without the hedge that deployment would only
// have been asked after the first failed. The first attempt's answer is
// relayed; when the first attempt fails, the hedge's error answer is, as
// a failover's would be.
func TestHedgeErrorAnswerWaitsForTheFirst(t *testing.T) {
	g := newGateway(t, hedgeRouter(""))
	for _, stream := range []bool{false, true} {
		g.primary.Set("deepseek-chat", mockllm.Behavior{Latency: 800 * time.Millisecond, Times: 1})
		g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 400, Times: 1})
		resp, body := g.post(chatBody("simple_qa", stream))
		expectModel(t, resp, body, "deepseek-v3.2", "primary", 2)
	}
	// the first attempt fails after the hedge's error answer: that answer
	// is the client's
	g.primary.Set("deepseek-chat", mockllm.Behavior{Latency: 800 * time.Millisecond, Status: 500, Times: 1})
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 400, Times: 1})
	resp, body := g.post(chatBody("simple_qa", false))
	if resp.StatusCode != 400 || resp.Header.Get("X-LLM-Model") != "gemini-2.5-flash" {
		t.Errorf("%d from %q: %s; want the hedge's 400", resp.StatusCode, resp.Header.Get("X-LLM-Model"), body)
	}
}

// TestNoHedgeAfterTryDuration: try_duration is the time after which no
// new attempt starts; a hedge is one. A first attempt still waiting for
// its first byte when try_duration is spent gets no hedge beside it.
func TestNoHedgeAfterTryDuration(t *testing.T) {
	g := newGateway(t, hedgeRouter("\n\t\ttry_duration 100ms"))
	g.primary.Set("deepseek-chat", mockllm.Behavior{Latency: 600 * time.Millisecond, Times: 1})
	resp, body := g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	if n := len(g.primary.RequestsFor("gemini-2.5-flash")); n != 0 {
		t.Errorf("a hedge started after try_duration: the second deployment got %d requests", n)
	}
}

// TestHedgeSparesHostedTools: a request with a feature the provider runs
// and bills apart from tokens (allow_unpriced: a remote MCP server's
// tools, web search) is not hedged: the canceled attempt's tool calls are
// neither undone (an MCP tool's action would be taken twice) nor counted
// (a second search bill no budget sees).
func TestHedgeSparesHostedTools(t *testing.T) {
	g := newGateway(t, hedgeRouter("")+"\tallow_unpriced mcp web_search\n")
	for _, c := range []struct{ path, body string }{
		{"/v1/responses", `{"model":"simple_qa","input":"Open a ticket for the broken checkout","tools":[{"type":"mcp","server_label":"tickets","server_url":"https://tickets.example.com/mcp","require_approval":"never"}]}`},
		{"/v1/chat/completions", `{"model":"simple_qa","web_search_options":{},"messages":[{"role":"user","content":"Today's news?"}]}`},
	} {
		g.primary.Set("deepseek-chat", mockllm.Behavior{Latency: 600 * time.Millisecond, Times: 1})
		before := len(g.primary.RequestsFor("gemini-2.5-flash"))
		resp, body := g.postPath(c.path, c.body)
		expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
		if n := len(g.primary.RequestsFor("gemini-2.5-flash")) - before; n != 0 {
			t.Errorf("%s: hedged, the second deployment got %d requests", c.path, n)
		}
	}
}

// TestNoHedgeToACoolingDeployment: a hedge is an optional second request:
// it is not sent to a deployment that went into a cooldown (its provider
// asked for a pause with a 429 and Retry-After) or was disabled while the
// first attempt waited for its first byte.
func TestNoHedgeToACoolingDeployment(t *testing.T) {
	g := newGateway(t, strings.Replace(hedgeRouter(""), "hedge_after 300ms", "hedge_after 1s", 1))
	g.primary.Set("deepseek-chat", mockllm.Behavior{Latency: 1500 * time.Millisecond, Times: 1})
	type answer struct {
		model string
		code  int
	}
	done := make(chan answer, 1)
	go func() {
		resp, _ := g.post(chatBody("simple_qa", false))
		done <- answer{resp.Header.Get("X-LLM-Model"), resp.StatusCode}
	}()
	if got := waitFor(t, g.primary.Arrived(), "the first attempt"); got != "deepseek-chat" {
		t.Fatalf("first arrived %q", got)
	}
	// meanwhile another request finds gemini-2.5-flash rate limited, with
	// a Retry-After: it cools down for 30 s
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: http.StatusTooManyRequests, RetryAfter: "30", Times: 1})
	if resp, body := g.post(`{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode == http.StatusOK {
		t.Fatalf("the premise fails: %d %s", resp.StatusCode, body)
	}
	a := waitFor(t, done, "the hedged request")
	if a.code != http.StatusOK || a.model != "deepseek-v3.2" {
		t.Errorf("%d from %q, want the first attempt's answer", a.code, a.model)
	}
	if n := len(g.primary.RequestsFor("gemini-2.5-flash")); n != 1 {
		t.Errorf("the cooling deployment got %d requests, want 1 (the one that made it cool down)", n)
	}
}

// TestHedgeNeitherAnswered: hedges_total's result names who answered: a
// hedge whose two attempts both failed was not lost to the first attempt
// (result="lost" says the first attempt answered), it is "failed".
func TestHedgeNeitherAnswered(t *testing.T) {
	g := newGateway(t, hedgeRouter(""))
	g.primary.Set("deepseek-chat", mockllm.Behavior{Latency: 600 * time.Millisecond, Status: 500, Times: 1})
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 500, Times: 1})
	done := requestsDone(t)
	before := scrape(t)
	if resp, body := g.post(chatBody("simple_qa", false)); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("%d %s, want 503", resp.StatusCode, body)
	}
	waitFor(t, done, "the request to be counted")
	after := scrape(t)
	const prefix = `caddy_llm_router_hedges_total{model="gemini-2.5-flash",provider="primary",result=`
	if lost, failed := after[prefix+`"lost"}`]-before[prefix+`"lost"}`], after[prefix+`"failed"}`]-before[prefix+`"failed"}`]; lost != 0 || failed != 1 {
		t.Errorf("hedges_total: lost +%v, failed +%v; want 0 and 1 (neither attempt answered)", lost, failed)
	}
}

// TestHedgeRequestsFaultEventWaitsForTheFirst: a stream's first event
// that is an error blaming the request (a context too long for the
// hedge's smaller window) is the hedge's error answer as a 400 is: it
// waits for the first attempt, whose answer is relayed.
func TestHedgeRequestsFaultEventWaitsForTheFirst(t *testing.T) {
	g := newGateway(t, hedgeRouter(""))
	g.primary.Set("deepseek-chat", mockllm.Behavior{Latency: 800 * time.Millisecond, Times: 1})
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Times: 1,
		Body: `data: {"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}` + "\n\n"})
	resp, body := g.post(chatBody("simple_qa", true))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 2)
}

// TestHedgedFailureCountsWhenItEnds: a hedge's attempt that failed while
// the other streamed its answer had its outcome recorded only once that
// stream ended, minutes later maybe: a deployment that answered 429
// ("pause for 30 s") got every other request meanwhile, and its cooldown
// started only when the stream ended. Each attempt's outcome now counts
// when it ends.
func TestHedgedFailureCountsWhenItEnds(t *testing.T) {
	g := newGateway(t, hedgeRouter(""))
	// the first attempt's 429 comes after the hedge started (300 ms), and
	// before the hedge's first byte; the hedge's stream then stalls
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 429, RetryAfter: "30", Latency: 500 * time.Millisecond, Times: 1})
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Latency: 1500 * time.Millisecond, HoldAfterChunks: 1, Times: 1})
	_, hangUp := g.streamUntil(chatBody("simple_qa", true), "w0")
	defer hangUp()
	if st := statsFor(t, g, "deepseek-v3.2", "primary"); st.State != stateCooldown {
		t.Errorf("deepseek %s while the hedge streams, a second after its 429; want cooldown", st.State)
	}
}

// TestHedgeBesideTheRoleChunksOfNChoices: a stream of n choices opens
// with a role chunk for each, no output yet; a first attempt that sends
// them and stalls has no first byte, and is hedged: its second role chunk
// neither commits it nor wins the hedge.
func TestHedgeBesideTheRoleChunksOfNChoices(t *testing.T) {
	const role = `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":%d,"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n"
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, _ map[string]any) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, role+role, 0, 1)
		if model == "deepseek-chat" {
			w.(http.Flusher).Flush()
			<-t.Context().Done() // stalls: only the hedge can answer in time
			return
		}
		fmt.Fprint(w, chunk("Hi"), chunk("Hello"), "data: [DONE]\n\n")
	})
	r := benchRouter(t, up.URL, func(r *Router) {
		r.Failover = &Failover{HedgeAfter: caddy.Duration(100 * time.Millisecond), StreamIdleTimeout: caddy.Duration(3 * time.Second)}
	})
	srv := routerServer(t, r)
	resp, body, err := postCounted(t, srv.URL+"/v1/chat/completions", `{"model":"simple_qa","stream":true,"n":2,"messages":[{"role":"user","content":"Hi."}]}`)
	if err != nil || resp.Header.Get("X-LLM-Model") != "gemini-2.5-flash" || !strings.HasSuffix(string(body), "data: [DONE]\n\n") {
		t.Fatalf("%v, model %q, body %q; want the hedge's whole stream", err, resp.Header.Get("X-LLM-Model"), body)
	}
}
