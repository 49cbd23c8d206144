package llmrouter

import (
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/quic-go/quic-go/http3"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
	"github.com/llmrouter/caddy-llm-router/internal/testkit"
)

// TestHTTP3Upstream: a provider whose transport says `versions 3` is
// reached over HTTP/3, as reverse_proxy's would be: the router made its
// round trips with the http.Transport inside Caddy's transport, which
// speaks TCP only, so the setting was ignored without a word (and a
// provider serving HTTP/3 alone could not be reached).
func TestHTTP3Upstream(t *testing.T) {
	mock := mockllm.New()
	g := newGateway(t, h3Router(t, mock, "interval off"))
	resp, body := g.post(chatBody("h3-model", false))
	expectModel(t, resp, body, "h3-model", "quic", 1)
	for _, r := range mock.Requests() {
		if r.Proto != "HTTP/3.0" {
			t.Errorf("the provider got %s, want HTTP/3.0", r.Proto)
		}
	}
}

// TestProbeInFlightAcrossReload: a probe in flight over HTTP/3 when a
// reload unloads the config that sent it is no news about the
// deployment. The old config's Cleanup closes its HTTP/3 transport, which,
// unlike HTTP/1 and 2's, ends the requests in flight too: the probe failed
// and the deployment, serving well, lost health points at every reload.
func TestProbeInFlightAcrossReload(t *testing.T) {
	mock := mockllm.New()
	var hold atomic.Bool
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hold.CompareAndSwap(true, false) {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		mock.ServeHTTP(w, r)
	})
	router := h3Router(t, handler, "interval 20ms\n\t\ttimeout 5s")
	g := newGateway(t, router)
	events := probeEvents(t, deploymentID{"h3-model", "quic"})
	if r := waitFor(t, events, "a probe"); r != probeOK {
		t.Fatalf("probe: %s", r)
	}
	hold.Store(true)
	<-arrived
	g.reloadWith(globalOptions, "\theader X-Reloaded 1", router)
	close(release)
	if r := waitFor(t, events, "the probe in flight at the reload"); r == probeFailed {
		st := statsFor(t, g, "h3-model", "quic")
		t.Errorf("the probe in flight at the reload failed (%s): health %v", st.LastError, st.HealthScore)
	}
}

// h3Router is a router config with one deployment, h3-model, of a
// provider serving HTTP/3 alone (h on loopback, under a test CA), reached
// with `versions 3`; health holds the health_check block's settings.
func h3Router(t *testing.T, h http.Handler, health string) string {
	t.Helper()
	cert, caPEM, err := testkit.SelfSignedCert()
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http3.Server{Handler: h, TLSConfig: http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}})}
	go func() { _ = srv.Serve(udp) }()
	t.Cleanup(func() {
		_ = srv.Close()
		_ = udp.Close()
	})
	return `
	provider quic {
		base_url https://` + udp.LocalAddr().String() + `/v1
		api_key sk-quic-test-key-000005
		transport http {
			tls_trust_pool file ` + ca + `
			versions 3
		}
	}
	model h3-model {
		provider quic
		upstream deepseek-chat
	}
	health_check {
		` + health + `
	}
`
}
