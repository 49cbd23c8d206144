package llmrouter

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
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
	// the hour that DST's end repeats (Paris, 2026-10-25, 02:00-03:00
	// twice) is two windows
	first := time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC) // 02:30 CEST
	second := first.Add(time.Hour)                          // 02:30 CET
	w1, w2 := periodHour.windowAt(first, paris), periodHour.windowAt(second, paris)
	if w1.id == w2.id || !w1.end.Equal(w2.start) || w1.end.Sub(w1.start) != time.Hour || w2.start.In(paris).Hour() != 2 {
		t.Errorf("the repeated hour: %s %v..%v and %s %v..%v, want two one-hour windows", w1.id, w1.start, w1.end, w2.id, w2.start, w2.end)
	}
	// a zone half an hour off UTC: local hours
	kolkata, _ := time.LoadLocation("Asia/Kolkata")
	if w := periodHour.windowAt(time.Date(2026, 11, 28, 10, 45, 0, 0, kolkata), kolkata); w.start.In(kolkata).Minute() != 0 || w.id != "hour-2026-11-28T0430Z" {
		t.Errorf("Kolkata's hour %s from %v", w.id, w.start.In(kolkata))
	}
}

// testBudget is a budget with an in-memory ledger, covering ds.
func testBudget(t *testing.T, cfg *Budget, ds []*deployment, rt routing) *budget {
	t.Helper()
	b, err := newBudget(cfg, "USD")
	if err != nil {
		t.Fatal(err)
	}
	b.metrics, b.logger = metrics.forBudget(cfg.Name), zap.NewNop()
	b.ledger = &budgetLedger{name: cfg.Name, spilled: map[string]*keySpend{}}
	b.ledger.keys, _ = newBudgetKeys(b.ledger)
	b.ledger.users = []*budget{b}
	b.cover(ds, rt)
	return b
}

// budgetFixture: two routes, complex (gpt-4.1, falling back to claude) and
// simple (deepseek), as plans.
func budgetFixture() ([]*deployment, routing) {
	usd := Currency{Code: "USD", Rate: 1}
	mk := func(name string, in, out float64, fallback ...string) *deployment {
		return &deployment{name: name, kind: kindChat, price: unitPrice{input: in, output: out, cachedInput: in, known: true},
			currency: usd, weight: 1, priority: 1, fallback: fallback, state: newSharedState(deploymentID{model: name})}
	}
	ds := []*deployment{mk("gpt-4.1", 2, 8, "claude-sonnet-4.5"), mk("claude-sonnet-4.5", 3, 15), mk("deepseek-v3.2", 0.28, 0.42)}
	rt := buildRouting(ds, map[string][]string{"complex": {"gpt-4.1"}, "simple": {"deepseek-v3.2"}}, "simple")
	return ds, rt
}

// TestAdmitBudgets: the verdicts of the budget rules, without a server. A
// budget covers deployments, whatever name the request used to reach them.
func TestAdmitBudgets(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	ds, rt := budgetFixture()
	soft := testBudget(t, &Budget{Name: "soft", Limits: []BudgetLimit{{1, "day"}}, Match: []string{"complex"}, Downgrade: "simple", Hard: 2}, ds, rt)
	strict := testBudget(t, &Budget{Name: "strict", Limits: []BudgetLimit{{1, "day"}}}, ds, rt)
	if !soft.covers[ds[0]] || !soft.covers[ds[1]] || soft.covers[ds[2]] {
		t.Fatalf("soft covers %v, want gpt-4.1 and its fallback claude, not deepseek", soft.covers)
	}
	noKey := func(*budget) string { return "" }
	admit := func(p plan, route string, canDowngrade bool) (plan, []budgetCharge, *budget, budgetVerdict) {
		kept, charges, downs, v := admitBudgets([]*budget{soft, strict}, p, route, demand{gens: 1}, noKey, t0, canDowngrade, rt.byRoute)
		releaseCharges(charges)
		var down *budget
		if len(downs) > 0 {
			down = downs[len(downs)-1]
		}
		return kept, charges, down, v
	}
	complexPlan, gptPlan, simplePlan := rt.byRoute["complex"].plan, rt.byModel["gpt-4.1"].plan, rt.byRoute["simple"].plan
	if kept, charges, down, v := admit(complexPlan, "complex", true); down != nil || v.refuse != nil || len(kept) != 2 || len(charges) != 2 {
		t.Errorf("under every limit: kept %v charges %d down %v refuse %v", kept, len(charges), down, v.refuse)
	}
	soft.ledger.add(soft, "", 1.5, t0)
	for name, p := range map[string]plan{"the route": complexPlan, "the model by name": gptPlan} {
		kept, _, down, v := admit(p, "", true)
		if down != soft || v.refuse != nil || kept.primary() != ds[2] {
			t.Errorf("%s, soft at its limit: kept %v down %v refuse %v, want the downgrade to deepseek", name, kept, down, v.refuse)
		}
	}
	if kept, _, down, v := admit(complexPlan, "complex", false); v.refuse != nil || down != nil || len(kept) != 2 {
		t.Errorf("at a limit with a downgrade that does not apply (not chat): %v %v, want served", kept, v.refuse)
	}
	if kept, charges, down, v := admit(simplePlan, "simple", true); down != nil || v.refuse != nil || len(kept) != 1 || len(charges) != 1 || charges[0].b != strict {
		t.Errorf("a route soft does not cover: kept %v charges %v down %v refuse %v", kept, charges, down, v.refuse)
	}
	// a plan that mixes covered and uncovered candidates drops the covered
	mixed := plan{{ds[0]}, {ds[2]}}
	if kept, charges, _, v := admit(mixed, "", true); v.refuse != nil || len(kept) != 1 || kept[0][0] != ds[2] || len(charges) != 1 || charges[0].b != strict {
		t.Errorf("mixed plan, soft at its limit: kept %v charges %v, want deepseek alone, charged to strict only", kept, charges)
	}
	soft.ledger.add(soft, "", 0.5, t0)
	if kept, _, _, v := admit(complexPlan, "complex", true); v.refuse != soft || kept != nil || !v.resetAt.Equal(time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("past the hard cap: %v %+v, want refused until midnight", kept, v)
	}
	strict.ledger.add(strict, "", 1, t0)
	if kept, _, _, v := admit(simplePlan, "simple", true); v.refuse != strict || kept != nil {
		t.Errorf("a budget without downgrade at its limit: %v %v, want refused", kept, v.refuse)
	}
	if s := soft.ledger.spend("", t0.Add(24*time.Hour)); s[periodDay] != 0 {
		t.Errorf("the next day starts at %v", s[periodDay])
	}
}

// TestBudgetReservations: admission reserves a request's most expensive
// estimate, so that concurrent requests cannot all pass a limit that only
// one fits under; an answer's cost replaces the reservation, and a request
// that ends without one gives it back.
func TestBudgetReservations(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	ds, rt := budgetFixture()
	b := testBudget(t, &Budget{Name: "reserve", Limits: []BudgetLimit{{0.02, "day"}}, Match: []string{"complex"}}, ds, rt)
	p := rt.byRoute["complex"].plan
	// 1000 input and 1000 output tokens: claude, the dearest candidate,
	// costs 0.003 + 0.015 = 0.018
	est := demand{usage: usage{Input: 1000, Output: 1000}, gens: 1}
	if got := b.reservation(p, est); math.Abs(got-0.018) > 1e-12 {
		t.Fatalf("reservation %v, want 0.018 (the dearest candidate's)", got)
	}
	if got := b.reservation(p, demand{usage: usage{Input: 1000}, gens: 1}); math.Abs(got-(0.003+float64(defaultReserveOutput)*15/1e6)) > 1e-12 {
		t.Fatalf("reservation without max_tokens %v, want reserve_output's", got)
	}
	// n answers without a limit hold reserve_output each
	if got := b.reservation(p, demand{usage: usage{Input: 1000}, gens: 3}); math.Abs(got-(0.003+3*float64(defaultReserveOutput)*15/1e6)) > 1e-12 {
		t.Fatalf("reservation of 3 answers without max_tokens %v, want 3 reserve_outputs", got)
	}
	// a Responses request sent with at least 16 (openai.ResponsesMinLimit) reserves that
	b.reserveOut = 8
	if got := b.reservation(p, demand{usage: usage{Input: 1000}, gens: 1, minOut: 16}); math.Abs(got-(0.003+16*15/1e6)) > 1e-12 {
		t.Fatalf("reservation of a Responses request under reserve_output 8: %v, want 16 output tokens'", got)
	}
	b.reserveOut = defaultReserveOutput
	if got := b.reservation(p, demand{usage: usage{Input: 1000}, gens: 0}); math.Abs(got-0.003) > 1e-12 {
		t.Fatalf("reservation of an embedding %v, want its input alone", got)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var admitted [][]budgetCharge
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kept, charges, _, v := admitBudgets([]*budget{b}, p, "complex", est, func(*budget) string { return "" }, t0, false, rt.byRoute)
			if v.refuse == nil && kept != nil {
				mu.Lock()
				admitted = append(admitted, charges)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// 0.018 fits under 0.02 once; the second sees 0.018 reserved, under
	// the limit still, and overshoots by at most its own estimate
	if len(admitted) != 2 {
		t.Fatalf("%d of 20 concurrent requests admitted under 0.02, want 2", len(admitted))
	}
	if got := b.ledger.reserved("", periodDay); math.Abs(got-0.036) > 1e-12 {
		t.Errorf("reserved %v, want 0.036", got)
	}
	chargeBudgets(admitted[0], ds[0], 0.005, t0) // gpt answered for less
	releaseCharges(admitted[0])                  // nothing left to give back
	releaseCharges(admitted[1])                  // the other ended without an answer
	if got := b.ledger.reserved("", periodDay); got != 0 {
		t.Errorf("reserved %v after both ended, want 0", got)
	}
	if s := b.ledger.spend("", t0); math.Abs(s[periodDay]-0.005) > 1e-12 {
		t.Errorf("spent %v, want the answer's 0.005", s[periodDay])
	}
	// an answer of a deployment the budget does not cover is not charged
	_, charges, _, _ := admitBudgets([]*budget{b}, p, "complex", est, func(*budget) string { return "" }, t0, false, rt.byRoute)
	chargeBudgets(charges, ds[2], 1, t0)
	releaseCharges(charges)
	if s := b.ledger.spend("", t0); math.Abs(s[periodDay]-0.005) > 1e-12 {
		t.Errorf("spent %v, want 0.005: deepseek is not covered", s[periodDay])
	}
}

// TestBudgetKeysBounded: beyond maxBudgetKeys the least recently used key
// leaves memory; its spend is written at the next sync and read back when
// the key returns.
func TestBudgetKeysBounded(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	b, l := storedBudget(t, &Budget{Name: "bounded", Limits: []BudgetLimit{{1000, "day"}}, Key: "{k}"}, &certmagic.FileStorage{Path: t.TempDir()}, "test-instance")
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

// failingStorage is a file storage whose writes fail while fail is set.
// storedBudget is budget cfg on a ledger of its own that syncs to st as
// instance, for tests that drive the sync by hand.
func storedBudget(t *testing.T, cfg *Budget, st certmagic.Storage, instance string) (*budget, *budgetLedger) {
	t.Helper()
	b, err := newBudget(cfg, "USD")
	if err != nil {
		t.Fatal(err)
	}
	b.metrics, b.logger = metrics.forBudget(cfg.Name), zap.NewNop()
	l := &budgetLedger{name: cfg.Name, spilled: map[string]*keySpend{}, logger: zap.NewNop(), storage: st, instance: instance}
	l.keys, _ = newBudgetKeys(l)
	l.users = []*budget{b}
	b.ledger = l
	return b, l
}

type failingStorage struct {
	certmagic.FileStorage
	fail atomic.Bool
}

func (s *failingStorage) Store(ctx context.Context, key string, value []byte) error {
	if s.fail.Load() {
		return errors.New("storage unavailable")
	}
	return s.FileStorage.Store(ctx, key, value)
}

// TestBudgetSpilledSpendSurvivesAFailedSync: a key that left memory with
// spend in two periods keeps both through a sync that fails on one: what
// the failed write hands back is added to the key's spilled spend, never
// put in its place.
func TestBudgetSpilledSpendSurvivesAFailedSync(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	st := &failingStorage{FileStorage: certmagic.FileStorage{Path: t.TempDir()}}
	b, l := storedBudget(t, &Budget{Name: "spilled", Limits: []BudgetLimit{{1000, "hour"}, {1000, "day"}}, Key: "{k}"}, st, "test-instance")
	for i := range maxBudgetKeys + 1 {
		l.add(b, fmt.Sprintf("team-%05d", i), 1, t0)
	}
	if _, ok := l.spilled["team-00000"]; !ok {
		t.Fatal("the oldest key was not spilled")
	}
	st.fail.Store(true)
	if err := l.sync(context.Background(), t0, false); err == nil {
		t.Fatal("a sync whose writes fail succeeded")
	}
	st.fail.Store(false)
	if err := l.sync(context.Background(), t0, false); err != nil {
		t.Fatal(err)
	}
	for _, p := range []period{periodHour, periodDay} {
		f, err := loadInstanceFile(context.Background(), st, "llm_router/budgets/spilled/"+p.windowAt(t0, time.UTC).id+"/test-instance.json")
		if err != nil || f.Spend["team-00000"] != 1 {
			t.Errorf("%s: stored %v for the spilled key (err %v), want 1", p, f.Spend["team-00000"], err)
		}
	}
}

// TestBudgetPrunesPastWindows: the sync loop deletes the files of windows
// that ended more than two days before the current one began, every
// instance's (a dead one's too), and keeps the newer ones, another time
// zone's current window and what is not a window.
func TestBudgetPrunesPastWindows(t *testing.T) {
	ctx := context.Background()
	hcm, _ := time.LoadLocation("Asia/Ho_Chi_Minh")
	st := &certmagic.FileStorage{Path: t.TempDir()}
	_, l := storedBudget(t, &Budget{Name: "pruned", Limits: []BudgetLimit{{1000, "hour"}}, Timezone: "Asia/Ho_Chi_Minh"}, st, "live")

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
	// the current windows still count both instances' spend, and the
	// hour (an instant, the same in every zone) the other fleet's too
	if s := l.spend("", t0); s != [periodCount]float64{3, 2, 2, 2} {
		t.Errorf("spend after pruning: %v", s)
	}
}

// TestReplaceAllFastPath: the fast path of a lone placeholder says what
// Caddy's ReplaceAll says, for every form of key.
func TestReplaceAllFastPath(t *testing.T) {
	repl := caddy.NewReplacer()
	repl.Set("team", "team-a")
	repl.Set("n", 42)
	repl.Set("empty", "")
	repl.Set("braces", "{team}")
	for _, s := range []string{"{team}", "{n}", "{empty}", "{missing}", "{braces}", "x{team}", "{team}x", "{te{am}", "{}", "{", "plain", "{team}{team}", `{te\}am}`} {
		if got, want := replaceAll(repl, s), repl.ReplaceAll(s, ""); got != want {
			t.Errorf("replaceAll(%q) = %q, ReplaceAll says %q", s, got, want)
		}
	}
}

// Ledger reads and writes the tests use; the request path goes through
// budget.admit and chargeBudgets.

// spend is a key's spend in each current period, fleet-wide as far as known.
func (l *budgetLedger) spend(key string, t time.Time) [periodCount]float64 {
	var ids [periodCount]string
	for p := range periodCount {
		ids[p] = l.window(p, t).id
	}
	var out [periodCount]float64
	l.mu.Lock()
	defer l.mu.Unlock()
	ks, ok := l.keys.Get(key)
	if !ok {
		return out
	}
	for p := range periodCount {
		if ks.periods[p].id == ids[p] {
			out[p] = ks.periods[p].total()
		}
	}
	return out
}

// reserved is what key has reserved, as period p counts it.
func (l *budgetLedger) reserved(key string, p period) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ks, ok := l.keys.Peek(key); ok {
		return ks.periods[p].reserved // in whatever window: reservations belong to none
	}
	return 0
}

// add charges cost to key at t, on behalf of b (whose warn_at applies), and
// logs once per period a limit whose warn_at share is crossed.
func (l *budgetLedger) add(b *budget, key string, cost float64, t time.Time) {
	l.settle(b, key, cost, t, 0)
}

// TestBudgetKeyHashed: a key value is named by its HMAC under the
// instance's secret, the same from a reused (pooled) HMAC as from a fresh
// one, under concurrent use; a label key is shown as it is.
func TestBudgetKeyHashed(t *testing.T) {
	b, err := newBudget(&Budget{Name: "hashed", Limits: []BudgetLimit{{1, "day"}}, Key: "{k}"}, "USD")
	if err != nil {
		t.Fatal(err)
	}
	b.keySecret = []byte("0123456789abcdef0123456789abcdef")
	want := func(v string) string {
		mac := hmac.New(sha256.New, b.keySecret)
		mac.Write([]byte(v))
		return "#" + hex.EncodeToString(mac.Sum(nil)[:12])
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			repl := caddy.NewReplacer()
			for i := range 200 {
				v := fmt.Sprintf("Bearer sk-team-%d-%d", g, i%7)
				repl.Set("k", v)
				if got := b.keyOf(repl); got != want(v) {
					t.Errorf("keyOf(%q) = %q, want %q", v, got, want(v))
					return
				}
			}
		})
	}
	wg.Wait()
	b.keyLabel = true
	repl := caddy.NewReplacer()
	repl.Set("k", "storefront")
	if got := b.keyOf(repl); got != "storefront" {
		t.Errorf("label key = %q", got)
	}
	// a value no one would choose as a label (a client's header of
	// kilobytes, bytes that are not text) is kept by its fingerprint: the
	// ledger holds up to maxBudgetKeys of them, each kept and stored
	for _, v := range []string{strings.Repeat("t", maxLabelKey+1), "team\xff", "team\x1b[2J"} {
		repl.Set("k", v)
		if got := b.keyOf(repl); got != want(v) {
			t.Errorf("label key of %q = %q, want its fingerprint", v[:min(len(v), 20)], got)
		}
	}
	repl.Set("k", strings.Repeat("t", maxLabelKey))
	if got := b.keyOf(repl); got != strings.Repeat("t", maxLabelKey) {
		t.Errorf("a label of %d bytes = %q, want it as it is", maxLabelKey, got)
	}
}

// BenchmarkBudgetKey is the cost of naming a request's budget key by its
// HMAC (a key that is not a label).
func BenchmarkBudgetKey(b *testing.B) {
	bu, err := newBudget(&Budget{Name: "bench", Limits: []BudgetLimit{{1, "day"}}, Key: "{k}"}, "USD")
	if err != nil {
		b.Fatal(err)
	}
	bu.keySecret = []byte("0123456789abcdef0123456789abcdef")
	repl := caddy.NewReplacer()
	repl.Set("k", "Bearer sk-team-storefront-0001")
	b.ReportAllocs()
	for b.Loop() {
		_ = bu.keyOf(repl)
	}
}
