package llmrouter

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/dustin/go-humanize"

	"github.com/llmrouter/caddy-llm-router/internal/openai"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("llm_router", parseCaddyfile)
	// after the auth and rate-limit style handlers, before the terminal
	// handlers, so no global `order` option is needed
	httpcaddyfile.RegisterDirectiveOrder("llm_router", httpcaddyfile.Before, "reverse_proxy")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	r := new(Router)
	if err := r.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return r, nil
}

// UnmarshalCaddyfile sets up the router from Caddyfile tokens. Syntax:
//
//	llm_router [<matcher>] {
//		provider <name> {
//			base_url   <url>
//			api_key    <key>
//			timeout    <duration>
//			header     <field> <value>
//			verify_key
//			stream_usage on|off
//			output_limit_field max_completion_tokens|max_tokens
//			transport http {
//				<reverse_proxy's transport http subdirectives>
//			}
//		}
//		model <name> {
//			provider  <provider>
//			upstream  <id>
//			priority  <int>
//			weight    <int>
//			price     <input> [<output> [<cached_input>]]
//			fallback  <model>...
//			kind      chat|embedding
//			probe_body <json>
//		}
//		route <name> <model>... [{
//			when <CEL expression>
//		}]
//		default_route <name>
//		currency <code> [<rate>]
//		health_check {
//			interval       <duration>|off
//			timeout        <duration>
//			prompt         <text>
//			probe_body     <json>
//			disable_below  <score>
//			skip_if_active <duration>
//		}
//		failover {
//			max_attempts        <n>
//			try_duration        <duration>
//			first_byte_timeout  <duration>
//			stream_idle_timeout <duration>|0
//			cooldown            <duration>
//			max_cooldown        <duration>
//			balance             weighted|latency
//			hedge_after         <duration>|auto
//			max_hedges          <n>
//		}
//		budget <name> {
//			limit     <amount> per hour|day|week|month
//			key       <placeholder> [label]
//			match     <route or model>...
//			downgrade <route>
//			hard      <amount> [per hour|day|week|month]
//			warn_at   <percent>
//			timezone  <IANA zone>
//			reserve_output <tokens>
//			output_cap on|off
//		}
//		budget_sync <duration>|off
//		budget_instance <name>
//		client_label <placeholder> [max <n>]
//		cache {
//			ttl            <duration>
//			max_size       <size>
//			stale_if_error <duration>|0
//			match          <route or model>...
//			key_header     <field>...
//			scope          <placeholder>...|shared
//			store          <name>
//			streams        on|off
//			semantic {
//				model          <embedding model>
//				threshold      <0..1>
//				max_entries    <n>
//				lookup_timeout <duration>
//			}
//		}
//		max_request_body <size>
//		context_reserve <tokens>
//		service_tiers <tier>...
//		allow_unpriced <feature>...
//		pass_response_header <field>...
//		forward_header <field>...
//	}
//
// provider and model may be repeated; a model name may be declared again
// with another provider as a backup deployment.
func (r *Router) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	// where each named part was declared, to point errors at its line
	where := make(map[string]caddyfile.Token)
	seen := make(map[string]bool)
	for d.NextBlock(0) {
		if err := once(d, seen, "provider", "model", "route", "budget", "pass_response_header", "forward_header"); err != nil {
			return err
		}
		switch d.Val() {
		case "provider":
			p := new(Provider)
			if !d.AllArgs(&p.Name) {
				return d.ArgErr()
			}
			where["provider "+p.Name] = d.Token()
			if err := unmarshalProvider(d, p); err != nil {
				return err
			}
			r.Providers = append(r.Providers, p)

		case "model":
			m := new(Model)
			if !d.AllArgs(&m.Name) {
				return d.ArgErr()
			}
			ref := "model#" + strconv.Itoa(len(r.Models))
			where[ref] = d.Token()
			if err := unmarshalModel(d, m, ref, where); err != nil {
				return err
			}
			r.Models = append(r.Models, m)

		case "route":
			tok := d.Token()
			args := d.RemainingArgs()
			if len(args) < 2 {
				return d.ArgErr()
			}
			if _, dup := r.Routes[args[0]]; dup {
				return d.Errf("route %q declared twice", args[0])
			}
			if r.Routes == nil {
				r.Routes = make(map[string][]string)
			}
			r.Routes[args[0]] = args[1:]
			where["route "+args[0]] = tok
			rule := &RouteRule{Route: args[0]}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				if d.Val() != "when" {
					return unrecognized(d, "route", []string{"when"})
				}
				where["route "+args[0]+"/when/"+strconv.Itoa(len(rule.When)+1)] = d.Token()
				expr := d.RemainingArgs()
				if len(expr) == 0 {
					return d.ArgErr()
				}
				// like Caddy's expression matcher: the rest of the line
				rule.When = append(rule.When, strings.Join(expr, " "))
				rule.Sources = append(rule.Sources, d.File()+":"+strconv.Itoa(d.Line()))
			}
			if len(rule.When) > 0 {
				r.RouteRules = append(r.RouteRules, rule)
			}

		case "default_route":
			if !d.AllArgs(&r.DefaultRoute) {
				return d.ArgErr()
			}
			where["default_route "+r.DefaultRoute] = d.Token()

		case "currency":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.ArgErr()
			}
			c := &Currency{Code: strings.ToUpper(args[0])}
			if len(args) == 2 {
				rate, err := parseNumber(args[1])
				if err != nil || rate <= 0 {
					return d.Errf("currency rate must be a positive number, got %q", args[1])
				}
				c.Rate = rate
			}
			r.Currency = c
			where["currency"] = d.Token()

		case "health_check":
			if d.NextArg() {
				return d.ArgErr()
			}
			where["health_check"] = d.Token()
			r.HealthCheck = new(HealthCheck)
			if err := unmarshalHealthCheck(d, r.HealthCheck); err != nil {
				return err
			}

		case "failover":
			if d.NextArg() {
				return d.ArgErr()
			}
			where["failover"] = d.Token()
			r.Failover = new(Failover)
			if err := unmarshalFailover(d, r.Failover); err != nil {
				return err
			}

		case "budget":
			b := new(Budget)
			if !d.AllArgs(&b.Name) {
				return d.ArgErr()
			}
			where["budget "+b.Name] = d.Token()
			if err := unmarshalBudget(d, b); err != nil {
				return err
			}
			r.Budgets = append(r.Budgets, b)

		case "cache":
			if d.NextArg() {
				return d.ArgErr()
			}
			where["cache"] = d.Token()
			r.Cache = new(Cache)
			if err := unmarshalCache(d, r.Cache, where); err != nil {
				return err
			}

		case "budget_sync":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			if v == "off" {
				r.BudgetSync = -1 // local only
				continue
			}
			d.Prev()
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			r.BudgetSync = dur

		case "budget_instance":
			if !d.AllArgs(&r.BudgetInstance) {
				return d.ArgErr()
			}

		case "pass_response_header":
			fields := d.RemainingArgs()
			if len(fields) == 0 {
				return d.ArgErr()
			}
			r.PassResponseHeaders = append(r.PassResponseHeaders, fields...)

		case "forward_header":
			fields := d.RemainingArgs()
			if len(fields) == 0 {
				return d.ArgErr()
			}
			for _, f := range fields {
				if why := unforwardable(f); why != "" {
					return d.Errf("forward_header %q is never forwarded: %s", f, why)
				}
			}
			r.ForwardHeaders = append(r.ForwardHeaders, fields...)

		case "client_label":
			args := d.RemainingArgs()
			c := &ClientLabel{}
			switch {
			case len(args) == 1:
			case len(args) == 3 && args[1] == "max":
				n, err := strconv.Atoi(args[2])
				if err != nil || n < 1 {
					return d.Errf("client_label max must be a positive integer, got %q", args[2])
				}
				c.Max = n
			default:
				return d.ArgErr()
			}
			c.Value = args[0]
			r.ClientLabel = c
			where["client_label"] = d.Token()

		case "service_tiers":
			if r.ServiceTiers = d.RemainingArgs(); len(r.ServiceTiers) == 0 {
				return d.ArgErr()
			}

		case "allow_unpriced":
			if r.AllowUnpriced = d.RemainingArgs(); len(r.AllowUnpriced) == 0 {
				return d.ArgErr()
			}

		case "max_request_body":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			size, err := humanize.ParseBytes(v)
			if err != nil || size == 0 {
				return d.Errf("max_request_body: invalid size %q", v)
			}
			r.MaxRequestBody = int64(size)
			where["max_request_body"] = d.Token()

		case "context_reserve":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return d.Errf("context_reserve: want a positive number of tokens, got %q", v)
			}
			r.ContextReserve = n
			where["context_reserve"] = d.Token()

		default:
			return unrecognized(d, "llm_router", routerSubdirectives)
		}
	}

	if err := r.validate(); err != nil {
		var ce *configError
		if errors.As(err, &ce) {
			// the most precise line known: the subdirective, else the
			// block that declares the subject
			for ref := ce.ref; ref != ""; {
				if tok, ok := where[ref]; ok {
					at := caddyfile.NewDispenser([]caddyfile.Token{tok})
					at.Next()
					return at.Errf("llm_router: %v", err)
				}
				i := strings.LastIndexByte(ref, '/')
				if i < 0 {
					break
				}
				ref = ref[:i]
			}
		}
		return d.Errf("llm_router: %v", err)
	}
	return nil
}

// The subdirectives of each block, for "did you mean" suggestions.
var (
	routerSubdirectives   = []string{"provider", "model", "route", "default_route", "currency", "health_check", "failover", "budget", "budget_sync", "budget_instance", "client_label", "cache", "max_request_body", "context_reserve", "service_tiers", "allow_unpriced", "pass_response_header", "forward_header"}
	cacheSubdirectives    = []string{"ttl", "max_size", "stale_if_error", "match", "key_header", "scope", "store", "streams", "semantic"}
	semanticSubdirectives = []string{"model", "threshold", "max_entries", "lookup_timeout"}
	budgetSubdirectives   = []string{"limit", "key", "match", "downgrade", "hard", "warn_at", "timezone", "reserve_output", "output_cap"}
	providerSubdirectives = []string{"base_url", "api_key", "timeout", "header", "verify_key", "stream_usage", "output_limit_field", "transport"}
	modelSubdirectives    = []string{"provider", "upstream", "priority", "weight", "price", "fallback", "kind", "probe_body"}
	healthSubdirectives   = []string{"interval", "timeout", "prompt", "probe_body", "disable_below", "skip_if_active"}
	failoverSubdirectives = []string{"max_attempts", "try_duration", "first_byte_timeout", "stream_idle_timeout", "cooldown", "max_cooldown", "balance", "hedge_after", "max_hedges"}
)

// onOff reads the one argument of a subdirective that is on or off.
func onOff(d *caddyfile.Dispenser) (bool, error) {
	name := d.Val()
	var v string
	if !d.AllArgs(&v) {
		return false, d.ArgErr()
	}
	switch v {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, d.Errf("%s: want on or off, got %q", name, v)
}

// unrecognized is the error for an unknown subdirective of block, with the
// nearest known one suggested.
func unrecognized(d *caddyfile.Dispenser, block string, known []string) error {
	return d.Errf("unrecognized %s subdirective %q%s", block, d.Val(), didYouMean(d.Val(), known))
}

func unmarshalProvider(d *caddyfile.Dispenser, p *Provider) error {
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := once(d, seen, "header"); err != nil {
			return err
		}
		switch d.Val() {
		case "base_url":
			if !d.AllArgs(&p.BaseURL) {
				return d.ArgErr()
			}
		case "api_key":
			if !d.AllArgs(&p.APIKey) {
				return d.ArgErr()
			}
			p.APIKey = strings.TrimSpace(p.APIKey)
		case "timeout":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			p.Timeout = dur
		case "header":
			var field, value string
			if !d.AllArgs(&field, &value) {
				return d.ArgErr()
			}
			if p.Headers == nil {
				p.Headers = make(http.Header)
			}
			p.Headers.Add(field, value)
		case "verify_key":
			if d.NextArg() {
				return d.ArgErr()
			}
			p.VerifyKey = true
		case "stream_usage":
			on, err := onOff(d)
			if err != nil {
				return err
			}
			p.NoStreamUsage = !on
		case "output_limit_field":
			if !d.AllArgs(&p.OutputLimitField) {
				return d.ArgErr()
			}
			if !slices.Contains(outputLimitFields, p.OutputLimitField) {
				return d.Errf("output_limit_field: want max_completion_tokens or max_tokens, got %q", p.OutputLimitField)
			}
		case "transport":
			// reverse_proxy's own: `transport http { ... }`, read by its
			// module, so that every subdirective means what it means there
			if !d.NextArg() {
				return d.ArgErr()
			}
			if d.Val() != "http" {
				return d.Errf("provider transport must be http (Caddy's HTTP transport), got %q", d.Val())
			}
			unm, err := caddyfile.UnmarshalModule(d, "http.reverse_proxy.transport.http")
			if err != nil {
				return err
			}
			p.Transport = unm.(*reverseproxy.HTTPTransport)
		default:
			return unrecognized(d, "provider", providerSubdirectives)
		}
	}
	return nil
}

// unmarshalModel reads a model block; where gets the line of each
// subdirective that validation may complain about, under ref + "/" + its
// name (and "/fallback/<name>" for each fallback).
func unmarshalModel(d *caddyfile.Dispenser, m *Model, ref string, where map[string]caddyfile.Token) error {
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := once(d, seen, "fallback"); err != nil {
			return err
		}
		where[ref+"/"+d.Val()] = d.Token()
		switch d.Val() {
		case "provider":
			if !d.AllArgs(&m.Provider) {
				return d.ArgErr()
			}
		case "upstream":
			if !d.AllArgs(&m.Upstream) {
				return d.ArgErr()
			}
		case "priority":
			n, err := intArg(d, 1)
			if err != nil {
				return err
			}
			m.Priority = n
		case "weight":
			n, err := intArg(d, 0)
			if err != nil {
				return err
			}
			m.Weight = &n
		case "price":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 3 {
				return d.ArgErr()
			}
			var vals []float64
			for _, a := range args {
				v, err := parseNumber(a)
				if err != nil || v < 0 {
					return d.Errf("price must be a non-negative number per 1M tokens, got %q", a)
				}
				vals = append(vals, v)
			}
			m.Price = &Price{Input: vals[0]}
			if len(vals) > 1 {
				m.Price.Output = &vals[1]
			}
			if len(vals) > 2 {
				m.Price.CachedInput = &vals[2]
			}
		case "fallback":
			tok := d.Token()
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, a := range args {
				where[ref+"/fallback/"+a] = tok
			}
			m.Fallback = append(m.Fallback, args...)
		case "kind":
			if !d.AllArgs(&m.Kind) {
				return d.ArgErr()
			}
			if _, ok := parseKind(m.Kind); !ok {
				return d.Errf("kind must be chat or embedding, not %q", m.Kind)
			}
		case "probe_body":
			if !d.AllArgs(&m.ProbeBody) {
				return d.ArgErr()
			}
			if !openai.IsObject([]byte(m.ProbeBody)) {
				return d.Errf("probe_body must be a JSON object (quote it with backticks), got %s", m.ProbeBody)
			}
		default:
			return unrecognized(d, "model", modelSubdirectives)
		}
	}
	return nil
}

func unmarshalHealthCheck(d *caddyfile.Dispenser, h *HealthCheck) error {
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := once(d, seen); err != nil {
			return err
		}
		switch d.Val() {
		case "interval":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if d.Val() == "off" {
				h.Off = true
				if d.NextArg() {
					return d.ArgErr()
				}
				continue
			}
			d.Prev()
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			h.Interval = dur
		case "timeout":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			h.Timeout = dur
		case "prompt":
			if !d.AllArgs(&h.Prompt) {
				return d.ArgErr()
			}
		case "probe_body":
			if !d.AllArgs(&h.ProbeBody) {
				return d.ArgErr()
			}
			if !openai.IsObject([]byte(h.ProbeBody)) {
				return d.Errf("probe_body must be a JSON object (quote it with backticks), got %s", h.ProbeBody)
			}
		case "disable_below":
			n, err := intArg(d, 0)
			if err != nil {
				return err
			}
			if n > 100 {
				return d.Errf("disable_below must be a score from 0 to 100, got %d", n)
			}
			h.DisableBelow = &n
		case "skip_if_active":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			h.SkipIfActive = dur
		default:
			return unrecognized(d, "health_check", healthSubdirectives)
		}
	}
	return nil
}

func unmarshalFailover(d *caddyfile.Dispenser, f *Failover) error {
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := once(d, seen); err != nil {
			return err
		}
		var target *caddy.Duration
		switch d.Val() {
		case "hedge_after":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if d.Val() == "auto" {
				f.HedgeAuto = true
				if d.NextArg() {
					return d.ArgErr()
				}
				continue
			}
			d.Prev()
			target = &f.HedgeAfter
		case "max_hedges":
			n, err := intArg(d, 0)
			if err != nil {
				return err
			}
			f.MaxHedges = &n
			continue
		case "balance":
			args := d.RemainingArgs()
			if len(args) != 1 {
				return d.ArgErr()
			}
			if v := args[0]; v != balanceWeighted && v != balanceLatency {
				return d.Errf("balance must be weighted or latency, got %q", v)
			}
			f.Balance = args[0]
			continue
		case "max_attempts":
			n, err := intArg(d, 1)
			if err != nil {
				return err
			}
			f.MaxAttempts = n
			continue
		case "try_duration":
			target = &f.TryDuration
		case "first_byte_timeout":
			target = &f.FirstByteTimeout
		case "stream_idle_timeout":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			if v == "0" || v == "off" {
				f.StreamIdleTimeout = -1 // no bound
				continue
			}
			d.Prev()
			target = &f.StreamIdleTimeout
		case "cooldown":
			target = &f.Cooldown
		case "max_cooldown":
			target = &f.MaxCooldown
		default:
			return unrecognized(d, "failover", failoverSubdirectives)
		}
		dur, err := durationArg(d)
		if err != nil {
			return err
		}
		*target = dur
	}
	return nil
}

// unmarshalSemantic reads a cache's semantic block.
func unmarshalSemantic(d *caddyfile.Dispenser, c *SemanticCache, where map[string]caddyfile.Token) error {
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := once(d, seen); err != nil {
			return err
		}
		where["cache/semantic/"+d.Val()] = d.Token()
		switch d.Val() {
		case "model":
			if !d.AllArgs(&c.Model) {
				return d.ArgErr()
			}
		case "threshold":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			t, err := parseNumber(v)
			if err != nil || t <= 0 || t > 1 {
				return d.Errf("threshold must be a similarity above 0 and at most 1, not %q", v)
			}
			c.Threshold = t
		case "max_entries":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return d.Errf("max_entries must be a positive integer, not %q", v)
			}
			c.MaxEntries = n
		case "lookup_timeout":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			c.LookupTimeout = dur
		default:
			return unrecognized(d, "semantic", semanticSubdirectives)
		}
	}
	return nil
}

// unmarshalCache reads a cache block.
func unmarshalCache(d *caddyfile.Dispenser, c *Cache, where map[string]caddyfile.Token) error {
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := once(d, seen, "match", "key_header", "scope"); err != nil {
			return err
		}
		switch d.Val() {
		case "semantic":
			if d.NextArg() {
				return d.ArgErr()
			}
			where["cache/semantic"] = d.Token()
			c.Semantic = new(SemanticCache)
			if err := unmarshalSemantic(d, c.Semantic, where); err != nil {
				return err
			}
		case "ttl":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			c.TTL = dur
		case "max_size":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			size, err := humanize.ParseBytes(v)
			if err != nil || size == 0 {
				return d.Errf("max_size: invalid size %q (use e.g. 128MB)", v)
			}
			c.MaxSize = int64(size)
		case "stale_if_error":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			if v == "0" || v == "off" {
				c.StaleIfError = -1
				continue
			}
			d.Prev()
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			c.StaleIfError = dur
		case "match":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			c.Match = append(c.Match, args...)
		case "key_header":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			c.KeyHeaders = append(c.KeyHeaders, args...)
		case "store":
			if !d.AllArgs(&c.Store) {
				return d.ArgErr()
			}
		case "scope":
			where["cache/scope"] = d.Token()
			args := d.RemainingArgs()
			switch {
			case len(args) == 0:
				return d.ArgErr()
			case len(args) == 1 && args[0] == "shared":
				c.SharedScope = true
			case slices.Contains(args, "shared"):
				return d.Errf("cache: %s", errSharedScope)
			default:
				c.Scope = append(c.Scope, args...)
			}
		case "streams":
			on, err := onOff(d)
			if err != nil {
				return err
			}
			c.NoStreams = !on
		default:
			return unrecognized(d, "cache", cacheSubdirectives)
		}
	}
	return nil
}

// once refuses a subdirective given twice in one block, unless it is one
// of the repeatable ones whose values add up: the second would silently
// replace the first (a second api_key, cache block or budget key).
func once(d *caddyfile.Dispenser, seen map[string]bool, repeatable ...string) error {
	v := d.Val()
	if slices.Contains(repeatable, v) {
		return nil
	}
	if seen[v] {
		return d.Errf("%s given twice in one block; give it once", v)
	}
	seen[v] = true
	return nil
}

// durationArg reads exactly one positive duration argument.
func durationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	name := d.Val()
	var v string
	if !d.AllArgs(&v) {
		return 0, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil || dur <= 0 {
		return 0, d.Errf("%s: invalid duration %q (use e.g. 500ms, 30s, 5m)", name, v)
	}
	return caddy.Duration(dur), nil
}

// intArg reads exactly one integer argument no smaller than least.
func intArg(d *caddyfile.Dispenser, least int) (int, error) {
	name := d.Val()
	var v string
	if !d.AllArgs(&v) {
		return 0, d.ArgErr()
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < least {
		return 0, d.Errf("%s: want an integer of at least %d, got %q", name, least, v)
	}
	return n, nil
}

// parseNumber reads a Caddyfile number: a finite one only. strconv reads
// "NaN" and "Inf" too, which no check of a range refuses (NaN compares
// false with everything) and which JSON cannot carry: the adapted config
// held the handler as null.
func parseNumber(s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err == nil && (math.IsNaN(v) || math.IsInf(v, 0)) {
		err = fmt.Errorf("%q is not a finite number", s)
	}
	return v, err
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Router)(nil)
