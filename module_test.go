package llmrouter

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestFallbackLoop(t *testing.T) {
	m := func(name string, fallback ...string) *Model { return &Model{Name: name, Fallback: fallback} }
	cases := []struct {
		name   string
		models []*Model
		loop   bool
	}{
		{"no models", nil, false},
		{"no fallbacks", []*Model{m("a"), m("b")}, false},
		{"chain", []*Model{m("a", "b"), m("b", "c"), m("c")}, false},
		{"chain listed backwards", []*Model{m("c"), m("b", "c"), m("a", "b")}, false},
		{"diamond", []*Model{m("a", "b", "c"), m("b", "d"), m("c", "d"), m("d")}, false},
		{"shared tail", []*Model{m("a", "c"), m("b", "c"), m("c")}, false},
		{"self loop", []*Model{m("a", "a")}, true},
		{"self loop among others", []*Model{m("x", "y"), m("y"), m("a", "y", "a")}, true},
		{"two-model loop", []*Model{m("a", "b"), m("b", "a")}, true},
		{"three-model loop", []*Model{m("a", "b"), m("b", "c"), m("c", "a")}, true},
		{"loop reached from outside it", []*Model{m("entry", "a"), m("a", "b"), m("b", "c"), m("c", "b")}, true},
		{"loop after a diamond", []*Model{m("a", "b", "c"), m("b", "d"), m("c", "d"), m("d", "a")}, true},
		{"fallback to an unknown name", []*Model{m("a", "ghost")}, false},
		// several deployments of one name share its fallbacks
		{"deployments with different fallbacks", []*Model{m("a", "b"), m("a", "c"), m("b"), m("c")}, false},
		{"deployments of a fallback, no loop", []*Model{m("a", "b"), m("b"), m("b"), m("b", "c"), m("c")}, false},
		{"loop through a second deployment", []*Model{m("a", "b"), m("b"), m("b", "a")}, true},
		{"loop through a second deployment's fallbacks", []*Model{m("a"), m("b", "c"), m("a", "b"), m("c", "a")}, true},
		{"duplicate fallback entries", []*Model{m("a", "b", "b"), m("b")}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			loop := fallbackLoop(tc.models)
			if !tc.loop {
				if loop != nil {
					t.Fatalf("fallbackLoop = %v, want nil", loop)
				}
				return
			}
			if len(loop) < 2 || loop[0] != loop[len(loop)-1] {
				t.Fatalf("fallbackLoop = %v, want a path that starts and ends with the same name", loop)
			}
			edges := make(map[string][]string)
			for _, m := range tc.models {
				edges[m.Name] = append(edges[m.Name], m.Fallback...)
			}
			for i := 0; i+1 < len(loop); i++ {
				if !slices.Contains(edges[loop[i]], loop[i+1]) {
					t.Fatalf("fallbackLoop = %v: %s does not fall back to %s", loop, loop[i], loop[i+1])
				}
			}
			inner := loop[:len(loop)-1]
			for i, n := range inner {
				if slices.Index(inner, n) != i {
					t.Fatalf("fallbackLoop = %v: %s appears twice before the end", loop, n)
				}
			}
		})
	}
}

// TestFallbackLoopLong: a long chain is no loop, and closing it is found,
// without recursion trouble.
func TestFallbackLoopLong(t *testing.T) {
	const n = 5000
	models := make([]*Model, n)
	name := func(i int) string { return "m" + strconv.Itoa(i) }
	for i := range models {
		models[i] = &Model{Name: name(i)}
		if i+1 < n {
			models[i].Fallback = []string{name(i + 1)}
		}
	}
	if loop := fallbackLoop(models); loop != nil {
		t.Fatalf("chain: fallbackLoop found %d names", len(loop))
	}
	models[n-1].Fallback = []string{name(0)}
	loop := fallbackLoop(models)
	if len(loop) != n+1 || loop[0] != loop[n] {
		t.Fatalf("ring: fallbackLoop returned %d names", len(loop))
	}
}

// TestHedgeAfterAndAuto: a JSON failover with hedge_after and hedge_auto
// loaded, and auto won without a word. One or the other.
func TestHedgeAfterAndAuto(t *testing.T) {
	var r Router
	cfg := `{"providers":[{"name":"p","base_url":"http://127.0.0.1:1/v1"}],"models":[{"name":"a"}],
		"failover":{"hedge_after":1000000000,"hedge_auto":true}}`
	if err := json.Unmarshal([]byte(cfg), &r); err != nil {
		t.Fatal(err)
	}
	r.setDefaults()
	if err := r.Validate(); err == nil || !strings.Contains(err.Error(), "hedge_after and hedge_auto") {
		t.Fatalf("Validate() = %v, want the contradiction refused", err)
	}
}
