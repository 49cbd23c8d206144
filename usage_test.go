package llmrouter

import "testing"

func TestUsageParsing(t *testing.T) {
	body := []byte(`{"id":"x","choices":[{"message":{"content":"\"usage\":{\"prompt_tokens\":999}"}}],"usage":{"prompt_tokens":120,"completion_tokens":10,"total_tokens":130,"prompt_tokens_details":{"cached_tokens":64,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":3}}}`)
	u, ok := usageFromJSON(body)
	if !ok || u != (usage{input: 120, output: 10, cachedInput: 64}) {
		t.Errorf("usageFromJSON = %+v %v", u, ok)
	}
	if _, ok := usageFromJSON([]byte(`{"usage":null}`)); ok {
		t.Error("null usage parsed")
	}
	chunk := []byte(`{"id":"x","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}`)
	if u, n, ok := usageFromChunk(chunk); !ok || n != 0 || u.input != 7 || u.output != 2 {
		t.Errorf("usage chunk = %+v %d %v", u, n, ok)
	}
	final := []byte(`{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":2}}`)
	if u, n, ok := usageFromChunk(final); !ok || n != 1 || u.output != 2 {
		t.Errorf("usage on a content chunk = %+v %d %v", u, n, ok)
	}
	if n := jsonStringChars([]byte(`a\"é✓" tail`)); n != 4 {
		t.Errorf("jsonStringChars = %d, want 4", n)
	}
}
