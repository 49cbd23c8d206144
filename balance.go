package llmrouter

import (
	"math"
	"time"
)

// Latency-aware choice among equals (`failover { balance latency }`): a
// deployment's share of its priority group is weight × health score, as
// with `balance weighted`, times the fastest average time to first byte in
// the group over its own. Two equal deployments whose first bytes take
// 50 ms and 500 ms share the traffic 10 : 1; a slow deployment keeps some
// traffic, so its average keeps up with it, and is never marked unhealthy
// for being slow.

// Balance modes, the values of Failover.Balance.
const (
	balanceWeighted = "weighted"
	balanceLatency  = "latency"
)

// firstByteSmoothing is the weight of a new sample in the average: about
// the last ten attempts count.
const firstByteSmoothing = 0.2

// balance says how candidates of equal priority share the traffic: by
// weight × health, or also by their time to first byte, of streams or of
// JSON answers (which differ by the whole generation).
type balance struct {
	latency bool
	stream  bool
}

func kindIndex(stream bool) int {
	if stream {
		return 1
	}
	return 0
}

// recordFirstByte adds an attempt's time to first byte to the average.
func (s *sharedState) recordFirstByte(stream bool, d time.Duration) {
	x := d.Seconds()
	avg := &s.firstByte[kindIndex(stream)]
	for {
		old := avg.Load()
		next := x
		if old != 0 {
			prev := math.Float64frombits(old)
			next = prev + firstByteSmoothing*(x-prev)
		}
		if avg.CompareAndSwap(old, math.Float64bits(next)) {
			return
		}
	}
}

// firstByteAvg is the average time to first byte, in seconds; 0 before
// the first sample.
func (s *sharedState) firstByteAvg(stream bool) float64 {
	return math.Float64frombits(s.firstByte[kindIndex(stream)].Load())
}

// latencyFactors sets, for each deployment of a group, the fastest
// average of the group over its own (1 for a deployment with no sample
// yet: it is tried as if it were the fastest, and so gets measured).
func latencyFactors(ds []*deployment, by balance, out []float64) {
	best := 0.0
	for i, d := range ds {
		out[i] = d.state.firstByteAvg(by.stream)
		if a := out[i]; a > 0 && (best == 0 || a < best) {
			best = a
		}
	}
	for i := range out {
		if out[i] == 0 || best == 0 {
			out[i] = 1
		} else {
			out[i] = best / out[i]
		}
	}
}
