package llmrouter

import (
	"fmt"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// TestSpilledKeyKeepsItsSpend: a key dropped from memory (more than
// maxBudgetKeys keys since) that comes back before the next sync still
// has its spend: its limit still stops it.
func TestSpilledKeyKeepsItsSpend(t *testing.T) {
	b, l := storedBudget(t, &Budget{Name: "spill_back", Limits: []BudgetLimit{{1, "day"}}}, &certmagic.FileStorage{Path: t.TempDir()}, "test-instance")
	at := time.Now()
	l.add(b, "spender", 1, at) // at its limit
	if res, _, _ := b.admit("spender", 0.1, at, false, false); res != atLimit {
		t.Fatalf("admit at the limit: %v", res)
	}
	for i := range maxBudgetKeys {
		l.add(b, fmt.Sprint("other-", i), 0.001, at)
	}
	if res, _, _ := b.admit("spender", 0.1, at, false, false); res != atLimit {
		t.Errorf("a key back from the spill was admitted past its limit (%v)", res)
	}
}
