package mockllm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const waitLimit = 5 * time.Second

const chatBody = `{"model":"m","messages":[{"role":"system","content":"You are helpful"},{"role":"user","content":"hi there"}]}`

// hook wraps the mock so tests can tell when a request has reached it (body
// fully read) and when its handler has returned.
type hook struct {
	s       *Server
	arrived chan string
	done    chan string
}

func newHook(s *Server) *hook {
	return &hook{s: s, arrived: make(chan string, 64), done: make(chan string, 64)}
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	h.arrived <- r.URL.Path
	h.s.ServeHTTP(w, r)
	h.done <- r.URL.Path
}

func start(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func post(ctx context.Context, c *http.Client, url, body string, hdr ...string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return c.Do(req)
}

func mustPost(t *testing.T, ts *httptest.Server, path, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	resp, err := post(context.Background(), ts.Client(), ts.URL+path, body, hdr...)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// freshClient never reuses connections, so the transport never retries.
func freshClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
}

func streamBody(model string, includeUsage bool) string {
	so := ""
	if includeUsage {
		so = `,"stream_options":{"include_usage":true}`
	}
	return fmt.Sprintf(`{"model":%q,"stream":true%s,"messages":[{"role":"user","content":"one two three"}]}`, model, so)
}

func TestPromptTokens(t *testing.T) {
	if got := PromptTokens([]byte(chatBody)); got != 11 {
		t.Fatalf("PromptTokens = %d, want 11", got)
	}
	parts := `{"messages":[{"role":"user","content":[{"type":"text","text":"a b c"}]},{"role":"assistant","content":null}]}`
	if got := PromptTokens([]byte(parts)); got != 9 {
		t.Fatalf("PromptTokens(parts) = %d, want 9", got)
	}
	if got := PromptTokens([]byte("not json")); got != 0 {
		t.Fatalf("PromptTokens(invalid) = %d, want 0", got)
	}
}

func TestNonStream(t *testing.T) {
	s := New()
	s.Set("m", Behavior{CachedTokens: 4})
	ts := start(t, s)
	resp, b := mustPost(t, ts, "/v1/chat/completions", chatBody)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content-type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var got struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		Model   string `json:"model"`
		Choices []struct {
			Index   int `json:"index"`
			Message struct {
				Role, Content string
			} `json:"message"`
			Logprobs     any    `json:"logprobs"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage usageJSON `json:"usage"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if !strings.HasPrefix(got.ID, "chatcmpl-mock-") || got.Object != "chat.completion" || got.Created != Created || got.Model != "m" {
		t.Fatalf("bad envelope: %s", b)
	}
	if len(got.Choices) != 1 || got.Choices[0].Message.Role != "assistant" || got.Choices[0].FinishReason != "stop" ||
		got.Choices[0].Message.Content != "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 " {
		t.Fatalf("bad choices: %s", b)
	}
	if !strings.Contains(string(b), `"logprobs":null`) || !strings.Contains(string(b), `"cached_tokens":4`) {
		t.Fatalf("missing logprobs/cached_tokens: %s", b)
	}
	p := PromptTokens([]byte(chatBody))
	u := got.Usage
	if u.PromptTokens != p || u.CompletionTokens != 10 || u.TotalTokens != p+10 || u.PromptTokensDetails.CachedTokens != 4 {
		t.Fatalf("usage = %+v", u)
	}
	if sv := s.Served("m"); sv != (Usage{Prompt: p, Completion: 10, Cached: 4, Requests: 1}) {
		t.Fatalf("Served = %+v", sv)
	}
	reqs := s.RequestsFor("m")
	if len(reqs) != 1 || reqs[0].Method != "POST" || reqs[0].Path != "/v1/chat/completions" || reqs[0].Stream ||
		string(reqs[0].Body) != chatBody || reqs[0].Header.Get("Content-Type") != "application/json" {
		t.Fatalf("recorded %+v", reqs)
	}

	// max_tokens caps the answer; any path ending in /chat/completions works.
	_, b = mustPost(t, ts, "/openai/deployments/x/chat/completions", `{"model":"m","max_tokens":3,"messages":[{"role":"user","content":"x"}]}`)
	if err := json.Unmarshal(b, &got); err != nil || got.Choices[0].Message.Content != "w0 w1 w2 " || got.Usage.CompletionTokens != 3 {
		t.Fatalf("max_tokens: %v %s", err, b)
	}
}

func TestBadRequests(t *testing.T) {
	s := New()
	ts := start(t, s)
	for _, body := range []string{`{"model":`, `{"model":"m"}`} {
		resp, b := mustPost(t, ts, "/v1/chat/completions", body)
		var env errorEnvelope
		if resp.StatusCode != 400 || json.Unmarshal(b, &env) != nil || env.Error.Type != "invalid_request_error" {
			t.Fatalf("%s: %d %s", body, resp.StatusCode, b)
		}
	}
	if n := len(s.Requests()); n != 2 {
		t.Fatalf("recorded %d requests, want 2", n)
	}
	if resp, _ := mustPost(t, ts, "/v1/nope", chatBody); resp.StatusCode != 404 {
		t.Fatalf("unknown path: %d", resp.StatusCode)
	}
}

// readEvents reads SSE data payloads until EOF or error.
func readEvents(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			return out, fmt.Errorf("unexpected line %q", line)
		}
		out = append(out, data)
	}
	return out, sc.Err()
}

func TestStream(t *testing.T) {
	for _, includeUsage := range []bool{false, true} {
		t.Run(fmt.Sprint("include_usage=", includeUsage), func(t *testing.T) {
			s := New()
			s.Set("m", Behavior{Chunks: 4, CachedTokens: 2})
			ts := start(t, s)
			body := streamBody("m", includeUsage)
			resp, b := mustPost(t, ts, "/v1/chat/completions", body)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("Cache-Control") != "no-cache" {
				t.Fatalf("status %d headers %v", resp.StatusCode, resp.Header)
			}
			events, err := readEvents(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			want := 1 + 4 + 1 + 1 // role, content, finish, [DONE]
			if includeUsage {
				want++
			}
			if len(events) != want || events[len(events)-1] != "[DONE]" {
				t.Fatalf("got %d events: %q", len(events), events)
			}
			var text strings.Builder
			p := PromptTokens([]byte(body))
			for i, ev := range events[:len(events)-1] {
				var raw map[string]json.RawMessage
				if err := json.Unmarshal([]byte(ev), &raw); err != nil {
					t.Fatalf("event %d: %v: %s", i, err, ev)
				}
				var ch struct {
					ID                string  `json:"id"`
					Object            string  `json:"object"`
					Created           int64   `json:"created"`
					Model             string  `json:"model"`
					SystemFingerprint *string `json:"system_fingerprint"`
					Choices           []struct {
						Index int `json:"index"`
						Delta struct {
							Role    string  `json:"role"`
							Content *string `json:"content"`
						} `json:"delta"`
						FinishReason *string `json:"finish_reason"`
					} `json:"choices"`
					Usage *usageJSON `json:"usage"`
				}
				if err := json.Unmarshal([]byte(ev), &ch); err != nil {
					t.Fatal(err)
				}
				if !strings.HasPrefix(ch.ID, "chatcmpl-mock-") || ch.Object != "chat.completion.chunk" || ch.Created != Created || ch.Model != "m" {
					t.Fatalf("event %d envelope: %s", i, ev)
				}
				usage, hasUsage := raw["usage"]
				isUsageChunk := includeUsage && i == len(events)-2
				switch {
				case isUsageChunk:
					if len(ch.Choices) != 0 || ch.Usage == nil || ch.Usage.PromptTokens != p || ch.Usage.CompletionTokens != 4 ||
						ch.Usage.TotalTokens != p+4 || ch.Usage.PromptTokensDetails.CachedTokens != 2 {
						t.Fatalf("usage chunk: %s", ev)
					}
					continue
				case includeUsage:
					if !hasUsage || string(usage) != "null" {
						t.Fatalf("event %d: want usage:null: %s", i, ev)
					}
				default:
					if hasUsage {
						t.Fatalf("event %d: unexpected usage: %s", i, ev)
					}
				}
				if len(ch.Choices) != 1 {
					t.Fatalf("event %d choices: %s", i, ev)
				}
				c := ch.Choices[0]
				switch {
				case i == 0:
					if c.Delta.Role != "assistant" || c.Delta.Content == nil || *c.Delta.Content != "" || c.FinishReason != nil {
						t.Fatalf("first chunk: %s", ev)
					}
				case i <= 4:
					if c.Delta.Content == nil || c.FinishReason != nil {
						t.Fatalf("content chunk: %s", ev)
					}
					text.WriteString(*c.Delta.Content)
				default:
					if c.Delta.Content != nil || c.Delta.Role != "" || c.FinishReason == nil || *c.FinishReason != "stop" {
						t.Fatalf("finish chunk: %s", ev)
					}
				}
			}
			if text.String() != "w0 w1 w2 w3 " {
				t.Fatalf("text %q", text.String())
			}
			if sv := s.Served("m"); sv != (Usage{Prompt: p, Completion: 4, Cached: 2, Requests: 1}) {
				t.Fatalf("Served = %+v", sv)
			}
			if r := s.Requests()[0]; !r.Stream || r.IncludeUsage != includeUsage || r.Model != "m" {
				t.Fatalf("recorded %+v", r)
			}
		})
	}
}

func TestStatusRetryAfterAndTimes(t *testing.T) {
	s := New()
	s.Set("m", Behavior{Status: 429, RetryAfter: "7", Times: 2})
	ts := start(t, s)
	for i := range 2 {
		resp, b := mustPost(t, ts, "/v1/chat/completions", chatBody)
		var env errorEnvelope
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "7" || json.Unmarshal(b, &env) != nil ||
			env.Error.Code != "rate_limit_exceeded" || env.Error.Message == "" {
			t.Fatalf("request %d: %d %v %s", i, resp.StatusCode, resp.Header, b)
		}
	}
	if resp, _ := mustPost(t, ts, "/v1/chat/completions", chatBody); resp.StatusCode != 200 || resp.Header.Get("Retry-After") != "" {
		t.Fatalf("after Times: %d", resp.StatusCode)
	}
	if sv := s.Served("m"); sv.Requests != 1 {
		t.Fatalf("Served = %+v", sv)
	}

	s.Set("m", Behavior{Status: 503, Body: `{"custom":true}`})
	resp, b := mustPost(t, ts, "/v1/chat/completions", chatBody)
	if resp.StatusCode != 503 || string(b) != `{"custom":true}` {
		t.Fatalf("custom body: %d %s", resp.StatusCode, b)
	}
	s.Set("m", Behavior{Status: 500})
	resp, b = mustPost(t, ts, "/v1/chat/completions", chatBody)
	var env errorEnvelope
	if resp.StatusCode != 500 || json.Unmarshal(b, &env) != nil || env.Error.Type != "server_error" {
		t.Fatalf("500: %s", b)
	}
	s.Clear()
	if resp, _ := mustPost(t, ts, "/v1/chat/completions", chatBody); resp.StatusCode != 200 {
		t.Fatalf("after Clear: %d", resp.StatusCode)
	}
	if n := len(s.Requests()); n != 6 {
		t.Fatalf("Clear dropped requests: %d", n)
	}
	s.Reset()
	if n := len(s.Requests()); n != 0 || s.Served("m") != (Usage{}) {
		t.Fatalf("Reset kept state")
	}
}

func TestMalformed(t *testing.T) {
	s := New()
	s.Set("m", Behavior{Malformed: true})
	ts := start(t, s)
	resp, b := mustPost(t, ts, "/v1/chat/completions", chatBody)
	if resp.StatusCode != 200 || json.Valid(b) {
		t.Fatalf("non-stream: %d %s", resp.StatusCode, b)
	}
	resp, b = mustPost(t, ts, "/v1/chat/completions", streamBody("m", true))
	events, err := readEvents(bytes.NewReader(b))
	if resp.StatusCode != 200 || err != nil || len(events) == 0 || json.Valid([]byte(events[0])) {
		t.Fatalf("stream: %d %v %q", resp.StatusCode, err, events)
	}
	if sv := s.Served("m"); sv != (Usage{}) {
		t.Fatalf("Served = %+v", sv)
	}
}

func TestHangCancel(t *testing.T) {
	s := New()
	s.Set("h", Behavior{Hang: true})
	h := newHook(s)
	ts := start(t, h)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		resp, err := post(ctx, ts.Client(), ts.URL+"/v1/chat/completions", `{"model":"h","messages":[]}`)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	recv(t, h.arrived, "arrival")
	cancel()
	if err := recv(t, errc, "client error"); err == nil {
		t.Fatal("hung request succeeded")
	}
	if m := recv(t, s.Canceled(), "Canceled"); m != "h" {
		t.Fatalf("Canceled got %q", m)
	}
	recv(t, h.done, "handler return")
}

func TestCloseWithHangingRequest(t *testing.T) {
	s := New()
	s.Set("h", Behavior{Hang: true})
	h := newHook(s)
	ts := httptest.NewServer(h)
	client := freshClient()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		resp, err := post(ctx, client, ts.URL+"/v1/chat/completions", chatBody)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	recv(t, h.arrived, "arrival")
	closed := make(chan struct{})
	go func() { ts.Close(); close(closed) }()
	recv(t, closed, "httptest.Server.Close")
	cancel()
	recv(t, errc, "client error")
	recv(t, h.done, "handler return")
}

func TestLatencyCancel(t *testing.T) {
	s := New()
	s.Set("slow", Behavior{Latency: time.Hour})
	h := newHook(s)
	ts := start(t, h)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := post(ctx, ts.Client(), ts.URL+"/v1/chat/completions", `{"model":"slow","messages":[{"content":"x"}]}`)
		errc <- err
	}()
	recv(t, h.arrived, "arrival")
	cancel()
	recv(t, errc, "client error")
	if m := recv(t, s.Canceled(), "Canceled"); m != "slow" {
		t.Fatalf("Canceled got %q", m)
	}
	recv(t, h.done, "handler return")
}

func TestReset(t *testing.T) {
	s := New()
	s.Set("r", Behavior{Reset: true})
	ts := start(t, s)
	resp, err := post(context.Background(), freshClient(), ts.URL+"/v1/chat/completions", `{"model":"r","messages":[{"content":"x"}]}`)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("Reset: got status %d, want transport error", resp.StatusCode)
	}
	if len(s.RequestsFor("r")) != 1 {
		t.Fatal("reset request not recorded")
	}
}

func TestBreakAfterChunks(t *testing.T) {
	s := New()
	s.Set("b", Behavior{BreakAfterChunks: 3})
	ts := start(t, s)
	resp, err := post(context.Background(), freshClient(), ts.URL+"/v1/chat/completions", streamBody("b", true))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events, _ := readEvents(resp.Body)
	content := 0
	for _, ev := range events {
		if ev == "[DONE]" {
			t.Fatalf("stream finished: %q", events)
		}
		if strings.Contains(ev, `"content":"w`) {
			content++
		}
	}
	if content > 3 {
		t.Fatalf("got %d content chunks, want <= 3", content)
	}
	if sv := s.Served("b"); sv != (Usage{}) {
		t.Fatalf("Served = %+v", sv)
	}
}

func TestStallBeforeFirstChunk(t *testing.T) {
	s := New()
	s.Set("s", Behavior{StallBeforeFirstChunk: true})
	ts := start(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := post(ctx, ts.Client(), ts.URL+"/v1/chat/completions", streamBody("s", false))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d headers %v", resp.StatusCode, resp.Header)
	}
	readc := make(chan int, 1)
	go func() {
		n, _ := resp.Body.Read(make([]byte, 1))
		readc <- n
	}()
	cancel()
	if n := recv(t, readc, "body read"); n != 0 {
		t.Fatalf("read %d bytes from stalled stream", n)
	}
	if m := recv(t, s.Canceled(), "Canceled"); m != "s" {
		t.Fatalf("Canceled got %q", m)
	}
}

func TestHoldAfterChunks(t *testing.T) {
	s := New()
	s.Set("hold", Behavior{HoldAfterChunks: 2})
	ts := start(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := post(ctx, ts.Client(), ts.URL+"/v1/chat/completions", streamBody("hold", false))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	content := 0
	for content < 2 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(line, `"content":"w`) {
			content++
		}
	}
	cancel()
	if m := recv(t, s.Canceled(), "Canceled"); m != "hold" {
		t.Fatalf("Canceled got %q", m)
	}
	if sv := s.Served("hold"); sv != (Usage{}) {
		t.Fatalf("Served = %+v", sv)
	}
}

func TestRequireKey(t *testing.T) {
	s := New()
	s.SetRequireKey("sk-test")
	ts := start(t, s)
	for _, hdr := range [][]string{nil, {"Authorization", "Bearer wrong"}} {
		resp, b := mustPost(t, ts, "/v1/chat/completions", chatBody, hdr...)
		if resp.StatusCode != 401 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		want := `{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}`
		if strings.TrimSpace(string(b)) != want {
			t.Fatalf("body %s", b)
		}
	}
	if resp, _ := mustPost(t, ts, "/v1/chat/completions", chatBody, "Authorization", "Bearer sk-test"); resp.StatusCode != 200 {
		t.Fatalf("with key: %d", resp.StatusCode)
	}
	resp, err := ts.Client().Get(ts.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("models without key: %d", resp.StatusCode)
	}
	if n := len(s.Requests()); n != 4 {
		t.Fatalf("recorded %d, want 4", n)
	}
}

func TestEmbeddings(t *testing.T) {
	s := New()
	ts := start(t, s)
	resp, b := mustPost(t, ts, "/v1/embeddings", `{"model":"e","input":"hello big world"}`)
	var got struct {
		Object string `json:"object"`
		Data   []struct {
			Object    string    `json:"object"`
			Index     int       `json:"index"`
			Embedding []float64 `json:"embedding"`
		} `json:"data"`
		Model string `json:"model"`
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
			TotalTokens  int `json:"total_tokens"`
		} `json:"usage"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &got) != nil {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	if got.Object != "list" || got.Model != "e" || len(got.Data) != 1 || got.Data[0].Object != "embedding" ||
		len(got.Data[0].Embedding) != 8 || got.Usage.PromptTokens != 3 || got.Usage.TotalTokens != 3 {
		t.Fatalf("bad response %s", b)
	}
	_, b = mustPost(t, ts, "/v1/embeddings", `{"model":"e","input":["a b","c"]}`)
	if json.Unmarshal(b, &got) != nil || len(got.Data) != 2 || got.Data[1].Index != 1 || got.Usage.PromptTokens != 3 {
		t.Fatalf("array input %s", b)
	}
	if sv := s.Served("e"); sv != (Usage{Prompt: 6, Requests: 2}) {
		t.Fatalf("Served = %+v", sv)
	}
}

func TestModels(t *testing.T) {
	s := New()
	s.Set("configured", Behavior{Status: 500})
	ts := start(t, s)
	mustPost(t, ts, "/v1/chat/completions", `{"model":"seen","messages":[{"content":"x"}]}`)
	resp, err := ts.Client().Get(ts.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Object string `json:"object"`
		Data   []struct {
			ID, Object string
			Created    int64
			OwnedBy    string `json:"owned_by"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Object != "list" || len(got.Data) != 2 || got.Data[0].ID != "configured" || got.Data[1].ID != "seen" ||
		got.Data[0].Object != "model" || got.Data[0].OwnedBy != "mock" || got.Data[0].Created != Created {
		t.Fatalf("models %+v", got)
	}
}

func TestBehaviorJSON(t *testing.T) {
	var b Behavior
	in := `{"status":429,"retry_after":"2","latency":"50ms","ChunkDelay":"1s","breakAfterChunks":3,"times":1}`
	if err := json.Unmarshal([]byte(in), &b); err != nil {
		t.Fatal(err)
	}
	want := Behavior{Status: 429, RetryAfter: "2", Latency: 50 * time.Millisecond, ChunkDelay: time.Second, BreakAfterChunks: 3, Times: 1}
	if b != want {
		t.Fatalf("got %+v", b)
	}
	js, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var back Behavior
	if err := json.Unmarshal(js, &back); err != nil || back != want {
		t.Fatalf("round trip %s: %+v %v", js, back, err)
	}
	if err := json.Unmarshal([]byte(`{"bogus":1}`), &b); err == nil {
		t.Fatal("unknown field accepted")
	}
}

func TestConcurrent(t *testing.T) {
	s := New()
	ts := start(t, s)
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			model := fmt.Sprintf("m%d", i%4)
			switch i % 5 {
			case 0:
				s.Set(model, Behavior{Status: 503, Times: 1})
			case 1:
				s.Clear()
			}
			body := streamBody(model, i%2 == 0)
			if i%3 == 0 {
				body = fmt.Sprintf(`{"model":%q,"messages":[{"content":"x"}]}`, model)
			}
			resp, err := post(context.Background(), ts.Client(), ts.URL+"/v1/chat/completions", body)
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			_ = s.Requests()
			_ = s.Served(model)
		}()
	}
	wg.Wait()
	if n := len(s.Requests()); n != 40 {
		t.Fatalf("recorded %d, want 40", n)
	}
}
