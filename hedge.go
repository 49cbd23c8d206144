package llmrouter

import (
	"context"
	"errors"
	"runtime/debug"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
)

// Hedged first byte (`failover { hedge_after <duration>|auto }`): when an
// attempt has produced no first byte (a stream's first event, a JSON
// answer) after the delay, the next candidate starts beside it, on a
// goroutine of its own; the first valid first byte wins and the other
// attempt is canceled at once. Each attempt claims the hedgeGate at its
// commit: only the winner writes to the client. The loser's outcome and
// cost are recorded by the request's goroutine once both have ended, so
// that the exchange's records are never written by two goroutines at once;
// each attempt's health (observeAttempt, the deployment's shared state
// only) is recorded as it ends.

// Bounds of `hedge_after auto`: twice the deployment's decaying average
// time to first byte (a cheap stand-in for a high percentile), within
// these.
const (
	minAutoHedge = 100 * time.Millisecond
	maxAutoHedge = 5 * time.Second
)

// errHedgeLost cancels the attempt that lost a hedge.
var errHedgeLost = errors.New("lost the hedge")

// hedgeGate lets the first of two attempts to reach its commit write to
// the client, and cancels the other.
type hedgeGate struct {
	mu      sync.Mutex
	winner  int // 1 + the winning attempt's index; 0 while none has won
	cancels [2]context.CancelCauseFunc
	started bool // the hedge was started
	closed  bool // the first attempt ended: no hedge starts any more
	// firstDone is closed when the first attempt has ended; hedgeDone is
	// the hedge's context's end: the first attempt won, or the request's
	// context ended (claimError)
	firstDone chan struct{}
	hedgeDone <-chan struct{}
}

// claim reports whether attempt i may commit: the first to ask wins, and
// the other attempt is canceled. A nil gate (no hedge) always grants.
func (g *hedgeGate) claim(i int) bool {
	if g == nil {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.winner == 0 {
		g.winner = i + 1
		if other := g.cancels[1-i]; other != nil {
			other(errHedgeLost)
		}
	}
	return g.winner == i+1
}

// claimError is claim for an attempt whose answer is an error status,
// relayed as the client's own, or a stream whose first event is an error
// blaming the request (openai.RequestsFault), as such a status is. The hedge's (i 1) waits for the first
// attempt to end, and claims only if that one did not answer: without the
// hedge its deployment would only have been asked once the first failed,
// and its quick 400 (a smaller context window, a parameter it lacks) is
// no reason to drop the first attempt, which may well answer. It waits
// past the hedge's own attempt timeout: its answer is in hand.
func (g *hedgeGate) claimError(i int) bool {
	if g != nil && i == 1 {
		select {
		case <-g.firstDone:
		case <-g.hedgeDone:
		}
	}
	return g.claim(i)
}

// hedgeDelay is how long to wait for d's first byte before hedging; 0: do
// not hedge this request (off, or no more hedges allowed).
func (ex *exchange) hedgeDelay(d *deployment, hedges int) time.Duration {
	f := ex.router.Failover
	if f.HedgeAfter == 0 && !f.HedgeAuto || hedges >= f.maxHedges() {
		return 0
	}
	// a request the cache serves or that others follow (its flight) is
	// not hedged; one whose budget cannot hold a second reservation when
	// the hedge is due is not either (holdBudgets)
	if ex.cache.flight != nil {
		return 0
	}
	// a Responses API continuation only its home can answer (homeFirst):
	// another deployment's quick 404 for the response it lacks is the
	// client's error, relayed, and would win over the home's answer; nor
	// a request in a conversation, to which the provider appends each
	// generation it completes (a JSON loser's too): the turn would be
	// added twice
	if ex.continued() != "" {
		return 0
	}
	// nor one naming stored input items (item_reference), a stored
	// prompt or files (openai.Request.Named), which live at one provider
	// account too: another's 404 would only be a second request for
	// nothing (and namesStored counts them on the request's goroutine)
	if len(ex.body.StoredItems) > 0 || ex.body.StoredPrompt != "" || len(ex.body.Named) > 0 {
		return 0
	}
	// nor one with a feature the provider runs and bills apart from tokens
	// (allow_unpriced): the canceled attempt's hosted tool calls are
	// neither undone (a remote MCP tool's action) nor counted
	if len(ex.body.Unpriced) > 0 {
		return 0
	}
	if !f.HedgeAuto {
		return time.Duration(f.HedgeAfter)
	}
	avg := d.state.firstByteAvg(ex.body.Stream)
	if avg == 0 {
		return 0 // nothing measured yet: no basis for a delay
	}
	return min(max(time.Duration(2*avg*float64(time.Second)), minAutoHedge), maxAutoHedge)
}

// maxHedges is the number of hedges a request may start (default one).
func (f *Failover) maxHedges() int {
	if f.MaxHedges == nil {
		return 1
	}
	return *f.MaxHedges
}

// hedgedResult is one attempt of a hedge, as its goroutine ended it.
type hedgedResult struct {
	d    *deployment
	res  attemptResult
	span trace.Span // its trace span, if traced
}

// hedgedAttempt tries d, and after delay without a first byte also h,
// unless that is at tryEnd or later (try_duration: no new attempt starts
// then); the first to commit answers. It returns the attempts made, d's
// first whichever ended first, and whether h was started. d's attempt runs on the
// request's goroutine, as any attempt: a hedge that never starts costs a
// timer.
func (ex *exchange) hedgedAttempt(d, h *deployment, delay time.Duration, tryEnd time.Time) (done []hedgedResult, hedged bool) {
	gate := &hedgeGate{firstDone: make(chan struct{})}
	ex.gate = gate
	defer func() { ex.gate = nil }()
	ctx, cancel := context.WithCancelCause(ex.ctx)
	gate.cancels[0] = cancel
	hedge := make(chan hedgedResult, 1)
	timer := time.AfterFunc(delay, func() {
		r := hedgedResult{d: h}
		var hcancel context.CancelCauseFunc // set once the hedge started
		// first, before anything that may panic: a panic past this
		// goroutine ends the process; a hedge started that panicked is a
		// failed attempt, whose result hedgedAttempt waits for
		defer func() {
			v := recover()
			if v != nil {
				ex.router.logger.Error("hedged attempt panicked", zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
			}
			if hcancel == nil {
				return
			}
			hcancel(nil)
			if v != nil {
				r.res = attemptResult{outcome: outcomeServerError, detail: "internal error", started: r.res.started, changes: r.res.changes}
			}
			hedge <- r
		}()
		var hctx context.Context
		hctx, hcancel = ex.startHedge(gate, h, tryEnd)
		if hcancel == nil {
			return
		}
		r.res.started, r.res.changes = now(), h.state.health.changes.Load()
		r.span = ex.traceAttempt(h, false)
		r.res = ex.attemptIn(hctx, h, 1)
		// its health now, not once the other attempt ended: that one may
		// stream for minutes, while h asked for a pause (a 429) or failed
		ex.observeAttempt(h, &r.res)
	})
	first := hedgedResult{d: d, span: ex.traceAttempt(d, false)}
	first.res = ex.attemptIn(ctx, d, 0)
	close(gate.firstDone)
	cancel(nil)
	ex.observeAttempt(d, &first.res) // as h's: now, the hedge may go on
	timer.Stop()
	gate.mu.Lock()
	gate.closed = true // no hedge starts after this
	started := gate.started
	gate.mu.Unlock()
	if !started {
		return []hedgedResult{first}, false
	}
	// d ended (answered, lost or failed) with the hedge under way: the
	// hedge's result comes when it ends, at once if d won
	return []hedgedResult{first, <-hedge}, true
}

// startHedge starts the hedge to h, under the gate's lock (released
// whatever happens), and returns its context; a nil cancel when it does
// not start.
func (ex *exchange) startHedge(gate *hedgeGate, h *deployment, tryEnd time.Time) (context.Context, context.CancelCauseFunc) {
	gate.mu.Lock()
	defer gate.mu.Unlock()
	t := now()
	// h's health now, not when the candidates were ordered: a hedge is
	// optional, and not sent to a deployment that went into a cooldown
	// (its provider asked for a pause) or was disabled meanwhile
	if gate.winner != 0 || gate.closed || !t.Before(tryEnd) || h.state.viewAt(t).state != stateUp ||
		ex.clientLeft() || ex.holdBudgets(h, 2, true) != nil {
		return nil, nil // d answered, or ended, in time; try_duration is spent; h is not up; nobody may read; or the budget cannot pay twice
	}
	// the hedge counts from now: under the gate's lock, so that an
	// attempt that wins after this sees it (X-LLM-Attempts)
	ex.attempts++
	hctx, hcancel := context.WithCancelCause(ex.ctx)
	gate.cancels[1], gate.hedgeDone, gate.started = hcancel, hctx.Done(), true
	return hctx, hcancel
}

// settleHedge records a hedge to h once both its attempts have ended:
// whether h won, and the cost of the attempt that lost, which the provider
// bills all the same: its usage when it had a complete answer, else, once
// the provider had the whole request, what any attempt given up then is
// charged. One never written whole, or answered with an error status,
// generated nothing and is charged nothing.
func (ex *exchange) settleHedge(h *deployment, results []hedgedResult) {
	won, answered := false, false
	for _, r := range results {
		if r.res.committed {
			answered = true
			won = won || r.d == h
		}
		if r.res.outcome != outcomeHedgeLost {
			continue
		}
		// its usage when it had its answer; else, once sent, what any
		// attempt given up mid-generation is (a JSON generation runs on
		// without a reader)
		var u usage
		switch {
		case r.res.usage != nil:
			u = *r.res.usage
		case r.res.billable():
			u = ex.abandonedUsage(r.d)
		default:
			continue // never reached generation (unsent), or an error answer: nothing to bill
		}
		cost := ex.spend(r.d, u)
		r.d.metrics.hedgeLostCost.Add(cost)
		r.d.state.stats.recordHedgeLost(cost, r.d.currency.Code)
	}
	h.state.stats.recordHedge(won)
	// who answered: the hedge, the first attempt, or neither
	result := hedgeByNeither
	switch {
	case won:
		result = hedgeByHedge
	case answered:
		result = hedgeByFirst
	}
	h.metrics.hedges[result].Inc()
}
