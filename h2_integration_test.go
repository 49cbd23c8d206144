package llmrouter

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Client is a fresh HTTP/2 client to the HTTPS gateway (a connection of
// its own), with c's TLS settings.
func h2Client(t *testing.T, c *http.Client) *http.Client {
	tr := c.Transport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// h1Client is c without HTTP/2: HTTP/1.1 over TLS.
func h1Client(t *testing.T, c *http.Client) *http.Client {
	tr := c.Transport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// waitFollowers waits until n requests follow a flight.
func waitFollowers(t *testing.T, n int) {
	t.Helper()
	waitGoroutines(t, fmt.Sprintf("%d followers", n), func(stacks []string) bool {
		following := 0
		for _, g := range stacks {
			if strings.Contains(g, "(*cacheFlight).await(") {
				following++
			}
		}
		return following >= n
	})
}

// TestH2JSONLeaderLeaves: the client of a JSON request that others follow
// leaves before the answer. Over HTTP/1 its upstream request goes on and
// lands for the followers: one upstream request. Over HTTP/2 it must be
// the same: its leaving must not cancel the answer the followers wait for.
func TestH2JSONLeaderLeaves(t *testing.T) {
	g, c, url := newHTTPSGateway(t, cacheRouter("\t\tmax_size 1033KB"))
	for _, proto := range []int{1, 2} {
		g.primary.Reset()
		g.primary.Set("deepseek-chat", mockllm.Behavior{Latency: 500 * time.Millisecond})
		client := h2Client(t, c)
		if proto == 1 {
			client = h1Client(t, c)
		}
		q := question(fmt.Sprintf("Where is my parcel (HTTP/%d)?", proto), false, "")
		ctx, leave := context.WithCancel(t.Context())
		leader := make(chan error, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(q))
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			leader <- err
		}()
		select {
		case <-g.primary.Arrived():
		case err := <-leader:
			t.Fatalf("HTTP/%d: the leader ended before its request arrived: %v", proto, err)
		}
		const followers = 2
		answers := make(chan string, followers)
		for range followers {
			go func() {
				resp, err := h2Client(t, c).Post(url+"/v1/chat/completions", "application/json", strings.NewReader(q))
				if err != nil {
					answers <- err.Error()
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				answers <- fmt.Sprintf("%d %s %s", resp.StatusCode, resp.Header.Get("X-LLM-Cache"), b)
			}()
		}
		waitFollowers(t, followers)
		leave()
		waitFor(t, leader, "the leader to leave")
		for range followers {
			if a := waitFor(t, answers, "a follower's answer"); !strings.HasPrefix(a, "200 hit ") {
				t.Errorf("HTTP/%d: follower got %.200s, want the leader's answer (hit)", proto, a)
			}
		}
		if n := len(g.primary.RequestsFor("deepseek-chat")); n != 1 {
			t.Errorf("HTTP/%d: %d upstream requests, want 1 (the leader's, for everyone)", proto, n)
		}
	}

	// a leader that nobody follows still ends its upstream request when
	// its HTTP/2 client leaves
	g.primary.Reset()
	g.primary.Set("deepseek-chat", mockllm.Behavior{Latency: time.Minute})
	ctx, leave := context.WithCancel(t.Context())
	go func() {
		<-g.primary.Arrived()
		leave()
	}()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(question("Where is my parcel now?", false, "")))
	if resp, err := h2Client(t, c).Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("a response (%d) to a client that left", resp.StatusCode)
	}
	waitFor(t, g.primary.Canceled(), "the lone leader's upstream request to end")
}

// TestH2CacheLeaderKeepsItsEnd: an HTTP/2 leader whose client reads well,
// with a follower, gets its stream's end although keeping the answer
// takes longer than leaderWriteGrace (a large answer to assemble and
// store, here held by the hook). The stream's last event goes out with
// the end of the response, after that: an HTTP/2 stream is reset when its
// write deadline passes, write pending or not, so the bound on the
// leader's writes must not outlive its relay.
func TestH2CacheLeaderKeepsItsEnd(t *testing.T) {
	defer func(old time.Duration) { leaderWriteGrace = old }(leaderWriteGrace)
	leaderWriteGrace = 100 * time.Millisecond
	slowKeep := func() { <-time.After(3 * leaderWriteGrace) } // the router's own work, longer than the grace
	cacheKeepHook.Store(&slowKeep)
	defer cacheKeepHook.Store(nil)
	g, c, url := newHTTPSGateway(t, cacheRouter("\t\tmax_size 1037KB"))
	g.primary.Set("deepseek-chat", mockllm.Behavior{Chunks: 5, ChunkDelay: 100 * time.Millisecond})
	q := question("What is in the big box (HTTP/2)?", true, "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	leader := leadStream(ctx, t, h2Client(t, c), url, q)
	follower := make(chan streamed, 1)
	go func() { follower <- readStreamAt(ctx, h2Client(t, c), url, q, nil) }()
	waitFollowers(t, 1) // it follows before the stream ends
	for name, s := range map[string]streamed{"leader": waitFor(t, leader, "the leader's stream"), "follower": waitFor(t, follower, "the follower's stream")} {
		if s.err != nil || s.proto != 2 || !strings.HasSuffix(s.body, "data: [DONE]\n\n") || answerText(t, s.body) != "w0 w1 w2 w3 w4 " {
			t.Errorf("%s: HTTP/%d %v, %q", name, s.proto, s.err, s.body)
		}
	}
	if n := len(g.primary.RequestsFor("deepseek-chat")); n != 1 {
		t.Errorf("%d upstream requests, want 1", n)
	}
}

// TestH2BodyOfDeclaredLengthIsWhole: an HTTP/2 client that has sent the
// whole body its Content-Length declares, but not the end of its stream
// (a full-duplex client), is answered: the body is whole at its declared
// length, as over HTTP/1.1, rather than at the stream's end, which would
// come only when Caddy's read timeout ended the request. (Go's own client
// holds the body's last bytes until it sees the body's end, so the request
// is written frame by frame.)
func TestH2BodyOfDeclaredLengthIsWhole(t *testing.T) {
	_, _, url := newHTTPSGateway(t, defaultRouter)
	conn, err := tls.Dial("tcp", strings.TrimPrefix(url, "https://"), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	body := chatBody("simple_qa", false)
	var head bytes.Buffer
	enc := hpack.NewEncoder(&head)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", strings.TrimPrefix(url, "https://")},
		{":path", "/v1/chat/completions"}, {"content-type", "application/json"}, {"content-length", strconv.Itoa(len(body))}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	fr := http2.NewFramer(conn, conn)
	_, _ = io.WriteString(conn, http2.ClientPreface)
	if err := errors.Join(fr.WriteSettings(),
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: head.Bytes(), EndHeaders: true}),
		fr.WriteData(1, false, []byte(body))); err != nil { // the whole body, the stream left open
		t.Fatal(err)
	}
	status, answer := "", ""
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == ":status" {
			status = f.Value
		}
	})
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no answer while the stream is open (status %q, %q): %v", status, answer, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			_, _ = dec.Write(f.HeaderBlockFragment())
		case *http2.DataFrame:
			answer += string(f.Data())
			if f.StreamEnded() {
				if status != "200" || answerText(t, answer) == "" {
					t.Errorf("%s %s", status, answer)
				}
				return
			}
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			t.Fatalf("the stream ended without an answer: %v", f)
		}
	}
}
