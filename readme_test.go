package llmrouter

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
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

// collectors records what routerMetrics.register registers.
type collectors []prometheus.Collector

func (c *collectors) Register(x prometheus.Collector) error { *c = append(*c, x); return nil }
func (c *collectors) MustRegister(xs ...prometheus.Collector) {
	*c = append(*c, xs...)
}
func (c *collectors) Unregister(prometheus.Collector) bool { return false }

var descParts = regexp.MustCompile(`^Desc\{fqName: "([^"]+)".*variableLabels: \{([^}]*)\}\}$`)

// TestReadmeDocumentsEveryMetric: every metric the router exports has a
// row in the README's Metrics table that names each of its labels.
func TestReadmeDocumentsEveryMetric(t *testing.T) {
	text := readme(t)
	_, table, ok := strings.Cut(text, "## Metrics\n")
	if !ok {
		t.Fatal("README has no Metrics section")
	}
	table, _, _ = strings.Cut(table, "\n## ")
	rows := map[string]string{}
	for line := range strings.SplitSeq(table, "\n") {
		if name, ok := strings.CutPrefix(line, "| `"); ok {
			name, _, _ = strings.Cut(name, "`")
			rows[name] = line
		}
	}
	var cs collectors
	if err := newRouterMetrics().register(&cs); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, c := range cs {
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := descParts.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read %s", d)
			}
			name, labels := m[1], strings.Split(m[2], ",")
			if seen[name] {
				continue
			}
			seen[name] = true
			row, ok := rows[name]
			if !ok {
				t.Errorf("metric %s has no row in the README's Metrics table", name)
				continue
			}
			for _, l := range slices.DeleteFunc(labels, func(s string) bool { return s == "" }) {
				if !strings.Contains(row, "`"+l+"`") {
					t.Errorf("README's row of %s does not name its label %s", name, l)
				}
			}
		}
	}
}
