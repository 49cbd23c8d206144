package llmrouter

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// deploymentID names a deployment the way every metric label and stats row
// does: model name and provider name. Deployments with the same ID and the
// same upstream (deployment.target), in two handlers or across a reload,
// are one deployment and share one state; deployments with different IDs
// never share, even when they send the same upstream id to the same URL
// with the same key (an alias), and neither do two of one ID at different
// upstreams (two handlers' providers of one name with their own accounts):
// one's 429 is no cooldown of the other's.
type deploymentID struct{ model, provider string }

func (id deploymentID) String() string { return id.model + "@" + id.provider }

// sharedStates holds the state of every deployment a loaded config uses,
// keyed by stateKey. A config takes a reference in Provision and
// releases it in Cleanup; the last release drops the state, so a deployment
// removed from the config is forgotten and one kept survives the reload.
var sharedStates = caddy.NewUsagePool()

// sharedState is what must outlive a config: health, counters and the probe
// loop. Settings (prices, probe settings, currency, upstream id) stay on each
// config's own deployment; users lists those deployments so that the probe
// loop and the stats report can read the settings of the oldest config still
// loaded: a config that provisions and then fails to load is released again
// without ever having been the oldest.
type sharedState struct {
	id     deploymentID
	health healthState
	stats  deploymentStats

	// an exponentially decaying average of an attempt's time to first byte
	// (balance.go), in seconds as float64 bits: of JSON answers (the
	// response headers) and of streams (the first event)
	firstByte [2]atomic.Uint64

	mu    sync.Mutex
	users []*deployment // oldest first
	probe *probeLoop    // running, or nil
}

// healthState is a deployment's health. The request path reads it without a
// lock; healthState.mu serialises the updates so that each change of state is
// seen, and logged, once.
type healthState struct {
	score    atomic.Int32
	disabled atomic.Bool
	// changes counts the changes between disabled and enabled: an
	// attempt notes it as it begins (attemptResult.changes), and its
	// outcome changes the state only if none came since, which a clock
	// read cannot tell (the change's time is read before its lock)
	changes       atomic.Uint64
	cooldownUntil atomic.Int64 // unix nanoseconds; 0: none
	coolingLogged atomic.Bool  // a cooldown start was logged, its end not yet
	lastSuccess   atomic.Int64 // unix nanoseconds of the last successful request

	mu          sync.Mutex
	lastError   string
	lastErrorAt time.Time
	streak      int         // consecutive failures
	streakEvent healthEvent // of this kind, for log reasons
	changedAt   time.Time   // the last change between disabled and enabled
}

func newSharedState(id deploymentID) *sharedState {
	s := &sharedState{id: id}
	s.health.score.Store(maxScore)
	return s
}

// acquireState returns the shared state of id and registers d as one of its
// users. Every call is paired with releaseState in Cleanup.
func acquireState(d *deployment) (*sharedState, error) {
	v, _, err := sharedStates.LoadOrNew(stateKey(d), func() (caddy.Destructor, error) {
		return newSharedState(d.id), nil
	})
	if err != nil {
		return nil, err
	}
	s := v.(*sharedState)
	s.mu.Lock()
	s.users = append(s.users, d)
	s.mu.Unlock()
	s.syncProbe()
	return s, nil
}

// stateKey is the key of d's state in sharedStates: its ID and its
// upstream. A reload that changes the base URL, key or upstream id gets a
// state of its own, fresh: the old one was about another endpoint (and
// attempts still in flight to it update only the old one).
func stateKey(d *deployment) string { return d.id.String() + "\x00" + d.target() }

// releaseState undoes acquireState.
func releaseState(d *deployment) {
	s := d.state
	s.mu.Lock()
	if i := slices.Index(s.users, d); i >= 0 {
		s.users = slices.Delete(s.users, i, i+1)
	}
	s.mu.Unlock()
	s.syncProbe()
	_, _ = sharedStates.Delete(stateKey(d))
}

// owner is the deployment whose settings apply: that of the oldest config
// using the state; nil once none does.
func (s *sharedState) owner() *deployment {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.users) == 0 {
		return nil
	}
	return s.users[0]
}

// uses says whether d's config still uses the state: false once its
// Cleanup released it (releaseState).
func (s *sharedState) uses(d *deployment) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.users, d)
}

// Destruct implements caddy.Destructor: the last config let go of the state.
func (s *sharedState) Destruct() error {
	s.mu.Lock()
	s.users = nil
	s.mu.Unlock()
	s.syncProbe()
	return nil
}

// liveStates is a snapshot of every shared state, taken without holding the
// pool's lock longer than the copy.
func liveStates() []*sharedState {
	var out []*sharedState
	sharedStates.Range(func(_, v any) bool {
		out = append(out, v.(*sharedState))
		return true
	})
	return out
}

// clockSkew is added to the wall clock. Only tests move it, to step over
// cooldowns and budget periods without sleeping.
var clockSkew atomic.Int64

func now() time.Time { return time.Now().Add(time.Duration(clockSkew.Load())) }

// Interface guards
var _ caddy.Destructor = (*sharedState)(nil)
