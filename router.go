package llmrouter

import (
	"cmp"
	"encoding/json"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"go.uber.org/zap"
)

// plan is a candidate list worked out at provision time: groups in the
// order they are tried; the deployments within a group share a priority and
// are ordered per request by a weighted random draw.
type plan [][]*deployment

// routing holds the precomputed plans of one config.
type routing struct {
	byRoute      map[string]plan
	byModel      map[string]plan
	all          plan // every deployment by priority, for requests naming nothing
	defaultRoute string
}

// buildRouting precomputes every plan, so that a request costs a map
// lookup. ds are the deployments in declaration order.
func buildRouting(ds []*deployment, routes map[string][]string, defaultRoute string) routing {
	byPriority := func(list []*deployment) []*deployment {
		list = slices.Clone(list)
		slices.SortStableFunc(list, func(a, b *deployment) int { return cmp.Compare(a.priority, b.priority) })
		return list
	}
	byName := make(map[string][]*deployment)
	for _, d := range ds {
		byName[d.name] = append(byName[d.name], d)
	}
	for name, list := range byName {
		byName[name] = byPriority(list)
	}
	rt := routing{
		byRoute:      make(map[string]plan, len(routes)),
		byModel:      make(map[string]plan, len(byName)),
		all:          groupByPriority(byPriority(ds)),
		defaultRoute: defaultRoute,
	}
	for name := range byName {
		rt.byModel[name] = modelPlan(byName, name, nil)
	}
	for name, models := range routes {
		seen := make(map[*deployment]bool)
		var p plan
		for _, m := range models {
			p = append(p, modelPlan(byName, m, seen)...)
		}
		rt.byRoute[name] = p
	}
	return rt
}

// modelPlan is a model's deployments by priority, then its fallback models'
// plans, each deployment once.
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
		for _, fb := range fresh[0].fallback {
			p = append(p, modelPlan(byName, fb, seen)...)
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

// resolve picks the plan for a request by the routing rules (README,
// "Routing rules"), first that applies: a route header, the model naming a
// route, the model naming a model, then the default route or every
// deployment. ok is false when the name is unknown.
func (rt *routing) resolve(routeHeader, model string) (route string, p plan, ok bool) {
	if routeHeader != "" {
		p, ok = rt.byRoute[routeHeader]
		return routeHeader, p, ok
	}
	if model != "" && model != "auto" {
		if p, ok = rt.byRoute[model]; ok {
			return model, p, true
		}
		p, ok = rt.byModel[model]
		return "", p, ok
	}
	if rt.defaultRoute != "" {
		return rt.defaultRoute, rt.byRoute[rt.defaultRoute], true
	}
	return "", rt.all, true
}

// order turns a plan into the deployments to try, in order: each group
// shuffled by weight × health score; deployments that are disabled or
// cooling down are left out, unless all are, in which case all are tried,
// healthiest first.
func (p plan) order(t time.Time, rng *rand.Rand, logger *zap.Logger) []*deployment {
	n := 0
	for _, g := range p {
		n += len(g)
	}
	out := make([]*deployment, 0, n)
	views := make([]healthView, 0, n)
	for _, g := range p {
		start := len(out)
		for _, d := range g {
			out = append(out, d)
			views = append(views, d.state.view(t, logger))
		}
		if len(g) > 1 {
			weightedShuffle(out[start:], views[start:], rng)
		}
	}
	up := out[:0:0]
	for i, d := range out {
		if views[i].state == stateUp {
			up = append(up, d)
		}
	}
	if len(up) > 0 {
		return up
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
	return sorted
}

// weightedShuffle orders ds (and their views) by a weighted random draw
// without replacement, weight × score (Efraimidis-Spirakis: sort by
// U^(1/w)); a zero weight goes last.
func weightedShuffle(ds []*deployment, views []healthView, rng *rand.Rand) {
	keys := make([]float64, len(ds))
	for i, d := range ds {
		w := float64(d.weight * views[i].score)
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

// buildModelList is the local answer to GET /models: every model name and
// every route name, in OpenAI's list format.
func (r *Router) buildModelList() []byte {
	type entry struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	list := struct {
		Object string  `json:"object"`
		Data   []entry `json:"data"`
	}{Object: "list", Data: []entry{}}
	seen := make(map[string]bool)
	for _, m := range r.Models {
		if !seen[m.Name] {
			seen[m.Name] = true
			list.Data = append(list.Data, entry{ID: m.Name, Object: "model", OwnedBy: m.Provider})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(r.Routes)) {
		list.Data = append(list.Data, entry{ID: name, Object: "model", OwnedBy: "llm_router"})
	}
	b, _ := json.Marshal(list)
	return b
}
