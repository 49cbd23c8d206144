package llmrouter

import "testing"

// TestBudgetSyncIntervalReload: a reload that changes budget_sync makes
// the running sync loop use the new interval once the new config is the
// one in charge (as the probe loop takes the new config's interval); only
// `off` keeps the sync going as it was (README, budget_sync).
func TestBudgetSyncIntervalReload(t *testing.T) {
	global, _ := withStorage(t, globalOptions)
	budget := budgetWithSync("interval_daily", "limit 1000 per day")
	g := newGatewayWith(t, global, "", budgetRouter+budget("1h"))
	if got := budgetOf(t, "interval_daily").Sync; got != "every 1h0m0s" {
		t.Fatalf("sync %q", got)
	}
	g.reloadWith(global, "", budgetRouter+budget("2s"))
	if got := budgetOf(t, "interval_daily").Sync; got != "every 2s" {
		t.Errorf("after a reload to budget_sync 2s: sync %q", got)
	}
	g.reloadWith(global, "", budgetRouter+budget("off"))
	if got := budgetOf(t, "interval_daily").Sync; got != "every 2s" {
		t.Errorf("after a reload to budget_sync off: sync %q, want it going on as it was", got)
	}
}
