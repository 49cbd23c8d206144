package llmrouter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
	"github.com/llmrouter/caddy-llm-router/internal/openai"
)

// cacheRouter is defaultRouter with a response cache (its own size, so
// that no other test's answers are in it).
func cacheRouter(block string) string {
	return defaultRouter + "\tcache {\n" + block + "\n\t}\n"
}

// question is a chat body asking q, with extra members.
func question(q string, stream bool, extra string) string {
	b := `{"model":"simple_qa","messages":[{"role":"user","content":` + fmt.Sprintf("%q", q) + `}]` + extra
	if stream {
		b += `,"stream":true`
	}
	return b + "}"
}

// answerText is the assistant text of a chat answer, JSON or stream.
func answerText(t *testing.T, body string) string {
	t.Helper()
	if strings.HasPrefix(body, "data:") {
		var text strings.Builder
		for _, d := range sseData(body) {
			if d == "[DONE]" {
				continue
			}
			var ch struct {
				Choices []struct {
					Delta struct {
						Content string `json:"content"`
					} `json:"delta"`
				} `json:"choices"`
			}
			if err := json.Unmarshal([]byte(d), &ch); err != nil {
				t.Fatalf("chunk %q: %v", d, err)
			}
			for _, c := range ch.Choices {
				text.WriteString(c.Delta.Content)
			}
		}
		return text.String()
	}
	var c struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal([]byte(body), &c); err != nil || len(c.Choices) == 0 {
		t.Fatalf("not a chat completion (%v): %s", err, body)
	}
	return c.Choices[0].Message.Content
}

func expectCache(t *testing.T, resp *http.Response, want string) {
	t.Helper()
	if got := resp.Header.Get("X-LLM-Cache"); got != want {
		t.Errorf("X-LLM-Cache = %q, want %q", got, want)
	}
	if got, ok := resp.Header["X-Cache-Log"]; ok && got[0] != want {
		t.Errorf("{http.llm_router.cache} = %q, want %q", got[0], want)
	}
}

// cacheLogSite reports the cache placeholder in a header, for expectCache.
const cacheLogSite = "\theader >X-Cache-Log {http.llm_router.cache}\n"

// TestCacheHitsJSONAndStream: the second identical question is answered
// from the cache, JSON or stream, whatever form the first one had; the key
// ignores formatting, the top level's member order and user, not the
// question.
func TestCacheHitsJSONAndStream(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 1001KB\n\t\tkey_header X-Team"))
	done := requestsDone(t)
	before := scrape(t)
	upstream := func() int { return len(g.primary.RequestsFor("deepseek-chat")) }

	resp, first := g.post(question("Where is my order?", false, ""))
	expectModel(t, resp, first, "deepseek-v3.2", "primary", 1)
	expectCache(t, resp, "miss")
	resp, again := g.post(question("Where is my order?", false, ""))
	expectModel(t, resp, again, "deepseek-v3.2", "primary", 0)
	expectCache(t, resp, "hit")
	if again != first || resp.Header.Get("Age") != "0" || upstream() != 1 {
		t.Errorf("hit: body equal %v, Age %q, upstream requests %d", again == first, resp.Header.Get("Age"), upstream())
	}
	// the same question, written otherwise, from another user
	resp, _ = g.post(`{ "messages" : [ { "role":"user", "content":"Where is my order?" } ], "user":"shopper-7", "model":"simple_qa" }`)
	expectCache(t, resp, "hit")
	// streamed: replayed from the JSON answer, usage only when asked for
	resp, body := g.post(question("Where is my order?", true, ""))
	expectCache(t, resp, "hit")
	if answerText(t, body) != answerText(t, first) || !strings.HasSuffix(body, "data: [DONE]\n\n") || strings.Contains(body, `"usage"`) {
		t.Errorf("stream replay of a JSON answer: %q", body)
	}
	resp, body = g.post(question("Where is my order?", true, `,"stream_options":{"include_usage":true}`))
	expectCache(t, resp, "hit")
	if !strings.Contains(body, `"prompt_tokens"`) {
		t.Errorf("a client that asked for usage got none: %q", body)
	}
	if upstream() != 1 {
		t.Fatalf("%d upstream requests, want 1", upstream())
	}

	// a streamed answer serves a JSON request
	resp, streamed := g.post(question("Do you ship to Lyon?", true, ""))
	expectCache(t, resp, "miss")
	resp, body = g.post(question("Do you ship to Lyon?", false, ""))
	expectCache(t, resp, "hit")
	var c struct {
		Object  string `json:"object"`
		Choices []struct {
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if json.Unmarshal([]byte(body), &c); c.Object != "chat.completion" || answerText(t, body) != answerText(t, streamed) ||
		len(c.Choices) != 1 || c.Choices[0].FinishReason != "stop" || c.Usage.CompletionTokens != 10 {
		t.Errorf("JSON from a cached stream: %s", body)
	}

	// another question, another temperature, another key header: misses
	for _, b := range []string{
		question("Where is my parcel?", false, ""),
		question("Where is my order?", false, `,"temperature":0.2`),
	} {
		resp, _ = g.post(b)
		expectCache(t, resp, "miss")
	}
	resp, _ = g.post(question("Where is my order?", false, ""), "X-Team", "b")
	expectCache(t, resp, "miss")

	for range 10 {
		waitFor(t, done, "a request to be counted")
	}
	after := scrape(t)
	for result, want := range map[string]float64{"hit": 5, "miss": 5} {
		if d := after.delta(before, sel("caddy_llm_router_cache_requests_total", "route", "simple_qa", "result", result)); d != want {
			t.Errorf("cache_requests_total{%s} +%v, want %v", result, d, want)
		}
	}
	// four hits of the first answer, one of the Lyon one, each at the
	// price of its tokens (10 completion tokens each)
	cost := func(q string) float64 {
		return (float64(mockllm.PromptTokens([]byte(question(q, false, ""))))*0.28 + 10*0.42) / 1e6
	}
	want := 4*cost("Where is my order?") + cost("Do you ship to Lyon?")
	if d := after.delta(before, sel("caddy_llm_router_cache_saved_cost_total", "currency", "USD")); math.Abs(d-want) > 1e-12 {
		t.Errorf("saved +%v, want %v", d, want)
	}
	if after[sel("caddy_llm_router_cache_entries")] < 5 || after[sel("caddy_llm_router_cache_bytes")] <= 0 {
		t.Errorf("cache gauges: entries %v bytes %v", after[sel("caddy_llm_router_cache_entries")], after[sel("caddy_llm_router_cache_bytes")])
	}
	var cs *CacheStats
	for _, c := range fetchStats(t).Caches {
		if c.MaxBytes == 1_001_000 {
			cs = &c
		}
	}
	if cs == nil || cs.Hits != 5 || cs.Misses != 5 || cs.HitRatioHuman != "50%" || len(cs.Saved) != 1 {
		t.Errorf("cache stats %+v", cs)
	}
}

// TestCacheControl: no-cache skips the lookup and refreshes the entry;
// no-store neither reads nor writes.
func TestCacheControl(t *testing.T) {
	g := newGatewayWith(t, globalOptions, cacheLogSite, cacheRouter("\t\tmax_size 1002KB"))
	q := question("Is the red jacket in stock?", false, "")
	resp, _ := g.post(q, "Cache-Control", "no-store")
	expectCache(t, resp, "bypass")
	resp, _ = g.post(q)
	expectCache(t, resp, "miss") // no-store stored nothing
	advanceClock(t, 5*time.Second)
	resp, _ = g.post(q)
	expectCache(t, resp, "hit")
	if resp.Header.Get("Age") != "5" {
		t.Errorf("Age %q, want 5", resp.Header.Get("Age"))
	}
	resp, _ = g.post(q, "Cache-Control", "no-cache")
	expectCache(t, resp, "bypass")
	resp, _ = g.post(q)
	expectCache(t, resp, "hit")
	if resp.Header.Get("Age") != "0" {
		t.Errorf("no-cache did not refresh the entry: Age %q", resp.Header.Get("Age"))
	}
	resp, _ = g.post(question("Is the red jacket in stock?", false, `,"n":2`))
	expectCache(t, resp, "bypass")
	if n := len(g.primary.RequestsFor("deepseek-chat")); n != 4 {
		t.Errorf("%d upstream requests, want 4", n)
	}
}

// TestCacheSingleFlight: ten identical questions at once make one upstream
// request; the others are answered from it.
func TestCacheSingleFlight(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 1003KB"))
	g.primary.Set("deepseek-chat", mockllm.Behavior{Latency: 300 * time.Millisecond})
	q := question("What are your opening hours?", false, "")
	var wg sync.WaitGroup
	results := make(chan string, 10)
	bodies := make(chan string, 10)
	for range 10 {
		wg.Go(func() {
			resp, body := g.post(q)
			results <- resp.Header.Get("X-LLM-Cache")
			bodies <- body
		})
	}
	wg.Wait()
	close(results)
	close(bodies)
	count := map[string]int{}
	for r := range results {
		count[r]++
	}
	var first string
	for b := range bodies {
		if first == "" {
			first = b
		}
		if b != first {
			t.Errorf("answers differ: %s vs %s", b, first)
		}
	}
	if n := len(g.primary.RequestsFor("deepseek-chat")); n != 1 {
		t.Errorf("%d upstream requests for 10 identical questions, want 1", n)
	}
	if count["miss"] != 1 || count["hit"] != 9 {
		t.Errorf("results %v, want 1 miss and 9 hits", count)
	}
}

// TestCacheKeepsOnlyCompleteAnswers: errors, truncated streams and
// failed-over-from answers are not stored.
func TestCacheKeepsOnlyCompleteAnswers(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 1004KB\n\t\tstale_if_error 0"))
	q := question("Can I return shoes?", false, "")
	g.primary.SetDefault(mockllm.Behavior{Status: 500})
	resp, _ := g.post(q)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d", resp.StatusCode)
	}
	g.primary.Clear()
	resp, _ = g.post(q)
	expectCache(t, resp, "miss") // the 503 was not stored

	qs := question("Can I return boots?", true, "")
	g.primary.Set("deepseek-chat", mockllm.Behavior{BreakAfterChunks: 2, Times: 1})
	if _, _, err := g.postRaw("/v1/chat/completions", qs); err == nil {
		t.Fatal("the broken stream ended cleanly")
	}
	resp, _ = g.post(qs)
	expectCache(t, resp, "miss") // the truncated stream was not stored
	resp, _ = g.post(qs)
	expectCache(t, resp, "hit")

	// a stream cut short whose connection closes cleanly, without [DONE]
	qs = question("Can I return sandals?", true, "")
	g.primary.Set("deepseek-chat", mockllm.Behavior{EndAfterChunks: 2, Times: 1})
	_, body, _ := g.postRaw("/v1/chat/completions", qs)
	if data := sseData(body); len(data) == 0 || !strings.Contains(data[len(data)-1], codeStreamBroken) {
		t.Errorf("a stream that ended without [DONE] was not reported broken: %q", body)
	}
	resp, _ = g.post(qs)
	expectCache(t, resp, "miss") // it was not stored

	// answers that are not whole are relayed once, never served again: no
	// choice, a choice without finish_reason, a stream that is only [DONE]
	for i, b := range []mockllm.Behavior{
		{Body: `{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":0,"total_tokens":3}}`},
		{Body: `{"id":"x","object":"chat.completion","choices":null}`},
		{Body: `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Ye"},"finish_reason":null}]}`},
		// a generation that failed midway, as OpenRouter reports one: an
		// error in the choice, finish_reason "error"
		{Body: `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Ye"},"finish_reason":"error","error":{"code":502,"message":"Upstream error"}}]}`},
		{Body: `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Ye"},"finish_reason":"error"}]}`},
		// content a provider's filter omitted: what another generation,
		// or another client, would get is not known
		{Body: `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Ye"},"finish_reason":"content_filter"}]}`},
	} {
		q := question(fmt.Sprintf("Can I return hats, size %d?", i), false, "")
		b.Times = 1
		g.primary.Set("deepseek-chat", b)
		resp, body := g.post(q)
		expectCache(t, resp, "miss")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("answer %d: %d %s", i, resp.StatusCode, body)
		}
		resp, _ = g.post(q)
		expectCache(t, resp, "miss") // it was not stored
	}
	// the same failure in a stream: the finishing chunk says "error"
	qs = question("Can I return gloves?", true, "")
	chunk := `data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":%s,"finish_reason":%s}]}` + "\n\n"
	g.primary.Set("deepseek-chat", mockllm.Behavior{Times: 1,
		Body: fmt.Sprintf(chunk, `{"role":"assistant","content":"Ye"}`, "null") + fmt.Sprintf(chunk, `{}`, `"error"`) + "data: [DONE]\n\n"})
	resp, body = g.post(qs)
	if resp.StatusCode != http.StatusOK || answerText(t, body) != "Ye" {
		t.Fatalf("the stream that failed midway: %d %q", resp.StatusCode, body)
	}
	resp, _ = g.post(qs)
	expectCache(t, resp, "miss") // it was not stored
	// and a stream whose last chunk says its content was filtered
	qs = question("Can I return mittens?", true, "")
	g.primary.Set("deepseek-chat", mockllm.Behavior{Times: 1,
		Body: fmt.Sprintf(chunk, `{"role":"assistant","content":"Ye"}`, "null") + fmt.Sprintf(chunk, `{}`, `"content_filter"`) + "data: [DONE]\n\n"})
	if resp, body = g.post(qs); resp.StatusCode != http.StatusOK || answerText(t, body) != "Ye" {
		t.Fatalf("the filtered stream: %d %q", resp.StatusCode, body)
	}
	resp, _ = g.post(qs)
	expectCache(t, resp, "miss") // it was not stored

	qs = question("Can I return scarves?", true, "")
	g.primary.Set("deepseek-chat", mockllm.Behavior{Body: "data: [DONE]\n\n", Times: 1})
	resp, body = g.post(qs)
	if resp.Header.Get(hdrModel) != "gemini-2.5-flash" || !strings.HasSuffix(body, "data: [DONE]\n\n") || answerText(t, body) == "" {
		t.Errorf("a stream that is only [DONE] was relayed: %s %q, want the next candidate's answer", resp.Header.Get(hdrModel), body)
	}
}

// TestCacheStreamNotFromALossyJSONAnswer: a stored JSON answer with a
// member a stream of it would not carry (a provider's citations) is not
// replayed as a stream that silently lacks it: the streamed question
// is answered by a model; members that are null lose nothing.
func TestCacheStreamNotFromALossyJSONAnswer(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 1039KB"))
	answer := `{"id":"x","object":"chat.completion","created":1,"model":"m",%s"choices":[{"index":0,"message":{"role":"assistant","content":"Yes"},"logprobs":null,"finish_reason":"stop"%s}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`
	for i, c := range []struct {
		top, choice string
		hit         bool
	}{
		{`"citations":["https://example.com/returns"],`, "", false},
		{"", `,"stop_reason":"</s>"`, false},
		{`"prompt_logprobs":null,`, `,"stop_reason":null`, true},
	} {
		q := fmt.Sprintf("Can I return a coat, size %d?", i)
		g.primary.Set("deepseek-chat", mockllm.Behavior{Times: 1, Body: fmt.Sprintf(answer, c.top, c.choice)})
		if resp, body := g.post(question(q, false, "")); resp.StatusCode != http.StatusOK || answerText(t, body) != "Yes" {
			t.Fatalf("answer %d: %d %s", i, resp.StatusCode, body)
		}
		chats := len(g.primary.RequestsFor("deepseek-chat"))
		resp, body := g.post(question(q, true, ""))
		if c.hit {
			expectCache(t, resp, "hit")
			if answerText(t, body) != "Yes" {
				t.Errorf("answer %d replayed as %q", i, body)
			}
			continue
		}
		expectCache(t, resp, "miss")
		if got := len(g.primary.RequestsFor("deepseek-chat")); got != chats+1 {
			t.Errorf("answer %d: the stream was replayed from a JSON answer it would lose members of: %q", i, body)
		}
	}
}

// TestCacheKeepsNoAnswerCutForLackOfResources: DeepSeek ends a generation
// its inference system had no resources to finish with finish_reason
// "insufficient_system_resource", vLLM one its engine aborted with
// "abort": a part of an answer, relayed once (JSON or stream) and never
// served again.
func TestCacheKeepsNoAnswerCutForLackOfResources(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 1213KB\n\t\tstale_if_error 0"))
	chunk := `data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":%s,"finish_reason":%s}]}` + "\n\n"
	for i, b := range []mockllm.Behavior{
		{Body: `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Ye"},"finish_reason":"insufficient_system_resource"}]}`},
		{Body: fmt.Sprintf(chunk, `{"role":"assistant","content":"Ye"}`, "null") + fmt.Sprintf(chunk, `{}`, `"insufficient_system_resource"`) + "data: [DONE]\n\n"},
		// vLLM's, for a request its engine aborted (a shutdown, a pause
		// for new weights)
		{Body: fmt.Sprintf(chunk, `{"role":"assistant","content":"Ye"}`, "null") + fmt.Sprintf(chunk, `{}`, `"abort"`) + "data: [DONE]\n\n"},
	} {
		q := question(fmt.Sprintf("Can I return a tent, size %d?", i), i > 0, "")
		b.Times = 1
		g.primary.Set("deepseek-chat", b)
		if resp, body := g.post(q); resp.StatusCode != http.StatusOK || answerText(t, body) != "Ye" {
			t.Fatalf("answer %d: %d %q", i, resp.StatusCode, body)
		}
		chats := len(g.primary.RequestsFor("deepseek-chat"))
		resp, body := g.post(q)
		expectCache(t, resp, "miss")
		if got := len(g.primary.RequestsFor("deepseek-chat")); got != chats+1 {
			t.Errorf("answer %d: the cut answer was served again: %q", i, body)
		}
	}
}

// TestCacheNoStreamOfToolCallsAtOneIndex: a stream whose tool calls all
// come at one index (or none, which reads as 0), each with an id of its
// own, as Gemini's OpenAI-compatible endpoint and some relays send them,
// is relayed as it came but not stored: assembled by index, the calls
// merged into one (names and arguments run together), the answer every
// later request of its key would have been served.
func TestCacheNoStreamOfToolCallsAtOneIndex(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 1212KB"))
	chunk := `data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":%s,"finish_reason":%s}]}` + "\n\n"
	call := `{"tool_calls":[{%s"id":"call_%s","type":"function","function":{"name":"%s","arguments":"{\"city\":\"%s\"}"}}]}`
	tools := `,"tools":[{"type":"function","function":{"name":"weather","parameters":{"type":"object"}}},{"type":"function","function":{"name":"time","parameters":{"type":"object"}}}]`
	for i, index := range []string{`"index":0,`, ""} {
		q := question(fmt.Sprintf("Weather and time in Lyon, take %d?", i), true, tools)
		g.primary.Set("deepseek-chat", mockllm.Behavior{Times: 1, Body: fmt.Sprintf(chunk, `{"role":"assistant"}`, "null") +
			fmt.Sprintf(chunk, fmt.Sprintf(call, index, "a", "weather", "Lyon"), "null") +
			fmt.Sprintf(chunk, fmt.Sprintf(call, index, "b", "time", "Lyon"), "null") +
			fmt.Sprintf(chunk, `{}`, `"tool_calls"`) + "data: [DONE]\n\n"})
		resp, body := g.post(q)
		if resp.StatusCode != http.StatusOK || strings.Count(body, `"id":"call_`) != 2 {
			t.Fatalf("take %d: %d %q", i, resp.StatusCode, body)
		}
		chats := len(g.primary.RequestsFor("deepseek-chat"))
		resp, body = g.post(strings.Replace(q, `,"stream":true`, "", 1))
		expectCache(t, resp, "miss")
		if got := len(g.primary.RequestsFor("deepseek-chat")); got != chats+1 {
			t.Errorf("take %d: served from the cache, not by a model: %s", i, body)
		}
	}
}

// TestCacheKeepsAStreamWithoutUsage: a stream that reaches [DONE] from a
// provider that sends no usage (stream_usage off) is complete: it is kept
// (with its estimated cost), and served again.
func TestCacheKeepsAStreamWithoutUsage(t *testing.T) {
	router := strings.Replace(cacheRouter("\t\tmax_size 1031KB"), "timeout 2s\n\t}\n\tprovider backup", "timeout 2s\n\t\tstream_usage off\n\t}\n\tprovider backup", 1)
	g := newGateway(t, router)
	q := question("Do you sell gift cards?", true, "")
	resp, first := g.post(q)
	expectModel(t, resp, first, "deepseek-v3.2", "primary", 1)
	expectCache(t, resp, "miss")
	resp, again := g.post(q)
	expectCache(t, resp, "hit")
	if answerText(t, again) != answerText(t, first) || !strings.HasSuffix(again, "data: [DONE]\n\n") {
		t.Errorf("replayed %q, first %q", again, first)
	}
}

// TestCacheEviction: the cache stays within max_size, and what it counts
// as kept is really served. Which answers it keeps is the eviction
// policy's business (internal/chunkstore: oldest first, a second chance
// for those read): with every model failing, a question that missed
// stores nothing and reads evict nothing, so the hits are exactly the
// kept entries.
func TestCacheEviction(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 20KB"))
	for i := range 60 {
		resp, _ := g.post(question(fmt.Sprintf("Question number %d?", i), false, ""))
		expectCache(t, resp, "miss")
	}
	var cs *CacheStats
	for _, c := range fetchStats(t).Caches {
		if c.MaxBytes == 20_000 {
			cs = &c
		}
	}
	if cs == nil || cs.Bytes > 20_000 || cs.Entries >= 60 || cs.Entries == 0 {
		t.Fatalf("a 20KB cache after 60 answers of ~650 bytes: %+v", cs)
	}
	g.primary.SetDefault(mockllm.Behavior{Status: http.StatusInternalServerError})
	g.backup.SetDefault(mockllm.Behavior{Status: http.StatusInternalServerError})
	hits := 0
	for i := range 60 {
		resp, _ := g.post(question(fmt.Sprintf("Question number %d?", i), false, ""))
		switch resp.StatusCode {
		case http.StatusOK:
			expectCache(t, resp, "hit")
			hits++
		case http.StatusServiceUnavailable:
		default:
			t.Fatalf("question %d: status %d", i, resp.StatusCode)
		}
	}
	if int64(hits) != cs.Entries {
		t.Errorf("%d of 60 served from the cache, which counted %d entries", hits, cs.Entries)
	}
}

// TestCacheStaleIfError: when every model fails, an expired answer within
// stale_if_error is served instead of 503, and says so.
func TestCacheStaleIfError(t *testing.T) {
	g := newGatewayWith(t, globalOptions, cacheLogSite, cacheRouter("\t\tmax_size 1005KB\n\t\tttl 1m\n\t\tstale_if_error 1h"))
	q := question("Sản phẩm nào đang giảm giá?", false, "")
	resp, fresh := g.post(q)
	expectCache(t, resp, "miss")

	advanceClock(t, 2*time.Minute)
	g.primary.SetDefault(mockllm.Behavior{Status: 503})
	for _, stream := range []bool{false, true} {
		resp, body := g.post(question("Sản phẩm nào đang giảm giá?", stream, ""))
		expectCache(t, resp, "stale")
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Warning"), "all models unavailable") {
			t.Fatalf("stream=%v: %d cache %q warning %q: %s", stream, resp.StatusCode, resp.Header.Get("X-LLM-Cache"), resp.Header.Get("Warning"), body)
		}
		if answerText(t, body) != answerText(t, fresh) || resp.Header.Get("X-LLM-Attempts") != "2" || resp.Header.Get("Age") != "120" {
			t.Errorf("stale answer: attempts %q age %q", resp.Header.Get("X-LLM-Attempts"), resp.Header.Get("Age"))
		}
	}
	// beyond stale_if_error: the 503
	advanceClock(t, time.Hour)
	resp, _ = g.post(q)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("an answer older than ttl + stale_if_error: %d", resp.StatusCode)
	}
}

// TestCacheStaleNotPastItsWindow: the answer a request found expired but
// within ttl + stale_if_error is served, once every model failed, only if
// it still is: never one older, however long the request waited (for
// the models, or for a flight it followed).
func TestCacheStaleNotPastItsWindow(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 1214KB\n\t\tttl 1m\n\t\tstale_if_error 1h"))
	q := question("Có giao hàng đến Đà Nẵng không?", false, "")
	resp, _ := g.post(q)
	expectCache(t, resp, "miss")
	advanceClock(t, 2*time.Minute)
	g.primary.SetDefault(mockllm.Behavior{Status: 503})
	var waited atomic.Bool
	hook := func() {
		// the request found the answer stale (2 minutes old) and waits
		// past ttl + stale_if_error before every model has failed
		if waited.CompareAndSwap(false, true) {
			clockSkew.Add(int64(time.Hour))
		}
	}
	cacheJoinHook.Store(&hook)
	t.Cleanup(func() {
		cacheJoinHook.Store(nil)
		if waited.Load() {
			clockSkew.Add(-int64(time.Hour))
		}
	})
	resp, body := g.post(q)
	if !waited.Load() {
		t.Fatal("the request did not wait")
	}
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("an answer older than ttl + stale_if_error when served: %d, cache %q, Age %q: %s",
			resp.StatusCode, resp.Header.Get("X-LLM-Cache"), resp.Header.Get("Age"), body)
	}
}

// TestCacheSurvivesReload: the stored answers outlive a reload that
// keeps the handler's config (here one that changes the site around it);
// one that changes the config starts an empty store.
func TestCacheSurvivesReload(t *testing.T) {
	router := cacheRouter("\t\tmax_size 1006KB")
	g := newGateway(t, router)
	q := question("How long does delivery take?", false, "")
	resp, _ := g.post(q)
	expectCache(t, resp, "miss")
	g.reloadWith(globalOptions, "\theader X-Reloaded 1", router)
	resp, _ = g.post(q)
	expectCache(t, resp, "hit")
	g.reload(router + "\tmax_request_body 4MB\n")
	resp, _ = g.post(q)
	expectCache(t, resp, "miss")
}

// TestSDKReadsReplayedStream: the official SDK reads a stream replayed
// from the cache like a live one.
func TestSDKReadsReplayedStream(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 1007KB"))
	var live, replayed sdkChatStream
	runSDK(t, "chat-stream", &live)
	runSDK(t, "chat-stream", &replayed)
	if n := len(g.primary.RequestsFor("deepseek-chat")); n != 1 {
		t.Fatalf("%d upstream requests, want the second stream from the cache", n)
	}
	if live.Error != nil || replayed.Error != nil || replayed.Text != live.Text || replayed.Text == "" ||
		replayed.FinishReason == nil || *replayed.FinishReason != "stop" || len(replayed.Usage) == 0 || string(replayed.Usage) == "null" {
		t.Errorf("live %+v, replayed %+v", live, replayed)
	}
}

// TestCacheHitContentLength: a JSON hit declares its length, whether
// net/http adds it (a short answer) or the router does (a long one).
func TestCacheHitContentLength(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 1008KB"))
	long := `{"id":"chatcmpl-long","object":"chat.completion","created":1700000000,"model":"deepseek-v3.2","choices":[{"index":0,"message":{"role":"assistant","content":"` +
		strings.Repeat("All orders ship within two days. ", 100) + `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":700,"total_tokens":709}}`
	for _, c := range []struct {
		q, answer string
	}{{"Where is my order?", ""}, {"What is your shipping policy?", long}} {
		g.primary.SetDefault(mockllm.Behavior{Body: c.answer})
		g.post(question(c.q, false, ""))
		resp, body := g.post(question(c.q, false, ""))
		expectCache(t, resp, "hit")
		if resp.ContentLength != int64(len(body)) || len(resp.TransferEncoding) > 0 || (c.answer != "" && body != c.answer) {
			t.Errorf("a hit of %d bytes: Content-Length %d, Transfer-Encoding %v", len(body), resp.ContentLength, resp.TransferEncoding)
		}
	}
}

// TestCacheScope: by default the client's credential is part of the key,
// so one client never gets another's answer (nor learns from a hit that
// someone asked); `scope shared` shares answers across clients, and
// `scope {placeholder}` within a value of it.
func TestCacheScope(t *testing.T) {
	cases := []struct {
		name, block string
		hitAcross   bool // client B hits client A's answer
	}{
		{"default: per credential", "\t\tmax_size 1011KB", false},
		{"shared", "\t\tmax_size 1012KB\n\t\tscope shared", true},
		{"by team header", "\t\tmax_size 1013KB\n\t\tscope {http.request.header.X-Team}", true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newGateway(t, cacheRouter(tc.block))
			q := question(fmt.Sprintf("Where is order %d?", 7000+i), false, "")
			a := []string{"Authorization", "Bearer client-a", "X-Team", "shop"}
			b := []string{"Authorization", "Bearer client-b", "X-Team", "shop"}
			resp, _ := g.post(q, a...)
			if got := resp.Header.Get("X-LLM-Cache"); got != "miss" {
				t.Fatalf("A's first: X-LLM-Cache %q", got)
			}
			resp, _ = g.post(q, a...)
			if got := resp.Header.Get("X-LLM-Cache"); got != "hit" {
				t.Errorf("A again: X-LLM-Cache %q, want hit", got)
			}
			resp, _ = g.post(q, b...)
			want := map[bool]string{true: "hit", false: "miss"}[tc.hitAcross]
			if got := resp.Header.Get("X-LLM-Cache"); got != want {
				t.Errorf("B, same question: X-LLM-Cache %q, want %q", got, want)
			}
			if tc.hitAcross {
				return
			}
			if age := resp.Header.Get("Age"); age != "" {
				t.Errorf("B's miss carries Age %q", age)
			}
			// clients whose SDK sends its key in another header (Azure's
			// api-key, Anthropic's x-api-key) are kept apart the same way
			for _, h := range []string{"X-Api-Key", "Api-Key"} {
				q := question(fmt.Sprintf("Where is order %d (%s)?", 7000+i, h), false, "")
				g.post(q, h, "key-a")
				if resp, _ := g.post(q, h, "key-a"); resp.Header.Get("X-LLM-Cache") != "hit" {
					t.Errorf("%s: A again: X-LLM-Cache %q, want hit", h, resp.Header.Get("X-LLM-Cache"))
				}
				if resp, _ := g.post(q, h, "key-b"); resp.Header.Get("X-LLM-Cache") != "miss" {
					t.Errorf("%s: B, same question: X-LLM-Cache %q, want miss", h, resp.Header.Get("X-LLM-Cache"))
				}
			}
		})
	}
}

// TestCacheFreshnessFromServingConfig: an entry is fresh by the ttl of the
// config that looks it up, not of the one that stored it: a reload from
// ttl 10m to ttl 1s makes a 2-second-old entry a miss (not a stale answer,
// while models are up).
func TestCacheFreshnessFromServingConfig(t *testing.T) {
	router := cacheRouter("\t\tmax_size 1014KB\n\t\tttl 10m")
	g := newGateway(t, router)
	q := question("How long does express shipping take?", false, "")
	g.post(q)
	if resp, _ := g.post(q); resp.Header.Get("X-LLM-Cache") != "hit" {
		t.Fatalf("the second request: X-LLM-Cache %q, want hit", resp.Header.Get("X-LLM-Cache"))
	}
	advanceClock(t, 2*time.Second)
	g.reload(strings.Replace(router, "ttl 10m", "ttl 1s\n\t\tstale_if_error 0", 1))
	before := len(g.primary.Requests())
	resp, _ := g.post(q)
	if got := resp.Header.Get("X-LLM-Cache"); got != "miss" || len(g.primary.Requests()) != before+1 {
		t.Errorf("after the reload to ttl 1s: X-LLM-Cache %q, upstream asked %d times; want a miss that asks a model", got, len(g.primary.Requests())-before)
	}
}

// TestCacheStorePerHandler: two handlers with the same cache settings never
// see each other's answers, unless both name one store.
func TestCacheStorePerHandler(t *testing.T) {
	for _, tc := range []struct {
		name, block string
		shared      bool
	}{
		{"own stores", "\t\tmax_size 1015KB\n\t\tscope shared", false},
		{"a named store", "\t\tmax_size 1015KB\n\t\tscope shared\n\t\tstore faq_shared", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGateway(t, defaultRouter)
			body := g.fill(cacheRouter(tc.block))
			g.tc.InitServer(globalOptions+"\n"+siteAddress+" {\n\thandle /a/* {\n\t\tllm_router {"+body+"\n\t\t}\n\t}\n\thandle /b/* {\n\t\tllm_router {"+body+"\n\t\t}\n\t}\n}\n", "caddyfile")
			q := question("Do you ship to Da Nang? "+tc.name, false, "")
			resp, _ := g.postPath("/a/v1/chat/completions", q)
			if got := resp.Header.Get("X-LLM-Cache"); got != "miss" {
				t.Fatalf("handler a: X-LLM-Cache %q", got)
			}
			resp, _ = g.postPath("/b/v1/chat/completions", q)
			want := map[bool]string{true: "hit", false: "miss"}[tc.shared]
			if got := resp.Header.Get("X-LLM-Cache"); got != want {
				t.Errorf("handler b, the same question: X-LLM-Cache %q, want %q", got, want)
			}
			resp, _ = g.postPath("/a/v1/chat/completions", q)
			if got := resp.Header.Get("X-LLM-Cache"); got != "hit" {
				t.Errorf("handler a again: X-LLM-Cache %q, want hit", got)
			}
		})
	}
}

// TestCacheStoreScopesByName: two handlers that share a named store with
// scopes of different placeholders (a tenant header here, an organisation
// header there) keep their identities apart: an answer cached for the
// tenant "acme" is not the organisation "acme"'s.
func TestCacheStoreScopesByName(t *testing.T) {
	g := newGateway(t, defaultRouter)
	block := func(scope string) string {
		return g.fill(cacheRouter("\t\tmax_size 1015KB\n\t\tscope " + scope + "\n\t\tstore scopes_by_name"))
	}
	g.tc.InitServer(globalOptions+"\n"+siteAddress+" {\n\thandle /a/* {\n\t\tllm_router {"+block("{http.request.header.X-Tenant}")+
		"\n\t\t}\n\t}\n\thandle /b/* {\n\t\tllm_router {"+block("{http.request.header.X-Org}")+"\n\t\t}\n\t}\n}\n", "caddyfile")
	q := question("Do you ship to Hue?", false, "")
	resp, _ := g.postPath("/a/v1/chat/completions", q, "X-Tenant", "acme")
	if got := resp.Header.Get("X-LLM-Cache"); got != "miss" {
		t.Fatalf("handler a: X-LLM-Cache %q", got)
	}
	resp, _ = g.postPath("/b/v1/chat/completions", q, "X-Org", "acme")
	if got := resp.Header.Get("X-LLM-Cache"); got != "miss" {
		t.Errorf("handler b, organisation acme: X-LLM-Cache %q, want miss (tenant acme's answer is not its)", got)
	}
	resp, _ = g.postPath("/a/v1/chat/completions", q, "X-Tenant", "acme")
	if got := resp.Header.Get("X-LLM-Cache"); got != "hit" {
		t.Errorf("handler a again: X-LLM-Cache %q, want hit", got)
	}
}

// streamed is a chat stream as a client read it.
type streamed struct {
	cache string    // X-LLM-Cache
	proto int       // the HTTP version's major number
	first time.Time // when its first event arrived
	body  string
	err   error
}

// readStream posts a chat stream and reads it to its end, noting when its
// first event arrived (and saying so on started, when not nil).
func (g *gateway) readStream(ctx context.Context, body string, started chan<- struct{}) streamed {
	return readStreamOn(ctx, g.tc.Client, body, started)
}

// readStreamOn is readStream with client c.
func readStreamOn(ctx context.Context, c *http.Client, body string, started chan<- struct{}) streamed {
	return readStreamAt(ctx, c, gatewayURL, body, started)
}

// leadStream starts a stream at url and returns once its first event has
// arrived (a cache leader, for followers to join); the channel gives the
// whole stream when it ends.
func leadStream(ctx context.Context, t *testing.T, c *http.Client, url, body string) <-chan streamed {
	t.Helper()
	started := make(chan struct{})
	leader := make(chan streamed, 1)
	go func() { leader <- readStreamAt(ctx, c, url, body, started) }()
	select {
	case <-started:
	case l := <-leader:
		t.Fatalf("the leader's stream ended before its first event: HTTP/%d %v %q", l.proto, l.err, l.body)
	}
	return leader
}

// readStreamAt is readStreamOn to the gateway at url.
func readStreamAt(ctx context.Context, c *http.Client, url, body string, started chan<- struct{}) streamed {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	resp, err := c.Do(req)
	if err != nil {
		return streamed{err: err}
	}
	defer resp.Body.Close()
	out := streamed{cache: resp.Header.Get("X-LLM-Cache"), proto: resp.ProtoMajor}
	var all strings.Builder
	r := bufio.NewReader(resp.Body)
	for {
		line, err := r.ReadString('\n')
		all.WriteString(line)
		if out.first.IsZero() && strings.HasPrefix(line, "data: ") {
			out.first = time.Now()
			if started != nil {
				close(started)
			}
		}
		if err != nil {
			if err != io.EOF {
				out.err = err
			}
			out.body = all.String()
			return out
		}
	}
}

// hasUsageChunk reports whether a stream carries the usage-only chunk.
func hasUsageChunk(body string) bool {
	for _, d := range sseData(body) {
		if _, choices, found := openai.ChunkUsage([]byte(d)); found && choices == 0 {
			return true
		}
	}
	return false
}

// TestCacheFollowersStreamLive: identical streams at once make one
// upstream request, and each follower relays the leader's events as they
// arrive (its first event with the leader's, not at the stream's end),
// with the usage chunk only if it asked for one.
func TestCacheFollowersStreamLive(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 1010KB"))
	g.primary.Set("deepseek-chat", mockllm.Behavior{ChunkDelay: 200 * time.Millisecond, Chunks: 4})
	results := make(chan streamed, 5)
	var wg sync.WaitGroup
	for i := range 5 {
		extra := ""
		if i%2 == 0 {
			extra = `,"stream_options":{"include_usage":true}`
		}
		body := question("Where is my parcel?", true, extra)
		wg.Go(func() {
			s := g.readStream(context.Background(), body, nil)
			if s.err == nil && hasUsageChunk(s.body) != (extra != "") {
				t.Errorf("usage chunk %v for a client that asked: %v", hasUsageChunk(s.body), extra != "")
			}
			results <- s
		})
	}
	wg.Wait()
	close(results)
	var leader streamed
	var followers []streamed
	for s := range results {
		if s.err != nil {
			t.Fatalf("stream: %v", s.err)
		}
		if got := answerText(t, s.body); got != "w0 w1 w2 w3 " {
			t.Errorf("answer %q, want the whole stream", got)
		}
		if s.cache == "miss" {
			leader = s
		} else {
			followers = append(followers, s)
		}
	}
	if n := len(g.primary.RequestsFor("deepseek-chat")); n != 1 || leader.cache == "" || len(followers) != 4 {
		t.Fatalf("%d upstream requests, %d followers, want 1 and 4", n, len(followers))
	}
	for _, f := range followers {
		if f.cache != "hit" {
			t.Errorf("a follower's X-LLM-Cache is %q, want hit", f.cache)
		}
		// events come 200 ms apart: a follower that waited for the end
		// would be 800 ms behind
		if lag := f.first.Sub(leader.first).Abs(); lag > 50*time.Millisecond {
			t.Errorf("a follower's first event came %s after the leader's, want within 50ms", lag)
		}
	}
}

// TestCacheFollowersOutliveTheLeader: a leader whose client leaves
// mid-stream reads on for its followers, who get the whole answer; the
// upstream request is not canceled, and the answer is stored.
func TestCacheFollowersOutliveTheLeader(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 1011KB"))
	g.primary.Set("deepseek-chat", mockllm.Behavior{ChunkDelay: 100 * time.Millisecond, Chunks: 6})
	q := question("Can I change my delivery address?", true, "")
	_, hangUp := g.streamUntil(q, "w0")
	results := make(chan streamed, 2)
	var started []chan struct{}
	for range 2 {
		ch := make(chan struct{})
		started = append(started, ch)
		go func() { results <- g.readStream(context.Background(), q, ch) }()
	}
	for _, ch := range started {
		waitFor(t, ch, "a follower's first event")
	}
	hangUp()
	for range 2 {
		s := waitFor(t, results, "a follower's answer")
		if s.err != nil || answerText(t, s.body) != "w0 w1 w2 w3 w4 w5 " || !strings.HasSuffix(s.body, "data: [DONE]\n\n") {
			t.Errorf("follower got %q (%v), want the whole stream", s.body, s.err)
		}
	}
	select {
	case m := <-g.primary.Canceled():
		t.Errorf("the upstream request for %s was canceled", m)
	default:
	}
	if n := len(g.primary.RequestsFor("deepseek-chat")); n != 1 {
		t.Errorf("%d upstream requests, want 1", n)
	}
	resp, body := g.post(question("Can I change my delivery address?", false, ""))
	expectCache(t, resp, "hit")
	if got := answerText(t, body); got != "w0 w1 w2 w3 w4 w5 " {
		t.Errorf("stored answer %q", got)
	}
}

// TestCacheAnswerStoredBeforeTheJoin: a request whose lookup missed, and
// whose identical predecessor stored its answer and left the flights
// before it joined them, is served that answer: one upstream request.
func TestCacheAnswerStoredBeforeTheJoin(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 1016KB"))
	const ask = "Is there a store in Hue?"
	var first atomic.Bool
	hook := func() {
		if first.CompareAndSwap(false, true) { // the first request, between its lookup and its join
			resp, _ := g.post(question(ask, false, ""))
			expectCache(t, resp, "miss")
		}
	}
	cacheJoinHook.Store(&hook)
	t.Cleanup(func() { cacheJoinHook.Store(nil) })
	resp, body := g.post(question(ask, false, ""))
	expectCache(t, resp, "hit")
	if resp.StatusCode != http.StatusOK || answerText(t, body) == "" {
		t.Errorf("status %d, %s", resp.StatusCode, body)
	}
	if n := len(g.primary.Requests()); n != 1 {
		t.Errorf("%d upstream requests, want 1", n)
	}
}

// TestCacheJSONAndStreamFollowers: one stream leader, a JSON follower and
// a stream follower: both get the complete answer.
func TestCacheJSONAndStreamFollowers(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 1012KB"))
	g.primary.Set("deepseek-chat", mockllm.Behavior{ChunkDelay: 100 * time.Millisecond, Chunks: 5})
	const ask = "Do you ship to Da Nang?"
	resp, hangUp := g.streamUntil(question(ask, true, ""), "w0")
	defer hangUp()
	expectCache(t, resp, "miss")
	jsonDone := make(chan [2]string, 1)
	go func() {
		resp, body := g.post(question(ask, false, ""))
		jsonDone <- [2]string{resp.Header.Get("X-LLM-Cache"), body}
	}()
	s := g.readStream(context.Background(), question(ask, true, ""), nil)
	if s.err != nil || s.cache != "hit" || answerText(t, s.body) != "w0 w1 w2 w3 w4 " {
		t.Errorf("stream follower: %s %q %v", s.cache, s.body, s.err)
	}
	j := waitFor(t, jsonDone, "the JSON follower's answer")
	if j[0] != "hit" || answerText(t, j[1]) != "w0 w1 w2 w3 w4 " {
		t.Errorf("JSON follower: %s %s", j[0], j[1])
	}
	if n := len(g.primary.RequestsFor("deepseek-chat")); n != 1 {
		t.Errorf("%d upstream requests, want 1", n)
	}
}

// TestCacheFollowerOfAFailedLeader: when the leader gets no answer, its
// follower asks a model itself (and gets one).
func TestCacheFollowerOfAFailedLeader(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 1013KB\n\t\tstale_if_error 0"))
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 500, Latency: 300 * time.Millisecond, Times: 1})
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 500, Times: 1})
	q := question("Is there a sale on sneakers?", false, "")
	leader := make(chan *http.Response, 1)
	go func() {
		resp, _ := g.post(q)
		leader <- resp
	}()
	waitFor(t, g.primary.Arrived(), "the leader's request")
	resp, body := g.post(q)
	if resp.StatusCode != http.StatusOK || answerText(t, body) == "" {
		t.Errorf("follower: %d %s", resp.StatusCode, body)
	}
	expectCache(t, resp, "miss")
	if l := waitFor(t, leader, "the leader's answer"); l.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("leader: %d, want 503", l.StatusCode)
	}
}

// TestSDKReadsFollowerStream: the official SDK reads a stream that follows
// another request's, live, like any stream.
func TestSDKReadsFollowerStream(t *testing.T) {
	// shared: the Go leader and the SDK send different credentials
	g := newGateway(t, cacheRouter("\t\tmax_size 1014KB\n\t\tscope shared"))
	g.primary.Set("deepseek-chat", mockllm.Behavior{ChunkDelay: 150 * time.Millisecond, Chunks: 8})
	_, hangUp := g.streamUntil(chatBody("simple_qa", true), "w0")
	defer hangUp()
	var follower sdkChatStream
	runSDK(t, "chat-stream", &follower)
	if n := len(g.primary.RequestsFor("deepseek-chat")); n != 1 {
		t.Fatalf("%d upstream requests, want the SDK's stream to follow the first", n)
	}
	// a replay from a stored answer has 3 chunks; a follower relays the
	// leader's: the role, 8 words, the finish and the usage
	if follower.Error != nil || follower.Text != "w0 w1 w2 w3 w4 w5 w6 w7 " || follower.Chunks < 10 ||
		follower.FinishReason == nil || *follower.FinishReason != "stop" || len(follower.Usage) == 0 || string(follower.Usage) == "null" {
		t.Errorf("follower %+v", follower)
	}
}

// TestCacheLeaderSlowClientHoldsNoOneBack: a leader whose client stops
// reading (events larger than the socket buffers) holds its followers back
// no longer than leaderWriteGrace: it is dropped, and they get the whole
// stream.
func TestCacheLeaderSlowClientHoldsNoOneBack(t *testing.T) {
	defer func(old time.Duration) { leaderWriteGrace = old }(leaderWriteGrace)
	leaderWriteGrace = 300 * time.Millisecond
	g := newGateway(t, cacheRouter("\t\tmax_size 200MB"))
	g.primary.Set("deepseek-chat", mockllm.Behavior{Chunks: 3, ChunkPadding: 2 << 20, ChunkDelay: 50 * time.Millisecond})
	q := question("What does the warranty cover?", true, "")
	// the leader reads its first event, then nothing, and never gives up
	// (g.untimed): a client that timed out would leave, and the follower
	// would be served without any bound on the leader's writes
	resp, hangUp := g.streamUntilOn(g.untimed(), gatewayURL, q, "data: ")
	defer hangUp()
	expectCache(t, resp, "miss")
	// bounded by ctx, not the tester's 5 s: the follower's response ends
	// once the leader has assembled and stored the 6 MiB answer (about
	// 1.5 s of CPU under -race, on top of relaying it twice), which a run
	// of go test ./... sharing the cores with other packages stretched
	// past 5 s; a follower held back by the leader waits the 20 s out
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := readStreamOn(ctx, g.untimed(), q, nil) // the follower's whole stream, while the leader's client does not read
	if s.err != nil || s.cache != "hit" || !strings.HasSuffix(s.body, "data: [DONE]\n\n") {
		t.Errorf("follower: %s %v, ends %q", s.cache, s.err, s.body[max(len(s.body)-200, 0):])
	}
	if n := len(g.primary.RequestsFor("deepseek-chat")); n != 1 {
		t.Errorf("%d upstream requests, want 1", n)
	}
}

// TestCacheLeaderStalledBeforeAnyoneFollowed: a leader whose client
// stopped reading before anyone followed is blocked in a write that had no
// bound (it had no followers). Followers that join then, a stream and a
// JSON one, still get the whole answer: the join bounds that write by
// leaderWriteGrace, the leader's client is dropped and the stream goes on
// for them.
func TestCacheLeaderStalledBeforeAnyoneFollowed(t *testing.T) {
	defer func(old time.Duration) { leaderWriteGrace = old }(leaderWriteGrace)
	leaderWriteGrace = 300 * time.Millisecond
	g := newGateway(t, cacheRouter("\t\tmax_size 2000MB\n\t\tscope shared"))
	// 6 MiB of events: more than the socket buffers between the router
	// and a client that does not read take
	g.primary.Set("deepseek-chat", mockllm.Behavior{Chunks: 6, ChunkPadding: 1 << 20, ChunkDelay: 10 * time.Millisecond})
	for _, stream := range []bool{true, false} {
		upstream := len(g.primary.RequestsFor("deepseek-chat"))
		q := question(fmt.Sprintf("What does the extended warranty cover (streamed follower: %t)?", stream), true, "")
		hangUp := stalledStream(t, q)
		waitRelayBlockedWriting(t)
		// not the tester's 5 s (as in TestCacheLeaderSlowClientHoldsNoOneBack)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if stream {
			s := readStreamOn(ctx, g.untimed(), q, nil)
			if s.err != nil || s.cache != "hit" || !strings.HasSuffix(s.body, "data: [DONE]\n\n") {
				t.Errorf("stream follower: %s %v, ends %q", s.cache, s.err, s.body[max(len(s.body)-200, 0):])
			}
		} else {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, gatewayURL+"/v1/chat/completions", strings.NewReader(strings.Replace(q, `,"stream":true`, "", 1)))
			resp, err := g.untimed().Do(req)
			if err == nil {
				var body []byte
				body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if cache := resp.Header.Get("X-LLM-Cache"); err == nil && (cache != "hit" || !strings.HasPrefix(answerText(t, string(body)), "w0 .")) {
					err = fmt.Errorf("X-LLM-Cache %s, %d bytes", cache, len(body))
				}
			}
			if err != nil {
				t.Errorf("JSON follower: %v", err)
			}
		}
		cancel()
		hangUp()
		if n := len(g.primary.RequestsFor("deepseek-chat")) - upstream; n != 1 {
			t.Errorf("%d upstream requests, want 1", n)
		}
	}
}

// TestCacheLeaderOverHTTP2ProviderPauses: over HTTP/2, a leader whose
// client reads well keeps its stream, with a follower joined, while the
// provider pauses longer than leaderWriteGrace between events. An HTTP/2
// write deadline resets the stream when it passes, write pending or not:
// the bound on the leader's writes must be lifted while the relay waits
// for the provider, and a follower's join must not arm it then.
func TestCacheLeaderOverHTTP2ProviderPauses(t *testing.T) {
	defer func(old time.Duration) { leaderWriteGrace = old }(leaderWriteGrace)
	leaderWriteGrace = 100 * time.Millisecond
	g, c, url := newHTTPSGateway(t, cacheRouter("\t\tmax_size 10MB"))
	// the role chunk at once, then 4 pauses before the content and the finish
	g.primary.Set("deepseek-chat", mockllm.Behavior{Chunks: 3, ChunkDelay: 400 * time.Millisecond})
	q := question("Can I return shoes I wore once?", true, "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	leader := leadStream(ctx, t, c, url, q)
	// joins in the provider's first pause, and follows every later one
	follower := readStreamAt(ctx, c, url, q, nil)
	for name, s := range map[string]streamed{"leader": waitFor(t, leader, "the leader's stream"), "follower": follower} {
		if s.err != nil || s.proto != 2 || !strings.HasSuffix(s.body, "data: [DONE]\n\n") || answerText(t, s.body) != "w0 w1 w2 " {
			t.Errorf("%s: HTTP/%d %v, %q", name, s.proto, s.err, s.body)
		}
	}
	if follower.cache != "hit" {
		t.Errorf("follower X-LLM-Cache %q, want hit (it followed the leader)", follower.cache)
	}
	if n := len(g.primary.RequestsFor("deepseek-chat")); n != 1 {
		t.Errorf("%d upstream requests, want 1", n)
	}
}

// stalledStream posts a chat stream over a connection of its own, reads
// its first bytes and then never reads again: a client that stops
// reading. The returned func closes the connection.
func stalledStream(t *testing.T, body string) (hangUp func()) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(gatewayURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.(*net.TCPConn).SetReadBuffer(4096) // it fills at once
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	buf := make([]byte, 4096)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(buf)
	if err != nil || !strings.Contains(string(buf[:n]), "X-Llm-Cache: miss") {
		conn.Close()
		t.Fatalf("stalled stream: %v %q", err, buf[:n])
	}
	return func() { conn.Close() }
}

// waitRelayBlockedWriting waits until a stream's relay is blocked in a
// write to its client's connection.
func waitRelayBlockedWriting(t *testing.T) {
	t.Helper()
	waitGoroutines(t, "a stream's relay to block writing to its client", func(stacks []string) bool {
		return slices.ContainsFunc(stacks, func(g string) bool {
			return strings.Contains(g, "(*streamRelay).relay(") && strings.Contains(g, "(*pollDesc).waitWrite(")
		})
	})
}

// waitGoroutines waits until found holds of the goroutines' stacks (one
// element each): read for the states no event of the router's marks.
func waitGoroutines(t *testing.T, what string, found func(stacks []string) bool) {
	t.Helper()
	buf := make([]byte, 4<<20)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if found(strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n")) {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestCacheFollowerOfABrokenStream: when the stream a follower relays
// breaks, the follower gets the same error event and an aborted response,
// as the leader's client does.
func TestCacheFollowerOfABrokenStream(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 1015KB"))
	g.primary.Set("deepseek-chat", mockllm.Behavior{ChunkDelay: 100 * time.Millisecond, BreakAfterChunks: 3, Times: 1})
	q := question("Is gift wrapping free?", true, "")
	_, hangUp := g.streamUntil(q, "w0")
	defer hangUp()
	s := g.readStream(context.Background(), q, nil)
	if s.cache != "hit" || s.err == nil || !strings.Contains(s.body, "upstream_stream_broken") {
		t.Errorf("follower: %s, error %v, body %q; want the error event and an aborted response", s.cache, s.err, s.body)
	}
}

// TestCacheKeyHasTheOutputCap: an answer generated under a budget's output
// cap (a request without a limit sent with reserve_output as its limit,
// cut there) is not the answer to the same request sent without that cap:
// not after a reload that changes the cap, nor from another handler's
// shared store whose budgets cap otherwise. Nor is one given under a
// provider's headers that a reload changed.
func TestCacheKeyHasTheOutputCap(t *testing.T) {
	capped := func(cap string) string {
		return defaultRouter + "\tbudget team {\n\t\tlimit 1000 per day\n\t\treserve_output 7\n" + cap + "\t}\n\tbudget_sync off\n"
	}
	sentLimit := func(t *testing.T, g *gateway, before int) string {
		t.Helper()
		reqs := g.primary.Requests()[before:]
		if len(reqs) != 1 {
			t.Fatalf("%d upstream requests, want 1", len(reqs))
		}
		var sent struct {
			Limit json.RawMessage `json:"max_completion_tokens"`
		}
		if err := json.Unmarshal(reqs[0].Body, &sent); err != nil {
			t.Fatal(err)
		}
		return string(sent.Limit)
	}
	t.Run("a reload", func(t *testing.T) {
		cache := "\tcache {\n\t\tmax_size 1017KB\n\t}\n"
		g := newGateway(t, capped("")+cache)
		q := question("What is your return policy? (a reload)", false, "")
		before := len(g.primary.Requests())
		resp, _ := g.post(q)
		expectCache(t, resp, "miss")
		if got := sentLimit(t, g, before); got != "7" {
			t.Fatalf("sent with max_completion_tokens %s, want the cap 7", got)
		}
		g.reload(capped("\t\toutput_cap off\n") + cache)
		before = len(g.primary.Requests())
		resp, _ = g.post(q)
		if got := resp.Header.Get("X-LLM-Cache"); got != "miss" {
			t.Fatalf("after the reload to output_cap off: X-LLM-Cache %q, want a miss (the stored answer was cut at 7 tokens)", got)
		}
		if got := sentLimit(t, g, before); got != "" {
			t.Errorf("sent with max_completion_tokens %s, want none", got)
		}
	})
	t.Run("a provider's header", func(t *testing.T) {
		cache := "\tcache {\n\t\tmax_size 1019KB\n\t}\n"
		g := newGateway(t, defaultRouter+cache)
		q := question("What is your return policy? (a header)", false, "")
		resp, _ := g.post(q)
		expectCache(t, resp, "miss")
		g.reload(strings.Replace(defaultRouter, "timeout 2s", "timeout 2s\n\t\theader Anthropic-Beta output-128k-2025-02-19", 1) + cache)
		before := len(g.primary.Requests())
		resp, _ = g.post(q)
		if got := resp.Header.Get("X-LLM-Cache"); got != "miss" {
			t.Fatalf("after the reload that sends the provider a header: X-LLM-Cache %q, want a miss", got)
		}
		if reqs := g.primary.Requests()[before:]; len(reqs) != 1 || reqs[0].Header.Get("Anthropic-Beta") == "" {
			t.Errorf("%d upstream requests, want 1 with the provider's header", len(reqs))
		}
	})
	t.Run("a shared store", func(t *testing.T) {
		g := newGateway(t, defaultRouter)
		cache := "\tcache {\n\t\tmax_size 1018KB\n\t\tscope shared\n\t\tstore cap_shared\n\t}\n"
		a, b := g.fill(capped("")+cache), g.fill(defaultRouter+cache)
		g.tc.InitServer(globalOptions+"\n"+siteAddress+" {\n\thandle /a/* {\n\t\tllm_router {"+a+"\n\t\t}\n\t}\n\thandle /b/* {\n\t\tllm_router {"+b+"\n\t\t}\n\t}\n}\n", "caddyfile")
		q := question("What is your return policy? (a shared store)", false, "")
		resp, _ := g.postPath("/a/v1/chat/completions", q)
		expectCache(t, resp, "miss")
		before := len(g.primary.Requests())
		resp, _ = g.postPath("/b/v1/chat/completions", q)
		if got := resp.Header.Get("X-LLM-Cache"); got != "miss" {
			t.Fatalf("handler b, without a budget: X-LLM-Cache %q, want a miss (a's answer was cut at 7 tokens)", got)
		}
		if got := sentLimit(t, g, before); got != "" {
			t.Errorf("handler b sent max_completion_tokens %s, want none", got)
		}
	})
}

// TestCacheKeyHasForwardedHeaders: a client header that forward_header
// opens may change the answer, so its value is part of the key: two
// requests that differ only in it never share an answer, stored or in
// flight; the same value hits. The correlation headers forwarded by
// default are not in the key: they differ on every request.
func TestCacheKeyHasForwardedHeaders(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 1041KB\n\t\tkey_header X-Team")+"\tforward_header x-custom X-Team\n")
	upstream := func() int { return len(g.primary.RequestsFor("deepseek-chat")) }
	q := question("Which sizes does the blue coat come in?", false, "")

	resp, _ := g.post(q, "X-Custom", "a", "X-Request-Id", "req-1")
	expectCache(t, resp, "miss")
	resp, _ = g.post(q, "X-Custom", "b", "X-Request-Id", "req-2")
	expectCache(t, resp, "miss")
	if n := upstream(); n != 2 {
		t.Fatalf("%d upstream requests for two X-Custom values, want 2", n)
	}
	if got := g.primary.RequestsFor("deepseek-chat")[1].Header.Get("X-Custom"); got != "b" {
		t.Errorf("X-Custom upstream = %q, want b", got)
	}
	// the same value again, with other correlation headers: a hit
	resp, body := g.post(q, "X-Custom", "a", "X-Request-Id", "req-3", "User-Agent", "another-sdk/2.0",
		"Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "X-Client-Request-Id", "cr-3")
	expectCache(t, resp, "hit")
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 0)
	resp, _ = g.post(q, "X-Custom", "b", "X-Request-Id", "req-4")
	expectCache(t, resp, "hit")
	// no value is a value of its own; a header both key_header and
	// forward_header name keys as either would
	resp, _ = g.post(q)
	expectCache(t, resp, "miss")
	resp, _ = g.post(q, "X-Team", "shop")
	expectCache(t, resp, "miss")
	resp, _ = g.post(q, "X-Team", "shop", "X-Request-Id", "req-5")
	expectCache(t, resp, "hit")
	if n := upstream(); n != 4 {
		t.Errorf("%d upstream requests, want 4", n)
	}

	// in flight: a request with another value does not follow the
	// identical one on its way to a model; one with the same value does
	g.primary.Set("deepseek-chat", mockllm.Behavior{ChunkDelay: 20 * time.Millisecond, Times: 1})
	q = question("Does the blue coat come in XL?", true, "")
	_, hangUp := g.streamUntil(q, "w0") // no X-Custom
	defer hangUp()
	resp, _ = g.post(q, "X-Custom", "a")
	expectCache(t, resp, "miss")
	resp, body = g.post(q, "X-Request-Id", "req-6")
	expectCache(t, resp, "hit")
	if !strings.HasSuffix(body, "data: [DONE]\n\n") {
		t.Errorf("follower's stream: %q", body)
	}
	if n := upstream(); n != 6 {
		t.Errorf("%d upstream requests, want 6 (the leader and the request with X-Custom)", n)
	}
}

// TestCacheStatsNameStore: the stats name a store that handlers name with
// store, and list the stores in a stable order, so that one can be told
// from another (they were listed unnamed, in the pool's random order).
func TestCacheStatsNameStore(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tstore stats_named"))
	resp, _ := g.post(question("Which store is this?", false, ""))
	expectCache(t, resp, "miss")
	st := fetchStats(t)
	var cs *CacheStats
	for i, c := range st.Caches {
		if c.Store == "stats_named" {
			cs = &st.Caches[i]
		}
	}
	if cs == nil || cs.Misses < 1 {
		t.Fatalf("no cache named stats_named with its miss in the stats: %+v", st.Caches)
	}
	if !slices.IsSortedFunc(st.Caches, func(a, b CacheStats) int { return strings.Compare(a.Store, b.Store) }) {
		t.Errorf("caches not in the order of their names: %+v", st.Caches)
	}
	var out bytes.Buffer
	if err := writeStatsTable(&out, st); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "\nstats_named ") {
		t.Errorf("the stats table does not name the store:\n%s", out.String())
	}
}
