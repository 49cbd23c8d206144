package llmrouter

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/llmrouter/caddy-llm-router/internal/openai"
)

// This file is the response cache as a stage of a request's path. The
// exchange asks it once, before any model (lookupCache: serve a stored
// answer, follow an identical request in flight, or go on as a miss); on
// the way, the attempts hand it what answered (cacheTicket.keepAnswer for
// a JSON answer, the flight that a stream's relay publishes to, and
// keepStream at the stream's end). cache.go holds the store and the keys;
// cache_flight.go the requests in flight.

// cacheTicket is one request's business with the response cache; its zero
// value is a request the cache does not apply to.
type cacheTicket struct {
	rc     *responseCache
	key    answerKey
	api    openai.API  // the answers' wire format
	result string      // hit, miss, stale or bypass; "" when the cache does not apply
	store  bool        // a complete answer is stored under key
	stale  *cacheEntry // an expired answer to fall back on
	// flight receives the answer as it arrives: the flight this request
	// leads, or a private one that collects a stream; nil when the answer
	// is not kept
	flight      *cacheFlight
	stopLeading func() bool // undoes the watch on the leader's client (leaders over HTTP/2 and 3)
	saved       float64     // what a hit saved, in savedIn
	savedIn     string
	// the semantic lookup's (cache_semantic.go): the question, whose
	// vector is stored with the answer, and what embedding it cost
	question  *semanticQuestion
	embedCost float64
	embedIn   string
}

// lookupCache looks the request up in the response cache and answers it
// from there when it can (true): from a fresh stored answer, or by
// following an identical request already on its way to a model. Otherwise
// it sets up the request's ticket: the key to store its answer under, a
// stale answer to fall back on, the flight it leads. p is the request's
// plan, which its budgets are asked about before a semantic lookup.
func (ex *exchange) lookupCache(p plan) bool {
	rc := ex.router.cache
	if ex.ep != chatEndpoint && ex.ep != embeddingsEndpoint {
		return false
	}
	if rc.match != nil && !rc.match[ex.route] && !rc.match[ex.model] {
		return false
	}
	t := &ex.cache
	t.rc, t.api = rc, ex.ep.api()
	lookup, store := cacheControl(ex.req.Header)
	if ex.body.N > 1 || !lookup {
		ex.setCacheResult(cacheBypass)
		if ex.body.N > 1 || !store {
			return false
		}
	}
	// each value beside its name (a header's, a placeholder's): handlers
	// sharing a store with scopes of different placeholders keep their
	// identities apart (tenant "acme" is not organisation "acme")
	var scope [2*len(credentialHeaders) + 2 + 4]string
	values := scope[:0]
	if rc.own {
		host, path := requestBase(ex.req)
		values = append(values, host, path)
	}
	if rc.byClient {
		for _, h := range credentialHeaders {
			values = append(values, h, headerValue(ex.req.Header, h))
		}
	}
	for _, p := range rc.scope {
		v := replaceAll(ex.repl, p)
		if v == "" {
			// no identity (an unmapped client, a misspelt placeholder):
			// sharing with every other such request would cross
			// tenants, so this one is not cached at all
			rc.warnEmptyScope(ex.router.logger, p)
			ex.setCacheResult(cacheBypass)
			return false
		}
		values = append(values, p, v)
	}
	t.key = cacheKey(ex.ep, ex.ns, &ex.body, ex.req.Header, rc.keyHeaders, values...)
	t.store = store && (!ex.body.Stream || rc.streams || ex.ep == embeddingsEndpoint)
	if !lookup {
		// no-cache: ask a model, then refresh the entry
		if t.store && ex.body.Stream {
			t.flight = rc.store.privateFlight(t.key)
		}
		return false
	}
	ex.setCacheResult(cacheMiss)
	at := ex.start // a few microseconds ago: the same for a TTL and an Age in seconds
	e, fresh := rc.store.lookup(t.key, at, rc.ttl, rc.stale)
	if fresh && ex.serveCached(e, cacheHit, at) {
		return true
	}
	ex.outliveHalfClose() // what follows may wait for an answer
	t.stale = e
	if !t.store {
		return false // nothing to share with followers
	}
	if rc.semantic != nil && !rc.store.flying(t.key) && !ex.budgetsRefuse(p) && ex.lookupSemantic(values) {
		return true
	}
	if hook := cacheJoinHook.Load(); hook != nil {
		(*hook)()
	}
	f, leader := rc.store.join(t.key)
	if leader {
		// an identical request may have stored its answer and landed
		// between the lookup and the join (it stores, then leaves the
		// flights): its answer is served, to this request and to any
		// that followed it meanwhile
		if e, fresh := rc.store.lookup(t.key, at, rc.ttl, rc.stale); fresh {
			f.land(e, e.cost, e.currency)
			return ex.serveCached(e, cacheHit, at)
		}
	} else {
		if ex.follow(f) {
			return true
		}
		// the leader had no answer to share: this request asks a model
		// itself, with a try budget of its own, and keeps what it gets
		if ex.body.Stream {
			t.flight = rc.store.privateFlight(t.key)
		}
		return false
	}
	t.flight = f
	if ex.detached() && !ex.body.Stream {
		// an HTTP/1 request's upstream work is detached from its client
		// already (outliveHalfClose), and a JSON answer has no start
		// after which its client's close means leaving
		return false
	}
	// the followers wait for this request's answer, a stream's events as
	// they arrive or a JSON answer whole: the leader gets it for them even
	// if its own client goes away (over HTTP/2 and 3, leaving cancels the
	// client's context), until nobody waits
	ctx, cancel := context.WithCancel(context.WithoutCancel(ex.req.Context()))
	f.cancel = cancel
	leaderLeft := func() { f.leaderLeft() }
	if ex.detached() {
		// an HTTP/1 leader's client has left when it closes after the
		// answer started, or a write to it fails (outliveHalfClose)
		ex.leave = leaderLeft
	} else {
		t.stopLeading = context.AfterFunc(ex.req.Context(), leaderLeft)
	}
	ex.ctx = ctx
	return false
}

// requestBase is where a request reached its handler: its host and its
// path as the client sent it (before any rewrite, handle_path's prefix
// strip included). A handler's own store is found again at a reload by
// its server and config (ownStoreKey); the base in every key of an own
// store keeps, besides, the answers of one tenant's host or path from any
// other.
func requestBase(r *http.Request) (host, path string) {
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && orig.URL != nil {
		return orig.Host, orig.URL.Path
	}
	return r.Host, r.URL.Path
}

// cacheJoinHook, when set (tests only), is called between a miss's lookup
// and its join of the flights.
var cacheJoinHook atomic.Pointer[func()]

// cacheKeepHook, when set (tests only), is called as a stream that ended
// is kept, before it is assembled and stored.
var cacheKeepHook atomic.Pointer[func()]

// setCacheResult says what the cache did, in the response header (and so
// in the placeholder); a hit or stale answer sets it again when served.
func (ex *exchange) setCacheResult(result string) {
	ex.cache.result = result
	ex.setHeader(hdrCache, cacheShown(result))
}

// cacheShown is what X-LLM-Cache and {http.llm_router.cache} say of a
// cache result (the metric's label).
func cacheShown(result string) string {
	switch result {
	case cacheSemanticHit:
		return "semantic-hit"
	case cacheSemanticBlocked:
		return cacheMiss // to the client, a miss as any other
	}
	return result
}

// follow answers the request from flight f, which it has joined as a
// follower (true), or reports that f ended with nothing this request can
// use before anything was sent (false): it then asks a model itself. A
// stream follower relays the leader's events as they arrive, with its own
// headers and the usage chunk only if it asked; a JSON follower gets the
// answer once complete.
func (ex *exchange) follow(f *cacheFlight) bool {
	defer f.leave()
	var relay *streamRelay
	var rc *http.ResponseController
	var seen uint64
	sent := 0 // events relayed
	for {
		v, ok := f.await(ex.ctx, seen)
		if !ok {
			if relay == nil {
				ex.clientGone()
			} else {
				// never a clean end: a stream cut short must not read as
				// a complete answer; its status is the 200 the client
				// had, as a leader's that leaves mid-stream is
				ex.abort = true
			}
			return true
		}
		seen = v.version
		if ex.body.Stream && len(v.ends) > sent {
			if relay == nil {
				ex.routerHeaders(v.model, v.provider)
				ex.setCacheResult(cacheHit)
				ex.setHeader("Age", "0")
				ex.startStream()
				// no answerStarted: the leader's events are already here,
				// so the headers go out before a half-closing client's
				// close is read, which the watch would take for leaving;
				// a client that left is told by a failed write instead
				ex.status, ex.model = http.StatusOK, v.model
				relay = &streamRelay{strip: ex.body.StripUsage()}
				rc = http.NewResponseController(ex.w)
			}
			start := 0
			if sent > 0 {
				start = v.ends[sent-1]
			}
			for _, end := range v.ends[sent:] {
				if relay.forward(ex.w, v.events[start:end]) != nil {
					relay.dropOut()
					return true // the client went away
				}
				start = end
			}
			if relay.emit(ex.w) != nil {
				return true // the client went away
			}
			sent = len(v.ends)
			// a landed flight's last events leave with the end of the
			// response, in one write
			if v.state != flightLanded && rc.Flush() != nil {
				return true // the client went away
			}
		}
		switch v.state {
		case flightLanded:
			if relay != nil {
				ex.cache.saved, ex.cache.savedIn = v.cost, v.currency
				return true
			}
			return v.entry != nil && ex.serveCached(v.entry, cacheHit, now())
		case flightFailed:
			return false
		case flightBroken:
			if relay == nil {
				return false
			}
			ex.abort = true
			_ = writeStreamError(ex.w, &routerError{typ: typeServerError, code: codeStreamBroken,
				msg: "The stream this answer shares broke: " + v.broke})
			_ = rc.Flush()
			return true
		}
	}
}

// keepAnswer keeps a JSON answer of deployment d that cost cost: stored
// and handed to the flight's followers when it is whole
// (openai.Answer.Complete); followers of one that is not ask a model
// themselves.
func (t *cacheTicket) keepAnswer(d *deployment, body []byte, cost float64, whole bool) {
	if !t.store {
		return
	}
	var e *cacheEntry
	if whole { // not one cut off or without choices: served once, never again
		e = &cacheEntry{stored: now(), body: body, model: d.name, provider: d.provider.name, cost: cost, currency: d.currency.Code}
		if t.rc.store.put(t.key, e) {
			t.rememberQuestion()
		}
	}
	if t.flight != nil {
		t.flight.land(e, cost, d.currency.Code)
	}
}

// keepStream keeps a stream that reached its end: assembled into its JSON
// answer (the compact form) and stored, unless the stream has members the
// answer could not carry or the answer is not whole (openai.IsComplete). Its followers have had every
// event already.
func (t *cacheTicket) keepStream(d *deployment, cost float64) {
	if hook := cacheKeepHook.Load(); hook != nil {
		(*hook)()
	}
	f := t.flight
	f.mu.Lock()
	events := f.events
	f.mu.Unlock()
	var e *cacheEntry
	if body, err := openai.ChatStreamToJSON(events); err == nil && openai.IsComplete(t.api, body) {
		e = &cacheEntry{stored: now(), body: body, model: d.name, provider: d.provider.name, cost: cost, currency: d.currency.Code}
		if t.rc.store.put(t.key, e) {
			t.rememberQuestion()
		}
	}
	f.land(e, cost, d.currency.Code)
}

// followed reports whether others follow the flight this request leads.
func (t *cacheTicket) followed() bool {
	f := t.flight
	return f != nil && f.shared && f.hasFollowers()
}

// rememberQuestion stores the vector of the question whose answer was
// just stored, for the semantic lookups of its paraphrases.
func (t *cacheTicket) rememberQuestion() {
	if q := t.question; q != nil {
		sc := t.rc.semantic
		if before, after := sc.store.remember(q, t.key); after != 0 {
			sc.logger.Warn("semantic cache: the embedding model's vectors changed dimensions; the stored questions were dropped",
				zap.String("model", sc.model), zap.Int("dimensions_before", before), zap.Int("dimensions", after))
		}
	}
}

// dontStore says that this request's answer is not the answer to its key
// (a budget moved it to a cheaper route): its followers stop waiting for
// it.
func (t *cacheTicket) dontStore() {
	t.store = false
	if t.flight != nil {
		t.flight.fail("the request it followed went to another route")
	}
}

// staleAt reports whether the ticket has an expired answer to fall back
// on at t: one still within ttl + stale_if_error then, not only when it
// was found (the request may have waited minutes since, for its models or
// for a flight it followed).
func (t *cacheTicket) staleAt(at time.Time) bool {
	return t.stale != nil && at.Sub(t.stale.stored) <= t.rc.ttl+t.rc.stale
}

// end ends what the request left in flight: followers of an answer that
// never came ask a model themselves.
func (t *cacheTicket) end() {
	if t.stopLeading != nil {
		t.stopLeading()
		t.flight.cancel()
		t.stopLeading = nil
	}
	if t.flight != nil {
		t.flight.fail("the request it followed ended without an answer")
		t.flight = nil
	}
}

// serveCached answers the request from a stored answer, at time t: as
// stored, or as a stream replayed from it (false if it cannot be). No
// model is asked: the answer costs nothing.
func (ex *exchange) serveCached(e *cacheEntry, result string, t time.Time) bool {
	var events []byte
	if ex.body.Stream {
		var err error
		if events, err = openai.ChatJSONToStream(e.body); err != nil {
			return false
		}
	}
	ex.routerHeaders(e.model, e.provider)
	ex.setCacheResult(result)
	age := t.Sub(e.stored)
	ex.setHeader("Age", strconv.Itoa(int(max(age, 0)/time.Second)))
	if result == cacheStale {
		ex.w.Header().Set("Warning", fmt.Sprintf(`111 llm_router "all models unavailable; answer cached %s ago"`, age.Round(time.Second)))
	}
	ex.status, ex.model = http.StatusOK, e.model
	ex.cache.saved, ex.cache.savedIn = e.cost, e.currency
	if !ex.body.Stream {
		ex.setHeader("Content-Type", "application/json")
		if len(e.body) > netHTTPHeldBody {
			ex.setHeader("Content-Length", strconv.Itoa(len(e.body)))
		}
		ex.w.WriteHeader(http.StatusOK)
		_, _ = ex.w.Write(e.body)
		return true
	}
	ex.startStream()
	// the same rule as a live stream: the usage chunk only when asked for
	relay := streamRelay{strip: ex.body.StripUsage()}
	reader := openai.NewEventReader(bytes.NewReader(events))
	defer reader.Release()
	for {
		ev, err := reader.Next()
		if err != nil || relay.forward(ex.w, ev) != nil {
			break
		}
	}
	// no flush: the end of the response writes what is buffered with the
	// chunked body's end, in one write
	_ = relay.emit(ex.w)
	return true
}

// startStream sends the headers of a stream the cache answers.
func (ex *exchange) startStream() {
	ex.setHeader("Content-Type", "text/event-stream")
	ex.setHeader("Cache-Control", "no-cache")
	ex.w.WriteHeader(http.StatusOK)
}

// netHTTPHeldBody is how much of a response net/http holds before it sends
// the headers (its bufferBeforeChunkingSize): a body no larger, written
// whole by a handler that then returns, gets its Content-Length from
// net/http. Setting it too would make a hit's ninth header, and a header
// map beyond eight entries grows into a table, twice (the handler's and
// the copy net/http sends): 1.3 µs and six allocations a hit, in isolation.
const netHTTPHeldBody = 2048
