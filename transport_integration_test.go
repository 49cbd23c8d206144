package llmrouter

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
	"github.com/llmrouter/caddy-llm-router/internal/testkit"
)

// newTLSMock serves h over HTTPS, HTTP/2 included, with a self-signed
// certificate of its own for 127.0.0.1, which it also writes to a PEM file
// (the CA a provider's transport must trust).
func newTLSMock(t *testing.T, h http.Handler) (url, caFile string) {
	t.Helper()
	cert, caPEM, err := testkit.SelfSignedCert()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return srv.URL, caFile
}

// TestHTTPSUpstream: providers over HTTPS through Caddy's HTTP transport,
// with a CA given in `transport http`: JSON, streams and failover over
// HTTP/2; a provider whose CA is wrong fails over with an error that says
// so.
func TestHTTPSUpstream(t *testing.T) {
	secure, other := mockllm.New(), mockllm.New()
	secureURL, secureCA := newTLSMock(t, secure)
	otherURL, _ := newTLSMock(t, other)
	g := newGateway(t, `
	provider secure {
		base_url `+secureURL+`/v1
		api_key sk-secure-test-key-0003
		transport http {
			tls_trust_pool file `+secureCA+`
		}
	}
	provider wrong_ca {
		base_url `+otherURL+`/v1
		api_key sk-wrong-ca-test-key-04
		transport http {
			tls_trust_pool file `+secureCA+`
		}
	}
	model deepseek-v3.2 {
		provider secure
		upstream deepseek-chat
	}
	model gemini-2.5-flash {
		provider secure
	}
	model gpt-4.1 {
		provider wrong_ca
	}
	route simple_qa deepseek-v3.2 gemini-2.5-flash
	route mistrusted gpt-4.1 {
		when false
	}
	route mixed gpt-4.1 deepseek-v3.2
	default_route simple_qa
	health_check {
		interval off
	}
	failover {
		first_byte_timeout 2s
	}
`)
	for _, stream := range both {
		resp, body := g.post(chatBody("simple_qa", stream))
		expectModel(t, resp, body, "deepseek-v3.2", "secure", 1)
	}
	for _, r := range secure.Requests() {
		if r.Proto != "HTTP/2.0" {
			t.Errorf("the provider got %s, want HTTP/2.0", r.Proto)
		}
	}
	// failover between deployments of the HTTPS provider
	secure.Set("deepseek-chat", mockllm.Behavior{Status: 500, Times: 1})
	resp, body := g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "gemini-2.5-flash", "secure", 2)

	// a CA that is not the provider's: the attempt fails over, and the
	// 503 of a route with nothing else says why, without an address
	resp, body = g.post(chatBody("mixed", false))
	expectModel(t, resp, body, "deepseek-v3.2", "secure", 2)
	if n := len(other.Requests()); n != 0 {
		t.Errorf("the provider with an untrusted certificate got %d requests", n)
	}
	resp, body = g.post(chatBody("mistrusted", false))
	msg := apiErr(t, body).Message
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(msg, "certificate") || strings.Contains(msg, "127.0.0.1") {
		t.Errorf("status %d, message %q: want 503 naming the certificate problem, and no address", resp.StatusCode, msg)
	}
}

// TestTLSNameErrorHasNoAddress: a provider whose certificate is for
// another host fails with an error that says so, without the host names
// and addresses Go's text lists (the certificate's and the one dialled).
func TestTLSNameErrorHasNoAddress(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "gpu-7.llm.corp.internal"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"gpu-7.llm.corp.internal"}, IPAddresses: []net.IP{net.IPv4(10, 20, 30, 40)},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(mockllm.New())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	g := newGateway(t, `
	provider internal {
		base_url `+strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)+`/v1
		api_key sk-internal-test-key-0009
		transport http {
			tls_trust_pool file `+ca+`
		}
	}
	model gpt-4.1 {
		provider internal
	}
	health_check {
		interval off
	}
`)
	resp, body := g.post(chatBody("gpt-4.1", false))
	msg := apiErr(t, body).Message
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(msg, "not valid for its host") {
		t.Errorf("status %d, message %q: want 503 saying the certificate is not for the host", resp.StatusCode, msg)
	}
	for _, leak := range []string{"corp.internal", "10.20.30.40", "localhost", "127.0.0.1"} {
		if strings.Contains(msg, leak) {
			t.Errorf("the message %q names %s", msg, leak)
		}
	}
}

// newForwardProxy is an HTTP forward proxy on loopback; relayed counts
// the requests it passed on.
func newForwardProxy() (proxy *httptest.Server, relayed *atomic.Int64) {
	relayed = new(atomic.Int64)
	proxy = newMockServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		relayed.Add(1)
		(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL, pr.Out.Host = r.URL, r.URL.Host // an absolute-form request: where to
		}}).ServeHTTP(w, r)
	}))
	return proxy, relayed
}

// viaProxy puts router's primary provider (the one whose block ends with
// `timeout 2s`, as defaultRouter's) behind forward_proxy_url proxyURL.
func viaProxy(t *testing.T, router, proxyURL string) string {
	t.Helper()
	const end = "\t\ttimeout 2s\n\t}\n\tprovider backup"
	if !strings.Contains(router, end) {
		t.Fatal("viaProxy: no primary provider block ending with timeout 2s")
	}
	return strings.Replace(router, end,
		"\t\ttimeout 2s\n\t\ttransport http {\n\t\t\tforward_proxy_url "+proxyURL+"\n\t\t}\n\t}\n\tprovider backup", 1)
}

// TestForwardProxy: a provider reached through an HTTP proxy
// (`forward_proxy_url` of Caddy's transport).
func TestForwardProxy(t *testing.T) {
	proxy, proxied := newForwardProxy()
	g := newGateway(t, viaProxy(t, defaultRouter, proxy.URL))
	for _, stream := range both {
		resp, body := g.post(chatBody("simple_qa", stream))
		expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	}
	if n := proxied.Load(); n != 2 {
		t.Errorf("the proxy relayed %d requests, want 2", n)
	}
}

// TestTransportErrorTextHasNoAddress: a failed connection is described by
// its kind, not by the addresses Go's errors carry: through Go's own
// transport, through Caddy's (whose dialer hides the dial's error in a
// reverseproxy.DialError), and through a forward proxy that is down (an
// error wrapping the dial's).
func TestTransportErrorTextHasNoAddress(t *testing.T) {
	caddyTransport := func(proxy string) http.RoundTripper {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
		t.Cleanup(cancel)
		ht := &reverseproxy.HTTPTransport{ForwardProxyURL: proxy}
		if err := ht.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		return ht
	}
	closed := closedPortURL(t)
	for _, c := range []struct {
		name      string
		transport http.RoundTripper
		url       string
		want      string
	}{
		{"Go's transport", &http.Transport{}, closed, "dial: connection refused"},
		{"Caddy's transport", caddyTransport(""), closed, "dial: connection refused"},
		{"a forward proxy that is down", caddyTransport(closed), "http://llm-provider.example/v1/models", "proxyconnect: dial: connection refused"},
	} {
		req, _ := http.NewRequest(http.MethodGet, c.url, nil)
		_, err := c.transport.RoundTrip(req)
		if err == nil {
			t.Fatalf("%s: a closed port answered", c.name)
		}
		if got := transportErrorText(err, nil); got != c.want {
			t.Errorf("%s: %q (from %v), want %q", c.name, got, err, c.want)
		}
	}
	// an error of no known kind keeps its words, not its addresses
	err := errors.New(`net/http: HTTP/1.x transport connection broken: malformed HTTP response "from 10.20.30.40:8000 and [fd00::1]:443"`)
	if got := transportErrorText(err, nil); strings.Contains(got, "10.20.30.40") || strings.Contains(got, "fd00") || !strings.Contains(got, "malformed HTTP response") {
		t.Errorf("%q", got)
	}
}

// TestTransportErrorHasNoKey: a provider that echoes the request in a
// response Go cannot parse (a header line without its colon, here) has
// its words quoted in the transport's error, which becomes the 503's
// message, the logs' and the span's: the provider's key in it is masked,
// as in any body or header the provider sends.
func TestTransportErrorHasNoKey(t *testing.T) {
	addr := rawProvider(t, func(c net.Conn, req *http.Request) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nEcho Authorization "+req.Header.Get("Authorization")+"\r\n\r\n")
	})
	const key = "sk-bench-key-000000000001"
	srv := routerServer(t, benchRouter(t, "http://"+addr, nil))
	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"simple_qa","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if strings.Contains(string(b), key) || strings.Contains(string(b), "000000000001") {
		t.Errorf("the provider's key is in the client's 503: %s", b)
	}
}

// TestSwitchingProtocolsIsBounded: a provider that answers 101 Switching
// Protocols (with the headers of an upgrade the request never asked for)
// and then says nothing hands Go's transport's caller the raw connection,
// which the attempt's deadline no longer closes: the attempt must still
// end within the provider's timeout and fail over, JSON or stream.
func TestSwitchingProtocolsIsBounded(t *testing.T) {
	done := make(chan struct{})
	addr := rawProvider(t, func(c net.Conn, _ *http.Request) {
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
		<-done // silent, the connection open
	})
	srv := routerServer(t, benchRouter(t, "http://"+addr, func(r *Router) {
		r.Providers[0].Timeout = caddy.Duration(300 * time.Millisecond)
	}))
	// before the router's server closes (cleanups run last first): a
	// handler still reading the 101's connection would hold that close
	t.Cleanup(func() { close(done) })
	client := &http.Client{Timeout: 10 * time.Second} // a bound on a hang
	for _, stream := range []bool{false, true} {
		body := `{"model":"simple_qa","messages":[{"role":"user","content":"hi"}],"stream":` + strconv.FormatBool(stream) + `}`
		resp, err := client.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("stream %v: %v (the attempt hung on the 101's connection)", stream, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("stream %v: status %d: %s; want 503", stream, resp.StatusCode, b)
		}
	}
}

// rawProvider is a provider speaking raw bytes on loopback: answer writes
// what it says to each request read, the connection closed after it. It
// returns the provider's address.
func rawProvider(t *testing.T, answer func(c net.Conn, req *http.Request)) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				answer(c, req)
			}()
		}
	}()
	return l.Addr().String()
}

// TestStreamCutShortMessage: the error event of a stream that ended
// before its [DONE] names the event it lacks. The mask of bracketed IPv6
// addresses took any bracketed word for one, and the client read "the
// stream ended before its end (<address>, or response.completed)".
func TestStreamCutShortMessage(t *testing.T) {
	g := newGateway(t, defaultRouter)
	g.primary.Set("deepseek-chat", mockllm.Behavior{EndAfterChunks: 2})
	_, body, _ := g.postRaw("/v1/chat/completions", chatBody("simple_qa", true))
	data := sseData(body)
	if len(data) == 0 || !strings.Contains(data[len(data)-1], "ended before its end ([DONE], or response.completed)") {
		t.Errorf("events %q: want the stream error naming [DONE]", data)
	}
	// an address in brackets is still masked, a word in brackets is not
	if got := transportErrorText(errors.New("at [::1]:443 and [fe80::1%eth0] after [DONE]"), nil); got != "at <address> and <address> after [DONE]" {
		t.Errorf("%q", got)
	}
}
