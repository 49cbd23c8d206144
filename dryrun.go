package llmrouter

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"cel.dev/cel-go/cel"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/llmrouter/caddy-llm-router/internal/openai"
)

// routeOptions is what `caddy llm-router route` is asked about.
type routeOptions struct {
	Endpoint string   // chat, completions, responses or embeddings
	Headers  []string // "Name: value"
	Handler  int      // which llm_router of the config, from 1
}

// runRoute is `caddy llm-router route`: it routes one request body as the
// gateway would, without sending it, and says why. With stats (from
// --address), the candidates show today's health.
func runRoute(w io.Writer, configFile, adapter string, opts routeOptions, bodySrc string, stats *Stats) error {
	targets, err := loadCostTargets(configFile, adapter)
	if err != nil {
		return err
	}
	if opts.Handler < 1 || opts.Handler > len(targets) {
		return fmt.Errorf("--handler %d: the config has %d llm_router handlers", opts.Handler, len(targets))
	}
	var raw []byte
	if bodySrc == "-" {
		raw, err = io.ReadAll(io.LimitReader(os.Stdin, 64<<20))
	} else {
		raw, err = os.ReadFile(bodySrc)
	}
	if err != nil {
		return err
	}
	return explainRoute(w, targets[opts.Handler-1], opts, raw, stats)
}

// explainRoute writes the variables of the request, each rule with its
// result, and the route and candidates it gets.
func explainRoute(w io.Writer, t costTarget, opts routeOptions, raw []byte, stats *Stats) error {
	r := t.Router
	ep := chatEndpoint
	if opts.Endpoint != "" {
		ep, _, _ = endpointOf("/" + strings.TrimPrefix(upstreamPathOf(opts.Endpoint), "/"))
		if ep == 0 || ep == modelsEndpoint {
			return fmt.Errorf("--endpoint %q: want chat, completions, responses or embeddings", opts.Endpoint)
		}
	}
	var body openai.Request
	if err := body.Parse(raw, ep.api()); err != nil {
		return fmt.Errorf("the request body: %w", err)
	}
	header := http.Header{}
	for _, h := range opts.Headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return fmt.Errorf("--header %q: want \"Name: value\"", h)
		}
		header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	req, err := http.NewRequest(http.MethodPost, "http://localhost"+ep.path(), nil)
	if err != nil {
		return err
	}
	req.Header = header
	rules, err := compileRules(r.RouteRules)
	if err != nil {
		return err
	}
	ds := r.newDeployments()
	rt := buildRouting(ds, r.Routes, r.DefaultRoute)
	// the budgets that would pay for each candidate's answer
	var budgets []*budget
	for _, bc := range r.Budgets {
		b, err := newBudget(bc, "")
		if err != nil {
			return err
		}
		b.cover(ds, rt)
		budgets = append(budgets, b)
	}
	// refused before it is routed, as the gateway does (ServeHTTP), on
	// the defaults provisioning sets
	maxBody := r.MaxRequestBody
	if maxBody == 0 {
		maxBody = defaultMaxRequestBody
	}
	if r.ServiceTiers == nil {
		r.ServiceTiers = defaultServiceTiers
	}
	refused := r.unbillable(&body)
	if int64(len(raw)) > maxBody {
		refused = bodyTooLarge(maxBody)
	} else if refused == nil {
		refused = keyGivenTwice(budgets, req)
	}
	client := ""
	if r.ClientLabel != nil {
		// the placeholders of a request with these headers, as Caddy
		// resolves them for the gateway (a header's name in any case, its
		// values joined)
		client = clientValue(r.ClientLabel, caddyhttp.NewTestReplacer(req)) // as rules read it
	}

	fmt.Fprintf(w, "llm_router #%d", max(opts.Handler, 1))
	if t.Where != "" {
		fmt.Fprintf(w, ": %s", t.Where)
	}
	fmt.Fprintf(w, "; a %s request (%s)\n\n", ep, ep.path())

	vars := newRuleVars(ep, &body, header, client)
	fmt.Fprintln(w, "Variables:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, v := range ruleVariables {
		val, _ := vars.ResolveName(v.name)
		shown := fmt.Sprint(val)
		switch {
		case v.celType() == cel.StringType:
			shown = fmt.Sprintf("%q", truncate(fmt.Sprint(val), 80))
		case v.get == nil:
			shown = shownHeaders(header)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", v.name, shown, v.doc)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	routeHeader := header.Get("X-LLM-Route")
	if routeHeader == "" {
		routeHeader = header.Get("X-Query-Type")
	}
	model := body.Model
	reason := "default"
	var outcomes []ruleOutcome
	switch {
	case refused != nil:
		reason = "refused"
	case routeHeader != "":
		reason = "header"
	case model != "" && model != "auto":
		reason = "model"
	case len(rules.rules) > 0 && ep.kind() == kindChat:
		if rule := rules.choose(newRuleVars(ep, &body, header, client), nil, func(o ruleOutcome) { outcomes = append(outcomes, o) }); rule != nil {
			routeHeader, reason = rule.route, rule.reason
		}
	}
	fmt.Fprintln(w, "\nRules, in order:")
	if len(rules.rules) == 0 {
		fmt.Fprintln(w, "  (none)")
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i, rule := range rules.rules {
		result := "not evaluated"
		switch {
		case reason == "refused":
			result = "not evaluated: the request is refused"
		case reason == "header" || reason == "model":
			result = "not evaluated: the request names its " + map[string]string{"header": "route", "model": "model"}[reason]
		case i < len(outcomes) && outcomes[i].err != nil:
			result = "error (false): " + outcomes[i].err.Error()
		case i < len(outcomes) && outcomes[i].result:
			result = "true: chosen"
		case i < len(outcomes):
			result = "false"
		}
		fmt.Fprintf(tw, "  %s #%d\t%s\t%s\n", rule.route, rule.n, rule.expr, result)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	if refused != nil {
		param := ""
		if refused.param != "" {
			param = " (param " + refused.param + ")"
		}
		fmt.Fprintf(w, "Answer: %d %s%s: %s\n", refused.status, refused.code, param, refused.msg)
		return nil
	}
	res := rt.resolve(routeHeader, model, ep.kind())
	switch {
	case res.plan == nil && res.wrongKind:
		fmt.Fprintf(w, "Answer: 400 model_not_supported: %q is not %s\n", res.name, ep.kind().aModel())
		return nil
	case res.plan == nil:
		fmt.Fprintf(w, "Answer: 404 model_not_found: %q\n", res.name)
		return nil
	}
	switch {
	case res.route != "":
		fmt.Fprintf(w, "Route: %s (%s)\n", res.route, reason)
	default:
		fmt.Fprintf(w, "Route: none, model %s (%s)\n", orDash(res.model), reason)
	}
	health := map[string]DeploymentStats{}
	if stats != nil {
		for _, d := range stats.Deployments {
			health[d.Model+"@"+d.Provider] = d
		}
	}
	fmt.Fprintln(w, "Candidates, in order (within a priority, a draw weighted by weight × health score):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	n := 0
	for _, g := range res.plan {
		for _, d := range g {
			n++
			state := ""
			if s, ok := health[d.label()]; ok {
				state = fmt.Sprintf("\tscore %d\t%s", s.HealthScore, s.State)
			} else if stats != nil {
				state = "\t(not in the stats)\t"
			}
			var covering []string
			for _, b := range budgets {
				if b.covers[d] {
					covering = append(covering, b.name)
				}
			}
			if len(covering) > 0 {
				state += "\tbudgets " + strings.Join(covering, ", ")
			}
			fmt.Fprintf(tw, "  %d.\t%s\tupstream %s\tpriority %d\tweight %d%s\n", n, d.label(), d.upstream, d.priority, d.weight, state)
		}
	}
	return tw.Flush()
}

// shownHeaders is the header variable as the dry run prints it: by name,
// in order, a credential's value hidden (the output goes to terminals and
// CI logs; the rules read it all the same).
func shownHeaders(h http.Header) string {
	names := make([]string, 0, len(h))
	for k, vs := range h {
		if len(vs) > 0 {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		v := h[k][0]
		if isCredentialHeader(k) {
			v = "(hidden)"
		}
		fmt.Fprintf(&b, "%s: %s", strings.ToLower(k), v)
	}
	b.WriteByte('}')
	return b.String()
}

// upstreamPathOf maps an endpoint name to its path.
func upstreamPathOf(name string) string {
	for i, n := range endpointNames {
		if n == name && i > 0 {
			return upstreamPaths[i]
		}
	}
	return "/" + name
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
