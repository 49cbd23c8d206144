package llmrouter

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// panicOnClose is a provider's response body whose Close panics, as a
// stand-in for any panic in an attempt's read, cleanup or charge; closed
// is closed first.
type panicOnClose struct {
	io.ReadCloser
	closed chan struct{}
}

func (b panicOnClose) Close() error {
	_ = b.ReadCloser.Close()
	close(b.closed)
	panic("body close")
}

// TestAttemptPanicFailsOver: a panic in an attempt (here as its
// provider's response body is closed, after the answer was read) went up
// the request's goroutine to net/http, which closed the client's
// connection with no answer, though another candidate, or the hedge under
// way, could answer. The panic is the attempt's failure now, logged: the
// request fails over, or the hedge answers, as after any failed attempt;
// the attempt is charged as one given up after the provider had it.
func TestAttemptPanicFailsOver(t *testing.T) {
	const answer = `{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`
	for _, hedged := range []bool{false, true} {
		t.Run(map[bool]string{false: "failover", true: "hedge"}[hedged], func(t *testing.T) {
			hedgeArrived := make(chan struct{})
			firstClosed := make(chan struct{})
			up := reviewUpstream(t, func(w http.ResponseWriter, model string, _ map[string]any) {
				w.Header().Set("Content-Type", "application/json")
				if model == "gemini-2.5-flash" {
					if hedged {
						// the hedge answers once the first attempt has
						// panicked
						close(hedgeArrived)
						select {
						case <-firstClosed:
						case <-t.Context().Done():
						}
					}
					io.WriteString(w, answer)
					return
				}
				if hedged {
					select { // the first attempt answers with the hedge under way
					case <-hedgeArrived:
					case <-t.Context().Done():
					}
				}
				io.WriteString(w, answer)
			})
			r := benchRouter(t, up.URL, func(r *Router) {
				if hedged {
					r.Failover = &Failover{HedgeAfter: caddy.Duration(time.Millisecond)}
				}
			})
			core, logs := observer.New(zap.ErrorLevel)
			r.logger = zap.New(core)
			panicOnCloseOf(t, r, "deepseek-chat", firstClosed)
			srv := routerServer(t, r)
			resp, body, _ := postCounted(t, srv.URL+"/v1/chat/completions", `{"model":"simple_qa","messages":[{"role":"user","content":"Hi"}]}`)
			if resp.StatusCode != http.StatusOK || resp.Header.Get(hdrModel) != "gemini-2.5-flash" {
				t.Errorf("%d via %q %s, want gemini-2.5-flash's answer", resp.StatusCode, resp.Header.Get(hdrModel), body)
			}
			if n := logs.FilterMessage("attempt panicked").Len(); n != 1 {
				t.Errorf("%d panics logged, want 1", n)
			}
			// the provider answered it, and bills it
			if c := chargedTo(r, "deepseek-v3.2"); c.in == 0 || c.out == 0 {
				t.Errorf("the attempt that panicked after its answer was charged %+v, want its input and output", c)
			}
		})
	}
}

// TestCommittedHedgePanicAborts: a hedge that won and relayed its stream,
// then panicked (its provider's body closing, after a stream that ended
// without [DONE]), was taken by its goroutine's recover for a failure
// that never answered: the request went on to the 503 of every candidate
// failed, written after the stream the client already had, and counted
// 503. The response is the hedge's, aborted as a stream that breaks is.
func TestCommittedHedgePanicAborts(t *testing.T) {
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, _ map[string]any) {
		w.Header().Set("Content-Type", "text/event-stream")
		if model == "gemini-2.5-flash" {
			io.WriteString(w, chunk("hi")) // and no [DONE]
			return
		}
		w.(http.Flusher).Flush()
		<-t.Context().Done() // loses the hedge
	})
	r := benchRouter(t, up.URL, func(r *Router) {
		r.Failover = &Failover{HedgeAfter: caddy.Duration(time.Millisecond)}
	})
	core, logs := observer.New(zap.ErrorLevel)
	r.logger = zap.New(core)
	panicOnCloseOf(t, r, "gemini-2.5-flash", make(chan struct{}))
	srv := routerServer(t, r)
	resp, body, _ := postCounted(t, srv.URL+"/v1/chat/completions", `{"model":"simple_qa","stream":true,"messages":[{"role":"user","content":"Hi"}]}`) // ends with an abort
	if resp.StatusCode != http.StatusOK || resp.Header.Get(hdrModel) != "gemini-2.5-flash" ||
		!strings.Contains(string(body), `"hi"`) || strings.Contains(string(body), codeAllUnavailable) {
		t.Errorf("%d via %q %q, want the hedge's stream alone", resp.StatusCode, resp.Header.Get(hdrModel), body)
	}
	if n := logs.FilterMessage("attempt panicked").Len(); n != 1 {
		t.Errorf("%d panics logged, want 1", n)
	}
}

// panicOnCloseOf makes the body of every answer r's providers give for
// upstream model id model panic on Close (closing closed first).
func panicOnCloseOf(t *testing.T, r *Router, model string, closed chan struct{}) {
	for _, p := range r.providers {
		plain := &http.Transport{}
		t.Cleanup(plain.CloseIdleConnections)
		p.transport.Transport.RegisterProtocol("http", roundTripFunc(func(req *http.Request) (*http.Response, error) {
			body, _ := req.GetBody()
			b, _ := io.ReadAll(body)
			resp, err := plain.RoundTrip(req)
			if err == nil && strings.Contains(string(b), `"`+model+`"`) {
				resp.Body = panicOnClose{resp.Body, closed}
			}
			return resp, err
		}))
	}
}

// panickyTracer's spans record, and starting one named with model panics
// (a span processor's bug, say); started is closed first.
type panickyTracer struct {
	noop.Tracer
	model   string
	started chan struct{}
}

func (p *panickyTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if strings.Contains(name, p.model) {
		close(p.started)
		panic("span start")
	}
	return p.Tracer.Start(ctx, name, opts...)
}

// tracerOf is the provider of one tracer.
type tracerOf struct {
	noop.TracerProvider
	t trace.Tracer
}

func (p tracerOf) Tracer(string, ...trace.TracerOption) trace.Tracer { return p.t }

// recordingSpan is the request's span, recording, of tracer tp.
type recordingSpan struct {
	noop.Span
	tp trace.TracerProvider
}

func (s recordingSpan) IsRecording() bool                    { return true }
func (s recordingSpan) TracerProvider() trace.TracerProvider { return s.tp }

// TestHedgeStartPanicIsLogged: a panic on the hedge's goroutine before its
// attempt (here as its trace span starts) was past the goroutine's
// recover, which was set up after that: it crashed the process, Caddy and
// every request in it. It is logged, the hedge is a failed attempt, and
// the first attempt answers.
func TestHedgeStartPanicIsLogged(t *testing.T) {
	tp := &panickyTracer{model: "gemini", started: make(chan struct{})}
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, _ map[string]any) {
		select { // the first attempt answers once the hedge has panicked
		case <-tp.started:
		case <-t.Context().Done():
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`)
	})
	r := benchRouter(t, up.URL, func(r *Router) {
		r.Failover = &Failover{HedgeAfter: caddy.Duration(time.Millisecond)}
	})
	core, logs := observer.New(zap.ErrorLevel)
	r.logger = zap.New(core)
	req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(`{"model":"simple_qa","messages":[{"role":"user","content":"Hi"}]}`))
	ctx := context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer())
	req = req.WithContext(trace.ContextWithSpan(ctx, recordingSpan{tp: tracerOf{t: tp}}))
	w := httptest.NewRecorder()
	_ = r.ServeHTTP(w, req, nil)
	if w.Code != http.StatusOK || w.Header().Get(hdrModel) != "deepseek-v3.2" {
		t.Errorf("%d via %q %s, want the first attempt's answer", w.Code, w.Header().Get(hdrModel), w.Body)
	}
	if n := logs.FilterMessage("hedged attempt panicked").Len(); n != 1 {
		t.Errorf("%d panics logged, want 1", n)
	}
}
