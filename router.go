package llmrouter

import (
	"cmp"
	"crypto/sha256"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// plan is a candidate list worked out at provision time: groups in the
// order they are tried; the deployments within a group share a priority and
// are ordered per request by a weighted random draw.
type plan [][]*deployment

// routing holds the precomputed plans of one config.
type routing struct {
	byRoute      map[string]kindPlan
	byModel      map[string]kindPlan
	all          [kindEmbedding + 1]plan // every deployment of a kind by priority, for requests naming nothing
	allNS        [kindEmbedding + 1]string
	defaultRoute string
}

// kindPlan is a plan whose deployments all serve one kind of request.
type kindPlan struct {
	plan
	kind modelKind
	ns   string // identifies the upstreams it names, for cache keys
}

// buildRouting precomputes every plan, so that a request costs a map
// lookup. ds are the deployments in declaration order; validation made sure
// a route's models share one kind.
func buildRouting(ds []*deployment, routes map[string][]string, defaultRoute string) routing {
	byPriority := func(list []*deployment) []*deployment {
		list = slices.Clone(list)
		slices.SortStableFunc(list, func(a, b *deployment) int { return cmp.Compare(a.priority, b.priority) })
		return list
	}
	byName := make(map[string][]*deployment)
	var ofKind [kindEmbedding + 1][]*deployment
	for _, d := range ds {
		byName[d.name] = append(byName[d.name], d)
		ofKind[d.kind] = append(ofKind[d.kind], d)
	}
	for name, list := range byName {
		byName[name] = byPriority(list)
	}
	rt := routing{
		byRoute:      make(map[string]kindPlan, len(routes)),
		byModel:      make(map[string]kindPlan, len(byName)),
		defaultRoute: defaultRoute,
	}
	for k := range ofKind {
		rt.all[k] = groupByPriority(byPriority(ofKind[k]))
	}
	for name, list := range byName {
		rt.byModel[name] = kindPlan{plan: modelPlan(byName, name, nil), kind: list[0].kind}
	}
	for name, models := range routes {
		seen := make(map[*deployment]bool)
		var p plan
		for _, m := range models {
			p = append(p, modelPlan(byName, m, seen)...)
		}
		kp := kindPlan{plan: p, kind: kindChat}
		if d := p.primary(); d != nil {
			kp.kind = d.kind
		}
		rt.byRoute[name] = kp
	}
	return rt
}

// modelPlan is a model's deployments by priority, then its fallback models'
// plans, each deployment once. The fallbacks are those of all its
// deployments, in their order: one that only a backup deployment declares
// is still the model's.
func modelPlan(byName map[string][]*deployment, name string, seen map[*deployment]bool) plan {
	if seen == nil {
		seen = make(map[*deployment]bool)
	}
	var fresh []*deployment
	for _, d := range byName[name] {
		if !seen[d] {
			seen[d] = true
			fresh = append(fresh, d)
		}
	}
	p := groupByPriority(fresh)
	if len(fresh) > 0 {
		for _, d := range byName[name] {
			for _, fb := range d.fallback {
				p = append(p, modelPlan(byName, fb, seen)...)
			}
		}
	}
	return p
}

// groupByPriority splits deployments already sorted by priority into
// groups of equal priority, keeping their order within a group.
func groupByPriority(ds []*deployment) plan {
	var p plan
	for i := 0; i < len(ds); {
		j := i + 1
		for j < len(ds) && ds[j].priority == ds[i].priority {
			j++
		}
		p = append(p, ds[i:j:j])
		i = j
	}
	return p
}

// primary is the deployment a plan tries first when all are healthy and
// weights are even: the first of its first group.
func (p plan) primary() *deployment {
	if len(p) == 0 || len(p[0]) == 0 {
		return nil
	}
	return p[0][0]
}

// setNamespaces gives each plan a cache namespace: a hash of the targets
// (URL, key, upstream id) of its deployments and of what else each is
// asked with (asked: the output cap of a request without a limit), so
// that a cached answer is only served for a plan that asks the same
// upstreams the same way.
func (rt *routing) setNamespaces(asked func(*deployment) string) {
	ns := func(p plan) string {
		h := sha256.New()
		for _, g := range p {
			for _, d := range g {
				io.WriteString(h, d.target()+"\x00"+asked(d)+"\x00")
			}
		}
		return string(h.Sum(nil))
	}
	for name, kp := range rt.byRoute {
		kp.ns = ns(kp.plan)
		rt.byRoute[name] = kp
	}
	for name, kp := range rt.byModel {
		kp.ns = ns(kp.plan)
		rt.byModel[name] = kp
	}
	for k := range rt.all {
		rt.allNS[k] = ns(rt.all[k])
	}
}

// resolution is which candidates a request gets, and why.
type resolution struct {
	ns        string // the plan's cache namespace
	plan      plan   // nil: no candidates (unknown name or wrong kind)
	route     string // the route it is served from, if any
	model     string // the model name it named, when a known one
	name      string // the name that was not found or of the wrong kind
	wrongKind bool
}

// resolve picks the plan for a request to an endpoint needing a model of
// kind, by the routing rules (README, "Routing rules"), first that applies:
// a route header, the model naming a route, the model naming a model, then,
// for chat, the default route, else every deployment of the kind by
// priority.
func (rt *routing) resolve(routeHeader, model string, kind modelKind) resolution {
	named := func(kp kindPlan, ok bool, res resolution) resolution {
		switch {
		case !ok:
			res.route, res.model = "", ""
		case kp.kind != kind:
			res.wrongKind = true
		default:
			res.plan, res.ns = kp.plan, kp.ns
		}
		return res
	}
	if routeHeader != "" {
		kp, ok := rt.byRoute[routeHeader]
		return named(kp, ok, resolution{route: routeHeader, name: routeHeader})
	}
	if model != "" && model != "auto" {
		if kp, ok := rt.byRoute[model]; ok {
			return named(kp, ok, resolution{route: model, name: model})
		}
		kp, ok := rt.byModel[model]
		return named(kp, ok, resolution{model: model, name: model})
	}
	if kind == kindChat && rt.defaultRoute != "" {
		kp := rt.byRoute[rt.defaultRoute]
		return resolution{plan: kp.plan, ns: kp.ns, route: rt.defaultRoute}
	}
	return resolution{plan: rt.all[kind], ns: rt.allNS[kind]}
}

// isName reports whether s names a route or model of this config ("auto"
// included).
func (rt *routing) isName(s string) bool {
	_, route := rt.byRoute[s]
	_, model := rt.byModel[s]
	return route || model || s == "auto"
}

// known returns the names a request gave that this config knows: the route
// of the header or of the model field, else the model name. Unknown names
// give "", so that metric labels stay bounded by the config.
func (rt *routing) known(routeHeader, model string) (route, modelName string) {
	if _, ok := rt.byRoute[routeHeader]; ok {
		return routeHeader, ""
	}
	if _, ok := rt.byRoute[model]; ok && routeHeader == "" {
		return model, ""
	}
	if _, ok := rt.byModel[model]; ok && routeHeader == "" {
		return "", model
	}
	return "", ""
}

// skipped is a candidate left out of a request's attempts, and why.
type skipped struct {
	d        *deployment
	why      string
	disabled bool // rather than cooling down: a last resort (exchange.run)
	score    int
}

// smallPlan is the most candidates whose per-request working lists order
// keeps on the stack; a larger plan allocates them.
const smallPlan = 8

// order turns a plan into the deployments to try, in order: each group
// shuffled by weight × health score; deployments that are disabled or
// cooling down are left out (and returned as skipped, with the reason),
// unless all are, in which case all are tried, healthiest first (allOut).
func (p plan) order(t time.Time, rng *rand.Rand, logger *zap.Logger, by balance) (_ []*deployment, _ []skipped, allOut bool) {
	n := 0
	for _, g := range p {
		n += len(g)
	}
	out := make([]*deployment, 0, n)
	// the views on the stack for a plan of usual size
	var viewsBuf [smallPlan]healthView
	views := viewsBuf[:0]
	if n > smallPlan {
		views = make([]healthView, 0, n)
	}
	for _, g := range p {
		start := len(out)
		for _, d := range g {
			out = append(out, d)
			views = append(views, d.state.view(t, logger))
		}
		if len(g) > 1 {
			weightedShuffle(out[start:], views[start:], rng, by)
		}
	}
	nUp := 0
	for i := range out {
		if views[i].state == stateUp {
			nUp++
		}
	}
	if nUp == len(out) {
		return out, nil, false // the usual case: no second list
	}
	up := make([]*deployment, 0, nUp)
	for i, d := range out {
		if views[i].state == stateUp {
			up = append(up, d)
		}
	}
	if len(up) > 0 {
		var skip []skipped
		for i, d := range out {
			switch {
			case !views[i].cooldownUntil.IsZero():
				// cooling down, disabled or not: a disabled one cooling
				// down is no last resort, its provider asked for the pause
				left := (views[i].cooldownUntil.Sub(t) + time.Second - 1) / time.Second * time.Second
				skip = append(skip, skipped{d: d, why: "cooling down for " + left.String()})
			case views[i].state == stateDisabled:
				skip = append(skip, skipped{d: d, why: "disabled (score " + strconv.Itoa(views[i].score) + ")", disabled: true, score: views[i].score})
			}
		}
		return up, skip, false
	}
	idx := make([]int, len(out))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		if c := cmp.Compare(views[b].score, views[a].score); c != 0 {
			return c
		}
		return views[a].cooldownUntil.Compare(views[b].cooldownUntil)
	})
	sorted := make([]*deployment, len(out))
	for i, k := range idx {
		sorted[i] = out[k]
	}
	return sorted, nil, true
}

// weightedShuffle orders ds (and their views) by a weighted random draw
// without replacement, weight × score, and with balance latency × the
// group's fastest time to first byte over the deployment's own
// (balance.go); Efraimidis-Spirakis: sort by U^(1/w); a zero weight goes
// last.
func weightedShuffle(ds []*deployment, views []healthView, rng *rand.Rand, by balance) {
	var keysBuf [smallPlan]float64 // on the stack for a group of usual size
	var keys []float64
	if len(ds) <= smallPlan {
		keys = keysBuf[:len(ds)]
	} else {
		keys = make([]float64, len(ds))
	}
	if by.latency {
		latencyFactors(ds, by, keys)
	}
	for i, d := range ds {
		// in float64: the int product overflows for a large weight, and a
		// negative one would read as weight 0
		w := float64(d.weight) * float64(views[i].score)
		if by.latency {
			w *= keys[i]
		}
		keys[i] = math.Inf(-1)
		if w > 0 {
			keys[i] = math.Log(randFloat(rng)) / w
		}
	}
	// insertion sort by key, descending: groups are small
	for i := 1; i < len(ds); i++ {
		for j := i; j > 0 && keys[j] > keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
			ds[j], ds[j-1] = ds[j-1], ds[j]
			views[j], views[j-1] = views[j-1], views[j]
		}
	}
}

func randFloat(rng *rand.Rand) float64 {
	var u float64
	if rng != nil {
		u = rng.Float64()
	} else {
		u = rand.Float64()
	}
	if u == 0 {
		u = math.SmallestNonzeroFloat64
	}
	return u
}
