package llmrouter

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/dustin/go-humanize"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI serves `GET /llm_router/stats` on Caddy's admin endpoint: every
// deployment's traffic, health and spend since its state was created.
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.llm_router",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the admin routes of the router.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{
		Pattern: "/llm_router/stats",
		Handler: caddy.AdminHandlerFunc(a.handleStats),
	}}
}

func (a *AdminAPI) handleStats(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(collectStats(now()))
}

// Stats is the answer of GET /llm_router/stats.
type Stats struct {
	// GeneratedAt is when the numbers were read.
	GeneratedAt time.Time `json:"generated_at"`
	// Deployments is one entry per deployment, by model then provider.
	Deployments []DeploymentStats `json:"deployments"`
	// Totals adds up every deployment.
	Totals TotalStats `json:"totals"`
	// Budgets is one entry per budget, with its most spent keys.
	Budgets []BudgetStats `json:"budgets,omitempty"`
	// Clients is the spend of each client label (client_label), most
	// spent first.
	Clients []ClientStats `json:"clients,omitempty"`
	// Caches is one entry per response cache store (a handler's own, or
	// one that handlers name with store).
	Caches []CacheStats `json:"caches,omitempty"`
}

// CacheStats is a response cache's size, results and savings.
type CacheStats struct {
	// Store is the name handlers give the store (store); empty for a
	// handler's own.
	Store      string `json:"store,omitempty"`
	Entries    int64  `json:"entries"`
	Bytes      int64  `json:"bytes"`
	MaxBytes   int64  `json:"max_bytes"`
	BytesHuman string `json:"bytes_human"`
	Hits       int64  `json:"hits"`
	Misses     int64  `json:"misses"`
	Stale      int64  `json:"stale"`
	Bypassed   int64  `json:"bypassed"`
	// SemanticHits are requests answered with the stored answer of a
	// paraphrase; SemanticBlocked those whose close question a guard
	// refused (they asked a model).
	SemanticHits    int64 `json:"semantic_hits"`
	SemanticBlocked int64 `json:"semantic_blocked"`
	// HitRatio is (hits + semantic hits + stale) over those plus the
	// misses and semantic blocks: the share of the cacheable requests that
	// no model answered.
	HitRatio      float64 `json:"hit_ratio"`
	HitRatioHuman string  `json:"hit_ratio_human"`
	// Saved is what the hits would have cost at the answering deployments'
	// prices, less what embedding questions for the semantic lookup cost,
	// per currency.
	Saved []MoneyStats `json:"saved"`
	// EmbeddingCost is what embedding questions cost, per currency (with
	// a semantic cache).
	EmbeddingCost []MoneyStats `json:"embedding_cost,omitempty"`
}

// BudgetStats is a budget's spend in its current periods.
type BudgetStats struct {
	Name      string              `json:"name"`
	Key       string              `json:"key,omitempty"` // the placeholder naming the spender
	Match     []string            `json:"match,omitempty"`
	Downgrade string              `json:"downgrade,omitempty"`
	Hard      *MoneyStats         `json:"hard,omitempty"`
	Periods   []BudgetPeriodStats `json:"periods"`
	// Actions counts what the budget did since it was loaded in this
	// process: warned, downgraded, refused.
	Actions map[string]int64 `json:"actions"`
	// Sync says how spend is shared: "local only", or "every 5s".
	Sync          string     `json:"sync"`
	LastSync      *time.Time `json:"last_sync,omitempty"`
	LastSyncError string     `json:"last_sync_error,omitempty"`
	Syncs         int64      `json:"syncs"` // successful syncs since the budget was loaded in this process
	SyncFailures  int64      `json:"sync_failures"`
}

// BudgetPeriodStats is one limit of a budget in its current period.
type BudgetPeriodStats struct {
	Period      string     `json:"period"`
	Limit       MoneyStats `json:"limit"`
	WarnAt      float64    `json:"warn_at"` // a share of the limit
	Start       time.Time  `json:"start"`
	ResetsAt    time.Time  `json:"resets_at"`
	ResetsHuman string     `json:"resets_at_human"`
	Keys        int        `json:"keys"` // keys with spend or reservations in this period (in memory)
	// Reserved is what requests admitted by this instance and still
	// running may cost (their reservations, counted against the limit).
	Reserved MoneyStats       `json:"reserved"`
	TopKeys  []BudgetKeyStats `json:"top_keys"`
	// Hard marks the period of a hard cap that no limit has: Limit is
	// the cap (its spend refuses past it, downgrade or not).
	Hard bool `json:"hard,omitempty"`
}

// BudgetKeyStats is one key's spend in a period.
type BudgetKeyStats struct {
	Key       string     `json:"key"`
	Spent     MoneyStats `json:"spent"`
	UsedShare float64    `json:"used_share"` // of the limit
	UsedHuman string     `json:"used_human"`
	// Reserved is what this key's running requests may still cost.
	Reserved *MoneyStats `json:"reserved,omitempty"`
}

// ClientStats is one client label's usage.
type ClientStats struct {
	Client string `json:"client"`
	// Answers are the client's requests a deployment answered, whatever
	// the status (its share of requests); Tokens and Costs are what all
	// their attempts were billed, semantic lookups' embeddings included.
	Answers int64        `json:"answers"`
	Tokens  TokenStats   `json:"tokens"`
	Costs   []MoneyStats `json:"costs"`
}

// DeploymentStats is one deployment's traffic and health. Each number has
// a human-readable twin (a _human field). Every count is defined as the
// Prometheus series of the same name counts (README, "Stats and cost CLI").
type DeploymentStats struct {
	Model    string `json:"model"`
	Provider string `json:"provider"`
	Upstream string `json:"upstream"`
	// Host and Key are the provider's base URL host and its key's
	// fingerprint: two handlers may declare one provider name at two
	// endpoints, two deployments with the same model, provider and
	// upstream.
	Host string `json:"host"`
	Key  string `json:"key"`
	Kind string `json:"kind"` // chat or embedding

	State         string     `json:"state"` // up, cooldown or disabled
	HealthScore   int        `json:"health_score"`
	CooldownUntil *time.Time `json:"cooldown_until,omitempty"`
	CooldownHuman string     `json:"cooldown_until_human,omitempty"`

	// Requests are the client requests this deployment answered, whatever
	// the status (caddy_llm_router_requests_total), by endpoint too.
	Requests           int64            `json:"requests"`
	RequestsHuman      string           `json:"requests_human"`
	RequestsByEndpoint map[string]int64 `json:"requests_by_endpoint,omitempty"`
	// Attempts are the upstream attempts (caddy_llm_router_attempts_total).
	Attempts      int64  `json:"attempts"`
	AttemptsHuman string `json:"attempts_human"`
	// Errors are the attempts that failed through the deployment's fault;
	// ErrorRate is their share of the attempts that were not the client's
	// own 4xx or canceled by the client (the dashboard's error ratio).
	Errors         int64   `json:"errors"`
	ErrorsHuman    string  `json:"errors_human"`
	ErrorRate      float64 `json:"error_rate"`
	ErrorRateHuman string  `json:"error_rate_human"`

	Latency          LatencyStats `json:"latency"`
	TimeToFirstToken LatencyStats `json:"time_to_first_token"`
	Tokens           TokenStats   `json:"tokens"`
	// Costs has one entry per currency the deployment was billed in
	// (handlers with different currencies may share a deployment).
	Costs []MoneyStats `json:"costs"`

	// Hedges are the hedges started to this deployment (failover
	// hedge_after), HedgesWon those it answered, HedgeRate their share of
	// its attempts; HedgeLostCosts is what its attempts that lost a hedge
	// cost (part of Costs).
	Hedges         int64        `json:"hedges,omitempty"`
	HedgesWon      int64        `json:"hedges_won,omitempty"`
	HedgeRate      float64      `json:"hedge_rate,omitempty"`
	HedgeLostCosts []MoneyStats `json:"hedge_lost_costs,omitempty"`

	LastError      string     `json:"last_error,omitempty"`
	LastErrorAt    *time.Time `json:"last_error_at,omitempty"`
	LastErrorHuman string     `json:"last_error_at_human,omitempty"`
}

// MoneyStats is an amount of one currency.
type MoneyStats struct {
	Currency string  `json:"currency"`
	Amount   float64 `json:"amount"`
	Human    string  `json:"human"`
}

// LatencyStats are estimated from a bounded histogram (within 5%).
type LatencyStats struct {
	Count       int64   `json:"count"`
	MeanSeconds float64 `json:"mean_seconds"`
	P50Seconds  float64 `json:"p50_seconds"`
	P95Seconds  float64 `json:"p95_seconds"`
	MeanHuman   string  `json:"mean_human"`
	P50Human    string  `json:"p50_human"`
	P95Human    string  `json:"p95_human"`
}

// TokenStats count tokens as the providers reported them, or as the
// router estimated them where a provider reported none.
type TokenStats struct {
	Input       int64 `json:"input"`
	Output      int64 `json:"output"`
	CachedInput int64 `json:"cached_input"`
	// EstimatedInput and EstimatedOutput are the part of Input and Output
	// the router estimated (caddy_llm_router_estimated_tokens_total).
	EstimatedInput   int64  `json:"estimated_input,omitempty"`
	EstimatedOutput  int64  `json:"estimated_output,omitempty"`
	InputHuman       string `json:"input_human"`
	OutputHuman      string `json:"output_human"`
	CachedInputHuman string `json:"cached_input_human"`
}

// TotalStats add up all deployments; costs per currency, never summed
// across currencies.
type TotalStats struct {
	Requests       int64        `json:"requests"`
	RequestsHuman  string       `json:"requests_human"`
	Attempts       int64        `json:"attempts"`
	AttemptsHuman  string       `json:"attempts_human"`
	Errors         int64        `json:"errors"`
	ErrorsHuman    string       `json:"errors_human"`
	ErrorRate      float64      `json:"error_rate"`
	ErrorRateHuman string       `json:"error_rate_human"`
	Tokens         TokenStats   `json:"tokens"`
	Costs          []MoneyStats `json:"costs"`
}

// collectStats reads every live deployment state.
func collectStats(t time.Time) Stats {
	out := Stats{GeneratedAt: t, Deployments: []DeploymentStats{}}
	var judged int64 // attempts that were successes or errors
	for _, st := range liveStates() {
		if d, n, ok := st.report(t); ok {
			out.Deployments = append(out.Deployments, d)
			judged += n
		}
	}
	slices.SortFunc(out.Deployments, func(a, b DeploymentStats) int {
		return cmp.Or(cmp.Compare(a.Model, b.Model), cmp.Compare(a.Provider, b.Provider), cmp.Compare(a.Upstream, b.Upstream),
			cmp.Compare(a.Host, b.Host), cmp.Compare(a.Key, b.Key))
	})
	tot := &out.Totals
	costs := map[string]float64{}
	for _, d := range out.Deployments {
		tot.Requests += d.Requests
		tot.Attempts += d.Attempts
		tot.Errors += d.Errors
		tot.Tokens.Input = addTokens(tot.Tokens.Input, d.Tokens.Input)
		tot.Tokens.Output = addTokens(tot.Tokens.Output, d.Tokens.Output)
		tot.Tokens.CachedInput = addTokens(tot.Tokens.CachedInput, d.Tokens.CachedInput)
		tot.Tokens.EstimatedInput = addTokens(tot.Tokens.EstimatedInput, d.Tokens.EstimatedInput)
		tot.Tokens.EstimatedOutput = addTokens(tot.Tokens.EstimatedOutput, d.Tokens.EstimatedOutput)
		for _, c := range d.Costs {
			costs[c.Currency] += c.Amount
		}
	}
	tot.RequestsHuman, tot.AttemptsHuman, tot.ErrorsHuman = humanCount(tot.Requests), humanCount(tot.Attempts), humanCount(tot.Errors)
	tot.ErrorRate = ratio(tot.Errors, judged)
	tot.ErrorRateHuman = humanPercent(tot.ErrorRate)
	tot.Tokens.humanize()
	tot.Costs = moneyStats(costs)
	out.Budgets = collectBudgetStats(t)
	out.Clients = collectClientStats()
	for _, c := range liveCacheStores() {
		out.Caches = append(out.Caches, c.report())
	}
	slices.SortStableFunc(out.Caches, func(a, b CacheStats) int {
		return cmp.Or(cmp.Compare(a.Store, b.Store), cmp.Compare(a.MaxBytes, b.MaxBytes))
	})
	return out
}

// topBudgetKeys is how many keys the stats list per budget and period.
const topBudgetKeys = 10

func collectBudgetStats(t time.Time) []BudgetStats {
	var ledgers []*budgetLedger
	budgetLedgers.Range(func(_, v any) bool {
		ledgers = append(ledgers, v.(*budgetLedger))
		return true
	})
	var out []BudgetStats
	for _, l := range ledgers {
		b := l.owner()
		if b == nil {
			continue
		}
		bs := BudgetStats{Name: b.name, Key: b.key, Downgrade: b.downgrade, Actions: map[string]int64{},
			Sync: "local only", Syncs: l.syncs.Load(), SyncFailures: l.failures.Load()}
		bs.Match = b.matchNames
		if b.hard > 0 {
			bs.Hard = &MoneyStats{Currency: b.currency, Amount: b.hard, Human: humanMoney(b.hard, b.currency) + " per " + b.hardPeriod.String()}
		}
		l.mu.Lock()
		if l.storage != nil {
			bs.Sync = "every " + l.interval.String()
		}
		l.mu.Unlock()
		if r := l.lastSync.Load(); r != nil {
			at := r.at
			bs.LastSync, bs.LastSyncError = &at, r.err
		}
		for i, a := range actionNames {
			bs.Actions[a] = l.actions[i].Load()
		}
		for i, lim := range b.caps() {
			hard := i == len(b.limits)
			warnAt := b.warnAt
			if hard {
				warnAt = 0 // warn_at is of the limits
			}
			w := l.window(lim.period, t)
			top, n, reserved := l.topKeys(lim.period, t, topBudgetKeys)
			ps := BudgetPeriodStats{Period: lim.period.String(), WarnAt: warnAt, Hard: hard, Start: w.start, ResetsAt: w.end,
				ResetsHuman: humanize.RelTime(w.end, t, "ago", "from now"), Keys: n, TopKeys: []BudgetKeyStats{},
				Limit:    MoneyStats{Currency: b.currency, Amount: lim.amount, Human: humanMoney(lim.amount, b.currency)},
				Reserved: MoneyStats{Currency: b.currency, Amount: reserved, Human: humanMoney(reserved, b.currency)}}
			for _, k := range top {
				share := k.spent / lim.amount
				ks := BudgetKeyStats{Key: k.key, UsedShare: share, UsedHuman: humanPercent(share),
					Spent: MoneyStats{Currency: b.currency, Amount: k.spent, Human: humanMoney(k.spent, b.currency)}}
				if k.reserved > 0 {
					ks.Reserved = &MoneyStats{Currency: b.currency, Amount: k.reserved, Human: humanMoney(k.reserved, b.currency)}
				}
				ps.TopKeys = append(ps.TopKeys, ks)
			}
			bs.Periods = append(bs.Periods, ps)
		}
		out = append(out, bs)
	}
	slices.SortFunc(out, func(a, b BudgetStats) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

func collectClientStats() []ClientStats {
	clientTotals.Lock()
	var out []ClientStats
	for name, c := range clientTotals.m {
		cs := ClientStats{Client: name, Answers: c.answers, Tokens: TokenStats{Input: c.input, Output: c.output, CachedInput: c.cached}}
		costs := map[string]float64{}
		for _, m := range c.costs {
			costs[m.currency] += m.amount
		}
		cs.Costs = moneyStats(costs)
		out = append(out, cs)
	}
	clientTotals.Unlock()
	for i := range out {
		out[i].Tokens.humanize()
	}
	slices.SortFunc(out, func(a, b ClientStats) int {
		return cmp.Or(cmp.Compare(b.Tokens.Input+b.Tokens.Output, a.Tokens.Input+a.Tokens.Output), cmp.Compare(a.Client, b.Client))
	})
	return out
}

// moneyStats lists amounts by currency code.
func moneyStats(amounts map[string]float64) []MoneyStats {
	out := []MoneyStats{}
	for _, code := range slices.Sorted(maps.Keys(amounts)) {
		out = append(out, MoneyStats{Currency: code, Amount: amounts[code], Human: humanMoney(amounts[code], code)})
	}
	return out
}

// report is the state's entry in the stats API, labelled with its owner's
// settings, and the number of its attempts that were a success or an error
// (the denominator of its error rate); ok is false for a state no config
// uses any more.
func (s *sharedState) report(t time.Time) (d DeploymentStats, judged int64, ok bool) {
	owner := s.owner()
	if owner == nil {
		return d, 0, false
	}
	v := s.viewAt(t)
	lastErr, lastErrAt := s.lastError()
	d = DeploymentStats{
		Model:       s.id.model,
		Provider:    s.id.provider,
		Upstream:    owner.upstream,
		Host:        owner.provider.host,
		Key:         owner.provider.fingerprint,
		Kind:        owner.kind.String(),
		State:       v.state,
		HealthScore: v.score,
		LastError:   lastErr,
	}
	costs := map[string]float64{}
	st := &s.stats
	st.mu.Lock()
	for ep, n := range st.requests {
		if n > 0 {
			d.Requests += n
			if d.RequestsByEndpoint == nil {
				d.RequestsByEndpoint = map[string]int64{}
			}
			d.RequestsByEndpoint[endpoint(ep).String()] = n
		}
	}
	for i, n := range st.outcomes {
		d.Attempts += n
		if o := outcomes[i]; o.failed() {
			d.Errors += n
			judged += n
		} else if o == outcomeSuccess {
			judged += n
		}
	}
	d.Latency, d.TimeToFirstToken = st.latency.report(), st.ttft.report()
	d.Tokens = TokenStats{Input: st.input, Output: st.output, CachedInput: st.cached, EstimatedInput: st.estIn, EstimatedOutput: st.estOut}
	for _, m := range st.costs {
		costs[m.currency] += m.amount
	}
	d.Hedges, d.HedgesWon = st.hedges, st.hedgesWon
	var lost map[string]float64
	for _, m := range st.hedgeLostCosts {
		if lost == nil {
			lost = map[string]float64{}
		}
		lost[m.currency] += m.amount
	}
	st.mu.Unlock()
	if lost != nil {
		d.HedgeLostCosts = moneyStats(lost)
	}
	if len(costs) == 0 {
		costs[owner.currency.Code] = 0
	}
	d.Costs = moneyStats(costs)
	d.RequestsHuman, d.AttemptsHuman, d.ErrorsHuman = humanCount(d.Requests), humanCount(d.Attempts), humanCount(d.Errors)
	d.ErrorRate = ratio(d.Errors, judged)
	d.HedgeRate = ratio(d.Hedges, d.Attempts)
	d.ErrorRateHuman = humanPercent(d.ErrorRate)
	d.Tokens.humanize()
	if !v.cooldownUntil.IsZero() {
		until := v.cooldownUntil
		d.CooldownUntil = &until
		d.CooldownHuman = humanize.RelTime(until, t, "ago", "from now")
	}
	if !lastErrAt.IsZero() {
		d.LastErrorAt = &lastErrAt
		d.LastErrorHuman = humanize.RelTime(lastErrAt, t, "ago", "from now")
	}
	return d, judged, true
}

func (h *latencyHistogram) report() LatencyStats {
	mean, p50, p95 := h.mean(), h.quantile(0.5), h.quantile(0.95)
	return LatencyStats{
		Count:       h.n,
		MeanSeconds: mean.Seconds(),
		P50Seconds:  p50.Seconds(),
		P95Seconds:  p95.Seconds(),
		MeanHuman:   humanDuration(mean),
		P50Human:    humanDuration(p50),
		P95Human:    humanDuration(p95),
	}
}

func (ts *TokenStats) humanize() {
	ts.InputHuman, ts.OutputHuman, ts.CachedInputHuman = humanCount(ts.Input), humanCount(ts.Output), humanCount(ts.CachedInput)
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// humanCount writes 1234567 as "1.2M" and 950 as "950"; a count that
// rounds up to 1000 of a unit is written in the next (999,950 is "1M",
// not "1000k").
func humanCount(n int64) string {
	if n < 1000 {
		return fmt.Sprint(n)
	}
	v, unit := float64(n), 0
	for v >= 999.95 && unit < len(siUnits)-1 {
		v /= 1000
		unit++
	}
	return humanize.FtoaWithDigits(math.Round(v*10)/10, 1) + siUnits[unit]
}

// siUnits are the prefixes of humanCount, by thousands.
var siUnits = [...]string{"", "k", "M", "G", "T", "P", "E"}

// humanBytes writes 128000000 as "128 MB".
func humanBytes(n int64) string { return humanize.Bytes(uint64(max(n, 0))) }

func humanPercent(r float64) string {
	return humanize.FtoaWithDigits(math.Round(r*1000)/10, 1) + "%"
}

// humanMoney writes an amount the way people read money: two decimals and
// thousands separators from 1 up (1,234.57 CNY), three significant digits
// below (0.000614 CNY), so a sub-cent cost never shows as 0.00.
func humanMoney(v float64, currency string) string {
	return humanAmount(v) + " " + currency
}

func humanAmount(v float64) string {
	a := math.Abs(v)
	switch {
	case a == 0:
		return "0.00"
	case a < 0.995:
		decimals := max(2, 2-int(math.Floor(math.Log10(a))))
		s := strconv.FormatFloat(v, 'f', decimals, 64)
		for strings.HasSuffix(s, "0") && len(s)-strings.IndexByte(s, '.') > 3 {
			s = s[:len(s)-1]
		}
		return s
	default:
		return humanize.FormatFloat("#,###.##", v)
	}
}

// humanDuration writes latencies the way people read them: 850ms, 1.2s.
func humanDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Round(time.Millisecond)/time.Millisecond)
	case d < time.Minute:
		return humanize.FtoaWithDigits(d.Seconds(), 1) + "s"
	default:
		return d.Round(time.Second).String()
	}
}

// Interface guards
var _ caddy.AdminRouter = (*AdminAPI)(nil)
