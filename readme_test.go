package llmrouter

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
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

// exportedMetrics returns the name and labels of every metric the router
// exports, as newRouterMetrics registers them.
func exportedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	var cs collectors
	if err := newRouterMetrics().register(&cs); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, c := range cs {
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := descParts.FindStringSubmatch(d.String())
			if m == nil {
				t.Errorf("cannot read %s", d)
				continue
			}
			out[m[1]] = slices.DeleteFunc(strings.Split(m[2], ","), func(s string) bool { return s == "" })
		}
	}
	return out
}

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
	for name, labels := range exportedMetrics(t) {
		row, ok := rows[name]
		if !ok {
			t.Errorf("metric %s has no row in the README's Metrics table", name)
			continue
		}
		for _, l := range labels {
			if !strings.Contains(row, "`"+l+"`") {
				t.Errorf("README's row of %s does not name its label %s", name, l)
			}
		}
	}
}

// TestDashboardShowsEveryMetric: every metric the router exports is read
// by some panel of the Grafana dashboard in deploy/.
func TestDashboardShowsEveryMetric(t *testing.T) {
	dashboard, err := os.ReadFile(promDashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	for name := range exportedMetrics(t) {
		if !regexp.MustCompile(regexp.QuoteMeta(name) + `(_bucket)?\b`).Match(dashboard) {
			t.Errorf("metric %s is on no panel of %s", name, promDashboardPath)
		}
	}
}

// TestReadmeCaddyfileSnippets: every caddyfile block of the README after
// the syntax reference adapts and provisions as `caddy validate` does, in
// an llm_router block with two providers and the README's four chat
// models (and its route simple_qa, unless the snippet declares it); a
// whole site is taken as it is, its `llm_router { ... }` filled the same
// way.
func TestReadmeCaddyfileSnippets(t *testing.T) {
	const base = `
		provider holysheep {
			base_url http://127.0.0.1:1/v1
			api_key sk-readme-snippet-key-0001
		}
		provider backup {
			base_url http://127.0.0.1:1/v1
		}
		model deepseek-v3.2
		model gemini-2.5-flash
		model gpt-4.1
		model claude-sonnet-4.5 {
			provider backup
		}
		health_check {
			interval off
		}
`
	text := readme(t)
	_, rest, _ := strings.Cut(text, "## Caddyfile\n")
	_, rest, _ = strings.Cut(rest, "```caddyfile\n") // the syntax reference
	n := 0
	for {
		var snippet string
		var ok bool
		if _, rest, ok = strings.Cut(rest, "\n```caddyfile\n"); !ok {
			break
		}
		snippet, rest, _ = strings.Cut(rest, "```")
		n++
		router := base
		if !strings.Contains(snippet, "route simple_qa ") {
			router += "\t\troute simple_qa deepseek-v3.2 gemini-2.5-flash\n"
		}
		var src string
		if site, ok := strings.CutPrefix(snippet, "example.com {"); ok {
			src = ":0 {" + strings.Replace(site, "llm_router { ... }", "llm_router {\n"+router+"\t}", 1)
		} else {
			src = ":0 {\n\tllm_router {\n" + router + snippet + "\t}\n}\n"
		}
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			adapted, err := adapt(t, "README.md", []byte("{\n\tadmin off\n}\n"+src))
			if err != nil {
				t.Fatalf("adapting:\n%s\n%v", snippet, err)
			}
			var cfg caddy.Config
			if err := json.Unmarshal(adapted, &cfg); err != nil {
				t.Fatal(err)
			}
			if err := caddy.Validate(&cfg); err != nil {
				t.Errorf("caddy validate:\n%s\n%v", snippet, err)
			}
		})
	}
	if n < 4 {
		t.Errorf("found %d caddyfile snippets after the syntax reference, want at least 4", n)
	}
}
