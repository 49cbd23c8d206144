package llmrouter

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"runtime/debug"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/llmrouter/caddy-llm-router/internal/openai"
)

// Health score arithmetic (README, "Health checks").
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

// plural names several events of a kind, for log reasons.
func (e healthEvent) plural() string {
	switch e {
	case eventErrorStatus:
		return "error statuses"
	case eventTransport:
		return "timeouts or transport errors"
	case eventProbeFailure:
		return "failed probes"
	}
	return e.String() + "s"
}

// deployment states, as the stats API and logs name them
const (
	stateUp       = "up"
	stateCooldown = "cooldown"
	stateDisabled = "disabled"
)

// healthView is a deployment's health at one moment, for selection and
// reporting.
type healthView struct {
	score         int
	state         string
	cooldownUntil time.Time // zero unless cooling down
}

// viewAt reads the health at t without locking.
func (s *sharedState) viewAt(t time.Time) healthView {
	h := &s.health
	v := healthView{score: int(h.score.Load()), state: stateUp}
	if until := h.cooldownUntil.Load(); until != 0 && t.UnixNano() < until {
		v.cooldownUntil = time.Unix(0, until)
		v.state = stateCooldown
	}
	if h.disabled.Load() {
		v.state = stateDisabled
	}
	return v
}

// view is viewAt that also notices, and logs once, the end of a cooldown.
func (s *sharedState) view(t time.Time, logger *zap.Logger) healthView {
	v := s.viewAt(t)
	if v.cooldownUntil.IsZero() && s.health.coolingLogged.Load() && s.health.coolingLogged.CompareAndSwap(true, false) {
		s.logCooldownOver(v, logger)
	}
	return v
}

func (s *sharedState) logCooldownOver(v healthView, logger *zap.Logger) {
	if logger != nil && v.state == stateUp {
		logger.Info("deployment state changed",
			zap.String("model", s.id.model), zap.String("provider", s.id.provider),
			zap.String("from", stateCooldown), zap.String("to", stateUp),
			zap.Int("score", v.score), zap.String("reason", "cooldown over"))
	}
}

// observe applies a health event at t, of something that began then;
// observeSince is observe for an attempt (a request or a probe) that began
// earlier.
func (s *sharedState) observe(ev healthEvent, t time.Time, disableBelow int, cooldown time.Duration, detail string, logger *zap.Logger) {
	s.observeSince(ev, t, t, disableBelow, cooldown, detail, logger)
}

// observeSince applies a health event at t, of an attempt that began at
// began. disableBelow is the threshold of the config that saw the event;
// cooldown the length of a rate-limit cooldown. An outcome changes the score
// but not the state (disabled or not) if its attempt began before the last
// change of state: requests in flight when a deployment was disabled do not
// re-enable it as they succeed, nor do failures that began before it came
// back disable it again (no flip-flop). Every change of state is logged
// once, with its reason, after the lock is released.
func (s *sharedState) observeSince(ev healthEvent, began, t time.Time, disableBelow int, cooldown time.Duration, detail string, logger *zap.Logger) {
	s.observeFrom(ev, began, anyChanges, t, disableBelow, cooldown, detail, logger)
}

// anyChanges: an outcome whose attempt noted no count of changes
// (observeSince): told current by its start's time alone.
const anyChanges = math.MaxUint64

// observeFrom is observeSince for an attempt that noted, as it began,
// the deployment's count of state changes (healthState.changes): it is
// current only if no change came since, however close in time.
func (s *sharedState) observeFrom(ev healthEvent, began time.Time, changes uint64, t time.Time, disableBelow int, cooldown time.Duration, detail string, logger *zap.Logger) {
	h := &s.health
	h.mu.Lock()
	before := s.viewAt(t)
	cooled := before.cooldownUntil.IsZero() && h.coolingLogged.CompareAndSwap(true, false)
	score := int(h.score.Load())
	// began after the last change of state
	current := !began.Before(h.changedAt) && (changes == anyChanges || changes == h.changes.Load())

	var reason string
	switch ev {
	case eventSuccess, eventProbeSuccess:
		delta := scoreSuccess
		if ev == eventProbeSuccess {
			delta = scoreProbeSuccess
		} else {
			h.lastSuccess.Store(t.UnixNano())
		}
		h.score.Store(int32(min(maxScore, score+delta)))
		h.streak = 0
		if h.disabled.Load() && current {
			h.disabled.Store(false)
			h.changedAt = t
			h.changes.Add(1)
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
		score = max(0, score+delta)
		h.score.Store(int32(score))
		if h.streakEvent != ev {
			h.streak, h.streakEvent = 0, ev
		}
		h.streak++
		h.lastError, h.lastErrorAt = detail, t
		if !h.disabled.Load() && score <= disableBelow && current {
			h.changes.Add(1)
			h.disabled.Store(true)
			h.changedAt = t
			reason = fmt.Sprintf("disabled after %d consecutive %s (last: %s)", h.streak, ev.plural(), detail)
		}
	case eventRateLimited:
		h.lastError, h.lastErrorAt = detail, t
		if until := t.Add(cooldown).UnixNano(); until > h.cooldownUntil.Load() {
			h.cooldownUntil.Store(until)
		}
		if before.cooldownUntil.IsZero() { // not an extension of an ongoing cooldown
			h.coolingLogged.Store(true)
			reason = fmt.Sprintf("cooldown %s after 429", cooldown.Round(time.Second))
		}
	}
	after := s.viewAt(t)
	h.mu.Unlock()

	if logger == nil {
		return
	}
	if cooled {
		s.logCooldownOver(before, logger)
	}
	if reason == "" {
		return
	}
	fields := []zap.Field{
		zap.String("model", s.id.model), zap.String("provider", s.id.provider),
		zap.String("from", before.state), zap.String("to", after.state),
		zap.Int("score", after.score), zap.String("reason", reason),
	}
	if after.state == stateUp {
		logger.Info("deployment state changed", fields...)
	} else {
		logger.Warn("deployment state changed", fields...)
	}
}

// lastError returns the last error and when it happened.
func (s *sharedState) lastError() (string, time.Time) {
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	return s.health.lastError, s.health.lastErrorAt
}

// recentlyServed reports whether a request succeeded within d before t.
func (s *sharedState) recentlyServed(t time.Time, d time.Duration) bool {
	last := s.health.lastSuccess.Load()
	return last != 0 && t.Sub(time.Unix(0, last)) < d
}

// probeSettings are what one config says about probing a deployment.
type probeSettings struct {
	interval     time.Duration
	timeout      time.Duration
	skipIfActive time.Duration
	url          *url.URL
	body         []byte
	failover     *Failover // the cooldown after a probe's 429
}

// probeBody is the request of a deployment's probe: the model's own
// probe_body, else the health check's for a chat model, else the cheapest
// possible request of its kind (a one-token completion, a one-word
// embedding). An override gets "model" set to the upstream id.
func probeBody(d *deployment, hc *HealthCheck) []byte {
	override := d.probeBody
	if override == "" && d.kind == kindChat {
		override = hc.ProbeBody
	}
	if override != "" {
		var rb openai.Request
		if rb.Parse([]byte(override), 0) == nil { // as written: no API's required members
			return rb.UpstreamBody(d.upstream, openai.AskUsage, openai.OutputCap{})
		}
	}
	if d.kind == kindEmbedding {
		b, _ := json.Marshal(struct {
			Model string `json:"model"`
			Input string `json:"input"`
		}{d.upstream, hc.Prompt})
		return b
	}
	type message struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	b, _ := json.Marshal(struct {
		Model     string    `json:"model"`
		Messages  []message `json:"messages"`
		MaxTokens int       `json:"max_tokens"`
	}{d.upstream, []message{{"user", hc.Prompt}}, 1})
	return b
}

// probeLoop is the running probe goroutine of one shared state: one per
// deployment however many handlers and configs use it.
type probeLoop struct {
	cancel context.CancelFunc
	done   chan struct{}
	wake   chan struct{} // the owner changed: re-read the interval

	lastRejection string // the loop's own: the last 4xx answer logged
}

// activeProbers counts running probe loops; tests read it.
var activeProbers atomic.Int64

// probeResult names what a probe round did, for tests' probeHook.
type probeResult string

const (
	probeOK      probeResult = "ok"
	probeFailed  probeResult = "failed"
	probeSkipped probeResult = "skipped"
	probeLimited probeResult = "rate limited"
)

// probeHook, when set (tests only), is called after every probe round.
var probeHook atomic.Pointer[func(id deploymentID, r probeResult)]

// syncProbe starts or stops the probe loop so that it runs exactly when the
// owner (the oldest config using the state) wants probes.
func (s *sharedState) syncProbe() {
	var stop *probeLoop
	s.mu.Lock()
	want := len(s.users) > 0 && s.users[0].probe != nil
	switch {
	case want && s.probe == nil:
		ctx, cancel := context.WithCancel(context.Background())
		s.probe = &probeLoop{cancel: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1)}
		go s.runProbes(ctx, s.probe, s.users[0].probe.interval)
	case want:
		select {
		case s.probe.wake <- struct{}{}:
		default:
		}
	case s.probe != nil:
		stop, s.probe = s.probe, nil
	}
	s.mu.Unlock()
	if stop != nil {
		stop.cancel()
		<-stop.done
	}
}

// probeInterval is the owner's probe interval, or 0 when it does not probe.
func (s *sharedState) probeInterval() time.Duration {
	if d := s.owner(); d != nil && d.probe != nil {
		return d.probe.interval
	}
	return 0
}

func (s *sharedState) runProbes(ctx context.Context, loop *probeLoop, interval time.Duration) {
	defer close(loop.done)
	activeProbers.Add(1)
	defer activeProbers.Add(-1)
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-loop.wake:
			if iv := s.probeInterval(); iv > 0 && iv != interval {
				interval = iv
				timer.Reset(interval)
			}
			continue
		case <-timer.C:
		}
		result := s.probeOnce(ctx, loop)
		if ctx.Err() != nil {
			return
		}
		if hook := probeHook.Load(); hook != nil {
			(*hook)(s.id, result)
		}
		if iv := s.probeInterval(); iv > 0 {
			interval = iv
		}
		timer.Reset(interval)
	}
}

// probeOnce sends one probe with the owner's settings, unless live traffic
// made it unnecessary. A panic is logged and the loop goes on.
func (s *sharedState) probeOnce(ctx context.Context, loop *probeLoop) (result probeResult) {
	d := s.owner()
	if d == nil || d.probe == nil {
		return probeSkipped
	}
	ps := d.probe
	defer func() {
		if v := recover(); v != nil {
			d.logger.Error("health probe panicked", zap.String("model", d.name),
				zap.String("provider", d.provider.name), zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
			result = probeFailed
		}
	}()
	t := now()
	v := s.viewAt(t)
	if ps.skipIfActive > 0 && v.state != stateDisabled && s.recentlyServed(t, ps.skipIfActive) {
		// live traffic says how it is; not of a disabled one, which gets
		// none: its last success came before it was disabled, and only a
		// probe brings it back
		return probeSkipped
	}
	if !v.cooldownUntil.IsZero() {
		// the provider asked for a pause (a 429): a probe now would be
		// another request it asked not to get, and its 429 no news
		return probeSkipped
	}
	ctx, cancel := context.WithTimeout(withLoadReplacer(ctx), ps.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ps.url.String(), bytes.NewReader(ps.body))
	if err != nil {
		return probeFailed
	}
	for f, v := range d.provider.headers {
		req.Header[f] = v
	}
	d.provider.setAuth(req.Header)
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.provider.roundTrip(req)
	var detail string
	switch {
	case err != nil:
		if ctx.Err() != nil && ctx.Err() != context.DeadlineExceeded {
			return probeSkipped // shutting down
		}
		if !s.uses(d) {
			// d's config was unloaded while its probe was in flight: its
			// Cleanup closed the provider's transport, which for HTTP/3
			// ends the requests in flight too; no news about the target
			return probeSkipped
		}
		// the failure's class, not Go's text: that names local and remote
		// addresses, and the detail reaches the admin API and the logs
		detail = "probe: " + transportErrorText(err, d.provider.scrubKey)
	default:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			s.observeSince(eventProbeSuccess, t, now(), d.disableBelow, 0, "", d.logger)
			return probeOK
		}
		detail = fmt.Sprintf("probe: %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
		if resp.StatusCode == http.StatusTooManyRequests {
			// the deployment answers, and asks for a pause: a cooldown, as
			// a request's 429 is, not a failed probe (which would disable
			// a deployment only rate-limited)
			t1 := now()
			cooldown := ps.failover.cooldownFor(retryAfterOf(resp.Header, t1))
			s.observeSince(eventRateLimited, t, t1, d.disableBelow, cooldown, detail, d.logger)
			return probeLimited
		}
		if msg := providerMessage(body); msg != "" {
			detail += ": " + truncate(d.provider.scrubKey(msg), 300)
		}
		if resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusUnprocessableEntity {
			// the probe itself is wrong for this model (e.g. a reasoning
			// model that wants max_completion_tokens): say why, once per
			// distinct answer
			if d.logger != nil && loop.lastRejection != detail {
				loop.lastRejection = detail
				d.logger.Warn("health probe rejected by the provider; set health_check probe_body (or the model's) to a request it accepts",
					zap.String("model", d.name), zap.String("provider", d.provider.name), zap.String("detail", detail))
			}
		}
	}
	s.observeSince(eventProbeFailure, t, now(), d.disableBelow, 0, detail, d.logger)
	return probeFailed
}

// providerMessage is the message of an OpenAI-style error body, if it is
// one.
func providerMessage(body []byte) string {
	var env struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &env) != nil {
		return ""
	}
	return env.Error.Message
}
