package llmrouter

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// faultRouter is failoverRouter pointed at the primary mock, with short
// bounds so that timeouts fire quickly.
var faultRouter = strings.NewReplacer(
	"{PRIMARY_URL}", "{PRIMARY}/v1",
	"first_byte_timeout 300ms", "first_byte_timeout 300ms\n\t\tstream_idle_timeout 300ms",
).Replace(failoverRouter)

// fault is one thing an upstream can do wrong, injected into the first
// candidate of route simple_qa (deepseek-v3.2, upstream id deepseek-chat).
type fault struct {
	name     string
	behavior mockllm.Behavior
	dead     bool   // the provider refuses connections instead
	only     string // "json" or "stream" when the fault exists in one mode only
}

var faults = []fault{
	{name: "500", behavior: mockllm.Behavior{Status: 500}},
	{name: "502", behavior: mockllm.Behavior{Status: 502}},
	{name: "503", behavior: mockllm.Behavior{Status: 503}},
	{name: "429", behavior: mockllm.Behavior{Status: 429}},
	{name: "429 Retry-After", behavior: mockllm.Behavior{Status: 429, RetryAfter: "30"}},
	{name: "408", behavior: mockllm.Behavior{Status: 408}},
	{name: "401", behavior: mockllm.Behavior{Status: 401}},
	{name: "403", behavior: mockllm.Behavior{Status: 403}},
	{name: "404", behavior: mockllm.Behavior{Status: 404}},
	{name: "refused", dead: true},
	{name: "reset", behavior: mockllm.Behavior{Reset: true}},
	{name: "hang", behavior: mockllm.Behavior{Hang: true}},
	{name: "stall before first event", behavior: mockllm.Behavior{StallBeforeFirstChunk: true}, only: "stream"},
	{name: "truncated 200", behavior: mockllm.Behavior{TruncateAfter: 40}, only: "json"},
	{name: "non-JSON 200", behavior: mockllm.Behavior{Malformed: true}},
	{name: "HTML 200", behavior: mockllm.Behavior{Body: "<html><body>502 Bad Gateway</body></html>", ContentType: "text/html"}},
	{name: "empty 200", behavior: mockllm.Behavior{EmptyBody: true}},
	{name: "error inside a 200", behavior: mockllm.Behavior{Body: `{"error":{"message":"overloaded","type":"server_error"}}`, ContentType: "application/json"}, only: "json"},
	{name: "first event is an error", behavior: mockllm.Behavior{Body: "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n"}, only: "stream"},
	{name: "role chunk, then an error", behavior: mockllm.Behavior{ErrorEvent: true}, only: "stream"},
	{name: "JSON 200 to a stream request", behavior: mockllm.Behavior{ContentType: "application/json"}, only: "stream"},
}

// TestFaultMatrix: whatever the first candidate does wrong, with a healthy
// deployment behind it the client gets one complete 200, JSON and stream.
func TestFaultMatrix(t *testing.T) {
	var matrix strings.Builder
	fmt.Fprintf(&matrix, "\n%-30s %-28s %-28s\n", "fault", "json", "stream")
	for _, f := range faults {
		row := fmt.Sprintf("%-30s", f.name)
		for _, mode := range []string{"json", "stream"} {
			if f.only != "" && f.only != mode {
				row += fmt.Sprintf(" %-28s", "-")
				continue
			}
			cell := "FAIL"
			t.Run(f.name+" "+mode, func(t *testing.T) {
				router := faultRouter
				if f.dead {
					router = strings.Replace(router, "upstream deepseek-chat", "upstream deepseek-chat\n\t\tprovider dead", 1) +
						"\tprovider dead {\n\t\tbase_url " + closedPortURL(t) + "/v1\n\t}\n"
				}
				g := newGateway(t, router)
				g.primary.Set("deepseek-chat", f.behavior)
				isStream := mode == "stream"
				resp, body, err := g.postRaw("/v1/chat/completions", chatBody("simple_qa", isStream))
				if err != nil {
					t.Fatalf("the response broke off: %v", err)
				}
				expectModel(t, resp, body, "gemini-2.5-flash", "primary", 2)
				if isStream {
					data := sseData(body)
					if len(data) < 2 || data[len(data)-1] != "[DONE]" || strings.Count(body, "[DONE]") != 1 {
						t.Errorf("stream is not one complete answer: %q", body)
					}
				} else if !strings.Contains(body, `"model":"gemini-2.5-flash"`) || !jsonEqual([]byte(body), []byte(body)) {
					t.Errorf("answer is not gemini's: %s", body)
				}
				if strings.Contains(body, "error") || strings.Contains(body, "html") {
					t.Errorf("the failed attempt leaked into the response: %s", body)
				}
				if !t.Failed() {
					cell = fmt.Sprintf("%d, %s attempts, %s", resp.StatusCode, resp.Header.Get("X-LLM-Attempts"), resp.Header.Get("X-LLM-Model"))
				}
			})
			row += fmt.Sprintf(" %-28s", cell)
		}
		matrix.WriteString(row + "\n")
	}
	t.Log(matrix.String())
}

// TestBrokenAnswerCountsAsServerError: a 200 that is not an answer costs
// the deployment like a 5xx.
func TestBrokenAnswerCountsAsServerError(t *testing.T) {
	g := newGateway(t, withHealth("\t\tinterval off"))
	before := scrape(t)
	g.primary.Set("deepseek-chat", mockllm.Behavior{TruncateAfter: 30, Times: 1})
	resp, body := g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "gemini-2.5-flash", "primary", 2)
	st := statsFor(t, g, "deepseek-v3.2", "primary")
	if st.HealthScore != 90 || !strings.Contains(st.LastError, "not an answer") {
		t.Errorf("score %d, last error %q; want 90 and a broken answer", st.HealthScore, st.LastError)
	}
	after := scrape(t)
	if d := after.delta(before, sel("caddy_llm_router_attempts_total", "model", "deepseek-v3.2", "provider", "primary", "outcome", "server_error")); d != 1 {
		t.Errorf("attempts_total{server_error} +%v, want 1", d)
	}
}

// TestKeyNeverRelayed: a provider that echoes the request, headers
// included, in its errors never hands the gateway's key to the client,
// even in a header the config relays.
func TestKeyNeverRelayed(t *testing.T) {
	g := newGateway(t, defaultRouter+"\tpass_response_header X-Echo-Authorization\n")
	for _, status := range []int{400, 422, 429} {
		for _, isStream := range both {
			name := fmt.Sprintf("%d stream=%v", status, isStream)
			g.primary.Reset()
			g.primary.SetDefault(mockllm.Behavior{Status: status, Echo: true})
			resp, body := g.post(chatBody("simple_qa", isStream), "Authorization", "Bearer client-secret-1")
			headers := strings.Join(headerValues(resp.Header), " ")
			for _, secret := range []string{primaryKey, "client-secret-1"} {
				if strings.Contains(body, secret) || strings.Contains(headers, secret) {
					t.Errorf("%s: %q reached the client: %s %s", name, secret, headers, body)
				}
			}
			switch status {
			case 429: // failed over: the echo is never relayed
				if resp.StatusCode != http.StatusServiceUnavailable {
					t.Errorf("%s: status %d, want 503", name, resp.StatusCode)
				}
			default: // the client's own mistake, relayed with the key masked
				if resp.StatusCode != status || !strings.Contains(body, "Bearer sk-…0001") || resp.Header.Get("X-Echo-Authorization") != "Bearer sk-…0001" {
					t.Errorf("%s: status %d, body %s, X-Echo-Authorization %q: want the echo with the key's fingerprint",
						name, resp.StatusCode, body, resp.Header.Get("X-Echo-Authorization"))
				}
			}
		}
	}
	// a header of a successful answer is scrubbed too
	g.primary.Reset()
	g.primary.SetDefault(mockllm.Behavior{Echo: true})
	resp, body := g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	if got := resp.Header.Get("X-Echo-Authorization"); got != "Bearer sk-…0001" {
		t.Errorf("X-Echo-Authorization of a 200 = %q", got)
	}
	// an error event inside a 200 stream is scrubbed too, and is the
	// stream's one error: a provider failure, blamed on the deployment
	// (after the answer began: one right after the role chunk fails over)
	g.primary.Reset()
	g.primary.SetDefault(mockllm.Behavior{ErrorEvent: true, ErrorEventAfterChunks: 1, Echo: true})
	scoreBefore := statsFor(t, g, "deepseek-v3.2", "primary").HealthScore
	_, body, _ = g.postRaw("/v1/chat/completions", chatBody("simple_qa", true), "Authorization", "Bearer client-secret-1")
	if strings.Contains(body, primaryKey) || strings.Contains(body, "client-secret-1") || !strings.Contains(body, "Bearer sk-…0001") {
		t.Errorf("error event of a stream: %s", body)
	}
	if n := strings.Count(body, `"error"`); n != 1 {
		t.Errorf("%d error events, want the provider's one: %s", n, body)
	}
	if after := statsFor(t, g, "deepseek-v3.2", "primary").HealthScore; after >= scoreBefore {
		t.Errorf("a stream that failed with an error event left the score at %v (was %v)", after, scoreBefore)
	}
}

// TestHeaderCredentialNeverRelayed: a provider authenticated by a header
// of its own (Azure's api-key) has that value masked like its api_key
// wherever the provider echoes it: error bodies, headers, stream events.
func TestHeaderCredentialNeverRelayed(t *testing.T) {
	const azureKey = "azure-secret-value-123456"
	g := newGateway(t, strings.Replace(defaultRouter, "api_key \"  sk-primary-test-key-0001  \"",
		"api_key \"  sk-primary-test-key-0001  \"\n\t\theader api-key "+azureKey+"\n\t\theader X-Trace-Id short", 1))
	for _, isStream := range both {
		g.primary.Reset()
		g.primary.SetDefault(mockllm.Behavior{Status: 400, Echo: true})
		resp, body := g.post(chatBody("simple_qa", isStream))
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Api-Key: …3456") {
			t.Errorf("stream=%v: %d %s, want the echoed 400 with the header's fingerprint", isStream, resp.StatusCode, body)
		}
		if strings.Contains(body, azureKey) {
			t.Errorf("stream=%v: the api-key header value reached the client: %s", isStream, body)
		}
		if !strings.Contains(body, "X-Trace-Id: short") {
			t.Errorf("stream=%v: a header that is no credential was masked: %s", isStream, body)
		}
	}
	g.primary.Reset()
	g.primary.SetDefault(mockllm.Behavior{ErrorEvent: true, ErrorEventAfterChunks: 1, Echo: true})
	_, body, _ := g.postRaw("/v1/chat/completions", chatBody("simple_qa", true))
	if strings.Contains(body, azureKey) || !strings.Contains(body, "…3456") {
		t.Errorf("error event of a stream: %s", body)
	}
}

// TestStreamIdleTimeout: a stream that falls silent after its first events
// ends with the error event and an abort, and costs the deployment −15.
func TestStreamIdleTimeout(t *testing.T) {
	g := newGateway(t, strings.Replace(faultRouter, "default_route simple_qa", "default_route simple_qa\n\thealth_check {\n\t\tinterval off\n\t}", 1))
	g.primary.Set("deepseek-chat", mockllm.Behavior{HoldAfterChunks: 2})
	resp, body, err := g.postRaw("/v1/chat/completions", chatBody("simple_qa", true))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	if err == nil {
		t.Error("the stalled stream ended cleanly; want an aborted response")
	}
	data := sseData(body)
	if len(data) != 4 || !strings.Contains(data[3], `"code":"upstream_stream_broken"`) || !strings.Contains(data[3], "silent for 300ms") {
		t.Fatalf("events %q: want role, 2 words, then the stream error", data)
	}
	if got := waitFor(t, g.primary.Canceled(), "the stalled upstream request to be canceled"); got != "deepseek-chat" {
		t.Errorf("canceled %q", got)
	}
	if st := statsFor(t, g, "deepseek-v3.2", "primary"); st.HealthScore != 85 || st.Errors != 1 {
		t.Errorf("score %d errors %d, want 85 and 1", st.HealthScore, st.Errors)
	}
}

// TestStreamHeldOpenAfterDone: a provider that sends the whole stream and
// then holds its response open is cut off once its end has been waited
// for: the client gets the complete stream, [DONE] last, with a clean end
// and no error event; the answer is counted at its usage and the
// deployment keeps its score. The wait is streamEndGrace, not the stream's
// idle timeout (a minute here), and the client does not share it
// (TestStreamEndsAtItsLastEvent).
func TestStreamHeldOpenAfterDone(t *testing.T) {
	g := streamHeldOpen(t, 100*time.Millisecond)
	if got := waitFor(t, g.primary.Canceled(), "the held upstream response to be left"); got != "deepseek-chat" {
		t.Errorf("canceled %q", got)
	}
}

// streamHeldOpen sends a stream request to a provider that holds its
// response open after [DONE], with the router's wait for that end set to
// grace, and checks that the client got the whole stream, ended cleanly,
// and that the answer counted at its usage and against nothing.
func streamHeldOpen(t *testing.T, grace time.Duration) *gateway {
	t.Helper()
	defer func(old time.Duration) { streamEndGrace = old }(streamEndGrace)
	streamEndGrace = grace
	g := newGateway(t, strings.NewReplacer(
		"default_route simple_qa", "default_route simple_qa\n\thealth_check {\n\t\tinterval off\n\t}",
		"stream_idle_timeout 300ms", "stream_idle_timeout 1m",
	).Replace(faultRouter))
	g.primary.Set("deepseek-chat", mockllm.Behavior{HoldAfterDone: true})
	resp, body, err := g.postRaw("/v1/chat/completions", chatBody("simple_qa", true))
	if err != nil {
		t.Fatalf("the stream did not end cleanly: %v", err)
	}
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	data := sseData(body)
	if len(data) != 2+mockllm.DefaultChunks+1 || data[len(data)-1] != "[DONE]" || strings.Contains(body, `"error"`) {
		t.Fatalf("events %q: want the whole stream, [DONE] last", data)
	}
	served := g.primary.Served("deepseek-chat")
	st := statsFor(t, g, "deepseek-v3.2", "primary")
	if st.HealthScore != 100 || st.Errors != 0 {
		t.Errorf("score %d errors %d, want 100 and 0", st.HealthScore, st.Errors)
	}
	if st.Tokens.Input != int64(served.Prompt) || st.Tokens.Output != int64(served.Completion) || st.Tokens.EstimatedOutput != 0 {
		t.Errorf("tokens %+v, want the served %+v, none estimated", st.Tokens, served)
	}
	return g
}

// TestStreamEndsAtItsLastEvent: the client's stream ends at the
// provider's last event, not at the end of the provider's response: with
// a provider that holds its response open after [DONE], and a minute
// before the router would cut it off, the client has its whole stream,
// ended, at once (within the test client's timeout of seconds), counted
// at its usage; the provider's response is read to its end apart
// (drainStreamEnd), and the config unloading ends that read.
func TestStreamEndsAtItsLastEvent(t *testing.T) {
	g := streamHeldOpen(t, time.Minute)
	select {
	case m := <-g.primary.Canceled():
		t.Errorf("the held response of %s was cut off before streamEndGrace", m)
	default:
	}
	// the next config's load unloads this one: the read of the held
	// response ends with it (TestMain's leak check would find it)
	newGateway(t, defaultRouter)
	if got := waitFor(t, g.primary.Canceled(), "the held upstream response to be left at unload"); got != "deepseek-chat" {
		t.Errorf("canceled %q", got)
	}
}

// TestStreamConnectionKept: a stream's provider connection serves the
// next requests although the provider ends its response 20 ms after the
// stream's last event: that end, read after the client has its answer,
// returns the connection to the pool rather than closing it (a connection
// per stream would cost every stream a dial).
func TestStreamConnectionKept(t *testing.T) {
	var conns atomic.Int32
	ended := make(chan http.ConnState, 64) // the provider's side of a response's end
	mock := mockllm.New()
	srv := httptest.NewUnstartedServer(mock)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			conns.Add(1)
		case http.StateIdle, http.StateClosed:
			ended <- s
		}
	}
	srv.Start()
	mockServers = append(mockServers, srv)
	g := newGateway(t, strings.NewReplacer(
		"default_route simple_qa", "default_route simple_qa\n\thealth_check {\n\t\tinterval off\n\t}",
		"{PRIMARY}", srv.URL,
	).Replace(faultRouter))
	mock.Set("deepseek-chat", mockllm.Behavior{EndDelay: 20 * time.Millisecond})
	const streams = 6
	for range streams {
		resp, body := g.post(chatBody("simple_qa", true))
		if data := sseData(body); resp.StatusCode != 200 || data[len(data)-1] != "[DONE]" {
			t.Fatalf("status %d events %q", resp.StatusCode, data)
		}
		if s := waitFor(t, ended, "the provider to end its response"); s != http.StateIdle {
			t.Fatalf("the provider's connection went %v after the stream, want idle", s)
		}
	}
	// the router reads the end a moment after the provider writes it: a
	// request in between dials, rarely
	if n := conns.Load(); n > 2 {
		t.Errorf("%d connections to the provider for %d streams one after another, want them reused", n, streams)
	}
}

// TestSlowErrorOnStreamPath: an error answer to a stream request is read
// within the provider's timeout, not cut by first_byte_timeout.
func TestSlowErrorOnStreamPath(t *testing.T) {
	g := newGateway(t, strings.Replace(faultRouter, "timeout 300ms", "timeout 3s", 1))
	const providerBody = `{"error":{"message":"max_tokens is too large","type":"invalid_request_error","param":"max_tokens","code":null}}`
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 400, Body: providerBody, BodyDelay: 600 * time.Millisecond})
	resp, body := g.post(chatBody("simple_qa", true))
	if resp.StatusCode != 400 || body != providerBody {
		t.Errorf("status %d body %s, want the provider's slow 400", resp.StatusCode, body)
	}
}

// TestUnreadableBody: a body that cannot be read gets the OpenAI envelope
// and is counted as the 400 it is.
func TestUnreadableBody(t *testing.T) {
	newGateway(t, defaultRouter)
	done := requestsDone(t)
	before := scrape(t)
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", httpPort))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{\"model\":\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || apiErr(t, string(b)).Code != "unreadable_body" {
		t.Errorf("status %d body %s", resp.StatusCode, b)
	}
	waitFor(t, done, "the request to be counted")
	after := scrape(t)
	if d := after.delta(before, sel("caddy_llm_router_requests_total", "route", "", "model", "", "provider", "", "code", "400", "endpoint", "chat")); d != 1 {
		t.Errorf("requests_total{code=400} +%v, want 1", d)
	}
}

// TestRouterErrors: the router's own errors are OpenAI-shaped, name the
// member at fault, are labelled with the known model or route the request
// named, and never echo a huge name.
func TestRouterErrors(t *testing.T) {
	g := newGateway(t, defaultRouter)
	done := requestsDone(t)
	huge := strings.Repeat("ü", 5000)
	cases := []struct {
		name, path, body string
		header           []string
		status           int
		code, param      string
		route, model     string
	}{
		{"model not a string", "/v1/chat/completions", `{"model":7,"messages":[]}`, nil, 400, "invalid_type", "model", "", ""},
		{"no messages, known model", "/v1/chat/completions", `{"model":"gpt-4.1"}`, nil, 400, "missing_required_parameter", "messages", "", "gpt-4.1"},
		{"no messages, route", "/v1/chat/completions", `{"model":"complex_reasoning"}`, nil, 400, "missing_required_parameter", "messages", "complex_reasoning", ""},
		{"unknown model", "/v1/chat/completions", `{"model":"gpt-9","messages":[]}`, nil, 404, "model_not_found", "model", "", ""},
		{"huge unknown model", "/v1/chat/completions", `{"model":"` + huge + `","messages":[]}`, nil, 404, "model_not_found", "model", "", ""},
		{"unknown route header", "/v1/chat/completions", chatBody("", false), []string{"X-LLM-Route", "poetry"}, 404, "model_not_found", "model", "", ""},
		{"chat model for embeddings", "/v1/embeddings", `{"model":"gpt-4.1","input":"x"}`, nil, 400, "model_not_supported", "model", "", "gpt-4.1"},
		{"no embedding model", "/v1/embeddings", `{"input":"x"}`, nil, 404, "model_not_found", "model", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := scrape(t)
			resp, body := g.postPath(tc.path, tc.body, tc.header...)
			waitFor(t, done, "the request to be counted")
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			e := apiErr(t, body)
			if e.Code != tc.code || e.Param == nil || *e.Param != tc.param {
				t.Errorf("error %+v, want code %s param %s", e, tc.code, tc.param)
			}
			if len(e.Message) > 400 {
				t.Errorf("message of %d bytes echoes too much", len(e.Message))
			}
			ep := "chat"
			if strings.HasSuffix(tc.path, "embeddings") {
				ep = "embeddings"
			}
			after := scrape(t)
			key := sel("caddy_llm_router_requests_total", "route", tc.route, "model", tc.model, "provider", "", "code", fmt.Sprint(tc.status), "endpoint", ep)
			if d := after.delta(before, key); d != 1 {
				t.Errorf("%s +%v, want 1", key, d)
			}
		})
	}
}

// TestUnservedPaths: under its matcher the router answers every request.
func TestUnservedPaths(t *testing.T) {
	g := newGateway(t, defaultRouter)
	cases := []struct {
		method, path string
		status       int
		code, allow  string
	}{
		{"GET", "/v1/chat/completions", 405, "method_not_allowed", "POST"},
		{"GET", "/v1/embeddings", 405, "method_not_allowed", "POST"},
		{"POST", "/v1/models", 405, "method_not_allowed", "GET"},
		{"DELETE", "/v1/models/gpt-4.1", 405, "method_not_allowed", "GET"},
		{"POST", "/v1/images/generations", 404, "unknown_url", ""},
		{"GET", "/v1/files", 404, "unknown_url", ""},
		{"POST", "/", 404, "unknown_url", ""},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(tc.method, gatewayURL+tc.path, strings.NewReader("{}"))
		resp, err := g.tc.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || apiErr(t, string(b)).Code != tc.code || resp.Header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d Allow %q %s", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Allow"), b)
		}
	}
	if n := len(g.primary.Requests()) + len(g.backup.Requests()); n != 0 {
		t.Errorf("%d requests went upstream", n)
	}
}

// TestSkippedCandidatesInUnavailable: the 503 names every candidate,
// skipped ones with the reason.
func TestSkippedCandidatesInUnavailable(t *testing.T) {
	router := strings.Replace(defaultRouter, "first_byte_timeout 2s", "first_byte_timeout 2s\n\t\tmax_attempts 1", 1) +
		"\troute three deepseek-v3.2 gemini-2.5-flash gpt-4.1\n"
	g := newGateway(t, router)
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 429, RetryAfter: "18", Times: 1})
	g.post(chatBody("three", false)) // deepseek cools down; gemini answers
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 500})
	resp, body := g.post(chatBody("three", false))
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	msg := apiErr(t, body).Message
	for _, want := range []string{
		"gemini-2.5-flash@primary: 500 Internal Server Error",
		"gpt-4.1@primary: skipped, over max_attempts 1",
		"deepseek-v3.2@primary: skipped, cooling down for 18s",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("503 message %q lacks %q", msg, want)
		}
	}
	if ra := resp.Header.Get("Retry-After"); ra != "18" && ra != "17" {
		t.Errorf("Retry-After %q, want the skipped deployment's cooldown", ra)
	}
}

// TestClientGoneIsNotTheDeploymentsFault: a client that leaves before the
// headers, during a buffered read, or mid-stream costs the deployment
// nothing. Over HTTP/1 a client that leaves before its answer started
// cannot be told from one that half-closed (TestHalfClosedClient): the
// attempt in flight ends on its own merits, and nothing fails over.
func TestClientGoneIsNotTheDeploymentsFault(t *testing.T) {
	g := newGateway(t, withHealth("\t\tinterval off"))
	done := requestsDone(t)
	phases := []struct {
		name     string
		behavior mockllm.Behavior
		stream   bool
		readTill string // read this much of the answer before leaving
	}{
		{"before the headers", mockllm.Behavior{Latency: 300 * time.Millisecond}, false, ""},
		{"during a buffered read", mockllm.Behavior{Body: slowAnswer, BodyDelay: 300 * time.Millisecond}, false, ""},
		{"mid-stream", mockllm.Behavior{HoldAfterChunks: 2}, true, "w1 "},
	}
	for _, ph := range phases {
		g.primary.Reset()
		g.primary.Set("deepseek-chat", ph.behavior)
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, gatewayURL+"/v1/chat/completions", strings.NewReader(chatBody("simple_qa", ph.stream)))
		if ph.readTill == "" {
			go func() { // leave once the mock holds the request
				<-g.primary.Arrived()
				cancel()
			}()
		}
		resp, err := g.tc.Client.Do(req)
		if err == nil {
			var seen strings.Builder
			buf := make([]byte, 512)
			for !strings.Contains(seen.String(), ph.readTill) {
				n, err := resp.Body.Read(buf)
				seen.Write(buf[:n])
				if err != nil {
					break
				}
			}
			cancel()
			resp.Body.Close()
		}
		cancel()
		waitFor(t, done, ph.name+": the request to be counted")
		if st := statsFor(t, g, "deepseek-v3.2", "primary"); st.HealthScore != 100 || st.Errors != 0 || st.LastError != "" {
			t.Errorf("%s: score %d errors %d last error %q; the client's leaving counted against the deployment", ph.name, st.HealthScore, st.Errors, st.LastError)
		}
		if n := len(g.primary.RequestsFor("gemini-2.5-flash")); n != 0 {
			t.Errorf("%s: failed over for a client that left", ph.name)
		}
	}
}

// TestStreamCutShortIsBroken: a stream whose connection closes cleanly
// before its end ([DONE]; response.completed for the Responses API) was
// cut short: the client gets the error event, and the deployment the
// blame.
func TestStreamCutShortIsBroken(t *testing.T) {
	g := newGateway(t, strings.Replace(defaultRouter, "default_route simple_qa", "default_route simple_qa\n\thealth_check {\n\t\tinterval off\n\t}", 1))
	for path, body := range map[string]string{
		"/v1/chat/completions": chatBody("simple_qa", true),
		"/v1/completions":      `{"model":"simple_qa","prompt":"Where is my order?","stream":true}`,
		"/v1/responses":        `{"model":"simple_qa","input":"Where is my order?","stream":true}`,
	} {
		g.primary.Reset()
		g.primary.Set("deepseek-chat", mockllm.Behavior{EndAfterChunks: 2})
		before := statsFor(t, g, "deepseek-v3.2", "primary").HealthScore
		resp, out, _ := g.postRaw(path, body)
		data := sseData(out)
		if resp.StatusCode != http.StatusOK || len(data) == 0 || !strings.Contains(data[len(data)-1], codeStreamBroken) {
			t.Errorf("%s: %d, the stream cut short did not end with the error event: %q", path, resp.StatusCode, out)
		}
		if after := statsFor(t, g, "deepseek-v3.2", "primary").HealthScore; after >= before {
			t.Errorf("%s: score %d after a stream cut short (was %d)", path, after, before)
		}
	}
}

// TestStreamErrorEventShape: the error event after a broken stream is one
// JSON object with an "error" member, the form the SDKs raise on.
func TestStreamErrorEventShape(t *testing.T) {
	e := &routerError{typ: typeServerError, code: codeStreamBroken, msg: `broke: "quoted"`}
	var b strings.Builder
	if err := writeStreamError(&b, e); err != nil {
		t.Fatal(err)
	}
	data, ok := strings.CutPrefix(b.String(), "data: ")
	if !ok || !strings.HasSuffix(data, "\n\n") {
		t.Fatalf("not one SSE event: %q", b.String())
	}
	var ev struct {
		Error apiErrorBody `json:"error"`
	}
	if err := json.Unmarshal([]byte(data), &ev); err != nil || ev.Error.Code != codeStreamBroken || ev.Error.Message != `broke: "quoted"` {
		t.Errorf("event %q (%v)", data, err)
	}
}

// TestProviderHeadersNotRelayed: the provider's account, cookies and
// infrastructure stay between it and the gateway; the headers an OpenAI
// client reads reach the client (TestKeyNeverRelayed passes one more).
func TestProviderHeadersNotRelayed(t *testing.T) {
	g := newGateway(t, defaultRouter)
	for _, stream := range both {
		resp, body := g.post(chatBody("simple_qa", stream))
		expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
		for _, f := range []string{"Set-Cookie", "Alt-Svc", "Openai-Organization", "Server"} {
			if v := resp.Header.Get(f); v != "" && !(f == "Server" && v == "Caddy") {
				t.Errorf("stream=%v: %s: %q reached the client", stream, f, v)
			}
		}
		for _, f := range []string{"X-Request-Id", "Openai-Processing-Ms", "X-Ratelimit-Remaining-Requests", "Openai-Version"} {
			if resp.Header.Get(f) == "" {
				t.Errorf("stream=%v: %s was not relayed", stream, f)
			}
		}
	}
}

// slowAnswer is a complete chat answer for a mock Body.
const slowAnswer = `{"id":"chatcmpl-slow","object":"chat.completion","created":1,"model":"deepseek-chat","choices":[{"index":0,"message":{"role":"assistant","content":"late"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`

// halfClosedRequest sends body to path over a raw HTTP/1.1 connection and
// then closes the connection's sending side (shutdown(SHUT_WR)), as some
// clients do once their request is written; it returns the response read
// afterwards.
func halfClosedRequest(t *testing.T, path, body string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(gatewayURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		path, strings.TrimPrefix(gatewayURL, "http://"), len(body), body)
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("the response broke off: %v (%q)", err, b)
	}
	return resp, string(b)
}

// TestHalfClosedClient: a client that sends its whole request and then
// closes its side (shutdown(SHUT_WR)) gets its answer, JSON or stream,
// although net/http cancels the request's context when it reads the
// client's FIN. Such a client may also have left altogether: when the
// attempt in flight fails, nothing fails over for it.
func TestHalfClosedClient(t *testing.T) {
	g := newGateway(t, defaultRouter)
	done := requestsDone(t)
	g.primary.Set("deepseek-chat", mockllm.Behavior{Latency: 300 * time.Millisecond})
	resp, b := halfClosedRequest(t, "/v1/chat/completions", chatBody("simple_qa", false))
	if resp.StatusCode != http.StatusOK || !strings.Contains(b, `"content":"w0 w1`) {
		t.Errorf("JSON: status %d body %q, want the answer", resp.StatusCode, b)
	}
	waitFor(t, done, "the JSON request to be counted")
	resp, b = halfClosedRequest(t, "/v1/chat/completions", chatBody("simple_qa", true))
	if resp.StatusCode != http.StatusOK || !strings.Contains(b, "w9 ") || !strings.HasSuffix(b, "data: [DONE]\n\n") {
		t.Errorf("stream: status %d body %q, want the whole stream", resp.StatusCode, b)
	}
	waitFor(t, done, "the stream request to be counted")

	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 500, Latency: 300 * time.Millisecond})
	resp, b = halfClosedRequest(t, "/v1/chat/completions", chatBody("simple_qa", false))
	if resp.StatusCode == http.StatusOK {
		t.Errorf("a failed attempt answered 200: %q", b)
	}
	waitFor(t, done, "the failed request to be counted")
	if n := len(g.primary.RequestsFor("gemini-2.5-flash")); n != 0 {
		t.Errorf("failed over %d times for a client that closed its side", n)
	}
}

// TestSlowClientIsNotTheProvidersFault: a client that reads one event at
// a time, slower than stream_idle_timeout, of events larger than the
// socket buffers, gets the whole stream: the time the router spends
// blocked writing to it is not the provider's silence. The timeout is a
// second, not the other fault tests' 300ms: the mock encodes, and the
// router reads, each 2 MB event within it, under -race on a loaded CI
// machine too.
func TestSlowClientIsNotTheProvidersFault(t *testing.T) {
	const idle, slowness = time.Second, 1500 * time.Millisecond
	config := strings.Replace(faultRouter, "default_route simple_qa", "default_route simple_qa\n\thealth_check {\n\t\tinterval off\n\t}", 1)
	config = strings.Replace(config, "stream_idle_timeout 300ms", "stream_idle_timeout "+idle.String(), 1)
	g := newGateway(t, config)
	g.primary.Set("deepseek-chat", mockllm.Behavior{Chunks: 3, ChunkPadding: 2 << 20})
	// a small receive buffer, fixed (no autotuning): the router's writes
	// of 2 MB events block while the client sleeps, whatever the host's
	// TCP settings
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", httpPort))
		if err == nil {
			err = conn.(*net.TCPConn).SetReadBuffer(64 << 10)
		}
		return conn, err
	}}}
	defer client.CloseIdleConnections()
	resp, err := client.Post(gatewayURL+"/v1/chat/completions", "application/json", strings.NewReader(chatBody("simple_qa", true)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	var events []string
	for {
		line, err := r.ReadString('\n')
		if strings.HasPrefix(line, "data: ") {
			events = append(events, line[:min(len(line), 300)])
			if len(line) > 1<<20 {
				// the client's slowness, after each large event: the router
				// is then blocked writing the next one for longer than idle
				<-time.After(slowness)
			}
		}
		if err != nil {
			break
		}
	}
	if n := len(events); n < 6 || events[n-1] != "data: [DONE]\n" || strings.Contains(strings.Join(events, ""), "upstream_stream_broken") {
		t.Errorf("%d events, the last %q: want the whole stream", n, events[max(n-1, 0)])
	}
	if st := statsFor(t, g, "deepseek-v3.2", "primary"); st.HealthScore != 100 || st.Errors != 0 {
		t.Errorf("score %d errors %d after a slow client, want 100 and 0", st.HealthScore, st.Errors)
	}
}
