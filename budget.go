package llmrouter

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/http"
	"path"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	lru "github.com/hashicorp/golang-lru/v2"
	"go.uber.org/zap"
)

// Budget caps what one spender may spend. At a limit the request is served
// from the Downgrade route instead (or refused, without one); past Hard it is
// refused with 429.
type Budget struct {
	// Name identifies the budget in headers, metrics, stats and storage.
	// Handlers and configs that declare a budget of the same name share its
	// spend.
	Name string `json:"name"`

	// Limits are the caps, each an amount in the handler's currency per
	// hour, day, week or month. Reaching any of them downgrades (or, without
	// Downgrade, refuses). Required.
	Limits []BudgetLimit `json:"limits"`

	// Key is a placeholder whose value names the spender: one budget per
	// value, e.g. {llm_team} set by a `map` of gateway keys. It must be
	// something a client cannot forge. Default: one budget for the handler.
	Key string `json:"key,omitempty"`

	// Match lists the routes and models whose requests the budget applies
	// to, by the route or model a request resolved to. Default: all.
	Match []string `json:"match,omitempty"`

	// Downgrade is the route that serves a request once a limit is reached.
	// Default: none (the limit refuses).
	Downgrade string `json:"downgrade,omitempty"`

	// Hard refuses requests with 429 once the spend of HardPeriod reaches
	// it, downgrade or not. Default: 0 (no hard cap beyond the limits).
	Hard float64 `json:"hard,omitempty"`

	// HardPeriod is the period of Hard: hour, day, week or month. Default:
	// the period of the first limit.
	HardPeriod string `json:"hard_period,omitempty"`

	// WarnAt is the share of a limit, in percent, at which the budget logs a
	// warning (once per period and key) and counts a `warned` action.
	// Default: 80.
	WarnAt float64 `json:"warn_at,omitempty"`

	// Timezone is the IANA zone in which days, weeks (from Monday) and
	// months begin. Default: UTC.
	Timezone string `json:"timezone,omitempty"`
}

// BudgetLimit is an amount per period.
type BudgetLimit struct {
	// Amount is in the handler's currency.
	Amount float64 `json:"amount"`
	// Period is hour, day, week or month.
	Period string `json:"period"`
}

// ClientLabel names the client of each request in the tokens and cost
// metrics and in the stats.
type ClientLabel struct {
	// Value is a placeholder, e.g. {llm_team}.
	Value string `json:"value"`
	// Max bounds the distinct values labelled; later values count as
	// "other". Default: 100.
	Max int `json:"max,omitempty"`
}

const (
	defaultBudgetSync   = 5 * time.Second
	defaultWarnAt       = 80
	defaultClientMax    = 100
	maxBudgetKeys       = 10_000 // live keys per budget; the least recently used are flushed and dropped
	budgetStoragePrefix = "llm_router/budgets"
	otherClients        = "other"
)

// period is a budget period.
type period uint8

const (
	periodHour period = iota
	periodDay
	periodWeek
	periodMonth
	periodCount
)

var periodNames = [periodCount]string{"hour", "day", "week", "month"}

func (p period) String() string { return periodNames[p] }

func parsePeriod(s string) (period, bool) {
	i := slices.Index(periodNames[:], s)
	return period(i), i >= 0
}

// window is one period: when it began and ends, and its id in storage.
type window struct {
	start, end time.Time
	id         string
}

// windowAt is the period p that holds t, in loc.
func (p period) windowAt(t time.Time, loc *time.Location) window {
	t = t.In(loc)
	y, m, d := t.Date()
	var start, end time.Time
	switch p {
	case periodHour:
		start = time.Date(y, m, d, t.Hour(), 0, 0, 0, loc)
		end = start.Add(time.Hour)
	case periodDay:
		start = time.Date(y, m, d, 0, 0, 0, 0, loc)
		end = time.Date(y, m, d+1, 0, 0, 0, 0, loc)
	case periodWeek:
		back := (int(t.Weekday()) + 6) % 7 // days since Monday
		start = time.Date(y, m, d-back, 0, 0, 0, 0, loc)
		end = time.Date(y, m, d-back+7, 0, 0, 0, 0, loc)
	default:
		start = time.Date(y, m, 1, 0, 0, 0, 0, loc)
		end = time.Date(y, m+1, 1, 0, 0, 0, 0, loc)
	}
	return window{start: start, end: end, id: p.String() + "-" + start.Format(windowStamp)}
}

// windowStamp is the layout of a window's start in its id.
const windowStamp = "2006-01-02T15"

// pruneAfter is how long after a window ended its files are kept. A
// window id does not say its time zone, so an instance reads another
// zone's stamps (a fleet sharing the storage with another timezone, or
// this one before a change of it) as up to 26 hours off; two days keep
// such a window's current files, and the previous window of every period,
// for instances whose clocks lag.
const pruneAfter = 48 * time.Hour

// budget is a Budget made ready to serve, in one config.
type budget struct {
	name       string
	limits     []budgetLimit
	hard       float64
	hardPeriod period
	warnAt     float64 // a share, 0..1
	key        string  // placeholder, "" for one budget
	match      map[string]bool
	matchNames []string // as written
	downgrade  string
	loc        *time.Location
	currency   string
	ledger     *budgetLedger
	poolKey    string // the ledger's key in budgetLedgers
	metrics    *budgetMetrics
	logger     *zap.Logger
}

type budgetLimit struct {
	amount float64
	period period
}

// budget actions, as budget_actions_total names them
const (
	actionWarned = iota
	actionDowngraded
	actionRefused
	actionCount
)

var actionNames = [actionCount]string{"warned", "downgraded", "refused"}

// count records an action in the metrics and the ledger (for the stats).
func (b *budget) count(action int) {
	b.metrics.actions[action].Inc()
	b.ledger.actions[action].Add(1)
}

// newBudget checks and builds one budget.
func newBudget(b *Budget, currency string) (*budget, error) {
	subj := "budget " + b.Name
	nb := &budget{name: b.Name, hard: b.Hard, key: b.Key, downgrade: b.Downgrade, currency: currency, loc: time.UTC}
	if len(b.Limits) == 0 {
		return nil, cfgErr(subj, "needs at least one limit")
	}
	for _, l := range b.Limits {
		p, ok := parsePeriod(l.Period)
		if !ok {
			return nil, cfgErr(subj, "limit period must be hour, day, week or month, not %q", l.Period)
		}
		if l.Amount <= 0 || math.IsInf(l.Amount, 0) || math.IsNaN(l.Amount) {
			return nil, cfgErr(subj, "limit must be a positive amount")
		}
		if slices.ContainsFunc(nb.limits, func(x budgetLimit) bool { return x.period == p }) {
			return nil, cfgErr(subj, "two limits per %s: give one", p)
		}
		nb.limits = append(nb.limits, budgetLimit{l.Amount, p})
	}
	nb.hardPeriod = nb.limits[0].period
	if b.HardPeriod != "" {
		p, ok := parsePeriod(b.HardPeriod)
		if !ok {
			return nil, cfgErr(subj, "hard period must be hour, day, week or month, not %q", b.HardPeriod)
		}
		nb.hardPeriod = p
	}
	if b.Hard < 0 {
		return nil, cfgErr(subj, "hard must not be negative")
	}
	nb.warnAt = defaultWarnAt / 100.0
	if b.WarnAt != 0 {
		if b.WarnAt < 0 || b.WarnAt > 100 {
			return nil, cfgErr(subj, "warn_at must be a percentage from 0 to 100")
		}
		nb.warnAt = b.WarnAt / 100
	}
	if b.Timezone != "" {
		loc, err := time.LoadLocation(b.Timezone)
		if err != nil {
			return nil, cfgErr(subj, "unknown timezone %q (use an IANA name such as Asia/Ho_Chi_Minh)", b.Timezone)
		}
		nb.loc = loc
	}
	if len(b.Match) > 0 {
		nb.matchNames = b.Match
		nb.match = make(map[string]bool, len(b.Match))
		for _, m := range b.Match {
			nb.match[m] = true
		}
	}
	return nb, nil
}

// applies reports whether the budget covers a request that resolved to
// route or model.
func (b *budget) applies(route, model string) bool {
	return b.match == nil || (route != "" && b.match[route]) || (model != "" && b.match[model])
}

// budgetCharge is a budget a request is charged to, with the spender's key.
type budgetCharge struct {
	b   *budget
	key string
}

// budgetVerdict is what the budgets say about one request.
type budgetVerdict struct {
	downgrade *budget // serve from this budget's downgrade route
	refuse    *budget // refuse with 429
	resetAt   time.Time
	why       string
}

// checkBudgets looks at every budget that applies to a request (resolved
// to route or model, its keys read from repl) at t, adding each to charges,
// and says whether to serve, downgrade or refuse. A downgraded request is
// checked again (again = true) for the budgets of its new route: it can
// still be refused, but is not downgraded twice.
func checkBudgets(budgets []*budget, route, model string, repl *caddy.Replacer, t time.Time, again bool, charges *[]budgetCharge) budgetVerdict {
	var v budgetVerdict
	for _, b := range budgets {
		if !b.applies(route, model) {
			continue
		}
		key := ""
		if b.key != "" {
			key = repl.ReplaceAll(b.key, "")
		}
		if slices.ContainsFunc(*charges, func(c budgetCharge) bool { return c.b == b && c.key == key }) {
			continue
		}
		*charges = append(*charges, budgetCharge{b, key})
		spend := b.ledger.spend(key, t)
		if b.hard > 0 && spend[b.hardPeriod] >= b.hard {
			return budgetVerdict{refuse: b, resetAt: b.ledger.window(b.hardPeriod, t).end,
				why: fmt.Sprintf("hard cap of %s per %s reached (%s spent)", humanMoney(b.hard, b.currency), b.hardPeriod, humanMoney(spend[b.hardPeriod], b.currency))}
		}
		for _, l := range b.limits {
			if spend[l.period] < l.amount {
				continue
			}
			switch {
			case b.downgrade == "": // no downgrade: the limit is hard
				return budgetVerdict{refuse: b, resetAt: b.ledger.window(l.period, t).end,
					why: fmt.Sprintf("limit of %s per %s reached (%s spent)", humanMoney(l.amount, b.currency), l.period, humanMoney(spend[l.period], b.currency))}
			case again || b.downgrade == route:
				// already on (or moved to) the cheap route: serve it
			case v.downgrade == nil:
				v.downgrade = b
			}
			break
		}
	}
	return v
}

// charge adds a request's cost to every budget it was checked against.
func chargeBudgets(charges []budgetCharge, cost float64, t time.Time) {
	if cost <= 0 {
		return
	}
	for _, c := range charges {
		c.b.ledger.add(c.b, c.key, cost, t)
	}
}

// budgetLedgers holds each budget's spend by name, so that it survives
// reloads and is shared by the handlers that name the same budget.
var budgetLedgers = caddy.NewUsagePool()

// budgetLedger is a budget's spend: per key and period, this instance's own
// (what storage holds, plus what was added since the last sync) and the
// other instances' (as last read). Keys are bounded: beyond maxBudgetKeys the
// least recently used key is dropped from memory; its unsynced spend is
// written at the next sync.
type budgetLedger struct {
	name string

	mu      sync.Mutex
	keys    *lru.Cache[string, *keySpend]
	spilled map[string]*keySpend // dropped since the last sync, with unsynced spend
	users   []*budget            // oldest first: whose settings apply
	windows [periodCount]atomic.Pointer[window]

	// sync: nil storage means local only
	storage  certmagic.Storage
	instance string
	interval time.Duration
	cancel   context.CancelFunc
	done     chan struct{}
	lastSync atomic.Pointer[syncResult]
	prunedAt string       // the hour window of the last prune (sync only)
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
	base   float64 // this instance's spend as stored at the last sync
	delta  float64 // added since
	others float64 // the other instances' spend at the last sync
	warned bool    // the warn_at threshold was logged for this period
}

func (p *periodSpend) total() float64 { return p.base + p.delta + p.others }

// current makes p hold window id, starting it afresh when it held another.
func (p *periodSpend) current(id string) *periodSpend {
	if p.id != id {
		*p = periodSpend{id: id}
	}
	return p
}

// acquireLedger returns the shared ledger of b's name (and storage: a
// config that moves the budget to another storage reads its spend from
// there), registering b.
func acquireLedger(ctx caddy.Context, b *budget, sync time.Duration, logger *zap.Logger) (*budgetLedger, error) {
	where := "local"
	if sync > 0 {
		st := ctx.Storage()
		where = fmt.Sprintf("%T", st)
		if s, ok := st.(fmt.Stringer); ok {
			where = s.String()
		}
	}
	b.poolKey = b.name + "\x00" + where
	v, loaded, err := budgetLedgers.LoadOrNew(b.poolKey, func() (caddy.Destructor, error) {
		l := &budgetLedger{name: b.name, spilled: map[string]*keySpend{}, interval: sync, logger: logger}
		keys, err := newBudgetKeys(l)
		if err != nil {
			return nil, err
		}
		l.keys = keys
		if sync > 0 {
			id, err := caddy.InstanceID()
			if err != nil {
				return nil, err
			}
			l.instance = id.String()
			l.storage = ctx.Storage()
			// the counter's series exists from the start, at 0: a series
			// born at 1 is no increase to Prometheus, and the alert on
			// sync failures would miss the first ones
			metrics.budgetSyncFailures.WithLabelValues(b.name)
		}
		return l, nil
	})
	if err != nil {
		return nil, err
	}
	l := v.(*budgetLedger)
	l.mu.Lock()
	l.users = append(l.users, b)
	l.mu.Unlock()
	if !loaded && l.storage != nil {
		// read back what this instance and the fleet spent so far, so that
		// a restart resets nothing, then keep in step
		if err := l.sync(context.Background(), now(), false); err != nil {
			l.syncFailed(err)
		}
		loopCtx, cancel := context.WithCancel(context.Background())
		l.cancel, l.done = cancel, make(chan struct{})
		go l.run(loopCtx)
	}
	return l, nil
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
	l.mu.Unlock()
	_, _ = budgetLedgers.Delete(b.poolKey)
}

// Destruct stops the sync loop after a last sync: nothing counted is lost
// when the last config using the budget unloads (a graceful stop).
func (l *budgetLedger) Destruct() error {
	if l.cancel != nil {
		l.cancel()
		<-l.done
		if err := l.sync(context.Background(), now(), false); err != nil {
			l.syncFailed(err)
		}
	}
	return nil
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

// spend is a key's spend in each current period, fleet-wide as far as known.
func (l *budgetLedger) spend(key string, t time.Time) [periodCount]float64 {
	var ids [periodCount]string
	for p := range periodCount {
		ids[p] = l.window(p, t).id
	}
	var out [periodCount]float64
	l.mu.Lock()
	defer l.mu.Unlock()
	ks, ok := l.keys.Get(key)
	if !ok {
		return out
	}
	for p := range periodCount {
		if ks.periods[p].id == ids[p] {
			out[p] = ks.periods[p].total()
		}
	}
	return out
}

// add charges cost to key at t, on behalf of b (whose warn_at applies), and
// logs once per period a limit whose warn_at share is crossed.
func (l *budgetLedger) add(b *budget, key string, cost float64, t time.Time) {
	var ids [periodCount]string
	for p := range periodCount {
		ids[p] = l.window(p, t).id
	}
	type warning struct {
		limit budgetLimit
		spent float64
	}
	var warn []warning
	l.mu.Lock()
	ks, ok := l.keys.Get(key)
	if !ok {
		ks = new(keySpend)
		l.keys.Add(key, ks)
	}
	for p := range periodCount {
		ks.periods[p].current(ids[p]).delta += cost
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

// spill keeps the unsynced spend of a key dropped from memory, for the next
// sync to write (called by the LRU, with l.mu held). Without storage there
// is nowhere to keep it: the key's spend is forgotten.
func (l *budgetLedger) spill(key string, ks *keySpend) {
	if l.storage == nil {
		return
	}
	for _, p := range ks.periods {
		if p.delta != 0 {
			l.spilled[key] = ks
			return
		}
	}
}

func (l *budgetLedger) run(ctx context.Context) {
	defer close(l.done)
	defer func() {
		if v := recover(); v != nil {
			l.logger.Error("budget sync panicked", zap.String("budget", l.name), zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
		}
	}()
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := l.sync(ctx, now(), true); err != nil && ctx.Err() == nil {
			l.syncFailed(err)
		}
	}
}

// syncFailed counts and logs a failed sync; the budget keeps counting
// locally (fail open).
func (l *budgetLedger) syncFailed(err error) {
	metrics.budgetSyncFailures.WithLabelValues(l.name).Inc()
	l.failures.Add(1)
	prev := l.lastSync.Load()
	l.lastSync.Store(&syncResult{at: now(), err: err.Error()})
	if prev == nil || prev.err == "" || now().Sub(prev.at) > time.Minute {
		l.logger.Warn("budget spend could not be synced with storage; counting locally until it can",
			zap.String("budget", l.name), zap.Error(err))
	}
}

// instanceFile is what one instance stores for one budget and period.
type instanceFile struct {
	Instance string             `json:"instance"`
	Updated  time.Time          `json:"updated"`
	Spend    map[string]float64 `json:"spend"` // by key
}

// sync writes this instance's spend of the current periods to storage and
// reads the other instances', in one file per instance, budget and period
// (as caddy-ratelimit does for its zones). Only this instance writes its
// own file, so adding what it spent since the last sync to what the file
// holds is exact, for keys in memory and keys dropped from it alike. With
// prune (the sync loop's, not a config load's or a stop's), it also deletes
// the files of past windows.
func (l *budgetLedger) sync(ctx context.Context, t time.Time, prune bool) error {
	if l.storage == nil {
		return nil
	}
	var errs []error
	var windows [periodCount]window
	for p := range periodCount {
		windows[p] = l.window(p, t)
		if err := l.syncPeriod(ctx, p, windows[p]); err != nil {
			errs = append(errs, err)
		}
	}
	// every period begins on an hour, so a new hour is when any window may
	// have gone past keeping
	if hour := windows[periodHour].id; prune && l.prunedAt != hour {
		// housekeeping, not the spend: a failure is logged and retried at
		// the next sync, and does not count as a failed sync
		if err := l.prune(ctx, windows); err != nil {
			l.logger.Warn("could not delete a budget's past windows from storage; will retry",
				zap.String("budget", l.name), zap.Error(err))
		} else {
			l.prunedAt = hour
		}
	}
	if len(errs) == 0 {
		l.lastSync.Store(&syncResult{at: now()})
		l.syncs.Add(1)
	}
	return errors.Join(errs...)
}

func (l *budgetLedger) syncPeriod(ctx context.Context, p period, w window) error {
	dir := path.Join(budgetStoragePrefix, l.name, w.id)
	own := path.Join(dir, l.instance+".json")

	// take the unsynced spend of this period
	deltas := map[string]float64{}
	l.mu.Lock()
	take := func(key string, ks *keySpend) {
		if ps := &ks.periods[p]; ps.id == w.id && ps.delta != 0 {
			deltas[key] += ps.delta
			ps.base += ps.delta
			ps.delta = 0
		}
	}
	for _, key := range l.keys.Keys() {
		if ks, ok := l.keys.Peek(key); ok {
			take(key, ks)
		}
	}
	for key, ks := range l.spilled {
		take(key, ks)
		if !slices.ContainsFunc(ks.periods[:], func(ps periodSpend) bool { return ps.delta != 0 }) {
			delete(l.spilled, key)
		}
	}
	l.mu.Unlock()
	giveBack := func() {
		l.mu.Lock()
		for key, d := range deltas {
			if ks, ok := l.keys.Peek(key); ok && ks.periods[p].id == w.id {
				ks.periods[p].base -= d
				ks.periods[p].delta += d
			} else {
				ks := new(keySpend)
				ks.periods[p] = periodSpend{id: w.id, delta: d}
				l.spilled[key] = ks
			}
		}
		l.mu.Unlock()
	}

	mine, err := loadInstanceFile(ctx, l.storage, own)
	if err != nil {
		giveBack()
		return err
	}
	if len(deltas) > 0 {
		for key, d := range deltas {
			mine.Spend[key] += d
		}
		mine.Instance, mine.Updated = l.instance, now()
		b, _ := json.Marshal(mine)
		if err := l.storage.Store(ctx, own, b); err != nil {
			giveBack()
			return err
		}
	}

	others := map[string]float64{}
	names, err := l.storage.List(ctx, dir, false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, name := range names {
		if path.Base(name) == l.instance+".json" || !strings.HasSuffix(name, ".json") {
			continue
		}
		f, err := loadInstanceFile(ctx, l.storage, name)
		if err != nil {
			return err
		}
		for key, v := range f.Spend {
			others[key] += v
		}
	}

	// what storage says is now this period's truth, for the keys in memory
	// (what was added meanwhile stays in delta)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, key := range l.keys.Keys() {
		ks, _ := l.keys.Peek(key)
		ps := ks.periods[p].current(w.id)
		ps.base, ps.others = mine.Spend[key], others[key]
	}
	// while there is room, bring in the keys spent on elsewhere or before a
	// restart, so that their first request here already knows their spend
	for _, spent := range []map[string]float64{mine.Spend, others} {
		for key := range spent {
			if l.keys.Len() >= maxBudgetKeys {
				return nil
			}
			if !l.keys.Contains(key) {
				ks := new(keySpend)
				ks.periods[p] = periodSpend{id: w.id, base: mine.Spend[key], others: others[key]}
				l.keys.Add(key, ks)
			}
		}
	}
	return nil
}

// prune deletes the budget's files of windows that ended more than
// pruneAfter before the current window of their period (in current) began:
// an instance reads only its current windows, so they are never read
// again, and storage would otherwise gain a directory an hour for an hourly
// limit, forever. Any instance prunes every instance's files (those of
// instances gone for good included); it runs once an hour, from the sync
// loop (not at a config load, which would otherwise wait on a first
// pruning of years of files).
func (l *budgetLedger) prune(ctx context.Context, current [periodCount]window) error {
	names, err := l.storage.List(ctx, path.Join(budgetStoragePrefix, l.name), false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, name := range names {
		// a window id is the period's name, "-", the start's windowStamp
		pname, stamp, _ := strings.Cut(path.Base(name), "-")
		p, ok := parsePeriod(pname)
		if !ok {
			continue // not a window
		}
		w := current[p]
		start, err := time.ParseInLocation(windowStamp, stamp, w.start.Location())
		if err != nil {
			continue
		}
		if p.windowAt(start, w.start.Location()).end.Before(w.start.Add(-pruneAfter)) {
			if err := l.storage.Delete(ctx, name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

func loadInstanceFile(ctx context.Context, s certmagic.Storage, key string) (instanceFile, error) {
	f := instanceFile{Spend: map[string]float64{}}
	b, err := s.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return f, err
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("%s: %w", key, err)
	}
	if f.Spend == nil {
		f.Spend = map[string]float64{}
	}
	return f, nil
}

// budgetRefusal is the 429 insufficient_quota for a budget past its cap.
func budgetRefusal(v budgetVerdict, t time.Time) *routerError {
	retry := int(math.Ceil(v.resetAt.Sub(t).Seconds()))
	return &routerError{
		status: http.StatusTooManyRequests, typ: "insufficient_quota", code: "budget_exceeded", retryAfter: max(retry, 1),
		msg: fmt.Sprintf("Budget '%s' is exhausted: %s. It resets at %s.", v.refuse.name, v.why, v.resetAt.Format(time.RFC3339)),
	}
}

// budgetKeyStats is a key's spend in a period, for the stats.
type budgetKeyStats struct {
	key   string
	spent float64
}

// topKeys is the spend of period p's current window, highest first, at
// most n keys, and the number of keys with spend.
func (l *budgetLedger) topKeys(p period, t time.Time, n int) ([]budgetKeyStats, int) {
	id := l.window(p, t).id
	var all []budgetKeyStats
	l.mu.Lock()
	for _, key := range l.keys.Keys() {
		ks, _ := l.keys.Peek(key)
		if ps := ks.periods[p]; ps.id == id && ps.total() > 0 {
			all = append(all, budgetKeyStats{key, ps.total()})
		}
	}
	l.mu.Unlock()
	slices.SortFunc(all, func(a, b budgetKeyStats) int {
		return cmp.Or(cmp.Compare(b.spent, a.spent), cmp.Compare(a.key, b.key))
	})
	if len(all) > n {
		return all[:n], len(all)
	}
	return all, len(all)
}

// clientLabels bounds the values of the `client` label: the first max
// distinct values keep their own, the rest are "other". Shared by every
// config, so that a reload does not make room for new values.
var clientLabels = struct {
	sync.RWMutex
	seen map[string]bool
}{seen: map[string]bool{}}

// clientOf is the bounded client label of a request.
func clientOf(c *ClientLabel, repl *caddy.Replacer) string {
	if c == nil {
		return ""
	}
	v := repl.ReplaceAll(c.Value, "")
	if v == "" {
		return ""
	}
	clientLabels.RLock()
	ok := clientLabels.seen[v]
	n := len(clientLabels.seen)
	clientLabels.RUnlock()
	if ok {
		return v
	}
	limit := c.Max
	if limit <= 0 {
		limit = defaultClientMax
	}
	if n >= limit {
		return otherClients
	}
	clientLabels.Lock()
	defer clientLabels.Unlock()
	if len(clientLabels.seen) >= limit && !clientLabels.seen[v] {
		return otherClients
	}
	clientLabels.seen[v] = true
	return v
}

// Interface guards
var _ caddy.Destructor = (*budgetLedger)(nil)
