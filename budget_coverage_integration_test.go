package llmrouter

import (
	"encoding/json"
	"io"
	"io/fs"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
	"github.com/llmrouter/caddy-llm-router/internal/openai"
)

// spentOf is what the stats say a budget's key spent in its first period.
func spentOf(t *testing.T, name string) float64 {
	t.Helper()
	b := budgetOf(t, name)
	total := 0.0
	for _, k := range b.Periods[0].TopKeys {
		total += k.Spent.Amount
	}
	return total
}

// TestBudgetCoversModelsByName: a budget that matches a route covers its
// deployments, so a client that names the route's model directly is
// downgraded and refused like the route, and a fallback into a covered
// model is charged to the budget.
func TestBudgetCoversModelsByName(t *testing.T) {
	setClock(t, time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC))
	g := newGatewayWith(t, globalOptions, "", budgetRouter+`
	budget reasoning {
		limit 0.03 per hour
		hard 0.05 per day
		match complex_reasoning
		downgrade simple_qa
	}
	budget claude_daily {
		limit 100 per day
		match claude-sonnet-4.5
	}
	budget_sync off
`)
	for range 2 {
		resp, body := g.post(chatBody("gpt-4.1", false))
		expectModel(t, resp, body, "gpt-4.1", "primary", 1)
	}
	if got := spentOf(t, "reasoning"); math.Abs(got-2*costPerAnswer) > 1e-9 {
		t.Fatalf("naming gpt-4.1: reasoning spent %v, want %v", got, 2*costPerAnswer)
	}
	// at the limit: gpt-4.1 by name is downgraded as the route is
	resp, body := g.post(chatBody("gpt-4.1", false))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	if h := resp.Header.Get("X-LLM-Budget"); h != "downgraded (reasoning)" {
		t.Errorf("X-LLM-Budget %q, want the downgrade", h)
	}
	// the downgrade route is not covered: its answer is not charged
	if got := spentOf(t, "reasoning"); math.Abs(got-2*costPerAnswer) > 1e-9 {
		t.Errorf("reasoning spent %v after a downgraded answer, want it unchanged", got)
	}
	// the next hour: a fallback into claude (covered by both budgets) is
	// charged to both
	advanceClock(t, time.Hour)
	g.primary.Set("gpt-4.1", mockllm.Behavior{Status: 503, Times: 1})
	resp, body = g.post(chatBody("complex_reasoning", false))
	expectModel(t, resp, body, "claude-sonnet-4.5", "backup", 2)
	if got := spentOf(t, "claude_daily"); math.Abs(got-costPerAnswer) > 1e-9 {
		t.Errorf("claude_daily spent %v, want the fallback's %v", got, costPerAnswer)
	}
	// 0.051 today: past the hard cap, naming the model is refused as the
	// route is
	resp, body = g.post(chatBody("gpt-4.1", false))
	if resp.StatusCode != http.StatusTooManyRequests || apiErr(t, body).Code != "budget_exceeded" {
		t.Errorf("gpt-4.1 by name past the hard cap: %d %s", resp.StatusCode, body)
	}
	resp, body = g.post(chatBody("claude-sonnet-4.5", false))
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("claude-sonnet-4.5 by name past the hard cap: %d %s", resp.StatusCode, body)
	}
	// what no budget at its cap covers is served
	resp, body = g.post(chatBody("deepseek-v3.2", false))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
}

// TestBudgetConcurrentReservations: 20 requests at once against a limit
// that fits three: admission reserves each request's estimate, so the
// spend overshoots the limit by at most one estimate, for JSON and streams.
func TestBudgetConcurrentReservations(t *testing.T) {
	for _, stream := range []bool{false, true} {
		name := map[bool]string{false: "json", true: "stream"}[stream]
		t.Run(name, func(t *testing.T) {
			g := newGatewayWith(t, globalOptions, "", budgetRouter+`
	budget small_`+name+` {
		limit 0.05 per day
		match complex_reasoning
	}
	budget_sync off
`)
			// every request is still in flight when the last is admitted
			g.primary.Set("gpt-4.1", mockllm.Behavior{Latency: 1e9})
			body := `{"model":"gpt-4.1","messages":[{"role":"user","content":"Where is my order?"}],"max_tokens":10` +
				map[bool]string{false: "}", true: `,"stream":true}`}[stream]
			var rb openai.Request
			if err := rb.Parse([]byte(body), openai.Chat); err != nil {
				t.Fatal(err)
			}
			estimate := float64(rb.InputTokens()+10) * 1000 / 1e6
			var wg sync.WaitGroup
			var mu sync.Mutex
			codes := map[int]int{}
			for range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, _, err := g.postRaw("/v1/chat/completions", body)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					codes[resp.StatusCode]++
					mu.Unlock()
				}()
			}
			wg.Wait()
			spent := spentOf(t, "small_"+name)
			if spent > 0.05+estimate+1e-9 || codes[200] < 2 || codes[200]+codes[429] != 20 {
				t.Errorf("%v answered; spent %v against a limit of 0.05 (one estimate: %v)", codes, spent, estimate)
			}
			if b := budgetOf(t, "small_"+name); b.Periods[0].Reserved.Amount != 0 {
				t.Errorf("%v still reserved after every request ended", b.Periods[0].Reserved.Amount)
			}
		})
	}
}

// TestBudgetChargesWhatProvidersBill: an attempt that reached generation
// but failed over (a 200 whose answer is cut short: generated, and billed,
// whole), and an answer without usage, are charged as estimated, from the
// request's text (and for the cut answer its output cap, as any answer cut
// off after its headers): an image part counts its fixed estimate, not its
// bytes.
func TestBudgetChargesWhatProvidersBill(t *testing.T) {
	// a 2 MB request under -race on a busy machine: more than the usual 2 s
	g := newGatewayWith(t, globalOptions, "", strings.Replace(budgetRouter, "timeout 2s", "timeout 20s", 1)+`
	budget everything {
		limit 1000 per day
	}
	budget_sync off
`)
	body := chatBody("simple_qa", false)
	var rb openai.Request
	if err := rb.Parse([]byte(body), openai.Chat); err != nil {
		t.Fatal(err)
	}
	// deepseek answers 200 with an answer cut short (not JSON): failed
	// over to gemini, and charged as estimated: its input, and the output
	// cap it was sent with (reserve_output, 1,024)
	g.primary.Set("deepseek-chat", mockllm.Behavior{Malformed: true, Times: 1})
	resp, out := g.post(body)
	expectModel(t, resp, out, "gemini-2.5-flash", "primary", 2)
	ds := statsFor(t, g, "deepseek-v3.2", "primary")
	if ds.Tokens.EstimatedInput != rb.InputTokens() || ds.Tokens.Input != rb.InputTokens() || ds.Tokens.EstimatedOutput != defaultReserveOutput {
		t.Errorf("the failed attempt's tokens %+v, want %d estimated input and %d output", ds.Tokens, rb.InputTokens(), defaultReserveOutput)
	}
	wantSpend := float64(rb.InputTokens()+defaultReserveOutput)*1000/1e6 + costPerAnswer
	if got := spentOf(t, "everything"); math.Abs(got-wantSpend) > 1e-9 {
		t.Errorf("spent %v, want %v (the estimate and gemini's answer)", got, wantSpend)
	}

	// an answer without usage, to a request with a 2 MB image
	noUsage := `{"id":"x","object":"chat.completion","created":1,"model":"deepseek-chat","choices":[{"index":0,"message":{"role":"assistant","content":"A red shoe."},"finish_reason":"stop"}]}`
	g.primary.Set("deepseek-chat", mockllm.Behavior{Body: noUsage})
	image := `{"model":"deepseek-v3.2","messages":[{"role":"user","content":[{"type":"text","text":"What is this?"},` +
		`{"type":"image_url","image_url":{"url":"data:image/png;base64,` + strings.Repeat("iVBORw0K", 256<<10) + `"}}]}]}`
	if err := rb.Parse([]byte(image), openai.Chat); err != nil {
		t.Fatal(err)
	}
	before := statsFor(t, g, "deepseek-v3.2", "primary").Tokens
	resp, out = g.post(image)
	expectModel(t, resp, out, "deepseek-v3.2", "primary", 1)
	after := statsFor(t, g, "deepseek-v3.2", "primary").Tokens
	in, outTok := after.EstimatedInput-before.EstimatedInput, after.EstimatedOutput-before.EstimatedOutput
	if in != rb.InputTokens() || in > 1000 || outTok != 3 {
		t.Errorf("estimated %d input and %d output tokens for a 2 MB image and %q, want %d (text and one image part) and 3", in, outTok, "A red shoe.", rb.InputTokens())
	}
}

// TestBudgetKeySecrets: a budget keyed by the client's Authorization keeps
// no key value in clear: not in storage (paths or files), the stats, the
// metrics or the logs; a key that resolves to nothing is counted under
// (unset).
func TestBudgetKeySecrets(t *testing.T) {
	const secret = "sk-client-secret-0123456789abcdef"
	dir := t.TempDir()
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	global := strings.Replace(globalOptions, "grace_period 1ns", "grace_period 1ns\n\tstorage file_system "+dir, 1)
	global = strings.Replace(global, "log {\n\t\tlevel WARN\n\t}", "log {\n\t\toutput file "+logFile+"\n\t\tlevel DEBUG\n\t}", 1)
	budget := `
	budget per_key {
		limit 0.02 per day
		key {http.request.header.Authorization}
		warn_at 10
	}
	budget_sync 1h
`
	g := newGatewayWith(t, global, "", budgetRouter+budget)
	for range 2 {
		resp, body := g.post(chatBody("simple_qa", false), "Authorization", "Bearer "+secret)
		expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	}
	resp, body := g.post(chatBody("simple_qa", false))
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	stats := fetchStats(t)
	b := budgetOf(t, "per_key")
	keys := map[string]float64{}
	for _, k := range b.Periods[0].TopKeys {
		keys[k.Key] = k.Spent.Amount
	}
	if len(keys) != 2 || keys[unsetKey] == 0 {
		t.Errorf("keys %v, want a fingerprint and (unset)", keys)
	}
	statsJSON, _ := json.Marshal(stats)
	metricsText := scrapeText(t)
	// unload: the ledger's last sync writes its files
	if err := loadConfig(emptyConfig); err != nil {
		t.Fatal(err)
	}
	var stored []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(p)
			stored = append(stored, p+"\n"+string(b))
		}
		return nil
	})
	logs, _ := os.ReadFile(logFile)
	if !strings.Contains(strings.Join(stored, "\n"), "per_key") {
		t.Fatalf("the budget's files were not written: %v", stored)
	}
	for what, text := range map[string]string{"storage": strings.Join(stored, "\n"), "stats": string(statsJSON),
		"metrics": metricsText, "logs": string(logs)} {
		if strings.Contains(text, secret) || strings.Contains(text, "client-secret") {
			t.Errorf("the key value is in the %s", what)
		}
	}
	if !strings.Contains(string(logs), "budget nearly spent") || !strings.Contains(string(logs), "resolved to nothing") {
		t.Errorf("the logs lack the warn_at and (unset) warnings:\n%s", logs)
	}
}

// scrapeText is Caddy's admin /metrics as text.
func scrapeText(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBudgetSyncSwitch: turning budget_sync on over a budget counted
// locally writes what it counted to storage at once, and turning it off
// again keeps the spend known.
func TestBudgetSyncSwitch(t *testing.T) {
	global, dir := withStorage(t, globalOptions)
	budget := budgetWithSync("switch_daily", "limit 1000 per day")
	g := newGatewayWith(t, global, "", budgetRouter+budget("off"))
	load := func(sync string) {
		g.reloadWith(global, "", budgetRouter+budget(sync))
	}
	for range 2 {
		resp, body := g.post(chatBody("simple_qa", false))
		expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	}
	load("1h")
	if got := spentOf(t, "switch_daily"); math.Abs(got-2*costPerAnswer) > 1e-9 {
		t.Errorf("after turning sync on: %v spent, want %v", got, 2*costPerAnswer)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "llm_router", "budgets", "switch_daily", "day-*", "*.json"))
	if len(files) != 1 {
		t.Fatalf("ledger files %v, want this instance's, written when sync was turned on", files)
	}
	b, _ := os.ReadFile(files[0])
	var f instanceFile
	if err := json.Unmarshal(b, &f); err != nil || math.Abs(f.Spend[""]-2*costPerAnswer) > 1e-9 {
		t.Errorf("stored %s (%v), want the local spend %v", b, err, 2*costPerAnswer)
	}
	load("off")
	if got := spentOf(t, "switch_daily"); math.Abs(got-2*costPerAnswer) > 1e-9 {
		t.Errorf("after turning sync off: %v spent, want %v", got, 2*costPerAnswer)
	}
}

// TestBudgetSyncSwitchKeyed: turning budget_sync on over a budget whose
// key values are hashed keeps each key's spend: the keys counted locally
// are the keys the synced config counts under, so a client at its limit
// stays at it across the reload.
func TestBudgetSyncSwitchKeyed(t *testing.T) {
	global, _ := withStorage(t, globalOptions)
	budget := budgetWithSync("switch_keyed", "limit 0.03 per day", "key {llm_team}")
	g := newGatewayWith(t, global, teamsSite, budgetRouter+budget("off"))
	teamA := []string{"Authorization", "Bearer team-a-key"}
	for range 2 {
		resp, body := g.post(chatBody("simple_qa", false), teamA...)
		expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	}
	if resp, out := g.post(chatBody("simple_qa", false), teamA...); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("at the limit before the reload: %d %s", resp.StatusCode, out)
	}
	g.reloadWith(global, teamsSite, budgetRouter+budget("1h"))
	if got := spentOf(t, "switch_keyed"); math.Abs(got-2*costPerAnswer) > 1e-9 {
		t.Errorf("after turning sync on: %v spent, want %v", got, 2*costPerAnswer)
	}
	if resp, out := g.post(chatBody("simple_qa", false), teamA...); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("after turning sync on: %d %s; team a escaped its spent budget", resp.StatusCode, out)
	}
}

// TestErrorAnswerWithUsageIsCharged: a 200 whose body is an error that
// reports usage (a Responses API response with status "failed" and its
// usage, a chat error carrying what was generated before it) is not an
// answer, and fails over; but the provider reported what it billed, and
// that is charged, not an estimate of the input alone.
func TestErrorAnswerWithUsageIsCharged(t *testing.T) {
	g := newGatewayWith(t, globalOptions, "", budgetRouter+`
	budget everything {
		limit 1000 per day
	}
	budget_sync off
`)
	g.primary.Set("deepseek-chat", mockllm.Behavior{Times: 1,
		Body: `{"error":{"message":"overloaded","type":"server_error"},"usage":{"prompt_tokens":900,"completion_tokens":30000,"total_tokens":30900}}`})
	resp, out := g.post(chatBody("simple_qa", false))
	expectModel(t, resp, out, "gemini-2.5-flash", "primary", 2)
	ds := statsFor(t, g, "deepseek-v3.2", "primary")
	if ds.Tokens.Input != 900 || ds.Tokens.Output != 30000 {
		t.Errorf("the failed attempt's tokens %+v, want the 900 input and 30,000 output it reported", ds.Tokens)
	}

	// a stream whose first event is such an error
	g.primary.Set("deepseek-chat", mockllm.Behavior{Times: 1, ContentType: "text/event-stream",
		Body: `data: {"error":{"message":"overloaded"},"usage":{"prompt_tokens":700,"completion_tokens":20000}}` + "\n\n"})
	resp, out = g.post(chatBody("simple_qa", true))
	if resp.StatusCode != 200 {
		t.Fatalf("stream: %d %s", resp.StatusCode, out)
	}
	after := statsFor(t, g, "deepseek-v3.2", "primary")
	if in, o := after.Tokens.Input-ds.Tokens.Input, after.Tokens.Output-ds.Tokens.Output; in != 700 || o != 20000 {
		t.Errorf("the failed stream's tokens: %d input, %d output, want the 700 and 20,000 it reported", in, o)
	}
}

// budgetWithSync gives, for a budget_sync interval, the router lines of
// budget name (lines, one subdirective each) and of that budget_sync:
// tests reload the same budget with one interval, then another.
func budgetWithSync(name string, lines ...string) func(sync string) string {
	return func(sync string) string {
		return "\n\tbudget " + name + " {\n\t\t" + strings.Join(lines, "\n\t\t") + "\n\t}\n\tbudget_sync " + sync + "\n"
	}
}

// TestEstimateCountsEveryInput: the input a provider bills includes a
// structured-output schema (chat's response_format, the Responses API's
// text.format), a stored prompt's variables and a completions suffix, as
// it includes tool definitions.
// A request that puts its bulk there must not be reserved for, or charged
// when its answer has no usage, as if it were a few words.
func TestEstimateCountsEveryInput(t *testing.T) {
	g := newGatewayWith(t, globalOptions, "", budgetRouter+`
	budget everything {
		limit 1000 per day
	}
	budget_sync off
`)
	schema := `{"type":"object","properties":{"a":{"type":"string","description":"` + strings.Repeat("word ", 8000) + `"}}}`
	cases := []struct {
		name, path, body, answer string
	}{
		{"chat response_format", "/v1/chat/completions",
			`{"model":"deepseek-v3.2","messages":[{"role":"user","content":"Hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":` + schema + `}}}`,
			`{"id":"x","object":"chat.completion","created":1,"model":"deepseek-chat","choices":[{"index":0,"message":{"role":"assistant","content":"{}"},"finish_reason":"stop"}]}`},
		{"responses text.format", "/v1/responses",
			`{"model":"deepseek-v3.2","input":"Hi","text":{"format":{"type":"json_schema","name":"x","schema":` + schema + `}}}`,
			`{"id":"resp_x","object":"response","status":"completed","model":"deepseek-chat","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"{}"}]}]}`},
		{"responses prompt variables", "/v1/responses",
			`{"model":"deepseek-v3.2","prompt":{"id":"pmpt_1","variables":{"document":"` + strings.Repeat("word ", 8000) + `"}}}`,
			`{"id":"resp_y","object":"response","status":"completed","model":"deepseek-chat","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"ok"}]}]}`},
		{"completions suffix", "/v1/completions",
			`{"model":"deepseek-v3.2","prompt":"Hi","suffix":"` + strings.Repeat("word ", 8000) + `"}`,
			`{"id":"x","object":"text_completion","created":1,"model":"deepseek-chat","choices":[{"index":0,"text":"ok","finish_reason":"stop"}]}`},
	}
	for _, tc := range cases {
		g.primary.Set("deepseek-chat", mockllm.Behavior{Body: tc.answer})
		before := statsFor(t, g, "deepseek-v3.2", "primary").Tokens
		resp, out := g.postPath(tc.path, tc.body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", tc.name, resp.StatusCode, out)
		}
		after := statsFor(t, g, "deepseek-v3.2", "primary").Tokens
		// 40,000 characters of text: about 10,000 tokens
		if in := after.EstimatedInput - before.EstimatedInput; in < 8000 {
			t.Errorf("%s: the answer without usage was charged %d estimated input tokens, want about 10,000", tc.name, in)
		}
	}
}

// spentBasicAuthGateway is a gateway behind Caddy's basic_auth (user alice,
// password pw) whose budget is keyed by the client's Authorization, with
// alice's budget spent (0.017 an answer against 0.02: the second answer
// took her past it); it returns alice's credential, base64.
func spentBasicAuthGateway(t *testing.T, key string) (*gateway, string) {
	t.Helper()
	const alice = "YWxpY2U6cHc=" // alice:pw
	g := newGatewayWith(t, globalOptions, "\tbasic_auth {\n\t\talice $2a$04$WlD5pY1rSkmAUX1O5c6fteDCdSY7JRy/h3WRi7o35dIZvXQPpLfZ.\n\t}", budgetRouter+`
	budget per_key {
		limit 0.02 per day
		key `+key+`
	}
	budget_sync off
`)
	if resp, _ := g.post(chatBody("simple_qa", false), "Authorization", "Basic YWxpY2U6eHg="); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a wrong password got %d, want basic_auth's 401", resp.StatusCode) // alice:xx
	}
	for i := range 2 {
		resp, body := g.post(chatBody("simple_qa", false), "Authorization", "Basic "+alice)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("answer %d: %d %s", i+1, resp.StatusCode, body)
		}
	}
	return g, alice
}

// TestBudgetKeyCredentialSchemeCase: a budget keyed by the client's
// Authorization counts one credential as one spender, however its scheme
// is written: Caddy's basic_auth (Go's Request.BasicAuth) takes "Basic",
// "basic" and "BASIC" alike (an auth scheme is case-insensitive, RFC 9110
// §11.1), so each spelling must not get a budget of its own.
func TestBudgetKeyCredentialSchemeCase(t *testing.T) {
	// the credential alone, or in a key of several placeholders (a
	// project's budget per client key)
	for _, key := range []string{"{http.request.header.Authorization}", "{http.request.header.X-Project}/{http.request.header.Authorization}"} {
		t.Run(key, func(t *testing.T) {
			g, alice := spentBasicAuthGateway(t, key)
			for _, scheme := range []string{"Basic", "basic", "BASIC", "bAsIc"} {
				if resp, body := g.post(chatBody("simple_qa", false), "Authorization", scheme+" "+alice); resp.StatusCode != http.StatusTooManyRequests {
					t.Errorf("alice as %q past her budget: %d %s, want 429", scheme+" …", resp.StatusCode, truncate(body, 120))
				}
			}
		})
	}
}

// TestBudgetKeyBasicCredentialSpelling: a Basic credential is one spender
// however its base64 is spelled: Go's decoder (basic_auth's) ignores the
// unused low bits of the last character before the padding, so
// "YWxpY2U6cHc=", "…cHd=", "…cHe=" and "…cHf=" are all alice:pw.
func TestBudgetKeyBasicCredentialSpelling(t *testing.T) {
	g, alice := spentBasicAuthGateway(t, "{http.request.header.Authorization}")
	for _, c := range []string{"c", "d", "e", "f"} {
		cred := strings.TrimSuffix(alice, "c=") + c + "="
		if resp, body := g.post(chatBody("simple_qa", false), "Authorization", "Basic "+cred); resp.StatusCode != http.StatusTooManyRequests {
			t.Errorf("alice as %q past her budget: %d %s, want 429", cred, resp.StatusCode, truncate(body, 120))
		}
	}
}

// TestBudgetKeyQueryGivenTwice: a query parameter the budget key reads,
// given twice, is refused as a header is: Caddy's placeholder joins the
// values ("sk-alice…,x1") while a check in front (the query matcher, or
// Go's URL.Query().Get) passes on one of them, so each junk second value
// would be a spender with a budget of its own.
func TestBudgetKeyQueryGivenTwice(t *testing.T) {
	const alice = "sk-alice-0123456789"
	g := newGatewayWith(t, globalOptions, "\t@stranger not query key="+alice+"\n\trespond @stranger 401", budgetRouter+`
	budget per_key {
		limit 0.02 per day
		key {http.request.uri.query.key}
	}
	budget_sync off
`)
	if resp, _ := g.postPath("/v1/chat/completions?key=sk-mallory", chatBody("simple_qa", false)); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a wrong key got %d, want 401", resp.StatusCode)
	}
	for i := range 2 {
		if resp, body := g.postPath("/v1/chat/completions?key="+alice, chatBody("simple_qa", false)); resp.StatusCode != http.StatusOK {
			t.Fatalf("answer %d: %d %s", i+1, resp.StatusCode, body)
		}
	}
	for _, junk := range []string{"x1", "x2"} {
		resp, body := g.postPath("/v1/chat/completions?key="+alice+"&key="+junk, chatBody("simple_qa", false))
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `"param":null`) || !strings.Contains(body, "'key'") {
			t.Errorf("alice past her budget, with a second key %q: %d %s, want an OpenAI-style 400 naming the parameter", junk, resp.StatusCode, truncate(body, 200))
		}
	}
}

// TestBudgetKeyHeaderGivenTwice: a header the budget key reads, sent twice,
// is refused: Caddy's placeholder joins the values ("Basic …,junk") while
// the auth in front reads the first (basic_auth), so each junk second
// value would be a spender with a budget of its own.
func TestBudgetKeyHeaderGivenTwice(t *testing.T) {
	g, alice := spentBasicAuthGateway(t, "{http.request.header.Authorization}")
	for _, junk := range []string{"x1", "x2", "Basic " + alice} {
		resp, body := g.post(chatBody("simple_qa", false), "Authorization", "Basic "+alice, "Authorization", junk)
		if resp.StatusCode == http.StatusOK {
			t.Errorf("alice past her budget, with a second Authorization %q: 200 %s", junk, truncate(body, 120))
		}
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `"param":null`) || !strings.Contains(body, "Authorization") {
			t.Errorf("second Authorization %q: %d %s, want an OpenAI-style 400 naming the header", junk, resp.StatusCode, truncate(body, 200))
		}
	}
}

// TestBudgetKeyCookieGivenTwice: a cookie the budget key reads is found by
// Caddy's placeholder in any case of its name, the first one, while an
// auth server in front (Go's Request.Cookie, as most read it) takes the
// first of the exact name: "SESSION=junk; session=<alice's>" passed as
// alice, and each junk value was a spender with a budget of its own.
// A request with two cookies of that name, in any case, is refused as a
// header given twice is.
func TestBudgetKeyCookieGivenTwice(t *testing.T) {
	const alice = "alice-session-0123456789"
	auth := newMockServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := r.Cookie("session"); err != nil || c.Value != alice {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	g := newGatewayWith(t, globalOptions, "\tforward_auth "+auth.URL+" {\n\t\turi /check\n\t}", budgetRouter+`
	budget per_session {
		limit 0.02 per day
		key {http.request.cookie.session}
	}
	budget_sync off
`)
	if resp, _ := g.post(chatBody("simple_qa", false), "Cookie", "session=mallory"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a wrong session got %d, want 401", resp.StatusCode)
	}
	for i := range 2 {
		if resp, body := g.post(chatBody("simple_qa", false), "Cookie", "session="+alice); resp.StatusCode != http.StatusOK {
			t.Fatalf("answer %d: %d %s", i+1, resp.StatusCode, body)
		}
	}
	if resp, body := g.post(chatBody("simple_qa", false), "Cookie", "session="+alice); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("alice past her budget: %d %s, want 429", resp.StatusCode, truncate(body, 120))
	}
	for _, cookie := range []string{"SESSION=x1; session=" + alice, "Session=x2; session=" + alice, "session=" + alice + "; session=x3"} {
		resp, body := g.post(chatBody("simple_qa", false), "Cookie", cookie)
		if resp.StatusCode == http.StatusOK {
			t.Errorf("alice past her budget, with cookies %q: 200 %s", cookie, truncate(body, 120))
		}
		if resp.StatusCode == http.StatusUnauthorized {
			continue // the auth in front refused it: no second value reached the key
		}
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `"param":null`) || !strings.Contains(body, "'session'") {
			t.Errorf("cookies %q: %d %s, want an OpenAI-style 400 naming the cookie", cookie, resp.StatusCode, truncate(body, 200))
		}
	}
}

// TestFailedLoadStartsNoSync: a config that turns budget_sync on and then
// fails to load (a later handler's verify_key is rejected) leaves the
// running config's budget local only, as it was. The failed config's
// budget started the sync on the ledger both share, and the running config
// went on syncing with storage, which it never asked for. A reload that
// turns the sync on and loads still starts it.
func TestFailedLoadStartsNoSync(t *testing.T) {
	global, _ := withStorage(t, globalOptions)
	budget := budgetWithSync("failed_sync_daily", "limit 1000 per day")
	g := newGatewayWith(t, global, "", budgetRouter+budget("off"))
	loadFailingAtVerifyKey(t, global, g.fill(budgetRouter+budget("1h")))
	if b := budgetOf(t, "failed_sync_daily"); b.Sync != "local only" {
		t.Errorf("after a failed load that turned the sync on: sync %q, want local only", b.Sync)
	}
	g.reloadWith(global, "", budgetRouter+budget("1h"))
	if b := budgetOf(t, "failed_sync_daily"); b.Sync != "every 1h0m0s" {
		t.Errorf("after a reload that turned the sync on: sync %q", b.Sync)
	}
}
