package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	dashboardPath  = "grafana/llm-router.json"
	promConfigPath = "prometheus/prometheus.yml"
	alertsPath     = "prometheus/alerts.yml"
	alertsTestPath = "prometheus/alerts_test.yml"

	promtoolMissing = "promtool not installed: apt-get install prometheus"
	promtoolTimeout = 2 * time.Minute
)

// routerMetrics are the metrics the module exports, with their labels (a
// histogram's buckets add le). A metric with a model label must be filtered
// by $model on the dashboard.
var routerMetrics = []struct {
	name   string
	labels []string
}{
	{"caddy_llm_router_requests_total", []string{"route", "model", "provider", "code", "endpoint"}},
	{"caddy_llm_router_attempts_total", []string{"model", "provider", "outcome"}},
	{"caddy_llm_router_request_duration_seconds", []string{"model", "provider"}},
	{"caddy_llm_router_time_to_first_token_seconds", []string{"model", "provider"}},
	{"caddy_llm_router_tokens_total", []string{"model", "provider", "type", "client"}},
	{"caddy_llm_router_cost_total", []string{"model", "provider", "currency", "client"}},
	{"caddy_llm_router_failovers_total", []string{"model", "provider", "reason"}},
	{"caddy_llm_router_estimated_tokens_total", []string{"model", "provider", "type"}},
	{"caddy_llm_router_hedges_total", []string{"model", "provider", "result"}},
	{"caddy_llm_router_hedge_lost_cost_total", []string{"model", "provider", "currency"}},
	{"caddy_llm_router_last_resort_attempts_total", []string{"model", "provider"}},
	{"caddy_llm_router_rule_cost_exceeded_total", []string{"route", "when"}},
	{"caddy_llm_router_unavailable_total", []string{"route"}},
	{"caddy_llm_router_health_score", []string{"model", "provider"}},
	{"caddy_llm_router_up", []string{"model", "provider"}},
	{"caddy_llm_router_in_flight", []string{"model", "provider"}},
	{"caddy_llm_router_budget_spend", []string{"budget", "period"}},
	{"caddy_llm_router_budget_limit", []string{"budget", "period"}},
	{"caddy_llm_router_budget_warn_at", []string{"budget", "period"}},
	{"caddy_llm_router_budget_actions_total", []string{"budget", "action"}},
	{"caddy_llm_router_budget_sync_failures_total", []string{"budget"}},
	{"caddy_llm_router_cache_requests_total", []string{"route", "result"}},
	{"caddy_llm_router_cache_saved_cost_total", []string{"currency"}},
	{"caddy_llm_router_cache_entries", nil},
	{"caddy_llm_router_cache_bytes", nil},
	{"caddy_llm_router_cache_semantic_guard_blocks_total", []string{"guard"}},
	{"caddy_llm_router_cache_semantic_similarity", []string{"result"}},
	{"caddy_llm_router_cache_semantic_embedding_cost_total", []string{"currency"}},
	{"caddy_llm_router_cache_semantic_embedding_failures_total", nil},
	{"caddy_llm_router_cache_semantic_lookups_skipped_total", nil},
}

// histograms are the routerMetrics exported as histograms.
var histograms = []string{
	"caddy_llm_router_request_duration_seconds",
	"caddy_llm_router_time_to_first_token_seconds",
	"caddy_llm_router_cache_semantic_similarity",
}

// wantBreakdowns are labels some dashboard panel must break its metric down
// by (sum by, max by, ...).
var wantBreakdowns = []struct{ metric, label string }{
	{"caddy_llm_router_requests_total", "endpoint"},
	{"caddy_llm_router_cost_total", "client"},
	{"caddy_llm_router_budget_spend", "budget"},
	{"caddy_llm_router_budget_spend", "period"},
	{"caddy_llm_router_budget_limit", "period"},
	{"caddy_llm_router_budget_actions_total", "action"},
	{"caddy_llm_router_budget_sync_failures_total", "budget"},
	{"caddy_llm_router_cache_requests_total", "route"},
	{"caddy_llm_router_cache_requests_total", "result"},
	{"caddy_llm_router_cache_saved_cost_total", "currency"},
	{"caddy_llm_router_cache_semantic_guard_blocks_total", "guard"},
	{"caddy_llm_router_cache_semantic_similarity", "result"},
	{"caddy_llm_router_hedges_total", "result"},
	{"caddy_llm_router_estimated_tokens_total", "type"},
	{"caddy_llm_router_rule_cost_exceeded_total", "route"},
}

// metricRows are the dashboard rows that each hold every panel of a group
// of metrics (those whose names start with prefix), and only those.
var metricRows = []struct{ title, prefix string }{
	{"Budgets", "caddy_llm_router_budget_"},
	{"Response cache", "caddy_llm_router_cache_"},
}

var wantAlerts = []string{
	"LLMRouterDeploymentDown",
	"LLMRouterHighErrorRatio",
	"LLMRouterAllModelsUnavailable",
	"LLMRouterSpendRateHigh",
	"LLMRouterSlowResponses",
	"LLMRouterSlowFirstToken",
	"LLMRouterBudgetNearlySpent",
	"LLMRouterBudgetSyncFailing",
	"LLMRouterServingStale",
}

// metricLabels returns the labels of a router metric, or false for an
// unknown one. A histogram's _bucket, _sum and _count resolve to the
// histogram (buckets with le).
func metricLabels(name string) (base string, labels []string, known bool) {
	for _, m := range routerMetrics {
		if m.name == name {
			return m.name, m.labels, true
		}
	}
	for _, h := range histograms {
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if name == h+suf {
				_, labels, _ := metricLabels(h)
				if suf == "_bucket" {
					labels = append(slices.Clone(labels), "le")
				}
				return h, labels, true
			}
		}
	}
	return name, nil, false
}

// ---------------------------------------------------------------------------
// Dashboard model, for the structural checks (DashboardExprs in
// dashboard.go extracts the queries).

type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []templateVar `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type templateVar struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
	Datasource *datasourceRef  `json:"datasource"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    *gridPos       `json:"gridPos"`
	Targets    []target       `json:"targets"`
	Collapsed  bool           `json:"collapsed"`
	Panels     []panel        `json:"panels"` // collapsed rows nest their panels
}

type gridPos struct {
	X, Y, W, H int
}

func (g gridPos) overlaps(o gridPos) bool {
	return g.X < o.X+o.W && o.X < g.X+g.W && g.Y < o.Y+o.H && o.Y < g.Y+g.H
}

// gridWidth is the width of Grafana's dashboard grid.
const gridWidth = 24

type target struct {
	RefID      string         `json:"refId"`
	Expr       string         `json:"expr"`
	Datasource *datasourceRef `json:"datasource"`
}

func loadDashboard(path string) (*dashboard, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &d, nil
}

// nestedGroups returns the panels of each collapsed row.
func nestedGroups(ps []panel) [][]panel {
	var out [][]panel
	for _, p := range ps {
		if len(p.Panels) > 0 {
			out = append(out, p.Panels)
		}
	}
	return out
}

// flattenPanels returns every panel, including those nested in rows.
func flattenPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, flattenPanels(p.Panels)...)
	}
	return out
}

// ---------------------------------------------------------------------------
// promtool helpers.

// promtoolPath returns promtool's path, or skips the test (fails it under
// CI=true) when promtool is not installed.
func promtoolPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(promtoolMissing + " (CI=true, so this is a failure rather than a skip)")
		}
		t.Skip(promtoolMissing)
	}
	return p
}

func runPromtool(t *testing.T, args ...string) string {
	t.Helper()
	bin := promtoolPath(t)
	ctx, cancel := context.WithTimeout(t.Context(), promtoolTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// writeJSON writes v as JSON, which Prometheus' YAML loaders read as YAML.
func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------------------
// Dashboard structure.

func TestDashboardSchema(t *testing.T) {
	d, err := loadDashboard(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	if d.SchemaVersion < 39 {
		t.Errorf("schemaVersion = %d, want >= 39 (Grafana 10+)", d.SchemaVersion)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard needs a uid and a title (uid=%q title=%q)", d.UID, d.Title)
	}

	panels := flattenPanels(d.Panels)
	if len(panels) == 0 {
		t.Fatal("dashboard has no panels")
	}
	allowed := []string{"timeseries", "stat", "gauge", "bargauge", "row"}
	ids := map[int]string{}
	for _, p := range panels {
		name := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if !slices.Contains(allowed, p.Type) {
			t.Errorf("%s: type %q, want one of %v", name, p.Type, allowed)
		}
		if p.Title == "" {
			t.Errorf("%s: no title", name)
		}
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("%s: id already used by %q", name, prev)
		}
		ids[p.ID] = p.Title
		if p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 {
			t.Errorf("%s: missing gridPos", name)
			continue
		}
		if g := *p.GridPos; g.X < 0 || g.Y < 0 || g.X+g.W > gridWidth {
			t.Errorf("%s: gridPos %+v is off the %d-column grid", name, g, gridWidth)
		}
		if p.Type == "row" {
			if g := *p.GridPos; g.X != 0 || g.W != gridWidth || g.H != 1 {
				t.Errorf("%s: row gridPos %+v, want x=0 w=%d h=1", name, g, gridWidth)
			}
			if len(p.Targets) != 0 {
				t.Errorf("%s: a row has no queries", name)
			}
			if !p.Collapsed && len(p.Panels) != 0 {
				t.Errorf("%s: an expanded row keeps its panels after it, not nested", name)
			}
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("%s: datasource = %+v, want uid ${datasource}", name, p.Datasource)
		}
		nonEmpty := 0
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) != "" {
				nonEmpty++
			}
			if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
				t.Errorf("%s target %s: datasource uid %q, want ${datasource}", name, tg.RefID, tg.Datasource.UID)
			}
		}
		if nonEmpty == 0 {
			t.Errorf("%s: no target with a non-empty expr", name)
		}
	}
	// panels shown together do not overlap (a collapsed row's panels are
	// laid out when it expands: compare them among themselves)
	for _, group := range append([][]panel{d.Panels}, nestedGroups(d.Panels)...) {
		for i, a := range group {
			for _, b := range group[i+1:] {
				if a.GridPos != nil && b.GridPos != nil && a.GridPos.overlaps(*b.GridPos) {
					t.Errorf("panels %d %q %+v and %d %q %+v overlap", a.ID, a.Title, *a.GridPos, b.ID, b.Title, *b.GridPos)
				}
			}
		}
	}

	vars := map[string]templateVar{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	ds, ok := vars["datasource"]
	if !ok {
		t.Error("no $datasource variable")
	} else {
		var q string
		_ = json.Unmarshal(ds.Query, &q)
		if ds.Type != "datasource" || q != "prometheus" {
			t.Errorf("$datasource: type=%q query=%s, want a prometheus datasource variable", ds.Type, ds.Query)
		}
	}
	m, ok := vars["model"]
	if !ok {
		t.Fatal("no $model variable")
	}
	const wantQuery = "label_values(caddy_llm_router_requests_total, model)"
	if m.Type != "query" || !strings.Contains(string(m.Query), wantQuery) {
		t.Errorf("$model: type=%q query=%s, want a query variable on %s", m.Type, m.Query, wantQuery)
	}
	if !m.Multi || !m.IncludeAll {
		t.Errorf("$model: multi=%v includeAll=%v, want both true", m.Multi, m.IncludeAll)
	}
	if m.AllValue != "" && m.AllValue != ".*" && m.AllValue != ".+" {
		t.Errorf("$model: allValue %q must be a regex matching every model", m.AllValue)
	}
}

// metricRef matches a router metric name and its optional label selector.
var metricRef = regexp.MustCompile(`(caddy_llm_router_[a-zA-Z0-9_]+)(\{[^}]*\})?`)

// groupingLabels matches the label lists of aggregations and vector
// matching: by (...), without (...), on (...), ignoring (...), group_left
// (...), group_right (...).
var groupingLabels = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)

func TestDashboardMetricsAndModelFilter(t *testing.T) {
	d, err := loadDashboard(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	brokenDown := map[[2]string]bool{} // metric, label
	for _, p := range flattenPanels(d.Panels) {
		for _, tg := range p.Targets {
			var exprLabels []string // of every metric the expression reads
			var bases []string
			for _, sm := range metricRef.FindAllStringSubmatch(tg.Expr, -1) {
				base, labels, known := metricLabels(sm[1])
				if !known {
					t.Errorf("panel %q: unknown metric %s", p.Title, sm[1])
					continue
				}
				seen[base] = true
				bases = append(bases, base)
				exprLabels = append(exprLabels, labels...)
				if slices.Contains(labels, "model") && !strings.Contains(sm[2], `model=~"$model"`) {
					t.Errorf("panel %q target %s: %s%s is not filtered by model=~\"$model\"", p.Title, tg.RefID, sm[1], sm[2])
				}
				for _, lm := range regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`).FindAllStringSubmatch(sm[2], -1) {
					if !slices.Contains(labels, lm[1]) {
						t.Errorf("panel %q target %s: %s has no label %s (labels: %v)", p.Title, tg.RefID, sm[1], lm[1], labels)
					}
				}
			}
			// a label to group or match by must be one the expression's
			// metrics have: a typo would silently merge every series
			for _, gm := range groupingLabels.FindAllStringSubmatch(tg.Expr, -1) {
				for _, l := range strings.Split(gm[1], ",") {
					l = strings.TrimSpace(l)
					if l == "" {
						continue
					}
					if !slices.Contains(exprLabels, l) {
						t.Errorf("panel %q target %s: groups by %q, which none of %v has", p.Title, tg.RefID, l, bases)
					}
					for _, b := range bases {
						brokenDown[[2]string{b, l}] = true
					}
				}
			}
		}
	}
	for _, m := range routerMetrics {
		if !seen[m.name] {
			t.Errorf("metric %s is not used by any dashboard panel", m.name)
		}
	}
	for _, w := range wantBreakdowns {
		if !brokenDown[[2]string{w.metric, w.label}] {
			t.Errorf("no dashboard panel shows %s by %s", w.metric, w.label)
		}
	}
}

// TestDashboardMetricRows: the panels of each group of metrics in
// metricRows (budgets, response cache) sit together in their row, and
// the row holds nothing else.
func TestDashboardMetricRows(t *testing.T) {
	d, err := loadDashboard(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	// the row each panel belongs to: the last row above it, or the row it
	// is nested in when collapsed
	rowOf := map[int]string{}
	var rows []panel
	for _, p := range d.Panels {
		if p.Type == "row" {
			rows = append(rows, p)
			for _, n := range p.Panels {
				rowOf[n.ID] = p.Title
			}
		}
	}
	for _, p := range d.Panels {
		if p.Type == "row" || p.GridPos == nil {
			continue
		}
		best := -1
		for _, r := range rows {
			if r.GridPos != nil && r.GridPos.Y < p.GridPos.Y && r.GridPos.Y > best {
				best, rowOf[p.ID] = r.GridPos.Y, r.Title
			}
		}
	}
	for _, row := range metricRows {
		t.Run(row.title, func(t *testing.T) {
			if !slices.ContainsFunc(rows, func(r panel) bool { return r.Title == row.title }) {
				t.Fatalf("no row titled %q", row.title)
			}
			inRow := 0
			for _, p := range flattenPanels(d.Panels) {
				uses := slices.ContainsFunc(p.Targets, func(tg target) bool {
					return strings.Contains(tg.Expr, row.prefix)
				})
				switch {
				case uses && rowOf[p.ID] != row.title:
					t.Errorf("panel %d %q shows %s* metrics outside the %q row (row %q)", p.ID, p.Title, row.prefix, row.title, rowOf[p.ID])
				case uses:
					inRow++
				case p.Type != "row" && rowOf[p.ID] == row.title:
					t.Errorf("panel %d %q in the %q row shows no %s* metric", p.ID, p.Title, row.title, row.prefix)
				}
			}
			if inRow == 0 {
				t.Errorf("the %q row has no panels", row.title)
			}
		})
	}
}

func TestDashboardExprsSubstitution(t *testing.T) {
	exprs, err := DashboardExprs(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(exprs) == 0 {
		t.Fatal("no expressions extracted")
	}
	for _, e := range exprs {
		if strings.Contains(e, "$") {
			t.Errorf("expression still contains '$' after substitution: %s", e)
		}
	}
	// The helper itself must reject unknown variables.
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"panels":[{"id":1,"type":"stat","title":"x","targets":[{"refId":"A","expr":"up{job=\"$job\"}"}]}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := DashboardExprs(bad); err == nil {
		t.Error("dashboardExprs accepted an unknown variable $job")
	}
}

// ---------------------------------------------------------------------------
// Alert rule coverage (no YAML dependency: the real validation is promtool's).

func TestAlertsDefined(t *testing.T) {
	rules, err := os.ReadFile(alertsPath)
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(alertsTestPath)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\s*- name: llm-router\s*$`).Match(rules) {
		t.Errorf("%s: no group named llm-router", alertsPath)
	}
	var got []string
	for _, m := range regexp.MustCompile(`(?m)^\s*- alert:\s*(\S+)`).FindAllSubmatch(rules, -1) {
		got = append(got, string(m[1]))
	}
	for _, a := range wantAlerts {
		if !slices.Contains(got, a) {
			t.Errorf("%s: alert %s missing (have %v)", alertsPath, a, got)
		}
		if !regexp.MustCompile(`(?m)^\s*alertname:\s*` + a + `\s*$`).Match(tests) {
			t.Errorf("%s: no test case for %s", alertsTestPath, a)
		}
	}
}

// ---------------------------------------------------------------------------
// promtool checks.

func TestPromtoolCheckConfig(t *testing.T) {
	runPromtool(t, "check", "config", promConfigPath)
}

func TestPromtoolCheckRules(t *testing.T) {
	runPromtool(t, "check", "rules", alertsPath)
}

func TestPromtoolTestRules(t *testing.T) {
	runPromtool(t, "test", "rules", alertsTestPath)
}

// TestDashboardPromQLSyntax checks every dashboard expression (after variable
// substitution) with promtool by loading them as recording rules.
func TestDashboardPromQLSyntax(t *testing.T) {
	exprs, err := DashboardExprs(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	promtoolPath(t)
	rules := make([]map[string]string, len(exprs))
	for i, e := range exprs {
		rules[i] = map[string]string{"record": fmt.Sprintf("dashboard:expr_%d", i), "expr": e}
	}
	path := filepath.Join(t.TempDir(), "dashboard_rules.yml")
	writeJSON(t, path, map[string]any{
		"groups": []any{map[string]any{"name": "dashboard", "rules": rules}},
	})
	out := runPromtool(t, "check", "rules", path)
	if want := fmt.Sprintf("%d rules found", len(exprs)); !strings.Contains(out, want) {
		t.Errorf("promtool check rules: want %q in output:\n%s", want, out)
	}
}

// syntheticSeries feeds every router metric, with labels shaped like the
// module's, to TestDashboardExprsReturnData.
var syntheticSeries = func() []map[string]string {
	var s []map[string]string
	add := func(series, values string) {
		s = append(s, map[string]string{"series": series, "values": values})
	}
	const dep = `model="gpt-4o", provider="openai"`
	add(`caddy_llm_router_requests_total{route="chat", `+dep+`, code="200", endpoint="chat"}`, "0+10x60")
	add(`caddy_llm_router_requests_total{route="chat", `+dep+`, code="502", endpoint="responses"}`, "0+1x60")
	// endpoint "" (an unknown path): Prometheus stores no empty label
	add(`caddy_llm_router_requests_total{route="chat", `+dep+`, code="404"}`, "0+1x60")
	for _, o := range []string{"success", "server_error", "rate_limited", "client_error", "canceled"} {
		add(`caddy_llm_router_attempts_total{`+dep+`, outcome="`+o+`"}`, "0+3x60")
	}
	for _, h := range []string{"caddy_llm_router_request_duration_seconds", "caddy_llm_router_time_to_first_token_seconds"} {
		for i, le := range []string{"0.1", "1", "10", "+Inf"} {
			add(fmt.Sprintf(`%s_bucket{%s, le="%s"}`, h, dep, le), fmt.Sprintf("0+%dx60", 2*(i+1)))
		}
		add(h+`_sum{`+dep+`}`, "0+9x60")
		add(h+`_count{`+dep+`}`, "0+8x60")
	}
	// client "" (no client_label) and one client
	for _, client := range []string{"", `, client="team-a"`} {
		for _, ty := range []string{"input", "output", "cached_input"} {
			add(`caddy_llm_router_tokens_total{`+dep+`, type="`+ty+`"`+client+`}`, "0+1000x60")
		}
		add(`caddy_llm_router_cost_total{`+dep+`, currency="USD"`+client+`}`, "0+0.5x60")
	}
	add(`caddy_llm_router_failovers_total{`+dep+`, reason="server_error"}`, "0+1x60")
	for _, ty := range []string{"input", "output"} {
		add(`caddy_llm_router_estimated_tokens_total{`+dep+`, type="`+ty+`"}`, "0+100x60")
	}
	for _, r := range []string{"won", "lost", "failed"} {
		add(`caddy_llm_router_hedges_total{`+dep+`, result="`+r+`"}`, "0+1x60")
	}
	add(`caddy_llm_router_hedge_lost_cost_total{`+dep+`, currency="USD"}`, "0+0.01x60")
	add(`caddy_llm_router_last_resort_attempts_total{`+dep+`}`, "0+1x60")
	add(`caddy_llm_router_rule_cost_exceeded_total{route="chat", when="1"}`, "0+1x60")
	add(`caddy_llm_router_unavailable_total{route="chat"}`, "0+1x60")
	add(`caddy_llm_router_health_score{`+dep+`}`, "87x60")
	add(`caddy_llm_router_up{`+dep+`}`, "1x60")
	add(`caddy_llm_router_in_flight{`+dep+`}`, "3x60")
	const budget = `budget="team_daily", period="day"`
	add(`caddy_llm_router_budget_spend{`+budget+`}`, "0+1x60")
	add(`caddy_llm_router_budget_limit{`+budget+`}`, "100x60")
	add(`caddy_llm_router_budget_warn_at{`+budget+`}`, "0.8x60")
	for _, a := range []string{"warned", "downgraded", "refused"} {
		add(`caddy_llm_router_budget_actions_total{budget="team_daily", action="`+a+`"}`, "0+1x60")
	}
	add(`caddy_llm_router_budget_sync_failures_total{budget="team_daily"}`, "0+1x60")
	for _, r := range []string{"hit", "miss", "stale", "bypass", "semantic_hit", "semantic_blocked"} {
		add(`caddy_llm_router_cache_requests_total{route="chat", result="`+r+`"}`, "0+2x60")
	}
	add(`caddy_llm_router_cache_saved_cost_total{currency="USD"}`, "0+0.2x60")
	add(`caddy_llm_router_cache_entries{}`, "40x60")
	add(`caddy_llm_router_cache_bytes{}`, "36000x60")
	for _, g := range []string{"number", "negation"} {
		add(`caddy_llm_router_cache_semantic_guard_blocks_total{guard="`+g+`"}`, "0+1x60")
	}
	for _, r := range []string{"hit", "blocked", "miss"} {
		for i, le := range []string{"0.8", "0.9", "0.95", "+Inf"} {
			add(fmt.Sprintf(`caddy_llm_router_cache_semantic_similarity_bucket{result="%s", le="%s"}`, r, le), fmt.Sprintf("0+%dx60", i+1))
		}
		add(`caddy_llm_router_cache_semantic_similarity_sum{result="`+r+`"}`, "0+3x60")
		add(`caddy_llm_router_cache_semantic_similarity_count{result="`+r+`"}`, "0+4x60")
	}
	add(`caddy_llm_router_cache_semantic_embedding_cost_total{currency="USD"}`, "0+0.01x60")
	add(`caddy_llm_router_cache_semantic_embedding_failures_total{}`, "0+1x60")
	add(`caddy_llm_router_cache_semantic_lookups_skipped_total{}`, "0+1x60")
	return s
}()

// TestSyntheticSeriesShape: the synthetic series have the labels of the
// metrics they stand for (an empty label is left out, as Prometheus
// does), and every router metric has some.
func TestSyntheticSeriesShape(t *testing.T) {
	seriesRE := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}$`)
	labelRE := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="[^"]*"`)
	covered := map[string]bool{}
	for _, s := range syntheticSeries {
		m := seriesRE.FindStringSubmatch(s["series"])
		if m == nil {
			t.Errorf("bad series %s", s["series"])
			continue
		}
		base, labels, known := metricLabels(m[1])
		if !known {
			t.Errorf("series of unknown metric %s", m[1])
			continue
		}
		covered[base] = true
		for _, l := range labelRE.FindAllStringSubmatch(m[2], -1) {
			if !slices.Contains(labels, l[1]) {
				t.Errorf("%s: %s has no label %s (labels: %v)", s["series"], m[1], l[1], labels)
			}
		}
	}
	for _, m := range routerMetrics {
		if !covered[m.name] {
			t.Errorf("no synthetic series of %s", m.name)
		}
	}
}

// TestDashboardExprsReturnData catches what a syntax check cannot (a typo in a
// metric or label name, a wrong matcher): each substituted dashboard
// expression becomes an alert `count(<expr>) > 0`, and a promtool unit test
// over synthetic series of every router metric expects all of them to fire.
func TestDashboardExprsReturnData(t *testing.T) {
	exprs, err := DashboardExprs(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	promtoolPath(t)
	dir := t.TempDir()
	var rules, cases []map[string]any
	for i, e := range exprs {
		name := fmt.Sprintf("DashboardExpr%d", i)
		rules = append(rules, map[string]any{"alert": name, "expr": "count(\n" + e + "\n) > 0"})
		cases = append(cases, map[string]any{
			"eval_time":  "30m",
			"alertname":  name,
			"exp_alerts": []any{map[string]any{"exp_labels": map[string]string{}}},
		})
	}
	writeJSON(t, filepath.Join(dir, "rules.yml"), map[string]any{
		"groups": []any{map[string]any{"name": "dashboard", "rules": rules}},
	})
	testFile := filepath.Join(dir, "rules_test.yml")
	writeJSON(t, testFile, map[string]any{
		"rule_files":          []string{"rules.yml"},
		"evaluation_interval": "1m",
		"tests": []any{map[string]any{
			"interval":        "1m",
			"input_series":    syntheticSeries,
			"alert_rule_test": cases,
		}},
	})
	runPromtool(t, "test", "rules", testFile)
}

// panelExpr returns the substituted expression of the target refID of the
// dashboard panel titled title.
func panelExpr(t *testing.T, title, refID string) string {
	t.Helper()
	d, err := loadDashboard(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range flattenPanels(d.Panels) {
		if p.Title != title {
			continue
		}
		for _, tg := range p.Targets {
			if tg.RefID == refID {
				return grafanaVars.Replace(tg.Expr)
			}
		}
	}
	t.Fatalf("no panel %q with a target %s", title, refID)
	return ""
}

// exprCase is an evaluation of a dashboard expression over input series
// (promtool's unit test format): at eval_time, the sample of each label
// set in want, printed with two decimals, and no other.
type exprCase struct {
	series []map[string]string
	want   map[string]string // label=value (one label) -> value
}

// checkExprValues runs expr through promtool over each case's series.
func checkExprValues(t *testing.T, expr string, cases ...exprCase) {
	t.Helper()
	promtoolPath(t)
	dir := t.TempDir()
	writeJSON(t, filepath.Join(dir, "rules.yml"), map[string]any{
		"groups": []any{map[string]any{"name": "expr", "rules": []any{map[string]any{
			"alert": "Expr", "expr": expr,
			"annotations": map[string]string{"value": `{{ $value | printf "%.2f" }}`},
		}}}},
	})
	var tests []any
	for _, c := range cases {
		var exp []any
		for l, v := range c.want {
			name, value, _ := strings.Cut(l, "=")
			exp = append(exp, map[string]any{
				"exp_labels":      map[string]string{name: value},
				"exp_annotations": map[string]string{"value": v},
			})
		}
		tests = append(tests, map[string]any{
			"interval":        "1m",
			"input_series":    c.series,
			"alert_rule_test": []any{map[string]any{"eval_time": "20m", "alertname": "Expr", "exp_alerts": exp}},
		})
	}
	testFile := filepath.Join(dir, "rules_test.yml")
	writeJSON(t, testFile, map[string]any{
		"rule_files":          []string{"rules.yml"},
		"evaluation_interval": "1m",
		"tests":               tests,
	})
	runPromtool(t, "test", "rules", testFile)
}

// TestDashboardNetSavingWithoutHits: the cache's net saving is negative,
// not missing, while a semantic cache has paid for embeddings and served
// no answer yet: cache_saved_cost_total{currency} appears only with the
// first hit, and until then (after every start of Caddy) the embeddings
// are all the cache did.
func TestDashboardNetSavingWithoutHits(t *testing.T) {
	const (
		embedded = `caddy_llm_router_cache_semantic_embedding_cost_total{currency="USD"}`
		saved    = `caddy_llm_router_cache_saved_cost_total{currency="USD"}`
	)
	checkExprValues(t, panelExpr(t, "Money saved by the cache per hour (net of embeddings)", "A"),
		// 0.01 USD of embeddings a minute, no hit: -0.60 an hour
		exprCase{[]map[string]string{{"series": embedded, "values": "0+0.01x30"}},
			map[string]string{"currency=USD": "-0.60"}},
		// and 0.05 USD saved a minute besides: 2.40 an hour
		exprCase{[]map[string]string{{"series": embedded, "values": "0+0.01x30"}, {"series": saved, "values": "0+0.05x30"}},
			map[string]string{"currency=USD": "2.40"}},
		// an exact cache, no embeddings: what it saved
		exprCase{[]map[string]string{{"series": saved, "values": "0+0.05x30"}},
			map[string]string{"currency=USD": "3.00"}},
	)
}

// TestDashboardHitRatioWithoutHits: a route whose cached requests all
// miss has a hit ratio of 0, not none: its hit, semantic_hit and stale
// series of cache_requests_total appear only with the first of each.
func TestDashboardHitRatioWithoutHits(t *testing.T) {
	req := func(route, result, values string) map[string]string {
		return map[string]string{"series": fmt.Sprintf(`caddy_llm_router_cache_requests_total{route=%q, result=%q}`, route, result), "values": values}
	}
	checkExprValues(t, panelExpr(t, "Cache hit ratio by route", "A"),
		exprCase{[]map[string]string{
			req("faq", "miss", "0+3x30"), req("faq", "hit", "0+1x30"), // 25 %
			req("support", "miss", "0+2x30"),   // every request a miss
			req("support", "bypass", "0+5x30"), // not looked up
			req("catalog", "bypass", "0+5x30"), // never looked up: no ratio
		}, map[string]string{"route=faq": "0.25", "route=support": "0.00"}},
	)
}
