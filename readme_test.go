package llmrouter

import (
	"os"
	"strings"
	"testing"
)

// readme returns README.md's text.
func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestReadmeDocumentsEverySubdirective: every subdirective the Caddyfile
// parser accepts is in the README's syntax block (under "## Caddyfile"),
// so that the block a user copies from lists every setting there is.
func TestReadmeDocumentsEverySubdirective(t *testing.T) {
	text := readme(t)
	_, after, ok := strings.Cut(text, "## Caddyfile\n")
	if !ok {
		t.Fatal("README has no Caddyfile section")
	}
	_, block, ok := strings.Cut(after, "```caddyfile\n")
	if !ok {
		t.Fatal("the Caddyfile section has no caddyfile block")
	}
	block, _, _ = strings.Cut(block, "```")
	lines := map[string]bool{} // the first word of each line of the block
	for line := range strings.SplitSeq(block, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			lines[f[0]] = true
		}
	}
	for block, names := range map[string][]string{
		"llm_router": routerSubdirectives, "provider": providerSubdirectives, "model": modelSubdirectives,
		"health_check": healthSubdirectives, "failover": failoverSubdirectives, "budget": budgetSubdirectives,
		"cache": cacheSubdirectives, "semantic": semanticSubdirectives,
	} {
		for _, name := range names {
			if !lines[name] {
				t.Errorf("%s subdirective %s is not in the README's Caddyfile block", block, name)
			}
		}
	}
}
