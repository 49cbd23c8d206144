package llmrouter

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// withHealth puts a health_check block into defaultRouter.
func withHealth(block string) string {
	return strings.Replace(defaultRouter, "default_route simple_qa", "default_route simple_qa\n\thealth_check {\n"+block+"\n\t}", 1)
}

const primaryKey = "sk-primary-test-key-0001"

// probeEvents subscribes to probe rounds of one deployment.
func probeEvents(t *testing.T, id deploymentID) <-chan probeResult {
	ch := make(chan probeResult, 64)
	hook := func(got deploymentID, r probeResult) {
		if got == id {
			select {
			case ch <- r:
			default:
			}
		}
	}
	probeHook.Store(&hook)
	t.Cleanup(func() { probeHook.Store(nil) })
	return ch
}

func TestDisabledDeploymentSkipped(t *testing.T) {
	g := newGateway(t, withHealth("\t\tinterval off"))
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 500})
	// 100 -> 30 in seven 500s: disabled at or below 30
	for range 7 {
		resp, body := g.post(chatBody("simple_qa", false))
		expectModel(t, resp, body, "gemini-2.5-flash", "primary", 2)
	}
	resp, body := g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "gemini-2.5-flash", "primary", 1)
	if n := len(g.primary.RequestsFor("deepseek-chat")); n != 7 {
		t.Errorf("disabled deployment got %d requests, want 7", n)
	}

	// now gemini's connections reset until it is disabled: 100 -> 25 in
	// five; each time, disabled deepseek is tried as a last resort, and
	// its 500s take it from 30 to 0
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Reset: true})
	for range 5 {
		resp, _ := g.post(chatBody("simple_qa", false))
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-LLM-Attempts") != "2" {
			t.Fatalf("status %d after %s attempts, want 503 after 2 (the last resort included)", resp.StatusCode, resp.Header.Get("X-LLM-Attempts"))
		}
	}
	if d, m := statsFor(t, g, "deepseek-v3.2", "primary"), statsFor(t, g, "gemini-2.5-flash", "primary"); d.State != stateDisabled || m.State != stateDisabled || d.HealthScore != 0 || m.HealthScore != 25 {
		t.Fatalf("deepseek %s %d, gemini %s %d; want both disabled at 0 and 25", d.State, d.HealthScore, m.State, m.HealthScore)
	}
	// both disabled: both are tried anyway, healthiest (gemini) first,
	// and the request succeeds when one answers
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 500, Times: 1})
	g.primary.Set("deepseek-chat", mockllm.Behavior{})
	resp, body = g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 2)
	reqs := g.primary.Requests()
	if last := reqs[len(reqs)-2]; last.Model != "gemini-2.5-flash" {
		t.Errorf("healthiest first: tried %s before deepseek", last.Model)
	}
	// the success re-enabled deepseek: the next request goes straight to it
	resp, body = g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
}

// TestLastResort: with one candidate disabled (its fault has just
// cleared) and the other stalling, the disabled one is tried before a 503,
// answers, and is counted as a last resort.
func TestLastResort(t *testing.T) {
	g := newGateway(t, withHealth("\t\tinterval off"))
	disableDeepseek(t, g)
	before := scrape(t)
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Hang: true, Times: 1})
	resp, body := g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 2)
	after := scrape(t)
	const series = `caddy_llm_router_last_resort_attempts_total{model="deepseek-v3.2",provider="primary"}`
	if d := after[series] - before[series]; d != 1 {
		t.Errorf("%s +%v, want 1", series, d)
	}
}

func TestActiveProbes(t *testing.T) {
	g := newGateway(t, withHealth("\t\tinterval 20ms\n\t\ttimeout 1s\n\t\tprompt \"are you there?\""))
	events := probeEvents(t, deploymentID{"deepseek-v3.2", "primary"})

	if r := waitFor(t, events, "a probe"); r != probeOK {
		t.Fatalf("first probe: %s", r)
	}
	probes := g.primary.RequestsFor("deepseek-chat")
	if len(probes) == 0 {
		t.Fatal("the mock saw no probe")
	}
	const want = `{"model":"deepseek-chat","messages":[{"role":"user","content":"are you there?"}],"max_tokens":1}`
	if got := string(probes[0].Body); got != want {
		t.Errorf("probe body %s, want %s", got, want)
	}
	if got := probes[0].Header.Get("Authorization"); got != "Bearer "+primaryKey {
		t.Errorf("probe Authorization %q", got)
	}

	// four failed probes: 100 -> 20, disabled
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 503})
	for failed := 0; failed < 4; {
		if waitFor(t, events, "a failing probe") == probeFailed {
			failed++
		}
	}
	if st := statsFor(t, g, "deepseek-v3.2", "primary"); st.State != stateDisabled || st.HealthScore > 30 {
		t.Fatalf("after 4 failed probes: %s %d", st.State, st.HealthScore)
	}
	resp, body := g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "gemini-2.5-flash", "primary", 1)

	// the first successful probe re-enables it
	g.primary.Set("deepseek-chat", mockllm.Behavior{})
	for waitFor(t, events, "a successful probe") != probeOK {
	}
	if st := statsFor(t, g, "deepseek-v3.2", "primary"); st.State != stateUp {
		t.Fatalf("after a successful probe: %s %d", st.State, st.HealthScore)
	}
	resp, body = g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
}

// TestProbeErrorHasNoAddress: a probe's transport failure is described by
// its class in the admin stats, not by Go's text with the local and remote
// addresses in it.
func TestProbeErrorHasNoAddress(t *testing.T) {
	g := newGateway(t, withHealth("\t\tinterval 20ms\n\t\ttimeout 1s"))
	events := probeEvents(t, deploymentID{"deepseek-v3.2", "primary"})
	g.primary.Set("deepseek-chat", mockllm.Behavior{Reset: true})
	for waitFor(t, events, "a failing probe") != probeFailed {
	}
	st := statsFor(t, g, "deepseek-v3.2", "primary")
	if !strings.HasPrefix(st.LastError, "probe: ") || strings.Contains(st.LastError, "127.0.0.1") || strings.Contains(st.LastError, strings.TrimPrefix(g.primaryURL, "http://")) {
		t.Errorf("last error %q; want the failure's class without addresses", st.LastError)
	}
}

// skippingProbes is a gateway whose deepseek-v3.2@primary is probed every
// 20 ms unless it served in the last hour (skip_if_active), once it has
// served and its probe rounds have begun to be skipped; events are its
// probe rounds.
func skippingProbes(t *testing.T) (*gateway, <-chan probeResult) {
	t.Helper()
	g := newGateway(t, withHealth("\t\tinterval 20ms\n\t\tskip_if_active 1h"))
	events := probeEvents(t, deploymentID{"deepseek-v3.2", "primary"})
	waitFor(t, events, "a probe") // before any traffic: probed
	resp, body := g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	// past the probes that may have raced the request: every later round
	// is skipped while it is up
	for r := waitFor(t, events, "a probe round"); r != probeSkipped; r = waitFor(t, events, "a probe round") {
	}
	return g, events
}

func TestProbeSkipIfActive(t *testing.T) {
	g, events := skippingProbes(t)
	before := len(g.primary.RequestsFor("deepseek-chat"))
	for range 3 {
		if r := waitFor(t, events, "a probe round"); r != probeSkipped {
			t.Fatalf("probe round after live traffic: %s, want skipped", r)
		}
	}
	if after := len(g.primary.RequestsFor("deepseek-chat")); after != before {
		t.Errorf("skipped rounds still sent %d probes", after-before)
	}
}

func TestProbesOff(t *testing.T) {
	newGateway(t, withHealth("\t\tinterval off"))
	for _, s := range liveStates() {
		s.mu.Lock()
		running := s.probe != nil
		s.mu.Unlock()
		if running {
			t.Errorf("interval off: a probe loop runs for %s", s.id)
		}
	}
	if n := activeProbers.Load(); n != 0 {
		t.Errorf("%d probe loops running with interval off", n)
	}
}

// TestStateSurvivesReload: scores and cooldowns are kept across config
// loads, probes do not multiply, and a removed deployment is released.
func TestStateSurvivesReload(t *testing.T) {
	g := newGateway(t, withHealth("\t\tinterval 1h"))
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 500, Times: 2})
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 429, RetryAfter: "600", Times: 1})
	g.post(chatBody("simple_qa", false)) // deepseek 500, gemini 429
	g.post(chatBody("simple_qa", false)) // deepseek 500, gemini in cooldown
	want := map[string]int{"deepseek-v3.2": 80, "gemini-2.5-flash": 100}

	deployments := 4
	for i := range 10 { // ten reloads, each a different config
		cfg := strings.Replace(withHealth("\t\tinterval 1h"), "default_route simple_qa", fmt.Sprintf("default_route simple_qa\n\troute extra%d gpt-4.1", i), 1)
		g.reload(cfg)
		if n := activeProbers.Load(); n != int64(deployments) {
			t.Fatalf("after reload %d: %d probe loops, want %d", i+1, n, deployments)
		}
	}
	for model, score := range want {
		if st := statsFor(t, g, model, "primary"); st.HealthScore != score {
			t.Errorf("%s: score %d after reloads, want %d", model, st.HealthScore, score)
		}
	}
	if st := statsFor(t, g, "gemini-2.5-flash", "primary"); st.State != stateCooldown {
		t.Errorf("gemini's cooldown was lost in the reloads: %s", st.State)
	}

	// drop gemini from the config: its state and prober are released
	without := strings.NewReplacer("\tmodel gemini-2.5-flash\n", "", "route simple_qa deepseek-v3.2 gemini-2.5-flash", "route simple_qa deepseek-v3.2").Replace(withHealth("\t\tinterval 1h"))
	g.reload(without)
	if slices.ContainsFunc(liveStates(), func(s *sharedState) bool { return s.id == deploymentID{"gemini-2.5-flash", "primary"} }) {
		t.Error("the removed deployment's state is still held (and probed)")
	}
	if n := activeProbers.Load(); n != int64(deployments-1) {
		t.Errorf("%d probe loops, want %d", n, deployments-1)
	}
}

// TestHeaderKeyChangeStartsAfresh: a provider whose key is a header
// credential (Azure's api-key) is another account when that header
// changes, as it is when api_key changes (README, "Health checks"). A
// reload from one account's key to another's kept the first account's
// state: its 429 cooldown, its last error and its counters, so the new
// account sat out a cooldown it never had; two handlers' accounts shared
// one cooldown the same way.
func TestHeaderKeyChangeStartsAfresh(t *testing.T) {
	router := func(key string) string {
		return `
	provider primary {
		base_url {PRIMARY}/v1
		header api-key ` + key + `
		timeout 2s
	}
	model gemini-2.5-flash
	health_check {
		interval 1h
	}
`
	}
	g := newGateway(t, router("azure-account-a-key-0001"))
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 429, RetryAfter: "600", Times: 1})
	g.post(chatBody("gemini-2.5-flash", false))
	if st := statsFor(t, g, "gemini-2.5-flash", "primary"); st.State != stateCooldown {
		t.Fatalf("after a 429: %s, want cooldown", st.State)
	}
	g.reload(router("azure-account-b-key-0002"))
	if st := statsFor(t, g, "gemini-2.5-flash", "primary"); st.State != stateUp || st.LastError != "" {
		t.Errorf("another account's key kept the old account's state: %s, last error %q", st.State, st.LastError)
	}
	resp, body := g.post(chatBody("gemini-2.5-flash", false))
	expectModel(t, resp, body, "gemini-2.5-flash", "primary", 1)
}

// reload loads another router body in place of the running one.
func (g *gateway) reload(routerBody string) {
	g.t.Helper()
	g.reloadWith(globalOptions, "", routerBody)
	if g.t.Failed() {
		g.t.FailNow()
	}
}

// statsFor reads one deployment from the admin API.
func statsFor(t *testing.T, g *gateway, model, provider string) DeploymentStats {
	t.Helper()
	for _, d := range fetchStats(t).Deployments {
		if d.Model == model && d.Provider == provider {
			return d
		}
	}
	t.Fatalf("no stats for %s@%s", model, provider)
	return DeploymentStats{}
}

func fetchStats(t *testing.T) Stats {
	t.Helper()
	resp, err := http.Get(adminURL + "/llm_router/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stats: %d", resp.StatusCode)
	}
	var s Stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestStatsAPI: the admin endpoint reports what the mock served.
func TestStatsAPI(t *testing.T) {
	g := newGateway(t, withHealth("\t\tinterval off"))
	for range 3 {
		g.post(chatBody("simple_qa", false))
	}
	g.post(chatBody("simple_qa", true))
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 503, Times: 1})
	g.post(chatBody("simple_qa", false))

	st := statsFor(t, g, "deepseek-v3.2", "primary")
	served := g.primary.Served("deepseek-chat")
	// answered 4 (the 503 was failed over to gemini) in 5 attempts
	if st.Requests != 4 || st.Attempts != 5 || st.Errors != 1 || st.ErrorRate != 0.2 || st.ErrorRateHuman != "20%" {
		t.Errorf("requests %d attempts %d errors %d rate %v %q, want 4 5 1 0.2 20%%", st.Requests, st.Attempts, st.Errors, st.ErrorRate, st.ErrorRateHuman)
	}
	if st.Tokens.Input != int64(served.Prompt) || st.Tokens.Output != int64(served.Completion) || served.Requests != 4 {
		t.Errorf("tokens %+v, mock served %+v", st.Tokens, served)
	}
	if st.Latency.Count != 4 || st.Latency.P50Seconds <= 0 || st.Latency.P95Seconds < st.Latency.P50Seconds || st.Latency.P50Human == "" {
		t.Errorf("latency %+v", st.Latency)
	}
	if st.TimeToFirstToken.Count != 1 {
		t.Errorf("time to first token counted %d streams, want 1", st.TimeToFirstToken.Count)
	}
	if st.State != stateUp || st.HealthScore != 90 || st.LastError != "503 Service Unavailable" || st.LastErrorHuman == "" {
		t.Errorf("state %s score %d last error %q %q", st.State, st.HealthScore, st.LastError, st.LastErrorHuman)
	}
	wantCost := (float64(served.Prompt)*0.28 + float64(served.Completion)*0.42) / 1e6 // deepseek-v3.2's built-in input and output prices
	if len(st.Costs) != 1 || math.Abs(st.Costs[0].Amount-wantCost) > 1e-12 || st.Costs[0].Currency != "USD" {
		t.Errorf("costs %+v, want %v USD", st.Costs, wantCost)
	}
	all := fetchStats(t)
	if all.Totals.Requests < st.Requests+1 { // gemini answered the failed-over one
		t.Errorf("totals %+v", all.Totals)
	}
}

// TestFailedConfigChangesNothing: a config that provisions its handler and
// then fails to load (a later handler's verify_key is rejected) leaves the
// running config's probes and labels as they were.
func TestFailedConfigChangesNothing(t *testing.T) {
	g := newGateway(t, withHealth("\t\tinterval 20ms\n\t\tprompt \"first config\""))
	events := probeEvents(t, deploymentID{"deepseek-v3.2", "primary"})
	waitFor(t, events, "a probe")
	loops := activeProbers.Load()

	loadFailingAtVerifyKey(t, globalOptions, g.fill(withHealth("\t\tinterval 5ms\n\t\tprompt \"failed config\"")+"\tcurrency CNY 7\n"))

	// the next probes are the running config's
	for range 3 {
		waitFor(t, events, "a probe after the failed load")
	}
	probes := g.primary.RequestsFor("deepseek-chat")
	for _, p := range probes {
		if !strings.Contains(string(p.Body), "first config") {
			t.Fatalf("a probe with the failed config's settings: %s", p.Body)
		}
	}
	if n := activeProbers.Load(); n != loops {
		t.Errorf("%d probe loops after the failed load, want %d", n, loops)
	}
	st := statsFor(t, g, "deepseek-v3.2", "primary")
	if len(st.Costs) != 1 || st.Costs[0].Currency != "USD" || st.Upstream != "deepseek-chat" {
		t.Errorf("stats labels after the failed load: costs %+v upstream %s", st.Costs, st.Upstream)
	}
	before := scrape(t)
	resp, body := g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	after := scrape(t)
	if d := after.delta(before, sel("caddy_llm_router_cost_total", "model", "deepseek-v3.2", "provider", "primary", "currency", "USD", "client", "")); d <= 0 {
		t.Errorf("the running config's cost is no longer counted in USD (+%v)", d)
	}
}

// TestLastResortSparesCooldown: a disabled deployment that answered its
// last-resort attempt with 429 and a Retry-After is cooling down: the
// provider asked for the pause, and later requests' last resort leave it
// alone until the pause is over.
func TestLastResortSparesCooldown(t *testing.T) {
	g := newGateway(t, withHealth("\t\tinterval off"))
	disableDeepseek(t, g)
	// gemini fails; deepseek, tried as a last resort, asks for a minute
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 500, Times: 1})
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 429, RetryAfter: "60"})
	resp, _ := g.post(chatBody("simple_qa", false))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-LLM-Attempts") != "2" {
		t.Fatalf("status %d after %s attempts, want 503 after 2", resp.StatusCode, resp.Header.Get("X-LLM-Attempts"))
	}
	before := len(g.primary.RequestsFor("deepseek-chat"))
	// gemini fails again within the minute: deepseek is not asked again
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 500, Times: 1})
	resp, body := g.post(chatBody("simple_qa", false))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-LLM-Attempts") != "1" {
		t.Errorf("status %d after %s attempts, want 503 after 1: %s", resp.StatusCode, resp.Header.Get("X-LLM-Attempts"), body)
	}
	if n := len(g.primary.RequestsFor("deepseek-chat")) - before; n != 0 {
		t.Errorf("deepseek, cooling down after a 429, got %d more requests as a last resort", n)
	}
}

// disableDeepseek has seven requests fail on deepseek-v3.2 (500s, each
// failing over) so that its score disables it, the fault then cleared.
func disableDeepseek(t *testing.T, g *gateway) {
	t.Helper()
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 500, Times: 7})
	for range 7 {
		g.post(chatBody("simple_qa", false))
	}
	if st := statsFor(t, g, "deepseek-v3.2", "primary"); st.State != stateDisabled {
		t.Fatalf("deepseek %s after seven 500s, want disabled", st.State)
	}
}

// TestEveryCandidateDisabledIsALastResort: when every candidate of a
// request is disabled, they are all tried before the 503, as the last
// resort is: those attempts were neither counted in
// last_resort_attempts_total nor marked in the 503's message, so that the
// metric read zero in the outage where they are all there is.
func TestEveryCandidateDisabledIsALastResort(t *testing.T) {
	g := newGateway(t, withHealth("\t\tinterval off"))
	disableDeepseek(t, g)
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 500, Times: 7})
	for range 7 {
		g.post(chatBody("gemini-2.5-flash", false))
	}
	if st := statsFor(t, g, "gemini-2.5-flash", "primary"); st.State != stateDisabled {
		t.Fatalf("gemini %s after seven 500s, want disabled", st.State)
	}
	g.primary.Set("deepseek-chat", mockllm.Behavior{Status: 500, Times: 1})
	g.primary.Set("gemini-2.5-flash", mockllm.Behavior{Status: 500, Times: 1})
	before := scrape(t)
	resp, body := g.post(chatBody("simple_qa", false))
	if resp.StatusCode != http.StatusServiceUnavailable || strings.Count(body, "(last resort, disabled)") != 2 {
		t.Errorf("%d %s; want a 503 naming both as last resorts", resp.StatusCode, body)
	}
	after := scrape(t)
	for _, m := range []string{"deepseek-v3.2", "gemini-2.5-flash"} {
		series := `caddy_llm_router_last_resort_attempts_total{model="` + m + `",provider="primary"}`
		if d := after[series] - before[series]; d != 1 {
			t.Errorf("%s +%v, want 1", series, d)
		}
	}
}

// loadFailingAtVerifyKey loads a config whose llm_router /v1/* block is
// router, followed by a handler whose provider rejects its key at
// verify_key: the load must fail there, after router's handler has been
// provisioned, and the running config stay.
func loadFailingAtVerifyKey(t *testing.T, global, router string) {
	t.Helper()
	rejecting := mockllm.New()
	rejecting.SetRequireKey("sk-the-right-key-000000001")
	srv := newMockServer(rejecting)
	cf := global + "\n" + siteAddress + " {\n\troute {\n\t\tllm_router /v1/* {" + router + "\n\t\t}\n" +
		"\t\tllm_router /fail/* {\n\t\t\tprovider p {\n\t\t\t\tbase_url " + srv.URL + "/v1\n\t\t\t\tapi_key sk-a-wrong-key-0000000042\n\t\t\t\tverify_key\n\t\t\t}\n\t\t\tmodel m\n\t\t}\n\t}\n}\n"
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := loadConfig(string(adapted)); err == nil || !strings.Contains(err.Error(), "verify_key") {
		t.Fatalf("the second config loaded, or failed for another reason: %v", err)
	}
}
