package llmrouter

// The semantic cache against odd upstreams, odd numbers and races: each
// test holds one behaviour an adversarial review found missing.

import (
	"encoding/binary"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
	"github.com/llmrouter/caddy-llm-router/internal/openai"
	"github.com/llmrouter/caddy-llm-router/internal/semantic"
)

// TestSemanticEmbeddingDimensionsChange: the index is kept across reloads
// by the router's model name. When that model's vectors change length (an
// upstream swapped under the name, a dimensions setting), the stored
// questions are dropped for an index of the new length, so paraphrases
// hit again, rather than every later vector being refused in silence.
func TestSemanticEmbeddingDimensionsChange(t *testing.T) {
	// max_entries of its own: a fresh store, whatever ran before
	g := newSemanticGateway(t, "\t\t\tthreshold 0.9\n\t\t\tmax_entries 4321")
	g.primary.Set("embed-words", mockllm.Behavior{WordVectors: 128}) // the first upstream
	g.ask("How long does delivery take?", "")

	g.primary.Set("embed-words", mockllm.Behavior{WordVectors: 256}) // the upstream now
	before := scrape(t)
	g.ask("What is your return policy?", "")
	chats := g.chatRequests()
	resp, _ := g.ask("Tell me the return policy please", "")
	after := scrape(t)
	if g.chatRequests() != chats {
		t.Errorf("after the embedding model's dimensions changed, a paraphrase (similarity 1) asked a model: X-LLM-Cache %q", resp.Header.Get("X-LLM-Cache"))
	}
	expectCache(t, resp, "semantic-hit")
	if d := after.delta(before, sel("caddy_llm_router_cache_semantic_embedding_failures_total")); d == 0 {
		t.Logf("and nothing counted it: embedding failures +%v while both questions were embedded (and paid for)", d)
	}
}

// TestEmbeddingIndexPastInt64: an embeddings answer whose "index" is past
// int64 is an error, never a panic (a wrapped index was negative).
func TestEmbeddingIndexPastInt64(t *testing.T) {
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("EmbeddingVector panicked on an index past int64: %v", r)
		}
	}()
	if _, err := openai.EmbeddingVector([]byte(overflowingEmbedding)); err == nil {
		t.Error("an embedding answer with index 9223372036854775808 was read without error")
	}
}

const overflowingEmbedding = `{"object":"list","data":[{"object":"embedding","index":9223372036854775808,"embedding":"AACAPw=="}],"model":"m","usage":{"prompt_tokens":1,"total_tokens":1}}`

// TestSemanticOddEmbeddingIsAMiss: the same answer through the gateway
// makes the chat request a plain miss, answered by a model.
func TestSemanticOddEmbeddingIsAMiss(t *testing.T) {
	g := newSemanticGateway(t, "\t\t\tthreshold 0.9\n\t\t\tmax_entries 4322")
	g.primary.Set("embed-words", mockllm.Behavior{Body: overflowingEmbedding})
	resp, body, err := g.postRaw("/v1/chat/completions",
		`{"model":"simple_qa","messages":[{"role":"user","content":"What is your return policy?"}]}`,
		"Authorization", clientKey)
	switch {
	case err != nil:
		t.Errorf("the chat request failed (the handler panicked?): %v", err)
	case resp.StatusCode != http.StatusOK:
		t.Errorf("status %d, want 200 (a plain miss): %s", resp.StatusCode, body)
	}
}

// TestSemanticHugeEmbeddingIsAMiss: an embedding model that answers with
// a vector far longer than any embedding model's (a misconfigured or
// broken upstream: here a million dimensions, 4 MiB a question) makes the
// lookup an ordinary miss, and nothing of it is kept: max_entries such
// vectors would hold gigabytes, when the index is sized at a few KB a
// question.
func TestSemanticHugeEmbeddingIsAMiss(t *testing.T) {
	mock := mockllm.New()
	srv := httptest.NewServer(mock)
	defer srv.Close()
	mock.Set("embed-words", mockllm.Behavior{WordVectors: 1 << 20})
	r := benchRouter(t, srv.URL, func(r *Router) {
		r.Models = append(r.Models, &Model{Name: "embed-words", Kind: "embedding"})
		r.Cache = &Cache{Semantic: &SemanticCache{Model: "embed-words", MaxEntries: 4325, LookupTimeout: caddy.Duration(time.Minute)}}
	})
	w := serveOnce(r, `{"model":"simple_qa","messages":[{"role":"user","content":"What is your return policy?"}]}`)
	if w.Code != http.StatusOK {
		t.Fatalf("%d %s, want the model's answer", w.Code, w.Body)
	}
	if x := r.cache.semantic.store.index.Load(); x.Len() != 0 || x.Dims() != 0 {
		t.Errorf("a vector of %d dimensions was kept: the index holds %d of %d dimensions", 1<<20, x.Len(), x.Dims())
	}
}

// TestSemanticNumberOrder: the same numbers in another order are another
// question ("2 to the power of 10"), which embeds almost identically.
func TestSemanticNumberOrder(t *testing.T) {
	g := newSemanticGateway(t, "\t\t\tthreshold 0.95\n\t\t\tmax_entries 4323")
	g.ask("What is 2 to the power of 10?", "case order") // 1024
	chats := g.chatRequests()
	resp, _ := g.ask("What is 10 to the power of 2?", "case order") // 100
	if g.chatRequests() == chats {
		t.Errorf("\"10 to the power of 2\" was served the answer to \"2 to the power of 10\": X-LLM-Cache %q, similarity %s",
			resp.Header.Get("X-LLM-Cache"), resp.Header.Get("X-LLM-Cache-Similarity"))
	}
}

// TestSemanticIdentifierOrder: the same codes, e-mail addresses or URLs
// in another order are another question, as numbers are ("from account
// AC12 to AC34" is not "from AC34 to AC12"), and embed almost
// identically (here exactly: bags of words).
func TestSemanticIdentifierOrder(t *testing.T) {
	g := newSemanticGateway(t, "\t\t\tthreshold 0.95\n\t\t\tmax_entries 4324")
	for _, c := range [][2]string{
		{"Can I move my booking from seat A12 to seat B34?", "Can I move my booking from seat B34 to seat A12?"},
		{"Forward the invoice from alice@example.com to bob@example.com", "Forward the invoice from bob@example.com to alice@example.com"},
		{"Redirect https://shop.example.com/old to https://shop.example.com/new", "Redirect https://shop.example.com/new to https://shop.example.com/old"},
	} {
		g.ask(c[0], "case order")
		chats := g.chatRequests()
		resp, _ := g.ask(c[1], "case order")
		if g.chatRequests() == chats {
			t.Errorf("%q was served the answer to %q: X-LLM-Cache %q, similarity %s",
				c[1], c[0], resp.Header.Get("X-LLM-Cache"), resp.Header.Get("X-LLM-Cache-Similarity"))
		}
	}
}

// TestSemanticRememberRacesLookups: a lookup that runs while a question is
// stored never takes the new vector for one whose metadata was evicted
// (the metadata is stored first).
func TestSemanticRememberRacesLookups(t *testing.T) {
	const n = 20000
	s, err := newSemanticStore(2 * n)
	if err != nil {
		t.Fatal(err)
	}
	vec := []float32{1, 0.5, 0.25, 0.125}
	var current atomic.Uint64 // the namespace being stored into
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var buf [semanticCandidates]semanticMatch
		for {
			select {
			case <-stop:
				return
			default:
			}
			s.lookup(&semanticQuestion{ns: current.Load(), vec: vec}, buf[:0])
		}
	}()
	for i := 1; i <= n; i++ {
		current.Store(uint64(i))
		var key answerKey
		binary.LittleEndian.PutUint64(key[:8], uint64(i))
		s.remember(&semanticQuestion{ns: uint64(i), vec: vec}, key)
	}
	close(stop)
	<-done
	if got := s.index.Load().Len(); got != n {
		t.Errorf("%d questions remembered, %d vectors left in the index: %d dropped by a concurrent lookup", n, got, n-got)
	}
}

// TestSemanticBudgetRefusalCountedOnce: a client past a budget is refused
// once, and counted once: the router's own embedding request refused on
// its way is not a second refusal.
func TestSemanticBudgetRefusalCountedOnce(t *testing.T) {
	global, _ := withStorage(t, globalOptions)
	g := newGatewayWith(t, global, "", semanticRouterOn(budgetRouter, "\t\t\tthreshold 0.9")+`
	budget review_daily {
		limit 0.03 per day
	}
	budget_sync 1h
`)
	g.primary.Set("embed-words", mockllm.Behavior{WordVectors: 256})
	done := requestsDone(t)
	for _, q := range []string{"What is your return policy?", "How long does delivery take?"} {
		g.ask(q, "")
		waitFor(t, done, "a request to be counted")
	}
	// 0.034 spent: past the limit, refused
	before := scrape(t)
	resp, body := g.post(`{"model":"simple_qa","messages":[{"role":"user","content":"Do you ship abroad?"}]}`, "Authorization", clientKey)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("past the limit: %d %s", resp.StatusCode, body)
	}
	after := scrape(t)
	if d := after.delta(before, sel("caddy_llm_router_budget_actions_total", "budget", "review_daily", "action", "refused")); d != 1 {
		t.Errorf("one refused client request: budget_actions_total{refused} +%v, want 1", d)
	}
}

// TestSemanticLookupSpendsNothingForARefusedRequest: a request its
// budget refuses gets no semantic lookup, so no embedding is bought for
// it, even when the budget does not cover the embedding model.
func TestSemanticLookupSpendsNothingForARefusedRequest(t *testing.T) {
	global, _ := withStorage(t, globalOptions)
	g := newGatewayWith(t, global, "", semanticRouterOn(budgetRouter, "\t\t\tthreshold 0.9\n\t\t\tmax_entries 4325")+`
	budget chat_daily {
		limit 0.01 per day
		match simple_qa
	}
	budget_sync 1h
`)
	g.primary.Set("embed-words", mockllm.Behavior{WordVectors: 256})
	done := requestsDone(t)
	g.ask("What is your return policy?", "")
	waitFor(t, done, "a request to be counted")
	embeddings := len(g.primary.RequestsFor("embed-words"))
	if embeddings == 0 {
		t.Fatal("the premise fails: no embedding for the first question")
	}
	resp, body := g.post(`{"model":"simple_qa","messages":[{"role":"user","content":"Do you ship abroad?"}]}`, "Authorization", clientKey)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("past the limit: %d %s", resp.StatusCode, body)
	}
	if n := len(g.primary.RequestsFor("embed-words")); n != embeddings {
		t.Errorf("a refused request bought %d embeddings", n-embeddings)
	}
}

// TestSemanticQuestionRefusedRestsNoOne: an embedding model that refuses
// a question as the client's error (a 4xx it relays: a question longer
// than a 512-token model takes, 413 from a text-embeddings-inference
// server) has not failed: the router's request is the same every time
// but for the question. That client's lookups are misses; three such
// questions in a row (any client's, a long one in a language the model
// tokenizes finely) do not make the lookups of every client rest.
func TestSemanticQuestionRefusedRestsNoOne(t *testing.T) {
	g := newSemanticGateway(t, "\t\t\tthreshold 0.9\n\t\t\tmax_entries 4332")
	g.ask("What is your return policy?", "")
	g.primary.Set("embed-words", mockllm.Behavior{Status: http.StatusRequestEntityTooLarge})
	const clientA = "Bearer sk-client-a-asks-long-questions"
	for i := range semanticFailuresToRest {
		resp, _ := g.ask(fmt.Sprintf("Question %c, a long one", 'a'+i), "", "Authorization", clientA)
		expectCache(t, resp, "miss")
	}
	g.primary.Set("embed-words", mockllm.Behavior{WordVectors: 256})
	before := scrape(t)
	resp, _ := g.ask("Tell me the return policy please", "")
	expectCache(t, resp, "semantic-hit")
	if d := scrape(t).delta(before, sel("caddy_llm_router_cache_semantic_lookups_skipped_total")); d != 0 {
		t.Errorf("lookups skipped +%v, want 0: one client's refused questions made the semantic cache rest for everyone", d)
	}
}

// TestSemanticLateEmbeddingCharged: an embedding the router abandons at
// lookup_timeout has reached the provider, which bills it: it is charged
// (estimated) and counted in the embedding cost that the net saving
// subtracts.
func TestSemanticLateEmbeddingCharged(t *testing.T) {
	g := newSemanticGateway(t, "\t\t\tthreshold 0.9\n\t\t\tlookup_timeout 100ms\n\t\t\tmax_entries 4324")
	g.primary.Set("embed-words", mockllm.Behavior{Latency: 2 * time.Second, WordVectors: 256})
	before := scrape(t)
	g.ask("Do you ship to Da Nang?", "")
	after := scrape(t)
	if n := len(g.primary.RequestsFor("embed-words")); n == 0 {
		t.Fatal("the premise fails: no embedding request reached the provider")
	}
	if d := after.delta(before, sel("caddy_llm_router_cache_semantic_embedding_cost_total", "currency", "USD")); d <= 0 {
		t.Errorf("an embedding sent to the provider and abandoned at lookup_timeout counted no cost (+%v)", d)
	}
}

// TestSemanticLeadingDecimalPoint: ".5" is the number 0.5, never 5: "take
// .5 mg" is not served the answer to "take 5 mg".
func TestSemanticLeadingDecimalPoint(t *testing.T) {
	a, b := "Is it safe to take 5 mg of melatonin?", "Is it safe to take .5 mg of melatonin?"
	g := newSemanticGateway(t, "\t\t\tthreshold 0.95\n\t\t\tmax_entries 4325")
	g.ask(a, "case decimal")
	chats := g.chatRequests()
	resp, _ := g.ask(b, "case decimal")
	if g.chatRequests() == chats {
		t.Errorf("%q was served the answer to %q: X-LLM-Cache %q, similarity %s", b, a,
			resp.Header.Get("X-LLM-Cache"), resp.Header.Get("X-LLM-Cache-Similarity"))
	}
	if _, ok := semantic.Check(semantic.Extract(a), semantic.Extract(b)); ok {
		t.Errorf("the guards find the same facts in %q and %q: %+v / %+v", a, b, semantic.Extract(a), semantic.Extract(b))
	}
}

// TestSemanticEmbeddingsRest: after three embeddings in a row failed or
// were late, lookups skip the embedding (no wait of lookup_timeout, no
// abandoned embedding billed) for a second, then probe; a probe that
// fails rests twice as long, one that works ends the rest.
func TestSemanticEmbeddingsRest(t *testing.T) {
	g := newSemanticGateway(t, "\t\t\tthreshold 0.9\n\t\t\tlookup_timeout 50ms\n\t\t\tmax_entries 4331")
	g.primary.Set("embed-words", mockllm.Behavior{Latency: 10 * time.Second, WordVectors: 256})
	embeddings := func() int { return len(g.primary.RequestsFor("embed-words")) }
	before := scrape(t)
	for i := range 3 {
		g.ask(fmt.Sprintf("Question %c about shipping", 'a'+i), "")
	}
	if n := embeddings(); n != 3 {
		t.Fatalf("%d embedding requests, want 3", n)
	}
	resp, _ := g.ask("Question d about shipping", "")
	expectCache(t, resp, "miss")
	if n := embeddings(); n != 3 {
		t.Errorf("resting: an embedding was asked (%d requests, want 3)", n)
	}
	if d := scrape(t).delta(before, sel("caddy_llm_router_cache_semantic_lookups_skipped_total")); d != 1 {
		t.Errorf("lookups_skipped_total +%v, want 1", d)
	}

	advanceClock(t, 1100*time.Millisecond) // the first rest is over: a probe
	g.ask("Question e about shipping", "")
	if n := embeddings(); n != 4 {
		t.Errorf("after the rest: %d embedding requests, want 4 (a probe)", n)
	}
	advanceClock(t, 1100*time.Millisecond) // the failed probe rests 2 s
	g.ask("Question f about shipping", "")
	if n := embeddings(); n != 4 {
		t.Errorf("1.1 s into the second rest: %d embedding requests, want 4", n)
	}

	g.primary.Set("embed-words", mockllm.Behavior{WordVectors: 256})
	advanceClock(t, time.Second)
	g.ask("What is your return policy?", "") // a probe that works
	resp, _ = g.ask("Tell me the return policy please", "")
	expectCache(t, resp, "semantic-hit")
}
