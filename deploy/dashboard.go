package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// grafanaVars replaces the Grafana variables used in the dashboard with values
// that make each expression plain PromQL. Longer names come first: Replacer
// tries the old strings in argument order.
var grafanaVars = strings.NewReplacer(
	"${__rate_interval}", "1m", "$__rate_interval", "1m",
	"${__range_ms}", "3600000", "$__range_ms", "3600000",
	"${__range_s}", "3600", "$__range_s", "3600",
	"${__range}", "1h", "$__range", "1h",
	"${__interval_ms}", "60000", "$__interval_ms", "60000",
	"${__interval}", "1m", "$__interval", "1m",
	"${model}", ".*", "$model", ".*",
)

var leftoverVar = regexp.MustCompile(`\$\{?[A-Za-z_]`)

// exprPanel is the part of a Grafana panel that holds queries.
type exprPanel struct {
	ID      int    `json:"id"`
	Title   string `json:"title"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []exprPanel `json:"panels"` // collapsed rows nest their panels
}

// DashboardExprs returns the PromQL of every target of every panel of the
// Grafana dashboard at path, in panel order, with the Grafana variables
// substituted ($model -> .*, $__rate_interval -> 1m, $__range -> 1h, ...),
// so that each can be run against a real Prometheus. It fails on an empty
// expression or on a variable it does not know how to substitute.
func DashboardExprs(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d struct {
		Panels []exprPanel `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var exprs []string
	var walk func([]exprPanel) error
	walk = func(ps []exprPanel) error {
		for _, p := range ps {
			for _, t := range p.Targets {
				if strings.TrimSpace(t.Expr) == "" {
					return fmt.Errorf("panel %d %q target %s: empty expr", p.ID, p.Title, t.RefID)
				}
				e := grafanaVars.Replace(t.Expr)
				if v := leftoverVar.FindString(e); v != "" {
					return fmt.Errorf("panel %d %q target %s: unsubstituted variable %q in %s", p.ID, p.Title, t.RefID, v, e)
				}
				exprs = append(exprs, e)
			}
			if err := walk(p.Panels); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(d.Panels); err != nil {
		return nil, err
	}
	return exprs, nil
}
