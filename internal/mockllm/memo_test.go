package mockllm

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestMemoParsesABodyOnce(t *testing.T) {
	var m memo[int]
	calls := 0
	parse := func(b []byte) int { calls++; return len(b) }
	body := []byte(`{"model":"m"}`)
	for range 3 {
		if got := m.get(body, parse); got != len(body) {
			t.Fatalf("get = %d, want %d", got, len(body))
		}
	}
	if calls != 1 {
		t.Fatalf("a repeated body was parsed %d times, want once", calls)
	}
	// the key is the bytes, not the slice: the caller may reuse its buffer
	other := []byte(`{"model":"n"}`)
	copy(body, other)
	m.get(body, parse)
	if calls != 2 {
		t.Fatalf("changed bytes read from the memo (parses %d, want 2)", calls)
	}
	// bodies above the bound are parsed every time, and never kept
	big := []byte(strings.Repeat(" ", memoMaxBody+1))
	m.get(big, parse)
	m.get(big, parse)
	if calls != 4 || len(m.m) != 2 {
		t.Fatalf("a large body: %d parses, %d kept; want 4 and 2", calls, len(m.m))
	}
	// the memo never holds more than its bound
	for i := range 3 * memoMaxEntries {
		m.get(fmt.Appendf(nil, "%d", i), parse)
		if len(m.m) > memoMaxEntries {
			t.Fatalf("memo holds %d bodies, bound %d", len(m.m), memoMaxEntries)
		}
	}
}

// A repeated body is answered as its first sending was, request by request:
// the memo changes no answer.
func TestRepeatedBodiesAnsweredAlike(t *testing.T) {
	s := New()
	ts := start(t, s)
	for _, body := range []string{
		chatBody,
		`{"model":"m","max_tokens":2,"messages":[{"role":"user","content":"a b"}]}`,
		`{"model":"m","Model":"M","messages":[{"role":"user","content":"x"}]}`, // Go reads the last: "M"
		`{"model":"m","messages":[]}`,
		`{"model":"m"}`,
		`{"model":`,
	} {
		var first string
		for i := range 3 {
			resp, b := mustPost(t, ts, "/v1/chat/completions", body)
			var got map[string]any
			_ = json.Unmarshal(b, &got)
			delete(got, "id") // the only field that differs by request
			js, _ := json.Marshal(got)
			out := fmt.Sprint(resp.StatusCode, " ", string(js))
			if i == 0 {
				first = out
			} else if out != first {
				t.Fatalf("%s: sending %d answered %s, the first %s", body, i+1, out, first)
			}
		}
	}
	reqs := s.Requests()
	if len(reqs) != 18 || reqs[6].Model != "m" || reqs[6].Body == nil {
		t.Fatalf("recorded %d requests (want 18); the third body's model %q", len(reqs), reqs[6].Model)
	}
}
