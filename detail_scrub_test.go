package llmrouter

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// TestNotAnAnswerDetailScrubbed: what a failure's detail quotes of the
// provider (the Content-Type of a body that is not an answer) loses any
// provider key before it is cut to its bound, and so before it reaches the
// 503's message or the stats: cut first, a key across the cut is no longer
// the whole key, and its first characters went out as they were.
func TestNotAnAnswerDetailScrubbed(t *testing.T) {
	g := newGateway(t, withHealth("\t\tinterval off"))
	for _, ct := range []string{
		"text/plain; echo=" + primaryKey,                              // whole
		"text/plain; padding=" + strings.Repeat("x", 30) + primaryKey, // across the 64-byte cut
	} {
		bad := mockllm.Behavior{Body: "not json", ContentType: ct, Times: 1}
		g.primary.Set("deepseek-chat", bad)
		g.primary.Set("gemini-2.5-flash", bad)
		resp, body := g.post(chatBody("simple_qa", false))
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503: %s", resp.StatusCode, body)
		}
		if strings.Contains(body, "sk-primary") {
			t.Errorf("the 503 carries (part of) the provider's key: %s", body)
		}
		if st := statsFor(t, g, "deepseek-v3.2", "primary"); strings.Contains(st.LastError, "sk-primary") {
			t.Errorf("the stats' last error carries (part of) the provider's key: %s", st.LastError)
		}
	}
}

// TestTransportErrorKeyAcrossCut: a transport error that quotes what the
// provider sent is cut to its bound only after the provider's key is
// masked in it: an echoed key that straddles the cut was no longer found
// whole, and its first characters reached the 503 as they were.
func TestTransportErrorKeyAcrossCut(t *testing.T) {
	const key = "sk-bench-key-000000000001" // benchRouter's
	echo := func(pad string) string {
		return rawProvider(t, func(c net.Conn, req *http.Request) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nEcho"+pad+" Authorization "+req.Header.Get("Authorization")+"\r\n\r\n")
		})
	}
	// where the key falls in the error's text, unpadded
	req, _ := http.NewRequest(http.MethodGet, "http://"+echo("")+"/", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	_, err := tr.RoundTrip(req)
	if err == nil {
		t.Fatal("a header line without its colon was read")
	}
	at := strings.Index(transportErrorText(err, nil), key)
	if at < 0 {
		t.Fatalf("the transport's error does not quote the header: %v", err)
	}
	// padded, so that the key starts ten bytes before the 300-byte cut
	srv := routerServer(t, benchRouter(t, "http://"+echo(strings.Repeat("x", 300-10-at)), nil))
	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"simple_qa","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if strings.Contains(string(b), "sk-bench") {
		t.Errorf("the 503 carries the first characters of the provider's key: %s", b)
	}
}
