package llmrouter

import (
	"math"
	"testing"
	"time"

	"go.uber.org/zap"
)

// TestStatsTokensSaturate: token totals stop at math.MaxInt64 rather than
// wrap to a negative count, however large the counts a provider reports
// (a count past int64 is read as math.MaxInt64).
func TestStatsTokensSaturate(t *testing.T) {
	huge := usage{Input: math.MaxInt64, Output: math.MaxInt64 - 1, CachedInput: math.MaxInt64, Estimated: true}
	var s deploymentStats
	s.recordUsage(usage{Input: 10, Output: 20, CachedInput: 5, Estimated: true}, 0.5, "USD")
	s.recordUsage(huge, 1, "USD")
	s.recordUsage(huge, 1, "USD")
	for name, got := range map[string]int64{"input": s.input, "output": s.output, "cached": s.cached, "estimated input": s.estIn, "estimated output": s.estOut} {
		if got != math.MaxInt64 {
			t.Errorf("%s = %d, want %d", name, got, int64(math.MaxInt64))
		}
	}

	const client = "TestStatsTokensSaturate"
	t.Cleanup(func() {
		clientTotals.Lock()
		delete(clientTotals.m, client)
		clientTotals.Unlock()
	})
	recordClient(client, usage{Input: 1, Output: 1, CachedInput: 1}, 0, "USD")
	recordClient(client, huge, 0, "USD")
	recordClientAnswer(client) // two attempts billed, one answer
	clientTotals.Lock()
	c := *clientTotals.m[client]
	clientTotals.Unlock()
	if c.input != math.MaxInt64 || c.output != math.MaxInt64 || c.cached != math.MaxInt64 || c.answers != 1 {
		t.Errorf("client totals %+v, want saturated", c)
	}
}

func TestAddTokens(t *testing.T) {
	cases := []struct{ a, b, want int64 }{
		{1, 2, 3},
		{math.MaxInt64, 1, math.MaxInt64},
		{math.MaxInt64 - 1, 1, math.MaxInt64},
		{math.MaxInt64, math.MaxInt64, math.MaxInt64},
		{math.MinInt64, -1, math.MinInt64},
		{math.MaxInt64, -1, math.MaxInt64 - 1},
		{math.MinInt64, math.MaxInt64, -1},
		{-5, 3, -2},
		{0, 0, 0},
	}
	for _, tc := range cases {
		if got := addTokens(tc.a, tc.b); got != tc.want {
			t.Errorf("addTokens(%d, %d) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestStatsTotalsEstimated: the totals add up every deployment's tokens,
// the estimated part included (README, "Stats and cost CLI").
func TestStatsTotalsEstimated(t *testing.T) {
	d := &deployment{id: deploymentID{"totals-estimated", "p"}, name: "totals-estimated", upstream: "m",
		logger: zap.NewNop(), provider: &provider{name: "p", baseURL: "http://totals-estimated.invalid/v1"}}
	s, err := acquireState(d)
	if err != nil {
		t.Fatal(err)
	}
	d.state = s
	defer releaseState(d)
	s.stats.recordUsage(usage{Input: 30, Output: 7, Estimated: true}, 0.1, "USD")

	st := collectStats(now())
	var in, out int64
	for _, ds := range st.Deployments {
		in, out = addTokens(in, ds.Tokens.EstimatedInput), addTokens(out, ds.Tokens.EstimatedOutput)
	}
	if in < 30 || out < 7 {
		t.Fatalf("deployments' estimated tokens %d/%d, want at least this test's 30/7", in, out)
	}
	if got := st.Totals.Tokens; got.EstimatedInput != in || got.EstimatedOutput != out {
		t.Errorf("totals' estimated tokens %d/%d, want %d/%d, the deployments' sum", got.EstimatedInput, got.EstimatedOutput, in, out)
	}
}

// TestLatencyHistogramLongRun: a deployment's histogram lives as long as
// its state (across reloads): a busy one's billions of requests of tens of
// seconds each must neither wrap its bucket counts (4,294,967,295 in one
// bucket: 50 days at 1,000 requests a second) nor its summed latency
// (2^63 ns: 330 million requests of 28 s), which would make its p50 the
// last bucket's 10 minutes and its mean negative.
func TestLatencyHistogramLongRun(t *testing.T) {
	const d = 28 * time.Second
	var h latencyHistogram
	h.counts[latencyBucket(d)] = math.MaxUint32 - 1
	h.n = math.MaxUint32 - 1
	for range 3 {
		h.observe(d)
	}
	if p50 := h.quantile(0.5); p50 < d*9/10 || p50 > d*11/10 {
		t.Errorf("p50 = %v after %d observations of %v", p50, h.n, d)
	}

	// the sum: three latencies that add up past 2^63 ns as those
	// millions do
	var s latencyHistogram
	for range 3 {
		s.observe(math.MaxInt64 / 2)
	}
	if m := s.mean(); m < math.MaxInt64/2*99/100 {
		t.Errorf("mean = %v of three observations of %v", m, time.Duration(math.MaxInt64/2))
	}
}
