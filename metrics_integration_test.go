package llmrouter

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"

	"github.com/llmrouter/caddy-llm-router/internal/openai"
)

// series is a scrape of Caddy's admin /metrics: value by
// `name{label="value",...}` with labels sorted by name.
type series map[string]float64

func scrape(t *testing.T) series {
	t.Helper()
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	out := series{}
	for name, fam := range families {
		if !strings.HasPrefix(name, "caddy_llm_router_") {
			continue
		}
		for _, m := range fam.GetMetric() {
			key := func(suffix string, extra ...*dto.LabelPair) string {
				labels := append(slices.Clone(m.GetLabel()), extra...)
				slices.SortFunc(labels, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
				var parts []string
				for _, l := range labels {
					parts = append(parts, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
				}
				return name + suffix + "{" + strings.Join(parts, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key("")] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key("")] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[key("_count")] = float64(m.GetHistogram().GetSampleCount())
				out[key("_sum")] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}

// sel builds a series key; labels are given as name, value pairs in any
// order.
func sel(name string, labels ...string) string {
	type kv struct{ k, v string }
	var l []kv
	for i := 0; i+1 < len(labels); i += 2 {
		l = append(l, kv{labels[i], labels[i+1]})
	}
	slices.SortFunc(l, func(a, b kv) int { return strings.Compare(a.k, b.k) })
	var parts []string
	for _, p := range l {
		parts = append(parts, fmt.Sprintf("%s=%q", p.k, p.v))
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}

func (after series) delta(before series, key string) float64 { return after[key] - before[key] }

// requestsDone counts routed requests as the router finishes them.
func requestsDone(t *testing.T) <-chan struct{} {
	ch := make(chan struct{}, 64)
	hook := func() { ch <- struct{}{} }
	requestDoneHook.Store(&hook)
	t.Cleanup(func() { requestDoneHook.Store(nil) })
	return ch
}

// postCounted posts a JSON body to url and reads the whole answer (a
// broken stream's read error is returned), once the router has counted
// the request (requestsDone).
func postCounted(t *testing.T, url, body string) (*http.Response, []byte, error) {
	t.Helper()
	done := requestsDone(t)
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	waitFor(t, done, "the request to be counted")
	return resp, b, err
}

// TestMetricsCounts: after known traffic the counters equal what the mock
// served, for JSON, streams with and without client-requested usage, and a
// stream the client abandons.
func TestMetricsCounts(t *testing.T) {
	g := newGateway(t, withHealth("\t\tinterval off"))
	done := requestsDone(t)
	before := scrape(t)

	for range 3 {
		resp, body := g.post(chatBody("simple_qa", false))
		expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	}
	for range 2 {
		resp, body := g.post(chatBody("simple_qa", true))
		expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	}
	resp, body := g.post(`{"model":"simple_qa","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Where is my order?"}]}`)
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	for range 6 {
		waitFor(t, done, "a request to be counted")
	}
	served := g.primary.Served("deepseek-chat")
	if served.Requests != 6 {
		t.Fatalf("mock served %d", served.Requests)
	}

	// a stream abandoned after two words: usage estimated
	g.primary.Set("deepseek-chat", mockllm.Behavior{HoldAfterChunks: 2})
	abandoned := chatBody("simple_qa", true)
	aresp, cancel := g.streamUntil(abandoned, "w1 ")
	cancel()
	aresp.Body.Close()
	waitFor(t, done, "the abandoned request to be counted")

	after := scrape(t)
	dl := func(name string, labels ...string) float64 { return after.delta(before, sel(name, labels...)) }
	m := []string{"model", "deepseek-v3.2", "provider", "primary"}
	with := func(extra ...string) []string { return append(slices.Clone(m), extra...) }

	if got := dl("caddy_llm_router_requests_total", with("route", "simple_qa", "code", "200", "endpoint", "chat")...); got != 7 {
		t.Errorf("requests_total +%v, want 7", got)
	}
	if got := dl("caddy_llm_router_attempts_total", with("outcome", "success")...); got != 6 {
		t.Errorf("attempts_total{success} +%v, want 6", got)
	}
	if got := dl("caddy_llm_router_attempts_total", with("outcome", "canceled")...); got != 1 {
		t.Errorf("attempts_total{canceled} +%v, want 1", got)
	}
	// estimated: input from the request's text, output from what streamed
	var rb openai.Request
	if err := rb.Parse([]byte(abandoned), openai.Chat); err != nil {
		t.Fatal(err)
	}
	estIn, estOut := float64(rb.InputTokens()), float64((len("w0 w1 ")+3)/4)
	wantIn, wantOut := float64(served.Prompt)+estIn, float64(served.Completion)+estOut
	if got := dl("caddy_llm_router_tokens_total", with("type", "input", "client", "")...); got != wantIn {
		t.Errorf("input tokens +%v, want %v (%d served + %v estimated)", got, wantIn, served.Prompt, estIn)
	}
	if got := dl("caddy_llm_router_tokens_total", with("type", "output", "client", "")...); got != wantOut {
		t.Errorf("output tokens +%v, want %v (%d served + %v estimated)", got, wantOut, served.Completion, estOut)
	}
	wantCost := (wantIn*0.28 + wantOut*0.42) / 1e6 // deepseek-v3.2's built-in input and output prices
	if got := dl("caddy_llm_router_cost_total", with("currency", "USD", "client", "")...); math.Abs(got-wantCost) > 1e-12 {
		t.Errorf("cost +%v, want %v", got, wantCost)
	}
	if got := dl("caddy_llm_router_request_duration_seconds_count", m...); got != 7 {
		t.Errorf("request_duration observations +%v, want 7", got)
	}
	if got := dl("caddy_llm_router_time_to_first_token_seconds_count", m...); got != 4 {
		t.Errorf("time_to_first_token observations +%v, want 4 (streams only)", got)
	}
	if got := after[sel("caddy_llm_router_in_flight", m...)]; got != 0 {
		t.Errorf("in_flight = %v after all requests ended", got)
	}
	if after[sel("caddy_llm_router_health_score", m...)] != 100 || after[sel("caddy_llm_router_up", m...)] != 1 {
		t.Errorf("health gauges: score %v up %v", after[sel("caddy_llm_router_health_score", m...)], after[sel("caddy_llm_router_up", m...)])
	}

	// the stats API counts the same things (its counters started with
	// this test's config: a new upstream URL)
	st := statsFor(t, g, "deepseek-v3.2", "primary")
	if st.Requests != 7 || st.RequestsByEndpoint["chat"] != 7 || st.Attempts != 7 || st.Errors != 0 {
		t.Errorf("stats: requests %d (%v) attempts %d errors %d, want 7 7 0 as in Prometheus", st.Requests, st.RequestsByEndpoint, st.Attempts, st.Errors)
	}
	if st.Latency.Count != 7 || st.TimeToFirstToken.Count != 4 {
		t.Errorf("stats: latency count %d, ttft count %d, want 7 and 4", st.Latency.Count, st.TimeToFirstToken.Count)
	}
	if float64(st.Tokens.EstimatedInput) != estIn || float64(st.Tokens.EstimatedOutput) != estOut {
		t.Errorf("stats: estimated tokens %d/%d, want %v/%v", st.Tokens.EstimatedInput, st.Tokens.EstimatedOutput, estIn, estOut)
	}
	if got := dl("caddy_llm_router_estimated_tokens_total", with("type", "input")...); got != estIn {
		t.Errorf("estimated input tokens +%v, want %v", got, estIn)
	}
	if got := dl("caddy_llm_router_estimated_tokens_total", with("type", "output")...); got != estOut {
		t.Errorf("estimated output tokens +%v, want %v", got, estOut)
	}
	if float64(st.Tokens.Input) != wantIn || float64(st.Tokens.Output) != wantOut || math.Abs(st.Costs[0].Amount-wantCost) > 1e-12 {
		t.Errorf("stats: tokens %+v cost %+v, want %v/%v and %v", st.Tokens, st.Costs, wantIn, wantOut, wantCost)
	}
}

// TestMetricsFailover: a failover is one failovers_total for the model
// failed over from and one requests_total for the model that answered.
func TestMetricsFailover(t *testing.T) {
	g := newGateway(t, withHealth("\t\tinterval off"))
	done := requestsDone(t)
	before := scrape(t)
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 503})
	resp, body := g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "gemini-2.5-flash", "primary", 2)
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 429})
	resp, _ = g.post(chatBody("simple_qa", false))
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d", resp.StatusCode)
	}
	waitFor(t, done, "request 1")
	waitFor(t, done, "request 2")
	after := scrape(t)
	checks := []struct {
		key  string
		want float64
	}{
		{sel("caddy_llm_router_failovers_total", "model", "deepseek-v3.2", "provider", "primary", "reason", "server_error"), 2},
		{sel("caddy_llm_router_failovers_total", "model", "gemini-2.5-flash", "provider", "primary", "reason", "rate_limited"), 0},
		{sel("caddy_llm_router_requests_total", "route", "simple_qa", "model", "gemini-2.5-flash", "provider", "primary", "code", "200", "endpoint", "chat"), 1},
		{sel("caddy_llm_router_requests_total", "route", "simple_qa", "model", "deepseek-v3.2", "provider", "primary", "code", "200", "endpoint", "chat"), 0},
		{sel("caddy_llm_router_requests_total", "route", "simple_qa", "model", "", "provider", "", "code", "503", "endpoint", "chat"), 1},
		{sel("caddy_llm_router_unavailable_total", "route", "simple_qa"), 1},
		{sel("caddy_llm_router_attempts_total", "model", "deepseek-v3.2", "provider", "primary", "outcome", "server_error"), 2},
		{sel("caddy_llm_router_attempts_total", "model", "gemini-2.5-flash", "provider", "primary", "outcome", "rate_limited"), 1},
	}
	for _, c := range checks {
		if got := after.delta(before, c.key); got != c.want {
			t.Errorf("%s +%v, want %v", c.key, got, c.want)
		}
	}
	if after[sel("caddy_llm_router_up", "model", "gemini-2.5-flash", "provider", "primary")] != 0 {
		t.Error("up should be 0 for a deployment in cooldown")
	}
}

// TestMetricsReloadAndTwoHandlers: two llm_router handlers in one config
// load, and counters survive a reload.
func TestMetricsReloadAndTwoHandlers(t *testing.T) {
	g := newGateway(t, defaultRouter)
	g.post(chatBody("simple_qa", false))
	key := sel("caddy_llm_router_requests_total", "route", "simple_qa", "model", "deepseek-v3.2", "provider", "primary", "code", "200", "endpoint", "chat")
	before := scrape(t)[key]
	if before < 1 {
		t.Fatalf("%s = %v before the reload", key, before)
	}

	body := g.fill(defaultRouter)
	g.tc.InitServer(globalOptions+"\n"+siteAddress+` {
	handle /a/* {
		llm_router {`+body+`
		}
	}
	handle /b/* {
		llm_router {`+body+`
			currency CNY 1
		}
	}
}
`, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	if got := scrape(t)[key]; got != before {
		t.Errorf("%s = %v after the reload, want %v", key, got, before)
	}
	// both handlers use the same four deployments: one probe loop each
	if n := activeProbers.Load(); n != 4 {
		t.Errorf("%d probe loops for two handlers sharing 4 deployments, want 4", n)
	}
	for _, prefix := range []string{"/a", "/b"} {
		resp, body := g.postPath(prefix+"/v1/chat/completions", chatBody("simple_qa", false))
		expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	}
	after := scrape(t)
	if got := after[key]; got != before+2 {
		t.Errorf("%s = %v, want %v", key, got, before+2)
	}
	if after[sel("caddy_llm_router_cost_total", "model", "deepseek-v3.2", "provider", "primary", "currency", "CNY", "client", "")] <= 0 {
		t.Error("the CNY handler's cost was not counted in CNY")
	}
}

// TestMetricsRouteSeriesFromLoad: a route's unavailable_total and, under a
// cache with stale_if_error, its stale cache_requests_total exist at 0 from
// the config's load, so that the first 503 or stale answer is a rise that
// rate() and increase() see (a series born at 1 shows none).
func TestMetricsRouteSeriesFromLoad(t *testing.T) {
	newGateway(t, cacheRouter("\t\tstale_if_error 1h")+"\troute zero_series_qa deepseek-v3.2\n")
	got := scrape(t)
	// the route new to this test is at 0; routes other tests use may
	// have counted already (one registry a process), but are there
	for key, fresh := range map[string]bool{
		sel("caddy_llm_router_unavailable_total", "route", "zero_series_qa"):                       true,
		sel("caddy_llm_router_cache_requests_total", "route", "zero_series_qa", "result", "stale"): true,
		sel("caddy_llm_router_unavailable_total", "route", "complex_reasoning"):                    false,
		sel("caddy_llm_router_cache_requests_total", "route", "", "result", "stale"):               false,
	} {
		if v, ok := got[key]; !ok || fresh && v != 0 {
			t.Errorf("%s = %v (present %v) after the config's load, want present%s", key, v, ok, map[bool]string{true: " at 0"}[fresh])
		}
	}
}
