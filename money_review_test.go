package llmrouter

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestWholeStreamChargesTextAfterEarlyUsage: a provider that reports
// usage early in its stream (prompt tokens, output so far) and then
// streams more text and ends cleanly with [DONE], without another usage
// report, billed all that text: the early report is not the bill, as it
// is not for a stream cut short after it.
func TestWholeStreamChargesTextAfterEarlyUsage(t *testing.T) {
	const more = 400 // chunks of 40 characters: 10 tokens each
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, _ map[string]any) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Once"},"finish_reason":null}],"usage":{"prompt_tokens":20,"completion_tokens":1,"total_tokens":21}}`+"\n\n")
		for range more {
			io.WriteString(w, chunk(strings.Repeat("word ", 8)))
		}
		io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\ndata: [DONE]\n\n")
	})
	r := benchRouter(t, up.URL, nil)
	srv := routerServer(t, r)
	done := requestsDone(t)
	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"deepseek-v3.2","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Write a long story."}]}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "[DONE]") {
		t.Fatalf("the stream did not end with [DONE]: %.200s", b)
	}
	waitFor(t, done, "the stream to be counted")
	if c := chargedTo(r, "deepseek-v3.2"); c.in != 20 || c.out < more*10 {
		t.Errorf("charged %+v, want the provider's 20 input tokens and at least the %d output streamed after its usage", c, more*10)
	}
}
