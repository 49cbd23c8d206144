package llmrouter

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// TestHalfClosedFollowerGetsWholeStream: a client that half-closes right
// after its body and follows a stream already flowing gets its headers
// before net/http reads its close; it must still get the whole stream,
// never one that ends cleanly after the first event.
func TestHalfClosedFollowerGetsWholeStream(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 1021KB"))
	g.primary.Set("deepseek-chat", mockllm.Behavior{ChunkDelay: 100 * time.Millisecond, Chunks: 8})
	q := question("Review: can I return an opened box?", true, "")
	_, hangUp := g.streamUntil(q, "w0") // the leader's client stays and reads on
	defer hangUp()
	resp, b := halfClosedRequest(t, "/v1/chat/completions", q)
	if resp.Header.Get("X-LLM-Cache") != "hit" {
		t.Fatalf("not a follower: X-LLM-Cache %q", resp.Header.Get("X-LLM-Cache"))
	}
	if got := answerText(t, b); got != "w0 w1 w2 w3 w4 w5 w6 w7 " || !strings.HasSuffix(b, "data: [DONE]\n\n") {
		t.Errorf("half-closed follower got %q (%q): want the whole stream", got, b[max(len(b)-120, 0):])
	}
}

// rawHalfClosed is halfClosedRequest for a goroutine: it reports the
// status (0 if none) rather than failing the test.
func rawHalfClosed(path, body string) int {
	conn, err := net.Dial("tcp", strings.TrimPrefix(gatewayURL, "http://"))
	if err != nil {
		return 0
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		path, strings.TrimPrefix(gatewayURL, "http://"), len(body), body)
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		return 0
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestLeftLeaderFailsOverForFollowers: an HTTP/1 stream leader whose own
// client half-closed (or left) still fails over for its followers, once,
// rather than failing the flight and leaving each follower to run a
// failover chain of its own.
func TestLeftLeaderFailsOverForFollowers(t *testing.T) {
	g := newGateway(t, cacheRouter("\t\tmax_size 1022KB\n\t\tstale_if_error 0"))
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 500, Latency: 400 * time.Millisecond})
	q := question("Review: when does the outlet open?", true, "")
	leader := make(chan int, 1)
	go func() { leader <- rawHalfClosed("/v1/chat/completions", q) }()
	waitFor(t, g.primary.Arrived(), "the leader's request")
	const followers = 3
	results := make(chan streamed, followers)
	for range followers {
		go func() { results <- g.readStream(context.Background(), q, nil) }()
	}
	for range followers {
		s := waitFor(t, results, "a follower's answer")
		if s.err != nil || !strings.HasSuffix(s.body, "data: [DONE]\n\n") {
			t.Errorf("follower: %v %q", s.err, s.body)
		}
	}
	waitFor(t, leader, "the leader's answer") // 499: the documented lot of a half-closed client whose attempt failed
	if p, f := len(g.primary.RequestsFor("deepseek-chat")), len(g.primary.RequestsFor("gemini-2.5-flash")); p != 1 || f != 1 {
		t.Errorf("upstream requests: deepseek-chat %d, gemini-2.5-flash %d; want 1 and 1 (one flight, failed over once)", p, f)
	}
}

// TestHedgeAnswerAfterClientLeftIsNoError: when the first attempt fails
// after the client closed its side and the hedge then answers 200, the
// handler returns no error (no 499 logged, no handle_errors after the
// answer).
func TestHedgeAnswerAfterClientLeftIsNoError(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	global := strings.Replace(globalOptions, "log {\n\t\tlevel WARN\n\t}", "log {\n\t\toutput file "+logFile+"\n\t\tlevel DEBUG\n\t}", 1)
	router := strings.Replace(defaultRouter, "first_byte_timeout 2s", "first_byte_timeout 5s\n\t\thedge_after 100ms", 1)
	g := newGatewayWith(t, global, "", router)
	done := requestsDone(t)
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 500, Latency: 600 * time.Millisecond})
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Latency: 700 * time.Millisecond})

	resp, b := hedgedThenHalfClosed(t, g)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-LLM-Model") != "gemini-2.5-flash" {
		t.Fatalf("status %d model %q body %q: want the hedge's answer", resp.StatusCode, resp.Header.Get("X-LLM-Model"), b)
	}
	waitFor(t, done, "the request to be counted")
	time.Sleep(100 * time.Millisecond) // Caddy logs the handler's error after the request is counted
	logs, _ := os.ReadFile(logFile)
	if strings.Contains(string(logs), "the client went away before the answer") {
		t.Errorf("the handler returned errClientGone (499) for a request it answered 200 with its hedge")
	}
}

// TestFirstAnswerAfterFailedHedgeAndClientLeftIsNoError: the mirror of
// TestHedgeAnswerAfterClientLeftIsNoError: the hedge fails, the client
// closes its side, and the first attempt then answers 200: the request
// is counted as answered 200, not as a 499 of a client gone before its
// answer.
func TestFirstAnswerAfterFailedHedgeAndClientLeftIsNoError(t *testing.T) {
	router := strings.Replace(defaultRouter, "first_byte_timeout 2s", "first_byte_timeout 5s\n\t\thedge_after 100ms", 1)
	g := newGateway(t, router)
	done := requestsDone(t)
	g.primary.Set("deepseek-chat", mockllm.Behavior{Latency: 1500 * time.Millisecond, Times: 1})
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 500, Times: 1})
	before := scrape(t)

	resp, b := hedgedThenHalfClosed(t, g)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-LLM-Model") != "deepseek-v3.2" {
		t.Fatalf("status %d model %q body %q: want the first attempt's answer", resp.StatusCode, resp.Header.Get("X-LLM-Model"), b)
	}
	waitFor(t, done, "the request to be counted")
	after := scrape(t)
	for k, v := range after {
		if strings.HasPrefix(k, "caddy_llm_router_requests_total{") && strings.Contains(k, `code="499"`) && v != before[k] {
			t.Errorf("%s +%v: the request answered 200 was counted as a client gone before its answer", k, v-before[k])
		}
	}
}

// hedgedThenHalfClosed sends a chat request for simple_qa on a connection
// of its own, closes the client's side once the first attempt
// (deepseek-chat) and its hedge (gemini-2.5-flash) have reached g's
// primary mock, and reads the answer.
func hedgedThenHalfClosed(t *testing.T, g *gateway) (*http.Response, []byte) {
	t.Helper()
	body := chatBody("simple_qa", false)
	conn, err := net.Dial("tcp", strings.TrimPrefix(gatewayURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		strings.TrimPrefix(gatewayURL, "http://"), len(body), body)
	waitFor(t, g.primary.Arrived(), "the first attempt")
	if got := waitFor(t, g.primary.Arrived(), "the hedge"); got != "gemini-2.5-flash" {
		t.Fatalf("hedge arrived at %q", got)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestFollowerLeavingMidStreamIsCountedAsAnswered: a stream follower whose
// HTTP/2 client leaves after its stream began had its headers, 200, as a
// leader that leaves mid-stream has: requests_total counted it 499, the
// code of a client gone before any answer, though the leader's and a
// follower's whose write failed (over HTTP/1) are counted 200.
func TestFollowerLeavingMidStreamIsCountedAsAnswered(t *testing.T) {
	g, c, url := newHTTPSGateway(t, cacheRouter("\t\tmax_size 1009KB"))
	g.primary.Set("deepseek-chat", mockllm.Behavior{ChunkDelay: 100 * time.Millisecond, Chunks: 8})
	q := question("Review: is the red scarf wool?", true, "")
	done := requestsDone(t)
	before := scrape(t)
	leader, hangUpLeader := g.streamUntilOn(h2Client(t, c), url, q, "w0") // reads on to the end
	defer hangUpLeader()
	follower, hangUp := g.streamUntilOn(h2Client(t, c), url, q, "w0")
	if follower.Header.Get("X-LLM-Cache") != "hit" || follower.StatusCode != http.StatusOK {
		t.Fatalf("not a follower: %d, X-LLM-Cache %q", follower.StatusCode, follower.Header.Get("X-LLM-Cache"))
	}
	hangUp()
	waitFor(t, done, "the follower to be counted")
	_, _ = io.Copy(io.Discard, leader.Body)
	leader.Body.Close()
	waitFor(t, done, "the leader to be counted")
	after := scrape(t)
	counted := func(model, provider, code string) float64 {
		return after.delta(before, sel("caddy_llm_router_requests_total", "route", "simple_qa", "model", model, "provider", provider, "code", code, "endpoint", "chat"))
	}
	if l, f, gone, goneHit := counted("deepseek-v3.2", "primary", "200"), counted("deepseek-v3.2", "", "200"),
		counted("", "", "499"), counted("deepseek-v3.2", "", "499"); l != 1 || f != 1 || gone != 0 || goneHit != 0 {
		t.Errorf("requests_total: leader 200 +%v, follower 200 +%v, 499 +%v and +%v; want 1, 1, 0, 0: the follower had its 200", l, f, gone, goneHit)
	}
}
