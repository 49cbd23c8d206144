package llmrouter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/llmrouter/caddy-llm-router/internal/openai"
)

// provider is a Provider made ready to serve: its URLs, key and transport.
// It belongs to one config; a reload builds a new one.
type provider struct {
	name        string
	baseURL     string
	host        string // the base URL's host: how the stats name the provider's endpoint
	key         string
	auth        []string // the Authorization header's value, nil without a key (setAuth)
	fingerprint string   // safe to log
	// account hashes what says whose account the requests go to: the key
	// and the headers that carry a credential or pick an account
	// (accountHeaders), so that a key given as a header (Azure's api-key)
	// changes the deployment's target as api_key does
	account string
	headers http.Header
	timeout time.Duration
	// transport makes the round trips: Caddy's transport itself, whose
	// RoundTrip goes over HTTP/3 with `versions 3` (the http.Transport
	// inside it speaks TCP only)
	transport   *reverseproxy.HTTPTransport
	urls        [endpointCount]*url.URL // each endpoint's upstream URL
	streamUsage openai.UsageAsk         // how a stream's usage is asked for
	limitField  string                  // the chat member of an output cap (Provider.OutputLimitField)
	// secrets are the key and the credentials among the headers: never
	// relayed, logged or shown, should the provider echo them
	secrets []secret
}

// outputLimitFields are the chat members an output cap may go in.
var outputLimitFields = []string{"max_completion_tokens", "max_tokens"}

// secret is a credential of a provider and what is shown in its place.
type secret struct{ value, fingerprint string }

// newProvider resolves placeholders and builds the provider's transport.
func newProvider(ctx caddy.Context, pc *Provider, repl *caddy.Replacer, logger *zap.Logger) (*provider, error) {
	subj := "provider " + pc.Name
	base, err := resolveAtLoad(repl, pc.BaseURL)
	if err != nil {
		return nil, cfgErr(subj, "base_url: %v", err)
	}
	base = strings.TrimRight(base, "/")
	u, err := parseBaseURL(subj, base)
	if err != nil {
		return nil, err
	}
	key, err := resolveAtLoad(repl, pc.APIKey)
	if err != nil {
		return nil, cfgErr(subj, "api_key: %v", err)
	}
	key = strings.TrimSpace(key)
	if !httpguts.ValidHeaderFieldValue(key) {
		// never the key itself: the error is logged and shown
		return nil, cfgErr(subj, "api_key: not a valid header value (a line break or control character inside the key?)")
	}
	if err := resolveTransport(repl, base, pc.Transport); err != nil {
		return nil, cfgErr(subj, "%v", err)
	}
	if err := proxyAuthFits(base, pc.Headers); err != nil {
		return nil, cfgErr(subj, "%v", err)
	}
	ht, err := newTransport(ctx, pc.Transport)
	if err != nil {
		return nil, cfgErr(subj, "transport: %v", err)
	}
	p := &provider{
		name:        pc.Name,
		baseURL:     base,
		host:        u.Host,
		key:         key,
		fingerprint: keyFingerprint(key),
		timeout:     time.Duration(pc.Timeout),
		headers:     make(http.Header, len(pc.Headers)),
		transport:   ht,
	}
	if pc.NoStreamUsage {
		p.streamUsage = openai.NoStreamOptions
	}
	if f := pc.OutputLimitField; f != "" {
		if !slices.Contains(outputLimitFields, f) {
			return nil, cfgErr(subj, "output_limit_field must be max_completion_tokens or max_tokens, not %q", f)
		}
		p.limitField = f
	}
	if key != "" {
		p.addSecret(key) // unless too short to be one: a local server's "EMPTY"
		p.auth = []string{"Bearer " + key}
	}
	for field, vals := range pc.Headers {
		for _, v := range vals {
			v, err := resolveAtLoad(repl, v)
			if err != nil {
				return nil, cfgErr(subj, "header %s: %v", field, err)
			}
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, cfgErr(subj, "header %s: not a valid header value (a line break or control character?)", field)
			}
			p.headers.Add(field, v)
			if isCredentialHeader(field) {
				p.addSecret(v)
				if _, token, ok := strings.Cut(v, " "); ok { // "Bearer …": the token alone may be echoed
					p.addSecret(strings.TrimSpace(token))
				}
			}
		}
	}
	p.account = accountOf(key, p.headers)
	for ep := chatEndpoint; ep < endpointCount; ep++ {
		v := *u
		v.Path = strings.TrimRight(u.Path, "/") + ep.path()
		v.RawPath = ""
		p.urls[ep] = &v
	}

	switch {
	case key == "":
		logger.Warn("provider has no api_key; requests go upstream without Authorization",
			zap.String("provider", p.name))
	case !strings.HasPrefix(key, "sk-"):
		logger.Warn("api_key does not start with \"sk-\"; check it is the provider's API key",
			zap.String("provider", p.name), zap.String("key", p.fingerprint))
	}
	return p, nil
}

// loadPlaceholder matches a placeholder ({env.KEY}, {http.request.host})
// with the backslash that escapes it, if any, and not braces of another
// kind (a JSON value's).
var loadPlaceholder = regexp.MustCompile(`\\?\{([A-Za-z_][\w.\-]*)\}`)

// resolveAtLoad resolves the placeholders of a provider setting, which is
// read once, at load: {env.*}, {file.*}, {system.*}. A placeholder known
// only per request is an error: no request is there to resolve it, and it
// would go upstream as written on every request.
func resolveAtLoad(repl *caddy.Replacer, v string) (string, error) {
	for _, m := range loadPlaceholder.FindAllStringSubmatch(v, -1) {
		if m[0][0] == '\\' {
			continue // escaped: literal braces
		}
		if _, known := repl.Get(m[1]); !known {
			return "", fmt.Errorf("placeholder {%s} is not known at load, where provider settings are resolved (use {env.*} or {file.*})", m[1])
		}
	}
	return repl.ReplaceKnown(v, ""), nil
}

// resolveTransport resolves at load, as every provider setting, what
// Caddy's transport would resolve per request (forward_proxy_url,
// tls_server_name), and refuses what it cannot honour for base
// (transportFits). tc may be nil (the default transport).
func resolveTransport(repl *caddy.Replacer, base string, tc *reverseproxy.HTTPTransport) error {
	if tc == nil {
		return nil
	}
	if err := resolveProxyAtLoad(repl, tc); err != nil {
		return fmt.Errorf("transport forward_proxy_url (network_proxy url): %v", err)
	}
	if tc.TLS != nil && tc.TLS.ServerName != "" {
		// with a placeholder left in it, Caddy's transport resolves the
		// name at each dial with the replacer of the request's context,
		// which a probe's and verify_key's have none of (a panic on the
		// transport's own goroutine, the server down); and one known per
		// request would let a client pick the name the provider's
		// certificate is checked for
		name, err := resolveForCaddy(repl, tc.TLS.ServerName)
		if err != nil {
			return fmt.Errorf("transport tls_server_name: %v", err)
		}
		tc.TLS.ServerName = name
	}
	return transportFits(base, tc)
}

// resolveForCaddy resolves at load (resolveAtLoad) a setting that Caddy's
// transport resolves once more, per request (tls_server_name,
// forward_proxy_url), and refuses a value that still holds a placeholder
// then: one escaped in the config (\{…}, unescaped by the resolving), or
// one inside an {env.*}'s value, would be resolved with the request's
// replacer, and a client's header would pick the name or the proxy.
func resolveForCaddy(repl *caddy.Replacer, v string) (string, error) {
	out, err := resolveAtLoad(repl, v)
	if err != nil {
		return "", err
	}
	for _, m := range loadPlaceholder.FindAllString(out, -1) {
		switch {
		case m[0] == '\\':
		case !strings.Contains(v, m):
			// from a value resolved at load ({env.*}, a secret): not
			// quoted, as it may be part of a password
			return "", errors.New("a value it takes at load still holds a placeholder (text in braces), which would be resolved again per request")
		default:
			return "", fmt.Errorf("%q still holds a placeholder once resolved at load, which would be resolved again per request", m)
		}
	}
	return out, nil
}

// resolveProxyAtLoad resolves the placeholders of the transport's forward
// proxy URL (forward_proxy_url, which Caddy's Caddyfile writes as
// network_proxy url) at load, as every provider setting: Caddy resolves
// it per request, and one known per request would let a client send the
// provider's requests, its key in them, through a proxy of its choosing.
func resolveProxyAtLoad(repl *caddy.Replacer, tc *reverseproxy.HTTPTransport) error {
	if tc.ForwardProxyURL != "" {
		u, err := resolveForCaddy(repl, tc.ForwardProxyURL)
		if err != nil {
			return err
		}
		if _, err := parseURL(u); err != nil {
			return err // before Caddy's check, whose error quotes the URL
		}
		tc.ForwardProxyURL = u
	}
	if len(tc.NetworkProxyRaw) == 0 {
		return nil
	}
	var np map[string]any
	if json.Unmarshal(tc.NetworkProxyRaw, &np) != nil || np["from"] != "url" {
		return nil // another source of proxies, or Caddy's to refuse
	}
	raw, ok := np["url"].(string)
	if !ok {
		return nil
	}
	u, err := resolveForCaddy(repl, raw)
	if err != nil {
		return err
	}
	if _, err := parseURL(u); err != nil {
		return err
	}
	np["url"] = u
	tc.NetworkProxyRaw, err = json.Marshal(np)
	return err
}

// parseURL is url.Parse with an error that does not quote raw: url.Parse's
// quotes the whole URL (a proxy's user:password@, a key in a query), an
// escape's error a piece of it, and a load error is logged and returned
// by the admin API. raw is a setting resolved at load, an {env.*}'s value
// included.
func parseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err == nil {
		return u, nil
	}
	var esc url.EscapeError
	var ue *url.Error
	switch {
	case errors.As(err, &esc):
		return nil, errors.New("not a valid URL (a malformed %-escape)")
	case errors.As(err, &ue):
		return nil, fmt.Errorf("not a valid URL (%v)", ue.Err)
	}
	return nil, errors.New("not a valid URL")
}

// parseBaseURL reads a provider's base_url: an http(s) URL with a host,
// or an error about subj that shows no credential of it (parseURL,
// shownURL).
func parseBaseURL(subj, raw string) (*url.URL, error) {
	u, err := parseURL(raw)
	if err != nil {
		return nil, cfgErr(subj, "base_url: %v", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, cfgErr(subj, "base_url %q is not an http(s) URL", shownURL(u))
	}
	return u, nil
}

// shownURL is u as errors and logs show it: without its user:password@
// and its query, either of which may hold a credential (a provider that
// takes its key as ?key=).
func shownURL(u *url.URL) string {
	v := *u
	v.User, v.RawQuery, v.ForceQuery = nil, "", false
	return v.String()
}

// The router's transport defaults, where Caddy's would suit a gateway
// less: keep-alive pools large enough for a busy one (Caddy keeps 32 idle
// connections a host), and a dial timeout for providers across the
// internet.
const (
	defaultMaxIdlePerHost = 512
	defaultMaxIdle        = 1024
	defaultIdleTimeout    = 90 * time.Second
	defaultDialTimeout    = 10 * time.Second
	defaultTLSHandshake   = 10 * time.Second
)

// newTransport builds the upstream transport of one provider with Caddy's
// HTTP transport (reverse_proxy's `transport http`), configured by cfg
// (nil: the defaults), with the router's pool sizes where cfg sets none.
// There is no response header timeout of its own: each attempt's context
// carries the deadline.
func newTransport(ctx caddy.Context, cfg *reverseproxy.HTTPTransport) (*reverseproxy.HTTPTransport, error) {
	ht := cfg
	if ht == nil {
		ht = new(reverseproxy.HTTPTransport)
	}
	if ht.KeepAlive == nil {
		ht.KeepAlive = new(reverseproxy.KeepAlive)
	}
	ka := ht.KeepAlive
	if ka.MaxIdleConnsPerHost == 0 {
		ka.MaxIdleConnsPerHost = defaultMaxIdlePerHost
	}
	if ka.MaxIdleConns == 0 {
		ka.MaxIdleConns = defaultMaxIdle
	}
	if ka.IdleConnTimeout == 0 {
		ka.IdleConnTimeout = caddy.Duration(defaultIdleTimeout)
	}
	if ht.DialTimeout == 0 {
		ht.DialTimeout = caddy.Duration(defaultDialTimeout)
	}
	if err := ht.Provision(ctx); err != nil {
		return nil, err
	}
	if t := ht.Transport; t.TLSHandshakeTimeout == 0 {
		t.TLSHandshakeTimeout = defaultTLSHandshake
	}
	return ht, nil
}

// transportFits refuses the settings of Caddy's HTTP transport that
// reverse_proxy applies per request, around the transport the router
// uses directly, and that the router's requests would silently go
// without: TLS for an http:// base_url (reverse_proxy makes the upstream
// https; the router's URL says http, and the key went in plaintext),
// tls_except_ports (the base_url's scheme decides) and what needs a client
// request's data (proxy_protocol). base is the base_url, resolved or
// literal. (A placeholder in tls_server_name is resolved at load, in
// newProvider.)
func transportFits(base string, t *reverseproxy.HTTPTransport) error {
	if t == nil {
		return nil
	}
	if t.TLS != nil {
		if len(t.TLS.ExceptPorts) > 0 {
			return errors.New("transport: tls_except_ports does not apply to a provider: its base_url's scheme says whether TLS is used")
		}
		if u, err := url.Parse(base); err == nil && u.Scheme == "http" {
			return fmt.Errorf("base_url %q is plain http, but its transport sets up TLS: write https:// (the key would go in plaintext)", base)
		}
	}
	if t.ProxyProtocol != "" {
		return errors.New("transport: proxy_protocol is not supported for a provider (it sends a client's address)")
	}
	return nil
}

// proxyAuthFits refuses a Proxy-Authorization among a provider's headers
// when base (the base_url, resolved or literal) is not plain http: Go's
// transport sends a request's own headers to the proxy only for http://
// URLs; an https:// request goes through the proxy's CONNECT tunnel with
// them, and the proxy's credentials reached the provider. Caddy's
// transport sends those of forward_proxy_url (user:password@) to the
// proxy alone.
func proxyAuthFits(base string, headers http.Header) error {
	if u, err := url.Parse(base); err == nil && u.Scheme == "http" {
		return nil
	}
	for f := range headers {
		if http.CanonicalHeaderKey(f) == "Proxy-Authorization" {
			return errors.New("header Proxy-Authorization would reach the provider: an https request's headers go through the proxy's tunnel; give the proxy's credentials in transport http's forward_proxy_url (http://user:password@proxy:port)")
		}
	}
	return nil
}

// errSwitchingProtocols is the failure of a provider that answered 101.
var errSwitchingProtocols = errors.New("the provider answered 101 Switching Protocols to a request for no upgrade")

// roundTrip makes one round trip with the provider's transport. A 101
// Switching Protocols (with upgrade headers, to a request that asks for no
// upgrade: the router forwards none) is a failure: Go's transport hands
// its caller the raw connection as the body, which the request's context
// no longer closes, so reading it would wait for as long as the provider
// keeps it open, past every deadline.
func (p *provider) roundTrip(req *http.Request) (*http.Response, error) {
	resp, err := p.transport.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusSwitchingProtocols {
		_ = resp.Body.Close()
		return nil, errSwitchingProtocols
	}
	return resp, err
}

// withLoadReplacer gives a request of the router's own (a probe,
// verify_key's) the replacer Caddy's transport and its network_proxy look
// for in a request's context, with the placeholders known at load, as
// Caddy's own active health checks do: without it a proxy URL that is a
// placeholder fails every such request.
func withLoadReplacer(ctx context.Context) context.Context {
	return context.WithValue(ctx, caddy.ReplacerCtxKey, caddy.NewReplacer())
}

// verifyKey asks the provider to list models with the configured key and
// fails on 401/403, so a wrong key is found at load and not at the first
// customer request. A provider that cannot be reached only gets a warning.
func (p *provider) verifyKey(ctx context.Context, logger *zap.Logger) error {
	ctx, cancel := context.WithTimeout(withLoadReplacer(ctx), min(p.timeout, 15*time.Second))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.urls[modelsEndpoint].String(), nil)
	if err != nil {
		return err
	}
	p.setAuth(req.Header)
	resp, err := p.roundTrip(req)
	if err != nil {
		logger.Warn("verify_key: provider unreachable; loading anyway",
			zap.String("provider", p.name), zap.String("key", p.fingerprint), zap.String("error", transportErrorText(err, p.scrubKey)))
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return cfgErr("provider "+p.name, "verify_key: %s rejected api_key %s with %d %s (check the key for white space or a typo)",
			shownURL(p.urls[modelsEndpoint]), p.fingerprint, resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	logger.Info("verify_key: api_key accepted", zap.String("provider", p.name),
		zap.String("key", p.fingerprint), zap.Int("status", resp.StatusCode))
	return nil
}

// scrubKey replaces the provider's key and header credentials in text it
// sent back.
func (p *provider) scrubKey(text string) string {
	for _, c := range p.secrets {
		text = strings.ReplaceAll(text, c.value, c.fingerprint)
	}
	return text
}

// minSecret is the shortest key or header value taken for a credential:
// shorter ones ("1", "true", vLLM's "EMPTY", Ollama's "ollama") are no
// secret, and would be replaced in answers' text.
const minSecret = 8

// addSecret adds v to the provider's secrets, once.
func (p *provider) addSecret(v string) {
	if len(v) < minSecret || slices.ContainsFunc(p.secrets, func(c secret) bool { return c.value == v }) {
		return
	}
	p.secrets = append(p.secrets, secret{v, keyFingerprint(v)})
}

// isCredentialHeader reports whether a configured request header carries a
// credential, by its name: Azure's api-key, X-Goog-Api-Key,
// Ocp-Apim-Subscription-Key, a second Authorization, tokens and secrets.
func isCredentialHeader(name string) bool {
	n := strings.ToLower(name)
	for _, w := range [...]string{"key", "auth", "token", "secret", "password", "signature", "cookie", "credential", "subscription"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// accountHeaders are the provider headers, besides credentials
// (isCredentialHeader), that pick which account or project pays.
var accountHeaders = []string{"Openai-Organization", "Openai-Project", "X-Goog-User-Project"}

// accountOf is the provider's account: a hash of its key and of the
// values of its headers that carry a credential or pick an account, in
// a fixed order.
func accountOf(key string, headers http.Header) string {
	var b strings.Builder
	b.WriteString(strconv.Quote(key))
	for _, f := range slices.Sorted(maps.Keys(headers)) {
		if !isCredentialHeader(f) && !slices.Contains(accountHeaders, http.CanonicalHeaderKey(f)) {
			continue
		}
		for _, v := range headers[f] {
			b.WriteString("\n" + strconv.Quote(http.CanonicalHeaderKey(f)) + ":" + strconv.Quote(v))
		}
	}
	return keyHash(b.String())
}

// setAuth puts the provider's key on an upstream request. The value is
// built once, at provision, and shared by every request (never changed in
// place; its cap of 1 makes an Add copy).
func (p *provider) setAuth(h http.Header) {
	if p.auth != nil {
		h["Authorization"] = p.auth
	}
}

// keyFingerprint is how a key shows in logs: its prefix and last four
// characters, never more.
func keyFingerprint(key string) string {
	if key == "" {
		return "(none)"
	}
	prefix := ""
	if strings.HasPrefix(key, "sk-") {
		prefix = "sk-"
	}
	if len(key) < 12 {
		return prefix + "…"
	}
	return prefix + "…" + key[len(key)-4:]
}

// keyHash identifies a key without keeping it.
func keyHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:8])
}

// transportErrorText says what kind of failure a transport error was, for
// the 503 message and logs, without the addresses Go's network errors
// carry (the deployment's name says which provider it was): "dial:
// connection refused", "read: connection reset by peer", "DNS lookup
// failed: no such host", or a TLS error's own text. scrub (nil: none)
// masks keys in what the text quotes of the provider, before the text is
// cut to its bound: a key cut in two is no longer found.
func transportErrorText(err error, scrub func(string) string) string {
	err = unwrapURLError(err)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return "DNS lookup failed: " + dnsErr.Err
	}
	// TLS failures in words of their own: Go's texts name the hosts and
	// addresses a certificate is valid for, and its subject
	var (
		hostErr      x509.HostnameError
		authorityErr x509.UnknownAuthorityError
		invalidErr   x509.CertificateInvalidError
		alertErr     tls.AlertError
		recordErr    tls.RecordHeaderError
		verifyErr    *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &hostErr):
		return "TLS: the provider's certificate is not valid for its host"
	case errors.As(err, &authorityErr):
		return "TLS: the provider's certificate is signed by an unknown authority"
	case errors.As(err, &invalidErr):
		return "TLS: the provider's certificate is invalid (" + certInvalidReason(invalidErr.Reason) + ")"
	case errors.As(err, &alertErr):
		return "TLS: the provider sent alert " + alertErr.Error()
	case errors.As(err, &recordErr):
		return "TLS: the provider did not answer in TLS"
	case errors.As(err, &verifyErr):
		return "TLS: the provider's certificate could not be verified"
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		cause := opErr.Err
		var se *os.SyscallError
		if errors.As(cause, &se) {
			cause = se.Err
		}
		// described in turn: a cause may itself carry addresses (a
		// forward proxy's "proxyconnect" wraps the dial's error)
		return opErr.Op + ": " + transportErrorText(cause, scrub)
	}
	var dialErr reverseproxy.DialError
	if errors.As(err, &dialErr) {
		// Caddy's dialer wraps the dial's error without a way to reach it
		// (no Unwrap): its text ends in the cause ("... connect: connection
		// refused", "... on 127.0.0.53:53: no such host"), after the
		// addresses
		text := dialErr.Error()
		cause := text
		if i := strings.LastIndex(text, ": "); i >= 0 {
			cause = text[i+len(": "):]
		}
		if strings.Contains(text, ": lookup ") {
			return "DNS lookup failed: " + cause
		}
		return "dial: " + cause
	}
	// an error of no known kind (a malformed response, an HTTP/2 GOAWAY)
	// may quote what the provider sent: bounded, and any address in it
	// masked
	text := err.Error()
	if scrub != nil {
		text = scrub(text)
	}
	return truncate(addressPattern.ReplaceAllString(text, "<address>"), 300)
}

// addressPattern matches an IPv4 or bracketed IPv6 address (hex digits
// with at least one colon, and a zone), with its port if any: a word in
// brackets ("[DONE]", in the text of errNoDone) is no address.
var addressPattern = regexp.MustCompile(`\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b|\[[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*(?:%[\w.-]+)?\](?::\d+)?`)

// certInvalidReason names an x509.InvalidReason without the certificate's
// details.
func certInvalidReason(r x509.InvalidReason) string {
	switch r {
	case x509.Expired:
		return "expired or not yet valid"
	case x509.NotAuthorizedToSign:
		return "signed by a certificate that is not a CA"
	case x509.IncompatibleUsage:
		return "not for server authentication"
	case x509.NameConstraintsWithoutSANs, x509.CANotAuthorizedForThisName, x509.CANotAuthorizedForExtKeyUsage:
		return "outside its CA's constraints"
	case x509.TooManyIntermediates, x509.TooManyConstraints:
		return "chain too long or complex"
	}
	return "invalid"
}

// unwrapURLError drops the url.Error wrapper: its URL may carry query
// parameters a provider treats as secret, and it only repeats the address.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// scrubber replaces every configured provider key and header credential
// (provider.secrets), wherever it appears in
// what the router relays but did not write itself (provider error bodies and
// headers), with the key's fingerprint: some providers echo the request,
// headers included, in their validation errors.
type scrubber struct {
	keys, fingerprints []string
	// the same as bytes, made once: bytes runs on every stream event, and
	// []byte(key) allocates each time for a key over 32 bytes (most real
	// keys)
	keyBytes, fingerprintBytes [][]byte
}

func newScrubber(providers map[string]*provider) *scrubber {
	s := new(scrubber)
	for _, p := range providers {
		for _, c := range p.secrets {
			if !slices.Contains(s.keys, c.value) {
				s.keys = append(s.keys, c.value)
				s.fingerprints = append(s.fingerprints, c.fingerprint)
				s.keyBytes = append(s.keyBytes, []byte(c.value))
				s.fingerprintBytes = append(s.fingerprintBytes, []byte(c.fingerprint))
			}
		}
	}
	return s
}

// bytes returns b with every key replaced; b itself when there is none, so
// the common case copies nothing.
func (s *scrubber) bytes(b []byte) []byte {
	if s == nil { // a replay of what was scrubbed before it was kept
		return b
	}
	for i, k := range s.keyBytes {
		if bytes.Contains(b, k) {
			b = bytes.ReplaceAll(b, k, s.fingerprintBytes[i])
		}
	}
	return b
}

// string is bytes for a string.
func (s *scrubber) string(v string) string {
	for i, k := range s.keys {
		if strings.Contains(v, k) {
			v = strings.ReplaceAll(v, k, s.fingerprints[i])
		}
	}
	return v
}

// header scrubs every header value in place, writing only the values it
// changes: the map may hold slices shared by every response (Caddy's
// Server header is one), which must not be written to.
func (s *scrubber) header(h http.Header) {
	for _, vs := range h {
		for i, v := range vs {
			if nv := s.string(v); nv != v {
				vs[i] = nv
			}
		}
	}
}
