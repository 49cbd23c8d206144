package llmrouter

import "testing"

// TestFallbackOfAnyDeployment: a model's fallbacks are tried after all its
// deployments (README, `fallback`), whichever of its deployments declares
// them: a backup deployment's fallback is not dropped because the primary
// one declares none.
func TestFallbackOfAnyDeployment(t *testing.T) {
	mk := func(name string, priority int, fallback ...string) *deployment {
		return &deployment{name: name, kind: kindChat, weight: 1, priority: priority, fallback: fallback,
			state: newSharedState(deploymentID{model: name, provider: name})}
	}
	ds := []*deployment{mk("gpt-4.1", 1), mk("gpt-4.1", 2, "claude-sonnet-4.5"), mk("claude-sonnet-4.5", 1)}
	rt := buildRouting(ds, map[string][]string{"complex": {"gpt-4.1"}}, "")
	for _, name := range []string{"gpt-4.1", "complex"} {
		res := rt.resolve("", name, kindChat)
		var got []string
		for _, g := range res.plan {
			for _, d := range g {
				got = append(got, d.name)
			}
		}
		if len(got) != 3 || got[2] != "claude-sonnet-4.5" {
			t.Errorf("%s: candidates %v, want gpt-4.1's two deployments then claude-sonnet-4.5", name, got)
		}
	}
}
