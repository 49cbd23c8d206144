package llmrouter

import (
	"math/rand/v2"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestHealthScoreArithmetic(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	cases := []struct {
		name      string
		start     int
		ev        healthEvent
		wantScore int
	}{
		{"success", 80, eventSuccess, 85},
		{"success caps at 100", 98, eventSuccess, 100},
		{"error status", 80, eventErrorStatus, 70},
		{"transport error", 80, eventTransport, 65},
		{"probe success", 80, eventProbeSuccess, 85},
		{"probe failure", 80, eventProbeFailure, 60},
		{"rate limited costs nothing", 80, eventRateLimited, 80},
		{"floor at 0", 10, eventProbeFailure, 0},
	}
	for _, tc := range cases {
		s := newSharedState(deploymentID{"m", "p"})
		s.health.score.Store(int32(tc.start))
		s.observe(tc.ev, t0, 30, 30*time.Second, "x", nil)
		if got := scoreOf(s); got != tc.wantScore {
			t.Errorf("%s: score %d, want %d", tc.name, got, tc.wantScore)
		}
	}
}

func TestHealthStateTransitions(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	core, logs := observer.New(zap.InfoLevel)
	logger := zap.New(core)
	s := newSharedState(deploymentID{"gpt-4.1", "holysheep"})
	state := func(at time.Time) string { return s.view(at, logger).state }

	// 100 -> 85 -> 70 -> 55 -> 40 -> 25: disabled at the fifth timeout
	for i := range 4 {
		s.observe(eventTransport, t0, 30, 0, "timeout after 30s", logger)
		if state(t0) != stateUp {
			t.Fatalf("disabled after %d timeouts at score %d", i+1, scoreOf(s))
		}
	}
	s.observe(eventTransport, t0, 30, 0, "timeout after 30s", logger)
	if state(t0) != stateDisabled || scoreOf(s) != 25 {
		t.Fatalf("state %s score %d after 5 timeouts, want disabled 25", state(t0), scoreOf(s))
	}
	s.observe(eventErrorStatus, t0, 30, 0, "500", logger) // still disabled: no second log
	if got := logs.FilterMessage("deployment state changed").Len(); got != 1 {
		t.Errorf("%d state-change logs, want 1", got)
	}
	if e := logs.All()[0]; e.ContextMap()["reason"] != "disabled after 5 consecutive timeouts or transport errors (last: timeout after 30s)" ||
		e.ContextMap()["to"] != stateDisabled || e.Level != zap.WarnLevel {
		t.Errorf("disable log = %v %v", e.Level, e.ContextMap())
	}

	// a probe re-enables it
	s.observe(eventProbeSuccess, t0, 30, 0, "", logger)
	if state(t0) != stateUp || scoreOf(s) != 20 {
		t.Fatalf("after a successful probe: %s %d", state(t0), scoreOf(s))
	}
	// ... and a request does too
	s.observe(eventProbeFailure, t0, 30, 0, "probe: 503", logger)
	if state(t0) != stateDisabled {
		t.Fatal("a probe failure at score 20 should disable")
	}
	s.observe(eventSuccess, t0, 30, 0, "", logger)
	if state(t0) != stateUp || scoreOf(s) != 5 {
		t.Fatalf("after a successful request: %s %d", state(t0), scoreOf(s))
	}

	// a 429 cools it down, once, and the end of the cooldown is noticed once
	logs.TakeAll()
	s.observe(eventRateLimited, t0, 30, 20*time.Second, "429", logger)
	s.observe(eventRateLimited, t0.Add(time.Second), 30, 20*time.Second, "429", logger) // extends
	if state(t0.Add(20*time.Second)) != stateCooldown || state(t0.Add(21*time.Second)) != stateUp {
		t.Error("the cooldown should last until 21s (extended by the second 429)")
	}
	state(t0.Add(22 * time.Second))
	msgs := logs.FilterMessage("deployment state changed").All()
	if len(msgs) != 2 || msgs[0].ContextMap()["reason"] != "cooldown 20s after 429" || msgs[1].ContextMap()["reason"] != "cooldown over" {
		t.Errorf("cooldown logs: %v", msgs)
	}
}

// TestHealthNoFlipFlop: successes of attempts that began before the
// deployment was disabled leave it disabled, and failures that began
// before it came back leave it enabled: one logged change each way.
func TestHealthNoFlipFlop(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	core, logs := observer.New(zap.InfoLevel)
	logger := zap.New(core)
	s := newSharedState(deploymentID{"gpt-4.1", "holysheep"})
	state := func(at time.Time) string { return s.view(at, logger).state }
	disabledAt := t0.Add(time.Second)
	for range 10 {
		s.observeSince(eventErrorStatus, disabledAt, disabledAt, 30, 0, "500", logger)
	}
	if state(disabledAt) != stateDisabled {
		t.Fatal("not disabled by ten 500s")
	}
	// requests that were in flight when it was disabled succeed afterwards
	for i := range 10 {
		s.observeSince(eventSuccess, t0, disabledAt.Add(time.Duration(i)*time.Millisecond), 30, 0, "", logger)
	}
	if state(disabledAt) != stateDisabled {
		t.Fatal("re-enabled by requests that began before it was disabled")
	}
	// one that began after does re-enable it
	back := disabledAt.Add(time.Second)
	s.observeSince(eventSuccess, back, back, 30, 0, "", logger)
	if state(back) != stateUp {
		t.Fatal("not re-enabled by a request that began after it was disabled")
	}
	// failures that began before it came back do not disable it again
	for range 10 {
		s.observeSince(eventErrorStatus, disabledAt, back.Add(time.Millisecond), 30, 0, "500", logger)
	}
	if state(back) != stateUp {
		t.Fatal("disabled again by failures that began before it came back")
	}
	if got := logs.FilterMessage("deployment state changed").Len(); got != 2 {
		t.Errorf("%d state changes logged, want 2 (disabled, re-enabled)", got)
	}
}

// TestHealthChangeCountedNotTimed: the time of a change of state is read
// before its lock, so an attempt can begin after that time and still
// before the change (it was routed to a deployment not yet disabled): by
// time it is current, and its success re-enabled the deployment at once.
// The count of changes it noted as it began tells: it leaves it disabled.
func TestHealthChangeCountedNotTimed(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	s := newSharedState(deploymentID{"gpt-4.1", "holysheep"})
	began, noted := t0.Add(time.Millisecond), s.health.changes.Load() // in flight
	for range 10 {
		s.observeSince(eventErrorStatus, t0, t0, 30, 0, "500", nil) // read its time at t0
	}
	if s.view(t0, nil).state != stateDisabled {
		t.Fatal("not disabled by ten 500s")
	}
	s.observeFrom(eventSuccess, began, noted, began.Add(time.Millisecond), 30, 0, "", nil)
	if st := s.view(began, nil).state; st != stateDisabled {
		t.Errorf("%s after the success of an attempt that began before it was disabled, want disabled", st)
	}
	// one that began after the change noted its count, and re-enables
	after := t0.Add(time.Second)
	s.observeFrom(eventSuccess, after, s.health.changes.Load(), after, 30, 0, "", nil)
	if st := s.view(after, nil).state; st != stateUp {
		t.Errorf("%s after the success of an attempt that began after, want up", st)
	}
}

// TestHealthWeightedSelection: of two equal deployments, the one failing
// half its requests ends up serving a much smaller share.
func TestHealthWeightedSelection(t *testing.T) {
	share := func(failRate float64) float64 {
		good := &deployment{name: "good", weight: 1, priority: 1, state: newSharedState(deploymentID{})}
		flaky := &deployment{name: "flaky", weight: 1, priority: 1, state: newSharedState(deploymentID{})}
		p := plan{{good, flaky}}
		rng := rand.New(rand.NewPCG(1, 2))
		t0 := time.Unix(1_700_000_000, 0)
		served := 0
		const n = 4000
		for range n {
			got, _, _ := p.order(t0, rng, nil, balance{})
			d := got[0]
			ev := eventSuccess
			if d == flaky {
				served++
				if rng.Float64() < failRate {
					ev = eventErrorStatus
				}
			}
			d.state.observe(ev, t0, 30, 0, "500", nil)
		}
		return float64(served) / n
	}
	healthy, failing := share(0), share(0.5)
	if healthy < 0.45 || healthy > 0.55 {
		t.Errorf("two healthy deployments: share %.3f, want about 0.5", healthy)
	}
	if failing > 0.35 {
		t.Errorf("a deployment failing half its requests still serves %.3f", failing)
	}
	t.Logf("share served: healthy %.3f, failing half %.3f", healthy, failing)
}

// TestSelectionSkipsDisabledAndCooling: out-of-rotation deployments are
// skipped, but when all are, all are tried, healthiest first.
func TestSelectionSkipsDisabledAndCooling(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	a := &deployment{name: "a", weight: 1, priority: 1, state: newSharedState(deploymentID{})}
	b := &deployment{name: "b", weight: 1, priority: 1, state: newSharedState(deploymentID{})}
	c := &deployment{name: "c", weight: 1, priority: 2, state: newSharedState(deploymentID{})}
	p := plan{{a, b}, {c}}
	a.state.health.score.Store(20)
	a.state.health.disabled.Store(true)
	b.state.observe(eventRateLimited, t0, 30, time.Minute, "429", nil)
	got, skip, _ := p.order(t0, rand.New(rand.NewPCG(3, 4)), nil, balance{})
	if len(got) != 1 || got[0] != c {
		t.Fatalf("order = %v, want only c", names(got))
	}
	why := map[string]string{}
	for _, s := range skip {
		why[s.d.name] = s.why
	}
	if len(skip) != 2 || why["a"] != "disabled (score 20)" || why["b"] != "cooling down for 1m0s" {
		t.Errorf("skipped = %v, want a disabled, b cooling down", why)
	}
	c.state.health.score.Store(10)
	c.state.health.disabled.Store(true)
	got, _, _ = p.order(t0, rand.New(rand.NewPCG(3, 4)), nil, balance{})
	if names(got) != "b a c" { // b 100 (cooling), a 20, c 10
		t.Fatalf("all out of rotation: order %q, want b a c", names(got))
	}
}

func names(ds []*deployment) string {
	var s string
	for i, d := range ds {
		if i > 0 {
			s += " "
		}
		s += d.name
	}
	return s
}

func TestLatencyHistogram(t *testing.T) {
	var h latencyHistogram
	for i := 1; i <= 1000; i++ {
		h.observe(time.Duration(i) * time.Millisecond)
	}
	check := func(name string, got, want time.Duration) {
		if diff := float64(got-want) / float64(want); diff < -0.06 || diff > 0.06 {
			t.Errorf("%s = %v, want %v ±6%%", name, got, want)
		}
	}
	check("p50", h.quantile(0.5), 500*time.Millisecond)
	check("p95", h.quantile(0.95), 950*time.Millisecond)
	check("mean", h.mean(), 500500*time.Microsecond)
	h.observe(time.Hour) // beyond the last bucket: counted, capped
	if h.n != 1001 || h.quantile(1) < 5*time.Minute {
		t.Errorf("overflow: n %d max %v", h.n, h.quantile(1))
	}
}

func scoreOf(s *sharedState) int { return int(s.health.score.Load()) }
