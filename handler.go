package llmrouter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// This file is a request's path, top-down: ServeHTTP reads and resolves the
// request, run tries the candidates, attemptBuffered and attemptStream make
// one attempt each, and the observe functions record what happened. The SSE
// parsing and relaying of a committed stream is in stream.go.

// endpoint is the OpenAI API a request is for.
type endpoint uint8

const (
	chatEndpoint endpoint = iota + 1
	embeddingsEndpoint
)

// smallBody is the largest request body sent in the same write as the
// headers (it must fit the transport's 4 KiB write buffer with them).
const smallBody = 3 << 10

// maxResponseBody bounds a buffered (non-streaming) upstream response; large
// embedding batches are the biggest legitimate ones.
const maxResponseBody = 256 << 20

// outcome classifies one upstream attempt; the values are the `outcome`
// label of caddy_llm_router_attempts_total.
type outcome string

const (
	outcomeSuccess      outcome = "success"
	outcomeClientError  outcome = "client_error"
	outcomeServerError  outcome = "server_error"
	outcomeRateLimited  outcome = "rate_limited"
	outcomeTimeout      outcome = "timeout"
	outcomeConnectError outcome = "connect_error"
	outcomeCanceled     outcome = "canceled"
)

// ServeHTTP serves the OpenAI endpoints and passes everything else on.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request, next caddyhttp.Handler) error {
	var ep endpoint
	path := req.URL.Path
	switch {
	case req.Method == http.MethodPost && strings.HasSuffix(path, "/chat/completions"):
		ep = chatEndpoint
	case req.Method == http.MethodPost && strings.HasSuffix(path, "/embeddings"):
		ep = embeddingsEndpoint
	case req.Method == http.MethodGet && strings.HasSuffix(path, "/models"):
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(r.modelsJSON)))
		_, err := w.Write(r.modelsJSON)
		return err
	default:
		return next.ServeHTTP(w, req)
	}

	ex := &exchange{
		start:  now(),
		router: r,
		w:      w,
		req:    req,
		ep:     ep,
		repl:   req.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer),
	}
	if ok, err := ex.readRequest(); !ok {
		return err
	}
	p, ok := ex.resolve()
	if !ok {
		return nil
	}
	err := ex.run(p)
	ex.finish()
	return err
}

// exchange is one client request on its way through the candidates.
type exchange struct {
	start    time.Time // the request's arrival
	router   *Router
	w        http.ResponseWriter
	req      *http.Request
	ep       endpoint
	body     *requestBody
	route    string
	repl     *caddy.Replacer
	attempts int
	failures []string
	answered *deployment // the deployment whose response was sent
	status   int         // the status sent to the client, 0 if none
}

// readRequest reads and checks the body. When it reports false the client
// has been answered (or err says how Caddy should answer).
func (ex *exchange) readRequest() (bool, error) {
	r := ex.router
	raw, err := readBody(ex.req, r.MaxRequestBody)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			reject(ex.w, http.StatusRequestEntityTooLarge, codeTooLarge,
				fmt.Sprintf("request body is larger than the limit of %d bytes", r.MaxRequestBody))
			return false, nil
		}
		metrics.requests.WithLabelValues("", "", "", "499").Inc()
		return false, caddyhttp.Error(http.StatusBadRequest, err)
	}
	body, err := parseRequestBody(raw)
	switch {
	case err != nil:
		reject(ex.w, http.StatusBadRequest, codeInvalidJSON, "request body is not valid JSON: "+err.Error())
		return false, nil
	case ex.ep == chatEndpoint && !body.hasMessages:
		reject(ex.w, http.StatusBadRequest, codeMissingParam, "'messages' is a required property and must be an array")
		return false, nil
	case ex.ep == embeddingsEndpoint && !body.hasInput:
		reject(ex.w, http.StatusBadRequest, codeMissingParam, "'input' is a required property")
		return false, nil
	case ex.ep == embeddingsEndpoint:
		body.stream = false
	}
	ex.body = &body
	return true, nil
}

// resolve finds the request's candidates (README, "Routing rules"); false
// means the client got a 404.
func (ex *exchange) resolve() (plan, bool) {
	routeHeader := ex.req.Header.Get("X-LLM-Route")
	if routeHeader == "" {
		routeHeader = ex.req.Header.Get("X-Query-Type")
	}
	route, p, ok := ex.router.routing.resolve(routeHeader, ex.body.modelName)
	if !ok {
		name, what := ex.body.modelName, "model"
		if routeHeader != "" {
			name, what = routeHeader, "route"
		}
		reject(ex.w, http.StatusNotFound, codeModelNotFound,
			fmt.Sprintf("The %s '%s' does not exist on this gateway", what, name))
		return nil, false
	}
	ex.route = route
	ex.repl.Set("http.llm_router.route", route)
	return p, true
}

// reject answers a request the router will not send upstream, and
// counts it.
func reject(w http.ResponseWriter, status int, code, msg string) {
	writeError(w, status, typeInvalidRequest, code, msg, 0)
	metrics.requests.WithLabelValues("", "", "", statusLabel(status)).Inc()
}

// readBody reads the request body once, up to limit bytes, so it can be
// replayed to every attempt.
func readBody(req *http.Request, limit int64) ([]byte, error) {
	if req.ContentLength > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	return readLimited(req.Body, req.ContentLength, limit)
}

// readLimited reads r whole into a buffer sized by its declared length, or
// fails with *http.MaxBytesError beyond limit bytes.
func readLimited(r io.Reader, declared, limit int64) ([]byte, error) {
	size := 4096
	if declared > 0 && declared <= limit {
		size = int(declared) + 1 // +1 so ReadFrom sees EOF without growing
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	if _, err := buf.ReadFrom(io.LimitReader(r, limit+1)); err != nil {
		return nil, err
	}
	if int64(buf.Len()) > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	return buf.Bytes(), nil
}

// attemptResult is what became of one upstream attempt.
type attemptResult struct {
	outcome    outcome
	status     int           // upstream status, 0 when none arrived
	detail     string        // why it failed, for the 503 message and logs; never a secret
	retryAfter time.Duration // for 429s: how long the provider asked us to wait
	committed  bool          // a response went to the client: stop trying
	started    time.Time
	firstByte  time.Duration // streams: time to the first event
}

// run tries the candidates in order until one answers or the budget is
// spent, then answers the client.
func (ex *exchange) run(p plan) error {
	r := ex.router
	candidates := p.order(now(), nil, r.logger)
	maxAttempts := r.Failover.MaxAttempts
	if maxAttempts <= 0 || maxAttempts > len(candidates) {
		maxAttempts = len(candidates)
	}
	tryDuration := time.Duration(r.Failover.TryDuration)

	var failed *deployment // the previous attempt's, when it failed
	var failedOutcome outcome
	for i, d := range candidates[:maxAttempts] {
		if i > 0 && now().Sub(ex.start) >= tryDuration {
			break
		}
		if failed != nil {
			failed.metrics.failovers[failedOutcome.index()].Inc()
		}
		ex.attempts++
		res := ex.attempt(d)
		ex.observeAttempt(d, &res)
		if res.committed {
			ex.answered, ex.status = d, res.status
			return nil
		}
		if res.outcome == outcomeCanceled {
			// the client went away: nobody to answer
			ex.status = 499
			return caddyhttp.Error(499, context.Canceled)
		}
		ex.failures = append(ex.failures, d.label()+": "+res.detail)
		failed, failedOutcome = d, res.outcome
	}
	ex.unavailable(candidates)
	return nil
}

// attempt sends the request to one deployment. It commits a response only
// on success or on an error that is the client's own.
func (ex *exchange) attempt(d *deployment) attemptResult {
	res := attemptResult{started: now()}
	d.metrics.inFlight.Inc()
	defer d.metrics.inFlight.Dec()
	if ex.body.stream {
		ex.attemptStream(d, &res)
	} else {
		ex.attemptBuffered(d, &res)
	}
	return res
}

// attemptBuffered handles a non-streaming request: the whole upstream
// response is read before anything is sent, so any failure can still fail
// over.
func (ex *exchange) attemptBuffered(d *deployment, res *attemptResult) {
	ctx, cancel := context.WithTimeout(ex.req.Context(), d.provider.timeout)
	defer cancel()
	resp, err := d.provider.transport.RoundTrip(ex.upstreamRequest(ctx, d))
	if err != nil {
		ex.transportFailure(ctx, res, err)
		return
	}
	ex.answerBuffered(ctx, d, resp, res)
}

// answerBuffered reads a whole upstream response and, unless its status
// calls for failover, passes it to the client.
func (ex *exchange) answerBuffered(ctx context.Context, d *deployment, resp *http.Response, res *attemptResult) {
	payload, err := readResponse(resp)
	if err != nil {
		ex.transportFailure(ctx, res, err)
		return
	}
	res.status = resp.StatusCode
	var relay bool
	res.outcome, relay = classifyStatus(resp.StatusCode)
	if !relay {
		if res.outcome == outcomeRateLimited {
			res.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), now())
		}
		res.detail = strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode)
		return
	}
	if res.outcome == outcomeSuccess {
		if u, ok := usageFromJSON(payload); ok {
			ex.observeUsage(d, u)
		}
	}
	ex.commitHeaders(d, resp.Header)
	ex.w.Header().Set("Content-Length", strconv.Itoa(len(payload)))
	ex.w.WriteHeader(resp.StatusCode)
	_, _ = ex.w.Write(payload)
	res.committed = true
}

// readResponse reads and closes a buffered response body.
func readResponse(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	b, err := readLimited(resp.Body, resp.ContentLength, maxResponseBody)
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, fmt.Errorf("upstream response larger than %d bytes", maxResponseBody)
	}
	return b, err
}

// errFirstByteTimeout is the cause of an attempt canceled because its
// stream sent no event within first_byte_timeout.
var errFirstByteTimeout = errors.New("first byte timeout")

// attemptStream handles a streaming request. The response is held until
// the first SSE event arrives, so a stream that fails or stalls before its
// first token still fails over; after that, stream.go relays the events one
// by one and a broken upstream ends the client's stream.
func (ex *exchange) attemptStream(d *deployment, res *attemptResult) {
	ctx, cancel := context.WithCancelCause(ex.req.Context())
	defer cancel(nil)
	timer := time.AfterFunc(time.Duration(ex.router.Failover.FirstByteTimeout), func() {
		cancel(errFirstByteTimeout)
	})
	defer timer.Stop()

	resp, err := d.provider.transport.RoundTrip(ex.upstreamRequest(ctx, d))
	if err != nil {
		ex.transportFailure(ctx, res, err)
		return
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode >= 300 || !isEventStream(resp.Header.Get("Content-Type")) {
		// an error, or a provider that answered a stream request with
		// plain JSON: handled like a buffered response
		ex.answerBuffered(ctx, d, resp, res)
		return
	}

	events := newSSEReader(resp.Body)
	defer events.release()
	// hold the response until the first event with data
	var first []byte
	for first == nil {
		ev, err := events.next()
		if err != nil {
			ex.transportFailure(ctx, res, orEOF(err))
			return
		}
		if eventData(ev) != nil { // comments such as keep-alives are not the first event
			first = ev
		}
	}
	if !timer.Stop() {
		// the timer fired as the first event arrived: the attempt's
		// context is canceled, so this stream cannot be relayed
		ex.transportFailure(ctx, res, errFirstByteTimeout)
		return
	}
	res.outcome = outcomeSuccess
	res.status = resp.StatusCode
	res.firstByte = now().Sub(res.started)
	res.committed = true
	d.metrics.ttft.Observe(now().Sub(ex.start).Seconds())

	ex.commitHeaders(d, resp.Header)
	rc := http.NewResponseController(ex.w)
	ex.w.WriteHeader(resp.StatusCode)
	relay := streamRelay{strip: ex.body.stripUsage()}
	err = relay.relay(ex.w, rc.Flush, events, first)

	if relay.usage != nil {
		ex.observeUsage(d, *relay.usage)
	} else {
		// abandoned, broken, or a provider that ignores include_usage:
		// the provider bills anyway, so count an estimate (~4 characters
		// a token) rather than nothing
		ex.observeUsage(d, usage{
			input:     int64(len(ex.body.raw)+3) / 4,
			output:    (relay.chars + 3) / 4,
			estimated: true,
		})
	}
	switch {
	case err == nil:
		// the provider ended the stream
	case errors.Is(err, errWritingDownstream) || ex.req.Context().Err() != nil:
		res.outcome, res.detail = outcomeCanceled, "client went away mid-stream"
	default:
		// the stream broke after the response was committed: the client's
		// stream ends here; nothing else can be sent in its place
		res.outcome, res.detail = outcomeConnectError, "stream broke: "+unwrapURLError(err).Error()
	}
}

// orEOF turns a clean end before the first event into an error that says
// so.
func orEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return errors.New("stream ended before its first event")
	}
	return err
}

// classifyStatus is what an upstream status means for the attempt: its
// outcome, and whether the response goes to the client (success, or a 4xx
// that is the client's own fault) rather than failing over.
func classifyStatus(code int) (o outcome, relay bool) {
	switch {
	case code >= 200 && code < 300:
		return outcomeSuccess, true
	case code == http.StatusTooManyRequests:
		return outcomeRateLimited, false
	case code == http.StatusRequestTimeout:
		return outcomeTimeout, false
	case code == http.StatusUnauthorized, code == http.StatusForbidden, code == http.StatusNotFound:
		return outcomeClientError, false // a bad key or a model the provider lacks
	case code >= 400 && code < 500:
		return outcomeClientError, true // the client's own fault: it gets the provider's answer
	default:
		return outcomeServerError, false
	}
}

// transportFailure classifies an error that left no usable response.
func (ex *exchange) transportFailure(ctx context.Context, res *attemptResult, err error) {
	switch {
	case ex.req.Context().Err() != nil:
		res.outcome = outcomeCanceled
		res.detail = "client went away"
	case errors.Is(context.Cause(ctx), errFirstByteTimeout):
		res.outcome = outcomeTimeout
		res.detail = fmt.Sprintf("no stream event within %s", time.Duration(ex.router.Failover.FirstByteTimeout))
	case errors.Is(ctx.Err(), context.DeadlineExceeded), isTimeout(err):
		res.outcome = outcomeTimeout
		res.detail = fmt.Sprintf("timeout after %s", now().Sub(res.started).Round(time.Millisecond))
	default:
		res.outcome = outcomeConnectError
		res.detail = unwrapURLError(err).Error()
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
// It returns 0 when absent or unparseable.
func parseRetryAfter(v string, t time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	if when, err := http.ParseTime(v); err == nil {
		if d := when.Sub(t); d > 0 {
			return d
		}
	}
	return 0
}

// Request headers never forwarded upstream: hop-by-hop ones, the client's
// credentials (the provider's key replaces them), and the router's own.
var droppedRequestHeaders = []string{
	"Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key", "Api-Key",
	"Openai-Organization", "Openai-Project",
	"Host", "Content-Length", "Accept-Encoding",
	"X-Llm-Route", "X-Query-Type",
}

var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopHeaders deletes hop-by-hop headers, including any the
// Connection header names.
func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, f := range hopHeaders {
		delete(h, f)
	}
}

// upstreamRequest builds one attempt's request to d: the provider's URL
// and key, the client's other headers, and the body with model rewritten.
func (ex *exchange) upstreamRequest(ctx context.Context, d *deployment) *http.Request {
	p := d.provider
	u := p.urlFor(ex.ep)
	h := ex.req.Header.Clone()
	removeHopHeaders(h)
	for _, f := range droppedRequestHeaders {
		delete(h, f)
	}
	for f, v := range p.headers {
		h[f] = v
	}
	p.setAuth(h)
	h.Set("Content-Type", "application/json")
	if ex.body.stream {
		h.Set("Accept", "text/event-stream")
	}
	parts := ex.body.upstreamParts(d.upstream)
	var small []byte
	if parts.size <= smallBody {
		small = parts.join()
	}
	newBody := func() io.ReadCloser {
		if small != nil {
			// known to net/http as in memory: sent with the headers in
			// one write
			return io.NopCloser(bytes.NewReader(small))
		}
		// large: headers first, then the pieces straight to the socket,
		// not copied into one slice nor through the 4 KiB write buffer
		return io.NopCloser(parts.reader())
	}
	req := &http.Request{
		Method:        http.MethodPost,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          newBody(),
		ContentLength: int64(parts.size),
		Host:          u.Host,
		GetBody: func() (io.ReadCloser, error) {
			return newBody(), nil
		},
	}
	return req.WithContext(ctx)
}

// commitHeaders writes the response headers of the attempt that answers:
// the provider's end-to-end headers and the router's own.
func (ex *exchange) commitHeaders(d *deployment, upstream http.Header) {
	h := ex.w.Header()
	for f, v := range upstream {
		h[f] = v
	}
	removeHopHeaders(h)
	h.Del("Content-Length")
	h.Set("X-LLM-Model", d.name)
	h.Set("X-LLM-Provider", d.provider.name)
	if ex.route != "" {
		h.Set("X-LLM-Route", ex.route)
	}
	h.Set("X-LLM-Attempts", strconv.Itoa(ex.attempts))
	ex.repl.Set("http.llm_router.model", d.name)
	ex.repl.Set("http.llm_router.provider", d.provider.name)
	ex.repl.Set("http.llm_router.attempts", ex.attempts)
}

// unavailable answers 503 with what was tried and when to come back.
func (ex *exchange) unavailable(candidates []*deployment) {
	t := now()
	var first time.Time
	for _, d := range candidates {
		if end := d.state.viewAt(t).cooldownUntil; !end.IsZero() && (first.IsZero() || end.Before(first)) {
			first = end
		}
	}
	retry := 1
	if !first.IsZero() {
		retry = int((first.Sub(t) + time.Second - 1) / time.Second)
	}
	msg := "All models are unavailable"
	if ex.route != "" {
		msg += " for route '" + ex.route + "'"
	}
	if len(ex.failures) > 0 {
		msg += ". Tried: " + strings.Join(ex.failures, "; ")
	}
	h := ex.w.Header()
	if ex.route != "" {
		h.Set("X-LLM-Route", ex.route)
	}
	h.Set("X-LLM-Attempts", strconv.Itoa(ex.attempts))
	ex.repl.Set("http.llm_router.attempts", ex.attempts)
	writeError(ex.w, http.StatusServiceUnavailable, typeServerError, codeAllUnavailable, msg, retry)
	ex.status = http.StatusServiceUnavailable
	metrics.unavailable.WithLabelValues(ex.route).Inc()
}

// observeAttempt is the one place an attempt's outcome is known: it
// updates the deployment's health and statistics.
func (ex *exchange) observeAttempt(d *deployment, res *attemptResult) {
	r := ex.router
	t := now()
	elapsed := t.Sub(res.started)
	var ev healthEvent
	var cooldown time.Duration
	switch res.outcome {
	case outcomeCanceled:
		d.metrics.attempts[res.outcome.index()].Inc()
		return // the client's choice, not the deployment's fault
	case outcomeSuccess:
		ev = eventSuccess
	case outcomeClientError:
		if res.committed {
			// the client's own mistake: counted, but no health change
			d.state.stats.recordAttempt(false, 0, 0)
			d.metrics.attempts[res.outcome.index()].Inc()
			return
		}
		ev = eventErrorStatus // 401/403/404: a bad key or a missing model
	case outcomeRateLimited:
		ev = eventRateLimited
		cooldown = res.retryAfter
		if cooldown <= 0 {
			cooldown = time.Duration(r.Failover.Cooldown)
		}
		cooldown = min(cooldown, time.Duration(r.Failover.MaxCooldown))
	default:
		ev = eventTransport
		if res.status != 0 {
			ev = eventErrorStatus
		}
	}
	d.state.observe(ev, t, d.disableBelow, cooldown, res.detail, r.logger)
	d.metrics.attempts[res.outcome.index()].Inc()
	d.state.stats.recordAttempt(ev != eventSuccess, elapsed, res.firstByte)
	if ev != eventSuccess {
		if ce := r.logger.Check(zap.DebugLevel, "upstream attempt failed"); ce != nil {
			ce.Write(zap.String("model", d.name), zap.String("provider", d.provider.name),
				zap.String("outcome", string(res.outcome)), zap.String("detail", res.detail))
		}
	}
}

// observeUsage is the one place a response's token usage is known.
func (ex *exchange) observeUsage(d *deployment, u usage) {
	cost := d.price.cost(u) * d.currency.Rate
	d.state.stats.recordUsage(u, cost, d.currency.Code)
	d.metrics.inputTokens.Add(float64(u.input))
	d.metrics.outputToks.Add(float64(u.output))
	d.metrics.cachedToks.Add(float64(u.cachedInput))
	d.metrics.cost.Add(cost)
	if u.estimated {
		ex.router.logger.Info("stream ended without usage; tokens estimated from characters",
			zap.String("model", d.name), zap.String("provider", d.provider.name),
			zap.Int64("input_tokens", u.input), zap.Int64("output_tokens", u.output), zap.Bool("estimated", true))
	}
	ex.repl.Set("http.llm_router.input_tokens", u.input)
	ex.repl.Set("http.llm_router.output_tokens", u.output)
	ex.repl.Set("http.llm_router.cost", strconv.FormatFloat(cost, 'f', -1, 64))
}

// finish counts the client request once it is answered.
func (ex *exchange) finish() {
	model, provider := "", ""
	if d := ex.answered; d != nil {
		model, provider = d.name, d.provider.name
		d.metrics.duration.Observe(now().Sub(ex.start).Seconds())
	}
	metrics.requests.WithLabelValues(ex.route, model, provider, statusLabel(ex.status)).Inc()
	if hook := requestDoneHook.Load(); hook != nil {
		(*hook)()
	}
}

// requestDoneHook, when set (tests only), is called when a routed request
// has been counted.
var requestDoneHook atomic.Pointer[func()]
