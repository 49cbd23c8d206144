package llmrouter

import (
	"testing"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// TestProbeRateLimitedCoolsDown: a probe answered 429 is the provider
// asking for a pause, as a request's 429 is: the deployment cools down for
// the Retry-After with its score unchanged, and is not probed while it
// cools down (each probe would be another request the provider asked not
// to get, and, counted as a failed probe, a rate-limited deployment would
// be disabled within four rounds).
func TestProbeRateLimitedCoolsDown(t *testing.T) {
	g := newGateway(t, withHealth("\t\tinterval 20ms\n\t\ttimeout 1s"))
	events := probeEvents(t, deploymentID{"deepseek-v3.2", "primary"})
	if r := waitFor(t, events, "a probe"); r != probeOK {
		t.Fatalf("first probe: %s", r)
	}
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 429, RetryAfter: "60"})
	for waitFor(t, events, "a rate-limited probe") == probeOK {
	}
	asked := len(g.primary.RequestsFor("deepseek-chat"))
	for range 3 {
		if r := waitFor(t, events, "a probe round"); r != probeSkipped {
			t.Fatalf("probe round during the cooldown: %s, want %s", r, probeSkipped)
		}
	}
	if n := len(g.primary.RequestsFor("deepseek-chat")) - asked; n != 0 {
		t.Errorf("the provider got %d probes after its 429 asked for a minute's pause", n)
	}
	if st := statsFor(t, g, "deepseek-v3.2", "primary"); st.State != stateCooldown || st.HealthScore != maxScore {
		t.Errorf("after a probe's 429: %s with score %d, want %s with %d", st.State, st.HealthScore, stateCooldown, maxScore)
	}
}
