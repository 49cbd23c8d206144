package llmrouter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// provider is a Provider made ready to serve: its URLs, key and transport.
// It belongs to one config; a reload builds a new one.
type provider struct {
	name          string
	baseURL       string
	key           string
	fingerprint   string // safe to log
	headers       http.Header
	timeout       time.Duration
	transport     *http.Transport
	chatURL       *url.URL
	embeddingsURL *url.URL
	modelsURL     *url.URL
}

// newProvider resolves placeholders and builds the provider's transport.
func newProvider(pc *Provider, repl *caddy.Replacer, logger *zap.Logger) (*provider, error) {
	subj := "provider " + pc.Name
	base := strings.TrimRight(repl.ReplaceKnown(pc.BaseURL, ""), "/")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, cfgErr(subj, "base_url %q is not an http(s) URL", base)
	}
	key := strings.TrimSpace(repl.ReplaceKnown(pc.APIKey, ""))
	p := &provider{
		name:        pc.Name,
		baseURL:     base,
		key:         key,
		fingerprint: keyFingerprint(key),
		timeout:     time.Duration(pc.Timeout),
		headers:     make(http.Header, len(pc.Headers)),
		transport:   newTransport(),
	}
	for field, vals := range pc.Headers {
		for _, v := range vals {
			p.headers.Add(field, repl.ReplaceKnown(v, ""))
		}
	}
	join := func(suffix string) *url.URL {
		v := *u
		v.Path = strings.TrimRight(u.Path, "/") + suffix
		v.RawPath = ""
		return &v
	}
	p.chatURL = join("/chat/completions")
	p.embeddingsURL = join("/embeddings")
	p.modelsURL = join("/models")

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

// urlFor is the provider's URL of an endpoint.
func (p *provider) urlFor(ep endpoint) *url.URL {
	if ep == embeddingsEndpoint {
		return p.embeddingsURL
	}
	return p.chatURL
}

// newTransport is the upstream transport of one provider: keep-alive pools
// large enough for a busy gateway, and no response header timeout of its own
// (each attempt's context carries the deadline).
func newTransport() *http.Transport {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// verifyKey asks the provider to list models with the configured key and
// fails on 401/403, so a wrong key is found at load and not at the first
// customer request. A provider that cannot be reached only gets a warning.
func (p *provider) verifyKey(ctx context.Context, logger *zap.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, min(p.timeout, 15*time.Second))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.modelsURL.String(), nil)
	if err != nil {
		return err
	}
	p.setAuth(req.Header)
	resp, err := p.transport.RoundTrip(req)
	if err != nil {
		logger.Warn("verify_key: provider unreachable; loading anyway",
			zap.String("provider", p.name), zap.String("key", p.fingerprint), zap.Error(unwrapURLError(err)))
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return cfgErr("provider "+p.name, "verify_key: %s rejected api_key %s with %d %s (check the key for white space or a typo)",
			p.modelsURL.Redacted(), p.fingerprint, resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	logger.Info("verify_key: api_key accepted", zap.String("provider", p.name),
		zap.String("key", p.fingerprint), zap.Int("status", resp.StatusCode))
	return nil
}

// setAuth puts the provider's key on an upstream request.
func (p *provider) setAuth(h http.Header) {
	if p.key != "" {
		h.Set("Authorization", "Bearer "+p.key)
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

// unwrapURLError drops the url.Error wrapper: its URL may carry query
// parameters a provider treats as secret, and it only repeats the address.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
