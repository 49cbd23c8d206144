package llmrouter

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// semanticRouter is defaultRouter with an embedding model whose mock
// vectors are hashed words (mockllm.WordVector) and a cache with a
// semantic block.
func semanticRouter(semantic string) string { return semanticRouterOn(defaultRouter, semantic) }

// semanticRouterOn is semanticRouter on another base router.
func semanticRouterOn(base, semantic string) string {
	return base + `
	model embed-words {
		kind embedding
		price 0.02
	}
	cache {
		semantic {
			model embed-words
` + semantic + `
		}
	}
`
}

// newSemanticGateway starts a gateway over semanticRouter with the mock's
// embedding model giving word vectors.
func newSemanticGateway(t *testing.T, semantic string) *gateway {
	t.Helper()
	// {http.llm_router.cache} in a header: expectCache checks it too
	g := newGatewayWith(t, globalOptions, cacheLogSite, semanticRouter(semantic))
	g.primary.Set("embed-words", mockllm.Behavior{WordVectors: 256})
	return g
}

// clientKey is the credential the tests' requests send (the official SDK's
// in sdk.mjs): the cache's default scope.
const clientKey = "Bearer sk-client-key-for-the-gateway"

// ask sends question q (with system prompt system, if any) as clientKey,
// or as the credential given.
func (g *gateway) ask(q, system string, header ...string) (*http.Response, string) {
	g.t.Helper()
	msgs := ""
	if system != "" {
		msgs = fmt.Sprintf(`{"role":"system","content":%q},`, system)
	}
	body := fmt.Sprintf(`{"model":"simple_qa","messages":[%s{"role":"user","content":%q}]}`, msgs, q)
	if len(header) == 0 {
		header = []string{"Authorization", clientKey}
	}
	resp, b := g.post(body, header...)
	if resp.StatusCode != http.StatusOK {
		g.t.Fatalf("%q: status %d: %s", q, resp.StatusCode, b)
	}
	return resp, b
}

func (g *gateway) chatRequests() int { return len(g.primary.RequestsFor("deepseek-chat")) }

// TestSemanticCacheParaphrase: a paraphrase whose similarity reaches the
// threshold is answered from the stored answer without a chat request,
// with the similarity and an Age; one below it is a miss; the stats and
// metrics count the hit, the embedding's cost and the similarity.
func TestSemanticCacheParaphrase(t *testing.T) {
	g := newSemanticGateway(t, "\t\t\tthreshold 0.9")
	before := scrape(t)
	hitsBefore := fetchStats(t).Caches[0].SemanticHits // the store is shared with other tests' configs
	resp, first := g.ask("What is your return policy?", "")
	expectCache(t, resp, "miss")
	chats := g.chatRequests()

	// the same words in another order and with stop words: similarity 1
	resp, b := g.ask("Tell me the return policy please", "")
	expectCache(t, resp, "semantic-hit")
	if got := g.chatRequests(); got != chats {
		t.Errorf("a semantic hit asked a model (%d chat requests, want %d)", got, chats)
	}
	if b != first {
		t.Errorf("served %q, want the stored answer %q", b, first)
	}
	sim, err := strconv.ParseFloat(resp.Header.Get("X-LLM-Cache-Similarity"), 64)
	if err != nil || sim < 0.9 || sim > 1 {
		t.Errorf("X-LLM-Cache-Similarity = %q", resp.Header.Get("X-LLM-Cache-Similarity"))
	}
	if resp.Header.Get("Age") == "" {
		t.Error("a semantic hit without Age")
	}

	// a related question, not the same one: below the threshold
	resp, _ = g.ask("How do I return shoes?", "")
	expectCache(t, resp, "miss")
	if got := g.chatRequests(); got != chats+1 {
		t.Errorf("a question below the threshold: %d chat requests, want %d", got, chats+1)
	}

	after := scrape(t)
	if d := after.delta(before, sel("caddy_llm_router_cache_requests_total", "route", "simple_qa", "result", "semantic_hit")); d != 1 {
		t.Errorf("cache_requests_total{result=semantic_hit} +%v, want 1", d)
	}
	if d := after.delta(before, sel("caddy_llm_router_cache_semantic_similarity_count", "result", "hit")); d != 1 {
		t.Errorf("similarity histogram of hits +%v, want 1", d)
	}
	if d := after.delta(before, sel("caddy_llm_router_cache_semantic_similarity_count", "result", "miss")); d != 1 {
		t.Errorf("similarity histogram of misses +%v, want 1", d)
	}
	// every question was embedded through the router, as embeddings
	// requests of the embedding model
	if d := after.delta(before, sel("caddy_llm_router_requests_total", "route", "", "model", "embed-words", "provider", "primary", "code", "200", "endpoint", "embeddings")); d != 3 {
		t.Errorf("embeddings requests +%v, want 3 (one per question)", d)
	}
	if d := after.delta(before, sel("caddy_llm_router_cache_semantic_embedding_cost_total", "currency", "USD")); d <= 0 {
		t.Errorf("the embeddings cost nothing (+%v)", d)
	}
	st := fetchStats(t)
	if len(st.Caches) != 1 || st.Caches[0].SemanticHits != hitsBefore+1 || len(st.Caches[0].EmbeddingCost) != 1 {
		t.Errorf("stats: %+v", st.Caches)
	}
}

// TestSemanticCacheGuards: at the lowest threshold, a question that
// differs in a number, a code, an address or its negation is never
// served another's answer; each block is counted by guard.
func TestSemanticCacheGuards(t *testing.T) {
	g := newSemanticGateway(t, "\t\t\tthreshold 0.01")
	cases := []struct {
		stored, asked, guard string
	}{
		{"Where is order 456?", "Where is order 123?", "number"},
		{"I received my parcel", "I did not receive my parcel", "negation"},
		{"Tôi đã nhận được hàng", "Tôi chưa nhận được hàng", "negation"},
		{"Is code SALE10 still valid?", "Is code SALE20 still valid?", "code"},
		{"Send the invoice to an@example.com", "Send the invoice to binh@example.com", "email"},
		// numbers written with Unicode number characters that are not
		// decimal digits: superscripts, fractions
		{"What is 10²?", "What is 10³?", "number"},
		{"Add ½ cup of sugar", "Add ¼ cup of sugar", "number"},
		// thousands grouped by a narrow no-break space (French, as
		// software formats numbers) or an apostrophe (Swiss): a
		// million is not a thousand
		{"Can I pay 1\u202f000 € by card?", "Can I pay 1\u202f000\u202f000 € by card?", "number"},
		{"Is CHF 1'000 the limit?", "Is CHF 1'000'000 the limit?", "number"},
		// and by an ordinary space, as French is often typed
		{"Puis-je payer 1 000 € par carte ?", "Puis-je payer 1 000 000 € par carte ?", "number"},
		// a minus sign as word processors (an en dash) and CJK input
		// (a full-width hyphen-minus) write it
		{"Will it be 5 °C in Sa Pa tonight?", "Will it be –5 °C in Sa Pa tonight?", "number"},
		{"Is 3 the answer?", "Is －3 the answer?", "number"},
		// a negation's apostrophe as other keyboards and editors type it
		{"I received my parcel", "I didn´t receive my parcel", "negation"},
		{"The shop is open on Sunday", "The shop isn`t open on Sunday", "negation"},
		{"We ship to Norway", "We donʼt ship to Norway", "negation"},
		{"My card was charged", "My card wasn‘t charged", "negation"},
		// numbers spelt in words, which embed as closely as digits do
		{"Can I return two items?", "Can I return three items?", "number"},
		{"Is the fee ten thousand dong?", "Is the fee ten million dong?", "number"},
		{"Tôi mua hai cái áo", "Tôi mua ba cái áo", "number"},
		// the days and months of a date in words: opening hours, the
		// FAQ of every shop
		{"Are you open on Sunday?", "Are you open on Monday?", "number"},
		{"Do you deliver in December?", "Do you deliver in January?", "number"},
		{"Will my parcel arrive today?", "Will my parcel arrive tomorrow?", "number"},
	}
	for i, c := range cases {
		system := "case " + strconv.Itoa(i) // a namespace of its own
		g.ask(c.stored, system)
		before := scrape(t)
		chats := g.chatRequests()
		resp, _ := g.ask(c.asked, system)
		expectCache(t, resp, "miss")
		if got := g.chatRequests(); got != chats+1 {
			t.Errorf("%q after %q: not answered by a model", c.asked, c.stored)
		}
		after := scrape(t)
		if d := after.delta(before, sel("caddy_llm_router_cache_semantic_guard_blocks_total", "guard", c.guard)); d != 1 {
			t.Errorf("%q after %q: guard %s +%v, want 1", c.asked, c.stored, c.guard, d)
		}
		if d := after.delta(before, sel("caddy_llm_router_cache_requests_total", "route", "simple_qa", "result", "semantic_blocked")); d != 1 {
			t.Errorf("%q after %q: cache_requests_total{result=semantic_blocked} +%v, want 1", c.asked, c.stored, d)
		}
	}
	// and the guards let through what differs only in words
	g.ask("How long does delivery take?", "case words")
	resp, _ := g.ask("How long does the delivery take please?", "case words")
	expectCache(t, resp, "semantic-hit")
}

// TestSemanticCacheNamespaces: only the last user message is compared by
// meaning; another system prompt, another client (the default scope) or
// other parameters never hit.
func TestSemanticCacheNamespaces(t *testing.T) {
	g := newSemanticGateway(t, "\t\t\tthreshold 0.9")
	g.ask("What is your return policy?", "")
	for name, ask := range map[string]func() *http.Response{
		"another system prompt": func() *http.Response {
			resp, _ := g.ask("Tell me the return policy please", "You are a pirate.")
			return resp
		},
		"another client": func() *http.Response {
			resp, _ := g.ask("Tell me the return policy please", "", "Authorization", "Bearer sk-another-client")
			return resp
		},
		"other parameters": func() *http.Response {
			resp, b := g.post(`{"model":"simple_qa","temperature":0.2,"messages":[{"role":"user","content":"Tell me the return policy please"}]}`, "Authorization", clientKey)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			return resp
		},
	} {
		chats := g.chatRequests()
		expectCache(t, ask(), "miss")
		if g.chatRequests() != chats+1 {
			t.Errorf("%s: not answered by a model", name)
		}
	}
	// and the same question in the original namespace still hits
	resp, _ := g.ask("Tell me the return policy please", "")
	expectCache(t, resp, "semantic-hit")
}

// TestSemanticCacheEmbeddingFails: an embedding that fails, or that takes
// longer than lookup_timeout, makes the request an ordinary miss,
// answered by a model.
func TestSemanticCacheEmbeddingFails(t *testing.T) {
	// a store of its own: failures in a row make lookups rest (TestSemanticEmbeddingsRest)
	g := newSemanticGateway(t, "\t\t\tthreshold 0.9\n\t\t\tlookup_timeout 100ms\n\t\t\tmax_entries 4330")
	g.ask("What is your return policy?", "")
	for _, c := range []struct {
		name, paraphrase string
		b                mockllm.Behavior
	}{
		{"error", "Tell me the return policy please", mockllm.Behavior{Status: 500}},
		{"timeout", "Return policy please, tell me", mockllm.Behavior{Latency: 10 * time.Second, WordVectors: 256}},
	} {
		name := c.name
		g.primary.Set("embed-words", c.b)
		before := scrape(t)
		chats := g.chatRequests()
		resp, body := g.ask(c.paraphrase, "")
		expectCache(t, resp, "miss")
		if g.chatRequests() != chats+1 || answerText(t, body) == "" {
			t.Errorf("%s: not answered by a model: %s", name, body)
		}
		after := scrape(t)
		if d := after.delta(before, sel("caddy_llm_router_cache_semantic_embedding_failures_total")); d != 1 {
			t.Errorf("%s: embedding failures +%v, want 1", name, d)
		}
	}
}

// TestSemanticCacheBudgetRefusalRestsNoOne: a client's own budget
// refusing the embedding of its question is no failure of the embedding
// model. That client's requests are ordinary misses (with no embedding
// asked); the lookups of every other client go on: three such refusals do
// not make the store they share rest.
func TestSemanticCacheBudgetRefusalRestsNoOne(t *testing.T) {
	global, _ := withStorage(t, globalOptions)
	g := newGatewayWith(t, global, cacheLogSite, semanticRouterOn(budgetRouter, "\t\t\tthreshold 0.9\n\t\t\tmax_entries 4391")+`
	budget embeddings_per_client {
		limit 0.00001 per day
		match embed-words
		key {http.request.header.Authorization}
	}
	budget_sync 1h
`)
	g.primary.Set("embed-words", mockllm.Behavior{WordVectors: 256})
	done := requestsDone(t)
	// client B (clientKey) asks a question: stored with its vector
	g.ask("What is your return policy?", "")
	waitFor(t, done, "a request to be counted")
	// client A spends its embeddings budget on embeddings of its own
	const clientA = "Bearer sk-client-a-spent-its-embeddings"
	resp, body := g.postPath("/v1/embeddings", `{"model":"embed-words","input":"`+strings.Repeat("word ", 3000)+`"}`, "Authorization", clientA)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("client A's embeddings: %d %s", resp.StatusCode, body)
	}
	waitFor(t, done, "a request to be counted")
	// client A asks three questions: its budget refuses their embeddings
	embeddings := len(g.primary.RequestsFor("embed-words"))
	before := scrape(t)
	for i := range 3 {
		resp, _ := g.ask(fmt.Sprintf("Question %c about shipping", 'a'+i), "", "Authorization", clientA)
		expectCache(t, resp, "miss")
	}
	after := scrape(t)
	if n := len(g.primary.RequestsFor("embed-words")) - embeddings; n != 0 {
		t.Errorf("%d embeddings asked past client A's spent budget, want 0", n)
	}
	if d := after.delta(before, sel("caddy_llm_router_cache_semantic_embedding_failures_total")); d != 3 {
		t.Errorf("embedding failures +%v, want 3 (lookups that got no vector)", d)
	}
	// client B's paraphrase: its own budget has room
	resp, _ = g.ask("Tell me the return policy please", "")
	expectCache(t, resp, "semantic-hit")
	if d := scrape(t).delta(after, sel("caddy_llm_router_cache_semantic_lookups_skipped_total")); d != 0 {
		t.Errorf("lookups skipped +%v, want 0: client A's budget refusals made the semantic cache rest for everyone", d)
	}
}

// TestSemanticLookupAbandonedRestsNoOne: a client that leaves while its
// question is being embedded (over HTTP/2, where leaving cancels its
// request at once) ends that lookup; it is no failure of the embedding
// model, and three such clients do not make every client's lookups rest.
func TestSemanticLookupAbandonedRestsNoOne(t *testing.T) {
	mock := mockllm.New()
	srv := httptest.NewServer(mock)
	defer srv.Close()
	mock.Set("embed-words", mockllm.Behavior{Latency: time.Minute})
	r := benchRouter(t, srv.URL, func(r *Router) {
		r.Models = append(r.Models, &Model{Name: "embed-words", Kind: "embedding"})
		r.Cache = &Cache{Semantic: &SemanticCache{Model: "embed-words", LookupTimeout: caddy.Duration(time.Minute)}}
	})
	for i := range semanticFailuresToRest {
		ctx, cancel := context.WithCancel(context.Background())
		req := h2Request(ctx, fmt.Sprintf(`{"model":"simple_qa","messages":[{"role":"user","content":"Question %d about shipping"}]}`, i))
		req.Header.Set("Authorization", clientKey)
		go func() {
			<-mock.Arrived() // the embedding model has the question
			cancel()
		}()
		_ = r.ServeHTTP(httptest.NewRecorder(), req, nil)
		cancel()
	}
	if st := r.cache.semantic.store; st.resting(now()) || st.failedInARow.Load() != 0 {
		t.Errorf("%d clients that left during their embeddings: resting %v, failures in a row %d; want no rest and none counted",
			semanticFailuresToRest, st.resting(now()), st.failedInARow.Load())
	}
}

// TestSemanticCacheStreamSDK: a streamed paraphrase is served the stored
// answer replayed as SSE, which the official SDK reads whole (usage
// included, as it asked).
func TestSemanticCacheStreamSDK(t *testing.T) {
	g := newSemanticGateway(t, "\t\t\tthreshold 0.9")
	_, first := g.ask("What is your return policy?", "")
	chats := g.chatRequests()
	var got sdkChatStream
	runSDK(t, "chat-stream", &got, "QUESTION=Tell me the return policy please")
	if got.Error != nil {
		t.Fatalf("the SDK raised %+v", *got.Error)
	}
	if g.chatRequests() != chats {
		t.Errorf("the streamed paraphrase asked a model")
	}
	if got.Text != answerText(t, first) || got.FinishReason == nil || *got.FinishReason != "stop" || len(got.Usage) == 0 {
		t.Errorf("the SDK read %+v, want the stored answer %q with its usage", got, answerText(t, first))
	}
}

// TestSemanticCacheStaleIfError: when every candidate fails, a
// paraphrase's expired answer is served as stale, as an exact one is.
func TestSemanticCacheStaleIfError(t *testing.T) {
	cfg := strings.Replace(semanticRouter("\t\t\tthreshold 0.9"), "\tcache {\n", "\tcache {\n\t\tttl 1m\n\t\tstale_if_error 1h\n", 1)
	g := newGateway(t, cfg)
	g.primary.Set("embed-words", mockllm.Behavior{WordVectors: 256})
	_, first := g.ask("What is your return policy?", "")
	advanceClock(t, 2*time.Minute)
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 503, Times: 1})
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 503, Times: 1})
	resp, b := g.ask("Tell me the return policy please", "")
	expectCache(t, resp, "stale")
	if b != first || !strings.Contains(resp.Header.Get("Warning"), "all models unavailable") {
		t.Errorf("served %q with Warning %q, want the stored answer %q", b, resp.Header.Get("Warning"), first)
	}
}

// TestSemanticCacheSurvivesReload: the stored questions outlive a reload
// that keeps the handler's config, and, in a named store, one that keeps
// the embedding model and max_entries (here the threshold changes, and
// applies at once).
func TestSemanticCacheSurvivesReload(t *testing.T) {
	named := func(semantic string) string {
		return strings.Replace(semanticRouter(semantic), "\tcache {\n", "\tcache {\n\t\tstore semantic_reload\n", 1)
	}
	for _, tc := range []struct{ name, before, after, site string }{
		{"own store", semanticRouter("\t\t\tthreshold 0.9"), semanticRouter("\t\t\tthreshold 0.9"), "\theader X-Reloaded 1"},
		{"named store", named("\t\t\tthreshold 0.9"), named("\t\t\tthreshold 0.85"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGateway(t, tc.before)
			g.primary.Set("embed-words", mockllm.Behavior{WordVectors: 256})
			g.ask("What is your return policy?", "")
			g.reloadWith(globalOptions, tc.site, tc.after)
			chats := g.chatRequests()
			resp, _ := g.ask("Tell me the return policy please", "")
			expectCache(t, resp, "semantic-hit")
			if g.chatRequests() != chats {
				t.Error("after the reload, the paraphrase asked a model")
			}
		})
	}
}

// TestSemanticCacheNextCandidate: when a guard refuses the closest stored
// question (another order number in the same words), a less close one
// that passes the guards is served.
func TestSemanticCacheNextCandidate(t *testing.T) {
	const (
		other = "Where is order 123?"
		same  = "Where is order 456? It was shipped last week by express courier from the Hanoi warehouse to Saigon"
		asked = "Where is order 456?"
	)
	cos := func(a, b string) float64 {
		x, y := mockllm.WordVector(a, 256), mockllm.WordVector(b, 256)
		s := 0.0
		for i := range x {
			s += x[i] * y[i]
		}
		return s // unit vectors
	}
	if co, cs := cos(asked, other), cos(asked, same); !(co > cs && cs > 0.3) {
		t.Fatalf("the premise fails: similarity to the other order %.3f, to the same one %.3f", co, cs)
	}
	g := newSemanticGateway(t, "\t\t\tthreshold 0.3")
	_, want := g.ask(same, "")
	g.ask(other, "")
	chats := g.chatRequests()
	resp, b := g.ask(asked, "")
	expectCache(t, resp, "semantic-hit")
	if g.chatRequests() != chats || b != want {
		t.Errorf("served %q, want the answer stored for order 456 (%q)", b, want)
	}
}

// TestSemanticCacheForwardedHeader: a client header that forward_header
// opens selects the namespace, as a key_header does: a paraphrase sent
// with another value is answered by a model, one with the same value is
// served the stored answer.
func TestSemanticCacheForwardedHeader(t *testing.T) {
	g := newGatewayWith(t, globalOptions, cacheLogSite, semanticRouterOn(defaultRouter+"\tforward_header X-Custom\n", "\t\t\tthreshold 0.9"))
	g.primary.Set("embed-words", mockllm.Behavior{WordVectors: 256})
	resp, _ := g.ask("What is your return policy?", "", "Authorization", clientKey, "X-Custom", "a")
	expectCache(t, resp, "miss")
	chats := g.chatRequests()
	resp, _ = g.ask("Tell me the return policy please", "", "Authorization", clientKey, "X-Custom", "b")
	expectCache(t, resp, "miss")
	if got := g.chatRequests(); got != chats+1 {
		t.Errorf("another X-Custom: %d chat requests, want %d", got, chats+1)
	}
	resp, _ = g.ask("Tell me the return policy please", "", "Authorization", clientKey, "X-Custom", "a", "X-Request-Id", "req-2")
	expectCache(t, resp, "semantic-hit")
}

// TestSemanticStreamNotFromALossyJSONAnswer: a paraphrase streamed whose
// stored answer cannot be replayed as a stream (it has a member a stream
// would lose) is a miss answered by a model, without the similarity of a
// hit it did not get.
func TestSemanticStreamNotFromALossyJSONAnswer(t *testing.T) {
	g := newSemanticGateway(t, "\t\t\tthreshold 0.9")
	g.primary.Set("deepseek-chat", mockllm.Behavior{Times: 1,
		Body: `{"id":"x","object":"chat.completion","created":1,"model":"m","citations":["https://example.com/returns"],"choices":[{"index":0,"message":{"role":"assistant","content":"Yes"},"finish_reason":"stop"}]}`})
	g.ask("What is the coat return policy?", "lossy")
	chats := g.chatRequests()
	body := `{"model":"simple_qa","stream":true,"messages":[{"role":"system","content":"lossy"},{"role":"user","content":"Tell me the coat return policy please"}]}`
	resp, _ := g.post(body, "Authorization", clientKey)
	expectCache(t, resp, "miss")
	if got := g.chatRequests(); got != chats+1 {
		t.Errorf("the paraphrase was not answered by a model (%d chat requests, want %d)", got, chats+1)
	}
	if s := resp.Header.Get("X-LLM-Cache-Similarity"); s != "" {
		t.Errorf("a miss with X-LLM-Cache-Similarity %q", s)
	}
}
