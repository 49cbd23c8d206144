package openai

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/llmrouter/caddy-llm-router/internal/testkit"
)

// TestChatConversions: a chat answer turned into a stream and back is the
// same answer, tool calls and usage included.
func TestChatConversions(t *testing.T) {
	const answer = `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there","tool_calls":[{"id":"call_1","type":"function","function":{"name":"track","arguments":"{\"id\":\"42\"}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}`
	stream, err := ChatJSONToStream([]byte(answer))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(stream), "data: [DONE]\n\n") || strings.Count(string(stream), "data: ") != 4 {
		t.Fatalf("stream: %s", stream)
	}
	back, err := ChatStreamToJSON(stream)
	if err != nil {
		t.Fatal(err)
	}
	var a, b map[string]any
	_ = json.Unmarshal([]byte(answer), &a)
	_ = json.Unmarshal(back, &b)
	delete(a["choices"].([]any)[0].(map[string]any)["message"].(map[string]any), "refusal")
	if !testkit.JSONEqual(mustJSON(a), mustJSON(b)) {
		t.Errorf("round trip\n got %s\nwant %s", back, answer)
	}

	// a stream in many chunks, tool call arguments in pieces
	const chunks = "data: {\"id\":\"c\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"track\",\"arguments\":\"{\\\"id\"}}]}}]}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\":1}\"}}]}}]}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n" +
		"data: [DONE]\n\n"
	js, err := ChatStreamToJSON([]byte(chunks))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(stream), `"id":"call_1","index":0,"type":"function"}]`) {
		t.Errorf("the stream's tool call has no index: %s", stream)
	}
	const want = `{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello","tool_calls":[{"id":"call_1","type":"function","function":{"name":"track","arguments":"{\"id\":1}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}`
	if !testkit.JSONEqual(js, []byte(want)) {
		t.Errorf("assembled\n got %s\nwant %s", js, want)
	}
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

// TestChatConversionsShapes: several choices, no usage, refusals, events
// with CR LF and comments, and what is not a chat answer or stream.
func TestChatConversionsShapes(t *testing.T) {
	const two = `{"id":"c","object":"chat.completion","created":2,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"a"},"logprobs":null,"finish_reason":"stop"},{"index":1,"message":{"role":"assistant","content":null,"refusal":"no"},"logprobs":null,"finish_reason":"stop"}]}`
	stream, err := ChatJSONToStream([]byte(two))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(stream), "data: "); n != 5 || strings.Contains(string(stream), `"usage"`) {
		t.Fatalf("two choices, no usage: %d events: %s", n, stream)
	}
	back, err := ChatStreamToJSON(stream)
	if err != nil {
		t.Fatal(err)
	}
	if !testkit.JSONEqual(back, []byte(two)) {
		t.Errorf("round trip\n got %s\nwant %s", back, two)
	}

	// choices out of order, CR LF, a comment, an event with no data
	const events = ": ping\r\n\r\n" +
		"data: {\"id\":\"c\",\"created\":3,\"model\":\"m\",\"choices\":[{\"index\":1,\"delta\":{\"role\":\"assistant\",\"content\":\"B\"}}]}\r\n\r\n" +
		"event: x\r\n\r\n" +
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"A\"},\"finish_reason\":\"length\"}]}\r\n\r\n" +
		"data: [DONE]\r\n\r\n"
	js, err := ChatStreamToJSON([]byte(events))
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"id":"c","object":"chat.completion","created":3,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"A"},"logprobs":null,"finish_reason":"length"},{"index":1,"message":{"role":"assistant","content":"B"},"logprobs":null,"finish_reason":null}]}`
	if !testkit.JSONEqual(js, []byte(want)) {
		t.Errorf("assembled\n got %s\nwant %s", js, want)
	}

	for _, bad := range []string{``, `[]`, `{"choices":{}}`, `{"choices":[{"index":"0"}]}`} {
		if _, err := ChatJSONToStream([]byte(bad)); err == nil {
			t.Errorf("ChatJSONToStream(%s): no error", bad)
		}
	}
	for _, bad := range []string{"data: {\"choices\":\n\n", "data: [1]\n\n", "data: {\"choices\":[]}\n\ndata: {\"cho"} {
		if _, err := ChatStreamToJSON([]byte(bad)); err == nil {
			t.Errorf("ChatStreamToJSON(%q): no error", bad)
		}
	}
}

// TestStreamToJSONKeepsEverything: log probabilities are joined across
// chunks and the service tier kept; a member the assembly does not know,
// or a second tool call at the index of another, is an error, not
// something the stored answer silently loses.
func TestStreamToJSONKeepsEverything(t *testing.T) {
	const events = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":3,\"model\":\"m\",\"service_tier\":\"default\",\"obfuscation\":\"xy\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"logprobs\":{\"content\":[{\"token\":\"Hi\",\"logprob\":-0.1,\"bytes\":[72,105],\"top_logprobs\":[]}],\"refusal\":null},\"finish_reason\":null}]}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\"},\"logprobs\":{\"content\":[{\"token\":\"!\",\"logprob\":-0.2,\"bytes\":[33],\"top_logprobs\":[]}],\"refusal\":null},\"finish_reason\":\"stop\"}]}\n\n" +
		"data: [DONE]\n\n"
	js, err := ChatStreamToJSON([]byte(events))
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"id":"c","object":"chat.completion","created":3,"model":"m","service_tier":"default","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"logprobs":{"content":[{"token":"Hi","logprob":-0.1,"bytes":[72,105],"top_logprobs":[]},{"token":"!","logprob":-0.2,"bytes":[33],"top_logprobs":[]}],"refusal":null},"finish_reason":"stop"}]}`
	if !testkit.JSONEqual(js, []byte(want)) {
		t.Errorf("assembled\n got %s\nwant %s", js, want)
	}
	for _, unknown := range []string{
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"audio\":{\"data\":\"AAA\"}}}]}\n\n",
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"function_call\":{\"name\":\"f\"}}}]}\n\n",
		"data: {\"id\":\"c\",\"citations\":[\"https://example.com\"],\"choices\":[]}\n\n",
		// two calls at one index (or none): merged, they would be one
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}\n\n" +
			"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_2\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}}]}\n\n",
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"call_1\",\"function\":{\"name\":\"f\"}},{\"id\":\"call_2\",\"function\":{\"name\":\"g\"}}]}}]}\n\n",
	} {
		if _, err := ChatStreamToJSON([]byte(unknown)); err == nil {
			t.Errorf("ChatStreamToJSON(%q) assembled a stream with a member it would lose", unknown)
		}
	}
}

// TestStreamToJSONStopsAtDone: what follows [DONE] is no part of the
// answer (a client of the stream stops there), and is not even read.
func TestStreamToJSONStopsAtDone(t *testing.T) {
	const head = "data: {\"id\":\"c\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}\n\n" +
		"data: [DONE]\n\n"
	const want = `{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":"stop"}]}`
	for _, tail := range []string{
		"",
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" and more\"}}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n",
		"data: {\"id\":\"c\",\"choices\":[{\"index\":1,\"delta\":{\"content\":\"another\"}}]}\n\n",
		"data: not JSON\n\n",
		"data: {\"unknown\":1}\n\n",
		"data: {\"choices\":[",
	} {
		js, err := ChatStreamToJSON([]byte(head + tail))
		if err != nil {
			t.Errorf("tail %q: %v", tail, err)
			continue
		}
		if !testkit.JSONEqual(js, []byte(want)) {
			t.Errorf("tail %q: assembled\n got %s\nwant %s", tail, js, want)
		}
	}
}

// TestStreamToJSONNamesExactly: a chunk's member names are read as the
// rest of the package reads them, exactly (after escapes): a name in
// another case, or twice, is refused rather than read as encoding/json
// would (case-insensitively, the last) where a client's parser reads
// another.
func TestStreamToJSONNamesExactly(t *testing.T) {
	chunk := func(s string) string { return "data: " + s + "\n\ndata: [DONE]\n\n" }
	for _, bad := range []string{
		`{"id":"c","choices":[{"index":0,"delta":{"content":"a","Content":"b"}}]}`,
		`{"id":"c","choices":[{"index":0,"delta":{"Content":"b"}}]}`,
		`{"id":"c","choices":[{"index":0,"delta":{"content":"a","content":"b"}}]}`,
		`{"id":"c","choices":[{"index":0,"delta":{"content":"a","c\u006fntent":"b"}}]}`,
		`{"id":"c","choices":[],"Choices":[{"index":0,"delta":{"content":"b"}}]}`,
		`{"id":"c","ID":"d","choices":[]}`,
		`{"id":"c","choices":[{"index":0,"Index":1,"delta":{"content":"a"}}]}`,
		`{"id":"c","choices":[{"index":0,"delta":{"content":"a"},"Delta":{"content":"b"}}]}`,
		`{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"x","Arguments":"y"}}]}}]}`,
		`{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"ID":"call_2","function":{}}]}}]}`,
		`{"id":"c","choices":[{"index":0,"delta":{},"logprobs":{"content":[],"Content":[]}}]}`,
		`{"id":"c","ſystem_fingerprint":"fp","choices":[]}`, // U+017F folds to s
		`{"id":"c","choices":[],"usage":{"prompt_tokens":1},"Usage":{"prompt_tokens":9}}`,
		" \t{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"Content\":\"b\"}}]}",
		"{\"id\":\"c\",\"choices\": [ {\"index\":0,\"delta\": {\"Content\":\"b\"}}]}",
		"",
	} {
		if js, err := ChatStreamToJSON([]byte(chunk(bad))); err == nil {
			t.Errorf("%s: assembled %s", bad, js)
		}
	}
	// escaped names are the names they decode to
	js, err := ChatStreamToJSON([]byte(chunk(`{"id":"c","choices":[{"ind\u0065x":0,"delta":{"c\u006fntent":"Hi","tool_calls":[{"index":0,"function":{"\u006eame":"f","arguments":""}}]}}]}`)))
	const want = `{"id":"c","object":"chat.completion","created":0,"model":"","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","tool_calls":[{"function":{"name":"f","arguments":""}}]},"logprobs":null,"finish_reason":null}]}`
	if err != nil || !testkit.JSONEqual(js, []byte(want)) {
		t.Errorf("escaped names: %s, %v; want %s", js, err, want)
	}
}
