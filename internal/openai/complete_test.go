package openai

import (
	"encoding/json"
	"testing"
)

// TestGenerations: what a request makes the provider generate, and bill:
// n answers, completions' best_of when larger, for each prompt of a
// completions request; best_of is read strictly.
func TestGenerations(t *testing.T) {
	for _, tc := range []struct {
		api  API
		body string
		want int64
	}{
		{Chat, `{"messages":[{"role":"user","content":"x"}]}`, 1},
		{Chat, `{"messages":[{"role":"user","content":"x"}],"n":3}`, 3},
		{Chat, `{"messages":[{"role":"user","content":"x"}],"best_of":5}`, 1}, // not chat's
		{Completions, `{"prompt":"x"}`, 1},
		{Completions, `{"prompt":"x","n":2,"best_of":5}`, 5},
		{Completions, `{"prompt":["a","b","c"],"n":2}`, 6},
		{Completions, `{"prompt":[[1,2],[3,4]],"best_of":3}`, 6},
		{Completions, `{"prompt":[1,2,3]}`, 1}, // one prompt of token ids
		{Completions, `{"prompt":"x","best_of":null}`, 1},
	} {
		var r Request
		if err := r.Parse([]byte(tc.body), tc.api); err != nil {
			t.Errorf("%s: %v", tc.body, err)
			continue
		}
		if got := r.Generations(); got != tc.want {
			t.Errorf("%s: %d generations, want %d", tc.body, got, tc.want)
		}
	}
	for _, body := range []string{
		`{"prompt":"x","best_of":"5"}`,
		`{"prompt":"x","best_of":2.5}`,
		`{"prompt":"x","best_of":-1}`,
		`{"prompt":"x","best_of":1000}`,
		`{"prompt":"x","best_of":1,"Best_Of":50}`,
	} {
		var r Request
		err := r.Parse([]byte(body), Completions)
		if e, ok := err.(*Error); !ok || (e.Param != "best_of" && e.Param != "Best_Of") {
			t.Errorf("%s: %v, want a refusal of best_of", body, err)
		}
	}
}

// TestIsComplete: only a whole answer is worth serving again.
func TestIsComplete(t *testing.T) {
	for _, tc := range []struct {
		api  API
		body string
		want bool
	}{
		{Chat, `{"choices":[{"index":0,"message":{"content":"Hi"},"finish_reason":"stop"}]}`, true},
		{Chat, `{"choices":[{"finish_reason":"stop"},{"finish_reason":"length"}]}`, true},
		{Chat, `{"choices":[{"finish_reason":"stop"},{"finish_reason":null}]}`, false},
		{Chat, `{"choices":[{"message":{"content":"Hi"}}]}`, false},
		{Chat, `{"choices":[{"finish_reason":""}]}`, false},
		{Chat, `{"choices":[{"finish_reason":"error"}]}`, false},
		{Chat, `{"choices":[{"finish_reason":"insufficient_system_resource"}]}`, false}, // DeepSeek's, cut short
		{Chat, `{"choices":[{"finish_reason":"abort"}]}`, false},                        // vLLM's, aborted
		{Chat, `{"choices":[{"finish_reason":"stop"},{"finish_reason":"content_filter"}]}`, false},
		{Chat, `{"choices":[{"finish_reason":"stop","error":{"code":502}}]}`, false},
		{Chat, `{"choices":[{"finish_reason":"stop","error":null}]}`, true},
		{Completions, `{"choices":[{"text":"Hi","finish_reason":"error"}]}`, false},
		{Chat, `{"choices":[]}`, false},
		{Chat, `{"choices":null}`, false},
		{Chat, `{"id":"x"}`, false},
		{Chat, `{"choices":[{"finish_reason":"stop"}]`, false}, // cut off
		{Completions, `{"choices":[{"text":"Hi","finish_reason":"stop"}]}`, true},
		{Responses, `{"status":"completed","output":[]}`, true},
		{Responses, `{"status":"incomplete","output":[]}`, false},
		{Embeddings, `{"data":[{"embedding":[0.1]}]}`, true},
		{Embeddings, `{"data":[]}`, false},
	} {
		if got := IsComplete(tc.api, []byte(tc.body)); got != tc.want {
			t.Errorf("%d %s: %v, want %v", tc.api, tc.body, got, tc.want)
		}
	}
}

// FuzzIsComplete: any bytes, never a panic; a whole answer is valid JSON.
func FuzzIsComplete(f *testing.F) {
	f.Add(`{"choices":[{"finish_reason":"stop"}]}`)
	f.Add(`{"choices":[{"finish_reason":"`)
	f.Add(`{"data":[`)
	f.Add(`{"status":"completed"`)
	f.Fuzz(func(t *testing.T, body string) {
		for api := Chat; api <= Embeddings; api++ {
			if IsComplete(api, []byte(body)) && !json.Valid([]byte(body)) {
				t.Errorf("%d: %q complete but not JSON", api, body)
			}
		}
	})
}

func BenchmarkIsComplete(b *testing.B) {
	answer := []byte(`{"id":"chatcmpl-mock-1","object":"chat.completion","created":1700000000,"model":"gemini-2.5-flash","choices":[{"index":0,"message":{"role":"assistant","content":"w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 "},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":10,"total_tokens":14,"prompt_tokens_details":{"cached_tokens":0}}}`)
	b.SetBytes(int64(len(answer)))
	b.ReportAllocs()
	for b.Loop() {
		if !IsComplete(Chat, answer) {
			b.Fatal("incomplete")
		}
	}
}

func BenchmarkAnswerUsage(b *testing.B) {
	answer := []byte(`{"id":"chatcmpl-mock-1","object":"chat.completion","created":1700000000,"model":"gemini-2.5-flash","choices":[{"index":0,"message":{"role":"assistant","content":"w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 "},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":10,"total_tokens":14,"prompt_tokens_details":{"cached_tokens":0}}}`)
	b.SetBytes(int64(len(answer)))
	b.ReportAllocs()
	for b.Loop() {
		if _, found, _ := AnswerUsage(answer); !found {
			b.Fatal("no usage")
		}
	}
}
