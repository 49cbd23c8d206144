package llmrouter

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
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
}

// DeploymentStats is one deployment's traffic and health. Each number has
// a human-readable twin (a _human field).
type DeploymentStats struct {
	Model    string `json:"model"`
	Provider string `json:"provider"`
	Upstream string `json:"upstream"`

	State         string     `json:"state"` // up, cooldown or disabled
	HealthScore   int        `json:"health_score"`
	CooldownUntil *time.Time `json:"cooldown_until,omitempty"`
	CooldownHuman string     `json:"cooldown_until_human,omitempty"`

	Requests       int64   `json:"requests"`
	RequestsHuman  string  `json:"requests_human"`
	Errors         int64   `json:"errors"`
	ErrorsHuman    string  `json:"errors_human"`
	ErrorRate      float64 `json:"error_rate"`
	ErrorRateHuman string  `json:"error_rate_human"`

	Latency          LatencyStats `json:"latency"`
	TimeToFirstToken LatencyStats `json:"time_to_first_token"`
	Tokens           TokenStats   `json:"tokens"`

	Cost      float64 `json:"cost"`
	CostHuman string  `json:"cost_human"`
	Currency  string  `json:"currency"`

	LastError      string     `json:"last_error,omitempty"`
	LastErrorAt    *time.Time `json:"last_error_at,omitempty"`
	LastErrorHuman string     `json:"last_error_at_human,omitempty"`
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

// TokenStats count tokens as the providers reported them.
type TokenStats struct {
	Input            int64  `json:"input"`
	Output           int64  `json:"output"`
	CachedInput      int64  `json:"cached_input"`
	InputHuman       string `json:"input_human"`
	OutputHuman      string `json:"output_human"`
	CachedInputHuman string `json:"cached_input_human"`
}

// TotalStats add up all deployments.
type TotalStats struct {
	Requests       int64      `json:"requests"`
	RequestsHuman  string     `json:"requests_human"`
	Errors         int64      `json:"errors"`
	ErrorsHuman    string     `json:"errors_human"`
	ErrorRate      float64    `json:"error_rate"`
	ErrorRateHuman string     `json:"error_rate_human"`
	Tokens         TokenStats `json:"tokens"`
	Cost           float64    `json:"cost"`
	CostHuman      string     `json:"cost_human"`
	Currency       string     `json:"currency"`
}

// collectStats reads every live deployment state.
func collectStats(t time.Time) Stats {
	out := Stats{GeneratedAt: t, Deployments: []DeploymentStats{}}
	for _, st := range liveStates() {
		if d, ok := st.report(t); ok {
			out.Deployments = append(out.Deployments, d)
		}
	}
	slices.SortFunc(out.Deployments, func(a, b DeploymentStats) int {
		return cmp.Or(cmp.Compare(a.Model, b.Model), cmp.Compare(a.Provider, b.Provider), cmp.Compare(a.Upstream, b.Upstream))
	})
	tot := &out.Totals
	var currencies []string
	for _, d := range out.Deployments {
		tot.Requests += d.Requests
		tot.Errors += d.Errors
		tot.Tokens.Input += d.Tokens.Input
		tot.Tokens.Output += d.Tokens.Output
		tot.Tokens.CachedInput += d.Tokens.CachedInput
		tot.Cost += d.Cost
		if !slices.Contains(currencies, d.Currency) {
			currencies = append(currencies, d.Currency)
		}
	}
	tot.Currency = strings.Join(currencies, "+") // one currency per gateway in practice
	tot.RequestsHuman, tot.ErrorsHuman = humanCount(tot.Requests), humanCount(tot.Errors)
	tot.ErrorRate = ratio(tot.Errors, tot.Requests)
	tot.ErrorRateHuman = humanPercent(tot.ErrorRate)
	tot.Tokens.humanize()
	tot.CostHuman = humanMoney(tot.Cost, tot.Currency)
	return out
}

// report is the state's entry in the stats API, labelled with its owner's
// settings; ok is false for a state no config uses any more.
func (s *sharedState) report(t time.Time) (DeploymentStats, bool) {
	owner := s.owner()
	if owner == nil {
		return DeploymentStats{}, false
	}
	v := s.viewAt(t)
	lastErr, lastErrAt := s.lastError()
	st := &s.stats
	st.mu.Lock()
	d := DeploymentStats{
		Model:            s.id.model,
		Provider:         s.id.provider,
		Upstream:         owner.upstream,
		State:            v.state,
		HealthScore:      v.score,
		Requests:         st.requests,
		Errors:           st.errors,
		Latency:          st.latency.report(),
		TimeToFirstToken: st.ttft.report(),
		Tokens:           TokenStats{Input: st.input, Output: st.output, CachedInput: st.cached},
		Currency:         owner.currency.Code,
		LastError:        lastErr,
	}
	for _, m := range st.costs {
		if m.currency == d.Currency {
			d.Cost = m.amount
		}
	}
	st.mu.Unlock()
	d.RequestsHuman, d.ErrorsHuman = humanCount(d.Requests), humanCount(d.Errors)
	d.ErrorRate = ratio(d.Errors, d.Requests)
	d.ErrorRateHuman = humanPercent(d.ErrorRate)
	d.Tokens.humanize()
	d.CostHuman = humanMoney(d.Cost, d.Currency)
	if !v.cooldownUntil.IsZero() {
		until := v.cooldownUntil
		d.CooldownUntil = &until
		d.CooldownHuman = humanize.RelTime(until, t, "ago", "from now")
	}
	if !lastErrAt.IsZero() {
		d.LastErrorAt = &lastErrAt
		d.LastErrorHuman = humanize.RelTime(lastErrAt, t, "ago", "from now")
	}
	return d, true
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

// humanCount writes 1234567 as "1.2M" and 950 as "950".
func humanCount(n int64) string {
	if n < 1000 {
		return fmt.Sprint(n)
	}
	v, unit := humanize.ComputeSI(float64(n))
	return humanize.FtoaWithDigits(math.Round(v*10)/10, 1) + unit
}

func humanPercent(r float64) string {
	return humanize.FtoaWithDigits(math.Round(r*1000)/10, 1) + "%"
}

func humanMoney(v float64, currency string) string {
	return humanize.CommafWithDigits(math.Round(v*100)/100, 2) + " " + currency
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
