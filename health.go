package llmrouter

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// deploymentStates holds every deployment's live state, keyed by provider
// base URL, key hash and upstream model id, so that it survives config
// reloads; a config releases its keys in Cleanup and the last release
// drops the state.
var deploymentStates = caddy.NewUsagePool()

// clockSkew is added to the wall clock. Only tests move it, to step over
// cooldowns without sleeping.
var clockSkew atomic.Int64

func now() time.Time { return time.Now().Add(time.Duration(clockSkew.Load())) }

// Health score arithmetic, from DESIGN.md.
const (
	maxScore          = 100
	scoreSuccess      = 5
	scoreErrorStatus  = -10
	scoreTransport    = -15
	scoreProbeSuccess = 5
	scoreProbeFailure = -20
)

// healthEvent is something that changes a deployment's health.
type healthEvent uint8

const (
	eventSuccess      healthEvent = iota + 1 // a request succeeded
	eventErrorStatus                         // the provider answered with an error status
	eventTransport                           // timeout, refused, reset, broken stream
	eventRateLimited                         // 429: cooldown, no score change
	eventProbeSuccess                        // an active probe succeeded
	eventProbeFailure                        // an active probe failed
)

func (e healthEvent) String() string {
	switch e {
	case eventSuccess:
		return "successful request"
	case eventErrorStatus:
		return "error status"
	case eventTransport:
		return "timeout or transport error"
	case eventRateLimited:
		return "429"
	case eventProbeSuccess:
		return "successful probe"
	case eventProbeFailure:
		return "failed probe"
	}
	return "unknown event"
}

// deployment states, as the stats API and logs name them
const (
	stateUp       = "up"
	stateCooldown = "cooldown"
	stateDisabled = "disabled"
)

// deploymentState is what the router knows about a deployment from
// traffic and probes: its health and its statistics.
type deploymentState struct {
	mu sync.Mutex

	// names from the newest config that uses this state
	model, provider, upstream string
	currency                  Currency

	score         int
	disabled      bool
	cooldownUntil time.Time
	coolingLogged bool // a cooldown start was logged, its end not yet
	lastSuccess   time.Time
	lastError     string
	lastErrorAt   time.Time
	streak        int         // consecutive failures
	streakEvent   healthEvent // of this kind, for log reasons

	stats deploymentStats
}

func newDeploymentState() *deploymentState { return &deploymentState{score: maxScore} }

// Destruct implements caddy.Destructor; the state holds no resources.
func (s *deploymentState) Destruct() error { return nil }

// label sets the names the state is reported under.
func (s *deploymentState) label(model, provider, upstream string, cur Currency) {
	s.mu.Lock()
	s.model, s.provider, s.upstream, s.currency = model, provider, upstream, cur
	s.mu.Unlock()
}

// healthView is a consistent snapshot for selection and reporting.
type healthView struct {
	score         int
	state         string
	cooldownUntil time.Time
}

// view returns the state at t; noticing the end of a cooldown logs it.
func (s *deploymentState) view(t time.Time, logger *zap.Logger) healthView {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noticeCooldownEnd(t, logger)
	return s.viewLocked(t)
}

func (s *deploymentState) viewLocked(t time.Time) healthView {
	v := healthView{score: s.score, state: stateUp}
	switch {
	case s.disabled:
		v.state = stateDisabled
	case t.Before(s.cooldownUntil):
		v.state = stateCooldown
	}
	if t.Before(s.cooldownUntil) {
		v.cooldownUntil = s.cooldownUntil
	}
	return v
}

func (s *deploymentState) noticeCooldownEnd(t time.Time, logger *zap.Logger) {
	if s.coolingLogged && !t.Before(s.cooldownUntil) {
		s.coolingLogged = false
		if logger != nil && !s.disabled {
			logger.Info("deployment state changed",
				zap.String("model", s.model), zap.String("provider", s.provider),
				zap.String("from", stateCooldown), zap.String("to", stateUp),
				zap.Int("score", s.score), zap.String("reason", "cooldown over"))
		}
	}
}

// observe applies a health event at t. disableBelow is the config's
// threshold; cooldown the length of a rate-limit cooldown. Every change of
// state is logged once, with its reason.
func (s *deploymentState) observe(ev healthEvent, t time.Time, disableBelow int, cooldown time.Duration, detail string, logger *zap.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noticeCooldownEnd(t, logger)
	before := s.viewLocked(t)

	var reason string
	switch ev {
	case eventSuccess, eventProbeSuccess:
		delta := scoreSuccess
		if ev == eventProbeSuccess {
			delta = scoreProbeSuccess
		}
		s.score = min(maxScore, s.score+delta)
		if ev == eventSuccess {
			s.lastSuccess = t
		}
		s.streak = 0
		if s.disabled {
			s.disabled = false
			reason = "re-enabled by a " + ev.String()
		}
	case eventErrorStatus, eventTransport, eventProbeFailure:
		delta := scoreErrorStatus
		switch ev {
		case eventTransport:
			delta = scoreTransport
		case eventProbeFailure:
			delta = scoreProbeFailure
		}
		s.score = max(0, s.score+delta)
		if s.streakEvent != ev {
			s.streak, s.streakEvent = 0, ev
		}
		s.streak++
		s.lastError, s.lastErrorAt = detail, t
		if !s.disabled && s.score <= disableBelow {
			s.disabled = true
			reason = fmt.Sprintf("disabled after %d consecutive %ss (last: %s)", s.streak, ev, detail)
		}
	case eventRateLimited:
		s.lastError, s.lastErrorAt = detail, t
		if until := t.Add(cooldown); until.After(s.cooldownUntil) {
			s.cooldownUntil = until
		}
		if !before.cooldownUntil.IsZero() {
			return // extended an ongoing cooldown: no new state
		}
		s.coolingLogged = true
		reason = fmt.Sprintf("cooldown %s after 429", cooldown.Round(time.Second))
	}

	after := s.viewLocked(t)
	if reason == "" || logger == nil {
		return
	}
	fields := []zap.Field{
		zap.String("model", s.model), zap.String("provider", s.provider),
		zap.String("from", before.state), zap.String("to", after.state),
		zap.Int("score", s.score), zap.String("reason", reason),
	}
	if after.state == stateUp {
		logger.Info("deployment state changed", fields...)
	} else {
		logger.Warn("deployment state changed", fields...)
	}
}

// recentlyServed reports whether a request succeeded within d before t.
func (s *deploymentState) recentlyServed(t time.Time, d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.lastSuccess.IsZero() && t.Sub(s.lastSuccess) < d
}

// probers run the active health checks: one goroutine per deployment
// state, however many handlers and configs share it, released with the
// last config that uses it.
var probers = caddy.NewUsagePool()

// activeProbers counts running probe loops; tests read it.
var activeProbers atomic.Int64

// probeResult names what a probe round did, for tests' probeHook.
type probeResult string

const (
	probeOK      probeResult = "ok"
	probeFailed  probeResult = "failed"
	probeSkipped probeResult = "skipped"
)

// probeHook, when set (tests only), is called after every probe round.
var probeHook atomic.Pointer[func(stateKey string, r probeResult)]

// probeSettings are what one config says about probing a deployment; the
// newest config's settings win.
type probeSettings struct {
	d            *deployment
	interval     time.Duration
	timeout      time.Duration
	skipIfActive time.Duration
	disableBelow int
	body         []byte
	logger       *zap.Logger
}

// prober is the probe loop of one deployment state.
type prober struct {
	key      string
	settings atomic.Pointer[probeSettings]
	cancel   context.CancelFunc
	done     chan struct{}
}

// startProbing makes sure d is probed with these settings, starting its
// loop if no config has yet.
func startProbing(ps *probeSettings) error {
	key := ps.d.stateKey
	v, _, err := probers.LoadOrNew(key, func() (caddy.Destructor, error) {
		ctx, cancel := context.WithCancel(context.Background())
		p := &prober{key: key, cancel: cancel, done: make(chan struct{})}
		p.settings.Store(ps)
		go p.run(ctx)
		return p, nil
	})
	if err != nil {
		return err
	}
	v.(*prober).settings.Store(ps)
	return nil
}

// probeBody is the request of a probe: the cheapest possible completion.
func probeBody(upstream, prompt string) []byte {
	type message struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	b, _ := json.Marshal(struct {
		Model     string    `json:"model"`
		Messages  []message `json:"messages"`
		MaxTokens int       `json:"max_tokens"`
	}{upstream, []message{{"user", prompt}}, 1})
	return b
}

// Destruct stops the loop and waits for it to exit.
func (p *prober) Destruct() error {
	p.cancel()
	<-p.done
	return nil
}

func (p *prober) run(ctx context.Context) {
	defer close(p.done)
	activeProbers.Add(1)
	defer activeProbers.Add(-1)
	timer := time.NewTimer(p.settings.Load().interval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		result := p.probeOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if hook := probeHook.Load(); hook != nil {
			(*hook)(p.key, result)
		}
		timer.Reset(p.settings.Load().interval)
	}
}

// probeOnce sends one probe unless live traffic made it unnecessary. A
// panic is logged and the loop goes on.
func (p *prober) probeOnce(ctx context.Context) (result probeResult) {
	ps := p.settings.Load()
	d := ps.d
	defer func() {
		if v := recover(); v != nil {
			ps.logger.Error("health probe panicked", zap.String("model", d.name),
				zap.String("provider", d.provider.name), zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
			result = probeFailed
		}
	}()
	t := now()
	if ps.skipIfActive > 0 && d.state.recentlyServed(t, ps.skipIfActive) {
		return probeSkipped
	}
	ctx, cancel := context.WithTimeout(ctx, ps.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.provider.chatURL.String(), bytes.NewReader(ps.body))
	if err != nil {
		return probeFailed
	}
	for f, v := range d.provider.headers {
		req.Header[f] = v
	}
	d.provider.setAuth(req.Header)
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.provider.transport.RoundTrip(req)
	var detail string
	switch {
	case err != nil:
		if ctx.Err() != nil && ctx.Err() != context.DeadlineExceeded {
			return probeSkipped // shutting down
		}
		detail = "probe: " + unwrapURLError(err).Error()
	default:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			d.state.observe(eventProbeSuccess, now(), ps.disableBelow, 0, "", ps.logger)
			return probeOK
		}
		detail = fmt.Sprintf("probe: %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	d.state.observe(eventProbeFailure, now(), ps.disableBelow, 0, detail, ps.logger)
	return probeFailed
}

// Interface guards
var (
	_ caddy.Destructor = (*deploymentState)(nil)
	_ caddy.Destructor = (*prober)(nil)
)
