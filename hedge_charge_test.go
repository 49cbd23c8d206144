package llmrouter

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// TestHedgeLoserWithErrorStatusNotCharged: the attempt of a hedge that
// lost while its provider's error answer (a 400: nothing generated) was
// being read is charged nothing, as an error answer of an attempt that is
// no hedge's is; not its input and output limit, as if canceled
// mid-generation.
func TestHedgeLoserWithErrorStatusNotCharged(t *testing.T) {
	errStarted := make(chan struct{})
	errArrived := make(chan struct{}) // the router has the hedge's error status
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body struct{ Model string }
		b, _ := io.ReadAll(req.Body)
		_ = json.Unmarshal(b, &body)
		w.Header().Set("Content-Type", "application/json")
		if body.Model == "gemini-2.5-flash" {
			// the hedge: an error answer, its body still coming when
			// the first attempt answers
			w.Header().Set("Content-Length", "200")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":{"message":"Unsupported parameter`)
			w.(http.Flusher).Flush()
			close(errStarted)
			<-req.Context().Done()
			return
		}
		// the first attempt answers once the router has the hedge's error
		// status (its provider having begun it is not enough: the first
		// answer could win before the status is read, and a hedge given up
		// before its status is known is charged as canceled mid-generation)
		<-errArrived
		io.WriteString(w, `{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`)
	}))
	t.Cleanup(up.Close)
	r := benchRouter(t, up.URL, func(r *Router) {
		r.Failover = &Failover{HedgeAfter: caddy.Duration(time.Millisecond)}
	})
	arrived := sync.OnceFunc(func() { close(errArrived) })
	for _, p := range r.providers {
		plain := &http.Transport{}
		t.Cleanup(plain.CloseIdleConnections)
		p.transport.Transport.RegisterProtocol("http", roundTripFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := plain.RoundTrip(req)
			if err == nil && resp.StatusCode == http.StatusBadRequest {
				arrived()
			}
			return resp, err
		}))
	}
	w := serveOnce(r, `{"model":"simple_qa","max_tokens":500,"messages":[{"role":"user","content":"Hi"}]}`)
	if w.Code != http.StatusOK || w.Header().Get(hdrModel) != "deepseek-v3.2" {
		t.Fatalf("%d via %q, want the first attempt's answer", w.Code, w.Header().Get(hdrModel))
	}
	if c := chargedTo(r, "gemini-2.5-flash"); c.in != 0 || c.out != 0 || c.cost != 0 {
		t.Errorf("the hedge that answered 400 was charged %+v, want nothing", c)
	}
}

// roundTripFunc is a RoundTripper made of a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// TestUnsentHedgeLoserNotCharged: the hedge of an attempt that answers
// while the hedge's request is still being written (its provider stopped
// reading) never reached the provider's generation: like any attempt
// never written whole (TestUnsentAttemptIsNotCharged), it is charged
// nothing, not its input.
func TestUnsentHedgeLoserNotCharged(t *testing.T) {
	// the hedge's provider reads nothing: its body cannot be written whole
	ln, hedgeArrived := nonReadingProvider(t)
	first := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		<-hedgeArrived // answers once the hedge is on its way
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`)
	}))
	t.Cleanup(first.Close)
	r := benchRouter(t, first.URL, func(r *Router) {
		r.Providers = append(r.Providers, &Provider{Name: r.Providers[0].Name + "-stalled", BaseURL: "http://" + ln.Addr().String() + "/v1", APIKey: "sk-bench-key-000000000002"})
		r.Models = []*Model{{Name: "deepseek-v3.2", Upstream: "deepseek-chat", Provider: r.Providers[0].Name}, {Name: "gemini-2.5-flash", Provider: r.Providers[1].Name}}
		r.Failover = &Failover{HedgeAfter: caddy.Duration(time.Millisecond)}
	})
	body := `{"model":"simple_qa","max_tokens":400,"messages":[{"role":"user","content":"` + strings.Repeat("a", 7_500_000) + `"}]}`
	w := serveOnce(r, body)
	if w.Code != http.StatusOK || w.Header().Get(hdrModel) != "deepseek-v3.2" {
		t.Fatalf("%d via %q, want the first attempt's answer", w.Code, w.Header().Get(hdrModel))
	}
	if c := chargedTo(r, "gemini-2.5-flash"); c.in != 0 || c.out != 0 || c.cost != 0 {
		t.Errorf("a hedge never written whole was charged %+v, want nothing", c)
	}
}
