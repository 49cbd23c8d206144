package llmrouter

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
	"github.com/llmrouter/caddy-llm-router/internal/openai"
)

// TestRelayLineEndings: whatever a provider's line endings (LF, CR LF, a
// lone CR, mixed) and however it splits an event's data into several data
// lines, the relay reads the usage, [DONE] and error events from the data
// as the SSE spec joins it, and relays the events as they came.
func TestRelayLineEndings(t *testing.T) {
	usageSplit := "data: {\"id\":\"x\",\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":120,\"completion_tokens\":10}}\n\n"
	cases := []struct {
		name   string
		stream string
		usage  *usage
		done   bool
		failed bool
	}{
		{"CR", strings.ReplaceAll(relayContent+relayUsageOnly+relayDone, "\n", "\r"), &usage{Input: 120, Output: 10, CachedInput: 64}, true, false},
		{"CR LF", strings.ReplaceAll(relayContent+relayUsageOnly+relayDone, "\n", "\r\n"), &usage{Input: 120, Output: 10, CachedInput: 64}, true, false},
		{"mixed", relayContent + strings.ReplaceAll(relayUsageOnly, "\n", "\r") + "data: [DONE]\r\n\n", &usage{Input: 120, Output: 10, CachedInput: 64}, true, false},
		{"usage in two data lines", relayContent + usageSplit + relayDone, &usage{Input: 120, Output: 10}, true, false},
		{"usage in two CR data lines", relayContent + strings.ReplaceAll(usageSplit, "\n", "\r") + relayDone, &usage{Input: 120, Output: 10}, true, false},
		{"[DONE] after an event line, CR", relayContent + "event: done\rdata: [DONE]\r\r", nil, true, false},
		{"error in two data lines", relayContent + "data: {\"error\":\ndata: {\"message\":\"overloaded\"}}\n\n" + relayDone, nil, true, true},
		// data that starts with [DONE] is the end, as the SDKs read it
		// (they test the joined data's start): "[DONE]\nx" too
		{"[DONE] is the first of two lines", relayContent + "data: [DONE]\ndata: x\n\n", nil, true, false},
	}
	for _, tc := range cases {
		for name, r := range map[string]func() io.Reader{
			"whole":    func() io.Reader { return strings.NewReader(tc.stream) },
			"one byte": func() io.Reader { return iotest.OneByteReader(strings.NewReader(tc.stream)) },
		} {
			var out bytes.Buffer
			s := streamRelay{api: openai.Chat}
			if err := runRelay(t, &s, &out, noFlush, r()); err != nil {
				t.Errorf("%s, %s: relay = %v", tc.name, name, err)
				continue
			}
			if out.String() != tc.stream {
				t.Errorf("%s, %s: relayed %q, want %q", tc.name, name, out.String(), tc.stream)
			}
			if s.found != (tc.usage != nil) || (s.found && s.usage != *tc.usage) {
				t.Errorf("%s, %s: usage %+v (found %v), want %+v", tc.name, name, s.usage, s.found, tc.usage)
			}
			if s.done != tc.done || s.failed != tc.failed {
				t.Errorf("%s, %s: done %v failed %v, want %v %v", tc.name, name, s.done, s.failed, tc.done, tc.failed)
			}
		}
	}
}

// TestRelayResponsesEnd: a Responses stream ends (or fails) by its events'
// top-level type only: a client's metadata that the provider echoes in
// response.created, or an item's own type, ends nothing.
func TestRelayResponsesEnd(t *testing.T) {
	const (
		created = `data: {"type":"response.created","response":{"id":"resp_1","status":"in_progress","error":null,"metadata":{"x":"response.completed","y":"response.incomplete","z":"response.failed","type":"response.completed"}}}` + "\n\n"
		delta   = `data: {"type":"response.output_text.delta","delta":"hi"}` + "\n\n"
		item    = `data: {"type":"response.output_item.done","item":{"type":"response.completed","id":"x"}}` + "\n\n"
		spaced  = `data: {"sequence_number": 9, "type" : "response.completed", "response": {"usage": {"input_tokens": 5, "output_tokens": 7}}}` + "\n\n"
	)
	cases := []struct {
		name         string
		stream       string
		done, failed bool
	}{
		{"echoed metadata", created + delta, false, false},
		{"an item's type", created + item, false, false},
		{"completed", created + delta + `data: {"type":"response.completed","response":{"id":"resp_1","usage":{"input_tokens":5,"output_tokens":7}}}` + "\n\n", true, false},
		{"completed, spaced, type not first", created + spaced, true, false},
		{"incomplete", created + `data: {"type":"response.incomplete","response":{"id":"resp_1"}}` + "\n\n", true, false},
		{"failed", created + `data: {"type":"response.failed","response":{"id":"resp_1","error":{"code":"server_error"}}}` + "\n\n", false, true},
		{"error event", created + `data: {"type":"error","code":"server_error","message":"x"}` + "\n\n", false, true},
		{"last type counts", created + `data: {"type":"response.completed","type":"response.output_text.delta","delta":"x"}` + "\n\n", false, false},
	}
	for _, tc := range cases {
		s := streamRelay{api: openai.Responses}
		if err := runRelay(t, &s, io.Discard, noFlush, strings.NewReader(tc.stream)); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if s.done != tc.done || s.failed != tc.failed {
			t.Errorf("%s: done %v failed %v, want %v %v", tc.name, s.done, s.failed, tc.done, tc.failed)
		}
	}
}

// TestRelayUsageWithoutCounts: a usage object without integer counts
// ("usage":{}, floats, strings) is no usage: the stream is estimated
// rather than charged nothing, and such a chunk after a real usage does
// not replace it.
func TestRelayUsageWithoutCounts(t *testing.T) {
	for _, bad := range []string{
		`data: {"id":"x","choices":[],"usage":{}}` + "\n\n",
		`data: {"id":"x","choices":[],"usage":{"prompt_tokens":12.5,"completion_tokens":3}}` + "\n\n",
		`data: {"id":"x","choices":[],"usage":{"prompt_tokens":"120","completion_tokens":"10"}}` + "\n\n",
		`data: {"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"total_tokens":null}}` + "\n\n",
	} {
		s := streamRelay{api: openai.Chat}
		if err := runRelay(t, &s, io.Discard, noFlush, strings.NewReader(relayContent+bad+relayDone)); err != nil {
			t.Fatal(err)
		}
		if s.found || !s.done || s.textBytes != 5 {
			t.Errorf("%q: usage %+v (done %v, %d bytes of text), want none: the stream is estimated", bad, s.usage, s.done, s.textBytes)
		}
		s = streamRelay{api: openai.Chat}
		if err := runRelay(t, &s, io.Discard, noFlush, strings.NewReader(relayContent+relayUsageOnly+bad+relayDone)); err != nil {
			t.Fatal(err)
		}
		if !s.found || s.usage != (usage{Input: 120, Output: 10, CachedInput: 64}) {
			t.Errorf("%q after a usage: usage %+v, want the first", bad, s.usage)
		}
		// a client that did not ask for usage never sees a usage-only
		// chunk, whether or not its counts could be read
		var out strings.Builder
		s = streamRelay{api: openai.Chat, strip: true}
		if err := runRelay(t, &s, &out, noFlush, strings.NewReader(relayContent+bad+relayDone)); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(bad, `"choices":[]`) && strings.Contains(out.String(), `"usage"`) {
			t.Errorf("%q reached a client that did not ask for usage: %s", bad, out.String())
		}
	}
}

// TestRelayErrorEventUsage: an error event that reports usage (the
// Responses API's response.failed carries its response, usage included;
// a chat provider's mid-stream error chunk may carry the usage so far) is
// still a report of what the provider billed: the stream fails, and is
// charged that usage rather than an estimate of its text (none, for a
// reasoning model that failed while thinking).
func TestRelayErrorEventUsage(t *testing.T) {
	cases := []struct {
		name   string
		api    openai.API
		stream string
		want   usage
	}{
		{"response.failed", openai.Responses,
			`data: {"type":"response.created","response":{"id":"resp_1","status":"in_progress"}}` + "\n\n" +
				`data: {"type":"response.failed","response":{"id":"resp_1","status":"failed","error":{"code":"server_error","message":"x"},"usage":{"input_tokens":900,"output_tokens":30000,"total_tokens":30900}}}` + "\n\n",
			usage{Input: 900, Output: 30000}},
		{"chat error chunk", openai.Chat,
			relayContent + `data: {"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"error"}],"error":{"message":"overloaded"},"usage":{"prompt_tokens":900,"completion_tokens":30000}}` + "\n\n",
			usage{Input: 900, Output: 30000}},
	}
	for _, tc := range cases {
		s := streamRelay{api: tc.api}
		if err := runRelay(t, &s, io.Discard, noFlush, strings.NewReader(tc.stream)); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !s.failed {
			t.Errorf("%s: not failed", tc.name)
		}
		if !s.found || s.usage != tc.want {
			t.Errorf("%s: usage %+v (found %v), want %+v: the error event's usage is the bill", tc.name, s.usage, s.found, tc.want)
		}
	}
}

// TestRelayUsageInUnendedLastEvent: a provider that ends its stream
// without the blank line after its last event (the usage chunk, whose
// line is whole) did report its usage: the event is not relayed (it never
// completed, and the stream counts as cut short), but its usage is the
// bill, not an estimate of the text.
func TestRelayUsageInUnendedLastEvent(t *testing.T) {
	usageLine := strings.TrimSuffix(relayUsageOnly, "\n\n")
	for _, end := range []string{"", "\n", "\r\n", "\r"} {
		for name, r := range map[string]func() io.Reader{
			"whole":    func() io.Reader { return strings.NewReader(relayContent + usageLine + end) },
			"one byte": func() io.Reader { return iotest.OneByteReader(strings.NewReader(relayContent + usageLine + end)) },
		} {
			var out bytes.Buffer
			s := streamRelay{api: openai.Chat}
			if err := runRelay(t, &s, &out, noFlush, r()); err != io.ErrUnexpectedEOF {
				t.Errorf("%q, %s: relay = %v, want %v", end, name, err, io.ErrUnexpectedEOF)
			}
			if out.String() != relayContent {
				t.Errorf("%q, %s: relayed %q, want %q", end, name, out.String(), relayContent)
			}
			if want := (usage{Input: 120, Output: 10, CachedInput: 64}); !s.found || s.usage != want {
				t.Errorf("%q, %s: usage %+v (found %v), want %+v", end, name, s.usage, s.found, want)
			}
		}
	}
}

// TestRelayDoneWithTrailingSpace: "data: [DONE] " ends the stream for the
// official SDKs (they test the data's start): the relay ends it too,
// rather than call a whole stream cut short and add its own error event
// after the client's end.
func TestRelayDoneWithTrailingSpace(t *testing.T) {
	for _, done := range []string{"data: [DONE] \n\n", "data: [DONE]\t\r\n\r\n", "data:[DONE]  \n\n"} {
		s := streamRelay{api: openai.Chat}
		if err := runRelay(t, &s, io.Discard, noFlush, strings.NewReader(relayContent+relayUsageOnly+done)); err != nil {
			t.Fatalf("%q: %v", done, err)
		}
		if !s.done || s.failed {
			t.Errorf("%q: done %v failed %v, want the stream ended", done, s.done, s.failed)
		}
	}
}

// TestLargeResponsesEventRelayed: a Responses API stream's last event,
// response.completed, carries the whole response (every output text
// again, their log probabilities when asked for, an image tool's base64
// result), so it is as large as the same answer as JSON, which is read up
// to 256 MiB. One of 5 MiB (about 4,000 tokens with top_logprobs 20) is
// relayed and charged at its usage: the stream is not broken, the client
// gets its answer, and the deployment is not blamed.
func TestLargeResponsesEventRelayed(t *testing.T) {
	logprobs := strings.Repeat(`{"token":"word","bytes":[119,111,114,100],"logprob":-0.25},`, 5<<20/56)
	up := reviewUpstream(t, func(w http.ResponseWriter, _ string, _ map[string]any) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"type":"response.created","response":{"id":"resp_1","status":"in_progress","usage":null}}`+"\n\n")
		io.WriteString(w, `data: {"type":"response.output_text.delta","delta":"word"}`+"\n\n")
		io.WriteString(w, `data: {"type":"response.completed","response":{"id":"resp_1","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"word","logprobs":[`+
			logprobs+`{}]}]}],"usage":{"input_tokens":100,"output_tokens":4000,"total_tokens":4100}}}`+"\n\n")
	})
	r := benchRouter(t, up.URL, nil)
	srv := routerServer(t, r)
	_, body, err := postCounted(t, srv.URL+"/v1/responses", `{"model":"deepseek-v3.2","stream":true,"top_logprobs":20,"include":["message.output_text.logprobs"],"input":"Write."}`)
	if err != nil || !bytes.Contains(body, []byte(`"type":"response.completed"`)) || bytes.Contains(body, []byte(codeStreamBroken)) {
		t.Errorf("%v, %d bytes, last bytes %q: want the whole stream", err, len(body), body[max(0, len(body)-300):])
	}
	if c := chargedTo(r, "deepseek-v3.2"); c.in != 100 || c.out != 4000 || c.estIn+c.estOut != 0 {
		t.Errorf("charged %+v, want the provider's usage (100 in, 4000 out)", c)
	}
	for _, d := range r.deployments {
		if s := d.state.health.score.Load(); d.name == "deepseek-v3.2" && s != maxScore {
			t.Errorf("health score %d, want %d: the provider did nothing wrong", s, maxScore)
		}
	}
}

// TestRequestsOwnStreamErrorBlamesNoDeployment: an error event that
// reports the request's own fault (a prompt the provider's policy
// flagged, sent mid-stream as OpenAI does with cyber_policy or
// invalid_prompt; an invalid_request_error) is the client's, as the same
// error in a 400 is: it costs the deployment no health, so that a client
// cannot disable every deployment of a route by sending such prompts, and
// one before any answer is relayed rather than tried on every candidate.
func TestRequestsOwnStreamErrorBlamesNoDeployment(t *testing.T) {
	const (
		created = `data: {"type":"response.created","response":{"id":"resp_1","status":"in_progress","usage":null}}` + "\n\n"
		delta   = `data: {"type":"response.output_text.delta","delta":"Sure"}` + "\n\n"
	)
	cases := []struct {
		name, path, body, stream string
	}{
		{"response.failed, cyber_policy", "/v1/responses", `{"model":"simple_qa","stream":true,"input":"Write."}`,
			created + delta + `data: {"type":"response.failed","response":{"id":"resp_1","status":"failed","error":{"code":"cyber_policy","message":"Your request was flagged for possible cybersecurity risk."}}}` + "\n\n"},
		{"error event, invalid_prompt", "/v1/responses", `{"model":"simple_qa","stream":true,"input":"Write."}`,
			created + `data: {"type":"error","code":"invalid_prompt","message":"Invalid prompt: your prompt was flagged as potentially violating our usage policy.","param":null}` + "\n\n"},
		{"chat, invalid_request_error", "/v1/chat/completions", `{"model":"simple_qa","stream":true,"messages":[{"role":"user","content":"Write."}]}`,
			chunk("Sure") + `data: {"error":{"message":"Invalid prompt.","type":"invalid_request_error","param":null,"code":"invalid_prompt"}}` + "\n\n"},
		{"first event, invalid_request_error", "/v1/chat/completions", `{"model":"simple_qa","stream":true,"messages":[{"role":"user","content":"Write."}]}`,
			`data: {"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}` + "\n\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var asked atomic.Int32
			up := reviewUpstream(t, func(w http.ResponseWriter, _ string, _ map[string]any) {
				asked.Add(1)
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, tc.stream)
			})
			r := benchRouter(t, up.URL, nil)
			srv := routerServer(t, r)
			resp, body, _ := postCounted(t, srv.URL+tc.path, tc.body) // ends with an abort
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"error"`) {
				t.Errorf("%d %q, want the provider's error event", resp.StatusCode, body)
			}
			if n := asked.Load(); n != 1 {
				t.Errorf("the provider was asked %d times, want once: the request's own error is not tried elsewhere", n)
			}
			expectFullHealth(t, r, "the request's own error")
		})
	}
}

// TestResponsesStreamFailsOverBeforeItsOutput: a Responses API stream
// opens with response.created and response.in_progress as soon as the
// provider takes the request, before the model runs: a stream that fails
// or stalls after them, before any output, has sent the client nothing
// of an answer, and fails over as a chat stream that fails before its
// first chunk does (within first_byte_timeout). The events held are
// relayed, in order, with the answer that follows them.
func TestResponsesStreamFailsOverBeforeItsOutput(t *testing.T) {
	const (
		created    = `data: {"type":"response.created","response":{"id":"resp_%s","status":"in_progress","usage":null}}` + "\n\n"
		inProgress = `data: {"type":"response.in_progress","response":{"id":"resp_%s","status":"in_progress","usage":null}}` + "\n\n"
		delta      = `data: {"type":"response.output_text.delta","delta":"Hi"}` + "\n\n"
		completed  = `data: {"type":"response.completed","response":{"id":"resp_%s","status":"completed","usage":{"input_tokens":5,"output_tokens":1,"total_tokens":6}}}` + "\n\n"
	)
	for _, fault := range []string{"error", "stall"} {
		t.Run(fault, func(t *testing.T) {
			up := reviewUpstream(t, func(w http.ResponseWriter, model string, _ map[string]any) {
				w.Header().Set("Content-Type", "text/event-stream")
				fmt.Fprintf(w, created+inProgress, model, model)
				if model == "gemini-2.5-flash" {
					fmt.Fprintf(w, delta+completed, model)
					return
				}
				if fault == "error" {
					io.WriteString(w, `data: {"type":"response.failed","response":{"id":"resp_x","status":"failed","error":{"code":"server_error","message":"overloaded"}}}`+"\n\n")
					return
				}
				w.(http.Flusher).Flush()
				<-t.Context().Done() // the router gives up on it
			})
			r := benchRouter(t, up.URL, func(r *Router) {
				r.Failover = &Failover{FirstByteTimeout: caddy.Duration(300 * time.Millisecond), StreamIdleTimeout: caddy.Duration(3 * time.Second)}
			})
			srv := routerServer(t, r)
			resp, body, err := postCounted(t, srv.URL+"/v1/responses", `{"model":"simple_qa","stream":true,"input":"Hi."}`)
			want := fmt.Sprintf(created+inProgress+delta+completed, "gemini-2.5-flash", "gemini-2.5-flash", "gemini-2.5-flash")
			if err != nil || resp.Header.Get("X-LLM-Model") != "gemini-2.5-flash" || string(body) != want {
				t.Errorf("%v, model %q, body %q; want the second candidate's whole stream %q", err, resp.Header.Get("X-LLM-Model"), body, want)
			}
		})
	}
}

// TestLargeEventArrivingSlowlyIsNoSilence: stream_idle_timeout bounds the
// provider's silence; a large event (a Responses API stream's last, with
// the whole response) whose bytes keep coming for longer than that is no
// silence: the stream is relayed whole, and the deployment not blamed.
func TestLargeEventArrivingSlowlyIsNoSilence(t *testing.T) {
	const pieces = 20
	up := reviewUpstream(t, func(w http.ResponseWriter, _ string, _ map[string]any) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, chunk("Hi"))
		io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"`)
		for range pieces { // a slow link: a piece every 50 ms, a second in all
			w.(http.Flusher).Flush()
			<-time.After(50 * time.Millisecond)
			io.WriteString(w, strings.Repeat("x", 50<<10))
		}
		io.WriteString(w, `"},"finish_reason":"stop"}]}`+"\n\n"+relayDone)
	})
	r := benchRouter(t, up.URL, func(r *Router) {
		r.Failover = &Failover{StreamIdleTimeout: caddy.Duration(300 * time.Millisecond)}
	})
	srv := routerServer(t, r)
	_, body, err := postCounted(t, srv.URL+"/v1/chat/completions", `{"model":"deepseek-v3.2","stream":true,"messages":[{"role":"user","content":"Hi."}]}`)
	if err != nil || !bytes.HasSuffix(body, []byte(relayDone)) || bytes.Contains(body, []byte(codeStreamBroken)) {
		t.Errorf("%v, %d bytes ending %q: want the whole stream", err, len(body), body[max(0, len(body)-200):])
	}
	expectFullHealth(t, r, "the provider was never silent")
}

// TestStreamRateLimitEventIsA429: a provider that reports a rate limit
// inside a 200 stream (an error event or a Responses API response.failed
// whose code is rate_limit_exceeded or insufficient_quota; Anthropic's
// rate_limit_error type) says what a 429 says: the deployment cools down
// and loses no health, and a stream that has sent no answer yet fails
// over.
func TestStreamRateLimitEventIsA429(t *testing.T) {
	const (
		created = `data: {"type":"response.created","response":{"id":"resp_1","status":"in_progress","usage":null}}` + "\n\n"
		delta   = `data: {"type":"response.output_text.delta","delta":"Sure"}` + "\n\n"
		chatReq = `{"model":"simple_qa","stream":true,"messages":[{"role":"user","content":"Write."}]}`
		respReq = `{"model":"simple_qa","stream":true,"input":"Write."}`
	)
	cases := []struct {
		name, path, body, stream string
		failsOver                bool
	}{
		{"chat, first event", "/v1/chat/completions", chatReq,
			`data: {"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}` + "\n\n", true},
		{"chat, first event, rate_limit_error", "/v1/chat/completions", chatReq,
			`data: {"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}` + "\n\n", true},
		{"responses, first event", "/v1/responses", respReq,
			created + `data: {"type":"response.failed","response":{"id":"resp_1","status":"failed","error":{"code":"rate_limit_exceeded","message":"Rate limit reached."}}}` + "\n\n", true},
		{"chat, mid-stream, insufficient_quota", "/v1/chat/completions", chatReq,
			chunk("Sure") + `data: {"error":{"message":"You exceeded your current quota.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}` + "\n\n", false},
		{"responses, mid-stream", "/v1/responses", respReq,
			created + delta + `data: {"type":"error","code":"rate_limit_exceeded","message":"Rate limit reached.","param":null}` + "\n\n", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := reviewUpstream(t, func(w http.ResponseWriter, model string, _ map[string]any) {
				w.Header().Set("Content-Type", "text/event-stream")
				if model == "deepseek-chat" {
					io.WriteString(w, tc.stream)
					return
				}
				if strings.HasSuffix(tc.path, "responses") {
					io.WriteString(w, created+delta+`data: {"type":"response.completed","response":{"id":"resp_2","status":"completed","usage":{"input_tokens":5,"output_tokens":1,"total_tokens":6}}}`+"\n\n")
					return
				}
				io.WriteString(w, chunk("Hi")+"data: [DONE]\n\n")
			})
			r := benchRouter(t, up.URL, nil)
			srv := routerServer(t, r)
			resp, _, _ := postCounted(t, srv.URL+tc.path, tc.body) // a broken stream ends with an abort
			if got := resp.Header.Get("X-LLM-Model") == "gemini-2.5-flash"; got != tc.failsOver {
				t.Errorf("answered by %q; failed over: %v, want %v", resp.Header.Get("X-LLM-Model"), got, tc.failsOver)
			}
			expectFullHealth(t, r, "a rate limit costs no health")
			for _, d := range r.deployments {
				if v := d.state.viewAt(time.Now()); d.name == "deepseek-v3.2" && v.cooldownUntil.IsZero() {
					t.Errorf("%s: %s, want a cooldown after its rate limit", d.name, v.state)
				}
			}
		})
	}
}

// expectFullHealth: every deployment of r has its full score (why says
// what should have cost none).
func expectFullHealth(t *testing.T, r *Router, why string) {
	t.Helper()
	for _, d := range r.deployments {
		if s := d.state.health.score.Load(); s != maxScore {
			t.Errorf("%s: health score %d, want %d: %s", d.name, s, maxScore, why)
		}
	}
}

// TestChatStreamFailsOverAfterItsRoleChunk: providers open a chat stream
// with a chunk that names the role and carries nothing else, as they take
// the request; a stream that fails right after it (an error event, a
// broken connection, silence past stream_idle_timeout) has sent the
// client nothing of an answer, and fails over as one that fails before
// its first event does: the client gets the second candidate's stream
// alone, the first's input is charged as estimated, and no time to first
// token is observed for it. A stream whose content follows the role chunk
// reaches the client byte for byte. Azure OpenAI sends its content
// filter's results on the prompt before the role chunk: held alike; and
// a stream of n choices opens with a role chunk for each: all held; one
// with logprobs asked for has its (empty) logprobs in its role chunk.
func TestChatStreamFailsOverAfterItsRoleChunk(t *testing.T) {
	const (
		filter = `data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}` + "\n\n"
		role   = `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"%s","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}` + "\n\n"
		roles  = `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"%[1]s","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}` + "\n\n" +
			`data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"%[1]s","choices":[{"index":1,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}` + "\n\n"
		logprobs = `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"%s","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":{"content":[],"refusal":null},"finish_reason":null}],"usage":null}` + "\n\n"
		content  = `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"%s","choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":"stop"}]}` + "\n\n"
		usage    = `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"%s","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}` + "\n\n"
		doneEv   = "data: [DONE]\n\n"
	)
	for _, opening := range []string{filter + role, role, roles, logprobs} {
		for _, fault := range []string{"none", "error event", "broken", "silent"} {
			name := fault
			switch opening {
			case filter + role:
				name = "azure, " + fault
			case roles:
				name = "n 2, " + fault
			case logprobs:
				name = "logprobs, " + fault
			}
			n := 1
			if opening == roles {
				n = 2
			}
			t.Run(name, func(t *testing.T) { failOverAfterTheRoleChunk(t, fault, opening, content+usage+doneEv, n) })
		}
	}
}

// failOverAfterTheRoleChunk runs a case of
// TestChatStreamFailsOverAfterItsRoleChunk, a request for n answers: each
// deployment opens its stream with opening; the second sends rest, the
// first too or fault.
func failOverAfterTheRoleChunk(t *testing.T, fault, opening, rest string, n int) {
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, _ map[string]any) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, opening, model)
		if model == "gemini-2.5-flash" || fault == "none" {
			fmt.Fprintf(w, rest, model, model)
			return
		}
		w.(http.Flusher).Flush()
		switch fault {
		case "error event":
			io.WriteString(w, `data: {"error":{"message":"overloaded","type":"server_error","param":null,"code":null}}`+"\n\n")
		case "broken":
			panic(http.ErrAbortHandler) // the response is cut, its chunked body unended
		case "silent":
			<-t.Context().Done() // the router gives up on it
		}
	})
	r := benchRouter(t, up.URL, func(r *Router) {
		r.Failover = &Failover{FirstByteTimeout: caddy.Duration(3 * time.Second), StreamIdleTimeout: caddy.Duration(300 * time.Millisecond)}
	})
	srv := routerServer(t, r)
	resp, body, err := postCounted(t, srv.URL+"/v1/chat/completions", fmt.Sprintf(`{"model":"simple_qa","stream":true,"n":%d,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hi."}]}`, n))
	model, attempts := "gemini-2.5-flash", "2"
	if fault == "none" {
		model, attempts = "deepseek-v3.2", "1"
	}
	upstream := map[string]string{"gemini-2.5-flash": "gemini-2.5-flash", "deepseek-v3.2": "deepseek-chat"}[model]
	want := fmt.Sprintf(opening+rest, upstream, upstream, upstream)
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("X-LLM-Model") != model || resp.Header.Get("X-LLM-Attempts") != attempts || string(body) != want {
		t.Errorf("%v, %d, model %q, attempts %q, body %q; want %s's whole stream %q in %s attempts",
			err, resp.StatusCode, resp.Header.Get("X-LLM-Model"), resp.Header.Get("X-LLM-Attempts"), body, model, want, attempts)
	}
	if fault == "none" {
		return
	}
	if c := chargedTo(r, "deepseek-v3.2"); c.out != 0 || c.in == 0 || c.estIn != c.in {
		t.Errorf("the failed attempt was charged %+v; want its input, estimated, and no output", c)
	}
	for _, d := range r.deployments {
		st := &d.state.stats
		st.mu.Lock()
		n := st.ttft.n
		st.mu.Unlock()
		if d.name == "deepseek-v3.2" && n != 0 {
			t.Errorf("a time to first token was observed for the failed attempt")
		}
	}
}

// TestDoneAsTheSDKsReadIt: the official SDKs end a stream at an event
// whose data starts with [DONE] ("[DONE]x" too) and read nothing after
// it; the router read such an event as any other, so the stream that ended
// after it was one cut short: an error event after the client's end, and
// the deployment blamed for a broken stream. It ends the stream as the
// SDKs do.
func TestDoneAsTheSDKsReadIt(t *testing.T) {
	g := newGateway(t, withHealth("\t\tinterval off"))
	g.primary.Set("deepseek-chat", mockllm.Behavior{ContentType: "text/event-stream",
		Body: chunk("Hi") + "data: [DONE]x\n\n"})
	resp, body := g.post(chatBody("simple_qa", true))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	if !strings.HasSuffix(body, "data: [DONE]x\n\n") || strings.Contains(body, "error") {
		t.Errorf("stream %q, want the provider's, ending at its [DONE]", body)
	}
	if st := statsFor(t, g, "deepseek-v3.2", "primary"); st.HealthScore != maxScore {
		t.Errorf("deepseek's score %d after a whole stream, want %d", st.HealthScore, maxScore)
	}
}
