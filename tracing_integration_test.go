package llmrouter

import (
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// newOTLPReceiver is an in-process OTLP/HTTP trace receiver: each span it
// is sent arrives on the channel.
func newOTLPReceiver(t *testing.T) (url string, spans <-chan *tracepb.Span) {
	ch := make(chan *tracepb.Span, 256)
	srv := newMockServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(b, &req)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					select {
					case ch <- s:
					default:
					}
				}
			}
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	}))
	return srv.URL, ch
}

// spanAttrs are a span's attributes as strings.
func spanAttrs(s *tracepb.Span) map[string]string {
	out := map[string]string{}
	for _, kv := range s.GetAttributes() {
		v := kv.GetValue()
		switch {
		case v.GetStringValue() != "":
			out[kv.GetKey()] = v.GetStringValue()
		default:
			out[kv.GetKey()] = strings.Trim(v.String(), " ")
		}
	}
	return out
}

// TestTracing: with Caddy's tracing handler, the request's span carries
// the GenAI attributes and one child span per upstream attempt, with its
// outcome; no prompt or answer text is in any span.
func TestTracing(t *testing.T) {
	url, spans := newOTLPReceiver(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
	g := newGatewayWith(t, globalOptions, "\ttracing {\n\t\tspan gateway\n\t}\n", defaultRouter)
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 500, Times: 1})
	const prompt = "Where is my order?" // chatBody's question
	const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	resp, body := g.post(chatBody("simple_qa", false), "Traceparent", "00-"+clientTrace+"-00f067aa0ba902b7-01")
	expectModel(t, resp, body, "gemini-2.5-flash", "primary", 2)

	var request *tracepb.Span
	var attempts []*tracepb.Span
	for request == nil || len(attempts) < 2 {
		s := waitFor(t, spans, "the request's spans")
		for _, kv := range s.GetAttributes() {
			if v := kv.GetValue().GetStringValue(); strings.Contains(v, prompt) || strings.Contains(v, "w0 w1") {
				t.Errorf("span %s carries text: %s=%q", s.GetName(), kv.GetKey(), v)
			}
		}
		switch a := spanAttrs(s); {
		case s.GetName() == "gateway":
			request = s
		case a["llm_router.outcome"] != "":
			attempts = append(attempts, s)
		}
	}
	want := map[string]string{
		"gen_ai.operation.name": "chat", "gen_ai.request.model": "simple_qa", "gen_ai.response.model": "gemini-2.5-flash",
		"gen_ai.provider.name": "primary", "llm_router.model": "gemini-2.5-flash", "llm_router.route": "simple_qa",
	}
	got := spanAttrs(request)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("request span %s = %q, want %q", k, got[k], v)
		}
	}
	for _, k := range []string{"gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "llm_router.attempts", "llm_router.cost"} {
		if got[k] == "" {
			t.Errorf("request span has no %s: %v", k, got)
		}
	}
	outcomes := map[string]string{}
	for _, s := range attempts {
		a := spanAttrs(s)
		outcomes[a["llm_router.model"]] = a["llm_router.outcome"]
		if string(s.GetParentSpanId()) != string(request.GetSpanId()) {
			t.Errorf("attempt span %s is not a child of the request's", s.GetName())
		}
	}
	if outcomes["deepseek-v3.2"] != "server_error" || outcomes["gemini-2.5-flash"] != "success" {
		t.Errorf("attempt outcomes %v", outcomes)
	}
	// the trace goes on upstream: the client's trace, under the request's
	// span (Caddy's tracing puts it in the request's header, which the
	// router forwards)
	if got := hex.EncodeToString(request.GetTraceId()); got != clientTrace {
		t.Errorf("request span's trace %s, want the client's %s", got, clientTrace)
	}
	upTrace := "00-" + clientTrace + "-" + hex.EncodeToString(request.GetSpanId()) + "-"
	for _, r := range g.primary.Requests() {
		if got := r.Header.Get("Traceparent"); !strings.HasPrefix(got, upTrace) {
			t.Errorf("upstream Traceparent %q, want %s..", got, upTrace)
		}
	}

	// "model" is the client's text: a name the config does not know, however
	// long, is not put in the span (one tracer provider per process: the
	// same receiver)
	secret := "Patient John Doe, DOB 1970-01-01, diagnosis: " + strings.Repeat("confidential ", 20000)
	b, _ := json.Marshal(map[string]any{"model": secret, "messages": []map[string]string{{"role": "user", "content": "hi"}}})
	if resp, body := g.post(string(b)); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("an unknown model: %d %s", resp.StatusCode, body)
	}
	for {
		s := waitFor(t, spans, "the unknown model's span")
		if s.GetName() != "gateway" {
			continue
		}
		if m, set := spanAttrs(s)["gen_ai.request.model"]; set {
			t.Errorf("the span carries the client's unknown model (%d bytes, begins %.40q)", len(m), m)
		}
		return
	}
}
