package llmrouter

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"
	"weak"

	"github.com/caddyserver/caddy/v2"
)

// TestStreamErrorAnswerHoldsNothing: a stream request answered with an
// error status (a 400 the client gets) is read within the provider's
// timeout; once it is answered, nothing of the request stays reachable:
// not its context, its replacer, nor (through the replacer's placeholders)
// its body, which a timer left armed for the provider's whole timeout
// would hold, for every such request, up to max_request_body each.
func TestStreamErrorAnswerHoldsNothing(t *testing.T) {
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, body map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":{"message":"Unsupported parameter: 'foo'","type":"invalid_request_error","param":"foo","code":"unsupported_parameter"}}`)
	})
	r := benchRouter(t, up.URL, func(r *Router) { r.Providers[0].Timeout = caddy.Duration(time.Hour) })
	held := func() weak.Pointer[caddy.Replacer] {
		repl := caddy.NewReplacer()
		req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions",
			strings.NewReader(`{"model":"simple_qa","stream":true,"foo":1,"messages":[{"role":"user","content":"`+strings.Repeat("a", 1<<20)+`"}]}`))
		// canceled once answered, as net/http cancels a request's context
		// when its handler returns
		ctx, cancel := context.WithCancel(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
		req = req.WithContext(ctx)
		w := httptest.NewRecorder()
		_ = r.ServeHTTP(w, req, nil)
		cancel()
		if w.Code != http.StatusBadRequest {
			t.Fatalf("%d %s, want the provider's 400", w.Code, w.Body)
		}
		return weak.Make(repl)
	}()
	// the transport's goroutines may hold the request a moment after the
	// answer (the connection's read of the body's end): released within
	// seconds, where the timer held it for the provider's timeout (an hour)
	for deadline := time.Now().Add(5 * time.Second); held.Value() != nil && time.Now().Before(deadline); {
		runtime.GC()
		runtime.Gosched()
	}
	if held.Value() != nil {
		t.Error("the request (its replacer, and with it its body) is still reachable 5 s after its answer")
	}
}
