// Package llmrouter is a Caddy HTTP handler that turns Caddy into an
// OpenAI-compatible LLM gateway: it routes each request to a model by query
// type, model name or priority, fails over between deployments before a byte
// reaches the client, and passes streams through event by event.
package llmrouter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/llmrouter/caddy-llm-router/internal/openai"
)

func init() {
	caddy.RegisterModule(Router{})
}

// Defaults, as documented in the README.
const (
	DefaultBaseURL           = "https://api.holysheep.ai/v1"
	defaultTimeout           = 30 * time.Second
	defaultTryDuration       = 60 * time.Second
	defaultFirstByteTimeout  = 15 * time.Second
	defaultStreamIdleTimeout = 2 * time.Minute
	defaultCooldown          = 30 * time.Second
	defaultMaxCooldown       = 5 * time.Minute
	defaultMaxRequestBody    = 8_000_000
	defaultContextReserve    = 128_000
	defaultHealthInterval    = 30 * time.Second
	defaultHealthTimeout     = 10 * time.Second
	defaultHealthPrompt      = "ping"
	defaultDisableBelow      = 30
)

// Router is the `llm_router` HTTP handler: one OpenAI-compatible endpoint in
// front of one or more OpenAI-compatible providers. It routes each request to
// a model by route (query type), model name or priority, fails over between
// deployments before the first byte reaches the client, and relays streams
// event by event. README.md is the user's reference; docs/ARCHITECTURE.md
// says how the code is laid out.
//
// After a request, these placeholders are known (for access logs and later
// handlers; a placeholder whose value is not known, such as the model of a
// request no model answered, is left unknown):
//
// Placeholder | Description
// ------------|-------------
// `{http.llm_router.route}` | the route the request was served from, if any
// `{http.llm_router.route_reason}` | why: `header`, `model`, `rule:<route>#<n>` or `default`
// `{http.llm_router.model}` | the model name that answered
// `{http.llm_router.provider}` | its provider
// `{http.llm_router.attempts}` | upstream attempts made
// `{http.llm_router.input_tokens}` | prompt tokens of the answer
// `{http.llm_router.output_tokens}` | completion tokens of the answer
// `{http.llm_router.cost}` | the answer's cost, in the configured currency
// `{http.llm_router.budget}` | `downgraded (<budget>)` or `refused (<budget>)` when a budget acted
// `{http.llm_router.cache}` | `hit`, `semantic-hit`, `miss`, `stale` or `bypass` when the response cache applied
type Router struct {
	// Providers are the OpenAI-compatible upstreams. The first one is the
	// default provider of every model that names none. Required.
	Providers []*Provider `json:"providers,omitempty"`

	// Models are the deployments: one model name served by one provider.
	// A name may appear again with another provider as a backup deployment.
	Models []*Model `json:"models,omitempty"`

	// Routes maps a query type to its candidate model names, in order.
	Routes map[string][]string `json:"routes,omitempty"`

	// RouteRules choose a route from the content of requests that name no
	// route and no model (or "auto"), in order; the first route whose rule
	// is true serves the request, else DefaultRoute (README, "Routing by
	// query type").
	RouteRules []*RouteRule `json:"route_rules,omitempty"`

	// DefaultRoute is the route used when a request names no model (or
	// "auto") and no route. Without it such requests go to every
	// deployment by priority.
	DefaultRoute string `json:"default_route,omitempty"`

	// Currency is what costs are reported in. Default: USD at rate 1.
	Currency *Currency `json:"currency,omitempty"`

	// HealthCheck configures active probes and the disable threshold.
	HealthCheck *HealthCheck `json:"health_check,omitempty"`

	// Failover bounds retries across deployments.
	Failover *Failover `json:"failover,omitempty"`

	// Budgets cap spend per spender and period: at a limit requests are
	// served from a cheaper route, past a hard cap refused (README,
	// "Budgets").
	Budgets []*Budget `json:"budgets,omitempty"`

	// BudgetSync is how often each instance writes its budget spend to
	// Caddy's storage and reads the other instances' (a fleet sharing one
	// storage shares its budgets; a restart resets nothing). Default: 5s;
	// negative: local only, in memory.
	BudgetSync caddy.Duration `json:"budget_sync,omitempty"`

	// BudgetInstance names this process in the budgets' storage, where
	// each process writes its own spend (placeholders known at load, e.g.
	// {env.POD_NAME}; one known only per request is an error); it must differ between processes that share the
	// storage and stay the same across a process's restarts. Default: the
	// host name and Caddy's instance ID, plus the first slot no other
	// running process holds (processes that share Caddy's data directory
	// share its instance ID).
	BudgetInstance string `json:"budget_instance,omitempty"`

	// ClientLabel adds a bounded `client` label to the tokens and cost
	// metrics and a clients section to the stats. Default: none.
	ClientLabel *ClientLabel `json:"client_label,omitempty"`

	// Cache answers repeated chat and embeddings questions from memory,
	// and serves a recent answer when every model is down (README,
	// "Response cache"). Default: off.
	Cache *Cache `json:"cache,omitempty"`

	// MaxRequestBody is the largest request body accepted, in bytes;
	// larger bodies get 413. Default: 8 MB (8,000,000 bytes).
	MaxRequestBody int64 `json:"max_request_body,omitempty"`

	// ContextReserve is how many input tokens a request is taken to read,
	// besides its text, when the router cannot size that input: context
	// the provider stores (a Responses API previous_response_id this
	// instance did not relay, made before a restart, on another instance,
	// or forgotten; a conversation; an item_reference input item; a
	// stored prompt) or a document (a file part), whose pages the provider
	// reads whatever its bytes. Budgets reserve it at admission, and an
	// answer without usage is charged it, so that concurrent such requests
	// cannot pass a hard cap on an estimate of their own text. Set it to
	// the largest context window of the models they reach. Default:
	// 128,000 tokens.
	ContextReserve int64 `json:"context_reserve,omitempty"`

	// ServiceTiers are the service_tier values a client may ask for; a
	// request naming another gets 400. The router charges one price per
	// model, so a tier that costs more than it (priority, scale) would
	// let a client spend past what its budgets count. Default: auto,
	// default and flex (which costs less than the standard price).
	ServiceTiers []string `json:"service_tiers,omitempty"`

	// AllowUnpriced are the features a provider bills apart from tokens
	// that clients may use all the same, uncounted by costs and budgets:
	// hosted tools by type ("web_search" also allows
	// "web_search_preview" and its dated versions: a name allows itself and
	// every type it begins followed by "_"), "web_search" for chat's
	// web_search_options, "live_search" for xAI's search_parameters,
	// "audio" for audio output, "plugin_" and its id
	// for OpenRouter's plugins ("plugin" allows them all). A request that
	// asks for one not listed gets 400. Default: none.
	AllowUnpriced []string `json:"allow_unpriced,omitempty"`

	// PassResponseHeaders are provider response headers relayed to the
	// client besides those an OpenAI client uses (Content-Type,
	// Cache-Control, X-Request-Id, Openai-Processing-Ms, Openai-Version,
	// X-Ratelimit-*, Retry-After, Retry-After-Ms, X-Should-Retry), which
	// are always relayed. Every other provider header (Set-Cookie,
	// Alt-Svc, Openai-Organization, Server, ...) is dropped. Names are
	// case-insensitive; hop-by-hop headers and Content-Length belong to
	// one connection and are never relayed. Default: none.
	PassResponseHeaders []string `json:"pass_response_headers,omitempty"`

	// ForwardHeaders are client request headers sent on to the provider
	// besides User-Agent, Traceparent, Tracestate, X-Request-Id and
	// X-Client-Request-Id, which are always forwarded (they change
	// neither the answer nor the bill). Every other client header is
	// dropped: one such as Anthropic-Beta or OpenAI-Beta could change
	// what the provider serves, and bills the operator for. The values of
	// these are part of the response cache's key, so that no answer given
	// under one value is served for another. Names are case-insensitive;
	// credentials, account and project selectors, hop-by-hop and body
	// headers, the router's own and another gateway's controls are
	// refused. Default: none.
	ForwardHeaders []string `json:"forward_headers,omitempty"`

	providers   map[string]*provider
	deployments []*deployment     // in declaration order
	modelsJSON  []byte            // the local GET /models answer
	modelJSON   map[string][]byte // the local GET /models/{id} answers
	routing     routing
	budgets     []*budget
	rules       *ruleSet
	cache       *responseCache
	scrub       *scrubber
	passHeaders map[string]bool // canonical names of the provider headers relayed
	forward     []string        // canonical names of the client request headers forwarded
	currency    Currency
	logger      *zap.Logger
	ctx         context.Context // the config's: done when it unloads
}

// Provider is one OpenAI-compatible upstream API.
type Provider struct {
	// Name identifies the provider in `model` blocks, headers and metrics.
	Name string `json:"name"`

	// BaseURL is the API root; request paths such as /chat/completions are
	// appended to it. Default: https://api.holysheep.ai/v1.
	BaseURL string `json:"base_url,omitempty"`

	// APIKey is sent as `Authorization: Bearer <key>`. Placeholders such as
	// {env.HOLYSHEEP_API_KEY} are resolved at load; surrounding white space
	// is trimmed. A key not starting with "sk-" loads with a warning.
	APIKey string `json:"api_key,omitempty"`

	// Timeout bounds one non-streaming attempt, from sending the request
	// to reading the whole response. Default: 30s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// Headers are extra request headers sent upstream, e.g. an
	// organisation id. Placeholders known at load ({env.*}, {file.*}) are
	// resolved then; one known only per request is a config error. Never
	// a header the router or the connection sets (Host, Content-Type,
	// Content-Length, Content-Encoding, Accept-Encoding, hop-by-hop
	// headers but Proxy-Authorization, and that one only with an http://
	// BaseURL: an https request's headers go through a proxy's tunnel to
	// the provider), nor Authorization beside APIKey.
	Headers http.Header `json:"headers,omitempty"`

	// VerifyKey makes the router GET {base_url}/models with the key at load
	// and refuse to load if the provider answers 401 or 403.
	VerifyKey bool `json:"verify_key,omitempty"`

	// NoStreamUsage stops the router from asking this provider for a
	// stream's usage: chat and completions stream requests go without
	// stream_options (a client's own is dropped too), for providers that
	// reject the member. Such a stream's tokens are then estimated from
	// its text and counted as estimated. Default: false (the router sets
	// stream_options.include_usage and strips the usage chunk from clients
	// that did not ask for it). Caddyfile: `stream_usage off`.
	NoStreamUsage bool `json:"no_stream_usage,omitempty"`

	// OutputLimitField is the member that carries the output limit the
	// router gives a chat request that sets none, when a budget covers it
	// (Budget.NoOutputCap): "max_completion_tokens" (OpenAI's; its
	// reasoning models refuse max_tokens) or "max_tokens" (for providers
	// that read only that one). Completions requests use max_tokens and
	// Responses requests max_output_tokens whatever this says. Default:
	// max_completion_tokens.
	OutputLimitField string `json:"output_limit_field,omitempty"`

	// Transport makes the provider's connections: Caddy's HTTP transport,
	// the module behind reverse_proxy's `transport http`, with all its
	// settings (TLS: trusted CAs, client certificates, server name,
	// versions; dial and keep-alive; resolvers; forward_proxy_url; HTTP
	// versions). BaseURL's scheme says whether TLS is used: TLS settings
	// with an http:// BaseURL are refused, as are tls_except_ports and
	// proxy_protocol, which reverse_proxy applies around this transport
	// per request; a placeholder in tls_server_name is resolved at load.
	// Default: that transport with the router's pool sizes (512
	// idle connections a host, 1024 in all, idle for 90s) and a 10s dial
	// timeout; an HTTPS upstream negotiates HTTP/2.
	Transport *reverseproxy.HTTPTransport `json:"transport,omitempty"`
}

// Model is one deployment: a model name served by one provider.
type Model struct {
	// Name is what clients send as "model" and what routes list.
	Name string `json:"name"`

	// Provider names the provider serving this deployment. Default: the
	// first provider.
	Provider string `json:"provider,omitempty"`

	// Upstream is the model id sent to the provider. Default: Name.
	Upstream string `json:"upstream,omitempty"`

	// Priority orders deployments of a candidate list: 1 is tried first.
	// Default: 1.
	Priority int `json:"priority,omitempty"`

	// Weight is this deployment's share of traffic among deployments of
	// equal priority; 0 asks it only when the others failed. Default: 1
	// (a pointer, so that an explicit 0 is not taken for the default).
	Weight *int `json:"weight,omitempty"`

	// Price overrides the built-in price table, per 1M tokens in the
	// configured price unit. Default: the price of another deployment of
	// the same name that sets one, else the built-in table (by name, then
	// by upstream id), else 0, with a warning at load.
	Price *Price `json:"price,omitempty"`

	// Fallback lists model names tried after this name's deployments.
	Fallback []string `json:"fallback,omitempty"`

	// Kind is what the model serves: "chat" (chat, completions and
	// responses requests) or "embedding". Default: "embedding" for the
	// known embedding ids (text-embedding-3-small, text-embedding-3-large,
	// text-embedding-ada-002) and names containing "embed", else "chat".
	Kind string `json:"kind,omitempty"`

	// ProbeBody replaces the health check's probe body for this model:
	// a JSON object whose "model" is set to the upstream id. Default: the
	// health check's.
	ProbeBody string `json:"probe_body,omitempty"`
}

// Currency says how costs are reported: one price unit (a list-price
// dollar) costs Rate units of Code.
type Currency struct {
	// Code is the ISO currency code used in metrics and stats. Default: USD.
	Code string `json:"code,omitempty"`

	// Rate is how many Code units one price unit costs. Default: 1.
	Rate float64 `json:"rate,omitempty"`
}

// HealthCheck configures active health probes and when a deployment is
// taken out of rotation.
type HealthCheck struct {
	// Interval is the period of active probes. Default: 30s.
	Interval caddy.Duration `json:"interval,omitempty"`

	// Off disables active probes (Caddyfile: `interval off`); passive
	// health from live traffic still applies.
	Off bool `json:"off,omitempty"`

	// Timeout bounds one probe. Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// Prompt is the user message of a chat probe, sent with max_tokens 1,
	// and the input of an embedding probe. Default: "ping".
	Prompt string `json:"prompt,omitempty"`

	// ProbeBody replaces the body of chat probes: a JSON object whose
	// "model" is set to each deployment's upstream id, e.g.
	// {"messages":[{"role":"user","content":"ping"}],"max_completion_tokens":16}
	// for reasoning models that refuse max_tokens. Default: the prompt with
	// max_tokens 1.
	ProbeBody string `json:"probe_body,omitempty"`

	// DisableBelow disables a deployment whose health score (0-100) falls
	// to or below it. Default: 30.
	DisableBelow *int `json:"disable_below,omitempty"`

	// SkipIfActive skips probing a deployment that served a request
	// successfully within this long. Default: 0 (always probe).
	SkipIfActive caddy.Duration `json:"skip_if_active,omitempty"`
}

// Failover bounds how the router retries a request across deployments.
type Failover struct {
	// MaxAttempts caps upstream attempts per request. Default: every
	// candidate once.
	MaxAttempts int `json:"max_attempts,omitempty"`

	// TryDuration is the budget for starting attempts: no new attempt
	// starts after it has passed. Default: 60s.
	TryDuration caddy.Duration `json:"try_duration,omitempty"`

	// FirstByteTimeout bounds, for streaming requests, the time until the
	// first SSE event arrives; the router holds the response until then,
	// so a stream that stalls still fails over. Default: 15s.
	FirstByteTimeout caddy.Duration `json:"first_byte_timeout,omitempty"`

	// StreamIdleTimeout bounds the silence between two events of a stream
	// once its first event was relayed; when it passes, the stream is
	// broken (the client gets an error event and an aborted response).
	// Reasoning models can pause for a long time between events, hence the
	// long default. Default: 2m; negative: no bound.
	StreamIdleTimeout caddy.Duration `json:"stream_idle_timeout,omitempty"`

	// Cooldown is how long a deployment is skipped after a 429 without a
	// Retry-After header. Default: 30s.
	Cooldown caddy.Duration `json:"cooldown,omitempty"`

	// MaxCooldown caps a 429's Retry-After. Default: 5m.
	MaxCooldown caddy.Duration `json:"max_cooldown,omitempty"`

	// Balance says how candidates of the same priority share the traffic:
	// "weighted", by weight × health score, or "latency", by weight ×
	// health score × the group's fastest recent time to first byte over
	// the deployment's own (an exponentially decaying average, per
	// deployment, of streams and of JSON answers apart). Default: weighted.
	Balance string `json:"balance,omitempty"`

	// HedgeAfter starts the next candidate beside an attempt that has
	// produced no first byte (a stream's first event, a JSON answer read
	// whole) after this long; the first valid first byte wins and the
	// other attempt is canceled at once (and charged: README, "Hedging").
	// Default: 0, off. Caddyfile: `hedge_after <duration>|auto`.
	HedgeAfter caddy.Duration `json:"hedge_after,omitempty"`

	// HedgeAuto sets each attempt's hedge delay from its deployment's
	// recent time to first byte: twice its decaying average, within 100ms
	// and 5s; no hedge before the deployment has been measured.
	HedgeAuto bool `json:"hedge_auto,omitempty"`

	// MaxHedges bounds the hedges one request may start. Default: 1; 0
	// turns hedging off.
	MaxHedges *int `json:"max_hedges,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Router) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.llm_router",
		New: func() caddy.Module { return new(Router) },
	}
}

// deployment is a Model made ready to serve, in one config. What must
// outlive the config (health, counters, the probe loop) is in state; the
// rest, settings included, is this config's own.
type deployment struct {
	id        deploymentID
	name      string
	upstream  string
	priority  int
	weight    int
	fallback  []string
	kind      modelKind
	price     unitPrice
	priceMsg  string // why the price is 0, when it is unknown
	probeBody string // the model's own probe body, if any

	// set by Provision
	provider     *provider
	state        *sharedState
	metrics      *deploymentMetrics
	currency     Currency
	disableBelow int
	probe        *probeSettings // nil: not probed
	logger       *zap.Logger
}

// target is where the deployment's requests go: base URL, account (the
// key and the credential and account headers, hashed: provider.account)
// and upstream id. Health and counters are about one target.
func (d *deployment) target() string {
	return d.provider.baseURL + "|" + d.provider.account + "|" + d.upstream
}

// label is how logs and errors name a deployment.
func (d *deployment) label() string { return d.id.String() }

// newDeployments turns the model declarations into deployments, priced,
// without any runtime part; the cost command uses them as they are.
func (r *Router) newDeployments() []*deployment {
	var out []*deployment
	for _, m := range r.Models {
		price, msg := priceFor(r.Models, m)
		kind, ok := parseKind(m.Kind)
		if !ok {
			kind = kindOf(m.Name, m.Upstream)
		}
		out = append(out, &deployment{
			id:        deploymentID{model: m.Name, provider: m.Provider},
			kind:      kind,
			name:      m.Name,
			upstream:  m.Upstream,
			priority:  m.Priority,
			weight:    *m.Weight,
			fallback:  m.Fallback,
			price:     price,
			priceMsg:  msg,
			probeBody: m.ProbeBody,
		})
	}
	return out
}

// Provision sets defaults, resolves placeholders and builds the runtime
// structures: a transport per provider, the deployments with their shared
// state, and the routing plans.
func (r *Router) Provision(ctx caddy.Context) error {
	r.ctx = ctx
	r.logger = ctx.Logger()
	var ownKey string
	if r.Cache != nil && r.Cache.Store == "" {
		// the config as loaded, before defaults: its own store's identity
		cfg, err := json.Marshal(r)
		if err != nil {
			return err
		}
		ownKey = ownStoreKey(ctx, cfg)
	}
	r.setDefaults()
	if err := r.validate(); err != nil {
		return err
	}
	if reg := ctx.GetMetricsRegistry(); reg != nil {
		if err := metrics.register(reg); err != nil {
			return err
		}
	}

	repl := caddy.NewReplacer()
	r.providers = make(map[string]*provider, len(r.Providers))
	for _, pc := range r.Providers {
		p, err := newProvider(ctx, pc, repl, r.logger)
		if err != nil {
			return err
		}
		r.providers[pc.Name] = p
	}
	for _, pc := range r.Providers {
		if pc.VerifyKey {
			if err := r.providers[pc.Name].verifyKey(ctx, r.logger); err != nil {
				return err
			}
		}
	}

	hc := r.HealthCheck
	for _, d := range r.newDeployments() {
		if d.priceMsg != "" {
			r.logger.Warn(d.priceMsg, zap.String("model", d.name), zap.String("provider", d.id.provider))
		}
		d.provider = r.providers[d.id.provider]
		d.metrics = metrics.forDeployment(d.name, d.id.provider, r.currency.Code)
		d.currency = r.currency
		d.disableBelow = *hc.DisableBelow
		d.logger = r.logger
		if !hc.Off {
			d.probe = &probeSettings{
				interval:     time.Duration(hc.Interval),
				timeout:      time.Duration(hc.Timeout),
				skipIfActive: time.Duration(hc.SkipIfActive),
				failover:     r.Failover,
				url:          d.provider.urls[chatEndpoint],
				body:         probeBody(d, hc),
			}
			if d.kind == kindEmbedding {
				d.probe.url = d.provider.urls[embeddingsEndpoint]
			}
		}
		// the deployment is complete before it is shared: the probe loop
		// may read it at once
		st, err := acquireState(d)
		if err != nil {
			return err
		}
		d.state = st
		r.deployments = append(r.deployments, d)
	}
	r.routing = buildRouting(r.deployments, r.Routes, r.DefaultRoute)
	if len(r.RouteRules) > 0 {
		rs, err := compileRules(r.RouteRules)
		if err != nil {
			return err
		}
		r.rules = rs
	}
	r.buildModelAnswers()
	r.scrub = newScrubber(r.providers)
	r.passHeaders = relayedHeaders(r.PassResponseHeaders)
	r.forward = forwardedHeaders(r.ForwardHeaders)
	sync := time.Duration(r.BudgetSync)
	// read once, at load, as provider settings are: one known per request
	// would be "" here, the host's identity taken without a word
	instance, err := resolveAtLoad(repl, r.BudgetInstance)
	if err != nil {
		return cfgErr("budget_instance", "%v", err)
	}
	for _, bc := range r.Budgets {
		b, err := newBudget(bc, r.currency.Code)
		if err != nil {
			return err
		}
		b.logger = r.logger
		b.metrics = metrics.forBudget(b.name)
		if b.ledger, err = acquireLedger(ctx, b, sync, instance, r.logger); err != nil {
			return err
		}
		if b.key != "" && !b.keyLabel {
			b.keySecret = b.ledger.keySecret(ctx.Storage(), r.logger)
		}
		b.cover(r.deployments, r.routing)
		r.budgets = append(r.budgets, b)
	}
	if r.Cache != nil {
		rc, err := newResponseCache(r.Cache, r.ForwardHeaders, ownKey)
		if err != nil {
			return err
		}
		r.cache = rc
		if rc.semantic != nil {
			rc.semantic.logger = r.logger
		}
		if rc.own {
			if err := claimOwnStore(ctx, rc); err != nil {
				return err
			}
		}
		r.routing.setNamespaces(r.askedWith)
	}
	metrics.forRoutes(r.Routes, r.cache != nil && r.cache.stale > 0)
	r.logLoaded()
	return nil
}

// askedWith is what a request is sent to d with besides its body and its
// target: the provider's own headers (a beta feature, a region), and for
// a request without an output limit the output cap of the budgets that
// cover d (the smallest reserve_output of those that cap, as
// exchange.outputCap gives it) and the member it goes in. An answer cut
// at one cap, or given under other headers, is not the answer to a
// request sent otherwise: a reload that changes them, or a handler with
// other budgets or headers sharing the store, gets a namespace of its
// own.
func (r *Router) askedWith(d *deployment) string {
	var b strings.Builder
	fields := slices.Sorted(maps.Keys(d.provider.headers))
	for _, f := range fields {
		for _, v := range d.provider.headers[f] {
			b.WriteString(strconv.Quote(f) + ":" + strconv.Quote(v) + "\n")
		}
	}
	limit := int64(0)
	for _, bg := range r.budgets {
		limit = tighterCap(limit, bg, d)
	}
	if limit > 0 {
		b.WriteString("cap " + strconv.FormatInt(limit, 10) + " " + d.provider.limitField)
	}
	return b.String()
}

// logLoaded says, in one line, what this handler serves.
func (r *Router) logLoaded() {
	providers := make([]string, 0, len(r.Providers))
	for _, pc := range r.Providers {
		p := r.providers[pc.Name]
		host := p.baseURL
		if u, err := url.Parse(p.baseURL); err == nil {
			host = u.Host
		}
		providers = append(providers, p.name+" "+host+" key "+p.fingerprint)
	}
	deployments := make([]string, 0, len(r.deployments))
	for _, d := range r.deployments {
		deployments = append(deployments, fmt.Sprintf("%s (%s, priority %d, weight %d)", d.label(), d.kind, d.priority, d.weight))
	}
	routes := make([]string, 0, len(r.Routes))
	for _, name := range slices.Sorted(maps.Keys(r.Routes)) {
		routes = append(routes, name+": "+strings.Join(r.Routes[name], " "))
	}
	probes := "off"
	if !r.HealthCheck.Off {
		probes = "every " + time.Duration(r.HealthCheck.Interval).String()
	}
	r.logger.Info("llm_router loaded",
		zap.Strings("providers", providers),
		zap.Strings("deployments", deployments),
		zap.Strings("routes", routes),
		zap.String("default_route", r.DefaultRoute),
		zap.String("probes", probes),
		zap.String("currency", fmt.Sprintf("%s at %g per price unit", r.currency.Code, r.currency.Rate)))
}

// setDefaults fills in every default so the rest of the code reads plain
// fields.
func (r *Router) setDefaults() {
	for _, p := range r.Providers {
		if p.BaseURL == "" {
			p.BaseURL = DefaultBaseURL
		}
		if p.Timeout == 0 {
			p.Timeout = caddy.Duration(defaultTimeout)
		}
	}
	for _, m := range r.Models {
		if m.Provider == "" && len(r.Providers) > 0 {
			m.Provider = r.Providers[0].Name
		}
		if m.Upstream == "" {
			m.Upstream = m.Name
		}
		if m.Priority == 0 {
			m.Priority = 1
		}
		if m.Weight == nil {
			one := 1
			m.Weight = &one
		}
	}
	r.currency = Currency{Code: "USD", Rate: 1}
	if r.Currency != nil {
		if r.Currency.Code != "" {
			r.currency.Code = strings.ToUpper(r.Currency.Code)
		}
		if r.Currency.Rate != 0 {
			r.currency.Rate = r.Currency.Rate
		}
	}
	if r.Failover == nil {
		r.Failover = new(Failover)
	}
	f := r.Failover
	if f.TryDuration == 0 {
		f.TryDuration = caddy.Duration(defaultTryDuration)
	}
	if f.FirstByteTimeout == 0 {
		f.FirstByteTimeout = caddy.Duration(defaultFirstByteTimeout)
	}
	if f.StreamIdleTimeout == 0 {
		f.StreamIdleTimeout = caddy.Duration(defaultStreamIdleTimeout)
	}
	if f.Cooldown == 0 {
		f.Cooldown = caddy.Duration(defaultCooldown)
	}
	if f.MaxCooldown == 0 {
		f.MaxCooldown = caddy.Duration(defaultMaxCooldown)
	}
	if r.HealthCheck == nil {
		r.HealthCheck = new(HealthCheck)
	}
	h := r.HealthCheck
	if h.Interval == 0 {
		h.Interval = caddy.Duration(defaultHealthInterval)
	}
	if h.Timeout == 0 {
		h.Timeout = caddy.Duration(defaultHealthTimeout)
	}
	if h.Prompt == "" {
		h.Prompt = defaultHealthPrompt
	}
	if h.DisableBelow == nil {
		v := defaultDisableBelow
		h.DisableBelow = &v
	}
	if r.MaxRequestBody == 0 {
		r.MaxRequestBody = defaultMaxRequestBody
	}
	if r.ContextReserve == 0 {
		r.ContextReserve = defaultContextReserve
	}
	if r.ServiceTiers == nil {
		r.ServiceTiers = defaultServiceTiers
	}
	if r.BudgetSync == 0 {
		r.BudgetSync = caddy.Duration(defaultBudgetSync)
	}
}

// Validate checks the configuration once defaults are set.
func (r *Router) Validate() error { return r.validate() }

// configError is a validation error about one named part of the config, so
// the Caddyfile adapter can point at the line of the mistake.
type configError struct {
	subject string // "model gpt-4.1", "route simple_qa", "provider backup", ...
	// ref says which declaration, or which line inside it: the subject, or
	// "model#<index>", optionally followed by "/<subdirective>" or
	// "/fallback/<name>"; the adapter uses the most precise one it knows.
	ref string
	msg string
}

func (e *configError) Error() string { return e.subject + ": " + e.msg }

func cfgErr(subject, format string, args ...any) error {
	return &configError{subject: subject, ref: subject, msg: fmt.Sprintf(format, args...)}
}

// modelErr is a configError about the i-th model declaration; at names the
// line inside it ("provider", "fallback/<name>", ...), if any.
func modelErr(models []*Model, i int, at, format string, args ...any) error {
	ref := "model#" + strconv.Itoa(i)
	if at != "" {
		ref += "/" + at
	}
	return &configError{subject: "model " + models[i].Name, ref: ref, msg: fmt.Sprintf(format, args...)}
}

// didYouMean suggests the known name nearest to a mistyped one, as
// " (did you mean "x"?)", or "" when none is close.
func didYouMean(typo string, known []string) string {
	best, bestDist := "", len(typo)/3+1
	if bestDist > 3 {
		bestDist = 3
	}
	for _, k := range known {
		if d := editDistance(typo, k); d <= bestDist && (best == "" || d < bestDist) {
			best, bestDist = k, d
		}
	}
	if best == "" || best == typo {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and transpositions of adjacent characters.
func editDistance(a, b string) int {
	x, y := []rune(a), []rune(b)
	d := make([][]int, len(x)+1)
	for i := range d {
		d[i] = make([]int, len(y)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(x); i++ {
		for j := 1; j <= len(y); j++ {
			cost := 1
			if x[i-1] == y[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && x[i-1] == y[j-2] && x[i-2] == y[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(x)][len(y)]
}

// validate checks cross-references. It is run by Provision (after
// defaults) and by the Caddyfile adapter, which maps errors to lines.
func (r *Router) validate() error {
	if len(r.Providers) == 0 {
		return errors.New("llm_router: at least one provider is required")
	}
	if f := r.Failover; f != nil && f.Balance != "" && f.Balance != balanceWeighted && f.Balance != balanceLatency {
		return cfgErr("failover", "balance must be weighted or latency, got %q", f.Balance)
	}
	if f := r.Failover; f != nil && (f.HedgeAfter < 0 || f.MaxHedges != nil && *f.MaxHedges < 0) {
		return cfgErr("failover", "hedge_after and max_hedges must not be negative")
	}
	if f := r.Failover; f != nil && f.HedgeAuto && f.HedgeAfter != 0 {
		// one delay or the other: auto would win without a word
		return cfgErr("failover", "hedge_after and hedge_auto are both set; give a delay or auto")
	}
	for _, f := range r.ForwardHeaders {
		if why := unforwardable(f); why != "" {
			return cfgErr("forward_header", "%q is never forwarded: %s", f, why)
		}
	}
	providers := make(map[string]bool)
	var providerNames []string
	for _, p := range r.Providers {
		subj := "provider " + p.Name
		if p.Name == "" {
			return errors.New("llm_router: a provider has no name")
		}
		if providers[p.Name] {
			return cfgErr(subj, "declared twice")
		}
		providers[p.Name] = true
		providerNames = append(providerNames, p.Name)
		if p.BaseURL != "" && !strings.Contains(p.BaseURL, "{") {
			if _, err := parseBaseURL(subj, p.BaseURL); err != nil {
				return err
			}
		}
		if p.Timeout < 0 {
			return cfgErr(subj, "timeout must not be negative")
		}
		base := p.BaseURL
		if base == "" {
			base = DefaultBaseURL
		}
		if err := transportFits(base, p.Transport); err != nil {
			return cfgErr(subj, "%v", err)
		}
		if !strings.Contains(base, "{") {
			if err := proxyAuthFits(base, p.Headers); err != nil {
				return cfgErr(subj, "%v", err)
			}
		}
		for field := range p.Headers {
			// no request could carry it: every one would fail in the transport
			if !httpguts.ValidHeaderFieldName(field) {
				return cfgErr(subj, "header %q is not a header field name", field)
			}
			// dropped, or replaced, on every request without a word
			if f := http.CanonicalHeaderKey(field); slices.Contains(routerSetHeaders, f) || f != "Proxy-Authorization" && slices.Contains(hopHeaders, f) {
				return cfgErr(subj, "header %s is set by the router or the connection, not by the config", field)
			}
			// setAuth would replace it without a word
			if p.APIKey != "" && http.CanonicalHeaderKey(field) == "Authorization" {
				return cfgErr(subj, "api_key and header Authorization both set the Authorization header; give one")
			}
		}
	}
	if len(r.Models) == 0 {
		return errors.New("llm_router: at least one model is required")
	}
	names := make(map[string]int) // first declaration of each name
	var modelNames []string
	kinds := make(map[string]modelKind)
	seen := make(map[string]bool)
	for i, m := range r.Models {
		if m.Name == "" {
			return errors.New("llm_router: a model has no name")
		}
		if m.Name == "auto" {
			return modelErr(r.Models, i, "", `"auto" is reserved for automatic routing`)
		}
		prov := m.Provider
		if prov == "" {
			prov = r.Providers[0].Name
		}
		if !providers[prov] {
			return modelErr(r.Models, i, "provider", "unknown provider %q%s", prov, didYouMean(prov, providerNames))
		}
		if seen[m.Name+"\x00"+prov] {
			return modelErr(r.Models, i, "", "duplicate deployment: model %q is already declared with provider %q", m.Name, prov)
		}
		seen[m.Name+"\x00"+prov] = true
		if m.Priority < 0 {
			return modelErr(r.Models, i, "priority", "priority must be 1 or more")
		}
		if m.Weight != nil && *m.Weight < 0 {
			return modelErr(r.Models, i, "weight", "weight must not be negative")
		}
		if err := m.Price.validate(); err != nil {
			return modelErr(r.Models, i, "price", "%v", err)
		}
		kind, ok := parseKind(m.Kind)
		switch {
		case m.Kind == "":
			upstream := m.Upstream
			if upstream == "" {
				upstream = m.Name
			}
			kind = kindOf(m.Name, upstream)
		case !ok:
			return modelErr(r.Models, i, "kind", "kind must be chat or embedding, not %q", m.Kind)
		}
		if k, declared := kinds[m.Name]; declared && k != kind {
			return modelErr(r.Models, i, "kind", "is a %s model here but a %s model in another deployment", kind, k)
		}
		kinds[m.Name] = kind
		if m.ProbeBody != "" && !openai.IsObject([]byte(m.ProbeBody)) {
			return modelErr(r.Models, i, "probe_body", "probe_body must be a JSON object")
		}
		if _, ok := names[m.Name]; !ok {
			names[m.Name] = i
			modelNames = append(modelNames, m.Name)
		}
	}
	for i, m := range r.Models {
		for _, fb := range m.Fallback {
			if _, ok := names[fb]; !ok {
				return modelErr(r.Models, i, "fallback/"+fb, "fallback names unknown model %q%s", fb, didYouMean(fb, modelNames))
			}
			if kinds[fb] != kinds[m.Name] {
				return modelErr(r.Models, i, "fallback/"+fb, "fallback %q is a %s model; %q is a %s model", fb, kinds[fb], m.Name, kinds[m.Name])
			}
		}
	}
	if loop := fallbackLoop(r.Models); loop != nil {
		return modelErr(r.Models, names[loop[0]], "fallback/"+loop[1], "fallback loop: %s", strings.Join(loop, " -> "))
	}
	routeNames := slices.Sorted(maps.Keys(r.Routes))
	for _, name := range routeNames {
		subj := "route " + name
		if name == "auto" { // a request for "auto" is routed by rules and default_route, never to it
			return cfgErr(subj, `"auto" is reserved for automatic routing`)
		}
		if _, clash := names[name]; clash {
			return cfgErr(subj, "a route and a model cannot share a name")
		}
		if len(r.Routes[name]) == 0 {
			return cfgErr(subj, "lists no models")
		}
		for _, m := range r.Routes[name] {
			if _, ok := names[m]; !ok {
				return cfgErr(subj, "unknown model %q%s", m, didYouMean(m, modelNames))
			}
			if first := r.Routes[name][0]; kinds[m] != kinds[first] {
				return cfgErr(subj, "mixes kinds: %q is a %s model, %q a %s model; a route serves one kind", first, kinds[first], m, kinds[m])
			}
		}
	}
	for _, rule := range r.RouteRules {
		models, ok := r.Routes[rule.Route]
		if !ok {
			return cfgErr("route_rules", "rules for unknown route %q%s", rule.Route, didYouMean(rule.Route, routeNames))
		}
		if kinds[models[0]] != kindChat {
			return cfgErr("route "+rule.Route, "serves embeddings: rules choose among chat routes")
		}
	}
	if _, err := compileRules(r.RouteRules); err != nil {
		var re *ruleError
		if errors.As(err, &re) {
			return &configError{subject: "route " + re.route, ref: "route " + re.route + "/when/" + strconv.Itoa(re.n),
				msg: fmt.Sprintf("when #%d: %s", re.n, re.err)}
		}
		return err
	}
	if r.DefaultRoute != "" {
		models, ok := r.Routes[r.DefaultRoute]
		if !ok {
			return cfgErr("default_route "+r.DefaultRoute, "unknown route %q%s", r.DefaultRoute, didYouMean(r.DefaultRoute, routeNames))
		}
		if kinds[models[0]] != kindChat {
			return cfgErr("default_route "+r.DefaultRoute, "route %q serves embeddings; the default route is for chat requests (an embeddings request naming no model goes to the embedding models by priority)", r.DefaultRoute)
		}
	}
	if c := r.Currency; c != nil && c.Rate < 0 {
		return cfgErr("currency", "rate must be positive")
	}
	if f := r.Failover; f != nil {
		if f.MaxAttempts < 0 || f.TryDuration < 0 || f.FirstByteTimeout < 0 || f.Cooldown < 0 || f.MaxCooldown < 0 {
			return cfgErr("failover", "values must not be negative")
		}
	}
	if h := r.HealthCheck; h != nil {
		if h.Interval < 0 || h.Timeout < 0 || h.SkipIfActive < 0 {
			return cfgErr("health_check", "durations must not be negative")
		}
		if h.DisableBelow != nil && (*h.DisableBelow < 0 || *h.DisableBelow > 100) {
			return cfgErr("health_check", "disable_below must be between 0 and 100")
		}
		if h.ProbeBody != "" && !openai.IsObject([]byte(h.ProbeBody)) {
			return cfgErr("health_check", "probe_body must be a JSON object")
		}
	}
	if r.MaxRequestBody < 0 {
		return cfgErr("max_request_body", "must not be negative")
	}
	if r.ContextReserve < 0 {
		return cfgErr("context_reserve", "must not be negative")
	}
	budgetNames := map[string]bool{}
	for _, b := range r.Budgets {
		subj := "budget " + b.Name
		if b.Name == "" {
			return errors.New("llm_router: a budget has no name")
		}
		if budgetNames[b.Name] {
			return cfgErr(subj, "declared twice")
		}
		// the name is a directory of the ledger files in storage: one
		// segment, or they land outside the budgets' (and the storage's)
		if b.Name == "." || b.Name == ".." || strings.ContainsAny(b.Name, "/\\\x00") {
			return cfgErr(subj, "a budget's name must not be . or .. nor contain /, \\ or NUL: it names its directory in storage")
		}
		budgetNames[b.Name] = true
		if ph := credentialPlaceholder(b.Key); b.KeyIsLabel && ph != "" {
			return cfgErr(subj, "key %s is a client credential: without label its values are kept and shown hashed", ph)
		}
		if _, err := newBudget(b, ""); err != nil {
			return err
		}
		for _, m := range b.Match {
			_, isRoute := r.Routes[m]
			if _, isModel := names[m]; !isRoute && !isModel {
				return cfgErr(subj, "match names unknown route or model %q%s", m, didYouMean(m, append(slices.Clone(routeNames), modelNames...)))
			}
		}
		if d := b.Downgrade; d != "" {
			models, ok := r.Routes[d]
			if !ok {
				return cfgErr(subj, "downgrade names unknown route %q%s", d, didYouMean(d, routeNames))
			}
			if kinds[models[0]] != kindChat {
				return cfgErr(subj, "downgrade route %q serves embeddings", d)
			}
		}
	}
	if c := r.Cache; c != nil {
		if c.MaxSize < 0 || c.TTL < 0 {
			return cfgErr("cache", "ttl and max_size must not be negative")
		}
		if c.SharedScope && len(c.Scope) > 0 {
			return cfgErr("cache/scope", "%s", errSharedScope)
		}
		for _, m := range c.Match {
			_, isRoute := r.Routes[m]
			if _, isModel := names[m]; !isRoute && !isModel {
				return cfgErr("cache", "match names unknown route or model %q%s", m, didYouMean(m, append(slices.Clone(routeNames), modelNames...)))
			}
		}
		if sc := c.Semantic; sc != nil {
			switch kind, ok := kinds[sc.Model]; {
			case sc.Model == "":
				return cfgErr("cache/semantic", "needs the embedding model that embeds questions (model <name>)")
			case !ok:
				return cfgErr("cache/semantic/model", "names unknown model %q%s", sc.Model, didYouMean(sc.Model, modelNames))
			case kind != kindEmbedding:
				return cfgErr("cache/semantic/model", "model %q is not an embedding model (kind embedding)", sc.Model)
			}
			if sc.Threshold < 0 || sc.Threshold > 1 || sc.MaxEntries < 0 || sc.LookupTimeout < 0 {
				return cfgErr("cache/semantic", "threshold must be within 0..1; max_entries and lookup_timeout must not be negative")
			}
		}
	}
	if c := r.ClientLabel; c != nil && (c.Value == "" || c.Max < 0) {
		return cfgErr("client_label", "needs a placeholder and a non-negative max")
	}
	if c := r.ClientLabel; c != nil {
		if ph := credentialPlaceholder(c.Value); ph != "" {
			return cfgErr("client_label", "%s is a client credential: its values would be metrics labels and stats for all to read; label by who the client is ({http.auth.user.id}, a team header)", ph)
		}
	}
	return nil
}

// credentialPlaceholder returns the first placeholder in v that reads a
// client credential (a request header, cookie or query parameter named as
// credentials are, as isCredentialHeader reads names, or a whole that holds
// them: wholeRequestPlaceholders), or "". Its values must not be shown as
// they are.
func credentialPlaceholder(v string) string {
	for _, m := range loadPlaceholder.FindAllStringSubmatch(v, -1) {
		if m[0][0] == '\\' {
			continue
		}
		if slices.Contains(wholeRequestPlaceholders, m[1]) {
			return "{" + m[1] + "}"
		}
		for _, prefix := range [...]string{"http.request.header.", "http.request.cookie.", "http.request.uri.query."} {
			if name, ok := strings.CutPrefix(m[1], prefix); ok && isCredentialHeader(name) {
				return "{" + m[1] + "}"
			}
		}
	}
	return ""
}

// wholeRequestPlaceholders are Caddy's placeholders of the whole query
// string (in the URI too), which holds a credential parameter when a
// client sends one (?key=...), and of the body, the prompt.
var wholeRequestPlaceholders = []string{
	"http.request.uri", "http.request.uri_escaped", "http.request.uri.query", "http.request.uri.query_escaped",
	"http.request.uri.prefixed_query", "http.request.orig_uri", "http.request.orig_uri.query",
	"http.request.orig_uri.prefixed_query", "http.request.body", "http.request.body_base64",
}

// errSharedScope refuses a cache scope that is both shared and scoped: one
// of the two would be ignored, and if it were the placeholders, every
// client would be served every other's answers.
const errSharedScope = "scope shared shares across every client; it cannot be combined with scope placeholders"

// fallbackLoop returns a cycle of fallback names, or nil.
func fallbackLoop(models []*Model) []string {
	edges := make(map[string][]string)
	for _, m := range models {
		edges[m.Name] = append(edges[m.Name], m.Fallback...)
	}
	const (
		unvisited = iota
		onPath
		done
	)
	mark := make(map[string]int)
	var path []string
	var visit func(n string) []string
	visit = func(n string) []string {
		switch mark[n] {
		case onPath:
			i := slices.Index(path, n)
			return append(slices.Clone(path[i:]), n)
		case done:
			return nil
		}
		mark[n] = onPath
		path = append(path, n)
		for _, next := range edges[n] {
			if loop := visit(next); loop != nil {
				return loop
			}
		}
		path = path[:len(path)-1]
		mark[n] = done
		return nil
	}
	for _, m := range models {
		if loop := visit(m.Name); loop != nil {
			return loop
		}
	}
	return nil
}

// Cleanup releases this config's hold on shared deployment state (the probe
// loop of a state no other config uses stops) and closes idle upstream
// connections.
func (r *Router) Cleanup() error {
	for _, d := range r.deployments {
		releaseState(d)
	}
	for _, b := range r.budgets {
		releaseLedger(b)
	}
	if r.cache != nil {
		forgetOwnStore(r.cache)
		r.cache.release()
	}
	for _, p := range r.providers {
		_ = p.transport.Cleanup() // idle connections, HTTP/3's included
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Router)(nil)
	_ caddy.Validator             = (*Router)(nil)
	_ caddy.CleanerUpper          = (*Router)(nil)
	_ caddyhttp.MiddlewareHandler = (*Router)(nil)
)
