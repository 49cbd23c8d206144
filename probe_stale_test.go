package llmrouter

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// TestProbeStaleFailureNoFlipFlop: a probe that was sent before the
// deployment came back (a request succeeded meanwhile) and then fails must
// not disable it again: its outcome began before the change of state
// (README, "Health checks"; observeSince).
func TestProbeStaleFailureNoFlipFlop(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	u, _ := url.Parse(srv.URL + "/chat/completions")
	d := &deployment{
		id: deploymentID{"m", "p"}, name: "m",
		provider:     &provider{name: "p", transport: &reverseproxy.HTTPTransport{Transport: tr}},
		disableBelow: 30,
		probe:        &probeSettings{timeout: 10 * time.Second, url: u, body: []byte(`{}`)},
	}
	s := newSharedState(d.id)
	s.users = []*deployment{d}
	d.state = s

	// disabled at 30 by seven 500s
	for range 7 {
		s.observe(eventErrorStatus, now(), 30, 0, "500", nil)
	}
	if s.viewAt(now()).state != stateDisabled {
		t.Fatal("not disabled")
	}
	done := make(chan probeResult)
	go func() { done <- s.probeOnce(context.Background(), &probeLoop{}) }()
	<-arrived // the probe is at the provider
	// a request that began after the probe was sent succeeds: back up, 35
	back := now()
	s.observeSince(eventSuccess, back, back, 30, 0, "", nil)
	if s.viewAt(now()).state != stateUp {
		t.Fatal("not re-enabled by the success")
	}
	close(release)
	if r := <-done; r != probeFailed {
		t.Fatalf("probe %s", r)
	}
	if v := s.viewAt(now()); v.state != stateUp {
		t.Errorf("a probe sent before the deployment came back disabled it again: %s at %d", v.state, v.score)
	}
}
