package llmrouter

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

func TestBudgetWindows(t *testing.T) {
	paris, _ := time.LoadLocation("Europe/Paris")
	hcm, _ := time.LoadLocation("Asia/Ho_Chi_Minh")
	at := func(loc *time.Location, y int, m time.Month, d, h, min int) time.Time {
		return time.Date(y, m, d, h, min, 0, 0, loc)
	}
	cases := []struct {
		name       string
		p          period
		t          time.Time
		loc        *time.Location
		start, end time.Time
	}{
		{"hour", periodHour, at(hcm, 2026, 11, 28, 23, 59), hcm, at(hcm, 2026, 11, 28, 23, 0), at(hcm, 2026, 11, 29, 0, 0)},
		{"day in Ho Chi Minh City, from UTC", periodDay, time.Date(2026, 11, 28, 17, 30, 0, 0, time.UTC), hcm, at(hcm, 2026, 11, 29, 0, 0), at(hcm, 2026, 11, 30, 0, 0)},
		{"a 23-hour day (DST starts)", periodDay, at(paris, 2026, 3, 29, 12, 0), paris, at(paris, 2026, 3, 29, 0, 0), at(paris, 2026, 3, 30, 0, 0)},
		{"week from Monday, on a Sunday", periodWeek, at(hcm, 2026, 11, 29, 10, 0), hcm, at(hcm, 2026, 11, 23, 0, 0), at(hcm, 2026, 11, 30, 0, 0)},
		{"week from Monday, on a Monday", periodWeek, at(hcm, 2026, 11, 30, 0, 0), hcm, at(hcm, 2026, 11, 30, 0, 0), at(hcm, 2026, 12, 7, 0, 0)},
		{"month across a year", periodMonth, at(hcm, 2026, 12, 31, 23, 59), hcm, at(hcm, 2026, 12, 1, 0, 0), at(hcm, 2027, 1, 1, 0, 0)},
	}
	for _, c := range cases {
		w := c.p.windowAt(c.t, c.loc)
		if !w.start.Equal(c.start) || !w.end.Equal(c.end) {
			t.Errorf("%s: %v .. %v, want %v .. %v", c.name, w.start, w.end, c.start, c.end)
		}
	}
	if paris := periodDay.windowAt(at(paris, 2026, 3, 29, 12, 0), paris); paris.end.Sub(paris.start) != 23*time.Hour {
		t.Errorf("the DST day lasts %v", paris.end.Sub(paris.start))
	}
}

// TestCheckBudgets: the verdicts of the budget rules, without a server.
func TestCheckBudgets(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	mk := func(name string, cfg *Budget) *budget {
		cfg.Name = name
		b, err := newBudget(cfg, "USD")
		if err != nil {
			t.Fatal(err)
		}
		b.metrics, b.logger = metrics.forBudget(name), zap.NewNop()
		b.ledger = &budgetLedger{name: name, spilled: map[string]*keySpend{}}
		b.ledger.keys, _ = newBudgetKeys(b.ledger)
		b.ledger.users = []*budget{b}
		return b
	}
	soft := mk("soft", &Budget{Limits: []BudgetLimit{{1, "day"}}, Match: []string{"complex"}, Downgrade: "simple", Hard: 2})
	strict := mk("strict", &Budget{Limits: []BudgetLimit{{1, "day"}}})
	repl := caddy.NewReplacer()
	check := func(route string, again bool) budgetVerdict {
		var charges []budgetCharge
		return checkBudgets([]*budget{soft, strict}, route, "", repl, t0, again, &charges)
	}
	if v := check("complex", false); v.downgrade != nil || v.refuse != nil {
		t.Errorf("under every limit: %+v", v)
	}
	soft.ledger.add(soft, "", 1.5, t0)
	if v := check("complex", false); v.downgrade != soft || v.refuse != nil {
		t.Errorf("soft at its limit: %+v, want a downgrade", v)
	}
	if v := check("complex", true); v.downgrade != nil || v.refuse != nil {
		t.Errorf("already downgraded: %+v, want it served", v)
	}
	if v := check("simple", false); v.downgrade != nil || v.refuse != nil {
		t.Errorf("a route soft does not match: %+v", v)
	}
	soft.ledger.add(soft, "", 0.5, t0)
	if v := check("complex", false); v.refuse != soft || !v.resetAt.Equal(time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("past the hard cap: %+v, want refused until midnight", v)
	}
	strict.ledger.add(strict, "", 1, t0)
	if v := check("simple", true); v.refuse != strict {
		t.Errorf("a budget without downgrade at its limit: %+v, want refused even after a downgrade", v)
	}
	if s := soft.ledger.spend("", t0.Add(24*time.Hour)); s[periodDay] != 0 {
		t.Errorf("the next day starts at %v", s[periodDay])
	}
}

// TestBudgetKeysBounded: beyond maxBudgetKeys the least recently used key
// leaves memory; its spend is written at the next sync and read back when
// the key returns.
func TestBudgetKeysBounded(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	b, err := newBudget(&Budget{Name: "bounded", Limits: []BudgetLimit{{1000, "day"}}, Key: "{k}"}, "USD")
	if err != nil {
		t.Fatal(err)
	}
	b.metrics, b.logger = metrics.forBudget("bounded"), zap.NewNop()
	l := &budgetLedger{name: "bounded", spilled: map[string]*keySpend{}, logger: zap.NewNop(),
		storage: &certmagic.FileStorage{Path: t.TempDir()}, instance: "test-instance"}
	l.keys, _ = newBudgetKeys(l)
	l.users = []*budget{b}
	b.ledger = l
	for i := range maxBudgetKeys + 50 {
		l.add(b, fmt.Sprintf("team-%05d", i), 1, t0)
	}
	if n := l.keys.Len(); n != maxBudgetKeys {
		t.Fatalf("%d keys in memory, want %d", n, maxBudgetKeys)
	}
	if s := l.spend("team-00000", t0); s[periodDay] != 0 {
		t.Fatalf("the oldest key is still in memory (%v)", s[periodDay])
	}
	if err := l.sync(context.Background(), t0, false); err != nil {
		t.Fatal(err)
	}
	if len(l.spilled) != 0 {
		t.Errorf("%d spilled keys left after a sync", len(l.spilled))
	}
	f, err := loadInstanceFile(context.Background(), l.storage, "llm_router/budgets/bounded/"+periodDay.windowAt(t0, time.UTC).id+"/test-instance.json")
	if err != nil || len(f.Spend) != maxBudgetKeys+50 || f.Spend["team-00000"] != 1 {
		t.Fatalf("stored %d keys (team-00000: %v), err %v", len(f.Spend), f.Spend["team-00000"], err)
	}
	// the dropped key comes back: its stored spend counts again
	l.add(b, "team-00000", 1, t0)
	if err := l.sync(context.Background(), t0, false); err != nil {
		t.Fatal(err)
	}
	if s := l.spend("team-00000", t0); s[periodDay] != 2 {
		t.Errorf("team-00000 spent %v after it came back, want 2", s[periodDay])
	}
}

// TestBudgetPrunesPastWindows: the sync loop deletes the files of windows
// that ended more than two days before the current one began, every
// instance's (a dead one's too), and keeps the newer ones, another time
// zone's current window and what is not a window.
func TestBudgetPrunesPastWindows(t *testing.T) {
	ctx := context.Background()
	hcm, _ := time.LoadLocation("Asia/Ho_Chi_Minh")
	b, err := newBudget(&Budget{Name: "pruned", Limits: []BudgetLimit{{1000, "hour"}}, Timezone: "Asia/Ho_Chi_Minh"}, "USD")
	if err != nil {
		t.Fatal(err)
	}
	b.metrics, b.logger = metrics.forBudget("pruned"), zap.NewNop()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	l := &budgetLedger{name: "pruned", spilled: map[string]*keySpend{}, logger: zap.NewNop(), storage: st, instance: "live"}
	l.keys, _ = newBudgetKeys(l)
	l.users = []*budget{b}
	b.ledger = l

	t0 := time.Date(2026, 11, 28, 10, 30, 0, 0, hcm)
	file := func(p period, at time.Time, loc *time.Location, instance string) string {
		return "llm_router/budgets/pruned/" + p.windowAt(at, loc).id + "/" + instance + ".json"
	}
	var kept, gone []string
	store := func(f string, keep bool) {
		if err := st.Store(ctx, f, []byte(`{"spend":{"":1}}`)); err != nil {
			t.Fatal(err)
		}
		if keep {
			kept = append(kept, f)
		} else {
			gone = append(gone, f)
		}
	}
	for _, instance := range []string{"live", "dead"} {
		for _, h := range []int{0, 1, 47, 48} {
			store(file(periodHour, t0.Add(-time.Duration(h)*time.Hour), hcm, instance), true)
		}
		for _, h := range []int{50, 72} {
			store(file(periodHour, t0.Add(-time.Duration(h)*time.Hour), hcm, instance), false)
		}
		for d := range 6 {
			store(file(periodDay, t0.AddDate(0, 0, -d), hcm, instance), d <= 3)
		}
		for n := range 4 {
			store(file(periodWeek, t0.AddDate(0, 0, -7*n), hcm, instance), n <= 1)
			store(file(periodMonth, t0.AddDate(0, -n, 0), hcm, instance), n <= 1)
		}
	}
	// this hour, for a fleet that keeps the same budget in UTC: its stamp
	// reads as seven hours ago here
	store(file(periodHour, t0, time.UTC, "elsewhere"), true)
	other := "llm_router/budgets/pruned/notes.txt"
	if err := st.Store(ctx, other, []byte("x")); err != nil {
		t.Fatal(err)
	}
	kept = append(kept, other)

	// a config load's sync leaves them (it may be a first load over years
	// of files), the sync loop's prunes
	if err := l.sync(ctx, t0, false); err != nil || !st.Exists(ctx, gone[0]) {
		t.Fatalf("a sync without prune: err %v, %s deleted %v", err, gone[0], !st.Exists(ctx, gone[0]))
	}
	if err := l.sync(ctx, t0, true); err != nil {
		t.Fatal(err)
	}
	for _, f := range kept {
		if !st.Exists(ctx, f) {
			t.Errorf("%s was deleted", f)
		}
	}
	for _, f := range gone {
		if st.Exists(ctx, f) {
			t.Errorf("%s was kept", f)
		}
	}
	// the current windows still count both instances' spend
	if s := l.spend("", t0); s != [periodCount]float64{2, 2, 2, 2} {
		t.Errorf("spend after pruning: %v", s)
	}
}
