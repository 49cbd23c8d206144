package llmrouter

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
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
	tokens      *prometheus.CounterVec   // model, provider, type
	cost        *prometheus.CounterVec   // model, provider, currency
	failovers   *prometheus.CounterVec   // model, provider, reason
	unavailable *prometheus.CounterVec   // route
	inFlight    *prometheus.GaugeVec     // model, provider
	health      healthCollector          // health_score and up, read from the live state
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
	return &routerMetrics{
		requests: counter("requests_total",
			"Client requests handled by the router, by route, model (the one that answered, else the known one the request named), provider, HTTP status and endpoint (chat, completions, responses, embeddings, models, or empty for an unknown path).",
			"route", "model", "provider", "code", "endpoint"),
		attempts: counter("attempts_total",
			"Upstream attempts, by model, provider and outcome.",
			"model", "provider", "outcome"),
		duration: histogram("request_duration_seconds",
			"Time from a client request's arrival to the end of its response, by the model that answered.", durationBuckets),
		ttft: histogram("time_to_first_token_seconds",
			"Streaming requests: time from arrival to the first event sent to the client.", ttftBuckets),
		tokens: counter("tokens_total",
			"Tokens as reported by the providers (estimated when a stream ended without usage), by type: input, output, cached_input.",
			"model", "provider", "type"),
		cost: counter("cost_total",
			"Cost of the tokens at the configured prices, in the configured currency.",
			"model", "provider", "currency"),
		failovers: counter("failovers_total",
			"Attempts after which the router moved on to the next candidate, by the deployment failed over from and why.",
			"model", "provider", "reason"),
		unavailable: counter("unavailable_total",
			"Requests answered 503 all_models_unavailable, by route.",
			"route"),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("in_flight", "Upstream attempts in progress.")),
			[]string{"model", "provider"}),
		health: healthCollector{
			score: prometheus.NewDesc("caddy_llm_router_health_score",
				"Health score of a deployment, 0 to 100.", []string{"model", "provider"}, nil),
			up: prometheus.NewDesc("caddy_llm_router_up",
				"1 if a deployment is in rotation, 0 if it is disabled or cooling down.", []string{"model", "provider"}, nil),
		},
	}
}

// register adds the collectors to a config's registry; collectors already
// there (another handler of the same config) are fine.
func (m *routerMetrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{
		m.requests, m.attempts, m.duration, m.ttft, m.tokens, m.cost,
		m.failovers, m.unavailable, m.inFlight, &m.health,
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
// resolved once at provision so the request path does no label lookups.
type deploymentMetrics struct {
	attempts    [outcomeCount]prometheus.Counter
	failovers   [outcomeCount]prometheus.Counter
	duration    prometheus.Observer
	ttft        prometheus.Observer
	inputTokens prometheus.Counter
	outputToks  prometheus.Counter
	cachedToks  prometheus.Counter
	cost        prometheus.Counter
	inFlight    prometheus.Gauge
}

func (m *routerMetrics) forDeployment(model, provider, currency string) *deploymentMetrics {
	dm := &deploymentMetrics{
		duration:    m.duration.WithLabelValues(model, provider),
		ttft:        m.ttft.WithLabelValues(model, provider),
		inputTokens: m.tokens.WithLabelValues(model, provider, "input"),
		outputToks:  m.tokens.WithLabelValues(model, provider, "output"),
		cachedToks:  m.tokens.WithLabelValues(model, provider, "cached_input"),
		cost:        m.cost.WithLabelValues(model, provider, currency),
		inFlight:    m.inFlight.WithLabelValues(model, provider),
	}
	for i, o := range outcomes {
		dm.attempts[i] = m.attempts.WithLabelValues(model, provider, string(o))
		dm.failovers[i] = m.failovers.WithLabelValues(model, provider, string(o))
	}
	return dm
}

// outcomes lists every outcome, in the order of outcome.index.
var outcomes = [...]outcome{outcomeSuccess, outcomeClientError, outcomeServerError, outcomeRateLimited, outcomeTimeout, outcomeConnectError, outcomeRejected, outcomeCanceled}

const outcomeCount = len(outcomes)

// failed reports whether an outcome counts against the deployment: every
// outcome but success, the client's own 4xx and the client going away.
func (o outcome) failed() bool {
	return o != outcomeSuccess && o != outcomeClientError && o != outcomeCanceled
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
// states, so no lock is held while Prometheus consumes the channel.
func (c *healthCollector) Collect(ch chan<- prometheus.Metric) {
	t := now()
	for _, s := range liveStates() {
		v := s.viewAt(t)
		up := 0.0
		if v.state == stateUp {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.score, prometheus.GaugeValue, float64(v.score), s.id.model, s.id.provider)
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up, s.id.model, s.id.provider)
	}
}

// Interface guards
var _ prometheus.Collector = (*healthCollector)(nil)
