package llmrouter

import (
	"math"
	"sync"
	"time"
)

// deploymentStats are a deployment's counters since its state was created
// (they survive reloads with it). Each counts exactly what one Prometheus
// series counts, so the stats API and the metrics agree: requests are
// requests_total (client requests the deployment answered, whatever their
// status, abandoned streams included), outcomes are attempts_total, the
// histograms observe what request_duration_seconds and
// time_to_first_token_seconds observe, tokens and costs are tokens_total
// and cost_total.
type deploymentStats struct {
	mu       sync.Mutex
	requests [endpointCount]int64
	outcomes [outcomeCount]int64
	latency  latencyHistogram
	ttft     latencyHistogram
	input    int64
	output   int64
	cached   int64
	// the part of input and output the router estimated
	estIn, estOut int64
	costs         []money // one per currency the deployment was billed in
	// hedges started to this deployment, and those it won (hedge.go); the
	// cost of its attempts that lost a hedge
	hedges, hedgesWon int64
	hedgeLostCosts    []money
}

// money is an amount in one currency.
type money struct {
	currency string
	amount   float64
}

// recordHedge counts a hedge started to this deployment.
func (s *deploymentStats) recordHedge(won bool) {
	s.mu.Lock()
	s.hedges++
	if won {
		s.hedgesWon++
	}
	s.mu.Unlock()
}

// recordHedgeLost adds the cost of an attempt that lost a hedge.
func (s *deploymentStats) recordHedgeLost(cost float64, currency string) {
	s.mu.Lock()
	s.hedgeLostCosts = addMoney(s.hedgeLostCosts, currency, cost)
	s.mu.Unlock()
}

// recordAttempt counts one finished upstream attempt.
func (s *deploymentStats) recordAttempt(o outcome) {
	s.mu.Lock()
	s.outcomes[o.index()]++
	s.mu.Unlock()
}

// recordRequest counts a client request the deployment answered, and its
// duration from arrival to the end of the response.
func (s *deploymentStats) recordRequest(ep endpoint, d time.Duration) {
	s.mu.Lock()
	s.requests[ep]++
	s.latency.observe(d)
	s.mu.Unlock()
}

// recordFirstToken observes a stream's time from arrival to first event.
func (s *deploymentStats) recordFirstToken(d time.Duration) {
	s.mu.Lock()
	s.ttft.observe(d)
	s.mu.Unlock()
}

// recordUsage adds a response's tokens and its cost in currency.
func (s *deploymentStats) recordUsage(u usage, cost float64, currency string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.input = addTokens(s.input, u.Input)
	s.output = addTokens(s.output, u.Output)
	s.cached = addTokens(s.cached, u.CachedInput)
	if u.Estimated {
		if !u.InputReported {
			s.estIn = addTokens(s.estIn, u.Input)
		}
		s.estOut = addTokens(s.estOut, u.Output)
	}
	s.costs = addMoney(s.costs, currency, cost)
}

// latencyHistogram estimates latency quantiles in constant memory: counts
// in log-spaced buckets from 1 ms to about 10 minutes, 10% apart, so a
// quantile is off by at most 5%. It lives as long as its deployment's
// state, across reloads: the counts are 64-bit (a bucket of a busy
// deployment passes 2^32 in weeks) and the sum is seconds in a float (the
// latencies of 330 million requests of 28 s pass 2^63 ns).
type latencyHistogram struct {
	counts [latencyBuckets]uint64
	n      int64
	sum    float64 // seconds
}

const (
	latencyBuckets = 140
	latencyMin     = time.Millisecond
	latencyGrowth  = 1.1
)

var logGrowth = math.Log(latencyGrowth)

func latencyBucket(d time.Duration) int {
	if d <= latencyMin {
		return 0
	}
	i := int(math.Log(float64(d)/float64(latencyMin))/logGrowth) + 1
	return min(i, latencyBuckets-1)
}

// bucketMid is a representative latency of bucket i (its geometric middle).
func bucketMid(i int) time.Duration {
	if i == 0 {
		return latencyMin
	}
	lo := float64(latencyMin) * math.Pow(latencyGrowth, float64(i-1))
	return time.Duration(lo * math.Sqrt(latencyGrowth))
}

func (h *latencyHistogram) observe(d time.Duration) {
	h.counts[latencyBucket(d)]++
	h.n++
	h.sum += d.Seconds()
}

func (h *latencyHistogram) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	ns := h.sum / float64(h.n) * float64(time.Second)
	if ns >= math.MaxInt64 { // 2^63 once rounded: past any Duration
		return math.MaxInt64
	}
	return time.Duration(ns)
}

// quantile returns the q-quantile (0 < q <= 1), 0 without observations.
func (h *latencyHistogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(h.n)))
	var seen int64
	for i, c := range h.counts {
		seen += int64(c)
		if seen >= rank {
			return bucketMid(i)
		}
	}
	return bucketMid(latencyBuckets - 1)
}

// clientTotals are the spend of each client label (client_label) since
// the process started, as the tokens and cost metrics count it.
var clientTotals = struct {
	sync.Mutex
	m map[string]*clientTotal
}{m: map[string]*clientTotal{}}

type clientTotal struct {
	answers               int64 // client requests a deployment answered (recordClientAnswer)
	input, output, cached int64
	costs                 []money
}

// recordClient adds an attempt's usage and cost to its client's totals.
func recordClient(client string, u usage, cost float64, currency string) {
	clientTotals.Lock()
	defer clientTotals.Unlock()
	c := clientTotalOf(client)
	c.input = addTokens(c.input, u.Input)
	c.output = addTokens(c.output, u.Output)
	c.cached = addTokens(c.cached, u.CachedInput)
	c.costs = addMoney(c.costs, currency, cost)
}

// recordClientAnswer counts a client request a deployment answered: once
// per request, not per charged attempt (a failed attempt before a
// failover, a hedge's loser and a semantic lookup's embedding are spend,
// not answers).
func recordClientAnswer(client string) {
	clientTotals.Lock()
	clientTotalOf(client).answers++
	clientTotals.Unlock()
}

// clientTotalOf is client's totals, created if new; clientTotals must be locked.
func clientTotalOf(client string) *clientTotal {
	c := clientTotals.m[client]
	if c == nil {
		c = new(clientTotal)
		clientTotals.m[client] = c
	}
	return c
}

// addMoney adds amount in currency to a list of amounts by currency.
func addMoney(ms []money, currency string, amount float64) []money {
	for i := range ms {
		if ms[i].currency == currency {
			ms[i].amount += amount
			return ms
		}
	}
	return append(ms, money{currency, amount})
}

// addTokens adds token counts, stopping at the int64 bounds rather than
// wrapping: a provider may report counts up to math.MaxInt64 (usage reads
// larger ones as that), and a wrapped total would be negative.
func addTokens(a, b int64) int64 {
	sum := a + b
	if (a >= 0) == (b >= 0) && (sum >= 0) != (a >= 0) { // same signs, the sum's differs
		if a >= 0 {
			return math.MaxInt64
		}
		return math.MinInt64
	}
	return sum
}

// mulSat is a*b for non-negative a and b, saturating at the largest int64
// rather than wrapping.
func mulSat(a, b int64) int64 {
	if a != 0 && b > math.MaxInt64/a {
		return math.MaxInt64
	}
	return a * b
}
