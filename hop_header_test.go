package llmrouter

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestConnectionNominatedHeadersNotRelayed: a header the provider's
// Connection header names is hop-by-hop (RFC 9110, 7.6.1): it is for the
// router alone, however relayable its name (an X-Ratelimit-* or an
// allowlisted one), and never reaches the client.
func TestConnectionNominatedHeadersNotRelayed(t *testing.T) {
	upstream := reviewUpstream(t, func(w http.ResponseWriter, _ string, _ map[string]any) {
		h := w.Header()
		h.Set("Connection", "X-Ratelimit-Hop, openai-version")
		h.Set("X-Ratelimit-Hop", "for the router")
		h.Set("Openai-Version", "for the router too")
		h.Set("X-Ratelimit-Remaining-Requests", "99")
		h.Set("Content-Type", "application/json")
		io.WriteString(w, slowAnswer)
	})
	srv := routerServer(t, benchRouter(t, upstream.URL, nil))
	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"simple_qa","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	for _, f := range []string{"X-Ratelimit-Hop", "Openai-Version"} {
		if v := resp.Header.Get(f); v != "" {
			t.Errorf("%s, named by the provider's Connection header, reached the client: %q", f, v)
		}
	}
	if resp.Header.Get("X-Ratelimit-Remaining-Requests") != "99" {
		t.Error("an end-to-end X-Ratelimit-* header was not relayed")
	}
}
