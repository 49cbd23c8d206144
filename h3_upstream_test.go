package llmrouter

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
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
	mock := mockllm.New()
	srv := &http3.Server{Handler: mock, TLSConfig: http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}})}
	go func() { _ = srv.Serve(udp) }()
	t.Cleanup(func() {
		_ = srv.Close()
		_ = udp.Close()
	})
	g := newGateway(t, `
	provider quic {
		base_url https://`+udp.LocalAddr().String()+`/v1
		api_key sk-quic-test-key-000005
		transport http {
			tls_trust_pool file `+ca+`
			versions 3
		}
	}
	model h3-model {
		provider quic
		upstream deepseek-chat
	}
	health_check {
		interval off
	}
`)
	resp, body := g.post(chatBody("h3-model", false))
	expectModel(t, resp, body, "h3-model", "quic", 1)
	for _, r := range mock.Requests() {
		if r.Proto != "HTTP/3.0" {
			t.Errorf("the provider got %s, want HTTP/3.0", r.Proto)
		}
	}
}
