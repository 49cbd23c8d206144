package llmrouter

import (
	"testing"
	"time"

	"go.uber.org/zap"
)

// TestResetNoFlipFlop: a reload that changes a disabled deployment's
// upstream brings it back afresh (a state of its own); attempts that began
// before that (the old config's, in flight to the old upstream) and fail
// afterwards must not disable it again (README, "Health checks": no
// flip-flop).
func TestResetNoFlipFlop(t *testing.T) {
	id := deploymentID{"reset-flip", "p"}
	dep := func(url string) *deployment {
		return &deployment{id: id, name: id.model, upstream: "m", logger: zap.NewNop(),
			provider: &provider{name: "p", baseURL: url}}
	}
	old := dep("http://old.invalid/v1")
	s, err := acquireState(old)
	if err != nil {
		t.Fatal(err)
	}
	old.state = s
	for range 10 {
		s.observe(eventErrorStatus, now(), 30, 0, "500", nil)
	}
	if s.viewAt(now()).state != stateDisabled {
		t.Fatal("not disabled")
	}
	inFlight := now() // the old config's requests, sent while it was disabled (as a last resort)

	// the reload: the new config's deployment, with another base URL
	fresh := dep("http://new.invalid/v1")
	fs, err := acquireState(fresh)
	if err != nil {
		t.Fatal(err)
	}
	fresh.state = fs
	defer releaseState(fresh)
	if fs == s {
		t.Fatal("the new upstream shares the old one's state")
	}
	releaseState(old)
	if v := fs.viewAt(now()); v.state != stateUp || v.score != maxScore {
		t.Fatalf("after the upstream changed: %s %d, want up at 100", v.state, v.score)
	}
	// the old requests fail now, on the old upstream's state
	for range 10 {
		old.state.observeSince(eventErrorStatus, inFlight, now(), 30, 0, "500", nil)
	}
	if v := fs.viewAt(now().Add(time.Millisecond)); v.state != stateUp {
		t.Errorf("failures of attempts that began before the fresh start disabled it: %s at %d", v.state, v.score)
	}
}
