package llmrouter

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// deploymentStates holds every deployment's live state, keyed by provider
// base URL, key hash and upstream model id, so that it survives config
// reloads; a config releases its keys in Cleanup.
var deploymentStates = caddy.NewUsagePool()

// clockSkew is added to the wall clock. Only tests move it, to step over
// cooldowns without sleeping.
var clockSkew atomic.Int64

func now() time.Time { return time.Now().Add(time.Duration(clockSkew.Load())) }

// deploymentState is what the router knows about a deployment from traffic.
type deploymentState struct {
	mu            sync.Mutex
	cooldownUntil time.Time
	lastError     string
	lastErrorAt   time.Time
}

func newDeploymentState() *deploymentState { return &deploymentState{} }

// Destruct implements caddy.Destructor; the state holds no resources.
func (s *deploymentState) Destruct() error { return nil }

// available reports whether the deployment may be picked at t.
func (s *deploymentState) available(t time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !t.Before(s.cooldownUntil)
}

// cooldownEnd is when the current cooldown ends (zero if none).
func (s *deploymentState) cooldownEnd(t time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.Before(s.cooldownUntil) {
		return s.cooldownUntil
	}
	return time.Time{}
}

// startCooldown keeps the deployment out of rotation until t+d; it reports
// whether this began a new cooldown (rather than extending one).
func (s *deploymentState) startCooldown(t time.Time, d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	fresh := !t.Before(s.cooldownUntil)
	if until := t.Add(d); until.After(s.cooldownUntil) {
		s.cooldownUntil = until
	}
	return fresh
}

func (s *deploymentState) recordError(t time.Time, msg string) {
	s.mu.Lock()
	s.lastError, s.lastErrorAt = msg, t
	s.mu.Unlock()
}

var _ caddy.Destructor = (*deploymentState)(nil)
