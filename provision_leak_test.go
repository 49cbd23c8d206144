package llmrouter

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// ledgerUsers is how many loaded configs' budgets use the ledger of name.
func ledgerUsers(name string) int {
	n := 0
	budgetLedgers.Range(func(_, v any) bool {
		if l := v.(*budgetLedger); l.name == name {
			l.mu.Lock()
			n += len(l.users)
			l.mu.Unlock()
		}
		return true
	})
	return n
}

// TestBudgetSyncStartFailure: a config whose budget sync cannot start (the
// budget identity cannot be had: Caddy's instance ID is unreadable) fails
// to load with an error, and leaves the running config's ledger with its
// one user: nothing of the failed config stays behind.
func TestBudgetSyncStartFailure(t *testing.T) {
	global, _ := withStorage(t, globalOptions)
	budget := budgetWithSync("startfail_daily", "limit 1000 per day")
	g := newGatewayWith(t, global, "", budgetRouter+budget("off"))
	if n := ledgerUsers("startfail_daily"); n != 1 {
		t.Fatalf("%d users of the ledger, want 1", n)
	}
	data := t.TempDir()
	if err := os.MkdirAll(filepath.Join(data, "caddy"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "caddy", "instance.uuid"), []byte("not a uuid"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_DATA_HOME", data)
	cf := global + "\n" + siteAddress + " {\n\tllm_router {" + g.fill(budgetRouter+budget("1h")) + "\n\t}\n}\n"
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := loadConfig(string(adapted)); err == nil || !strings.Contains(err.Error(), "UUID") {
		t.Fatalf("the config with an unreadable instance ID: %v, want its error", err)
	}
	if n := ledgerUsers("startfail_daily"); n != 1 {
		t.Errorf("%d users of the ledger after the failed load, want 1 (the running config's)", n)
	}
	resp, body := g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
}
