package mockllm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"sort"
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

func TestEndAfterChunks(t *testing.T) {
	s := New()
	s.Set("e", Behavior{EndAfterChunks: 2})
	ts := start(t, s)
	resp, err := post(context.Background(), freshClient(), ts.URL+"/v1/chat/completions", streamBody("e", true))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events, err := readEvents(resp.Body)
	if err != nil {
		t.Fatalf("the body did not end cleanly: %v", err)
	}
	content := 0
	for _, ev := range events {
		if ev == "[DONE]" || strings.Contains(ev, `"usage":{`) {
			t.Fatalf("stream finished: %q", events)
		}
		if strings.Contains(ev, `"content":"w`) {
			content++
		}
	}
	if content != 2 {
		t.Fatalf("got %d content chunks, want 2", content)
	}
	if sv := s.Served("e"); sv != (Usage{}) {
		t.Fatalf("Served = %+v", sv)
	}
}

// openStream posts a stream request for model to a new mock that gives it
// b; cancel makes the client leave. The response is closed, and the
// client gone, when the test ends.
func openStream(t *testing.T, model string, b Behavior, includeUsage bool) (*Server, *http.Response, context.CancelFunc) {
	t.Helper()
	s := New()
	s.Set(model, b)
	ts := start(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	resp, err := post(ctx, ts.Client(), ts.URL+"/v1/chat/completions", streamBody(model, includeUsage))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return s, resp, cancel
}

func TestStallBeforeFirstChunk(t *testing.T) {
	s, resp, cancel := openStream(t, "s", Behavior{StallBeforeFirstChunk: true}, false)
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
	s, resp, cancel := openStream(t, "hold", Behavior{HoldAfterChunks: 2}, false)
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

// TestHoldAfterDone: the whole stream, [DONE] included, then a response
// that stays open until the client leaves; the answer counts as served.
func TestHoldAfterDone(t *testing.T) {
	s, resp, cancel := openStream(t, "hold", Behavior{HoldAfterDone: true}, true)
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "data: [DONE]\n" {
			break
		}
	}
	cancel() // the mock sees the client leave only if it still holds the response
	if m := recv(t, s.Canceled(), "Canceled"); m != "hold" {
		t.Fatalf("Canceled got %q", m)
	}
	if sv := s.Served("hold"); sv.Requests != 1 || sv.Completion != DefaultChunks {
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

func decodeEnvelope(t *testing.T, b []byte) errorEnvelope {
	t.Helper()
	var env errorEnvelope
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatalf("not an error envelope: %v: %s", err, b)
	}
	return env
}

func TestEcho(t *testing.T) {
	s := New()
	s.Set("m", Behavior{Status: 400, Echo: true})
	ts := start(t, s)
	hdr := []string{"Authorization", "Bearer sk-secret", "X-Custom", "a"}
	resp, b := mustPost(t, ts, "/v1/chat/completions", chatBody, hdr...)
	env := decodeEnvelope(t, b)
	if resp.StatusCode != 400 || resp.Header.Get("Content-Type") != "application/json" ||
		resp.Header.Get("X-Echo-Authorization") != "Bearer sk-secret" || env.Error.Type != "invalid_request_error" {
		t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, b)
	}
	// Go's client sends exactly these headers (Accept-Encoding, Content-Length
	// and User-Agent are added by the transport).
	want := "Invalid request. Headers: Accept-Encoding: gzip; Authorization: Bearer sk-secret; Content-Length: " +
		fmt.Sprint(len(chatBody)) + "; Content-Type: application/json; Host: " + strings.TrimPrefix(ts.URL, "http://") +
		"; User-Agent: Go-http-client/1.1; X-Custom: a"
	if env.Error.Message != want {
		t.Fatalf("message\n got %q\nwant %q", env.Error.Message, want)
	}

	// A stream request gets the same JSON error; Retry-After and other
	// statuses work alongside.
	s.Set("m", Behavior{Status: 429, RetryAfter: "3", Echo: true})
	resp, b = mustPost(t, ts, "/v1/chat/completions", streamBody("m", true), hdr...)
	env = decodeEnvelope(t, b)
	if resp.StatusCode != 429 || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Retry-After") != "3" ||
		!strings.HasPrefix(env.Error.Message, "Rate limit reached for requests. Please try again later. Headers: ") ||
		!strings.Contains(env.Error.Message, "; Authorization: Bearer sk-secret; ") || env.Error.Code != "rate_limit_exceeded" {
		t.Fatalf("stream: %d %v %s", resp.StatusCode, resp.Header, b)
	}
	s.Set("m", Behavior{Status: 422, Echo: true})
	for _, path := range []string{"/v1/completions", "/v1/responses", "/v1/embeddings"} {
		resp, b = mustPost(t, ts, path, `{"model":"m","prompt":"x","input":"x"}`, hdr...)
		if env = decodeEnvelope(t, b); resp.StatusCode != 422 || !strings.Contains(env.Error.Message, "Authorization: Bearer sk-secret") ||
			resp.Header.Get("X-Echo-Authorization") != "Bearer sk-secret" {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
	}

	// A healthy answer only carries the header; no Authorization, no header.
	s.Set("m", Behavior{Echo: true})
	if resp, _ = mustPost(t, ts, "/v1/chat/completions", chatBody, hdr...); resp.StatusCode != 200 ||
		resp.Header.Get("X-Echo-Authorization") != "Bearer sk-secret" {
		t.Fatalf("healthy: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, _ = mustPost(t, ts, "/v1/chat/completions", chatBody); resp.Header.Values("X-Echo-Authorization") != nil {
		t.Fatalf("without Authorization: %v", resp.Header)
	}
	if sv := s.Served("m"); sv.Requests != 2 {
		t.Fatalf("Served = %+v", sv)
	}
}

func TestContentType(t *testing.T) {
	s := New()
	ts := start(t, s)

	// A healthy stream request answered with the non-stream JSON.
	s.Set("m", Behavior{ContentType: "application/json", Chunks: 3, CachedTokens: 1})
	body := streamBody("m", true)
	resp, b := mustPost(t, ts, "/v1/chat/completions", body)
	var got completion
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal(b, &got) != nil ||
		got.Object != "chat.completion" || got.Choices[0].Message.Content != "w0 w1 w2 " || got.Usage.CompletionTokens != 3 {
		t.Fatalf("stream as JSON: %d %v %s", resp.StatusCode, resp.Header, b)
	}
	p := PromptTokens([]byte(body))
	if sv := s.Served("m"); sv != (Usage{Prompt: p, Completion: 3, Cached: 1, Requests: 1}) {
		t.Fatalf("Served = %+v", sv)
	}
	for path, object := range map[string]string{
		"/v1/completions": `"object":"text_completion"`, "/v1/responses": `"object":"response"`} {
		resp, b = mustPost(t, ts, path, `{"model":"m","stream":true,"prompt":"a","input":"a"}`)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || !json.Valid(b) ||
			!strings.Contains(string(b), object) {
			t.Fatalf("%s stream as JSON: %d %v %s", path, resp.StatusCode, resp.Header, b)
		}
	}

	// An event-stream type keeps the stream, under that exact type.
	s.Set("m", Behavior{ContentType: "text/event-stream; charset=utf-8", Chunks: 2})
	resp, b = mustPost(t, ts, "/v1/chat/completions", streamBody("m", false))
	events, err := readEvents(bytes.NewReader(b))
	if resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" || err != nil || len(events) != 5 || events[4] != "[DONE]" {
		t.Fatalf("sse type: %v %v %q", resp.Header, err, events)
	}

	// Body, error envelopes and Malformed under the given type.
	s.Set("m", Behavior{Status: 502, ContentType: "text/html", Body: "<html><body>Bad Gateway</body></html>"})
	for _, body := range []string{chatBody, streamBody("m", false)} {
		resp, b = mustPost(t, ts, "/v1/chat/completions", body)
		if resp.StatusCode != 502 || resp.Header.Get("Content-Type") != "text/html" || !strings.HasPrefix(string(b), "<html>") {
			t.Fatalf("html body: %d %v %s", resp.StatusCode, resp.Header, b)
		}
	}
	s.Set("m", Behavior{Status: 500, ContentType: "text/plain"})
	if resp, b = mustPost(t, ts, "/v1/chat/completions", chatBody); resp.StatusCode != 500 ||
		resp.Header.Get("Content-Type") != "text/plain" || decodeEnvelope(t, b).Error.Type != "server_error" {
		t.Fatalf("envelope: %d %v %s", resp.StatusCode, resp.Header, b)
	}
	s.Set("m", Behavior{Malformed: true, ContentType: "text/html"})
	if resp, b = mustPost(t, ts, "/v1/chat/completions", chatBody); resp.Header.Get("Content-Type") != "text/html" || json.Valid(b) {
		t.Fatalf("malformed: %v %s", resp.Header, b)
	}
	s.Set("m", Behavior{ContentType: "text/html"})
	if resp, b = mustPost(t, ts, "/v1/chat/completions", chatBody); resp.Header.Get("Content-Type") != "text/html" || !json.Valid(b) {
		t.Fatalf("healthy: %v %s", resp.Header, b)
	}
}

func TestEmptyBody(t *testing.T) {
	s := New()
	ts := start(t, s)
	cases := []struct {
		b      Behavior
		body   string
		status int
		ctype  string
	}{
		{Behavior{EmptyBody: true}, chatBody, 200, "application/json"},
		{Behavior{EmptyBody: true, Body: "ignored"}, chatBody, 200, "application/json"},
		{Behavior{EmptyBody: true, Status: 502}, chatBody, 502, "application/json"},
		{Behavior{EmptyBody: true}, streamBody("m", true), 200, "text/event-stream"},
		{Behavior{EmptyBody: true, ContentType: "text/plain"}, chatBody, 200, "text/plain"},
	}
	for i, tc := range cases {
		s.Set("m", tc.b)
		resp, b := mustPost(t, ts, "/v1/chat/completions", tc.body)
		if resp.StatusCode != tc.status || len(b) != 0 || resp.ContentLength != 0 || resp.Header.Get("Content-Length") != "0" ||
			resp.Header.Get("Content-Type") != tc.ctype {
			t.Fatalf("case %d: %d %v %q", i, resp.StatusCode, resp.Header, b)
		}
	}
	s.Set("m", Behavior{EmptyBody: true})
	for _, path := range []string{"/v1/completions", "/v1/responses", "/v1/embeddings"} {
		if resp, b := mustPost(t, ts, path, `{"model":"m","prompt":"x","input":"x"}`); resp.StatusCode != 200 || len(b) != 0 {
			t.Fatalf("%s: %d %q", path, resp.StatusCode, b)
		}
	}
	if sv := s.Served("m"); sv != (Usage{}) {
		t.Fatalf("Served = %+v", sv)
	}
}

func TestTruncateAfter(t *testing.T) {
	s := New()
	ts := start(t, s)
	_, full := mustPost(t, ts, "/v1/chat/completions", chatBody)
	s.Reset()
	s.Set("m", Behavior{TruncateAfter: 40})
	resp, b := mustPost(t, ts, "/v1/chat/completions", chatBody)
	// The ids differ (chatcmpl-mock-1, -2); the rest is the healthy body's.
	if resp.StatusCode != 200 || resp.ContentLength != 40 || len(b) != 40 ||
		strings.Replace(string(b), "mock-2", "mock-1", 1) != string(full[:40]) || json.Valid(b) {
		t.Fatalf("truncated: %d %d %s", resp.StatusCode, resp.ContentLength, b)
	}
	for _, path := range []string{"/v1/completions", "/v1/responses", "/v1/embeddings"} {
		resp, b = mustPost(t, ts, path, `{"model":"m","prompt":"x","input":"x"}`)
		if resp.StatusCode != 200 || len(b) != 40 || json.Valid(b) {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
	}
	if sv := s.Served("m"); sv != (Usage{}) {
		t.Fatalf("Served = %+v", sv)
	}
	// Streams are not truncated; a limit past the end changes nothing.
	resp, b = mustPost(t, ts, "/v1/chat/completions", streamBody("m", false))
	if events, err := readEvents(bytes.NewReader(b)); err != nil || events[len(events)-1] != "[DONE]" {
		t.Fatalf("stream: %v %q", err, events)
	}
	s.Set("m", Behavior{TruncateAfter: len(full)})
	if _, b = mustPost(t, ts, "/v1/chat/completions", chatBody); !json.Valid(b) {
		t.Fatalf("long limit: %s", b)
	}
	if sv := s.Served("m"); sv.Requests != 2 {
		t.Fatalf("Served = %+v", sv)
	}
}

func TestErrorEvent(t *testing.T) {
	s := New()
	s.Set("m", Behavior{ErrorEvent: true})
	ts := start(t, s)
	const wantErr = `{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}`

	resp, b := mustPost(t, ts, "/v1/chat/completions", streamBody("m", true))
	events, err := readEvents(bytes.NewReader(b))
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || err != nil || len(events) != 2 ||
		!strings.Contains(events[0], `"role":"assistant"`) || events[1] != wantErr {
		t.Fatalf("chat: %d %v %q", resp.StatusCode, err, events)
	}
	resp, b = mustPost(t, ts, "/v1/completions", `{"model":"m","prompt":"x","stream":true}`)
	events, err = readEvents(bytes.NewReader(b))
	if resp.StatusCode != 200 || err != nil || len(events) != 1 || events[0] != wantErr {
		t.Fatalf("completions: %d %v %q", resp.StatusCode, err, events)
	}
	if sv := s.Served("m"); sv != (Usage{}) {
		t.Fatalf("Served = %+v", sv)
	}
	// Non-stream requests are unaffected; Echo extends the message.
	if resp, _ = mustPost(t, ts, "/v1/chat/completions", chatBody); resp.StatusCode != 200 || s.Served("m").Requests != 1 {
		t.Fatalf("non-stream: %d", resp.StatusCode)
	}
	s.Set("m", Behavior{ErrorEvent: true, Echo: true})
	_, b = mustPost(t, ts, "/v1/chat/completions", streamBody("m", false), "Authorization", "Bearer sk-x")
	if events, _ = readEvents(bytes.NewReader(b)); len(events) != 2 ||
		!strings.Contains(events[1], `processing your request. Headers: Accept-Encoding: gzip; Authorization: Bearer sk-x; `) {
		t.Fatalf("echo: %q", events)
	}
}

func TestCompletions(t *testing.T) {
	s := New()
	s.Set("c", Behavior{CachedTokens: 1})
	ts := start(t, s)
	body := `{"model":"c","prompt":"say hello to me","max_tokens":4}`
	resp, b := mustPost(t, ts, "/v1/completions", body)
	var got struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		Model   string `json:"model"`
		Choices []struct {
			Text         string  `json:"text"`
			Index        int     `json:"index"`
			Logprobs     any     `json:"logprobs"`
			FinishReason *string `json:"finish_reason"`
		} `json:"choices"`
		Usage *usageJSON `json:"usage"`
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal(b, &got) != nil {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	if !strings.HasPrefix(got.ID, "cmpl-mock-") || got.Object != "text_completion" || got.Created != Created || got.Model != "c" ||
		len(got.Choices) != 1 || got.Choices[0].Text != "w0 w1 w2 w3 " || got.Choices[0].FinishReason == nil ||
		*got.Choices[0].FinishReason != "stop" || !strings.Contains(string(b), `"logprobs":null`) {
		t.Fatalf("bad completion: %s", b)
	}
	if p := CompletionPromptTokens([]byte(body)); p != 7 || got.Usage == nil || got.Usage.PromptTokens != 7 ||
		got.Usage.CompletionTokens != 4 || got.Usage.TotalTokens != 11 || got.Usage.PromptTokensDetails.CachedTokens != 1 {
		t.Fatalf("usage (prompt %d): %s", p, b)
	}
	if sv := s.Served("c"); sv != (Usage{Prompt: 7, Completion: 4, Cached: 1, Requests: 1}) {
		t.Fatalf("Served = %+v", sv)
	}
	if r := s.RequestsFor("c"); len(r) != 1 || r[0].Path != "/v1/completions" {
		t.Fatalf("recorded %+v", r)
	}
	for prompt, want := range map[string]int{`["a b","c"]`: 9, `""`: 3, `[1,2,3]`: 6, `[[1],[2,3]]`: 9} {
		if n := CompletionPromptTokens(fmt.Appendf(nil, `{"prompt":%s}`, prompt)); n != want {
			t.Fatalf("CompletionPromptTokens(%s) = %d, want %d", prompt, n, want)
		}
	}
	if resp, b = mustPost(t, ts, "/v1/completions", `{"model":"c"}`); resp.StatusCode != 400 || decodeEnvelope(t, b).Error.Code != "missing_required_parameter" {
		t.Fatalf("missing prompt: %d %s", resp.StatusCode, b)
	}
	// The chat route still wins for …/chat/completions.
	if _, b = mustPost(t, ts, "/v1/chat/completions", chatBody); !strings.Contains(string(b), `"object":"chat.completion"`) {
		t.Fatalf("chat route: %s", b)
	}

	for _, includeUsage := range []bool{false, true} {
		s.Reset()
		s.Set("c", Behavior{Chunks: 3})
		so := ""
		if includeUsage {
			so = `,"stream_options":{"include_usage":true}`
		}
		body := `{"model":"c","prompt":["one two","three"],"stream":true` + so + `}`
		resp, b := mustPost(t, ts, "/v1/completions", body)
		events, err := readEvents(bytes.NewReader(b))
		want := 3 + 1 + 1 // text, finish, [DONE]
		if includeUsage {
			want++
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || err != nil ||
			len(events) != want || events[len(events)-1] != "[DONE]" {
			t.Fatalf("include_usage=%v: %d %v %q", includeUsage, resp.StatusCode, err, events)
		}
		var text strings.Builder
		for i, ev := range events[:len(events)-1] {
			var raw map[string]json.RawMessage
			var ch struct {
				ID, Object, Model string
				Created           int64
				Choices           []struct {
					Text         string  `json:"text"`
					Index        int     `json:"index"`
					FinishReason *string `json:"finish_reason"`
				} `json:"choices"`
				Usage *usageJSON `json:"usage"`
			}
			if json.Unmarshal([]byte(ev), &raw) != nil || json.Unmarshal([]byte(ev), &ch) != nil {
				t.Fatalf("event %d: %s", i, ev)
			}
			if !strings.HasPrefix(ch.ID, "cmpl-mock-") || ch.Object != "text_completion" || ch.Created != Created || ch.Model != "c" {
				t.Fatalf("event %d envelope: %s", i, ev)
			}
			if u, ok := raw["usage"]; ok != includeUsage {
				t.Fatalf("event %d usage presence: %s", i, ev)
			} else if ok && i < 4 && string(u) != "null" {
				t.Fatalf("event %d: want usage null: %s", i, ev)
			}
			switch {
			case i < 3:
				if len(ch.Choices) != 1 || ch.Choices[0].FinishReason != nil || !strings.Contains(ev, `"logprobs":null`) {
					t.Fatalf("text chunk: %s", ev)
				}
				text.WriteString(ch.Choices[0].Text)
			case i == 3:
				if len(ch.Choices) != 1 || ch.Choices[0].Text != "" || ch.Choices[0].FinishReason == nil || *ch.Choices[0].FinishReason != "stop" {
					t.Fatalf("finish chunk: %s", ev)
				}
			default:
				if len(ch.Choices) != 0 || ch.Usage == nil || ch.Usage.PromptTokens != 9 || ch.Usage.CompletionTokens != 3 || ch.Usage.TotalTokens != 12 {
					t.Fatalf("usage chunk: %s", ev)
				}
			}
		}
		if text.String() != "w0 w1 w2 " {
			t.Fatalf("text %q", text.String())
		}
		if sv := s.Served("c"); sv != (Usage{Prompt: 9, Completion: 3, Requests: 1}) {
			t.Fatalf("Served = %+v", sv)
		}
		if r := s.Requests()[0]; !r.Stream || r.IncludeUsage != includeUsage {
			t.Fatalf("recorded %+v", r)
		}
	}
}

func TestCompletionsFaults(t *testing.T) {
	s := New()
	ts := start(t, s)
	streamReq := `{"model":"c","prompt":"x","stream":true}`

	s.Set("c", Behavior{Malformed: true})
	if resp, b := mustPost(t, ts, "/v1/completions", `{"model":"c","prompt":"x"}`); resp.StatusCode != 200 || json.Valid(b) {
		t.Fatalf("malformed: %s", b)
	}
	_, b := mustPost(t, ts, "/v1/completions", streamReq)
	if events, err := readEvents(bytes.NewReader(b)); err != nil || len(events) != 2 || json.Valid([]byte(events[0])) {
		t.Fatalf("malformed stream: %q", events)
	}

	s.Set("c", Behavior{Status: 503, RetryAfter: "1", Times: 1})
	if resp, b := mustPost(t, ts, "/v1/completions", streamReq); resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" ||
		decodeEnvelope(t, b).Error.Type != "server_error" {
		t.Fatalf("status: %d %s", resp.StatusCode, b)
	}

	s.Set("c", Behavior{BreakAfterChunks: 2})
	resp, err := post(context.Background(), freshClient(), ts.URL+"/v1/completions", streamReq)
	if err != nil {
		t.Fatal(err)
	}
	events, _ := readEvents(resp.Body)
	resp.Body.Close()
	if len(events) > 2 || (len(events) > 0 && events[len(events)-1] == "[DONE]") {
		t.Fatalf("break: %q", events)
	}

	s.Set("c", Behavior{HoldAfterChunks: 1, ChunkDelay: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err = post(ctx, ts.Client(), ts.URL+"/v1/completions", streamReq)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.Contains(line, `"text":"w0 "`) {
		t.Fatalf("hold: %q %v", line, err)
	}
	cancel()
	if m := recv(t, s.Canceled(), "Canceled"); m != "c" {
		t.Fatalf("Canceled got %q", m)
	}
	if sv := s.Served("c"); sv != (Usage{}) {
		t.Fatalf("Served = %+v", sv)
	}
}

// sseEvent is one SSE event with its optional "event:" name.
type sseEvent struct{ name, data string }

// readNamedEvents reads SSE events (an optional "event:" line, then one
// "data:" line, then a blank line) until EOF or error.
func readNamedEvents(r io.Reader) ([]sseEvent, error) {
	var out []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.data == "" {
				return out, fmt.Errorf("event %q without data", cur.name)
			}
			out = append(out, cur)
			cur = sseEvent{}
		case strings.HasPrefix(line, "event: ") && cur.name == "" && cur.data == "":
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: ") && cur.data == "":
			cur.data = strings.TrimPrefix(line, "data: ")
		default:
			return out, fmt.Errorf("unexpected line %q", line)
		}
	}
	if cur != (sseEvent{}) {
		out = append(out, cur)
	}
	return out, sc.Err()
}

// responseFields are the Response fields the openai SDK's Response type
// requires, plus the usual optional ones OpenAI sends.
var responseFields = []string{"id", "object", "created_at", "status", "error", "incomplete_details", "instructions",
	"max_output_tokens", "model", "output", "parallel_tool_calls", "previous_response_id", "reasoning", "store",
	"temperature", "text", "tool_choice", "tools", "top_p", "truncation", "usage", "user", "metadata"}

type responseJSON struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	CreatedAt int64  `json:"created_at"`
	Status    string `json:"status"`
	Model     string `json:"model"`
	Output    []struct {
		Type, ID, Status, Role string
		Content                []struct {
			Type        string `json:"type"`
			Text        string `json:"text"`
			Annotations []any  `json:"annotations"`
		} `json:"content"`
	} `json:"output"`
	Usage *struct {
		InputTokens        int `json:"input_tokens"`
		InputTokensDetails struct {
			CachedTokens int `json:"cached_tokens"`
		} `json:"input_tokens_details"`
		OutputTokens        int `json:"output_tokens"`
		OutputTokensDetails struct {
			ReasoningTokens *int `json:"reasoning_tokens"`
		} `json:"output_tokens_details"`
		TotalTokens int `json:"total_tokens"`
	} `json:"usage"`
}

func checkResponse(t *testing.T, js []byte, status, model, text string, input, output, cached int) {
	t.Helper()
	var raw map[string]json.RawMessage
	var r responseJSON
	if json.Unmarshal(js, &raw) != nil || json.Unmarshal(js, &r) != nil {
		t.Fatalf("not a Response: %s", js)
	}
	for _, f := range responseFields {
		if _, ok := raw[f]; !ok {
			t.Fatalf("Response lacks %q: %s", f, js)
		}
	}
	for f, want := range map[string]string{"error": "null", "incomplete_details": "null", "tools": "[]", "metadata": "{}", "tool_choice": `"auto"`} {
		if string(raw[f]) != want {
			t.Fatalf("%s = %s, want %s", f, raw[f], want)
		}
	}
	if !strings.HasPrefix(r.ID, "resp_mock_") || r.Object != "response" || r.CreatedAt != Created || r.Status != status || r.Model != model {
		t.Fatalf("bad Response envelope: %s", js)
	}
	if status != "completed" {
		if len(r.Output) != 0 || string(raw["usage"]) != "null" {
			t.Fatalf("in-progress Response has output or usage: %s", js)
		}
		return
	}
	if len(r.Output) != 1 || r.Output[0].Type != "message" || !strings.HasPrefix(r.Output[0].ID, "msg_mock_") ||
		r.Output[0].Status != "completed" || r.Output[0].Role != "assistant" || len(r.Output[0].Content) != 1 ||
		r.Output[0].Content[0].Type != "output_text" || r.Output[0].Content[0].Text != text || r.Output[0].Content[0].Annotations == nil {
		t.Fatalf("bad output: %s", js)
	}
	u := r.Usage
	if u == nil || u.InputTokens != input || u.OutputTokens != output || u.TotalTokens != input+output ||
		u.InputTokensDetails.CachedTokens != cached || u.OutputTokensDetails.ReasoningTokens == nil || *u.OutputTokensDetails.ReasoningTokens != 0 {
		t.Fatalf("bad usage: %s", js)
	}
}

func TestResponses(t *testing.T) {
	s := New()
	s.Set("r", Behavior{Chunks: 5, CachedTokens: 3})
	ts := start(t, s)
	body := `{"model":"r","instructions":"be very brief","input":[{"role":"user","content":"hello there"},` +
		`{"role":"user","content":[{"type":"input_text","text":"one two three"}]}],"max_output_tokens":4,"temperature":0.5}`
	in := 3 + (3 + 2) + (3 + 3)
	if n := ResponseInputTokens([]byte(body)); n != in {
		t.Fatalf("ResponseInputTokens = %d, want %d", n, in)
	}
	if n := ResponseInputTokens([]byte(`{"input":"a b c"}`)); n != 6 {
		t.Fatalf("ResponseInputTokens(string) = %d, want 6", n)
	}
	resp, b := mustPost(t, ts, "/v1/responses", body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, b)
	}
	checkResponse(t, b, "completed", "r", "w0 w1 w2 w3 ", in, 4, 3)
	for _, echo := range []string{`"instructions":"be very brief"`, `"max_output_tokens":4`, `"temperature":0.5`} {
		if !strings.Contains(string(b), echo) {
			t.Fatalf("request setting not echoed (%s): %s", echo, b)
		}
	}
	if sv := s.Served("r"); sv != (Usage{Prompt: in, Completion: 4, Cached: 3, Requests: 1}) {
		t.Fatalf("Served = %+v", sv)
	}
	if resp, b = mustPost(t, ts, "/v1/responses", `{"model":"r"}`); resp.StatusCode != 400 || decodeEnvelope(t, b).Error.Code != "missing_required_parameter" {
		t.Fatalf("missing input: %d %s", resp.StatusCode, b)
	}

	// Streaming.
	s.Reset()
	s.Set("r", Behavior{Chunks: 3, CachedTokens: 1})
	body = `{"model":"r","input":"hi you","stream":true}`
	resp, b = mustPost(t, ts, "/v1/responses", body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	events, err := readNamedEvents(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	wantTypes := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
		"response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
		"response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"}
	if len(events) != len(wantTypes) {
		t.Fatalf("got %d events: %+v", len(events), events)
	}
	var itemID, text string
	for i, ev := range events {
		var e struct {
			Type           string          `json:"type"`
			SequenceNumber *int            `json:"sequence_number"`
			Response       json.RawMessage `json:"response"`
			ItemID         string          `json:"item_id"`
			OutputIndex    *int            `json:"output_index"`
			ContentIndex   *int            `json:"content_index"`
			Delta          string          `json:"delta"`
			Text           string          `json:"text"`
			Item           *struct {
				ID, Type, Status, Role string
				Content                []struct{ Type, Text string }
			} `json:"item"`
			Part *struct {
				Type, Text  string
				Annotations []any
			} `json:"part"`
		}
		if ev.name != wantTypes[i] || json.Unmarshal([]byte(ev.data), &e) != nil || e.Type != ev.name ||
			e.SequenceNumber == nil || *e.SequenceNumber != i {
			t.Fatalf("event %d: %+v", i, ev)
		}
		switch ev.name {
		case "response.created", "response.in_progress":
			checkResponse(t, e.Response, "in_progress", "r", "", 0, 0, 0)
		case "response.completed":
			checkResponse(t, e.Response, "completed", "r", "w0 w1 w2 ", 5, 3, 1)
		case "response.output_item.added", "response.output_item.done":
			wantStatus, wantParts := "in_progress", 0
			if ev.name == "response.output_item.done" {
				wantStatus, wantParts = "completed", 1
			}
			if e.Item == nil || e.OutputIndex == nil || *e.OutputIndex != 0 || e.Item.Type != "message" || e.Item.Role != "assistant" ||
				e.Item.Status != wantStatus || len(e.Item.Content) != wantParts {
				t.Fatalf("item event: %s", ev.data)
			}
			if itemID == "" {
				itemID = e.Item.ID
			} else if e.Item.ID != itemID {
				t.Fatalf("item id changed: %s", ev.data)
			}
		default:
			if e.ItemID != itemID || e.OutputIndex == nil || *e.OutputIndex != 0 || e.ContentIndex == nil || *e.ContentIndex != 0 {
				t.Fatalf("content event: %s", ev.data)
			}
			switch ev.name {
			case "response.output_text.delta":
				text += e.Delta
			case "response.output_text.done":
				if e.Text != "w0 w1 w2 " {
					t.Fatalf("done text: %s", ev.data)
				}
			case "response.content_part.added", "response.content_part.done":
				if e.Part == nil || e.Part.Type != "output_text" || e.Part.Annotations == nil ||
					(ev.name == "response.content_part.done") != (e.Part.Text == "w0 w1 w2 ") {
					t.Fatalf("part: %s", ev.data)
				}
			}
		}
	}
	if text != "w0 w1 w2 " || strings.Contains(string(b), "[DONE]") {
		t.Fatalf("text %q / body has [DONE]", text)
	}
	if sv := s.Served("r"); sv != (Usage{Prompt: 5, Completion: 3, Cached: 1, Requests: 1}) {
		t.Fatalf("Served = %+v", sv)
	}
	if r := s.RequestsFor("r"); len(r) != 1 || !r[0].Stream || r[0].Path != "/v1/responses" {
		t.Fatalf("recorded %+v", r)
	}
}

func TestResponsesFaults(t *testing.T) {
	s := New()
	ts := start(t, s)
	streamReq := `{"model":"r","input":"x","stream":true}`

	s.Set("r", Behavior{Malformed: true})
	if resp, b := mustPost(t, ts, "/v1/responses", `{"model":"r","input":"x"}`); resp.StatusCode != 200 || json.Valid(b) {
		t.Fatalf("malformed: %s", b)
	}
	_, b := mustPost(t, ts, "/v1/responses", streamReq)
	events, err := readNamedEvents(bytes.NewReader(b))
	if err != nil || len(events) != 1 || events[0].name != "response.created" || json.Valid([]byte(events[0].data)) {
		t.Fatalf("malformed stream: %v %+v", err, events)
	}

	s.Set("r", Behavior{ErrorEvent: true})
	resp, b := mustPost(t, ts, "/v1/responses", streamReq)
	events, err = readNamedEvents(bytes.NewReader(b))
	if resp.StatusCode != 200 || err != nil || len(events) != 4 || events[0].name != "response.created" || events[2].name != "response.output_item.added" || events[3].name != "error" ||
		events[3].data != `{"type":"error","sequence_number":3,"code":"server_error","message":"The server had an error while processing your request.","param":null}` {
		t.Fatalf("error event: %v %+v", err, events)
	}

	s.Set("r", Behavior{BreakAfterChunks: 2})
	resp, err = post(context.Background(), freshClient(), ts.URL+"/v1/responses", streamReq)
	if err != nil {
		t.Fatal(err)
	}
	events, _ = readNamedEvents(resp.Body)
	resp.Body.Close()
	deltas := 0
	for _, ev := range events {
		if ev.name == "response.output_text.delta" {
			deltas++
		}
		if ev.name == "response.completed" || ev.name == "response.output_text.done" {
			t.Fatalf("stream finished: %+v", events)
		}
	}
	if deltas > 2 {
		t.Fatalf("%d deltas, want <= 2", deltas)
	}

	s.Set("r", Behavior{HoldAfterChunks: 2})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err = post(ctx, ts.Client(), ts.URL+"/v1/responses", streamReq)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for deltas = 0; deltas < 2; {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "event: response.output_text.delta\n" {
			deltas++
		}
	}
	cancel()
	if m := recv(t, s.Canceled(), "Canceled"); m != "r" {
		t.Fatalf("Canceled got %q", m)
	}

	s.Set("r", Behavior{StallBeforeFirstChunk: true})
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	resp, err = post(ctx2, ts.Client(), ts.URL+"/v1/responses", streamReq)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stall: %d %v", resp.StatusCode, resp.Header)
	}
	cancel2()
	if m := recv(t, s.Canceled(), "Canceled"); m != "r" {
		t.Fatalf("Canceled got %q", m)
	}
	if sv := s.Served("r"); sv != (Usage{}) {
		t.Fatalf("Served = %+v", sv)
	}
}

func TestModelRetrieve(t *testing.T) {
	s := New()
	s.Set("configured", Behavior{})
	ts := start(t, s)
	mustPost(t, ts, "/v1/chat/completions", `{"model":"org/seen","messages":[{"content":"x"}]}`)
	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		resp, err := ts.Client().Get(ts.URL + path)
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
	for _, id := range []string{"configured", "org/seen"} {
		resp, b := get("/v1/models/" + id)
		var m struct {
			ID, Object string
			Created    int64
			OwnedBy    string `json:"owned_by"`
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal(b, &m) != nil ||
			m.ID != id || m.Object != "model" || m.Created != Created || m.OwnedBy != "mock" {
			t.Fatalf("%s: %d %s", id, resp.StatusCode, b)
		}
	}
	resp, b := get("/v1/models/nope")
	if env := decodeEnvelope(t, b); resp.StatusCode != 404 || env.Error.Code != "model_not_found" || env.Error.Type != "invalid_request_error" {
		t.Fatalf("unknown: %d %s", resp.StatusCode, b)
	}
	// Asking does not make a model known.
	if _, b = get("/v1/models"); strings.Contains(string(b), "nope") {
		t.Fatalf("list after retrieve: %s", b)
	}
	if r := s.RequestsFor("nope"); len(r) != 1 || r[0].Method != "GET" || r[0].Path != "/v1/models/nope" {
		t.Fatalf("recorded %+v", r)
	}
	// The id's behavior applies.
	s.Set("configured", Behavior{Status: 503, Times: 1})
	if resp, _ = get("/v1/models/configured"); resp.StatusCode != 503 {
		t.Fatalf("behavior: %d", resp.StatusCode)
	}
	if resp, _ = get("/v1/models/configured"); resp.StatusCode != 200 {
		t.Fatalf("after Times: %d", resp.StatusCode)
	}
	if resp, _ = mustPost(t, ts, "/v1/models/configured", ""); resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET" {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
	if sv := s.Served("configured"); sv != (Usage{}) {
		t.Fatalf("Served = %+v", sv)
	}
}

func TestEmbeddingProbe(t *testing.T) {
	s := New()
	ts := start(t, s)
	for _, input := range []string{`"ping"`, `["ping"]`} {
		resp, b := mustPost(t, ts, "/v1/embeddings", `{"model":"e","input":`+input+`}`)
		var got struct {
			Data []struct {
				Embedding []float64 `json:"embedding"`
			} `json:"data"`
			Usage struct {
				PromptTokens int `json:"prompt_tokens"`
			} `json:"usage"`
		}
		if resp.StatusCode != 200 || json.Unmarshal(b, &got) != nil || len(got.Data) != 1 || len(got.Data[0].Embedding) != 8 ||
			got.Usage.PromptTokens != 1 {
			t.Fatalf("%s: %d %s", input, resp.StatusCode, b)
		}
	}
	if sv := s.Served("e"); sv != (Usage{Prompt: 2, Requests: 2}) {
		t.Fatalf("Served = %+v", sv)
	}
}

func TestBehaviorJSONNewFields(t *testing.T) {
	in := `{"echo":true,"content_type":"text/html","emptyBody":true,"truncate_after":12,"ErrorEvent":true,"status":422}`
	var b Behavior
	if err := json.Unmarshal([]byte(in), &b); err != nil {
		t.Fatal(err)
	}
	want := Behavior{Echo: true, ContentType: "text/html", EmptyBody: true, TruncateAfter: 12, ErrorEvent: true, Status: 422}
	if b != want {
		t.Fatalf("got %+v", b)
	}
	js, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"echo":true`, `"content_type":"text/html"`, `"empty_body":true`, `"truncate_after":12`, `"error_event":true`} {
		if !strings.Contains(string(js), key) {
			t.Fatalf("%s lacks %s", js, key)
		}
	}
	var back Behavior
	if err := json.Unmarshal(js, &back); err != nil || back != want {
		t.Fatalf("round trip %s: %+v %v", js, back, err)
	}
}

func TestPythonJSONFunc(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{``, ``},
		{`{}`, `{}`},
		{`[DONE]`, `[DONE]`},
		{`{"a":1,"b":[1,2,{"c":null}],"d":{},"e":[]}`, `{"a": 1, "b": [1, 2, {"c": null}], "d": {}, "e": []}`},
		{`["a:b",":",",",""]`, `["a:b", ":", ",", ""]`},
		{`{"q":"say \"a,b\": c","e":"\\","f":"\\\",:","g":"\u003c,"}`,
			`{"q": "say \"a,b\": c", "e": "\\", "f": "\\\",:", "g": "\u003c,"}`},
	} {
		if got := string(pythonJSON([]byte(tc.in))); got != tc.want {
			t.Errorf("pythonJSON(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
	v := map[string]any{"text": `he said "hi, there": \ ok`, "list": []any{1.5, "a,b", map[string]any{"k:v": nil, "t": true}}}
	js, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	py := pythonJSON(js)
	var a, b any
	if err := json.Unmarshal(js, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(py, &b); err != nil {
		t.Fatalf("%v: %s", err, py)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, py); err != nil || !reflect.DeepEqual(a, b) || !bytes.Equal(compact.Bytes(), js) {
		t.Fatalf("%s -> %s: %v", js, py, err)
	}
}

// jsonDocs splits a mock answer into its JSON documents: the body, or the
// data of each SSE event (with its event name).
func jsonDocs(t *testing.T, resp *http.Response, b []byte) []sseEvent {
	t.Helper()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return []sseEvent{{data: string(b)}}
	}
	events, err := readNamedEvents(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return events
}

// TestPythonJSONMode checks that PythonJSON writes every JSON document with
// Python's json.dumps spacing, with the same values as the compact documents
// a behavior without it writes.
func TestPythonJSONMode(t *testing.T) {
	respBody := `{"model":"m","instructions":"be brief: yes, \"really\"","input":"hello there"%s}`
	for _, tc := range []struct {
		name, path, body string
		b                Behavior
		usage            bool // the answer reports usage
	}{
		{"chat", "/v1/chat/completions", chatBody, Behavior{CachedTokens: 2}, true},
		{"chat stream include_usage", "/v1/chat/completions", streamBody("m", true), Behavior{Chunks: 3, CachedTokens: 2}, true},
		{"completions", "/v1/completions", `{"model":"m","prompt":"say: hello, world"}`, Behavior{Chunks: 4}, true},
		{"completions stream include_usage", "/v1/completions",
			`{"model":"m","prompt":"say: hello, world","stream":true,"stream_options":{"include_usage":true}}`, Behavior{Chunks: 3}, true},
		{"responses", "/v1/responses", fmt.Sprintf(respBody, ""), Behavior{Chunks: 3, CachedTokens: 1}, true},
		{"responses stream", "/v1/responses", fmt.Sprintf(respBody, `,"stream":true`), Behavior{Chunks: 3, CachedTokens: 1}, true},
		{"embeddings", "/v1/embeddings", `{"model":"m","input":["a b","c"]}`, Behavior{}, true},
		{"error status", "/v1/chat/completions", chatBody, Behavior{Status: 429, RetryAfter: "1"}, false},
		{"bad request", "/v1/chat/completions", `{"model":"m","messages":[]}`, Behavior{}, false},
		{"error event", "/v1/responses", fmt.Sprintf(respBody, `,"stream":true`), Behavior{ErrorEvent: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plain, py := New(), New()
			py.tag = plain.tag // the same response ids
			plain.Set("m", tc.b)
			pb := tc.b
			pb.PythonJSON = true
			py.Set("m", pb)
			resp1, b1 := mustPost(t, start(t, plain), tc.path, tc.body)
			resp2, b2 := mustPost(t, start(t, py), tc.path, tc.body)
			if resp1.StatusCode != resp2.StatusCode || resp1.Header.Get("Content-Type") != resp2.Header.Get("Content-Type") {
				t.Fatalf("plain %d %q, python %d %q", resp1.StatusCode, resp1.Header.Get("Content-Type"),
					resp2.StatusCode, resp2.Header.Get("Content-Type"))
			}
			if resp2.ContentLength >= 0 && resp2.ContentLength != int64(len(b2)) {
				t.Fatalf("Content-Length %d, body %d bytes", resp2.ContentLength, len(b2))
			}
			if tc.usage != strings.Contains(string(b2), `"usage": {`) || strings.Contains(string(b1), `"usage": {`) {
				t.Fatalf("usage spacing:\nplain:  %s\npython: %s", b1, b2)
			}
			docs1, docs2 := jsonDocs(t, resp1, b1), jsonDocs(t, resp2, b2)
			if len(docs1) != len(docs2) || len(docs1) == 0 {
				t.Fatalf("%d vs %d documents:\nplain:  %s\npython: %s", len(docs1), len(docs2), b1, b2)
			}
			for i, d1 := range docs1 {
				d2 := docs2[i]
				if d1.name != d2.name {
					t.Fatalf("event %d: %q vs %q", i, d1.name, d2.name)
				}
				if d1.data == "[DONE]" {
					if d2.data != "[DONE]" {
						t.Fatalf("event %d: %q", i, d2.data)
					}
					continue
				}
				// Without the mode the document is compact and unchanged;
				// with it, it is exactly the Python-spaced form.
				var compact bytes.Buffer
				if err := json.Compact(&compact, []byte(d1.data)); err != nil ||
					strings.TrimSuffix(d1.data, "\n") != compact.String() {
					t.Fatalf("plain document %d not compact (%v): %s", i, err, d1.data)
				}
				if d2.data != string(pythonJSON([]byte(d1.data))) ||
					!strings.Contains(d2.data, `", "`) || !strings.Contains(d2.data, `": "`) {
					t.Fatalf("document %d:\nplain:  %s\npython: %s", i, d1.data, d2.data)
				}
				var v1, v2 any
				if err := json.Unmarshal([]byte(d1.data), &v1); err != nil {
					t.Fatalf("plain document %d: %v: %s", i, err, d1.data)
				}
				if err := json.Unmarshal([]byte(d2.data), &v2); err != nil {
					t.Fatalf("python document %d: %v: %s", i, err, d2.data)
				}
				if !reflect.DeepEqual(v1, v2) {
					t.Fatalf("document %d differs:\nplain:  %s\npython: %s", i, d1.data, d2.data)
				}
			}
			sv1, sv2 := plain.Served("m"), py.Served("m")
			if sv1 != sv2 || (sv2.Requests == 1) != tc.usage {
				t.Fatalf("Served: plain %+v, python %+v", sv1, sv2)
			}
		})
	}
}

// TestPythonJSONUsage checks the usage numbers a Python-spaced answer reports.
func TestPythonJSONUsage(t *testing.T) {
	s := New()
	s.Set("m", Behavior{Chunks: 3, CachedTokens: 2, PythonJSON: true})
	ts := start(t, s)
	p := PromptTokens([]byte(chatBody))
	want := usageJSON{PromptTokens: p, CompletionTokens: 3, TotalTokens: p + 3}
	want.PromptTokensDetails.CachedTokens = 2
	_, b := mustPost(t, ts, "/v1/chat/completions", chatBody)
	var got struct {
		Usage usageJSON `json:"usage"`
	}
	if err := json.Unmarshal(b, &got); err != nil || got.Usage != want ||
		!strings.Contains(string(b), fmt.Sprintf(`"usage": {"prompt_tokens": %d, "completion_tokens": 3, "total_tokens": %d, "prompt_tokens_details": {"cached_tokens": 2}}`, p, p+3)) {
		t.Fatalf("%v: %s", err, b)
	}
	// The usage chunk of a stream.
	body := streamBody("m", true)
	p = PromptTokens([]byte(body))
	_, b = mustPost(t, ts, "/v1/chat/completions", body)
	events, err := readEvents(bytes.NewReader(b))
	if err != nil || len(events) < 2 {
		t.Fatalf("%v: %s", err, b)
	}
	var ch struct {
		Choices []any     `json:"choices"`
		Usage   usageJSON `json:"usage"`
	}
	last := events[len(events)-2]
	want = usageJSON{PromptTokens: p, CompletionTokens: 3, TotalTokens: p + 3}
	want.PromptTokensDetails.CachedTokens = 2
	if err := json.Unmarshal([]byte(last), &ch); err != nil || ch.Usage != want || len(ch.Choices) != 0 ||
		!strings.Contains(last, `"choices": [], "usage": {"prompt_tokens": `) {
		t.Fatalf("%v: %s", err, last)
	}
	if sv := s.Served("m"); sv != (Usage{Prompt: PromptTokens([]byte(chatBody)) + p, Completion: 6, Cached: 4, Requests: 2}) {
		t.Fatalf("Served = %+v", sv)
	}
	// A Malformed body is cut Python-style JSON.
	s.Set("m", Behavior{Malformed: true, PythonJSON: true})
	if _, b = mustPost(t, ts, "/v1/chat/completions", chatBody); json.Valid(b) || !strings.HasPrefix(string(b), `{"id": "chatcmpl-mock-`) {
		t.Fatalf("malformed: %s", b)
	}
}

func TestBehaviorJSONPythonJSON(t *testing.T) {
	for _, in := range []string{`{"python_json":true,"chunks":2}`, `{"PythonJSON":true,"chunks":2}`, `{"pythonJson":true,"chunks":2}`} {
		var b Behavior
		if err := json.Unmarshal([]byte(in), &b); err != nil || b != (Behavior{PythonJSON: true, Chunks: 2}) {
			t.Fatalf("%s: %+v %v", in, b, err)
		}
		js, err := json.Marshal(b)
		if err != nil || !strings.Contains(string(js), `"python_json":true`) {
			t.Fatalf("%s: %v", js, err)
		}
		var back Behavior
		if err := json.Unmarshal(js, &back); err != nil || back != b {
			t.Fatalf("round trip %s: %+v %v", js, back, err)
		}
	}
	if js, _ := json.Marshal(Behavior{Chunks: 2}); strings.Contains(string(js), "python") {
		t.Fatalf("zero PythonJSON encoded: %s", js)
	}
}

// TestTailLatencyJSON: the tail of the latency distribution goes through
// the control API's JSON.
func TestTailLatencyJSON(t *testing.T) {
	var b Behavior
	if err := json.Unmarshal([]byte(`{"latency":"20ms","tail_share":0.1,"tail_latency":"1s"}`), &b); err != nil {
		t.Fatal(err)
	}
	if b.Latency != 20*time.Millisecond || b.TailShare != 0.1 || b.TailLatency != time.Second {
		t.Fatalf("decoded %+v", b)
	}
	out, _ := json.Marshal(b)
	var back Behavior
	if err := json.Unmarshal(out, &back); err != nil || back != b {
		t.Errorf("round trip: %s -> %+v (%v)", out, back, err)
	}
}

func cosine(a, b []float64) float64 {
	var dot, na, nb float64
	for i := range a {
		dot += a[i] * b[i]
		na += a[i] * a[i]
		nb += b[i] * b[i]
	}
	return dot / math.Sqrt(na*nb)
}

func TestWordVector(t *testing.T) {
	const text = "Has my parcel shipped yet? Order 123"
	v := WordVector(text, 64)
	if len(v) != 64 || !reflect.DeepEqual(v, WordVector(text, 64)) {
		t.Fatalf("not deterministic: %v", v)
	}
	for _, tc := range []struct {
		text string
		dims int
	}{{text, 64}, {text, 256}, {"x", 1}, {"Đơn hàng của tôi đâu?", 256}, {"the a an", 16}, {"", 16}} {
		v := WordVector(tc.text, tc.dims)
		var n float64
		for _, x := range v {
			n += x * x
		}
		if len(v) != tc.dims || math.Abs(n-1) > 1e-9 {
			t.Errorf("%q/%d: len %d, norm² %v", tc.text, tc.dims, len(v), n)
		}
	}
	// nothing left after the stop words: the fixed vector e0
	if v := WordVector("Where is it? ...", 8); !reflect.DeepEqual(v, []float64{1, 0, 0, 0, 0, 0, 0, 0}) {
		t.Errorf("stop words only: %v", v)
	}
	if WordVector("x", 0) != nil {
		t.Error("dims 0 gave a vector")
	}
	same := func(a, b string) bool { return reflect.DeepEqual(WordVector(a, 256), WordVector(b, 256)) }
	// case, punctuation, stop words and clitics do not matter ...
	if !same("Where's my ORDER?!", "order") || !same("Tôi đã nhận được hàng", "nhận hàng") {
		t.Error("stop words or case changed the vector")
	}
	// ... negations and numbers do, and "n't" is "not"
	if same("I received my parcel", "I did not receive my parcel") || same("Tôi đã nhận hàng", "Tôi chưa nhận hàng") ||
		same("order 123", "order 456") || same("no refund", "refund") {
		t.Error("a negation or a number was dropped")
	}
	if !same("I didn't receive it", "I did not receive it") || !same("I can't log in", "I can not log in") {
		t.Error(`"n't" is not "not"`)
	}
}

func TestWordVectorParaphrase(t *testing.T) {
	for _, tc := range []struct{ q, para, other string }{
		{"Has my parcel shipped yet?", "Have my parcels been shipped?", "What payment methods do you accept?"},
		{"How long does shipping take?", "How long will shipping take to Hanoi?", "How do I reset my password?"},
		{"Đơn hàng của tôi đâu?", "Đơn hàng của tôi đang ở đâu vậy?", "Tôi quên mật khẩu"},
	} {
		q := WordVector(tc.q, 256)
		p, o := cosine(q, WordVector(tc.para, 256)), cosine(q, WordVector(tc.other, 256))
		if p <= o || p < 0.7 || o > 0.4 {
			t.Errorf("%q: paraphrase %.3f, unrelated %.3f", tc.q, p, o)
		}
	}
}

func TestEmbeddingsWordVectors(t *testing.T) {
	s := New()
	s.Set("sem", Behavior{WordVectors: 32})
	ts := start(t, s)
	var got struct {
		Data []struct {
			Embedding []float64 `json:"embedding"`
		} `json:"data"`
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
			TotalTokens  int `json:"total_tokens"`
		} `json:"usage"`
	}
	resp, b := mustPost(t, ts, "/v1/embeddings", `{"model":"sem","input":["where is my order","the order 123"]}`)
	if resp.StatusCode != 200 || json.Unmarshal(b, &got) != nil || len(got.Data) != 2 ||
		got.Usage.PromptTokens != 7 || got.Usage.TotalTokens != 7 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	// JSON round-trips float64 exactly
	if !reflect.DeepEqual(got.Data[0].Embedding, WordVector("where is my order", 32)) ||
		!reflect.DeepEqual(got.Data[1].Embedding, WordVector("the order 123", 32)) {
		t.Fatalf("not WordVector: %s", b)
	}
	if sv := s.Served("sem"); sv != (Usage{Prompt: 7, Requests: 1}) {
		t.Fatalf("Served = %+v", sv)
	}
	// encoding_format base64: little-endian float32s, as OpenAI sends them
	var enc struct {
		Data []struct {
			Embedding string `json:"embedding"`
		} `json:"data"`
	}
	_, b = mustPost(t, ts, "/v1/embeddings", `{"model":"sem","input":"where is my order","encoding_format":"base64"}`)
	raw, err := base64.StdEncoding.DecodeString(func() string { _ = json.Unmarshal(b, &enc); return enc.Data[0].Embedding }())
	want := WordVector("where is my order", 32)
	if err != nil || len(raw) != 4*len(want) {
		t.Fatalf("base64: %v %s", err, b)
	}
	for i, f := range want {
		if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])); got != float32(f) {
			t.Fatalf("base64 component %d: %v, want %v", i, got, float32(f))
		}
	}
	// other models keep the default vectors
	_, b = mustPost(t, ts, "/v1/embeddings", `{"model":"e","input":"where is my order"}`)
	if json.Unmarshal(b, &got) != nil || !reflect.DeepEqual(got.Data[0].Embedding, vector("where is my order")) {
		t.Fatalf("default model: %s", b)
	}

	// the faults apply to word-vector embeddings too
	s.Set("sem", Behavior{WordVectors: 32, Status: 429, RetryAfter: "1", Times: 1})
	if resp, b := mustPost(t, ts, "/v1/embeddings", `{"model":"sem","input":"x"}`); resp.StatusCode != 429 ||
		resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("Status: %d %s", resp.StatusCode, b)
	}
	for _, b := range []Behavior{{WordVectors: 32, Hang: true}, {WordVectors: 32, Latency: time.Hour}} {
		s.Set("sem", b)
		h := newHook(s)
		ts := start(t, h)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			resp, err := post(ctx, ts.Client(), ts.URL+"/v1/embeddings", `{"model":"sem","input":"x"}`)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		recv(t, h.arrived, "arrival")
		cancel()
		if err := recv(t, errc, "client error"); err == nil {
			t.Fatalf("%+v: request succeeded", b)
		}
		if m := recv(t, s.Canceled(), "Canceled"); m != "sem" {
			t.Fatalf("Canceled got %q", m)
		}
		recv(t, h.done, "handler return")
	}
}

func TestBehaviorJSONWordVectors(t *testing.T) {
	for _, in := range []string{`{"word_vectors":256}`, `{"WordVectors":256}`, `{"wordVectors":256}`} {
		var b Behavior
		if err := json.Unmarshal([]byte(in), &b); err != nil || b != (Behavior{WordVectors: 256}) {
			t.Fatalf("%s: %+v %v", in, b, err)
		}
		js, err := json.Marshal(b)
		if err != nil || string(js) != `{"word_vectors":256}` {
			t.Fatalf("%s: %v", js, err)
		}
	}
}

// TestWordVectorShopPairs reports how WordVector separates the labelled pairs
// of testdata/semantic/shop-pairs.jsonl (run with -v to see the histogram).
// It asserts only what must hold for any sensible embedding; hard negatives
// such as "order 123"/"order 456" are expected to score high.
func TestWordVectorShopPairs(t *testing.T) {
	f, err := os.Open("../../testdata/semantic/shop-pairs.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const dims = 256
	type stat struct {
		sims []float64
	}
	byKind := map[string]*stat{}
	var trues, falses []float64
	kind := "unknown"
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if k, ok := strings.CutPrefix(text, "# kind:"); ok {
			kind, _, _ = strings.Cut(strings.TrimSpace(k), " ")
			continue
		}
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		var p struct {
			A, B *string
			Same *bool
		}
		dec := json.NewDecoder(strings.NewReader(text))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil || p.A == nil || p.B == nil || p.Same == nil || *p.A == "" || *p.B == "" {
			t.Fatalf("line %d: %v: %s", line, err, text)
		}
		sim := cosine(WordVector(*p.A, dims), WordVector(*p.B, dims))
		if *p.Same {
			trues = append(trues, sim)
		} else {
			falses = append(falses, sim)
		}
		if byKind[kind] == nil {
			byKind[kind] = &stat{}
		}
		byKind[kind].sims = append(byKind[kind].sims, sim)
		if testing.Verbose() && (*p.Same && sim < 0.8 || kind == "easy" && sim >= 0.6) {
			t.Logf("%-13s %.3f  %q / %q", kind, sim, *p.A, *p.B)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(trues) == 0 || len(falses) == 0 {
		t.Fatalf("%d same:true and %d same:false pairs; want both", len(trues), len(falses))
	}
	mean := func(xs []float64) float64 {
		s := 0.0
		for _, x := range xs {
			s += x
		}
		return s / float64(len(xs))
	}
	// buckets: below 0.5, then [0.5,0.55) ... [0.95,1.0]
	hist := func(xs []float64) string {
		var n [11]int
		for _, x := range xs {
			i := 0
			if x >= 0.5 {
				i = min(int((x-0.5)/0.05+1e-9)+1, 10)
			}
			n[i]++
		}
		var sb strings.Builder
		fmt.Fprintf(&sb, "<0.50:%3d", n[0])
		for i := 1; i < len(n); i++ {
			fmt.Fprintf(&sb, " %.2f:%3d", 0.5+0.05*float64(i-1), n[i])
		}
		return sb.String()
	}
	share := func(xs []float64, keep func(float64) bool) string {
		k := 0
		for _, x := range xs {
			if keep(x) {
				k++
			}
		}
		return fmt.Sprintf("%d/%d", k, len(xs))
	}
	t.Logf("same:true  n=%3d mean %.3f  %s", len(trues), mean(trues), hist(trues))
	t.Logf("same:false n=%3d mean %.3f  %s", len(falses), mean(falses), hist(falses))
	kinds := make([]string, 0, len(byKind))
	for k := range byKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		xs := byKind[k].sims
		t.Logf("%-13s n=%3d mean %.3f  ≥0.8 %-6s <0.6 %-6s %s", k, len(xs), mean(xs),
			share(xs, func(x float64) bool { return x >= 0.8 }), share(xs, func(x float64) bool { return x < 0.6 }), hist(xs))
	}
	if mean(trues) <= mean(falses) {
		t.Fatalf("mean similarity of same:true pairs %.3f is not above that of same:false pairs %.3f", mean(trues), mean(falses))
	}
}

// TestSetRecordOff: a mock that records nothing still counts requests per
// model and numbers its x-request-id, and Reset starts both over.
func TestSetRecordOff(t *testing.T) {
	s := New()
	s.SetRecord(false)
	ts := start(t, s)
	var ids []string
	for _, model := range []string{"a", "b", "a"} {
		resp, _ := mustPost(t, ts, "/v1/chat/completions", fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"x"}]}`, model))
		ids = append(ids, resp.Header.Get("X-Request-Id"))
	}
	if got := s.Requests(); len(got) != 0 {
		t.Fatalf("recorded %d requests with recording off", len(got))
	}
	if got, want := s.RequestCounts(), map[string]int{"a": 2, "b": 1}; !maps.Equal(got, want) {
		t.Fatalf("RequestCounts = %v, want %v", got, want)
	}
	if want := []string{"req_mock_1", "req_mock_2", "req_mock_3"}; !slices.Equal(ids, want) {
		t.Fatalf("x-request-id = %v, want %v", ids, want)
	}
	s.Reset()
	if got := s.RequestCounts(); len(got) != 0 {
		t.Fatalf("RequestCounts after Reset = %v", got)
	}
	s.SetRecord(true)
	mustPost(t, ts, "/v1/chat/completions", `{"model":"a","messages":[{"role":"user","content":"x"}]}`)
	if got := s.RequestsFor("a"); len(got) != 1 {
		t.Fatalf("recorded %d requests with recording back on, want 1", len(got))
	}
}
