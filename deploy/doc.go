// Package deploy holds the observability files shipped with caddy-llm-router
// and the tests that keep them honest. Its one function, DashboardExprs,
// turns the dashboard into PromQL that tests run against a real Prometheus.
//
//   - grafana/llm-router.json: Grafana (10+) dashboard for the router's
//     caddy_llm_router_* metrics, with $datasource and $model variables.
//   - prometheus/prometheus.yml: Prometheus scrape config for Caddy's admin
//     metrics endpoint (localhost:2019/metrics), loading alerts.yml.
//   - prometheus/alerts.yml: alerting rules (group llm-router).
//   - prometheus/alerts_test.yml: promtool unit tests for alerts.yml.
//
// `go test ./deploy/` checks the dashboard's structure and, when promtool is on
// PATH (Debian: apt-get install prometheus), validates the Prometheus config,
// the rules, the rule unit tests and every dashboard PromQL expression. With
// CI=true a missing promtool fails the tests instead of skipping them.
package deploy
