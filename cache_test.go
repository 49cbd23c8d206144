package llmrouter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestCacheKeyCanonical(t *testing.T) {
	key := func(body string, h ...string) answerKey {
		t.Helper()
		if _, err := parseRequestBody([]byte(body)); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		hdr := http.Header{}
		for i := 0; i+1 < len(h); i += 2 {
			hdr.Add(h[i], h[i+1])
		}
		return cacheKey(chatEndpoint, "ns", []byte(body), hdr, []string{"X-Team"})
	}
	base := key(`{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}`)
	same := []string{
		`{ "temperature" : 0 , "messages" : [ { "content" : "hi" , "role" : "user" } ] , "model" : "m" }`,
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"user":"u1"}`,
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"stream":true,"stream_options":{"include_usage":true}}`,
		`{"mod\u0065l":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}`,
	}
	for _, b := range same {
		if key(b) != base {
			t.Errorf("%s: another key than the same question", b)
		}
	}
	other := []string{
		`{"model":"m","messages":[{"role":"user","content":"hi!"}],"temperature":0}`,
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.0}`,
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"metadata":{"user":"u1"}}`,
		`{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"user","content":""}],"temperature":0}`,
		`{"model":"m","messages":[{"role":"system","content":"hi"}],"temperature":0}`,
	}
	seen := map[answerKey]string{base: "base"}
	for _, b := range other {
		k := key(b)
		if prev, dup := seen[k]; dup {
			t.Errorf("%s: same key as %s", b, prev)
		}
		seen[k] = b
	}
	// nested objects are sorted too
	if key(`{"t":{"x":1,"y":[{"p":1,"q":{"r":2,"s":3}}]}}`) != key(`{"t":{"y":[{"q":{"s":3,"r":2},"p":1}],"x":1}}`) {
		t.Error("nested member order changes the key")
	}
	// objects small and large (two ways of sorting members)
	var fwd, rev []string
	for i := range 14 {
		fwd = append(fwd, fmt.Sprintf(`"k%02d":%d`, i, i))
		rev = append([]string{fwd[i]}, rev...)
	}
	for _, n := range []int{3, 12, 13, 14} {
		if key("{"+strings.Join(fwd[:n], ",")+"}") != key("{"+strings.Join(rev[14-n:], ",")+"}") {
			t.Errorf("%d members: their order changes the key", n)
		}
	}
	// the encoding has no ambiguous boundaries
	if key(`{"a":["ab"]}`) == key(`{"a":["a","b"]}`) || key(`{"a":{"b":1}}`) == key(`{"a":{"b1":""}}`) ||
		key(`{"ab":1}`) == key(`{"a":1,"b":1}`) || key(`{"a":{}}`) == key(`{"a":"{}"}`) ||
		key(`{"a":[]}`) == key(`{"a":{}}`) || key(`{"a":[[1],[2]]}`) == key(`{"a":[[1,2]]}`) {
		t.Error("two different values hash alike")
	}
	if key(`{"a":1}`, "X-Team", "a") == key(`{"a":1}`, "X-Team", "b") || key(`{"a":1}`) == key(`{"a":1}`, "X-Team", "a") {
		t.Error("key headers are not part of the key")
	}
	if cacheKey(embeddingsEndpoint, "ns", []byte(`{"a":1}`), nil, nil) == cacheKey(chatEndpoint, "ns", []byte(`{"a":1}`), nil, nil) ||
		cacheKey(chatEndpoint, "ns2", []byte(`{"a":1}`), nil, nil) == cacheKey(chatEndpoint, "ns", []byte(`{"a":1}`), nil, nil) {
		t.Error("endpoint or namespace not in the key")
	}
	if k := key(`{"messages":[{"content":"secret question"}]}`); bytes.Contains(k[:], []byte("secret")) {
		t.Error("the key holds prompt text")
	}
}

func TestCacheControlHeader(t *testing.T) {
	for v, want := range map[string][2]bool{
		"": {true, true}, "no-cache": {false, true}, "no-store": {false, false}, "max-age=0, No-Cache": {false, true}, "private": {true, true},
	} {
		h := http.Header{}
		if v != "" {
			h.Set("Cache-Control", v)
		}
		if l, s := cacheControl(h); l != want[0] || s != want[1] {
			t.Errorf("Cache-Control %q: lookup %v store %v, want %v", v, l, s, want)
		}
	}
}

// TestCacheConversions: a chat answer turned into a stream and back is the
// same answer, tool calls and usage included.
func TestCacheConversions(t *testing.T) {
	const answer = `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there","tool_calls":[{"id":"call_1","type":"function","function":{"name":"track","arguments":"{\"id\":\"42\"}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}`
	stream, err := chatJSONToStream([]byte(answer))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(stream), "data: [DONE]\n\n") || strings.Count(string(stream), "data: ") != 4 {
		t.Fatalf("stream: %s", stream)
	}
	back, err := chatStreamToJSON(stream)
	if err != nil {
		t.Fatal(err)
	}
	var a, b map[string]any
	_ = json.Unmarshal([]byte(answer), &a)
	_ = json.Unmarshal(back, &b)
	delete(a["choices"].([]any)[0].(map[string]any)["message"].(map[string]any), "refusal")
	if !jsonEqual(mustJSON(a), mustJSON(b)) {
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
	js, err := chatStreamToJSON([]byte(chunks))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(stream), `"id":"call_1","index":0,"type":"function"}]`) {
		t.Errorf("the stream's tool call has no index: %s", stream)
	}
	const want = `{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello","tool_calls":[{"id":"call_1","type":"function","function":{"name":"track","arguments":"{\"id\":1}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}`
	if !jsonEqual(js, []byte(want)) {
		t.Errorf("assembled\n got %s\nwant %s", js, want)
	}
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

// FuzzCacheKey: any body the router accepts has a key, and white space
// between tokens never changes it.
func FuzzCacheKey(f *testing.F) {
	f.Add(`{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}`)
	f.Add(`{"a":{"b":[1,{"c":null,"d":true}],"e":"\u00e9"},"stream":false}`)
	f.Add(`{"user":{"x":1},"z":[[],[{}]]}`)
	f.Fuzz(func(t *testing.T, body string) {
		if _, err := parseRequestBody([]byte(body)); err != nil {
			return
		}
		k := cacheKey(chatEndpoint, "ns", []byte(body), nil, nil)
		var compact, indented bytes.Buffer
		if err := json.Compact(&compact, []byte(body)); err != nil {
			t.Fatalf("accepted but not JSON: %v", err)
		}
		if err := json.Indent(&indented, []byte(body), " ", "\t"); err != nil {
			t.Fatal(err)
		}
		if cacheKey(chatEndpoint, "ns", compact.Bytes(), nil, nil) != k || cacheKey(chatEndpoint, "ns", indented.Bytes(), nil, nil) != k {
			t.Errorf("white space changes the key of %q", body)
		}
	})
}

// FuzzSkipScalar: the canonicalizer's fast skip of a valid scalar ends
// where the validating scanner does.
func FuzzSkipScalar(f *testing.F) {
	for _, v := range []string{`"a\"b"`, `"\\\\"`, `"x\\\"y\\"`, `-1.5e3`, `true`, `null`, `"Sản phẩm"`, `"\u0022"`} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if v == "" || v[0] == '{' || v[0] == '[' {
			return
		}
		b := []byte(v + `,"next"]`)
		want := jsonScanner{b: b}
		if want.value(1) != nil || want.i != len(v) {
			return // not one valid scalar
		}
		got := jsonScanner{b: b}
		skipScalar(&got)
		if got.i != want.i {
			t.Errorf("%q: skipped to %d, the scanner to %d", v, got.i, want.i)
		}
	})
}

// TestCacheOtherFormWeighed: an answer served in its other form counts
// against max_size with it, and an entry replaced meanwhile keeps its own
// weight.
func TestCacheOtherFormWeighed(t *testing.T) {
	s, err := newCacheStore(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	answer := []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}`)
	key := answerKey{1}
	e := &cacheEntry{body: answer}
	s.put(key, e)
	before := s.entries.WeightedSize()
	stream, err := s.bodyFor(key, e, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.entries.WeightedSize(); got != before+uint64(len(stream)) {
		t.Errorf("weighed %d after the stream form (%d bytes), want %d", got, len(stream), before+uint64(len(stream)))
	}
	if again, _ := s.bodyFor(key, e, true); &again[0] != &stream[0] {
		t.Error("the stream form was made twice")
	}

	// replaced before its other form is made: the new entry's weight stays
	old := &cacheEntry{body: answer}
	s.put(key, old)
	s.put(key, &cacheEntry{body: answer})
	before = s.entries.WeightedSize()
	if _, err := s.bodyFor(key, old, true); err != nil {
		t.Fatal(err)
	}
	if got := s.entries.WeightedSize(); got != before {
		t.Errorf("a replaced entry's other form changed the weight: %d, want %d", got, before)
	}
	if cur, _ := s.entries.GetIfPresent(key); cur == old {
		t.Error("the replaced entry came back")
	}
}
