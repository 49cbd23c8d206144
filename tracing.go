package llmrouter

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// This file reports a request to OpenTelemetry when Caddy's tracing
// handler (the `tracing` directive) has put a span in its context: the
// GenAI semantic conventions' attributes on that span, and a child span
// per upstream attempt. Without it nothing is recorded (a span that does
// not record costs one context lookup a request), and no prompt or answer
// text ever is.

const tracerName = "github.com/llmrouter/caddy-llm-router"

// operationName is gen_ai.operation.name for an endpoint.
func (ep endpoint) operationName() string {
	switch ep {
	case completionsEndpoint:
		return "text_completion"
	case embeddingsEndpoint:
		return "embeddings"
	case modelsEndpoint:
		return "models"
	}
	return "chat" // chat completions and the Responses API
}

// traceRequest sets the request span's attributes, once the request is
// done (finish).
func (ex *exchange) traceRequest() {
	span := ex.span
	if !span.IsRecording() {
		return
	}
	attrs := make([]attribute.KeyValue, 0, 14)
	attrs = append(attrs, attribute.String("gen_ai.operation.name", ex.ep.operationName()))
	// only a name the config knows: "model" is the client's text, and
	// nothing else of it goes into a span
	if m := ex.body.Model; m != "" && ex.router.routing.isName(m) {
		attrs = append(attrs, attribute.String("gen_ai.request.model", m))
	}
	if d := ex.answered; d != nil {
		attrs = append(attrs,
			attribute.String("gen_ai.response.model", d.upstream),
			attribute.String("gen_ai.provider.name", d.provider.name),
			attribute.String("llm_router.model", d.name))
	} else if m := ex.ph.model; m != "" { // answered from the cache
		attrs = append(attrs, attribute.String("llm_router.model", m), attribute.String("gen_ai.provider.name", ex.ph.provider))
	}
	if ph := &ex.ph; ph.costKnown {
		attrs = append(attrs,
			attribute.Int64("gen_ai.usage.input_tokens", ph.usage.Input),
			attribute.Int64("gen_ai.usage.output_tokens", ph.usage.Output),
			attribute.Bool("llm_router.usage_estimated", ph.usage.Estimated))
	}
	if cost, ok := ex.requestCost(); ok {
		attrs = append(attrs, attribute.Float64("llm_router.cost", cost))
	}
	if ex.route != "" {
		attrs = append(attrs, attribute.String("llm_router.route", ex.route))
	}
	if ex.ph.reason != "" {
		attrs = append(attrs, attribute.String("llm_router.route_reason", ex.ph.reason))
	}
	attrs = append(attrs, attribute.Int("llm_router.attempts", ex.attempts))
	if ex.cache.result != "" {
		attrs = append(attrs, attribute.String("llm_router.cache", ex.cache.result))
	}
	if ex.ph.budget != "" {
		attrs = append(attrs, attribute.String("llm_router.budget", ex.ph.budget))
	}
	span.SetAttributes(attrs...)
}

// traceAttempt starts the span of one upstream attempt when the request
// is traced (nil otherwise); endAttempt closes it with the outcome.
func (ex *exchange) traceAttempt(d *deployment, lastResort bool) trace.Span {
	parent := ex.span
	if !parent.IsRecording() {
		return nil
	}
	_, span := parent.TracerProvider().Tracer(tracerName).Start(ex.req.Context(),
		ex.ep.operationName()+" "+d.upstream,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("gen_ai.operation.name", ex.ep.operationName()),
			attribute.String("gen_ai.request.model", d.upstream),
			attribute.String("gen_ai.provider.name", d.provider.name),
			attribute.String("llm_router.model", d.name),
			attribute.Bool("llm_router.last_resort", lastResort)))
	return span
}

// endAttempt ends an attempt's span (if any) with its outcome.
func endAttempt(span trace.Span, res *attemptResult) {
	if span == nil {
		return
	}
	span.SetAttributes(attribute.String("llm_router.outcome", string(res.outcome)))
	if res.status != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", res.status))
	}
	if res.outcome != outcomeSuccess {
		span.SetStatus(codes.Error, res.detail)
	}
	span.End()
}
