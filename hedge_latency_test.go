package llmrouter

import (
	"strings"
	"testing"
	"time"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// TestHedgeLoserSlownessLearned: an attempt that loses its hedge without
// a first byte was at least that slow, as one that timed out is, and its
// average time to first byte (which sets `hedge_after auto`'s delay and
// `balance latency`'s shares) learns it. Nothing was learned: a
// deployment that turned slow and lost every hedge kept its old, fast
// average for good, so it stayed first in a latency-balanced group and
// every request to it waited for the hedge and paid for the loser.
func TestHedgeLoserSlownessLearned(t *testing.T) {
	g := newGateway(t, strings.Replace(defaultRouter, "first_byte_timeout 2s", "first_byte_timeout 5s\n\t\thedge_after auto", 1))
	done := requestsDone(t)
	for range 3 { // fast: measured in milliseconds
		resp, body := g.post(chatBody("simple_qa", false))
		expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
		waitFor(t, done, "the request to be counted")
	}
	var st *sharedState
	for _, s := range liveStates() {
		if s.id == (deploymentID{"deepseek-v3.2", "primary"}) {
			st = s
		}
	}
	fast := st.firstByteAvg(false)
	if fast <= 0 || fast >= 0.05 {
		t.Fatalf("average first byte %vs after fast answers", fast)
	}
	g.primary.Set("deepseek-chat", mockllm.Behavior{Latency: 3 * time.Second})
	for range 4 { // each hedged after 100ms (minAutoHedge), and lost
		resp, body := g.post(chatBody("simple_qa", false))
		expectModel(t, resp, body, "gemini-2.5-flash", "primary", 2)
		waitFor(t, done, "the request to be counted")
	}
	if avg := st.firstByteAvg(false); avg < fast+0.04 {
		t.Errorf("average first byte %vs after four hedges lost past %v (was %vs): the losses taught it nothing", avg, minAutoHedge, fast)
	}
}
