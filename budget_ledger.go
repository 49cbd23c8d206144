package llmrouter

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	lru "github.com/hashicorp/golang-lru/v2"
	"go.uber.org/zap"
)

// budgetLedgers holds each budget's spend by name, so that it survives
// reloads and is shared by the handlers that name the same budget.
var budgetLedgers = caddy.NewUsagePool()

// budgetLedger is a budget's spend: per key and period, this instance's own
// (what storage holds, plus what was added since the last sync) and the
// other instances' (as last read). Keys are bounded: beyond maxBudgetKeys the
// least recently used key is dropped from memory; its unsynced spend is
// written at the next sync, and what its requests in flight reserve is kept
// until they end.
type budgetLedger struct {
	name string

	mu      sync.Mutex
	keys    *lru.Cache[string, *keySpend]
	spilled map[string]*keySpend // dropped from keys, with unsynced spend or reservations (keepSpilled)
	// ended is the unsynced spend of windows that have ended, kept for the
	// next sync to write to those windows' files (syncEnded)
	ended        map[endedWindowKey]float64
	endedDropped int       // ended spend not kept since the last sync: the bound was reached
	users        []*budget // oldest first: whose settings apply
	windows      [periodCount]atomic.Pointer[window]

	// sync: nil storage means local only
	storage  certmagic.Storage
	instance string          // whose files this ledger writes: this process's identity in the storage
	who      *budgetInstance // the identity's hold
	// secret keys the hash of the key values, fixed for the ledger's life
	// (keySecret): a reload that turns budget_sync on must not rename
	// every key, which would give each its budget afresh
	secret   []byte
	secretMu sync.Mutex    // held while secret is read from storage
	interval time.Duration // under mu once the sync loop runs
	wake     chan struct{} // the owner changed: re-read interval
	cancel   context.CancelFunc
	done     chan struct{}
	lastSync atomic.Pointer[syncResult]
	syncing  sync.Mutex   // held by the sync in progress (budgetLedger.sync)
	pruning  sync.Mutex   // held by the pruning in progress (budgetLedger.pruneDue)
	prunedAt string       // the hour window of the last prune (under pruning)
	syncs    atomic.Int64 // successful syncs
	failures atomic.Int64
	actions  [actionCount]atomic.Int64
	logger   *zap.Logger
}

type syncResult struct {
	at  time.Time
	err string
}

// keySpend is one key's spend, per period.
type keySpend struct {
	periods [periodCount]periodSpend
}

type periodSpend struct {
	id     string  // the window it is for; another id is stale
	start  int64   // the window's start (UnixNano): a key's window only moves forward (advance)
	base   float64 // this instance's spend as stored at the last sync
	delta  float64 // added since
	others float64 // the other instances' spend at the last sync
	// reserved is what admitted requests of this instance may still cost
	// (budget.admit); local, never synced. It belongs to no window: a
	// request's cost lands in the window current when it comes, so what
	// requests in flight reserved goes on counting across a turn
	reserved float64
	warned   bool // the warn_at threshold was logged for this period
}

// total is what was spent, fleet-wide as far as known.
func (p *periodSpend) total() float64 { return p.base + p.delta + p.others }

// committed is what was spent or reserved: what admission compares with a
// limit.
func (p *periodSpend) committed() float64 { return p.total() + max(p.reserved, 0) }

// advance makes p hold window w when w begins after the window p holds:
// the spend starts afresh, and what requests in flight reserved stays
// (their costs land in w). A w that does not begin later (a caller that
// read the clock just before a turn another caller already made) leaves p
// as it is: the spend of a newer window is never set back. It returns the
// window p held when it moved on (zero when it did not), whose unsynced
// delta is the ledger's to keep (budgetLedger.advance).
func (p *periodSpend) advance(w window) (left periodSpend) {
	if s := w.start.UnixNano(); p.id != w.id && (p.id == "" || s > p.start) {
		left = *p
		*p = periodSpend{id: w.id, start: s, reserved: p.reserved}
	}
	return left
}

// unreserve gives back amount of what p reserves. What rounding leaves of
// the last reservations given back (their sum taken back one by one) is
// no reservation: a key out of memory is kept while it reserves
// (budgetLedger.keepSpilled), and must not be for a crumb.
func (p *periodSpend) unreserve(amount float64) {
	if r := p.reserved - amount; r > amount*1e-9 {
		p.reserved = r
	} else {
		p.reserved = 0
	}
}

// endedWindowKey names a key's spend in a window that has ended.
type endedWindowKey struct {
	p      period
	window string // the window's id
	key    string
}

// maxEndedSpend bounds the ended windows' unsynced spend kept while
// storage does not take it: one entry per key, period and window.
var maxEndedSpend = 4 * maxBudgetKeys

// advance moves key's spend in period p to window w (periodSpend.advance)
// and keeps the unsynced spend of the window it leaves for the next sync
// (l.mu held): a key that turns to a new hour before a sync would
// otherwise drop from storage's record what it spent in the hour before.
func (l *budgetLedger) advance(key string, p period, ps *periodSpend, w window) *periodSpend {
	if left := ps.advance(w); left.delta != 0 && l.storage != nil {
		l.keepEnded(endedWindowKey{p, left.id, key}, left.delta)
	}
	return ps
}

// keepEnded keeps d of an ended window's spend for the next sync, within
// maxEndedSpend (l.mu held).
func (l *budgetLedger) keepEnded(k endedWindowKey, d float64) {
	if _, ok := l.ended[k]; !ok && len(l.ended) >= maxEndedSpend {
		l.endedDropped++
		return
	}
	if l.ended == nil {
		l.ended = map[endedWindowKey]float64{}
	}
	l.ended[k] += d
}

// acquireLedger returns the shared ledger of b's name (and storage: a
// config that moves the budget to another storage reads its spend from
// there), registering b. A budget its other users count in another
// currency is an error. The ledger is the same whether budget_sync is on
// or off, so that switching it keeps the spend: a config that turns sync on
// over a local ledger starts its sync (its spend so far is written at the
// first one) once it has loaded, when the running config lets go of the
// ledger; one that turns it off leaves the running sync alone until the
// ledger goes.
func acquireLedger(ctx caddy.Context, b *budget, sync time.Duration, instance string, logger *zap.Logger) (*budgetLedger, error) {
	st := ctx.Storage()
	where := fmt.Sprintf("%T", st)
	if s, ok := st.(fmt.Stringer); ok {
		where = s.String()
	}
	b.poolKey = b.name + "\x00" + where
	v, _, err := budgetLedgers.LoadOrNew(b.poolKey, func() (caddy.Destructor, error) {
		l := &budgetLedger{name: b.name, spilled: map[string]*keySpend{}, logger: logger, wake: make(chan struct{}, 1)}
		keys, err := newBudgetKeys(l)
		if err != nil {
			return nil, err
		}
		l.keys = keys
		return l, nil
	})
	if err != nil {
		return nil, err
	}
	l := v.(*budgetLedger)
	b.syncEvery = sync
	b.config = ctx.GetMetricsRegistry()
	l.mu.Lock()
	if len(l.users) > 0 && l.users[0].currency != b.currency {
		// the ledger adds costs as they come: spend in one currency read
		// as another's would let a client spend past the limit in either
		counted := l.users[0].currency
		l.mu.Unlock()
		_, _ = budgetLedgers.Delete(b.poolKey)
		return nil, fmt.Errorf("budget %q is counted in %s by a handler that declares it (in this config or the running one), not %s: a budget keeps one currency; give it another name to count it in %s",
			b.name, counted, b.currency, b.currency)
	}
	running := slices.ContainsFunc(l.users, func(o *budget) bool { return o.config != b.config })
	l.users = append(l.users, b)
	syncing := l.storage != nil
	l.mu.Unlock()
	if sync > 0 && !syncing && running {
		// a running config counts this budget unsynced, and this config
		// may yet fail to load: the sync starts once this config is the
		// one that uses the ledger (releaseLedger), not before, or a
		// failed load would leave the running config syncing, which it
		// never asked for. The identity is had now, so that a config that
		// cannot have one fails to load as before.
		who, err := acquireInstance(st, where, instance, logger)
		if err != nil {
			b.ledger = l // releaseLedger's, not yet set by the caller
			releaseLedger(b)
			b.ledger = nil
			return nil, err
		}
		l.mu.Lock()
		b.deferredSync = &pendingSync{storage: st, who: who, interval: sync}
		l.mu.Unlock()
		return l, nil
	}
	if sync > 0 && !syncing {
		if err := l.startSync(st, where, sync, instance, logger); err != nil {
			b.ledger = l // releaseLedger's, not yet set by the caller
			releaseLedger(b)
			b.ledger = nil
			return nil, err
		}
	}
	return l, nil
}

// startSync makes the ledger keep its spend in storage from now on: its
// identity there, a first sync that reads back what this instance and the
// fleet spent (so that a restart resets nothing) and writes what it counted
// locally, then the sync loop.
func (l *budgetLedger) startSync(st certmagic.Storage, where string, interval time.Duration, instance string, logger *zap.Logger) error {
	who, err := acquireInstance(st, where, instance, logger)
	if err != nil {
		return err
	}
	l.startSyncAs(st, who, interval)
	return nil
}

// pendingSync is a sync of a ledger that a budget asked for, with the
// identity it holds, not yet started (acquireLedger).
type pendingSync struct {
	storage  certmagic.Storage
	who      *budgetInstance
	interval time.Duration
}

// startSyncAs is startSync with the identity had.
func (l *budgetLedger) startSyncAs(st certmagic.Storage, who *budgetInstance, interval time.Duration) {
	l.mu.Lock()
	l.storage, l.who, l.instance, l.interval = st, who, who.id, interval
	l.mu.Unlock()
	// the counter's series exists from the start, at 0: a series born at 1
	// is no increase to Prometheus, and the alert on sync failures would
	// miss the first ones
	metrics.budgetSyncFailures.WithLabelValues(l.name)
	if err := l.boundedSync(); err != nil {
		l.syncFailed(err)
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	l.cancel, l.done = cancel, make(chan struct{})
	go l.run(loopCtx)
}

// keySecret is the secret that keys the hash of the ledger's key values
// (budget.keyOf), chosen once for the ledger's life: the fleet's secret in
// storage, whether budget_sync is on or off, so that a reload that turns
// sync on keeps every key's name, and its spend. Without sync it is read
// (or made) in storage too, bounded by storageTimeout; when the storage
// cannot give it, a secret of this process is used (as acquireInstance
// does), until the ledger goes.
func (l *budgetLedger) keySecret(st certmagic.Storage, logger *zap.Logger) []byte {
	l.secretMu.Lock()
	defer l.secretMu.Unlock()
	if l.secret != nil {
		return l.secret
	}
	l.mu.Lock()
	who := l.who
	l.mu.Unlock()
	if who != nil {
		l.secret = who.secret
		return l.secret
	}
	secret, err := storageIO(st, func(ctx context.Context) ([]byte, error) { return fleetSecret(ctx, st) })
	if err != nil {
		logger.Warn("could not read or make the budget key secret in storage; hashing keys with a secret of this process",
			zap.String("budget", l.name), zap.Error(err))
		secret = localSecret
	}
	l.secret = secret
	return secret
}

// newBudgetKeys is a ledger's bounded set of keys, spilling what it drops.
func newBudgetKeys(l *budgetLedger) (*lru.Cache[string, *keySpend], error) {
	return lru.NewWithEvict(maxBudgetKeys, l.spill)
}

// releaseLedger undoes acquireLedger.
func releaseLedger(b *budget) {
	l := b.ledger
	l.mu.Lock()
	if i := slices.Index(l.users, b); i >= 0 {
		l.users = slices.Delete(l.users, i, i+1)
	}
	// the new owner's interval, if it syncs (off keeps the sync going)
	if len(l.users) > 0 && l.storage != nil && l.users[0].syncEvery > 0 && l.users[0].syncEvery != l.interval {
		l.interval = l.users[0].syncEvery
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
	// a sync a newer config asked for starts once only that config uses
	// the ledger (acquireLedger); the identities of those not started are
	// let go
	drop := []*pendingSync{b.deferredSync}
	b.deferredSync = nil
	var start *pendingSync
	if len(l.users) > 0 && l.storage == nil &&
		!slices.ContainsFunc(l.users, func(o *budget) bool { return o.config != l.users[0].config }) {
		for _, u := range l.users {
			if u.deferredSync == nil {
				continue
			}
			if start == nil {
				start = u.deferredSync
			} else {
				drop = append(drop, u.deferredSync)
			}
			u.deferredSync = nil
		}
	}
	l.mu.Unlock()
	for _, p := range drop {
		if p != nil {
			p.who.release()
		}
	}
	if start != nil {
		l.startSyncAs(start.storage, start.who, start.interval)
	}
	_, _ = budgetLedgers.Delete(b.poolKey)
}

// Destruct stops the sync loop after a last sync: nothing counted is lost
// when the last config using the budget unloads (a graceful stop).
func (l *budgetLedger) Destruct() error {
	if l.cancel != nil {
		l.cancel()
		select {
		case <-l.done:
		case <-time.After(storageTimeout): // a sync hung on the storage: go on
		}
		if err := l.boundedSync(); err != nil {
			l.syncFailed(err)
		}
	}
	if l.who != nil {
		l.who.release()
	}
	return nil
}

// boundedSync is the sync of a config load or unload: bounded by
// storageTimeout (storageIO), since Caddy holds its config lock.
func (l *budgetLedger) boundedSync() error {
	_, err := storageIO(l.storage, func(ctx context.Context) (struct{}, error) { return struct{}{}, l.sync(ctx, now(), false) })
	return err
}

// owner is the budget whose settings apply: the oldest loaded config's.
func (l *budgetLedger) owner() *budget {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.users) == 0 {
		return nil
	}
	return l.users[0]
}

// window is the owner's current period p, computed once per period.
func (l *budgetLedger) window(p period, t time.Time) window {
	if w := l.windows[p].Load(); w != nil && !t.Before(w.start) && t.Before(w.end) {
		return *w
	}
	loc := time.UTC
	if o := l.owner(); o != nil {
		loc = o.loc
	}
	w := p.windowAt(t, loc)
	l.windows[p].Store(&w)
	return w
}

// settle charges cost to key at t, on behalf of b (whose warn_at applies),
// and logs once per period a limit whose warn_at share is crossed; in the
// same hold of the lock it gives back released of what was reserved (a
// request's answer replacing its reservation).
func (l *budgetLedger) settle(b *budget, key string, cost float64, t time.Time, released float64) {
	var windows [periodCount]window
	for p := range periodCount {
		windows[p] = l.window(p, t)
	}
	type warning struct {
		limit budgetLimit
		spent float64
	}
	var warn []warning
	l.mu.Lock()
	ks := l.keySpend(key)
	for p := range periodCount {
		ps := l.advance(key, p, &ks.periods[p], windows[p])
		ps.unreserve(released)
		ps.delta += cost
	}
	for _, lim := range b.limits {
		ps := &ks.periods[lim.period]
		if !ps.warned && ps.total() >= b.warnAt*lim.amount {
			ps.warned = true
			warn = append(warn, warning{lim, ps.total()})
		}
	}
	l.mu.Unlock()
	for _, w := range warn {
		b.count(actionWarned)
		b.logger.Warn("budget nearly spent",
			zap.String("budget", b.name), zap.String("key", key), zap.String("period", w.limit.period.String()),
			zap.String("spent", humanMoney(w.spent, b.currency)), zap.String("limit", humanMoney(w.limit.amount, b.currency)),
			zap.Float64("warn_at_percent", b.warnAt*100))
	}
}

// committedIn is key's spend and reservations in each period's window
// (l.mu held): what admission compares with limits.
func (l *budgetLedger) committedIn(key string, ks *keySpend, windows [periodCount]window) [periodCount]float64 {
	var spend [periodCount]float64
	for p := range periodCount {
		spend[p] = l.advance(key, p, &ks.periods[p], windows[p]).committed()
	}
	return spend
}

// keySpend is key's spend, made when the key is new (l.mu held). A key
// dropped from memory since the last sync comes back with its spend (what
// a sync has written is read back by the next one), and with what its
// requests in flight still reserve (they give it back to the spilled key
// while it is away, unreserve): a client that pushes its own key out with
// others' would otherwise be admitted afresh beside its requests in flight.
func (l *budgetLedger) keySpend(key string) *keySpend {
	ks, ok := l.keys.Get(key)
	if !ok {
		if ks, ok = l.spilled[key]; ok {
			delete(l.spilled, key)
		} else {
			ks = new(keySpend)
		}
		l.keys.Add(key, ks)
	}
	return ks
}

// unreserve gives back amount reserved for key.
func (l *budgetLedger) unreserve(key string, amount float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ks, ok := l.keys.Get(key)
	spilled := false
	if !ok {
		if ks, spilled = l.spilled[key]; !spilled {
			return
		}
	}
	for p := range periodCount {
		ps := &ks.periods[p]
		ps.unreserve(amount)
	}
	if spilled && !l.keepSpilled(ks) {
		delete(l.spilled, key)
	}
}

// spill keeps a key dropped from memory while it has unsynced spend, for
// the next sync to write, or reservations of requests in flight, until
// they end (called by the LRU, with l.mu held). Without storage there is
// nowhere to keep spend: a key without reservations is forgotten. Keys
// kept for their reservations are at most the requests in flight; the
// others, the keys dropped since the last sync.
func (l *budgetLedger) spill(key string, ks *keySpend) {
	if l.keepSpilled(ks) {
		l.spilled[key] = ks
	}
}

// keepSpilled reports whether a key out of memory must be kept in spilled
// (l.mu held): it holds reservations, or spend a sync must write.
func (l *budgetLedger) keepSpilled(ks *keySpend) bool {
	return slices.ContainsFunc(ks.periods[:], func(ps periodSpend) bool {
		return ps.reserved > 0 || (ps.delta != 0 && l.storage != nil)
	})
}

// budgetKeyStats is a key's spend in a period, for the stats.
type budgetKeyStats struct {
	key             string
	spent, reserved float64
}

// topKeys is the spend of period p's current window, highest first, at
// most n keys, the number of keys with spend or reservations, and what
// all keys have reserved.
func (l *budgetLedger) topKeys(p period, t time.Time, n int) ([]budgetKeyStats, int, float64) {
	id := l.window(p, t).id
	var all []budgetKeyStats
	reserved := 0.0
	l.mu.Lock()
	for _, key := range l.keys.Keys() {
		ks, _ := l.keys.Peek(key)
		ps := ks.periods[p]
		spent := 0.0
		if ps.id == id {
			spent = ps.total()
		}
		if spent > 0 || ps.reserved > 0 { // reservations count in every window
			all = append(all, budgetKeyStats{key, spent, ps.reserved})
			reserved += ps.reserved
		}
	}
	l.mu.Unlock()
	slices.SortFunc(all, func(a, b budgetKeyStats) int {
		return cmp.Or(cmp.Compare(b.spent, a.spent), cmp.Compare(a.key, b.key))
	})
	if len(all) > n {
		return all[:n], len(all), reserved
	}
	return all, len(all), reserved
}

// Interface guards
var _ caddy.Destructor = (*budgetLedger)(nil)
