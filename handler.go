package llmrouter

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/llmrouter/caddy-llm-router/internal/openai"
)

// This file is a request's path, top-down: ServeHTTP reads and resolves the
// request, run tries the candidates, attemptBuffered and attemptStream make
// one attempt each, and the observe functions record what happened. The SSE
// parsing and relaying of a committed stream is in stream.go.

// smallBody is the largest request body sent in the same write as the
// headers (it must fit the transport's 4 KiB write buffer with them).
const smallBody = 3 << 10

// maxResponseBody bounds a buffered (non-streaming) upstream response; large
// embedding batches are the biggest legitimate ones. A stream's event has
// the same bound (openai.MaxEventSize): a Responses API stream ends with
// its whole response.
const maxResponseBody = 256 << 20

// maxEchoedName bounds a name the router repeats in an error message.
const maxEchoedName = 256

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
	outcomeRejected     outcome = "rejected" // 401, 402, 403, 404, 407: the gateway's key, credit or proxy, or a model the provider lacks
	outcomeCanceled     outcome = "canceled"
	outcomeHedgeLost    outcome = "hedge_lost" // canceled: the other attempt of a hedge answered first
	// an answer about this request that another deployment may not give:
	// a 404 for what the request names and the deployment lacks (the
	// response it continues, away from its home; a conversation, stored
	// item or prompt; a file, vector store or container), or a 429 for a
	// request over the deployment's whole limit. Failed over, not
	// relayed, so neither the client's error nor the deployment's fault
	outcomeNotHere outcome = "not_here"
)

// ServeHTTP answers every request under the handler's matcher: the OpenAI
// endpoints it serves, 405 for another method on one of them, 404
// unknown_url for any other path.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request, _ caddyhttp.Handler) error {
	ep, method, modelID := endpointOf(req.URL.Path)
	ex := &exchange{
		start:  now(),
		router: r,
		w:      w,
		req:    req,
		ctx:    req.Context(),
		ep:     ep,
		repl:   req.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer),
		span:   trace.SpanFromContext(req.Context()),
	}
	ex.repl.Map(ex.placeholder)
	defer ex.finish()
	switch {
	case ep == 0:
		ex.fail(invalidRequest(http.StatusNotFound, codeUnknownURL, "",
			fmt.Sprintf("Invalid URL (%s %s)", req.Method, truncate(req.URL.Path, maxEchoedName))))
		return nil
	case req.Method != method:
		w.Header().Set("Allow", method)
		ex.fail(invalidRequest(http.StatusMethodNotAllowed, codeMethodNotAllowed, "",
			fmt.Sprintf("Invalid method for URL (%s %s): use %s", req.Method, truncate(req.URL.Path, maxEchoedName), method)))
		return nil
	case ep == modelsEndpoint:
		ex.status = r.serveModels(w, modelID)
		return nil
	}

	if !ex.readRequest() {
		return ex.gone
	}
	if e := keyGivenTwice(r.budgets, req); e != nil {
		ex.fail(e)
		return nil
	}
	ex.ruleClient = clientValue(r.ClientLabel, ex.repl)
	ex.client = boundedClient(r.ClientLabel, ex.ruleClient)
	p, ok := ex.resolve()
	if !ok {
		return nil
	}
	if r.cache != nil {
		if ex.lookupCache(p) {
			if ex.abort { // a followed stream broke: as the leader's client, abort
				ex.finish()
				panic(http.ErrAbortHandler)
			}
			return ex.gone // answered from the cache, or gone
		}
		defer ex.cache.end()
	}
	ex.outliveHalfClose()
	if len(r.budgets) > 0 {
		if p, ok = ex.applyBudgets(p); !ok {
			return nil
		}
	}
	ex.run(p)
	if ex.abort {
		// a stream broke after it was committed: the client got an error
		// event; now it must see a broken response too. Counted first:
		// the panic unwinds the deferred finish.
		ex.finish()
		panic(http.ErrAbortHandler)
	}
	return ex.gone
}

// exchange is one client request on its way through the candidates.
type exchange struct {
	start  time.Time // the request's arrival
	router *Router
	w      http.ResponseWriter
	req    *http.Request
	// ctx bounds the upstream requests: the client's; over HTTP/1, once
	// the body is read, one its half-close does not cancel
	// (outliveHalfClose); for a stream that others follow, until neither
	// its client nor a follower reads
	ctx       context.Context
	ep        endpoint
	body      openai.Request // the request, once read (readRequest)
	route     string
	model     string // the model the request named, when it is a known one
	repl      *caddy.Replacer
	attempts  int
	failures  []string    // what became of each candidate, for the 503 message
	answered  *deployment // the deployment whose response was sent
	status    int         // the status sent to the client, 0 if none
	abort     bool        // the response must end abnormally
	gone      error       // the client went away before anything was written (clientGone)
	internal  bool        // a request the router makes of itself (embedQuestion)
	leave     func()      // set when ctx outlives the client's context (outliveHalfClose): what the client's leaving does once its answer has started
	stopWatch func() bool // undoes answerStarted's watch
	counted   bool
	client    string // the bounded client label, "" without one
	// the client label's own value, which rules read: a client's route
	// does not depend on how many others the metrics keep apart
	ruleClient string
	charges    []budgetCharge // the budgets the request's cost goes to
	// spent is what all the request's attempts cost (spend), in the
	// router's currency: a semantic lookup's embedding cost
	spent   float64
	ns      string      // the resolved plan's cache namespace
	cache   cacheTicket // the response cache's part (cache_stage.go)
	gate    *hedgeGate  // the hedge in progress, if any (hedge.go)
	span    trace.Span  // the request's trace span, from Caddy's tracing handler (tracing.go)
	usageMu sync.Mutex  // serialises spend: a hedge's two attempts may report usage at once

	// what the transport wrote (send) for the request's first attempt;
	// sentTraceUsed: it was, and any later attempt has a trace of its own
	sentTrace     sentTrace
	sentTraceUsed bool

	// how many attempts were answered 404 for the request's conversation,
	// stored items or files (namesStored), and the last one's param, kind
	// and id: when all were, and no candidate was skipped, what the
	// request names is nowhere, the client's error (unavailable)
	storedMissing int
	missingParam  string
	missingKind   string
	missingID     string
	// how many attempts were answered 429 for a request over the
	// deployment's whole limit (attemptResult.overLimit), and the most
	// one asked: when all were, no pause serves the request (unavailable)
	overLimit int
	overAsked int64

	// home is the home of the response the request continues when it is
	// one of its candidates (homeFirst); homeAway is it too when it cannot
	// answer now: skipped (a cooldown, disabled), or tried and failed;
	// homeKnown says the router remembers where that response was made
	home, homeAway deploymentID
	homeKnown      bool

	// what the {http.llm_router.*} placeholders report (placeholder)
	ph placeholderValues

	// the values of the response headers the router sets (setHeader)
	hdrVals [10]string
	nHdr    int
}

// errClientGone is the handler's error for a client that went away
// before anything was written.
var errClientGone = caddyhttp.Error(499, errors.New("the client went away before the answer"))

// clientGone records that the client went away before anything was
// written: ServeHTTP returns 499 to Caddy, as reverse_proxy does, so that
// a client that only half-closed its side sees 499, never an empty 200.
// Nothing changes once an attempt answered: the other attempt of its
// hedge, ending after it (run records the first attempt's end first),
// failed or was canceled after the client had its answer.
func (ex *exchange) clientGone() {
	if ex.answered != nil {
		return
	}
	ex.status = 499
	ex.gone = errClientGone
}

// chargeAbandoned charges an attempt given up before its answer, once
// the provider had the whole request (attemptResult.sent), when the
// client left or a deadline of the router's passed (timeout,
// first_byte_timeout, a semantic lookup's lookup_timeout): the provider
// may well finish and bill it. A JSON request's
// generation runs on without a reader, so its estimated input and its
// output limit (or the default reservation without one) are charged, as
// admission reserved them; a stream's ends when its connection closes, so
// its input is. Neither leaving nor stalling the provider just before the
// answer escapes a budget.
func (ex *exchange) chargeAbandoned(d *deployment) {
	ex.spend(d, ex.abandonedUsage(d))
}

// abandonedUsage is what an attempt at d given up after the provider had
// the whole request is charged (chargeAbandoned, a hedge's loser): its
// estimated input, and for a JSON request the most output it could bill:
// its output limit, or the cap it was sent with, else what admission
// reserved; never more than a completions request without a limit
// generates (the API's default).
func (ex *exchange) abandonedUsage(d *deployment) usage {
	u := ex.estimate(0)
	if !ex.body.Stream {
		reserve := ex.outputCap(d)
		if reserve == 0 {
			reserve = defaultReserveOutput
			for i := range ex.charges {
				if b := ex.charges[i].b; i == 0 || b.reserveOut > reserve {
					reserve = b.reserveOut // what admission held for it
				}
			}
		}
		// what it was sent with: its own limit, or the cap, a completions
		// request's default at most
		u.Output = ex.outputLimit(ex.body.CappedLimit(reserve))
	}
	return u
}

// outliveHalfClose detaches an HTTP/1 request's upstream work from its
// client's context once the body is read whole. An HTTP/1 client that
// half-closes its side after its body (shutdown(SHUT_WR)) looks to
// net/http exactly like one that left: the read returns EOF and the
// request's context is canceled. Only a write tells them apart, so a
// client that really left is noticed when a write to it fails: a stream
// at its next event, a JSON answer at its end (an answer the provider
// finishes and bills whether or not anyone reads it, now counted and
// charged rather than lost). Its attempts stay bounded by try_duration.
// HTTP/2 and HTTP/3 end a request stream without closing anything and
// signal a departure by a reset, so those keep the client's context.
// It is done once a request goes further than a fresh cache hit, which
// answers at once (lookupCache, or here), and not again.
func (ex *exchange) outliveHalfClose() {
	if ex.req.ProtoMajor == 1 && ex.leave == nil {
		ctx, cancel := context.WithCancel(context.WithoutCancel(ex.req.Context()))
		ex.ctx, ex.leave = ctx, cancel
	}
}

// answerStarted is called when a stream's headers have gone out. A
// detached request's client that closes its side from now on has left
// (one that half-closes does so right after its body, before any
// answer): its leaving ends the work, as over HTTP/2. One that closed
// before is told apart by the writes.
func (ex *exchange) answerStarted() {
	if ex.detached() && ex.req.Context().Err() == nil {
		ex.stopWatch = context.AfterFunc(ex.req.Context(), ex.leave)
	}
}

// clientLeft reports whether a detached request's client closed its side:
// it half-closed, or it left. Its attempt in flight goes on (its answer
// is delivered if the client still reads), but no other starts: a
// failover or a hedge for a client that may be gone is spent on nobody.
func (ex *exchange) clientLeft() bool {
	return ex.detached() && ex.req.Context().Err() != nil
}

// detached reports whether ctx outlives the client's context.
func (ex *exchange) detached() bool { return ex.leave != nil }

// fail answers the request with an error of the router's own.
func (ex *exchange) fail(e *routerError) {
	e.write(ex.w)
	ex.status = e.status
}

// readRequest reads and checks the body; false means the client has been
// answered.
func (ex *exchange) readRequest() bool {
	r := ex.router
	raw, err := readBody(ex.req, r.MaxRequestBody)
	if err != nil {
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			// the limit the body is over: a Caddy request_body { max_size }
			// in front applies its own, smaller one first
			ex.fail(bodyTooLarge(tooLarge.Limit))
		case ex.req.Context().Err() != nil:
			ex.clientGone()
		default:
			ex.fail(invalidRequest(http.StatusBadRequest, codeUnreadableBody, "",
				"could not read the request body: "+err.Error()))
		}
		return false
	}
	err = ex.body.Parse(raw, ex.ep.api())
	// labels for the metrics, should the request fail before it is routed
	ex.route, ex.model = r.routing.known(ex.routeHeader(), ex.body.Model)
	if err != nil {
		e := err.(*openai.Error)
		ex.fail(invalidRequest(http.StatusBadRequest, e.Code, e.Param, e.Message))
		return false
	}
	return ex.billable()
}

// bodyTooLarge is the 413 for a body over max_request_body.
func bodyTooLarge(limit int64) *routerError {
	return invalidRequest(http.StatusRequestEntityTooLarge, codeTooLarge, "",
		fmt.Sprintf("request body is larger than the limit of %d bytes", limit))
}

// keyGivenTwice is the 400 for a request that gives a budget's key header
// or query parameter more than once, nil for one that does not.
func keyGivenTwice(budgets []*budget, req *http.Request) *routerError {
	if what := keyValueTwice(budgets, req); what != "" {
		return invalidRequest(http.StatusBadRequest, codeDuplicateHeader, "",
			fmt.Sprintf("The request has %s more than once: a budget is kept for its value, which must be one", what))
	}
	return nil
}

// defaultServiceTiers are the service tiers that cost no more than the
// standard price the router charges.
var defaultServiceTiers = []string{"auto", "default", "flex"}

// billable refuses what the router could not bill as the provider does
// (false: the client has been answered; see unbillable).
func (ex *exchange) billable() bool {
	if e := ex.router.unbillable(&ex.body); e != nil {
		ex.fail(e)
		return false
	}
	return true
}

// unbillable is the 400 for a request the router could not bill as the
// provider does, nil for one it can: a service tier priced above the
// model's price, a Responses API background request, whose answer and
// usage are fetched later, past the router, and a feature billed apart
// from tokens (a hosted tool, audio output) the config does not allow.
// The dry run asks it too.
func (r *Router) unbillable(body *openai.Request) *routerError {
	if t := body.ServiceTier; t != "" && !slices.Contains(r.ServiceTiers, t) {
		return invalidRequest(http.StatusBadRequest, openai.CodeInvalidValue, "service_tier",
			fmt.Sprintf("service_tier '%s' is not offered by this gateway (it offers %s): its price is not the one the gateway counts",
				truncate(t, maxEchoedName), strings.Join(r.ServiceTiers, ", ")))
	}
	if body.Background {
		return invalidRequest(http.StatusBadRequest, openai.CodeInvalidValue, "background",
			"background responses are not supported by this gateway: their answer and usage would be fetched past it, uncounted")
	}
	for _, f := range body.Unpriced {
		if !allowedUnpriced(r.AllowUnpriced, f) {
			param := "tools"
			switch f {
			case "web_search":
				param = "web_search_options"
			case "live_search":
				param = "search_parameters"
			case "audio":
				param = "modalities"
			default:
				if f == "plugin" || strings.HasPrefix(f, "plugin_") {
					param = "plugins"
				}
			}
			return invalidRequest(http.StatusBadRequest, openai.CodeInvalidValue, param,
				fmt.Sprintf("'%s' is not available through this gateway: the provider bills it apart from tokens, which the gateway cannot count",
					truncate(f, maxEchoedName)))
		}
	}
	return nil
}

// allowedUnpriced reports whether feature is in allowed, or begins with
// one of them followed by "_" (web_search allows web_search_preview).
func allowedUnpriced(allowed []string, feature string) bool {
	for _, a := range allowed {
		if feature == a || strings.HasPrefix(feature, a) && strings.HasPrefix(feature[len(a):], "_") {
			return true
		}
	}
	return false
}

// resolve finds the request's candidates (README, "Routing rules"); false
// means the client has been answered.
func (ex *exchange) resolve() (plan, bool) {
	r := ex.router
	routeHeader := ex.routeHeader()
	kind := ex.ep.kind()
	reason := "default"
	switch model := ex.body.Model; {
	case routeHeader != "":
		reason = "header"
	case model != "" && model != "auto":
		reason = "model"
	case r.rules != nil && kind == kindChat:
		// no route named: the rules classify the request
		vars := newRuleVars(ex.ep, &ex.body, ex.req.Header, ex.ruleClient)
		if rule := r.rules.choose(vars, r.logger, nil); rule != nil {
			routeHeader, reason = rule.route, rule.reason
		}
	}
	ex.ph.reason = reason
	res := r.routing.resolve(routeHeader, ex.body.Model, kind)
	ex.route, ex.model, ex.ns = res.route, res.model, res.ns
	switch {
	case res.plan == nil && res.wrongKind:
		ex.fail(invalidRequest(http.StatusBadRequest, codeWrongModelKind, "model",
			fmt.Sprintf("'%s' is not %s: %s needs one", truncate(res.name, maxEchoedName), kind.aModel(), ex.ep.path())))
		return nil, false
	case res.plan == nil:
		what, name := "model", ex.body.Model
		if routeHeader != "" {
			what, name = "route", routeHeader
		}
		if name == "" {
			ex.fail(invalidRequest(http.StatusNotFound, codeModelNotFound, "model",
				fmt.Sprintf("No model on this gateway serves %s: it needs %s", ex.ep.path(), kind.aModel())))
		} else {
			ex.fail(invalidRequest(http.StatusNotFound, codeModelNotFound, "model",
				fmt.Sprintf("The %s '%s' does not exist on this gateway", what, truncate(name, maxEchoedName))))
		}
		return nil, false
	}
	ex.ph.routed = true
	if reason != "header" && reason != "model" {
		return ex.withHome(res.plan), true
	}
	return res.plan, true
}

// applyBudgets checks the request against its budgets: it may be served as
// resolved, from a budget's downgrade route instead, or refused (false: the
// client has been answered).
func (ex *exchange) applyBudgets(p plan) (plan, bool) {
	t := now()
	kept, charges, downgraded, v := ex.admitBudgets(p, t)
	ex.charges = charges
	if len(downgraded) > 0 {
		names := make([]string, len(downgraded))
		for i, b := range downgraded {
			names[i] = b.name
			b.count(actionDowngraded)
		}
		ex.route, ex.model = downgraded[len(downgraded)-1].downgrade, ""
		note := "downgraded (" + strings.Join(names, ", ") + ")"
		ex.setHeader(hdrBudget, note)
		ex.ph.budget = note
		ex.cache.dontStore() // a cheaper answer is not the answer to the original route
	}
	if b := v.refuse; b != nil {
		if !ex.internal {
			// the router's own request (a semantic lookup's embedding) is
			// not a client's: its refusal shows as an embedding failure
			b.count(actionRefused)
		}
		ex.ph.budget = "refused (" + b.name + ")"
		ex.setHeader(hdrBudget, ex.ph.budget)
		ex.fail(budgetRefusal(v, t))
		return nil, false
	}
	p = kept
	return p, true
}

// admitBudgets runs the budgets' admission for plan p at t (README,
// "Budgets").
func (ex *exchange) admitBudgets(p plan, t time.Time) (plan, []budgetCharge, []*budget, budgetVerdict) {
	r := ex.router
	// what the request may cost: its input as estimated from its text,
	// and its output limit, or each budget's reserve_output without one
	keyOf := func(b *budget) string { return b.keyOf(ex.repl) }
	est := demand{usage: usage{Input: ex.inputTokens(), Output: ex.outputLimit(0)}}
	if ex.ep.kind() == kindChat {
		est.gens = ex.body.Generations()
	}
	if ex.ep == responsesEndpoint {
		est.minOut = openai.ResponsesMinLimit // what a cap sends it with at least (CappedLimit)
	}
	// only chat requests can move to a (chat) downgrade route
	return admitBudgets(r.budgets, p, ex.route, est, keyOf, t, ex.ep.kind() == kindChat, r.routing.byRoute)
}

// outputLimit is the most output, in tokens, the request's answers may
// bill: its output limit (reserve without one) for each answer the
// provider generates (n, best_of, a prompt list); embeddings produce none.
func (ex *exchange) outputLimit(reserve int64) int64 {
	if ex.ep.kind() != kindChat {
		return 0
	}
	per := ex.body.MaxTokens
	if per == 0 {
		per = reserve
	}
	return mulSat(per, ex.body.Generations())
}

// outputCap is the output limit an attempt at d is given when the request
// sets none (0 when no capping budget covers d): the smallest
// reserve_output among the request's capping budgets that cover d, what
// each of them reserved for every answer. With a cap, a request's own limit
// goes in the member the provider reads too (openai.Request.Upstream).
func (ex *exchange) outputCap(d *deployment) int64 {
	limit := int64(0)
	for i := range ex.charges {
		// the budget alone: a hedge's other attempt may be holding
		// (budgetCharge.hold) at the same time
		limit = tighterCap(limit, ex.charges[i].b, d)
	}
	return limit
}

// tighterCap is limit (0: none), or b's output cap on d where b caps d
// more tightly: the smallest cap of the budgets that cap is the one sent.
func tighterCap(limit int64, b *budget, d *deployment) int64 {
	if b.capOutput && b.covers[d] && (limit == 0 || b.reserveOut < limit) {
		return b.reserveOut
	}
	return limit
}

// budgetsRefuse reports whether the budgets would refuse plan p now,
// holding nothing: a semantic lookup spends an embedding, which a request
// refused anyway must not.
func (ex *exchange) budgetsRefuse(p plan) bool {
	if len(ex.router.budgets) == 0 {
		return false
	}
	_, charges, _, v := ex.admitBudgets(p, now())
	releaseCharges(charges)
	return v.refuse != nil
}

// routeHeader is the route the client asked for in a header, if any.
func (ex *exchange) routeHeader() string {
	if v := headerValue(ex.req.Header, hdrRoute); v != "" {
		return v
	}
	return headerValue(ex.req.Header, hdrQueryType)
}

// truncate cuts s to at most n bytes on a character boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// readBody reads the request body once, up to limit bytes, so it can be
// replayed to every attempt.
func readBody(req *http.Request, limit int64) ([]byte, error) {
	if req.ContentLength > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	// whole at its declared length, as HTTP/1.1 reads it: an HTTP/2
	// client may keep its stream open (full duplex), and one that sends
	// more than it declared has its stream reset by the server
	return readLimited(req.Body, req.ContentLength, limit, true)
}

// readLimited reads r whole (to its end, or with atDeclared to its
// declared length when it has one) into a buffer sized by that length, or
// fails with *http.MaxBytesError beyond limit bytes. The first buffer is
// at most preallocMax: memory is held for what arrived, never for what a
// peer merely declares (a client that announces 8 MB and trickles).
func readLimited(r io.Reader, declared, limit int64, atDeclared bool) ([]byte, error) {
	size := int64(4096)
	if declared >= 0 && declared <= limit {
		size = min(declared+1, preallocMax) // +1 sees EOF without growing: one allocation for most bodies
	}
	b := make([]byte, 0, size)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // grow, as io.ReadAll does
		}
		n, err := r.Read(b[len(b):min(int64(cap(b)), limit+1)])
		b = b[:len(b)+n]
		if int64(len(b)) > limit {
			return nil, &http.MaxBytesError{Limit: limit}
		}
		if err == io.EOF || atDeclared && int64(len(b)) == declared {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// preallocMax bounds the buffer readLimited allocates before any byte
// arrives; larger bodies grow it as they come.
const preallocMax = 64 << 10

// attemptResult is what became of one upstream attempt.
type attemptResult struct {
	outcome    outcome
	status     int           // upstream status, 0 when none arrived
	detail     string        // why it failed, for the 503 message and logs; never a secret
	retryAfter time.Duration // for 429s: how long the provider asked us to wait
	usage      *usage        // a complete answer's usage, when it lost a hedge (billed all the same)
	firstByte  time.Duration // from the start to the response headers (JSON) or first event (stream); 0 if none came
	committed  bool          // a response went to the client: stop trying
	sent       bool          // the request was written whole before the attempt failed (sentTrace): the provider may bill it
	broken     bool          // a committed stream broke: the response must be aborted
	started    time.Time
	// overLimit is what a 429 said the request alone asks, over the
	// deployment's whole limit (openai.OverLimit); 0 for any other answer
	overLimit int64

	// changes: the deployment's count of state changes as the attempt
	// began (healthState.changes): its outcome changes the state only if
	// none came since
	changes uint64

	// observed: the outcome was recorded (observeAttempt) as the attempt
	// ended, on its own goroutine: a hedge's, whose other attempt may
	// go on for minutes
	observed bool

	// errorAnswer: the provider answered with an error status (or a
	// stream whose first event is the request's own error), so it
	// generated nothing and bills nothing, whatever became of the body
	// (the client left, a hedge was lost, a deadline passed while it was
	// read): not charged as given up mid-generation (billable)
	errorAnswer bool
}

// run tries the candidates in order until one answers or the budget is
// spent, then answers the client. When every candidate in rotation has
// failed and try_duration has time left, the disabled ones are tried too,
// best score first, as a last resort before the 503: a deployment
// disabled a moment ago may well have recovered, and a 503 helps no one.
// With hedging on (hedge.go), a candidate that has not produced its first
// byte after the hedge delay gets the next one started beside it.
func (ex *exchange) run(p plan) {
	r := ex.router
	// after any wait for a flight that failed: a try budget of its own; and
	// the time the candidates' health is read at (one clock read for both)
	start := now()
	candidates, skipped, allOut := p.order(start, nil, r.logger, balance{latency: r.Failover.Balance == balanceLatency, stream: ex.body.Stream})
	ex.homeFirst(candidates, skipped) // a Responses continuation goes where its response is
	maxAttempts := r.Failover.MaxAttempts
	if maxAttempts <= 0 {
		maxAttempts = len(candidates) + len(skipped)
	}
	tryDuration := time.Duration(r.Failover.TryDuration)

	var failed *deployment // the previous attempt's, when it failed
	var failedOutcome outcome
	// may reports whether another attempt may start (noting why not)
	may := func(d *deployment) bool {
		if ex.attempts >= maxAttempts {
			ex.failures = append(ex.failures, d.label()+": skipped, over max_attempts "+strconv.Itoa(maxAttempts))
			return false
		}
		if ex.attempts > 0 && now().Sub(start) >= tryDuration {
			ex.failures = append(ex.failures, d.label()+": skipped, try_duration "+tryDuration.String()+" spent")
			return false
		}
		if b := ex.holdBudgets(d, 1, false); b != nil {
			ex.failures = append(ex.failures, d.label()+": skipped, budget '"+b.name+"' has no room for another attempt")
			return false
		}
		return true
	}
	begin := func(d *deployment, lastResort bool) {
		if failed != nil {
			failed.metrics.failovers[failedOutcome.index()].Inc()
			failed = nil
		}
		if lastResort {
			d.metrics.lastResort.Inc()
		}
		ex.attempts++
	}
	// end records an attempt's outcome; true when the request is over
	end := func(d *deployment, res *attemptResult, lastResort bool) bool {
		ex.observeAttempt(d, res)
		if res.committed {
			ex.answered, ex.status, ex.abort = d, res.status, res.broken
			ex.gone = nil // answered after all: a hedge, after the other attempt saw the client leave
			return true
		}
		switch res.outcome {
		case outcomeCanceled:
			if res.billable() {
				ex.chargeAbandoned(d)
			}
			ex.clientGone()
			return true
		case outcomeTimeout:
			if res.billable() && res.status == 0 {
				// given up by the router; a provider's own 408 generated nothing
				ex.chargeAbandoned(d)
			}
		case outcomeHedgeLost:
			return false // the other attempt of the hedge answered
		}
		if ex.clientLeft() && !ex.cache.followed() {
			// no further attempt for a client that may be gone, unless
			// others follow this request's flight: they are still here
			ex.clientGone()
			return true
		}
		if d.id == ex.home {
			// the response is there, but its home failed: another's 404
			// for it says only that it is not there (awayFromHome)
			ex.homeAway = d.id
		}
		detail := res.detail
		if lastResort {
			detail = "(last resort, disabled) " + detail
		}
		ex.failures = append(ex.failures, d.label()+": "+detail)
		failed, failedOutcome = d, res.outcome
		if res.overLimit > 0 {
			ex.overLimit++
			ex.overAsked = max(ex.overAsked, res.overLimit)
		}
		return false
	}
	try := func(d *deployment, lastResort bool) (done bool) {
		if !may(d) {
			return false
		}
		begin(d, lastResort)
		span := ex.traceAttempt(d, lastResort)
		res := ex.attempt(d)
		defer endAttempt(span, &res)
		return end(d, &res, lastResort)
	}
	hedges := 0
	for i := 0; i < len(candidates); i++ {
		d := candidates[i]
		delay := time.Duration(0)
		if i+1 < len(candidates) && ex.attempts+2 <= maxAttempts && !allOut {
			// (no hedge when every candidate is out of rotation: none
			// is up to hedge to)
			delay = ex.hedgeDelay(d, hedges)
		}
		if delay == 0 {
			// every candidate out of rotation: a disabled one is tried
			// as a last resort, as it is after the others failed
			if try(d, allOut && d.state.viewAt(start).state == stateDisabled) {
				return
			}
			continue
		}
		if !may(d) {
			continue
		}
		h := candidates[i+1]
		begin(d, false)
		results, hedged := ex.hedgedAttempt(d, h, delay, start.Add(tryDuration))
		if hedged {
			hedges++ // and ex.attempts counted it (hedgedAttempt)
			i++      // h was tried
		}
		over := false
		for k := range results {
			hr := &results[k]
			over = end(hr.d, &hr.res, false) || over
			endAttempt(hr.span, &hr.res)
		}
		if hedged {
			ex.settleHedge(h, results)
		}
		if over {
			return
		}
	}
	for _, s := range lastResortFirst(skipped, ex.homeAway) {
		if s.disabled && try(s.d, true) {
			return
		}
		if !s.disabled {
			ex.failures = append(ex.failures, s.d.label()+": skipped, "+s.why)
		}
	}
	if t := now(); ex.cache.staleAt(t) && ex.serveCached(ex.cache.stale, cacheStale, t) {
		return
	}
	ex.unavailable(p)
}

// billable reports whether an attempt given up before its answer was
// read (canceled, timed out, a hedge's loser) is charged as one the
// provider generated for: it had the whole request, and did not answer
// with an error status.
func (res *attemptResult) billable() bool {
	return res.sent && !res.errorAnswer
}

// lastResortFirst orders the candidates left out of rotation for the last
// resort: the disabled ones by score, best first (stable), then the rest;
// home, the deployment that made the response the request continues, is
// the first of the disabled: no other has that response.
func lastResortFirst(out []skipped, home deploymentID) []skipped {
	slices.SortStableFunc(out, func(a, b skipped) int {
		if a.disabled != b.disabled {
			if a.disabled {
				return -1
			}
			return 1
		}
		if ah, bh := a.d.id == home, b.d.id == home; ah != bh {
			if ah {
				return -1
			}
			return 1
		}
		return cmp.Compare(b.score, a.score)
	})
	return out
}

// attempt sends the request to one deployment. It commits a response only
// on success or on an error that is the client's own.
func (ex *exchange) attempt(d *deployment) attemptResult {
	return ex.attemptIn(ex.ctx, d, 0)
}

// attemptIn is attempt within parent, as attempt i of a hedge (hedge.go),
// which may commit only if it wins the hedge's gate. A panic in the
// attempt is its failure, logged: up the request's goroutine it would
// close the client's connection with no answer (and leave a hedge's
// other attempt waiting on this one), rather than fail over; one after
// the commit breaks the response, one before it is charged as given up.
func (ex *exchange) attemptIn(parent context.Context, d *deployment, i int) (res attemptResult) {
	res.started = now()
	res.changes = d.state.health.changes.Load()
	d.metrics.inFlight.Inc()
	defer d.metrics.inFlight.Dec()
	defer func() {
		if v := recover(); v != nil {
			ex.router.logger.Error("attempt panicked", zap.String("model", d.name), zap.String("provider", d.provider.name),
				zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
			res.outcome, res.detail = outcomeServerError, "internal error"
			res.broken = res.committed
			if !res.committed && res.billable() {
				// given up once the provider had the request, as any
				// attempt cut off then: what it may have billed is charged
				ex.chargeAbandoned(d)
			}
		}
	}()
	if ex.body.Stream {
		ex.attemptStream(parent, d, i, &res)
	} else {
		ex.attemptBuffered(parent, d, i, &res)
	}
	return res
}

// lostHedge says that the attempt reached its commit after the other
// attempt of its hedge: it is canceled, and writes nothing.
func lostHedge(res *attemptResult) {
	res.outcome, res.detail, res.committed = outcomeHedgeLost, "lost the hedge to a faster candidate", false
}

// Causes of an attempt's cancellation, so that its failure says which
// bound it hit.
var (
	errAttemptTimeout   = errors.New("attempt timeout")
	errFirstByteTimeout = errors.New("first byte timeout")
	errStreamIdle       = errors.New("stream idle timeout")
	errNoDone           = errors.New("the stream ended before its end ([DONE], or response.completed)")
	errErrorEvent       = errors.New("the provider sent an error event")
)

// attemptBuffered handles a non-streaming request: the whole upstream
// response is read before anything is sent, so any failure can still fail
// over.
func (ex *exchange) attemptBuffered(parent context.Context, d *deployment, i int, res *attemptResult) {
	ctx, cancel := context.WithTimeoutCause(parent, d.provider.timeout, errAttemptTimeout)
	defer cancel()
	resp, err := ex.send(ctx, d, i, res)
	if err != nil {
		ex.transportFailure(ctx, res, err)
		return
	}
	res.firstByte = now().Sub(res.started)
	ex.answerBuffered(ctx, d, i, resp, res)
}

// answerBuffered reads a whole upstream response and, unless it calls for
// failover, passes it to the client: a 2xx whose body is a JSON object, or
// a 4xx of the client's own making, with every provider key scrubbed out.
func (ex *exchange) answerBuffered(ctx context.Context, d *deployment, i int, resp *http.Response, res *attemptResult) {
	res.errorAnswer = resp.StatusCode < 200 || resp.StatusCode >= 300
	payload, err := readResponse(resp)
	if err != nil {
		ex.transportFailure(ctx, res, err)
		if res.outcome == outcomeConnectError && resp.StatusCode >= 200 && resp.StatusCode < 300 {
			// cut off after its headers: the answer was generated, and
			// billed, before them (a timeout or the client's leaving is
			// charged so by end)
			ex.chargeAbandoned(d)
		}
		return
	}
	ex.answerPayload(d, i, resp, payload, res)
}

// answerPayload is answerBuffered once the body, payload, is read.
func (ex *exchange) answerPayload(d *deployment, i int, resp *http.Response, payload []byte, res *attemptResult) {
	res.errorAnswer = resp.StatusCode < 200 || resp.StatusCode >= 300
	res.status = resp.StatusCode
	var relay, forgotten bool
	res.outcome, relay = classifyStatus(resp.StatusCode)
	if !relay && ex.namesRequestResource(resp.StatusCode, payload, d.upstream) {
		// the stored response the request continues is not there: the
		// client's error when the router knows where it was made, unless
		// that home is a candidate skipped for now (a cooldown) or
		// failed: then the request fails over, with no fault of d's, and
		// ends with the home's pause (a 503 with Retry-After) rather than
		// a 404 that tells the client its response is gone
		res.outcome, relay = outcomeClientError, true
		switch {
		case ex.awayFromHome(d):
			res.outcome, relay = outcomeNotHere, false
		case !ex.homeKnown:
			// where the response was made is not known (pushed out of
			// memory by any client's responses, made before a restart or
			// at another instance): another candidate may have it, and d
			// is not at fault; once every candidate said so, the
			// client's 404 (unavailable)
			res.outcome, relay, forgotten = outcomeNotHere, false, true
			ex.storedMissing++
			ex.missingParam, ex.missingKind, ex.missingID = "previous_response_id", "", ex.body.PreviousResponseID
		}
	}
	if param, kind, id, ok := ex.namesStored(resp.StatusCode, payload, d.upstream); !relay && !forgotten && ok {
		// the conversation, a stored item or a file is not at this
		// deployment: another may have it (failover), and the
		// deployment is not at fault
		res.outcome = outcomeNotHere
		ex.storedMissing++ // never hedged (hedgeDelay): on the request's goroutine
		ex.missingParam, ex.missingKind, ex.missingID = param, kind, id
	}
	if res.outcome == outcomeRateLimited {
		// a request over the deployment's whole limit (OpenAI's "Request
		// too large ... on tokens per min"): the request's, which no
		// pause lets through, not the deployment's load: no cooldown for
		// everyone else's requests, and failed over, as a deployment with
		// a larger limit may serve it
		res.detail = strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode)
		if overLimitAnswer(res, payload) {
			return
		}
	}
	if res.outcome == outcomeRejected && resp.StatusCode == http.StatusForbidden && openai.Flagged(payload) {
		// a prompt the provider's moderation flagged (OpenRouter's 403):
		// the request's, as a flagged prompt's 400 is, so that one client
		// repeating it disables no deployment; relayed, not tried
		// elsewhere, which would go around the moderation
		res.outcome, relay = outcomeClientError, true
	}
	status := resp.StatusCode // what the client gets
	if res.outcome == outcomeServerError && resp.StatusCode >= 500 && openai.RequestsFault(payload) {
		// a 5xx whose error blames the request (a context too long, a
		// flagged prompt), as some OpenAI-compatible providers send: the
		// client's own, as a 400 or such a stream error event is, so that
		// one client repeating it disables no deployment, nor is it tried
		// on every other one; relayed as the 400 it is
		res.outcome, relay = outcomeClientError, true
		status, payload = http.StatusBadRequest, openai.ErrorEnvelope(payload)
	}
	if !relay {
		if res.outcome == outcomeRateLimited {
			res.retryAfter = retryAfterOf(resp.Header, now())
		}
		res.detail = strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode)
		return
	}
	// whatever the provider wrote, answer or error, loses any provider key
	// it echoes before it is relayed or kept
	payload = ex.router.scrub.bytes(payload)
	var a openai.Answer
	if res.outcome == outcomeSuccess {
		a = openai.ReadAnswer(ex.ep.api(), payload) // one pass: validity, usage, error, wholeness
		if !a.IsAnswer() && a.Valid && openai.RequestsFault(payload) {
			// the request's own error dressed as a success: the
			// client's, as the 5xx above; it generated nothing but what
			// it reports
			res.outcome, res.errorAnswer = outcomeClientError, true
			status, payload = http.StatusBadRequest, openai.ErrorEnvelope(payload)
			if a.Found {
				ex.spend(d, a.Usage)
			}
		}
	}
	res.status = status
	if res.outcome == outcomeSuccess {
		u := a.Usage
		if !a.IsAnswer() {
			// a cut-off body, an HTML page from a proxy, an error dressed
			// as a success: not an answer, but the provider may have
			// generated (and billed) one: charged its usage if it reports
			// one, else as estimated
			res.outcome = outcomeServerError
			res.detail = fmt.Sprintf("%d %s with a body that is not an answer (%s)", resp.StatusCode,
				http.StatusText(resp.StatusCode), describeBody(ex.router.scrub, resp.Header.Get("Content-Type"), payload))
			if a.Valid && openai.RateLimited(payload) {
				rateLimitedAnswer(res, resp, payload, "")
			}
			switch {
			case a.Found:
				// an error that reports what the provider billed (a
				// failed response's usage): that, not an estimate
				ex.spend(d, a.Usage)
			case res.outcome == outcomeRateLimited || res.overLimit > 0:
				// refused before generating, as a 429 is: nothing to bill
			case !a.Valid && cutObject(payload):
				// a JSON answer cut short, however cleanly its body
				// ended: generated whole, and billed, before its
				// headers, as one cut off with a read error is
				ex.chargeAbandoned(d)
			default:
				ex.spend(d, ex.estimate(0))
			}
			return
		}
		if !a.Found || u == (usage{}) {
			// an answer without usage: billed all the same; so is one
			// whose usage is all zeros, filled in without counting (as
			// a stream's placeholder is: every request has input)
			u = ex.estimate(ex.generatedBytes(openai.AnswerTextBytes(ex.ep.api(), payload)))
		}
		if !ex.gate.claim(i) {
			lostHedge(res)
			// billed: the hedge's settlement charges it (a copy of its own,
			// so that u stays off the heap on every other path)
			lost := u
			res.usage = &lost
			return
		}
		cost := ex.observeUsage(d, u)
		if resp.StatusCode == http.StatusOK {
			ex.cache.keepAnswer(d, payload, cost, a.Complete)
		}
		if ex.ep == responsesEndpoint {
			ex.rememberAnswer(openai.ResponseID(payload), d, u)
		}
	} else {
		if !ex.gate.claimError(i) {
			lostHedge(res)
			return
		}
	}
	ex.commitHeaders(d, resp.Header)
	if status != resp.StatusCode {
		ex.setHeader("Content-Type", "application/json") // the envelope, whatever the provider's was
		// the provider's retry hints were for its 5xx: the SDKs obey
		// X-Should-Retry: true whatever the status, and would send again
		// a request that cannot succeed
		h := ex.w.Header()
		delete(h, "Retry-After")
		delete(h, "Retry-After-Ms")
		delete(h, "X-Should-Retry")
	}
	if len(payload) > netHTTPHeldBody {
		// a shorter one gets its length from net/http, as a cache hit
		// does: one header fewer in the map
		ex.setHeader("Content-Length", strconv.Itoa(len(payload)))
	}
	ex.w.WriteHeader(status)
	_, _ = ex.w.Write(payload)
	res.committed = true
}

// cutObject reports whether b, which is not one valid JSON object, begins
// as one: an answer cut short rather than a page or text of another kind.
func cutObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// rateLimitedAnswer makes res the 429 that a 2xx JSON answer whose error
// is a rate limit (openai.RateLimited) stands for, as a stream's first
// event that is one does: a cooldown (the response's Retry-After
// honoured), no health lost. to says what the answer was to, for the
// detail ("" or " to a stream request,").
func rateLimitedAnswer(res *attemptResult, resp *http.Response, payload []byte, to string) {
	res.outcome = outcomeRateLimited
	res.retryAfter = retryAfterOf(resp.Header, now())
	res.detail = fmt.Sprintf("%d %s%s with a rate limit error", resp.StatusCode, http.StatusText(resp.StatusCode), to)
	overLimitAnswer(res, payload)
}

// overLimitAnswer reclassifies a rate limit's error (payload: a 429's
// body, an answer's, or a stream's first event's data) that says the
// request alone is over the deployment's whole limit (openai.OverLimit),
// and reports whether it did: the request's, failed over, no cooldown for
// everyone else's requests. It generated nothing to bill.
func overLimitAnswer(res *attemptResult, payload []byte) bool {
	limit, asked, ok := openai.OverLimit(payload)
	if ok {
		res.outcome, res.overLimit, res.retryAfter = outcomeNotHere, asked, 0
		res.detail += fmt.Sprintf(": request too large for its limit (requested %d, limit %d)", asked, limit)
	}
	return ok
}

// describeBody says briefly what a body that is not an answer was, for the
// 503 message and logs (never its content: it may echo the request). The
// Content-Type is the provider's text: scrubbed of keys, and only then cut
// (a key cut in two is no longer found).
func describeBody(scrub *scrubber, contentType string, b []byte) string {
	switch {
	case len(b) == 0:
		return "empty"
	case contentType != "":
		return fmt.Sprintf("%d bytes of %s", len(b), truncate(scrub.string(contentType), 64))
	default:
		return fmt.Sprintf("%d bytes", len(b))
	}
}

// readResponse reads and closes a buffered response body.
func readResponse(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	b, err := readLimited(resp.Body, resp.ContentLength, maxResponseBody, false)
	if err != nil {
		// declared here: errors.As takes its address, which puts it on the
		// heap, and an answer read whole needs none
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, fmt.Errorf("upstream response larger than %d bytes", maxResponseBody)
		}
	}
	return b, err
}

// attemptStream handles a streaming request. The response is held until
// the first SSE event arrives, so a stream that fails or stalls before its
// first token still fails over; after that, stream.go relays the events one
// by one, and a stream that breaks or falls silent for stream_idle_timeout
// ends with an error event and an aborted response.
func (ex *exchange) attemptStream(parent context.Context, d *deployment, i int, res *attemptResult) {
	f := ex.router.Failover
	// The attempt follows parent (the client, a hedge) up to the stream's
	// last event and not past it: the rest of the provider's response (its
	// end) is read after the client has its answer (drainStreamEnd), so
	// that its connection serves the next request, and the end of the
	// client's request must not cut that read.
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(parent))
	// Once the stream is relayed, the client's leaving cuts it only
	// abandonedStreamGrace later: the provider's usage, or what it sent
	// into the sockets' buffers while the client stopped reading, is read
	// meanwhile and charged (streamRelay.onClientGone)
	var relaying atomic.Bool
	var abandonOnce sync.Once
	abandon := func(cause error) {
		abandonOnce.Do(func() { time.AfterFunc(abandonedStreamGrace, func() { cancel(cause) }) })
	}
	unlink := context.AfterFunc(parent, func() {
		if relaying.Load() {
			abandon(context.Cause(parent))
		} else {
			cancel(context.Cause(parent))
		}
	})
	var body io.ReadCloser // the provider's response body, once it came
	ended := false         // the stream's last event came: its end is drained apart
	defer func() {
		if ended && unlink() {
			go drainStreamEnd(ex.router.ctx, body, cancel, streamEndGrace, ex.router.logger)
			return
		}
		unlink()
		if body != nil {
			_ = body.Close()
		}
		cancel(nil)
	}()
	timer := time.AfterFunc(time.Duration(f.FirstByteTimeout), func() { cancel(errFirstByteTimeout) })
	// the timer in place at the end: an error answer's replaces the first
	// byte's, and armed for the provider's timeout it would hold the
	// request (its body, through the replacer) that long after its answer
	defer func() { timer.Stop() }()

	resp, err := ex.send(ctx, d, i, res)
	if err != nil {
		ex.transportFailure(ctx, res, err)
		return
	}
	body = resp.Body

	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		// an error answer: read like a buffered one, bounded by the
		// provider's timeout rather than the first byte's
		if timer.Stop() {
			timer = time.AfterFunc(d.provider.timeout-now().Sub(res.started), func() { cancel(errAttemptTimeout) })
		}
		ex.answerBuffered(ctx, d, i, resp, res)
		return
	}
	if ct := resp.Header.Get("Content-Type"); !openai.IsEventStream(ct) {
		res.status, res.outcome = resp.StatusCode, outcomeServerError
		res.detail = fmt.Sprintf("%d %s to a stream request, but not a stream (%s)", resp.StatusCode,
			http.StatusText(resp.StatusCode), describeBody(ex.router.scrub, ct, []byte{0}))
		// likely an answer all the same (a provider that ignores
		// "stream"), generated and billed: charged at its usage
		if payload, err := readResponse(resp); err == nil {
			if openai.RequestsFault(payload) {
				// the request's own error, dressed as a success: the
				// client's 400, as answerPayload makes it
				ex.answerPayload(d, i, resp, payload, res)
				return
			}
			u, found, valid := openai.AnswerUsage(payload)
			if openai.RateLimited(payload) {
				// billed only what it reports
				rateLimitedAnswer(res, resp, payload, " to a stream request,")
				if found && valid {
					ex.spend(d, u)
				}
				return
			}
			if !found || !valid || u == (usage{}) {
				u = ex.estimate(ex.generatedBytes(openai.AnswerTextBytes(ex.ep.api(), payload)))
			}
			ex.spend(d, u)
		} else {
			ex.chargeAbandoned(d)
		}
		return
	}

	src := &progressReader{r: resp.Body} // told of the idle watch once the stream commits
	events := openai.NewEventReader(src)
	defer events.Release()
	// hold the response until the first event with data; of a Responses
	// API stream, the first past its opening events (response.created,
	// response.in_progress), which the provider sends as it takes the
	// request, before the model runs: held too, and relayed before it
	var first []byte
	var opening [][]byte
	var role []byte     // a chat stream's role chunk, copied, relayed before the first event (streamRelay.role)
	var roleBuf *[]byte // role's buffer, from relayBatches: no allocation
	var roles int64     // the role chunks held: a stream of n choices opens with one for each
	var idle *idleWatch // watching the wait after it
	defer func() {
		if idle != nil {
			idle.stop()
		}
		if roleBuf != nil {
			*roleBuf = (*roleBuf)[:0]
			relayBatches.Put(roleBuf)
		}
	}()
	for first == nil {
		ev, err := events.Next()
		if err != nil {
			ex.transportFailure(ctx, res, orEOF(err))
			if res.outcome == outcomeConnectError {
				// cut (or ended) by the provider's side after its 200, which
				// a stream sends before generating: charged its input as
				// one whose first event is no answer (the client's leaving
				// and the router's deadlines are charged by run)
				ex.spend(d, ex.estimate(0))
			}
			return
		}
		switch data := openai.EventData(ev); {
		case data == nil: // comments such as keep-alives are not the first event
		case ex.ep == responsesEndpoint && len(opening) < maxOpeningEvents && openai.ResponseOpening(data),
			ex.ep == chatEndpoint && role == nil && len(opening) < maxOpeningEvents && openai.ChatPromptFilter(data):
			// of a chat stream, Azure OpenAI's results of its content
			// filter on the prompt, which come before the role chunk
			opening = append(opening, bytes.Clone(ev))
		case ex.ep == chatEndpoint && role == nil && openai.ChatOpening(data):
			// a chat stream's role chunk, which providers send as they
			// take the request: held too, one only. It is the provider's
			// first byte, and what follows is waited for as a stream's
			// next event is (stream_idle_timeout), as when it was relayed
			if !timer.Stop() {
				ex.transportFailure(ctx, res, errFirstByteTimeout)
				return
			}
			if len(ev) <= relayBatch {
				roleBuf = relayBatches.Get().(*[]byte)
				ev = append(*roleBuf, ev...)
				*roleBuf = ev
			} else {
				ev = bytes.Clone(ev)
			}
			role, roles = ev, 1
			if d := time.Duration(f.StreamIdleTimeout); d > 0 {
				idle = newIdleWatch(d, cancel)
				src.idle = idle
				idle.waiting(true)
			}
		case ex.ep == chatEndpoint && role != nil && roles < max(ex.body.N, 1) && openai.ChatOpening(data):
			// the role chunk of another of the n choices, which carries no
			// more output than the first: held too (it would otherwise
			// commit an empty stream, which could no longer fail over nor
			// lose a hedge), the ones before it with the opening events,
			// relayed before role, in order
			opening, role = append(opening, role), bytes.Clone(ev)
			roles++
		default:
			first = ev
		}
	}
	if role != nil {
		if idle != nil {
			idle.waiting(false)
		}
		if ctx.Err() != nil {
			// the watch fired as the event arrived: the attempt's context
			// is canceled, so this stream cannot be relayed
			ex.transportFailure(ctx, res, context.Cause(ctx))
			return
		}
	} else if !timer.Stop() {
		// the timer fired as the first event arrived: the attempt's
		// context is canceled, so this stream cannot be relayed
		ex.transportFailure(ctx, res, errFirstByteTimeout)
		return
	}
	res.status = resp.StatusCode
	data := openai.EventData(first)
	answer := !openai.IsDone(data) && openai.ReadAnswer(0, data).IsAnswer()
	// the provider's 400, in the stream (read only when the first event
	// is no answer: most streams' is)
	refused := !answer && !openai.IsDone(data) && openai.RequestsFault(data)
	if !answer && !refused {
		// an error, or a stream that ends before any answer: fail over,
		// the input charged as estimated (the provider may bill it), but
		// for a rate limit, which generated nothing, as a 429 did not. An
		// error of the request's own is the client's answer, as a 400
		// is: relayed, and tried nowhere else
		res.outcome = outcomeServerError
		res.detail = fmt.Sprintf("%d %s, but the stream's first event is not an answer", resp.StatusCode, http.StatusText(resp.StatusCode))
		if openai.RateLimited(data) {
			// a rate limit in the stream is a 429 without Retry-After:
			// a cooldown, no health lost
			res.outcome = outcomeRateLimited
			res.detail = fmt.Sprintf("%d %s, but the stream's first event is a rate limit", resp.StatusCode, http.StatusText(resp.StatusCode))
			overLimitAnswer(res, data)
		}
		switch u, _, ok := openai.ChunkUsage(data); {
		case ok:
			ex.spend(d, u) // an error event that reports what the provider billed
		case res.outcome == outcomeRateLimited || res.overLimit > 0:
			// refused before generating, as a 429 is: nothing to bill
		default:
			ex.spend(d, ex.estimate(0))
		}
		return
	}
	if !answer {
		// the provider's 400, in the stream: relayed as one, so it wins a
		// hedge only as one does (claimError), and a hedge's that loses
		// generated nothing to charge
		res.errorAnswer = true
	}
	if answer && !ex.gate.claim(i) || !answer && !ex.gate.claimError(i) {
		lostHedge(res)
		return
	}
	res.outcome = outcomeSuccess
	res.committed = true
	t := now()
	res.firstByte = t.Sub(res.started)
	if answer {
		// a refusal has no first token, as the 400 it stands for has
		// not: its quick error would flatter the time to first token
		ttft := t.Sub(ex.start)
		d.metrics.ttft.Observe(ttft.Seconds())
		d.state.stats.recordFirstToken(ttft)
	}

	ex.commitHeaders(d, resp.Header)
	rc := http.NewResponseController(ex.w)
	ex.w.WriteHeader(resp.StatusCode)
	ex.answerStarted()
	relay := streamRelay{strip: ex.body.StripUsage(), scrub: ex.router.scrub, api: ex.ep.api(), wantID: ex.ep == responsesEndpoint,
		opening: opening, role: role, onClientGone: func() { abandon(errStreamAbandoned) }}
	relaying.Store(true)
	if f := ex.cache.flight; f != nil && ex.cache.store {
		f.startStream(d.name, d.provider.name)
		relay.flight = f
		if f.shared {
			// followers bound the writes to this client, from the moment
			// they join
			defer f.watchLeaderWrites(ex.w, rc.SetWriteDeadline)()
		}
	}
	switch d := time.Duration(f.StreamIdleTimeout); {
	case role != nil:
		relay.idle = idle // since the role chunk, if any
	case d > 0:
		relay.idle = newIdleWatch(d, cancel)
		src.idle = relay.idle
		defer relay.idle.stop()
	}
	err = relay.relay(ex.w, rc.Flush, events, first)
	ended = err == nil && relay.done

	switch {
	case err != nil:
	case relay.failed:
		// the provider's error event reached the client, which raises on
		// it: the stream failed, whatever followed
		err = errErrorEvent
	case !relay.done:
		// a stream ends with [DONE] (a Responses API stream with its
		// response's end): one that ends before was cut short, however
		// cleanly its connection closed
		err = errNoDone
	}
	u := ex.estimate(relay.textBytes)
	if relay.found {
		est := u
		u = relay.usage
		if relay.textBytes > relay.bytesAtUsage && est.Output > u.Output {
			// text came after the last usage object (a provider that
			// sends one early, then none at its end, whether the stream
			// was cut short or ended with [DONE]): the object is not the
			// bill, and the estimate of what came is larger
			u.Output, u.Estimated, u.InputReported = est.Output, true, true
		}
	}
	// abandoned, broken, or a provider that ignores include_usage: the
	// provider bills anyway, so an estimate is counted rather than nothing;
	// but a request refused at its first event, with no text and no usage
	// after it, generated nothing, as the 400 it stands for did not
	var cost float64
	if !refused || relay.found || relay.textBytes > 0 {
		cost = ex.observeUsage(d, u)
	}
	if ex.ep == responsesEndpoint {
		ex.rememberAnswer(relay.responseID, d, u)
	}
	if relay.flight != nil && err == nil && relay.done {
		ex.cache.keepStream(d, cost)
	}
	switch {
	case err == nil:
		// the provider ended the stream
	case errors.Is(err, errWritingDownstream) || ex.ctx.Err() != nil:
		res.outcome, res.detail = outcomeCanceled, "client went away mid-stream"
	default:
		// the stream broke after the response was committed: nothing
		// else can be sent in its place, so the client is told, in a
		// form the SDKs raise, and the response is aborted
		res.outcome, res.detail = outcomeConnectError, "stream broke: "+transportErrorText(err, ex.router.scrub.string)
		if errors.Is(context.Cause(ctx), errStreamIdle) {
			res.outcome, res.detail = outcomeTimeout, fmt.Sprintf("stream silent for %s", relay.idle.after)
		}
		if relay.failed {
			res.outcome, res.detail = outcomeServerError, "stream broke: "+errErrorEvent.Error()
			switch {
			case relay.requests:
				// the request's own fault (a prompt the provider's policy
				// flagged): the client's, as a 400 is, never the
				// deployment's health
				res.outcome = outcomeClientError
			case relay.rateLimited:
				// as a 429 without Retry-After: a cooldown, no health lost
				res.outcome = outcomeRateLimited
			}
		}
		res.broken = true
		msg := fmt.Sprintf("The upstream stream of %s broke after %d events: %s", d.label(), relay.events, res.detail)
		if relay.flight != nil {
			relay.flight.fail(msg)
		}
		// the client has the provider's error event; unless the SDKs
		// raise on it (the Responses API's "error" and response.failed
		// events they yield as any other), the router's follows, so that
		// they raise rather than meet a bare transport error: the
		// provider's own error when it blames the request (a flagged
		// prompt is no provider failure to retry), else the router's
		switch {
		case relay.raised:
		case relay.requests:
			_ = writeEnvelope(ex.w, openai.ErrorEnvelope(relay.requestsErr))
		default:
			_ = writeStreamError(ex.w, &routerError{typ: typeServerError, code: codeStreamBroken, msg: msg})
		}
		_ = rc.Flush()
	}
}

// maxOpeningEvents bounds the opening events of a Responses API stream
// held before its first output: a provider sends two.
const maxOpeningEvents = 4

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
	case code == http.StatusUnauthorized, code == http.StatusPaymentRequired, code == http.StatusForbidden,
		code == http.StatusNotFound, code == http.StatusProxyAuthRequired:
		// the gateway's account with the provider, not the client's
		// request: a bad key, no credit left (402), a model the provider
		// lacks, a forward proxy's refusal (407); its text never reaches
		// the client
		return outcomeRejected, false
	case code >= 400 && code < 500:
		return outcomeClientError, true // the client's own fault: it gets the provider's answer
	default:
		return outcomeServerError, false
	}
}

// transportFailure classifies an error that left no usable response.
func (ex *exchange) transportFailure(ctx context.Context, res *attemptResult, err error) {
	switch cause := context.Cause(ctx); {
	case ex.ctx.Err() != nil:
		res.outcome = outcomeCanceled
		res.detail = "client went away"
	case errors.Is(cause, errHedgeLost):
		lostHedge(res)
	case errors.Is(cause, errFirstByteTimeout):
		res.outcome = outcomeTimeout
		res.detail = fmt.Sprintf("no stream event within %s", time.Duration(ex.router.Failover.FirstByteTimeout))
	case errors.Is(cause, errStreamIdle):
		// silent after a chat stream's role chunk (attemptStream)
		res.outcome = outcomeTimeout
		res.detail = fmt.Sprintf("stream silent for %s after its role chunk", time.Duration(ex.router.Failover.StreamIdleTimeout))
	case errors.Is(cause, errAttemptTimeout), isTimeout(err):
		res.outcome = outcomeTimeout
		res.detail = fmt.Sprintf("timeout after %s", now().Sub(res.started).Round(time.Millisecond))
	default:
		res.outcome = outcomeConnectError
		// the text may quote what the provider sent, which may echo
		// the request's key
		res.detail = transportErrorText(err, ex.router.scrub.string)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// retryAfterOf reads a provider's pause from its answer's headers as the
// official SDKs do: Retry-After-Ms (milliseconds, a fraction allowed)
// first, then Retry-After (parseRetryAfter).
func retryAfterOf(h http.Header, t time.Time) time.Duration {
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && ms > 0 {
			const longest = 365 * 24 * 3600 * 1000 // as parseRetryAfter's
			return time.Duration(min(ms, longest) * float64(time.Millisecond))
		}
	}
	return parseRetryAfter(h.Get("Retry-After"), t)
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
// It returns 0 when absent or unparseable.
func parseRetryAfter(v string, t time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
		if secs < 0 {
			return 0
		}
		const longest = 365 * 24 * 3600 // beyond any cooldown cap, and no overflow
		return time.Duration(min(secs, longest)) * time.Second
	}
	if when, err := http.ParseTime(v); err == nil {
		if d := when.Sub(t); d > 0 {
			return d
		}
	}
	return 0
}

// defaultForwardedHeaders are the client request headers forwarded
// upstream without any forward_header: correlation and trace context,
// which change neither what the provider serves nor what it bills.
// Traceparent and Tracestate are the request's as the server holds it:
// under Caddy's tracing handler, those it put there for its server span.
var defaultForwardedHeaders = []string{"User-Agent", "Traceparent", "Tracestate", "X-Request-Id", "X-Client-Request-Id"}

// gatewayControlPrefixes are the client header prefixes another gateway
// acts on (Portkey's configs and targets, LiteLLM's, Helicone's target URL,
// Cloudflare AI Gateway's): a provider that is such a gateway must not be
// steered to another model or account by a client. A provider's own
// `header` may still set them.
var gatewayControlPrefixes = []string{"X-Portkey-", "X-Litellm-", "Helicone-", "Cf-Aig-"}

var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// routerSetHeaders are the request headers the router, or Go's transport,
// sets on a request upstream: neither a client's nor a provider's `header`
// may (Host is the base_url's; an Accept-Encoding of the config's would
// turn off the transport's decompression).
var routerSetHeaders = []string{"Host", "Content-Length", "Content-Type", "Content-Encoding", "Accept-Encoding"}

// neverForwarded are the client request headers no forward_header may
// open, by canonical name, with why.
var neverForwarded = func() map[string]string {
	why := map[string]string{}
	for _, group := range []struct {
		reason string
		fields []string
	}{
		{"a client credential: the provider's key is sent instead", []string{"Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key", "Api-Key"}},
		// Google's quota and billing project among them
		{"picks which of the operator's provider accounts or projects pays", []string{"Openai-Organization", "Openai-Project", "X-Goog-User-Project"}},
		{"hop-by-hop", hopHeaders},
		{"set by the router for the request it sends", routerSetHeaders},
		{"the router's own request header", []string{hdrRoute, hdrQueryType}},
	} {
		for _, f := range group.fields {
			if _, set := why[f]; !set {
				why[f] = group.reason
			}
		}
	}
	return why
}()

// unforwardable says why no config may forward a client's request header
// named field (in any case), or "" if one may.
func unforwardable(field string) string {
	if !httpguts.ValidHeaderFieldName(field) {
		return "not a header field name"
	}
	f := http.CanonicalHeaderKey(field)
	if why, ok := neverForwarded[f]; ok {
		return why
	}
	for _, prefix := range gatewayControlPrefixes {
		if strings.HasPrefix(f, prefix) {
			return "another gateway's control header (" + prefix + "*): it could steer a provider that is a gateway to another model or account"
		}
	}
	return ""
}

// forwardedHeaders is the allowlist of client request headers sent
// upstream: the defaults and those the config opens, canonical, each once.
func forwardedHeaders(opened []string) []string {
	out := slices.Clone(defaultForwardedHeaders)
	for _, f := range opened {
		if f = http.CanonicalHeaderKey(f); !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// The values of the content headers of a request upstream, shared by all
// requests (a header's values are never changed in place; the cap of 1
// makes an Add copy).
var (
	jsonContentType   = []string{"application/json"}
	acceptEventStream = []string{"text/event-stream"}
)

// upstreamHeader is the header of a request to p: the client's headers
// named in forward (the router's allowlist, canonical), less those the
// client's Connection header calls hop-by-hop; then p's headers, its key,
// and the body's type. Every other client header is dropped: one could
// change what the provider serves, or bills the operator for. Each name
// of the allowlist is looked up in the client's header, rather than each
// of the client's headers in a set: the list is a handful of names, and
// an SDK sends a dozen headers or more. The kept values are the client's
// slices, not copies: nothing changes a request header's values in place,
// and the full slice expression makes an Add copy rather than write into
// the client's.
func upstreamHeader(client http.Header, forward []string, p *provider, stream bool) http.Header {
	h := make(http.Header, min(len(client), len(forward))+len(p.headers)+3)
	conn := client["Connection"]
	for _, f := range forward {
		if v, ok := client[f]; ok && (len(conn) == 0 || !namedInConnection(conn, f)) {
			h[f] = v[:len(v):len(v)]
		}
	}
	for f, v := range p.headers {
		h[f] = v
	}
	p.setAuth(h)
	h["Content-Type"] = jsonContentType
	if stream {
		h["Accept"] = acceptEventStream
	}
	return h
}

// send makes attempt i's round trip to d (i: which of a hedge's two),
// noting in res whether the provider got the whole request: a request
// that timed out after that may be billed (chargeAbandoned), one that
// never left may not.
func (ex *exchange) send(ctx context.Context, d *deployment, i int, res *attemptResult) (*http.Response, error) {
	var st *sentTrace
	if i == 0 && !ex.sentTraceUsed {
		// the exchange's for its first attempt: most requests make one,
		// and the hot path allocates less
		st, ex.sentTraceUsed = &ex.sentTrace, true
	} else {
		// one of its own for a failover or a hedge: an earlier attempt's
		// transport may report on its trace after that attempt ended (its
		// request's end written after its answer came), which must not
		// make this attempt look sent
		st = new(sentTrace)
	}
	st.trace.WroteRequest = st.wrote
	// the client request's Caddy variables hidden from the transport: it
	// notes in them the forward proxy it picks (caddyhttp.SetVar, a map
	// without a lock), and the two attempts of a hedge wrote them at once
	ctx = context.WithValue(httptrace.WithClientTrace(ctx, &st.trace), caddyhttp.VarsCtxKey, nil)
	resp, err := d.provider.roundTrip(ex.upstreamRequest(ctx, d))
	res.sent = err == nil || st.sent.Load()
	return resp, err
}

// sentTrace learns from the transport that a request was written whole.
// The transport writes on a goroutine of its own, hence the atomic.
type sentTrace struct {
	trace httptrace.ClientTrace
	sent  atomic.Bool
}

func (st *sentTrace) wrote(info httptrace.WroteRequestInfo) {
	if info.Err == nil {
		st.sent.Store(true)
	}
}

// upstreamRequest builds one attempt's request to d: the provider's URL
// and key, the client's other headers, and the body with model rewritten.
func (ex *exchange) upstreamRequest(ctx context.Context, d *deployment) *http.Request {
	p := d.provider
	u := p.urls[ex.ep]
	limit := ex.outputCap(d)
	if limit == 0 {
		// uncapped, the request's own limit still goes where the provider
		// reads it: what was reserved for it, and what it asked for
		limit = ex.body.MaxTokens
	}
	parts := ex.body.Upstream(d.upstream, p.streamUsage, openai.OutputCap{Tokens: limit, ChatField: p.limitField})
	req := &http.Request{
		Method:        http.MethodPost,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        upstreamHeader(ex.req.Header, ex.router.forward, p, ex.body.Stream),
		ContentLength: int64(parts.Size),
		Host:          u.Host,
	}
	// Each branch's closure holds only what it reads, so that the pieces
	// of a small body stay off the heap.
	if parts.Size <= smallBody {
		// known to net/http as in memory: sent with the headers in one
		// write
		small := parts.Join()
		req.Body = io.NopCloser(bytes.NewReader(small))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(small)), nil }
	} else {
		// large: headers first, then the pieces straight to the socket,
		// not copied into one slice nor through the 4 KiB write buffer
		pieces := parts
		req.Body = io.NopCloser(pieces.Reader())
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(pieces.Reader()), nil }
	}
	return req.WithContext(ctx)
}

// The router's response headers, in canonical form: setting them with
// setHeader skips Header.Set's canonicalisation, which allocates for each
// of these names on every request.
const (
	hdrModel    = "X-Llm-Model"
	hdrProvider = "X-Llm-Provider"
	hdrRoute    = "X-Llm-Route"
	hdrAttempts = "X-Llm-Attempts"
	hdrCache    = "X-Llm-Cache"
	hdrBudget   = "X-Llm-Budget"

	hdrCacheSimilarity = "X-Llm-Cache-Similarity"

	hdrQueryType = "X-Query-Type"
)

// setHeader sets a response header whose name is already canonical. The
// value's one-element slice is cut from the exchange, so the router's
// headers cost no allocation each; the cap of 1 makes an Add copy it.
func (ex *exchange) setHeader(canonicalName, value string) {
	h := ex.w.Header()
	if ex.nHdr == len(ex.hdrVals) {
		h[canonicalName] = []string{value}
		return
	}
	i := ex.nHdr
	ex.hdrVals[i] = value
	h[canonicalName] = ex.hdrVals[i : i+1 : i+1]
	ex.nHdr++
}

// headerValue is Header.Get for a name that is already canonical (the
// server has canonicalised the request's), without Get's canonicalisation.
func headerValue(h http.Header, canonicalName string) string {
	if v := h[canonicalName]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// clientResponseHeaders are the provider response headers an OpenAI
// client reads (besides X-Ratelimit-*), and a stream's Cache-Control (no
// cache between the client and the gateway): the only ones relayed unless the
// config passes more. The rest say things about the provider's account
// and infrastructure (Openai-Organization, Set-Cookie, Alt-Svc, Server,
// Via, ...) that are none of the client's business.
var clientResponseHeaders = []string{
	"Content-Type", "Cache-Control", "X-Request-Id", "Openai-Processing-Ms", "Openai-Version",
	"Retry-After", "Retry-After-Ms", "X-Should-Retry",
}

// relayedHeaders is the set of provider headers relayed: the client
// headers and those the config passes, in canonical form.
func relayedHeaders(pass []string) map[string]bool {
	set := make(map[string]bool, len(clientResponseHeaders)+len(pass))
	for _, f := range clientResponseHeaders {
		set[f] = true
	}
	for _, f := range pass {
		set[http.CanonicalHeaderKey(f)] = true
	}
	for _, f := range hopHeaders {
		delete(set, f) // never end-to-end, whatever the config says
	}
	delete(set, "Content-Length")
	return set
}

// commitHeaders writes the response headers of the attempt that answers:
// the provider's headers a client uses (scrubbed of provider keys) and the
// router's own. Those the provider's Connection header names are
// hop-by-hop, for the router alone, whatever their names (RFC 9110, 7.6.1).
func (ex *exchange) commitHeaders(d *deployment, upstream http.Header) {
	h := ex.w.Header()
	pass := ex.router.passHeaders
	var hop map[string]bool // a set, not a search per header: linear in what the provider sent
	if conn := upstream["Connection"]; len(conn) > 0 {
		hop = make(map[string]bool)
		for _, v := range conn {
			for f := range strings.SplitSeq(v, ",") {
				hop[http.CanonicalHeaderKey(strings.TrimSpace(f))] = true
			}
		}
	}
	for f, v := range upstream {
		if (pass[f] || strings.HasPrefix(f, "X-Ratelimit-")) && !hop[f] {
			h[f] = v
		}
	}
	ex.router.scrub.header(h)
	ex.routerHeaders(d.name, d.provider.name)
}

// routerHeaders sets the router's own response headers, and what the
// placeholders report of them: the model and provider that answered ("" if
// none did), the route, and the attempts made.
func (ex *exchange) routerHeaders(model, provider string) {
	if model != "" {
		ex.setHeader(hdrModel, model)
		ex.setHeader(hdrProvider, provider)
		ex.ph.model, ex.ph.provider = model, provider
	}
	if ex.route != "" {
		ex.setHeader(hdrRoute, ex.route)
	}
	ex.setHeader(hdrAttempts, strconv.Itoa(ex.attempts))
	ex.ph.attempted = true
}

// namedKinds name the kinds of openai.Request.Named in the client's 404.
var namedKinds = map[string]string{"file": "File", "vector_store": "Vector store", "container": "Container"}

// unavailable answers 503 with what became of every candidate and when to
// come back: the end of the first cooldown among them.
func (ex *exchange) unavailable(p plan) {
	if ex.storedMissing > 0 && ex.storedMissing == len(ex.failures) {
		// every candidate was asked, and none has the conversation (or
		// stored item): the client's error, as the provider's 404 says,
		// not an outage that an SDK retries (503 with Retry-After) on
		// every deployment again
		ex.routerHeaders("", "")
		msg := fmt.Sprintf("Conversation with id '%s' not found at any deployment of this gateway's route.", truncate(ex.body.Conversation, maxEchoedName))
		code := codeNoConversation
		switch ex.missingParam {
		case "input":
			msg, code = "An input item given by its id was not found at any deployment of this gateway's route.", codeNoItem
		case "prompt":
			msg, code = fmt.Sprintf("Prompt with id '%s' not found at any deployment of this gateway's route.", truncate(ex.body.StoredPrompt, maxEchoedName)), codeNoPrompt
		case "previous_response_id":
			msg, code = fmt.Sprintf("Previous response with id '%s' not found at any deployment of this gateway's route.", truncate(ex.missingID, maxEchoedName)), codeNoResponse
		}
		if what, ok := namedKinds[ex.missingKind]; ok {
			msg = fmt.Sprintf("%s with id '%s' not found at any deployment of this gateway's route.", what, truncate(ex.missingID, maxEchoedName))
			code = ex.missingKind + "_not_found"
		}
		ex.fail(invalidRequest(http.StatusNotFound, code, ex.missingParam, msg))
		return
	}
	if ex.overLimit > 0 && ex.overLimit == len(ex.failures) {
		// every candidate was asked, and the request is over the whole
		// limit of each: the client's to make smaller, as the provider
		// says, not a pause to wait out (no Retry-After, and
		// X-Should-Retry: false so that the SDKs do not send it again)
		ex.routerHeaders("", "")
		msg := fmt.Sprintf("Request too large for the rate limit of every deployment of this gateway's route (Requested %d tokens). The input or output tokens must be reduced in order to run successfully.", ex.overAsked)
		ex.fail(&routerError{status: http.StatusTooManyRequests, typ: typeTokens, code: codeRateLimited, msg: msg, final: true})
		return
	}
	t := now()
	var first time.Time
	for _, g := range p {
		for _, d := range g {
			if end := d.state.viewAt(t).cooldownUntil; !end.IsZero() && (first.IsZero() || end.Before(first)) {
				first = end
			}
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
	ex.routerHeaders("", "")
	ex.fail(&routerError{status: http.StatusServiceUnavailable, typ: typeServerError, code: codeAllUnavailable,
		msg: msg, retryAfter: retry})
	metrics.unavailable.WithLabelValues(ex.route).Inc()
}

// observeAttempt is the one place an attempt's outcome is known: it
// updates the deployment's health and statistics, once (observed). It
// writes nothing of the exchange's: a hedge's attempts call it as each
// ends, on their own goroutines.
func (ex *exchange) observeAttempt(d *deployment, res *attemptResult) {
	if res.observed {
		return
	}
	res.observed = true
	r := ex.router
	t := now()
	d.metrics.attempts[res.outcome.index()].Inc()
	d.state.stats.recordAttempt(res.outcome)
	// the average first byte, only for a config that reads it (a shared
	// atomic written by every request otherwise)
	switch f := r.Failover; {
	case f.Balance != balanceLatency && !f.HedgeAuto:
	case res.outcome == outcomeSuccess && res.firstByte > 0:
		d.state.recordFirstByte(ex.body.Stream, res.firstByte)
	case res.outcome == outcomeTimeout:
		d.state.recordFirstByte(ex.body.Stream, t.Sub(res.started)) // at least that slow
	case res.outcome == outcomeHedgeLost && res.firstByte > 0:
		d.state.recordFirstByte(ex.body.Stream, res.firstByte) // beaten at the commit
	case res.outcome == outcomeHedgeLost:
		// no first byte when the other won: at least that slow, which
		// says something when slower than its average (a hedge canceled
		// soon after it started is no sign of speed)
		if took, avg := t.Sub(res.started), d.state.firstByteAvg(ex.body.Stream); avg > 0 && took.Seconds() > avg {
			d.state.recordFirstByte(ex.body.Stream, took)
		}
	}
	var ev healthEvent
	var cooldown time.Duration
	switch res.outcome {
	case outcomeCanceled, outcomeClientError, outcomeHedgeLost, outcomeNotHere:
		return // the client's doing, the other attempt's, or the request's: not the deployment's fault
	case outcomeSuccess:
		ev = eventSuccess
	case outcomeRateLimited:
		ev = eventRateLimited
		cooldown = r.Failover.cooldownFor(res.retryAfter)
	default:
		ev = eventTransport // also a committed stream that broke
		if res.status != 0 && !res.broken {
			ev = eventErrorStatus
		}
	}
	d.state.observeFrom(ev, res.started, res.changes, t, d.disableBelow, cooldown, res.detail, r.logger)
	if ev != eventSuccess {
		if ce := r.logger.Check(zap.DebugLevel, "upstream attempt failed"); ce != nil {
			ce.Write(zap.String("model", d.name), zap.String("provider", d.provider.name),
				zap.String("outcome", string(res.outcome)), zap.String("detail", res.detail))
		}
	}
}

// cooldownFor is the cooldown after a 429 whose Retry-After asked for
// retryAfter (0: none, or unreadable): max_cooldown caps what the provider
// asks for, not the operator's own cooldown.
func (f *Failover) cooldownFor(retryAfter time.Duration) time.Duration {
	if d := min(retryAfter, time.Duration(f.MaxCooldown)); d > 0 {
		return d
	}
	return time.Duration(f.Cooldown)
}

// holdBudgets makes every budget of the request that covers d hold its
// reservation for copies attempts in flight (budgetCharge.hold, whole for
// a hedge): a failover after a charged attempt, or a hedge, spends again. It returns
// the budget that has no room for it, nil when all do.
func (ex *exchange) holdBudgets(d *deployment, copies int, whole bool) *budget {
	if len(ex.charges) == 0 {
		return nil
	}
	ex.usageMu.Lock()
	defer ex.usageMu.Unlock()
	t := now()
	for i := range ex.charges {
		if c := &ex.charges[i]; c.b.covers[d] && !c.hold(copies, t, whole) {
			return c.b
		}
	}
	return nil
}

// observeUsage is the one place an answer's token usage is known: it is
// spent (spend) and reported by the placeholders; it returns the answer's
// cost, in the deployment's currency.
func (ex *exchange) observeUsage(d *deployment, u usage) float64 {
	u = d.billed(u)
	cost := ex.spend(d, u)
	ex.usageMu.Lock()
	ex.ph.usage, ex.ph.costKnown = u, true
	ex.usageMu.Unlock()
	return cost
}

// spend counts what an attempt cost, answer or not: metrics, statistics,
// the client's totals and the request's budgets; it returns the cost.
func (ex *exchange) spend(d *deployment, u usage) float64 {
	u = d.billed(u)
	ex.usageMu.Lock()
	defer ex.usageMu.Unlock()
	cost := d.price.cost(u) * d.currency.Rate
	ex.spent += cost
	d.state.stats.recordUsage(u, cost, d.currency.Code)
	sm := d.metrics.forClient(ex.client)
	sm.inputTokens.Add(float64(u.Input))
	sm.outputToks.Add(float64(u.Output))
	sm.cachedToks.Add(float64(u.CachedInput))
	sm.cost.Add(cost)
	if ex.client != "" {
		recordClient(ex.client, u, cost, d.currency.Code)
	}
	chargeBudgets(ex.charges, d, cost, now())
	if u.Estimated {
		if !u.InputReported {
			d.metrics.estimatedIn.Add(float64(u.Input))
		}
		d.metrics.estimatedOut.Add(float64(u.Output))
		ex.router.logger.Info("answer without usage; tokens estimated from its text",
			zap.String("model", d.name), zap.String("provider", d.provider.name),
			zap.Int64("input_tokens", u.Input), zap.Int64("output_tokens", u.Output), zap.Bool("estimated", true))
	}
	return cost
}

// estimate is the usage of an answer whose provider reported none: the
// request's input as estimated from its text, and outputBytes of text (in
// UTF-8: openai.StreamTextBytes) at CharsPerToken bytes a token; flagged
// as estimated.
func (ex *exchange) estimate(outputBytes int64) usage {
	return usage{
		Input:     ex.inputTokens(),
		Output:    (outputBytes + openai.CharsPerToken - 1) / openai.CharsPerToken,
		Estimated: true,
	}
}

// billed is usage u as d's provider bills it: an embedding's tokens are
// all input, whatever the report calls them (a provider that reports only
// total_tokens, as Voyage AI does, has them read as output, which an
// embedding model's price may put at nothing).
func (d *deployment) billed(u usage) usage {
	if d.kind == kindEmbedding && u.Output != 0 {
		u.Input, u.Output = addTokens(u.Input, u.Output), 0
	}
	return u
}

// generatedBytes is the text the provider generated for an answer that
// returned out bytes of it: a completions request's best_of candidates
// are all generated, and billed, for the n (default 1) returned.
func (ex *exchange) generatedBytes(out int64) int64 {
	n := max(ex.body.N, 1)
	if ex.ep != completionsEndpoint || ex.body.BestOf <= n {
		return out
	}
	return mulSat(out, ex.body.BestOf) / n
}

// finish counts the client request, once, however it ended: one
// requests_total for every request, labelled with the model that answered
// (or, for the router's own errors, the model the request named, when it is
// a known one).
func (ex *exchange) finish() {
	if ex.counted {
		return
	}
	ex.counted = true
	if ex.stopWatch != nil {
		ex.stopWatch()
	}
	releaseCharges(ex.charges) // what no answer's cost replaced
	model, provider := ex.model, ""
	if d := ex.answered; d != nil {
		model, provider = d.name, d.provider.name
		took := now().Sub(ex.start)
		d.metrics.duration.Observe(took.Seconds())
		d.state.stats.recordRequest(ex.ep, took)
		if ex.client != "" && !ex.internal {
			recordClientAnswer(ex.client)
		}
	}
	requestCounters.with(requestLabels{ex.route, model, provider, ex.status, ex.ep}).Inc()
	if c := &ex.cache; c.result != "" {
		cacheCounters.with(cacheLabels{ex.route, c.result}).Inc()
		if c.saved > 0 {
			savedCounters.with(c.savedIn).Add(c.saved)
		}
		ex.router.cache.store.count(c.result, c.saved, c.savedIn)
		if c.embedCost > 0 {
			ex.router.cache.store.countEmbedding(c.embedCost, c.embedIn)
		}
	}
	if ex.internal {
		return // the client's request reports itself
	}
	ex.traceRequest()
	if hook := requestDoneHook.Load(); hook != nil {
		(*hook)()
	}
}

// placeholderValues are what the exchange has learnt that the
// {http.llm_router.*} placeholders report; a placeholder is unknown (as if
// never set) until its value is.
type placeholderValues struct {
	reason          string // route_reason
	routed          bool   // the route is resolved (route)
	budget          string
	model, provider string // of the answer
	attempted       bool   // attempts is final
	usage           usage  // input_tokens, output_tokens
	costKnown       bool   // usage is known (the request's cost: requestCost)
}

// placeholder resolves the {http.llm_router.*} placeholders from the
// exchange when a log or a later handler asks for one, rather than setting
// each on the replacer as the request goes: most requests are never asked,
// and a Set costs a lock, a map insert and an allocation.
func (ex *exchange) placeholder(key string) (any, bool) {
	name, ok := strings.CutPrefix(key, "http.llm_router.")
	if !ok {
		return nil, false
	}
	ph := &ex.ph
	switch name {
	case "route":
		return ex.route, ph.routed
	case "route_reason":
		return ph.reason, ph.reason != ""
	case "budget":
		return ph.budget, ph.budget != ""
	case "cache":
		return cacheShown(ex.cache.result), ex.cache.result != ""
	case "model":
		return ph.model, ph.model != ""
	case "provider":
		return ph.provider, ph.provider != ""
	case "attempts":
		return ex.attempts, ph.attempted
	case "input_tokens":
		return ph.usage.Input, ph.costKnown
	case "output_tokens":
		return ph.usage.Output, ph.costKnown
	case "cost":
		cost, ok := ex.requestCost()
		if !ok {
			return nil, false
		}
		return strconv.FormatFloat(cost, 'f', -1, 64), true
	}
	return nil, false
}

// requestCost is what the request cost, as its budgets and cost_total
// count it: every attempt's (spend; one charged before a failover, a
// hedge's loser) and its semantic lookup's embedding, not the answer's
// alone, so that a log that bills from {http.llm_router.cost} bills what
// the budgets do. It is known once the answer's usage is, or, for a
// request that ended without one (no answer, a cache hit), once it ended
// having spent anything.
func (ex *exchange) requestCost() (float64, bool) {
	ex.usageMu.Lock()
	defer ex.usageMu.Unlock()
	cost := ex.spent + ex.cache.embedCost
	return cost, ex.ph.costKnown || (ex.counted && cost > 0)
}

// replaceAll is repl.ReplaceAll(s, ""), with a fast path for what a budget
// key, a client label or a cache scope usually is: one placeholder and
// nothing else, looked up without parsing the string or building another.
func replaceAll(repl *caddy.Replacer, s string) string {
	if len(s) > 2 && s[0] == '{' && s[len(s)-1] == '}' && strings.IndexAny(s[1:len(s)-1], "{}\\") < 0 {
		v, ok := repl.Get(s[1 : len(s)-1])
		if !ok {
			return ""
		}
		if str, ok := v.(string); ok {
			return str
		}
	}
	return repl.ReplaceAll(s, "")
}

// requestDoneHook, when set (tests only), is called when a request has
// been counted.
var requestDoneHook atomic.Pointer[func()]
