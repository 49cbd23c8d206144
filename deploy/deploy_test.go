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

// routerMetrics are the metrics the module exports; hasModel says whether the
// metric carries a model label (and so must be filtered by $model).
var routerMetrics = []struct {
	name     string
	hasModel bool
}{
	{"caddy_llm_router_requests_total", true},
	{"caddy_llm_router_attempts_total", true},
	{"caddy_llm_router_request_duration_seconds", true},
	{"caddy_llm_router_time_to_first_token_seconds", true},
	{"caddy_llm_router_tokens_total", true},
	{"caddy_llm_router_cost_total", true},
	{"caddy_llm_router_failovers_total", true},
	{"caddy_llm_router_unavailable_total", false},
	{"caddy_llm_router_health_score", true},
	{"caddy_llm_router_up", true},
	{"caddy_llm_router_in_flight", true},
}

var wantAlerts = []string{
	"LLMRouterDeploymentDown",
	"LLMRouterHighErrorRatio",
	"LLMRouterAllModelsUnavailable",
	"LLMRouterSpendRateHigh",
	"LLMRouterSlowResponses",
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
	GridPos    *struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Targets []target `json:"targets"`
	Panels  []panel  `json:"panels"` // collapsed rows nest their panels
}

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
	allowed := []string{"timeseries", "stat", "gauge"}
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
		if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("%s: missing gridPos", name)
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

func TestDashboardMetricsAndModelFilter(t *testing.T) {
	d, err := loadDashboard(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	hasModel := map[string]bool{}
	for _, m := range routerMetrics {
		hasModel[m.name] = m.hasModel
	}
	seen := map[string]bool{}
	for _, p := range flattenPanels(d.Panels) {
		for _, tg := range p.Targets {
			for _, sm := range metricRef.FindAllStringSubmatch(tg.Expr, -1) {
				base := sm[1]
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(base, suf); ok {
						if _, known := hasModel[b]; known {
							base = b
						}
					}
				}
				withModel, known := hasModel[base]
				if !known {
					t.Errorf("panel %q: unknown metric %s", p.Title, sm[1])
					continue
				}
				seen[base] = true
				if withModel && !strings.Contains(sm[2], `model=~"$model"`) {
					t.Errorf("panel %q target %s: %s%s is not filtered by model=~\"$model\"", p.Title, tg.RefID, sm[1], sm[2])
				}
			}
		}
	}
	for _, m := range routerMetrics {
		if !seen[m.name] {
			t.Errorf("metric %s is not used by any dashboard panel", m.name)
		}
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
	add(`caddy_llm_router_requests_total{route="chat", `+dep+`, code="200"}`, "0+10x60")
	add(`caddy_llm_router_requests_total{route="chat", `+dep+`, code="502"}`, "0+1x60")
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
	for _, ty := range []string{"input", "output", "cached_input"} {
		add(`caddy_llm_router_tokens_total{`+dep+`, type="`+ty+`"}`, "0+1000x60")
	}
	add(`caddy_llm_router_cost_total{`+dep+`, currency="USD"}`, "0+0.5x60")
	add(`caddy_llm_router_failovers_total{`+dep+`, reason="server_error"}`, "0+1x60")
	add(`caddy_llm_router_unavailable_total{route="chat"}`, "0+1x60")
	add(`caddy_llm_router_health_score{`+dep+`}`, "87x60")
	add(`caddy_llm_router_up{`+dep+`}`, "1x60")
	add(`caddy_llm_router_in_flight{`+dep+`}`, "3x60")
	return s
}()

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
