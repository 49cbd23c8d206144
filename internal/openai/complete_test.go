package openai

import "testing"

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
