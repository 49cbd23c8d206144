package llmrouter

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// balanceRouter has one model served by two deployments of the same
// priority and weight: upstream "quick" at the primary, "slow" at the
// backup.
const balanceRouter = `
	provider primary {
		base_url {PRIMARY}/v1
		api_key sk-primary-test-key-0001
	}
	provider backup {
		base_url {BACKUP}/v1
		api_key sk-backup-test-key-0002
	}
	model assistant {
		provider primary
		upstream quick
	}
	model assistant {
		provider backup
		upstream slow
	}
	route support assistant
	default_route support
	health_check {
		interval off
	}
	failover {
		BALANCE
	}
`

// shareOfPrimary sends n chat requests, conc at a time, and returns the
// share the primary answered.
func shareOfPrimary(t *testing.T, g *gateway, n, conc int) float64 {
	t.Helper()
	var mu sync.Mutex
	primary := 0
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			resp, body := g.post(chatBody("support", false))
			if resp.StatusCode != 200 {
				t.Errorf("status %d: %s", resp.StatusCode, body)
			}
			if resp.Header.Get("X-LLM-Provider") == "primary" {
				mu.Lock()
				primary++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return float64(primary) / float64(n)
}

// TestBalanceLatency: of two equal deployments whose first bytes take 50
// and 500 ms, the fast one serves most requests with balance latency; with
// balance weighted they split by weight, however slow one is.
func TestBalanceLatency(t *testing.T) {
	g := newGateway(t, strings.Replace(balanceRouter, "BALANCE", "balance latency", 1))
	g.primary.Set("quick", mockllm.Behavior{Latency: 50 * time.Millisecond})
	g.backup.Set("slow", mockllm.Behavior{Latency: 500 * time.Millisecond})
	share := shareOfPrimary(t, g, 200, 10)
	t.Logf("latency share %.2f", share)
	if share < 0.75 {
		t.Errorf("balance latency: the fast deployment served %.0f%%, want at least 75%%", share*100)
	}

	g = newGateway(t, strings.Replace(balanceRouter, "BALANCE", "balance weighted", 1))
	g.primary.Set("quick", mockllm.Behavior{Latency: 10 * time.Millisecond})
	g.backup.Set("slow", mockllm.Behavior{Latency: 100 * time.Millisecond})
	if share := shareOfPrimary(t, g, 200, 10); share < 0.35 || share > 0.65 {
		t.Errorf("balance weighted: the fast deployment served %.0f%%, want about half", share*100)
	}
}
