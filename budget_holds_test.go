package llmrouter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// These tests attack a budget as a client with a valid key would: through
// a period's turn, concurrency, requests without an output limit, hedges
// and downgrades, each must stay within its limit plus about one request.

// heldUpstream answers chat completions as a provider does, generating
// want output tokens or the request's limit if smaller, each answer held
// until release is closed; it records the limits it was sent.
type heldUpstream struct {
	arrived chan struct{}
	release chan struct{}
	prompt  int
	want    int

	mu     sync.Mutex
	limits []map[string]any // each request's output limit members, as sent
}

func newHeldUpstream(prompt, want int) *heldUpstream {
	return &heldUpstream{arrived: make(chan struct{}, 100), release: make(chan struct{}), prompt: prompt, want: want}
}

func (h *heldUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	var body map[string]any
	_ = json.Unmarshal(raw, &body)
	sent := map[string]any{}
	out := h.want
	for _, f := range []string{"max_tokens", "max_completion_tokens"} {
		if v, ok := body[f]; ok {
			sent[f] = v
			if n, ok := v.(float64); ok && int(n) < out {
				out = int(n)
			}
		}
	}
	h.mu.Lock()
	h.limits = append(h.limits, sent)
	h.mu.Unlock()
	if out == h.want && h.want > 0 && len(sent) > 0 && sent["max_tokens"] == float64(1<<53) {
		// past any model's limit: refused at once, as OpenAI does
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":{"message":"max_tokens is too large","type":"invalid_request_error","param":"max_tokens","code":"invalid_value"}}`)
		return
	}
	h.arrived <- struct{}{}
	select {
	case <-h.release:
	case <-r.Context().Done():
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`,
		h.prompt, out, h.prompt+out)
}

// spentIn is what key "" of the router's budget i has spent (not
// reserved) in period p's current window.
func spentIn(r *Router, i int, p period) float64 {
	l := r.budgets[i].ledger
	id := l.window(p, now()).id
	l.mu.Lock()
	defer l.mu.Unlock()
	ks, ok := l.keys.Peek("")
	if !ok || ks.periods[p].id != id {
		return 0
	}
	return ks.periods[p].total()
}

// heldRouter is a router with one deployment on up (1,000 a million
// tokens, in and out) and budget b, kept in memory.
func heldRouter(t *testing.T, up *heldUpstream, b *Budget) *Router {
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	return benchRouter(t, srv.URL, func(r *Router) {
		r.Models = []*Model{{Name: "deepseek-v3.2", Upstream: "deepseek-chat", Price: &Price{Input: 1000}}}
		r.Routes = map[string][]string{"simple_qa": {"deepseek-v3.2"}}
		r.Providers[0].Timeout = caddy.Duration(time.Minute)
		r.Budgets = []*Budget{b}
		r.BudgetSync = -1
	})
}

// admitSome sends n requests at once and returns how many reached the
// provider (admitted; they are held there) once every other one was
// answered (refused), and a channel of all their status codes.
func admitSome(t *testing.T, r *Router, up *heldUpstream, body string, n int) (int, chan int) {
	t.Helper()
	return admitSomeAt(t, r, up, "/v1/chat/completions", body, n)
}

// admitSomeAt is admitSome for the endpoint at path.
func admitSomeAt(t *testing.T, r *Router, up *heldUpstream, path, body string, n int) (int, chan int) {
	t.Helper()
	return admitSomeWith(t, up, n, func() int { return serveOnceAt(r, path, body).Code })
}

// admitSomeWith is admitSome for n requests each sent by serve, which
// returns its status code.
func admitSomeWith(t *testing.T, up *heldUpstream, n int, serve func() int) (int, chan int) {
	t.Helper()
	codes := make(chan int, n)
	for range n {
		go func() { codes <- serve() }()
	}
	admitted, refused := 0, 0
	var early []int
	for admitted+refused < n {
		select {
		case <-up.arrived:
			admitted++
		case c := <-codes:
			early = append(early, c)
			refused++
		case <-time.After(10 * time.Second):
			t.Fatalf("admitted %d, answered %d of %d", admitted, refused, n)
		}
	}
	for _, c := range early {
		if c != http.StatusTooManyRequests {
			t.Fatalf("a request ended with %d before any was released", c)
		}
	}
	return admitted, codes
}

// waitCodes waits for the n answers of requests released (admitSome).
func waitCodes(codes chan int, n int) {
	for range n {
		<-codes
	}
}

// TestReservationsOutliveWindowTurn: requests admitted just before an hour
// ends, still in flight when the next begins, are charged in the new hour
// (their answers come then); their reservations count there too, so the
// new hour does not admit a full limit's worth beside them.
func TestReservationsOutliveWindowTurn(t *testing.T) {
	setClock(t, time.Date(2026, 11, 28, 10, 59, 30, 0, time.UTC))
	up := newHeldUpstream(10, 100)
	r := heldRouter(t, up, &Budget{Name: "rollover", Limits: []BudgetLimit{{Amount: 0.3, Period: "hour"}}})
	// reservation: (estimated input + 100) × 1000 / 1M ≈ 0.105; cost 0.11
	body := `{"model":"simple_qa","max_tokens":100,"messages":[{"role":"user","content":"Hi"}]}`
	a1, codes1 := admitSome(t, r, up, body, 4)
	if a1 != 3 {
		t.Fatalf("hour 10: %d of 4 admitted, want 3 (the limit fits three reservations)", a1)
	}
	if got := r.budgets[0].ledger.reserved("", periodHour); got < 0.3 {
		t.Fatalf("reserved %.3f for the three in flight", got)
	}
	advanceClock(t, time.Minute) // 11:00:30, the three still in flight
	a2, codes2 := admitSome(t, r, up, body, 3)
	close(up.release)
	waitCodes(codes1, a1)
	waitCodes(codes2, a2)
	if a2 != 0 {
		t.Errorf("hour 11 admitted %d requests beside the 3 still reserved, want none", a2)
	}
	if spent := spentIn(r, 0, periodHour); spent > 0.3+0.11+1e-9 {
		t.Errorf("hour 11 spent %.3f, past the limit 0.3 by more than one request (0.11)", spent)
	}
	if got := r.budgets[0].ledger.reserved("", periodHour); got > 1e-9 {
		t.Errorf("%g still reserved after every request ended", got)
	}
}

// TestOutputCapBoundsBurst: requests without an output limit are sent
// with their reservation's output as their limit, so a burst of them asking
// for long answers costs what admission reserved, not what the model could
// write.
func TestOutputCapBoundsBurst(t *testing.T) {
	up := newHeldUpstream(10, 5000)
	r := heldRouter(t, up, &Budget{Name: "burst", Limits: []BudgetLimit{{Amount: 0.3, Period: "day"}}, ReserveOutput: 100})
	body := `{"model":"simple_qa","messages":[{"role":"user","content":"Write a very long story."}]}`
	admitted, codes := admitSome(t, r, up, body, 10)
	close(up.release)
	waitCodes(codes, admitted)
	if spent := spentIn(r, 0, periodDay); spent > 0.3+0.11+1e-9 {
		t.Errorf("spent %.3f against a limit of 0.3: %d answers admitted on reservations of about 0.11 each", spent, admitted)
	}
	for _, sent := range up.limits {
		if len(sent) != 1 || sent["max_completion_tokens"] != float64(100) {
			t.Errorf("sent with output limits %v, want max_completion_tokens 100 alone", sent)
		}
	}
}

// TestUnseenContextReserved: a request that makes the provider read input
// the router cannot size (context the provider stores: a response this
// instance did not relay, a conversation, stored items, a stored prompt;
// a document) reserves context_reserve tokens for it, not the few its own
// text shows: ten at once against a limit that two such contexts pass are
// two (admission admits while under the limit), not ten. A request
// without such input reserves its text alone.
func TestUnseenContextReserved(t *testing.T) {
	// at 1,000 a million input tokens, the default reserve of 128,000
	// tokens is 128; each request's own text about 0.02
	const limit = 200
	for _, tc := range []struct {
		name, body string
		most       int
	}{
		{"previous_response_id", `{"model":"simple_qa","input":"And?","previous_response_id":"resp_made_elsewhere_0123456789"}`, 2},
		{"conversation", `{"model":"simple_qa","input":"And?","conversation":"conv_ID"}`, 2},
		{"conversation object", `{"model":"simple_qa","input":"And?","conversation":{"id":"conv_ID"}}`, 2},
		{"item_reference", `{"model":"simple_qa","input":[{"type":"item_reference","id":"msg_0123456789"},{"role":"user","content":"And?"}]}`, 2},
		{"item by id alone", `{"model":"simple_qa","input":[{"id":"msg_0123456789"},{"role":"user","content":"And?"}]}`, 2},
		{"escaped item_reference", `{"model":"simple_qa","input":[{"type":"item_\u0072eference","id":"msg_0123456789"}]}`, 2},
		{"stored prompt", `{"model":"simple_qa","prompt":{"id":"pmpt_0123456789","version":"2"},"input":"And?"}`, 2},
		{"no stored context", `{"model":"simple_qa","input":[{"type":"message","role":"user","content":"And?"}]}`, 10},
		{"tool output document", `{"model":"simple_qa","input":[{"type":"function_call_output","call_id":"call_1","output":[{"type":"input_file","file_id":"file-0123456789"}]}]}`, 2},
		{"chat document", `{"model":"simple_qa","messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-0123456789"}},{"type":"text","text":"Sum it up."}]}]}`, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newHeldUpstream(10, 10)
			r := heldRouter(t, up, &Budget{Name: "continuations", Limits: []BudgetLimit{{Amount: limit, Period: "day"}}, ReserveOutput: 10})
			path := "/v1/responses"
			if strings.Contains(tc.body, `"messages"`) {
				path = "/v1/chat/completions"
			}
			// a conversation the router answered in is remembered, with
			// its context: each run's is new
			body := strings.Replace(tc.body, "conv_ID", fmt.Sprintf("conv_%016x", time.Now().UnixNano()), 1)
			admitted, codes := admitSomeAt(t, r, up, path, body, 10)
			close(up.release)
			waitCodes(codes, admitted)
			if tc.most == 10 && admitted != 10 || admitted > tc.most {
				t.Errorf("%d of 10 admitted against a limit of %d, want %d", admitted, limit, tc.most)
			}
		})
	}
}

// TestOutputCapBody: what output limit each request goes upstream with.
func TestOutputCapBody(t *testing.T) {
	mock := mockllm.New()
	srv := httptest.NewServer(mock)
	defer srv.Close()
	mock.SetDefault(mockllm.Behavior{Chunks: 500})
	router := func(field string, budgets ...*Budget) *Router {
		return benchRouter(t, srv.URL, func(r *Router) {
			price := &Price{Input: 1}
			r.Providers[0].OutputLimitField = field
			r.Models = []*Model{{Name: "deepseek-v3.2", Upstream: "deepseek-chat", Price: price}, {Name: "gemini-2.5-flash", Price: price}}
			r.Budgets = budgets
			r.BudgetSync = -1
		})
	}
	day := []BudgetLimit{{Amount: 1000, Period: "day"}}
	covered := &Budget{Name: "cap_covered", Limits: day, ReserveOutput: 40, Match: []string{"simple_qa"}}
	wider := &Budget{Name: "cap_wider", Limits: day, ReserveOutput: 30, Match: []string{"gemini-2.5-flash"}}
	uncapped := &Budget{Name: "cap_off", Limits: day, ReserveOutput: 20, NoOutputCap: true}
	for _, tc := range []struct {
		name   string
		r      *Router
		body   string
		want   string // the output limit members the provider got, as JSON
		tokens int    // the answer's output tokens
	}{
		{"no limit: the reservation's", router("", covered), `{"model":"simple_qa","messages":[{"role":"user","content":"hi"}]}`, `{"max_completion_tokens":40}`, 40},
		{"max_tokens for a provider that reads it", router("max_tokens", covered), `{"model":"simple_qa","messages":[{"role":"user","content":"hi"}]}`, `{"max_tokens":40}`, 40},
		{"the client's own limit", router("", covered), `{"model":"simple_qa","max_tokens":7,"messages":[{"role":"user","content":"hi"}]}`, `{"max_tokens":7}`, 7},
		{"a null limit is no limit", router("", covered), `{"model":"simple_qa","max_completion_tokens":null,"messages":[{"role":"user","content":"hi"}]}`, `{"max_completion_tokens":40}`, 40},
		{"a 0 limit is no limit", router("", covered), `{"model":"simple_qa","max_tokens":0,"messages":[{"role":"user","content":"hi"}]}`, `{"max_tokens":null,"max_completion_tokens":40}`, 40},
		{"the smallest of the budgets that cover the deployment", router("", covered, wider), `{"model":"simple_qa","messages":[{"role":"user","content":"hi"}]}`, `{"max_completion_tokens":40}`, 40},
		{"the client's limit where the provider reads it", router("max_tokens", covered), `{"model":"simple_qa","max_tokens":0,"max_completion_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, `{"max_tokens":5,"max_completion_tokens":5}`, 5},
		{"the client's limit where the provider reads it, output_cap off", router("max_tokens", uncapped), `{"model":"simple_qa","max_completion_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, `{"max_tokens":5,"max_completion_tokens":5}`, 5},
		{"the client's limit where the provider reads it, no budget", router("max_tokens"), `{"model":"simple_qa","max_completion_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, `{"max_tokens":5,"max_completion_tokens":5}`, 5},
		{"output_cap off", router("", uncapped), `{"model":"simple_qa","messages":[{"role":"user","content":"hi"}]}`, `{}`, 500},
		{"no budget", router(""), `{"model":"simple_qa","messages":[{"role":"user","content":"hi"}]}`, `{}`, 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(mock.Requests())
			w := serveOnce(tc.r, tc.body)
			if w.Code != http.StatusOK {
				t.Fatalf("%d %s", w.Code, w.Body)
			}
			reqs := mock.Requests()[before:]
			if len(reqs) != 1 {
				t.Fatalf("%d upstream requests", len(reqs))
			}
			var sent map[string]json.RawMessage
			if err := json.Unmarshal(reqs[0].Body, &sent); err != nil {
				t.Fatalf("upstream body %s: %v", reqs[0].Body, err)
			}
			got := map[string]json.RawMessage{}
			for _, f := range []string{"max_tokens", "max_completion_tokens", "max_output_tokens"} {
				if v, ok := sent[f]; ok {
					got[f] = v
				}
			}
			if g, _ := json.Marshal(got); !jsonEqual(g, []byte(tc.want)) {
				t.Errorf("upstream output limits %s, want %s (body %s)", g, tc.want, reqs[0].Body)
			}
			var answer struct {
				Usage struct {
					CompletionTokens int `json:"completion_tokens"`
				} `json:"usage"`
			}
			_ = json.Unmarshal(w.Body.Bytes(), &answer)
			if answer.Usage.CompletionTokens != tc.tokens {
				t.Errorf("answer of %d output tokens, want %d", answer.Usage.CompletionTokens, tc.tokens)
			}
		})
	}
}

// TestHedgeLoserJSONCharged: a JSON attempt that loses a hedge is canceled
// mid-generation, like one its client left: charged its input and its
// output limit, as its generation runs on without a reader.
func TestHedgeLoserJSONCharged(t *testing.T) {
	mock := mockllm.New()
	srv := httptest.NewServer(mock)
	defer srv.Close()
	mock.Set("deepseek-chat", mockllm.Behavior{Latency: time.Minute}) // generating a long answer
	r := benchRouter(t, srv.URL, func(r *Router) {
		pricedPair(r, "hedge_loser", 100)
		r.Failover = &Failover{HedgeAfter: caddy.Duration(20 * time.Millisecond)}
	})
	w := serveOnce(r, `{"model":"simple_qa","max_tokens":500,"messages":[{"role":"user","content":"Write a long story."}]}`)
	if w.Code != http.StatusOK || w.Header().Get(hdrModel) != "gemini-2.5-flash" {
		t.Fatalf("%d via %q, want the hedge's answer", w.Code, w.Header().Get(hdrModel))
	}
	if in, out, _ := estimatedCharge(r, "deepseek-v3.2"); in <= 0 || out != 500 {
		t.Errorf("the canceled JSON attempt was charged %d input and %d output tokens, want its input and its max_tokens 500", in, out)
	}
}

// spentDowngradeBudgets is a router whose budgets premium
// (complex_reasoning, downgrade simple_qa) and standard (simple_qa,
// downgrade standardTo) are both spent, and the body of a request to a
// route.
func spentDowngradeBudgets(t *testing.T, standardTo string) (*Router, func(route string) string) {
	mock := mockllm.New()
	srv := httptest.NewServer(mock)
	t.Cleanup(srv.Close)
	r := benchRouter(t, srv.URL, func(r *Router) {
		price := &Price{Input: 1000}
		r.Models = []*Model{
			{Name: "gpt-4.1", Price: price},
			{Name: "deepseek-v3.2", Upstream: "deepseek-chat", Price: price},
			{Name: "tiny", Price: &Price{Input: 1}},
		}
		r.Routes = map[string][]string{"complex_reasoning": {"gpt-4.1"}, "simple_qa": {"deepseek-v3.2"}, "cheapest": {"tiny"}}
		r.Budgets = []*Budget{
			{Name: "premium", Limits: []BudgetLimit{{Amount: 0.01, Period: "day"}}, Match: []string{"complex_reasoning"}, Downgrade: "simple_qa"},
			{Name: "standard", Limits: []BudgetLimit{{Amount: 0.01, Period: "day"}}, Match: []string{"simple_qa"}, Downgrade: standardTo},
		}
		r.BudgetSync = -1
	})
	body := func(route string) string {
		return `{"model":"` + route + `","max_tokens":20,"messages":[{"role":"user","content":"Hi"}]}`
	}
	for _, route := range []string{"complex_reasoning", "simple_qa"} {
		for range 10 {
			if w := serveOnce(r, body(route)); w.Header().Get(hdrBudget) != "" {
				break
			}
		}
	}
	return r, body
}

// TestDowngradeKeepsOtherBudgetsLimits: premium (complex_reasoning,
// downgrade simple_qa) and standard (simple_qa, downgrade cheapest), both
// at their limits. A request premium moves to simple_qa meets standard's
// limit there and follows standard's downgrade in turn; it is never
// served by a deployment whose budget is spent.
func TestDowngradeKeepsOtherBudgetsLimits(t *testing.T) {
	r, body := spentDowngradeBudgets(t, "cheapest")
	if w := serveOnce(r, body("simple_qa")); w.Header().Get(hdrModel) != "tiny" {
		t.Fatalf("simple_qa at standard's limit answered by %q (%s), want the downgrade to tiny", w.Header().Get(hdrModel), w.Header().Get(hdrBudget))
	}
	before := spentIn(r, 1, periodDay)
	for range 5 {
		w := serveOnce(r, body("complex_reasoning"))
		if w.Code != http.StatusOK || w.Header().Get(hdrModel) != "tiny" || w.Header().Get(hdrBudget) != "downgraded (premium, standard)" {
			t.Fatalf("complex_reasoning with both budgets spent: %d by %q (%s), want tiny, downgraded (premium, standard)", w.Code, w.Header().Get(hdrModel), w.Header().Get(hdrBudget))
		}
	}
	if after := spentIn(r, 1, periodDay); after != before {
		t.Errorf("standard's spend went from %.4f to %.4f past its limit", before, after)
	}
}

// TestDowngradeCycleRefused: two budgets that downgrade to each other's
// routes, both spent: a request one moves to the other's route is not sent
// back to the route it was refused on; it is refused.
func TestDowngradeCycleRefused(t *testing.T) {
	r, body := spentDowngradeBudgets(t, "complex_reasoning")
	before := [2]float64{spentIn(r, 0, periodDay), spentIn(r, 1, periodDay)}
	for _, route := range []string{"complex_reasoning", "simple_qa"} {
		w := serveOnce(r, body(route))
		if w.Code != http.StatusTooManyRequests {
			t.Errorf("%s with both budgets spent: %d by %q (%s), want 429", route, w.Code, w.Header().Get(hdrModel), w.Header().Get(hdrBudget))
		}
	}
	if after := [2]float64{spentIn(r, 0, periodDay), spentIn(r, 1, periodDay)}; after != before {
		t.Errorf("spend went from %v to %v past the limits", before, after)
	}
}

// slowListStorage is a file storage whose first List waits for release,
// signalling entered: a sync whose storage answers slowly.
type slowListStorage struct {
	certmagic.FileStorage
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (s *slowListStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	s.once.Do(func() {
		close(s.entered)
		<-s.release
	})
	return s.FileStorage.List(ctx, prefix, recursive)
}

// TestSyncAcrossWindowTurnKeepsSpend: a sync that began in one hour and
// ends in the next leaves what was charged in the new hour meanwhile, and
// the next sync writes it.
func TestSyncAcrossWindowTurnKeepsSpend(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 11, 59, 59, 0, time.UTC)
	t1 := t0.Add(2 * time.Second) // 12:00:01
	st := &slowListStorage{FileStorage: certmagic.FileStorage{Path: t.TempDir()}, entered: make(chan struct{}), release: make(chan struct{})}
	b, l := storedBudget(t, &Budget{Name: "sync_turn", Limits: []BudgetLimit{{1000, "hour"}}}, st, "test-instance")
	l.add(b, "", 1, t0) // spent in the old hour
	done := make(chan error, 1)
	go func() { done <- l.sync(context.Background(), t0, false) }()
	<-st.entered        // the sync of the hour period is at the storage
	l.add(b, "", 5, t1) // an answer charged in the new hour meanwhile
	close(st.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := l.spend("", t1); s[periodHour] != 5 {
		t.Errorf("the new hour holds %v after the sync, want the 5 charged in it", s[periodHour])
	}
	if err := l.sync(context.Background(), t1, false); err != nil {
		t.Fatal(err)
	}
	for at, want := range map[time.Time]float64{t0: 1, t1: 5} {
		f, _ := loadInstanceFile(context.Background(), st, "llm_router/budgets/sync_turn/"+periodHour.windowAt(at, time.UTC).id+"/test-instance.json")
		if f.Spend[""] != want {
			t.Errorf("storage holds %v for the hour of %s, want %v", f.Spend[""], at.Format(time.Kitchen), want)
		}
	}
}

// TestWindowOnlyMovesForward: a caller that read the clock just before a
// turn another caller already made (admission and settlement take the
// ledger's lock after reading the clock) neither sets the key back to the
// old window nor loses what the new one holds.
func TestWindowOnlyMovesForward(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 11, 59, 59, 0, time.UTC)
	t1 := t0.Add(2 * time.Second)
	var ps periodSpend
	ps.advance(periodHour.windowAt(t0, time.UTC))
	ps.delta, ps.reserved = 1, 2
	left := ps.advance(periodHour.windowAt(t1, time.UTC))
	ps.delta += 5
	if ps.delta != 5 || ps.reserved != 2 {
		t.Fatalf("after the turn: spent %v reserved %v, want 5 and the 2 still reserved", ps.delta, ps.reserved)
	}
	if left.id != periodHour.windowAt(t0, time.UTC).id || left.delta != 1 {
		t.Errorf("the turn left %s with %v unsynced, want the old hour with 1", left.id, left.delta)
	}
	if late := ps.advance(periodHour.windowAt(t0, time.UTC)); late.id != "" { // a late caller
		t.Errorf("a late caller's advance left %+v, want nothing", late)
	}
	ps.delta += 1
	if ps.id != periodHour.windowAt(t1, time.UTC).id || ps.delta != 6 {
		t.Errorf("a late caller moved the key to %s with %v spent, want the new hour with 6", ps.id, ps.delta)
	}
	if !strings.HasPrefix(ps.id, "hour-") {
		t.Errorf("window id %q", ps.id)
	}
}

// TestEndedWindowSpendReachesStorage: spend not yet synced when its key
// moves on to a new hour (a request charged in it, or a sync's refresh) is
// written to the ended hour's file at the next sync, a spilled key's too,
// and a sync that fails keeps it for the one after.
func TestEndedWindowSpendReachesStorage(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 11, 59, 59, 0, time.UTC)
	t1 := t0.Add(2 * time.Second) // 12:00:01
	st := &failingStorage{FileStorage: certmagic.FileStorage{Path: t.TempDir()}}
	b, l := storedBudget(t, &Budget{Name: "ended", Limits: []BudgetLimit{{1000, "hour"}}}, st, "test-instance")

	l.add(b, "charged", 1, t0) // spent in the old hour, not synced
	l.add(b, "charged", 2, t1) // the key turns to the new hour
	l.add(b, "idle", 3, t0)    // not charged since
	spilled := new(keySpend)   // dropped from memory before the turn
	spilled.periods[periodHour].advance(periodHour.windowAt(t0, time.UTC))
	spilled.periods[periodHour].delta = 4
	l.spilled["spilled"] = spilled

	st.fail.Store(true)
	if err := l.sync(context.Background(), t1, false); err == nil {
		t.Fatal("a sync whose writes fail succeeded")
	}
	st.fail.Store(false)
	if err := l.sync(context.Background(), t1, false); err != nil {
		t.Fatal(err)
	}
	file := func(at time.Time) map[string]float64 {
		f, err := loadInstanceFile(context.Background(), st, "llm_router/budgets/ended/"+periodHour.windowAt(at, time.UTC).id+"/test-instance.json")
		if err != nil {
			t.Fatal(err)
		}
		return f.Spend
	}
	if got, want := file(t0), map[string]float64{"charged": 1, "idle": 3, "spilled": 4}; !maps.Equal(got, want) {
		t.Errorf("the ended hour's file holds %v, want %v", got, want)
	}
	if got, want := file(t1), map[string]float64{"charged": 2}; !maps.Equal(got, want) {
		t.Errorf("the new hour's file holds %v, want %v", got, want)
	}
	if len(l.spilled) != 0 || len(l.ended) != 0 {
		t.Errorf("left in memory after the syncs: spilled %v, ended %v", l.spilled, l.ended)
	}
}

// TestResponsesOutputCapFloor: OpenAI's Responses API refuses a
// max_output_tokens below 16 ("integer_below_min_value"). A Responses
// request without a limit under a budget whose reserve_output is smaller
// was sent with that as its limit, and its client got a 400 about a
// member it never sent; it now goes with 16, and reserves as much.
func TestResponsesOutputCapFloor(t *testing.T) {
	sent := make(chan any, 1)
	upstream := reviewUpstream(t, func(w http.ResponseWriter, model string, body map[string]any) {
		sent <- body["max_output_tokens"]
		w.Header().Set("Content-Type", "application/json")
		if n, ok := body["max_output_tokens"].(float64); ok && n < 16 {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":{"message":"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got %v instead.","type":"invalid_request_error","param":"max_output_tokens","code":"integer_below_min_value"}}`, n)
			return
		}
		io.WriteString(w, `{"id":"resp_0123456789abcdef","object":"response","status":"completed","model":"`+model+`","output":[],"usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7}}`)
	})
	g := newGateway(t, `
	provider p {
		base_url `+upstream.URL+`/v1
		api_key sk-floor-test-key-0001
	}
	model m1 {
		price 1 2
	}
	budget tiny_answers {
		limit 1000 per day
		reserve_output 8
	}
	budget_sync off
`)
	resp, body := g.postPath("/v1/responses", `{"model":"m1","input":"Yes or no?"}`)
	if got := <-sent; got != float64(16) {
		t.Errorf("sent with max_output_tokens %v, want 16", got)
	}
	expectModel(t, resp, body, "m1", "p", 1)
	// the client's own limit goes as it is: its 400 is the client's
	resp, _ = g.postPath("/v1/responses", `{"model":"m1","input":"Yes or no?","max_output_tokens":4}`)
	if got := <-sent; got != float64(4) || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("the client's max_output_tokens 4: sent %v, status %d", got, resp.StatusCode)
	}
}

// TestHugeReservationKeepsOthers: a request with an absurd output limit
// (max_tokens 2^53, n 128) reserves an amount so large that adding the
// others' reservations to it, then taking it away, must not lose them: a
// client that sent one beside requests in flight, answered at once with
// a 400 (not charged), must not have wiped their reservations, and with
// them the limit's hold on concurrent requests.
func TestHugeReservationKeepsOthers(t *testing.T) {
	up := newHeldUpstream(10, 100)
	r := heldRouter(t, up, &Budget{Name: "huge", Limits: []BudgetLimit{{Amount: 0.3, Period: "day"}}})
	// reservation: (estimated input + 100) × 1000 / 1M ≈ 0.105
	body := `{"model":"simple_qa","max_tokens":100,"messages":[{"role":"user","content":"Hi"}]}`
	a1, codes1 := admitSome(t, r, up, body, 1)
	if a1 != 1 {
		t.Fatalf("%d of 1 admitted", a1)
	}
	huge := `{"model":"simple_qa","max_tokens":9007199254740992,"n":128,"messages":[{"role":"user","content":"Hi"}]}`
	if code := serveOnce(r, huge).Code; code != http.StatusBadRequest {
		t.Fatalf("the huge request ended %d, want the provider's 400", code)
	}
	if got := r.budgets[0].ledger.reserved("", periodDay); got < 0.1 {
		t.Errorf("reserved %.3f after the huge request, want the first request's 0.105 still held", got)
	}
	// 0.105 in flight: two more fit under 0.3 (the second starts at 0.21)
	a2, codes2 := admitSome(t, r, up, body, 3)
	close(up.release)
	waitCodes(codes1, a1)
	waitCodes(codes2, a2)
	if a2 != 2 {
		t.Errorf("%d of 3 admitted beside the one in flight, want 2", a2)
	}
}

// TestHedgeFitsUnderADowngradeLimit: a hedge is optional, so it starts
// only if the reservation fits twice, whole, under every limit, that of a
// budget with a downgrade route too: such a limit moves the requests that
// meet it, but a hedge it could not pay for is no reason to pass it.
func TestHedgeFitsUnderADowngradeLimit(t *testing.T) {
	mock := mockllm.New()
	srv := httptest.NewServer(mock)
	defer srv.Close()
	// the first deployment answers well after the hedge is due; a hedge
	// would be answered at once
	mock.Set("deepseek-chat", mockllm.Behavior{Latency: 300 * time.Millisecond})
	r := benchRouter(t, srv.URL, func(r *Router) {
		// a reservation of about 0.35 against a limit of 0.5: one fits,
		// two would not
		pricedPair(r, "team", 0.5)
		r.Budgets[0].Downgrade = "complex_reasoning"
		r.Failover = &Failover{HedgeAfter: caddy.Duration(time.Millisecond)}
	})
	w := serveOnce(r, `{"model":"simple_qa","max_tokens":350,"messages":[{"role":"user","content":"Hi"}]}`)
	if w.Code != http.StatusOK || w.Header().Get(hdrModel) != "deepseek-v3.2" {
		t.Errorf("%d by %q, want the first deployment's answer, unhedged", w.Code, w.Header().Get(hdrModel))
	}
	if n := len(mock.RequestsFor("gemini-2.5-flash")); n != 0 {
		t.Errorf("hedged %d times past what the budget's limit can hold twice", n)
	}
	if got := spentIn(r, 0, periodDay); got > 0.5 {
		t.Errorf("spent %.4f, past the limit of 0.5", got)
	}
}
