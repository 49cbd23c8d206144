package llmrouter

import (
	"bytes"
	dto "github.com/prometheus/client_model/go"
	"math"
	"net/http"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// TestClientLabelFromClientBytes: a client_label read from a header the
// client sets may be any bytes. One that is not UTF-8 (which Prometheus
// refuses as a label value, by panicking) neither breaks the request nor
// escapes the cost accounting and the budget; a huge one is not exported
// whole in every tokens and cost series.
func TestClientLabelFromClientBytes(t *testing.T) {
	global, _ := withStorage(t, globalOptions)
	g := newGatewayWith(t, global, "", budgetRouter+`
	budget all_daily {
		limit 10 per day
	}
	client_label {http.request.header.X-Team}
`)
	before := scrape(t)
	teams := []string{"team\xff", strings.Repeat("t", 8<<10)}
	for _, team := range teams {
		for _, stream := range []bool{false, true} {
			resp, body := g.post(chatBody("gpt-4.1", stream), "X-Team", team)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("stream %v: %d %s", stream, resp.StatusCode, body)
			}
		}
	}
	want := 2 * float64(len(teams)) * costPerAnswer
	spent := budgetOf(t, "all_daily").Periods[0].TopKeys
	if len(spent) != 1 || math.Abs(spent[0].Spent.Amount-want) > 1e-9 {
		t.Errorf("budget spend %+v, want %v", spent, want)
	}
	after := scrape(t)
	var cost float64
	for k, v := range after {
		if strings.HasPrefix(k, "caddy_llm_router_") && (!utf8.ValidString(k) || len(k) > 1024) {
			t.Errorf("series %.200q… (%d bytes): not UTF-8 or too long", k, len(k))
		}
		if strings.HasPrefix(k, "caddy_llm_router_cost_total") {
			cost += v - before[k]
		}
	}
	if math.Abs(cost-want) > 1e-9 {
		t.Errorf("cost_total grew by %v, want %v", cost, want)
	}
}

// TestStatsTableClientText: `caddy llm-router stats` prints client labels
// and budget keys, which may come from the request (here its query,
// percent-decoded), to the operator's terminal: a control character in
// them (an escape sequence, a newline) is shown escaped, not written raw.
func TestStatsTableClientText(t *testing.T) {
	global, _ := withStorage(t, globalOptions)
	g := newGatewayWith(t, global, "", budgetRouter+`
	budget per_team {
		limit 10 per day
		key {http.request.uri.query.team} label
	}
	client_label {http.request.uri.query.team}
`)
	resp, body := g.postPath("/v1/chat/completions?team=%1B%5D0%3Bowned%07%0Dfake%09row%0A", chatBody("gpt-4.1", false))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var table bytes.Buffer
	if err := runStats(&table, strings.TrimPrefix(adminURL, "http://")); err != nil {
		t.Fatal(err)
	}
	for _, r := range table.String() {
		if r != '\n' && unicode.IsControl(r) {
			t.Fatalf("stats table holds control character %q:\n%q", r, table.String())
		}
	}
	if !strings.Contains(table.String(), `\x1b]0;owned\a\rfake\trow\n`) {
		t.Errorf("the team is not shown escaped:\n%s", table.String())
	}
}

// TestEarlyUsageInputNotEstimated: a stream whose provider reported usage
// early and then sent more text is charged the provider's input and an
// estimate of its output; estimated_tokens_total (and the stats'
// estimated_input) count only the output, the part the router estimated,
// not the provider's input.
func TestEarlyUsageInputNotEstimated(t *testing.T) {
	const more = 400 // chunks of 40 characters: 10 tokens each
	r := cutAfterEarlyUsage(t, "Once", strings.Repeat("word ", 8), more,
		`{"model":"deepseek-v3.2","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Write a long story."}]}`)
	c := chargedTo(r, "deepseek-v3.2")
	if c.in != 20 || c.out < more*10 {
		t.Fatalf("charged %+v, want the provider's 20 input tokens and at least %d output", c, more*10)
	}
	if c.estIn != 0 || c.estOut != c.out {
		t.Errorf("stats: estimated input %d, output %d; want 0 (the provider reported it) and %d", c.estIn, c.estOut, c.out)
	}
	provider := r.Providers[0].Name
	value := func(typ string) float64 {
		var m dto.Metric
		if err := metrics.estimated.WithLabelValues("deepseek-v3.2", provider, typ).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	in, out := value("input"), value("output")
	if in != 0 || out != float64(c.out) {
		t.Errorf("estimated_tokens_total input %v, output %v; want 0 and %d", in, out, c.out)
	}
}
