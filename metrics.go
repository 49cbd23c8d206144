package llmrouter

import (
	"errors"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmrouter/caddy-llm-router/internal/semantic"
)

// routerMetrics are the router's Prometheus collectors. They are created
// once per process and registered into each config's registry, so counters
// keep counting across reloads. Every label value comes from the config or
// from a fixed set: never from a key, a prompt or a client's header.
type routerMetrics struct {
	requests    *prometheus.CounterVec   // route, model, provider, code, endpoint
	attempts    *prometheus.CounterVec   // model, provider, outcome
	duration    *prometheus.HistogramVec // model, provider
	ttft        *prometheus.HistogramVec // model, provider
	tokens      *prometheus.CounterVec   // model, provider, type, client
	estimated   *prometheus.CounterVec   // model, provider, type
	cost        *prometheus.CounterVec   // model, provider, currency, client
	failovers   *prometheus.CounterVec   // model, provider, reason
	lastResort  *prometheus.CounterVec   // model, provider
	hedges      *prometheus.CounterVec   // model, provider, result
	hedgeCost   *prometheus.CounterVec   // model, provider, currency
	unavailable *prometheus.CounterVec   // route
	ruleCost    *prometheus.CounterVec   // route, when
	inFlight    *prometheus.GaugeVec     // model, provider
	health      healthCollector          // health_score and up, read from the live state

	budgetActions      *prometheus.CounterVec // budget, action
	budgetSyncFailures *prometheus.CounterVec // budget
	budgets            budgetCollector        // budget_spend, budget_limit, budget_warn_at, read from the ledgers

	cacheRequests *prometheus.CounterVec // route, result
	cacheSaved    *prometheus.CounterVec // currency

	semanticGuards     *prometheus.CounterVec   // guard
	semanticSimilarity [3]prometheus.Observer   // by semanticOutcome
	semanticSimVec     *prometheus.HistogramVec // result
	semanticCost       *prometheus.CounterVec   // currency
	semanticFailures   prometheus.Counter
	semanticSkipped    prometheus.Counter
	caches             cacheCollector // cache_entries, cache_bytes, read from the stores
}

const (
	metricsNamespace = "caddy"
	metricsSubsystem = "llm_router"
)

// Buckets that fit LLM latencies: a cached answer in 50 ms, a long
// reasoning answer in two minutes.
var (
	durationBuckets = []float64{0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 20, 30, 60, 120}
	ttftBuckets     = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 30}
)

var metrics = newRouterMetrics()

// semanticOutcome is what became of a semantic lookup's best candidate
// (the result label of caddy_llm_router_cache_semantic_similarity)
type semanticOutcome int

const (
	semanticServed  semanticOutcome = iota // at or above the threshold, guards passed: served
	semanticBlocked                        // at or above the threshold, refused by a guard
	semanticMissed                         // below the threshold
)

var semanticOutcomes = [...]string{"hit", "blocked", "miss"}

// similarityBuckets resolve the range where thresholds are set.
var similarityBuckets = []float64{0.5, 0.6, 0.7, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 1}

func newRouterMetrics() *routerMetrics {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: name, Help: help}
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts(opts(name, help)), labels)
	}
	histogram := func(name, help string, buckets []float64) *prometheus.HistogramVec {
		o := opts(name, help)
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: o.Namespace, Subsystem: o.Subsystem, Name: o.Name, Help: o.Help, Buckets: buckets,
		}, []string{"model", "provider"})
	}
	m := &routerMetrics{
		requests: counter("requests_total",
			"Client requests handled by the router, by route, model (the one that answered, else the known one the request named), provider, HTTP status and endpoint (chat, completions, responses, embeddings, models, or empty for an unknown path).",
			"route", "model", "provider", "code", "endpoint"),
		attempts: counter("attempts_total",
			"Upstream attempts, by model, provider and outcome.",
			"model", "provider", "outcome"),
		duration: histogram("request_duration_seconds",
			"Time from a client request's arrival to the end of its response, by the model that answered.", durationBuckets),
		ttft: histogram("time_to_first_token_seconds",
			"Streaming requests: time from arrival to the first event of an answer sent to the client (none for a stream refused at its first event).", ttftBuckets),
		tokens: counter("tokens_total",
			"Tokens as reported by the providers (estimated when a stream ended without usage), by type (input, output, cached_input) and client (client_label; empty without one).",
			"model", "provider", "type", "client"),
		estimated: counter("estimated_tokens_total",
			"The part of tokens_total the router estimated because the provider reported no usage (a stream abandoned, broken or from a provider with stream_usage off) or none for the text after its last report (output only), by type (input, output).",
			"model", "provider", "type"),
		cost: counter("cost_total",
			"Cost of the tokens at the configured prices, in the configured currency, by client (client_label; empty without one).",
			"model", "provider", "currency", "client"),
		failovers: counter("failovers_total",
			"Attempts after which the router moved on to the next candidate, by the deployment failed over from and why.",
			"model", "provider", "reason"),
		hedges: counter("hedges_total",
			"Hedges started (failover hedge_after): a second attempt beside one without a first byte, by the hedge's deployment and whether it answered (won), the first attempt did (lost), or neither (failed).",
			"model", "provider", "result"),
		hedgeCost: counter("hedge_lost_cost_total",
			"Cost of the attempts canceled because the other attempt of their hedge answered first (their usage, or their input estimated), by deployment; part of cost_total.",
			"model", "provider", "currency"),
		lastResort: counter("last_resort_attempts_total",
			"Attempts on a disabled deployment after every enabled candidate of the request failed (a last resort before 503), by deployment.",
			"model", "provider"),
		unavailable: counter("unavailable_total",
			"Requests answered 503 all_models_unavailable, by route.",
			"route"),
		ruleCost: counter("rule_cost_exceeded_total",
			"Routing rule evaluations stopped at the CEL cost limit (the rule counted as false), by route and When (1-based).",
			"route", "when"),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("in_flight", "Upstream attempts in progress.")),
			[]string{"model", "provider"}),
		budgetActions: counter("budget_actions_total",
			"What budgets did: warned (a limit's warn_at share reached, once per period and key), downgraded (a request served from the downgrade route), refused (429 budget_exceeded).",
			"budget", "action"),
		budgetSyncFailures: counter("budget_sync_failures_total",
			"Budget syncs with Caddy's storage that failed; the budget kept counting locally.",
			"budget"),
		budgets: budgetCollector{
			spend: prometheus.NewDesc("caddy_llm_router_budget_spend",
				"Spend in the current period of the budget's most spent key (fleet-wide as of the last sync), in the handler's currency.", []string{"budget", "period"}, nil),
			limit: prometheus.NewDesc("caddy_llm_router_budget_limit",
				"A budget's limit per period, in the handler's currency; for a hard cap's period that no limit has, the hard cap.", []string{"budget", "period"}, nil),
			warnAt: prometheus.NewDesc("caddy_llm_router_budget_warn_at",
				"A budget's warn_at, as a share of its limit (0.8 for 80%).", []string{"budget", "period"}, nil),
		},
		cacheRequests: counter("cache_requests_total",
			"Requests the response cache applied to, by route and result: hit (answered from the cache), miss (asked a model), stale (every model failed; answered from an expired entry), bypass (Cache-Control, n > 1, or an empty scope), semantic_hit (a paraphrase's stored answer), semantic_blocked (a close question a guard refused: asked a model).",
			"route", "result"),
		cacheSaved: counter("cache_saved_cost_total",
			"What the answers served from the cache cost when a model first gave them, in the handler's currency: the spend the cache saved (before the semantic lookup's embedding cost, cache_semantic_embedding_cost_total).",
			"currency"),
		semanticGuards: counter("cache_semantic_guard_blocks_total",
			"Semantic lookups whose best candidate was above the threshold but refused by a guard (its numbers, codes, e-mail addresses, URLs or negation differ), by guard.",
			"guard"),
		semanticSimVec: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name:    "cache_semantic_similarity",
			Help:    "Cosine similarity of the best stored question of each semantic lookup that found one, by what became of it: hit (served), blocked (a guard refused it), miss (below the threshold).",
			Buckets: similarityBuckets}, []string{"result"}),
		semanticCost: counter("cache_semantic_embedding_cost_total",
			"What embedding questions for the semantic lookup cost (also in cost_total, under the embedding model); the cache's net saving is cache_saved_cost_total minus this.",
			"currency"),
		semanticFailures: prometheus.NewCounter(prometheus.CounterOpts(opts("cache_semantic_embedding_failures_total",
			"Semantic lookups that got no vector (the embedding failed, was refused by a budget or took longer than lookup_timeout): the request was an ordinary miss."))),
		semanticSkipped: prometheus.NewCounter(prometheus.CounterOpts(opts("cache_semantic_lookups_skipped_total",
			"Semantic lookups not made because the embedding model is resting after embeddings failed or were late several times in a row: the request was an ordinary miss, with no embedding wait."))),
		caches: cacheCollector{
			entries: prometheus.NewDesc("caddy_llm_router_cache_entries", "Answers held by the response caches.", nil, nil),
			bytes:   prometheus.NewDesc("caddy_llm_router_cache_bytes", "Memory the response caches' answers take, as weighed against max_size.", nil, nil),
		},
		health: healthCollector{
			score: prometheus.NewDesc("caddy_llm_router_health_score",
				"Health score of a deployment, 0 to 100.", []string{"model", "provider"}, nil),
			up: prometheus.NewDesc("caddy_llm_router_up",
				"1 if a deployment is in rotation, 0 if it is disabled or cooling down.", []string{"model", "provider"}, nil),
		},
	}
	for o, name := range semanticOutcomes {
		m.semanticSimilarity[o] = m.semanticSimVec.WithLabelValues(name)
	}
	for _, g := range semantic.Guards {
		m.semanticGuards.WithLabelValues(string(g)) // every guard's series from the start, at 0
	}
	return m
}

// register adds the collectors to a config's registry; collectors already
// there (another handler of the same config) are fine.
func (m *routerMetrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{
		m.requests, m.attempts, m.duration, m.ttft, m.tokens, m.estimated, m.cost,
		m.failovers, m.lastResort, m.hedges, m.hedgeCost, m.unavailable, m.ruleCost, m.inFlight, &m.health,
		m.budgetActions, m.budgetSyncFailures, &m.budgets,
		m.cacheRequests, m.cacheSaved, &m.caches,
		m.semanticGuards, m.semanticSimVec, m.semanticCost, m.semanticFailures, m.semanticSkipped,
	} {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}

// deploymentMetrics are a deployment's children of the metric vectors,
// resolved once at provision so the request path does no label lookups
// (those of a client label once per client).
type deploymentMetrics struct {
	attempts   [outcomeCount]prometheus.Counter
	failovers  [outcomeCount]prometheus.Counter
	lastResort prometheus.Counter
	// hedges started to this deployment, by hedgeResult: from provision
	// on, as attempts are, so that the first hedge is a rise that rate()
	// sees and the dashboard's hedge panel has data
	hedges [len(hedgeResults)]prometheus.Counter
	// what this deployment's attempts that lost a hedge cost
	hedgeLostCost prometheus.Counter
	duration      prometheus.Observer
	ttft          prometheus.Observer
	inFlight      prometheus.Gauge
	spend         *spendMetrics // with client ""
	// the estimated part of the tokens: input, output
	estimatedIn, estimatedOut prometheus.Counter

	model, provider, currency string
	clients                   sync.Map // client label -> *spendMetrics
}

// spendMetrics are the tokens and cost children of one client.
type spendMetrics struct {
	inputTokens prometheus.Counter
	outputToks  prometheus.Counter
	cachedToks  prometheus.Counter
	cost        prometheus.Counter
}

func (m *routerMetrics) forDeployment(model, provider, currency string) *deploymentMetrics {
	dm := &deploymentMetrics{
		duration:      m.duration.WithLabelValues(model, provider),
		ttft:          m.ttft.WithLabelValues(model, provider),
		inFlight:      m.inFlight.WithLabelValues(model, provider),
		lastResort:    m.lastResort.WithLabelValues(model, provider),
		hedgeLostCost: m.hedgeCost.WithLabelValues(model, provider, currency),
		model:         model, provider: provider, currency: currency,
		estimatedIn:  m.estimated.WithLabelValues(model, provider, "input"),
		estimatedOut: m.estimated.WithLabelValues(model, provider, "output"),
	}
	dm.spend = m.spendFor(model, provider, currency, "")
	for i, o := range outcomes {
		dm.attempts[i] = m.attempts.WithLabelValues(model, provider, string(o))
		dm.failovers[i] = m.failovers.WithLabelValues(model, provider, string(o))
	}
	for i, r := range hedgeResults {
		dm.hedges[i] = m.hedges.WithLabelValues(model, provider, r)
	}
	return dm
}

// forRoutes creates a config's per-route series of the events that alerts
// and the dashboard watch at 0, as forDeployment does for attempts and
// hedges: a series born at its first event shows no rise to rate() and
// increase(). Each route's unavailable_total, and when the cache serves
// stale answers, each route's stale cache_requests_total (route "" too:
// requests that named a model or no route).
func (m *routerMetrics) forRoutes(routes map[string][]string, stale bool) {
	for route := range routes {
		m.unavailable.WithLabelValues(route)
		if stale {
			cacheCounters.with(cacheLabels{route, cacheStale})
		}
	}
	if stale {
		cacheCounters.with(cacheLabels{"", cacheStale})
	}
}

// hedgeResult is who answered a hedged request (the result label of
// caddy_llm_router_hedges_total): the hedge, the first attempt, or neither.
type hedgeResult int

const (
	hedgeByHedge hedgeResult = iota
	hedgeByFirst
	hedgeByNeither
)

var hedgeResults = [...]string{"won", "lost", "failed"}

func (m *routerMetrics) spendFor(model, provider, currency, client string) *spendMetrics {
	return &spendMetrics{
		inputTokens: m.tokens.WithLabelValues(model, provider, "input", client),
		outputToks:  m.tokens.WithLabelValues(model, provider, "output", client),
		cachedToks:  m.tokens.WithLabelValues(model, provider, "cached_input", client),
		cost:        m.cost.WithLabelValues(model, provider, currency, client),
	}
}

// forClient is the tokens and cost children of a client (bounded by
// clientOf).
func (dm *deploymentMetrics) forClient(client string) *spendMetrics {
	if client == "" {
		return dm.spend
	}
	if sm, ok := dm.clients.Load(client); ok {
		return sm.(*spendMetrics)
	}
	sm, _ := dm.clients.LoadOrStore(client, metrics.spendFor(dm.model, dm.provider, dm.currency, client))
	return sm.(*spendMetrics)
}

// budgetMetrics are a budget's action counters, by action.
type budgetMetrics struct {
	actions [actionCount]prometheus.Counter
}

func (m *routerMetrics) forBudget(name string) *budgetMetrics {
	bm := new(budgetMetrics)
	for i, a := range actionNames {
		bm.actions[i] = m.budgetActions.WithLabelValues(name, a)
	}
	return bm
}

// budgetCollector exports each budget's spend and limits from the ledgers.
type budgetCollector struct {
	spend, limit, warnAt *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c *budgetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.spend
	ch <- c.limit
	ch <- c.warnAt
}

// Collect implements prometheus.Collector, from a snapshot of the ledgers.
func (c *budgetCollector) Collect(ch chan<- prometheus.Metric) {
	t := now()
	var ledgers []*budgetLedger
	budgetLedgers.Range(func(_, v any) bool {
		ledgers = append(ledgers, v.(*budgetLedger))
		return true
	})
	for _, l := range ledgers {
		b := l.owner()
		if b == nil {
			continue
		}
		// a hard cap of its own period too, with the cap as its limit
		// (and the budget's warn_at): else nothing here would near it
		for _, lim := range b.caps() {
			top, _, _ := l.topKeys(lim.period, t, 1)
			spent := 0.0
			if len(top) > 0 {
				spent = top[0].spent
			}
			p := lim.period.String()
			ch <- prometheus.MustNewConstMetric(c.spend, prometheus.GaugeValue, spent, b.name, p)
			ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, lim.amount, b.name, p)
			ch <- prometheus.MustNewConstMetric(c.warnAt, prometheus.GaugeValue, b.warnAt, b.name, p)
		}
	}
}

// outcomes lists every outcome, in the order of outcome.index.
var outcomes = [...]outcome{outcomeSuccess, outcomeClientError, outcomeServerError, outcomeRateLimited, outcomeTimeout, outcomeConnectError, outcomeRejected, outcomeCanceled, outcomeHedgeLost, outcomeNotHere}

const outcomeCount = len(outcomes)

// failed reports whether an outcome counts against the deployment: every
// outcome but success, the client's own 4xx, the client going away, a
// hedge lost and stored context the deployment lacks.
func (o outcome) failed() bool {
	return o != outcomeSuccess && o != outcomeClientError && o != outcomeCanceled && o != outcomeHedgeLost && o != outcomeNotHere
}

func (o outcome) index() int {
	for i, x := range outcomes {
		if x == o {
			return i
		}
	}
	return int(outcomeCount) - 1
}

// statusCodes avoids formatting the common status codes per request.
var statusCodes = func() map[int]string {
	m := make(map[int]string)
	for _, c := range []int{200, 400, 401, 403, 404, 405, 408, 413, 422, 429, 499, 500, 502, 503, 504} {
		m[c] = strconv.Itoa(c)
	}
	return m
}()

func statusLabel(code int) string {
	if s, ok := statusCodes[code]; ok {
		return s
	}
	return strconv.Itoa(code)
}

// requestLabels are the labels of caddy_llm_router_requests_total.
type requestLabels struct {
	route, model, provider string
	status                 int
	ep                     endpoint
}

// cacheLabels are the labels of caddy_llm_router_cache_requests_total.
type cacheLabels struct{ route, result string }

// Every request ends with a requests_total (and, under a cache, a
// cache_requests_total) increment, every hit with a cache_saved_cost_total
// one; these keep the counters by their labels, as WithLabelValues hashes
// and validates every label value on each call: a measurable share of a
// cache hit.
var (
	requestCounters = counterMemo[requestLabels]{child: func(l requestLabels) prometheus.Counter {
		return metrics.requests.WithLabelValues(l.route, l.model, l.provider, statusLabel(l.status), l.ep.String())
	}}
	cacheCounters = counterMemo[cacheLabels]{child: func(l cacheLabels) prometheus.Counter {
		return metrics.cacheRequests.WithLabelValues(l.route, l.result)
	}}
	// cache_saved_cost_total by currency, added to on every hit
	savedCounters = counterMemo[string]{child: func(currency string) prometheus.Counter {
		return metrics.cacheSaved.WithLabelValues(currency)
	}}
)

// counterMemo keeps the children of a counter vector by their labels. The
// router never deletes a child, so a kept one stays the exported series;
// there are no more of them than the vector has children.
type counterMemo[L comparable] struct {
	child func(L) prometheus.Counter

	mu       sync.RWMutex
	counters map[L]prometheus.Counter
}

func (m *counterMemo[L]) with(l L) prometheus.Counter {
	m.mu.RLock()
	c, ok := m.counters[l]
	m.mu.RUnlock()
	if ok {
		return c
	}
	c = m.child(l)
	m.mu.Lock()
	if m.counters == nil {
		m.counters = map[L]prometheus.Counter{}
	}
	m.counters[l] = c
	m.mu.Unlock()
	return c
}

// healthCollector exports each deployment's score and rotation state from
// the live state (no second copy to keep in sync).
type healthCollector struct {
	score, up *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c *healthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.score
	ch <- c.up
}

// Collect implements prometheus.Collector. It reads a snapshot of the
// states, so no lock is held while Prometheus consumes the channel. A
// deployment ID with states at two upstreams (two handlers, or a reload
// that changed one while the old config is still loaded) is one series:
// the worse of them, as a series may be gathered only once.
func (c *healthCollector) Collect(ch chan<- prometheus.Metric) {
	t := now()
	type health struct{ score, up float64 }
	worst := map[deploymentID]health{}
	for _, s := range liveStates() {
		v := s.viewAt(t)
		h := health{float64(v.score), 0}
		if v.state == stateUp {
			h.up = 1
		}
		if w, seen := worst[s.id]; seen {
			h = health{min(h.score, w.score), min(h.up, w.up)}
		}
		worst[s.id] = h
	}
	for id, h := range worst {
		ch <- prometheus.MustNewConstMetric(c.score, prometheus.GaugeValue, h.score, id.model, id.provider)
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, h.up, id.model, id.provider)
	}
}

// cacheCollector exports the size of the response caches.
type cacheCollector struct {
	entries, bytes *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.entries
	ch <- c.bytes
}

// Collect implements prometheus.Collector, from a snapshot of the stores.
func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	var entries, bytes float64
	for _, s := range liveCacheStores() {
		entries += float64(s.entries.Len())
		bytes += float64(s.entries.Size())
	}
	ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, entries)
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, bytes)
}

// Interface guards
var (
	_ prometheus.Collector = (*cacheCollector)(nil)
	_ prometheus.Collector = (*healthCollector)(nil)
	_ prometheus.Collector = (*budgetCollector)(nil)
)
