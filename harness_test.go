package llmrouter

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"
	"go.uber.org/goleak"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
	"github.com/llmrouter/caddy-llm-router/internal/testkit"
)

// The in-process Caddy that caddytest starts listens on ports free when the
// test binary starts, so that two test runs on one machine do not meet.
var (
	httpPort, httpsPort, adminPort = freePort(), freePort(), freePort()

	gatewayURL = fmt.Sprintf("http://localhost:%d", httpPort)
	adminURL   = fmt.Sprintf("http://localhost:%d", adminPort)
	// siteAddress is the site of every test Caddyfile.
	siteAddress = gatewayURL

	// globalOptions keeps the test server on plain HTTP and off the system
	// trust store.
	globalOptions = fmt.Sprintf(`{
	skip_install_trust
	admin localhost:%d
	http_port %d
	https_port %d
	grace_period 1ns
	log {
		level WARN
	}
}
`, adminPort, httpPort, httpsPort)
)

func init() { caddytest.Default.AdminPort = adminPort }

// freePort is a TCP port nothing listens on at the moment, below the
// kernel's range of ephemeral ports where it can: a port from that range
// (what listening on :0 gives) can become the local port of any outgoing
// connection while a test's config has released it between loads, and the
// next load then fails with "address already in use".
func freePort() int {
	first := 32768 // Linux's default ip_local_port_range
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				first = n
			}
		}
	}
	const lowest = 10000
	for range 200 {
		if first <= lowest {
			break
		}
		port := lowest + rand.IntN(first-lowest)
		if givenPorts[port] {
			continue
		}
		if l, err := net.Listen("tcp", fmt.Sprintf(":%d", port)); err == nil {
			l.Close()
			givenPorts[port] = true
			return port
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// givenPorts are those freePort returned: never twice. (Initialised
// before the ports above: their initialisers depend on it through freePort.)
var givenPorts = map[int]bool{}

// defaultRouter is the router config most tests use: two mock providers,
// the four models of the README's examples and its two routes. {PRIMARY} and {BACKUP}
// become the mocks' URLs.
const defaultRouter = `
	provider primary {
		base_url {PRIMARY}/v1
		api_key "  sk-primary-test-key-0001  "
		timeout 2s
	}
	provider backup {
		base_url {BACKUP}/v1
		api_key sk-backup-test-key-0002
		timeout 2s
	}
	model deepseek-v3.2 {
		upstream deepseek-chat
	}
	model gemini-2.5-flash
	model gpt-4.1 {
		fallback claude-sonnet-4.5
	}
	model claude-sonnet-4.5 {
		provider backup
	}
	route simple_qa deepseek-v3.2 gemini-2.5-flash
	route complex_reasoning gpt-4.1 claude-sonnet-4.5
	default_route simple_qa
	failover {
		first_byte_timeout 2s
	}
`

// mockServers stay open until the end of the test binary: a closed
// server's port could be handed to a later test's mock, whose deployments
// would then inherit the earlier test's health state (state is keyed by
// base URL, as it must be to survive reloads).
var mockServers []*httptest.Server

func newMockServer(h http.Handler) *httptest.Server {
	srv := httptest.NewServer(h)
	mockServers = append(mockServers, srv)
	return srv
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, srv := range mockServers {
		srv.Close()
	}
	if code == 0 && caddyRunning() {
		// unload every app so that what the module started must stop
		if err := loadConfig(emptyConfig); err != nil {
			fmt.Fprintln(os.Stderr, "unloading config:", err)
			code = 1
		} else if err := goleak.Find(caddyGoroutines()...); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left after Caddy unloaded the config:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// caddyGoroutines are the goroutines Caddy itself keeps for the life of the
// process (the command's main loop, the admin server, caches); none of them
// runs this package's code.
func caddyGoroutines() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/caddyserver/caddy/v2/cmd.Main"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/caddy/v2/cmd.cmdRun"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/caddy/v2.replaceLocalAdminServer.func2"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/caddy/v2.(*AdminConfig).newAdminHandler"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/caddy/v2.trapSignalsPosix.func1"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/caddy/v2.trapSignalsCrossPlatform.func1"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.(*Cache).maintainAssets"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"),
		// the rotation goroutine of Caddy's file log writer outlives its file
		goleak.IgnoreAnyFunction("github.com/DeRuina/timberjack.(*Logger).millRun"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/caddy/v2.(*adminHandler).serveHTTP"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/caddy/v2/caddyconfig.init.0.func1"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreAnyFunction("github.com/KimMachineGun/automemlimit/memlimit.SetGoMemLimitWithOpts.func1"),
		// the test client's idle keep-alive connections to the admin API
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	}
}

func caddyRunning() bool {
	resp, err := http.Get(adminURL + "/config/")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return true
}

func loadConfig(cfg string) error {
	req, _ := http.NewRequest(http.MethodPost, adminURL+"/load", strings.NewReader(cfg))
	req.Header.Set("Content-Type", "application/json")
	req.Close = true // no idle connection left to the admin API (goleak in TestMain)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%d: %s", resp.StatusCode, b)
	}
	return nil
}

// gateway is an in-process Caddy running llm_router in front of two mock
// providers.
type gateway struct {
	t               *testing.T
	tc              *caddytest.Tester
	primary, backup *mockllm.Server
	primaryURL      string
	backupURL       string
}

// newGateway starts two mocks and loads a Caddyfile whose llm_router block
// is routerBody ({PRIMARY} and {BACKUP} replaced by the mocks' URLs).
func newGateway(t *testing.T, routerBody string) *gateway {
	t.Helper()
	return newGatewayWith(t, globalOptions, "", routerBody)
}

// newGatewayWith is newGateway with other global options and extra site
// directives before llm_router.
func newGatewayWith(t *testing.T, global, site, routerBody string) *gateway {
	t.Helper()
	return newGatewayAt(t, global, siteAddress, site, routerBody)
}

// newHTTPSGateway is newGateway on an HTTPS site, with a client that
// speaks HTTP/2 to it and the site's URL. The site's certificate is a
// file Caddy loads as the config does (`tls internal` would obtain one in
// the background, after the config is loaded).
func newHTTPSGateway(t *testing.T, routerBody string) (g *gateway, c *http.Client, url string) {
	t.Helper()
	certPEM, keyPEM, err := testkit.SelfSignedPEM("localhost")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := errors.Join(os.WriteFile(certFile, certPEM, 0o600), os.WriteFile(keyFile, keyPEM, 0o600)); err != nil {
		t.Fatal(err)
	}
	url = fmt.Sprintf("https://localhost:%d", httpsPort)
	g = newGatewayAt(t, globalOptions, url, "\ttls "+certFile+" "+keyFile, routerBody)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return g, &http.Client{Transport: tr}, url
}

// fill puts the mocks' URLs in a router body's {PRIMARY} and {BACKUP}.
func (g *gateway) fill(routerBody string) string {
	return strings.NewReplacer("{PRIMARY}", g.primaryURL, "{BACKUP}", g.backupURL).Replace(routerBody)
}

// reloadWith loads another config, as a reload does: one llm_router with
// routerBody at siteAddress, after the site directives site (reload: the
// same with the default global options and no site directives).
func (g *gateway) reloadWith(global, site, routerBody string) {
	g.tc.InitServer(global+"\n"+siteAddress+" {\n"+site+"\n\tllm_router {"+g.fill(routerBody)+"\n\t}\n}\n", "caddyfile")
}

// newGatewayAt is newGatewayWith on the site at address.
func newGatewayAt(t *testing.T, global, address, site, routerBody string) *gateway {
	t.Helper()
	g := &gateway{t: t, primary: mockllm.New(), backup: mockllm.New()}
	ps, bs := newMockServer(g.primary), newMockServer(g.backup)
	g.primaryURL, g.backupURL = ps.URL, bs.URL
	g.tc = caddytest.NewTester(t)
	g.tc.InitServer(global+"\n"+address+" {\n"+site+"\n\tllm_router {"+g.fill(routerBody)+"\n\t}\n}\n", "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	t.Cleanup(g.tc.Client.CloseIdleConnections)
	// unloaded at the test's end: a deployment's state (and its probe
	// loop) survives reloads by design, so a config the next test loads
	// would inherit this one's probe timers, and probes landing on the next
	// test's mocks would count as its upstream requests
	t.Cleanup(func() {
		if err := loadConfig(emptyConfig); err != nil {
			t.Errorf("unloading the gateway: %v", err)
		}
	})
	return g
}

// emptyConfig is a config with nothing but the admin API.
var emptyConfig = fmt.Sprintf(`{"admin":{"listen":"localhost:%d"}}`, adminPort)

// chatBody is a chat completion request; model "" leaves the field out.
func chatBody(model string, stream bool) string {
	var b strings.Builder
	b.WriteString(`{`)
	if model != "" {
		fmt.Fprintf(&b, `"model":%q,`, model)
	}
	b.WriteString(`"messages":[{"role":"user","content":"Where is my order?"}]`)
	if stream {
		b.WriteString(`,"stream":true`)
	}
	b.WriteString(`}`)
	return b.String()
}

// post sends body to the gateway's chat endpoint and reads the whole answer.
func (g *gateway) post(body string, header ...string) (*http.Response, string) {
	g.t.Helper()
	return g.postPath("/v1/chat/completions", body, header...)
}

func (g *gateway) postPath(path, body string, header ...string) (*http.Response, string) {
	g.t.Helper()
	resp, b, err := g.postRaw(path, body, header...)
	if err != nil {
		g.t.Fatalf("reading response: %v", err)
	}
	return resp, b
}

// streamUntil posts a chat stream and reads it until text has arrived;
// cancel then hangs up, as a client that leaves mid-stream.
func (g *gateway) streamUntil(body, text string) (resp *http.Response, cancel context.CancelFunc) {
	g.t.Helper()
	return g.streamUntilOn(g.tc.Client, gatewayURL, body, text)
}

// streamUntilOn is streamUntil with client c, to the site at url.
func (g *gateway) streamUntilOn(c *http.Client, url, body, text string) (resp *http.Response, cancel context.CancelFunc) {
	g.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	resp, err := c.Do(req)
	if err != nil {
		cancel()
		g.t.Fatal(err)
	}
	var seen strings.Builder
	buf := make([]byte, 4096)
	for !strings.Contains(seen.String(), text) {
		n, err := resp.Body.Read(buf)
		seen.Write(buf[:n])
		if err != nil {
			cancel()
			g.t.Fatalf("stream ended before %q: %v %q", text, err, seen.String())
		}
	}
	return resp, cancel
}

// untimed is the gateway's client without the tester's 5-second timeout,
// for a request that its context bounds, or that must not give up by
// itself.
func (g *gateway) untimed() *http.Client {
	c := *g.tc.Client
	c.Timeout = 0
	return &c
}

// postRaw is postPath that keeps what arrived when the response broke off:
// err is the read error (nil for a clean end).
func (g *gateway) postRaw(path, body string, header ...string) (*http.Response, string, error) {
	g.t.Helper()
	var resp *http.Response
	for try := 0; ; try++ {
		req, err := http.NewRequest(http.MethodPost, gatewayURL+path, strings.NewReader(body))
		if err != nil {
			g.t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Add(header[i], header[i+1]) // a field given twice is sent twice
		}
		resp, err = g.tc.Client.Do(req)
		// a connection closed before any answer: the previous config's
		// server, shutting down as the new one took the port (the router
		// itself never closes a connection without an answer)
		if err != nil && try < 2 && errors.Is(err, io.EOF) {
			continue
		}
		if err != nil {
			g.t.Fatalf("POST %s: %v", path, err)
		}
		break
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// sseData returns the data of each event of an SSE body.
func sseData(body string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			out = append(out, d)
		}
	}
	return out
}

// expectModel checks the answer came from model via provider after attempts.
func expectModel(t *testing.T, resp *http.Response, body, model, provider string, attempts int) {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200; body: %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-LLM-Model"); got != model {
		t.Errorf("X-LLM-Model = %q, want %q", got, model)
	}
	if got := resp.Header.Get("X-LLM-Provider"); got != provider {
		t.Errorf("X-LLM-Provider = %q, want %q", got, provider)
	}
	if got := resp.Header.Get("X-LLM-Attempts"); got != fmt.Sprint(attempts) {
		t.Errorf("X-LLM-Attempts = %q, want %d", got, attempts)
	}
}

// apiErr decodes an OpenAI error envelope, failing the test if it is not one.
func apiErr(t *testing.T, body string) apiErrorBody {
	t.Helper()
	var e apiError
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
		t.Fatalf("not an OpenAI error envelope (%v): %s", err, body)
	}
	return e.Error
}

// closedPortURL is a URL nothing listens on, for connection-refused tests.
func closedPortURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// waitFor receives from ch, failing the test if nothing comes within a
// generous bound (a bound on a hang, not a synchronisation sleep).
func waitFor[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// advanceClock moves the router's clock forward for the rest of the test.
func advanceClock(t *testing.T, d time.Duration) {
	clockSkew.Add(int64(d))
	t.Cleanup(func() { clockSkew.Add(-int64(d)) })
}

func jsonEqual(a, b []byte) bool { return testkit.JSONEqual(a, b) }

func mockBehaviorStatus(code int) mockllm.Behavior { return mockllm.Behavior{Status: code} }

// reviewUpstream is a hand-written provider: handle gets each request's
// upstream model id and body.
func reviewUpstream(t *testing.T, handle func(w http.ResponseWriter, model string, body map[string]any)) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body map[string]any
		b, _ := io.ReadAll(req.Body)
		_ = json.Unmarshal(b, &body)
		model, _ := body["model"].(string)
		handle(w, model, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// deploymentCharge is what a deployment was charged: input and output
// tokens (reported or estimated), the estimated ones, and the cost of it
// all.
type deploymentCharge struct {
	in, out       int64
	estIn, estOut int64
	cost          float64
}

// chargedTo is what deployment name of r was charged.
func chargedTo(r *Router, name string) deploymentCharge {
	for _, d := range r.deployments {
		if d.name != name {
			continue
		}
		st := &d.state.stats
		st.mu.Lock()
		defer st.mu.Unlock()
		c := deploymentCharge{in: st.input, out: st.output, estIn: st.estIn, estOut: st.estOut}
		for _, cost := range st.costs {
			c.cost += cost.amount
		}
		return c
	}
	return deploymentCharge{}
}

// routerServer serves r over real HTTP/1 (as Caddy would: a replacer in
// the request's context).
func routerServer(t *testing.T, r *Router) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		_ = r.ServeHTTP(w, req, nil)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func chunk(content string) string {
	return fmt.Sprintf("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}]}\n\n", content)
}
