package llmrouter

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
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
	// something a client cannot forge. Its values are kept, in memory and
	// in storage, under a keyed hash, and shown in stats and logs by
	// fingerprint, since they may be credentials. Default: one budget for
	// the handler.
	Key string `json:"key,omitempty"`

	// KeyIsLabel declares the values of Key names fit to show (a team
	// from a `map`, never a credential): they are kept and shown as they
	// are. Caddyfile: `key <placeholder> label`. Default: false.
	KeyIsLabel bool `json:"key_is_label,omitempty"`

	// Match lists the routes and models whose answers the budget pays
	// for: the deployments of each model named, and every deployment a
	// route named can use (its models and their fallbacks), however a
	// request reaches them. Default: every deployment.
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

	// ReserveOutput is how many output tokens admission reserves for a
	// request that sets no max_tokens (max_completion_tokens,
	// max_output_tokens) of its own: its reservation is its estimated input
	// and this output, at the highest prices among the candidates the
	// budget covers. Default: 1024.
	ReserveOutput int64 `json:"reserve_output,omitempty"`

	// NoOutputCap sends a request this budget covers that sets no output
	// limit as it is. By default the router gives it one upstream, its
	// reserve_output per answer (the smallest among the capping budgets
	// that cover the deployment; see Provider.OutputLimitField), so that
	// what admission reserved bounds what the answer can cost: without a
	// cap, an answer may run to the model's own limit, and concurrent
	// answers overshoot the budget by what each generates beyond its
	// reservation. Default: false (capped). Caddyfile: `output_cap off`.
	NoOutputCap bool `json:"no_output_cap,omitempty"`
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
	defaultBudgetSync    = 5 * time.Second
	defaultWarnAt        = 80
	defaultReserveOutput = 1024
	defaultClientMax     = 100
	budgetStoragePrefix  = "llm_router/budgets"
	otherClients         = "other"
	maxClientLabelBytes  = 128 // longer client_label values are cut to this (and "…")
)

// maxBudgetKeys bounds the live keys per budget: the least recently used
// are flushed and dropped (a var for tests).
var maxBudgetKeys = 10_000

// budget is a Budget made ready to serve, in one config.
type budget struct {
	name       string
	syncEvery  time.Duration // its config's budget_sync; 0: off
	limits     []budgetLimit
	hard       float64
	hardPeriod period
	warnAt     float64   // a share, 0..1
	key        string    // placeholder, "" for one budget
	keyHeaders []string  // the request headers key reads, canonical (keyValueTwice)
	keyQuery   []string  // the query parameters key reads (keyValueTwice)
	keyCookies []string  // the cookies key reads (keyValueTwice)
	keyLabel   bool      // key values are shown as they are
	keySecret  []byte    // keys the hash of key values (budgetInstance)
	macs       sync.Pool // *keyHasher keyed with keySecret (keyOf)
	unsetOnce  atomic.Bool
	match      map[string]bool
	matchNames []string // as written
	downgrade  string
	loc        *time.Location
	currency   string
	ledger     *budgetLedger
	poolKey    string // the ledger's key in budgetLedgers
	// config is which config the budget is of (its metrics registry:
	// Caddy makes one per config load), and deferredSync the sync of the
	// ledger that it asked for while a running config used the ledger
	// unsynced (acquireLedger), started by releaseLedger once only this
	// budget's config uses the ledger
	config       any
	deferredSync *pendingSync
	covers       map[*deployment]bool // the deployments whose answers it pays for (cover)
	reserveOut   int64                // output tokens reserved for a request without a limit of its own
	ceiling      float64              // the most one reservation holds (admit)
	capOutput    bool                 // such a request is sent with reserveOut as its limit (Budget.NoOutputCap)
	metrics      *budgetMetrics
	logger       *zap.Logger
}

type budgetLimit struct {
	amount float64
	period period
}

// caps are the budget's limits and, last, its hard cap when no limit has
// the cap's period: the periods the stats and the budget gauges show, as
// a refusal at a cap of its own period would show nowhere else.
func (b *budget) caps() []budgetLimit {
	if b.hard > 0 && !slices.ContainsFunc(b.limits, func(lim budgetLimit) bool { return lim.period == b.hardPeriod }) {
		return append(slices.Clip(b.limits), budgetLimit{b.hard, b.hardPeriod})
	}
	return b.limits
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
	nb := &budget{name: b.Name, hard: b.Hard, key: b.Key, keyLabel: b.KeyIsLabel, downgrade: b.Downgrade, currency: currency, loc: time.UTC,
		reserveOut: defaultReserveOutput, capOutput: !b.NoOutputCap}
	if b.ReserveOutput < 0 {
		return nil, cfgErr(subj, "reserve_output must not be negative")
	}
	if b.ReserveOutput > 0 {
		nb.reserveOut = b.ReserveOutput
	}
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
	nb.ceiling = 2 * b.Hard
	for _, l := range nb.limits {
		nb.ceiling = max(nb.ceiling, 2*l.amount)
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
	for _, name := range placeholderNames(b.Key, headerPlaceholder) {
		nb.keyHeaders = append(nb.keyHeaders, http.CanonicalHeaderKey(name))
	}
	nb.keyQuery = placeholderNames(b.Key, queryPlaceholder)
	nb.keyCookies = placeholderNames(b.Key, cookiePlaceholder)
	if len(b.Match) > 0 {
		nb.matchNames = b.Match
		nb.match = make(map[string]bool, len(b.Match))
		for _, m := range b.Match {
			nb.match[m] = true
		}
	}
	return nb, nil
}

// Caddy's placeholders of a request header, a query parameter and a
// cookie begin so.
const (
	headerPlaceholder = "http.request.header."
	queryPlaceholder  = "http.request.uri.query."
	cookiePlaceholder = "http.request.cookie."
)

// placeholderNames are the names in the placeholders of key that begin
// with prefix.
func placeholderNames(key, prefix string) (names []string) {
	for rest := key; ; {
		i := strings.Index(rest, "{"+prefix)
		if i < 0 {
			return names
		}
		rest = rest[i+1+len(prefix):]
		if j := strings.IndexByte(rest, '}'); j > 0 {
			names = append(names, rest[:j])
		}
	}
}

// keyValueTwice names the first request header, query parameter or
// cookie that a budget's key reads and req has more than once, "" when
// none: Caddy's placeholder joins the values ("Basic <credential>,junk")
// while the auth in front of the router reads the first (basic_auth), or
// one of them (a query or header matcher), so each second value would
// name a spender with a budget of its own. A cookie counts in any case of
// its name: Caddy's placeholder takes the first whose name matches in any
// case ("SESSION=junk"), an auth server the first of the exact name (Go's
// Request.Cookie).
func keyValueTwice(budgets []*budget, req *http.Request) string {
	var query url.Values       // parsed once, if a key reads it
	var cookies []*http.Cookie // likewise
	cookiesRead := false
	for _, b := range budgets {
		for _, name := range b.keyHeaders {
			if len(req.Header[name]) > 1 {
				return "the header '" + name + "'"
			}
		}
		for _, name := range b.keyQuery {
			if query == nil {
				query = req.URL.Query()
			}
			if len(query[name]) > 1 {
				return "the query parameter '" + name + "'"
			}
		}
		for _, name := range b.keyCookies {
			if !cookiesRead {
				cookies, cookiesRead = req.Cookies(), true
			}
			n := 0
			for _, c := range cookies {
				if strings.EqualFold(c.Name, name) {
					n++
				}
			}
			if n > 1 {
				return "the cookie '" + name + "'"
			}
		}
	}
	return ""
}

// unsetKey is the key of the requests whose key placeholder resolved to
// nothing: counted together, in sight, rather than with the budget's other
// keys.
const unsetKey = "(unset)"

// keyOf is the ledger key of a request: its key placeholder's value, as is
// for a label, else under a keyed hash (a fingerprint is all that storage,
// stats and logs ever hold of a value that may be a credential), its
// credential's scheme spelled one way (appendCredential).
func (b *budget) keyOf(repl *caddy.Replacer) string {
	if b.key == "" {
		return ""
	}
	v := replaceAll(repl, b.key)
	if v == "" {
		if !b.unsetOnce.Swap(true) && b.logger != nil {
			b.logger.Warn("a budget's key resolved to nothing; such requests are counted under the key (unset)",
				zap.String("budget", b.name), zap.String("key", b.key))
		}
		return unsetKey
	}
	if b.keyLabel && fitLabel(v) {
		return v
	}
	h, _ := b.macs.Get().(*keyHasher)
	if h == nil {
		h = &keyHasher{mac: hmac.New(sha256.New, b.keySecret)}
	}
	h.mac.Reset() // to its keyed state, saved by the first Reset: no rekeying
	if !lonePlaceholder(b.key) && len(b.keyHeaders) > 0 {
		// a credential among other values ("{…X-Project}/{…Authorization}"):
		// each header's value spelled one way, wherever it is in the key
		v, _ = repl.ReplaceFunc(b.key, func(name string, val any) (any, error) {
			if s, ok := val.(string); ok && strings.HasPrefix(name, headerPlaceholder) {
				return string(appendCredential(nil, s)), nil
			}
			return val, nil
		})
	}
	h.in = appendCredential(h.in[:0], v)
	h.mac.Write(h.in)
	sum := h.mac.Sum(h.sum[:0])
	var out [1 + 2*keyHashBytes]byte
	out[0] = '#'
	hex.Encode(out[1:], sum[:keyHashBytes])
	if cap(h.in) <= 1<<10 {
		b.macs.Put(h)
	}
	return string(out[:])
}

// maxLabelKey is the longest budget key value kept as it is under
// `label`, in bytes: a team or tenant name is short, and a longer value (a
// client's header of kilobytes) is kept by its fingerprint, so that the
// keys a budget holds (maxBudgetKeys) are bounded in bytes too; the bound
// of a client_label value, for the same reason.
const maxLabelKey = maxClientLabelBytes

// fitLabel reports whether a label key value can be kept and shown as it
// is: short, UTF-8, no control characters (it is written to logs, stats
// and storage).
func fitLabel(v string) bool {
	if len(v) > maxLabelKey || !utf8.ValidString(v) {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] == 0x7f {
			return false
		}
	}
	return true
}

// lonePlaceholder reports whether key is one placeholder and nothing else
// (replaceAll's fast path).
func lonePlaceholder(key string) bool {
	return len(key) > 2 && key[0] == '{' && key[len(key)-1] == '}' && strings.IndexAny(key[1:len(key)-1], "{}\\") < 0
}

// credentialSchemes are the auth schemes of the credentials a key value
// may begin with, in their registered spelling.
var credentialSchemes = [...]string{"Bearer", "Basic"}

// appendCredential appends v to b with the auth scheme it begins with
// (Bearer, Basic) in one spelling, followed by one space: a scheme is
// case-insensitive and any run of white space may follow it (RFC 9110
// §11), so the auth in front of the router takes every spelling as the
// same credential (Caddy's basic_auth takes "basic" and "BASIC" as
// "Basic"), and each must not be a spender with a budget of its own.
// Every other value, and one spelled so already, is appended as it is.
func appendCredential(b []byte, v string) []byte {
	i := strings.IndexAny(v, " \t")
	if i <= 0 {
		return append(b, v...)
	}
	j := i
	for j < len(v) && (v[j] == ' ' || v[j] == '\t') {
		j++
	}
	for _, scheme := range credentialSchemes {
		if strings.EqualFold(v[:i], scheme) {
			b = append(b, scheme...)
			b = append(b, ' ')
			if scheme == "Basic" {
				return appendBasic(b, v[j:])
			}
			return append(b, v[j:]...)
		}
	}
	return append(b, v...)
}

// appendBasic appends a Basic credential to b in its canonical base64:
// Go's decoder (basic_auth's) ignores the unused low bits of the last
// character before the padding, so up to 16 spellings are one user's
// password. One that does not decode is appended as it is.
func appendBasic(b []byte, cred string) []byte {
	n := len(b)
	dec, err := base64.StdEncoding.AppendDecode(b, []byte(cred))
	if err != nil {
		return append(b[:n], cred...)
	}
	enc := base64.StdEncoding.AppendEncode(dec, dec[n:])
	return append(b[:n], enc[len(dec):]...)
}

// keyHasher is a reusable HMAC of key values, with its buffers (an
// HMAC set up anew cost twice the hashing, and eight allocations).
type keyHasher struct {
	mac hash.Hash
	in  []byte
	sum [sha256.Size]byte
}

// keyHashBytes is how much of a key value's HMAC names it: 96 bits.
const keyHashBytes = 12

// cover works out which of the config's deployments the budget covers:
// those whose model is named in match, or that a route named there can
// serve (its models and their fallbacks); every deployment without match.
func (b *budget) cover(ds []*deployment, rt routing) {
	b.covers = make(map[*deployment]bool)
	for _, d := range ds {
		if b.match == nil || b.match[d.name] {
			b.covers[d] = true
		}
	}
	for name := range b.match {
		if kp, ok := rt.byRoute[name]; ok {
			for _, g := range kp.plan {
				for _, d := range g {
					b.covers[d] = true
				}
			}
		}
	}
}

// coversAny reports whether the budget covers a candidate of p.
func (b *budget) coversAny(p plan) bool {
	for _, g := range p {
		for _, d := range g {
			if b.covers[d] {
				return true
			}
		}
	}
	return false
}

// without is p less the candidates an exhausted budget covers.
func (p plan) without(exhausted []*budget) plan {
	var out plan
	for _, g := range p {
		var kept []*deployment
		for _, d := range g {
			if !slices.ContainsFunc(exhausted, func(b *budget) bool { return b.covers[d] }) {
				kept = append(kept, d)
			}
		}
		if len(kept) > 0 {
			out = append(out, kept)
		}
	}
	return out
}

// reservation is what a request's most expensive answer may cost under a
// budget: its estimated input at the highest input price among the
// candidates the budget covers, and its output limit (or the budget's
// reserve_output) at the highest output price.
func (b *budget) reservation(p plan, est demand) float64 {
	u := est.usage
	if u.Output == 0 && est.gens > 0 {
		u.Output = mulSat(max(b.reserveOut, est.minOut), est.gens)
	}
	most := 0.0
	for _, g := range p {
		for _, d := range g {
			if b.covers[d] {
				most = max(most, d.price.cost(u)*d.currency.Rate)
			}
		}
	}
	return most
}

// demand is what admission reserves for: a request's estimated input, the
// output limit of all its answers (0 without one), and how many answers
// the provider generates for it, for which a budget's reserve_output is
// held each when it gave no limit (0 for embeddings, which have no output).
type demand struct {
	usage
	gens int64
	// minOut is the least output limit a request without one is sent
	// with under a cap (openai.ResponsesMinLimit): reserved at least
	minOut int64
}

// budgetCharge is a budget a request is charged to: the spender's key, and
// what admission reserved for it there.
type budgetCharge struct {
	b        *budget
	key      string
	amount   float64 // what admission reserved: held again for each further attempt (hold)
	reserved float64 // what is held now
}

// hold makes the charge hold its admission amount for each of copies
// attempts in flight at t, taking what is missing from the budget as
// admission would for a request that cannot move (the hard cap, and the
// limit of a budget without a downgrade, stop it): a failover after an
// attempt that was charged, or a hedge beside one, spends again, and
// concurrent requests must see that. With whole (a hedge, which is
// optional), the extra must fit under every limit entirely, that of a
// budget with a downgrade route too: the request can no longer move, but
// need not spend. It reports whether the budget had room; without it,
// what was held stays.
func (c *budgetCharge) hold(copies int, t time.Time, whole bool) bool {
	want := c.amount * float64(copies)
	if c.reserved >= want || c.amount == 0 {
		return true
	}
	res, nc, _ := c.b.admit(c.key, want-c.reserved, t, !whole, whole)
	if res != admitted {
		return false
	}
	c.reserved += nc.reserved
	return true
}

// budgetVerdict is why a request is refused.
type budgetVerdict struct {
	refuse  *budget
	resetAt time.Time // when refuse's period ends, which the message names
	// retryAt, when set and not resetAt, is the Retry-After: when the
	// request may pass, which is not refuse's reset when other budgets
	// stop its route too (it reopens when they have all reset), or when
	// it was downgraded on its way to refuse (it passes on a route it
	// left as soon as that reopens): reopensAt, the earliest of the routes'
	retryAt time.Time
	why     string
}

// admitResult is what one budget says of a request.
type admitResult uint8

const (
	admitted admitResult = iota // under its limits: reserved
	atLimit                     // a limit reached: its candidates are not to be used
	pastHard                    // the hard cap reached: neither are they, and no downgrade
)

// admit checks key's spend and reservations against b's limits at t and,
// when under them, reserves amount, in one step under the ledger's lock, so
// that concurrent requests see each other's reservations. A request that
// cannot move (onDowngrade: it was downgraded already, is on the budget's
// downgrade route, or is not a chat request) is not stopped by the limit of
// a budget that has a downgrade route; the hard cap, and the limit of a
// budget without one, still stop it.
//
// With whole, the amount itself must fit under the limits and the hard cap,
// not merely start under them: what an optional extra spend (a hedge) needs.
//
// A reservation holds at most twice the budget's largest limit (or hard
// cap), which stops the key as surely as any more would: a request's
// estimate may be astronomical (max_tokens 2^53 for 128 answers), and
// added to the reservations in flight it would round them away, so that
// taking it back left them unheld.
func (b *budget) admit(key string, amount float64, t time.Time, onDowngrade, whole bool) (admitResult, budgetCharge, budgetVerdict) {
	c := budgetCharge{b: b, key: key}
	amount = min(amount, b.ceiling)
	l := b.ledger
	var windows [periodCount]window // before the lock: window takes it
	for p := range periodCount {
		windows[p] = l.window(p, t)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	ks := l.keySpend(key)
	spend := l.committedIn(key, ks, windows)
	reached := func(spent, limit float64) bool {
		if whole {
			return spent+amount > limit
		}
		return spent >= limit
	}
	// of the limits reached, when they refuse (no downgrade), the one whose
	// period ends last: the budget lets the request through only once
	// every one has reset, and its hard cap too
	var at *budgetLimit
	if !onDowngrade || b.downgrade == "" {
		for i, lim := range b.limits {
			if reached(spend[lim.period], lim.amount) && (at == nil || windows[lim.period].end.After(windows[at.period].end)) {
				at = &b.limits[i]
			}
		}
	}
	if b.hard > 0 && reached(spend[b.hardPeriod], b.hard) {
		v := budgetVerdict{refuse: b, resetAt: windows[b.hardPeriod].end,
			why: fmt.Sprintf("hard cap of %s per %s reached (%s spent or reserved)", humanMoney(b.hard, b.currency), b.hardPeriod, humanMoney(spend[b.hardPeriod], b.currency))}
		if at != nil && windows[at.period].end.After(v.resetAt) {
			v.resetAt = windows[at.period].end
		}
		return pastHard, c, v
	}
	if at != nil {
		return atLimit, c, budgetVerdict{refuse: b, resetAt: windows[at.period].end,
			why: fmt.Sprintf("limit of %s per %s reached (%s spent or reserved)", humanMoney(at.amount, b.currency), at.period, humanMoney(spend[at.period], b.currency))}
	}
	for p := range periodCount {
		ks.periods[p].reserved += amount
	}
	c.amount, c.reserved = amount, amount
	return admitted, c, budgetVerdict{}
}

// admitBudgets decides a request's budgets (README, "Budgets"): every
// budget that covers a candidate of its plan p is checked, and reserves the
// request's estimated cost est; candidates that an exhausted budget covers
// are dropped; a plan left with none moves to the exhausted budget's
// downgrade route, else is refused. On a budget's downgrade route its
// limit no longer stops the request; every other budget's does: a request
// one budget moves onto a route another budget has exhausted follows that
// one's downgrade in turn, or is refused, and a budget that meets the
// request at its limit a second time refuses it (two budgets that
// downgrade to each other's routes never send it back). It returns the
// plan to serve (nil: refuse, with why), the charges, and the budgets that
// downgraded it, in order.
func admitBudgets(budgets []*budget, p plan, route string, est demand, keyOf func(*budget) string,
	t time.Time, canDowngrade bool, routes map[string]kindPlan) (plan, []budgetCharge, []*budget, budgetVerdict) {
	var downgraded []*budget
	var reopens time.Time // the earliest a route the request left reopens
	// refused is v, told when the request may pass: when its route
	// reopens (at), or one it left before
	refused := func(v budgetVerdict, at time.Time) budgetVerdict {
		if !reopens.IsZero() && reopens.Before(at) {
			at = reopens
		}
		if !at.IsZero() && !at.Equal(v.resetAt) {
			v.retryAt = at
		}
		return v
	}
	for {
		var charges []budgetCharge
		var exhausted []*budget
		// each exhausted budget's reset; and when it stops the route
		// (blocks): not at all for one at a limit that would move the
		// request to its downgrade route, once the others let it pass
		var ends, blocks []time.Time
		var hard, limit budgetVerdict
		for _, b := range budgets {
			if !b.coversAny(p) {
				continue
			}
			key := keyOf(b)
			// a request that cannot move, or on the route this budget
			// downgrades to, is not stopped by its limit
			exempt := !canDowngrade || b.downgrade == route
			res, c, v := b.admit(key, b.reservation(p, est), t, exempt, false)
			switch res {
			case admitted:
				charges = append(charges, c)
				continue
			case pastHard:
				if hard.refuse == nil {
					hard = v
				}
			case atLimit:
				if limit.refuse == nil {
					limit = v
				}
			}
			block := v.resetAt
			if _, ok := routes[b.downgrade]; res == atLimit && ok && !slices.Contains(downgraded, b) {
				block = time.Time{}
			}
			exhausted, ends, blocks = append(exhausted, b), append(ends, v.resetAt), append(blocks, block)
		}
		if len(exhausted) == 0 {
			return p, charges, downgraded, budgetVerdict{}
		}
		if kept := p.without(exhausted); len(kept) > 0 {
			// served by the candidates no exhausted budget covers; a budget
			// that covers none of them is not charged
			var still []budgetCharge
			for _, c := range charges {
				if c.b.coversAny(kept) {
					still = append(still, c)
				} else {
					c.release()
				}
			}
			return kept, still, downgraded, budgetVerdict{}
		}
		releaseCharges(charges)
		if hard.refuse != nil {
			return nil, nil, downgraded, refused(hard, reopensAt(p, exhausted, blocks))
		}
		// each turn adds a budget not in downgraded: the loop ends
		b := limit.refuse
		next, ok := routes[b.downgrade]
		if !canDowngrade || b.downgrade == "" || !ok || slices.Contains(downgraded, b) {
			return nil, nil, downgraded, refused(limit, reopensAt(p, exhausted, blocks))
		}
		if at := reopensAt(p, exhausted, ends); reopens.IsZero() || at.Before(reopens) {
			reopens = at
		}
		p, route, downgraded = next.plan, b.downgrade, append(downgraded, b)
	}
}

// reopensAt is when plan p, whose every candidate the budgets exhausted
// stopped (until ends, each; a zero end stops nothing), serves again: as
// soon as one candidate is no longer covered by any of them still at its
// limit. Zero when none stops a candidate past now.
func reopensAt(p plan, exhausted []*budget, ends []time.Time) time.Time {
	var first time.Time
	for _, g := range p {
		for _, d := range g {
			var last time.Time // when the last budget that covers d resets
			for i, b := range exhausted {
				if b.covers[d] && ends[i].After(last) {
					last = ends[i]
				}
			}
			if !last.IsZero() && (first.IsZero() || last.Before(first)) {
				first = last
			}
		}
	}
	return first
}

// chargeBudgets adds the cost of an attempt of deployment d to every
// budget of the request that covers d; the cost replaces one attempt's
// reservation (budgetCharge.hold holds one per attempt in flight).
func chargeBudgets(charges []budgetCharge, d *deployment, cost float64, t time.Time) {
	for i := range charges {
		c := &charges[i]
		if !c.b.covers[d] {
			continue
		}
		// an attempt's cost replaces its own hold: a hedge's other attempt
		// keeps what it holds until its cost comes, or the request ends
		released := c.reserved
		if c.amount > 0 {
			released = min(released, c.amount)
		}
		c.b.ledger.settle(c.b, c.key, cost, t, released)
		c.reserved -= released
	}
}

// release gives back what remains of the charge's reservation.
func (c *budgetCharge) release() {
	if c.reserved == 0 {
		return
	}
	c.b.ledger.unreserve(c.key, c.reserved)
	c.reserved = 0
}

// releaseCharges releases every reservation still held: a request that
// ended without (more) cost.
func releaseCharges(charges []budgetCharge) {
	for i := range charges {
		charges[i].release()
	}
}

// budgetRefusal is the 429 insufficient_quota for a budget past its cap.
func budgetRefusal(v budgetVerdict, t time.Time) *routerError {
	at := v.resetAt
	if !v.retryAt.IsZero() {
		at = v.retryAt
	}
	retry := int(math.Ceil(at.Sub(t).Seconds()))
	msg := fmt.Sprintf("Budget '%s' is exhausted: %s. It resets at %s.", v.refuse.name, v.why, v.resetAt.Format(time.RFC3339))
	if !v.retryAt.IsZero() {
		msg += fmt.Sprintf(" This request may pass at %s.", v.retryAt.Format(time.RFC3339))
	}
	return &routerError{
		status: http.StatusTooManyRequests, typ: "insufficient_quota", code: "budget_exceeded", retryAfter: max(retry, 1), msg: msg,
	}
}

// clientLabels bounds the values of the `client` label: the first max
// distinct values keep their own, the rest are "other". Shared by every
// config, so that a reload does not make room for new values.
var clientLabels = struct {
	sync.RWMutex
	seen map[string]bool
}{seen: map[string]bool{}}

// clientLabelValue is a client_label value fit for a label: the value may
// come from a header the client sets, but Prometheus panics on a label
// value that is not UTF-8, and each kept value is exported in a tokens and
// a cost series of every deployment.
func clientLabelValue(v string) string {
	if len(v) > maxClientLabelBytes || !utf8.ValidString(v) {
		v = truncate(strings.ToValidUTF8(v, "\uFFFD"), maxClientLabelBytes)
	}
	return v
}

// clientValue is the client_label value of a request, fit for a label
// but not bounded: what routing rules read as client, whatever the
// metrics count it as.
func clientValue(c *ClientLabel, repl *caddy.Replacer) string {
	if c == nil {
		return ""
	}
	return clientLabelValue(replaceAll(repl, c.Value))
}

// boundedClient is v, a client_label value, as the metrics and stats count
// it: "other" once max other values are kept.
func boundedClient(c *ClientLabel, v string) string {
	if c == nil || v == "" {
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
