package llmrouter

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// storedAtTheBackup makes a stored response at claude@backup (gpt-4.1,
// first in complex_reasoning, fails once) and returns its id.
func storedAtTheBackup(t *testing.T, g *gateway) string {
	t.Helper()
	g.primary.Set("gpt-4.1", mockllm.Behavior{Status: 500, Times: 1})
	resp, body := g.postPath("/v1/responses", `{"model":"complex_reasoning","input":"Which jacket is warmer?"}`)
	expectModel(t, resp, body, "claude-sonnet-4.5", "backup", 2)
	return responseID(t, body)
}

// TestResponsesContinuationGoesHome: a Responses API request that
// continues a stored response goes to the deployment that made it, JSON
// or stream; one whose response no deployment has gets the provider's 404
// as the client's own error, with no health change.
func TestResponsesContinuationGoesHome(t *testing.T) {
	g := newGateway(t, defaultRouter)
	firstID := storedAtTheBackup(t, g) // the first answer comes from the fallback
	// gpt-4.1 is healthy again and first in the route, but the response
	// the follow-up continues is at the backup
	follow := `{"model":"complex_reasoning","input":"And the cheaper one?","previous_response_id":"` + firstID + `"}`
	resp, body := g.postPath("/v1/responses", follow)
	expectModel(t, resp, body, "claude-sonnet-4.5", "backup", 1)

	// a streamed response's id is remembered too
	g.primary.Set("gpt-4.1", mockllm.Behavior{Status: 500, Times: 1})
	resp, body = g.postPath("/v1/responses", `{"model":"complex_reasoning","input":"Is it waterproof?","stream":true}`)
	if resp.Header.Get("X-LLM-Model") != "claude-sonnet-4.5" {
		t.Fatalf("streamed by %s", resp.Header.Get("X-LLM-Model"))
	}
	var streamedID string
	for _, d := range sseData(body) {
		var ev struct {
			Response struct {
				ID string `json:"id"`
			} `json:"response"`
		}
		if json.Unmarshal([]byte(d), &ev) == nil && ev.Response.ID != "" {
			streamedID = ev.Response.ID
			break
		}
	}
	resp, body = g.postPath("/v1/responses", `{"model":"complex_reasoning","input":"Thanks","previous_response_id":"`+streamedID+`"}`)
	expectModel(t, resp, body, "claude-sonnet-4.5", "backup", 1)

	// a response nobody has (and whose home is not known): the 404 is
	// the client's once every candidate said so
	before := statsFor(t, g, "gpt-4.1", "primary").HealthScore
	resp, body = g.postPath("/v1/responses", `{"model":"complex_reasoning","input":"Hi","previous_response_id":"resp_long_gone"}`)
	if e := apiErr(t, body); resp.StatusCode != http.StatusNotFound || resp.Header.Get("X-LLM-Attempts") != "2" ||
		e.Code != "previous_response_not_found" || e.Param == nil || *e.Param != "previous_response_id" {
		t.Errorf("status %d after %s attempts: %s; want the client's 404 after asking both", resp.StatusCode, resp.Header.Get("X-LLM-Attempts"), body)
	}
	if after := statsFor(t, g, "gpt-4.1", "primary").HealthScore; after != before {
		t.Errorf("gpt-4.1's score went from %d to %d on the client's 404", before, after)
	}
}

// TestContinuationEstimateCountsItsContext: a continuation makes the
// provider read the response it continues again, which its own text does
// not show: its estimated input (what it reserves, and is charged when
// abandoned) includes that response's input and output.
func TestContinuationEstimateCountsItsContext(t *testing.T) {
	mock := mockllm.New()
	srv := httptest.NewServer(mock)
	defer srv.Close()
	r := benchRouter(t, srv.URL, func(r *Router) {
		r.Routes = map[string][]string{"simple_qa": {"deepseek-v3.2"}, "complex_reasoning": {"gemini-2.5-flash"}}
		r.Providers[0].Timeout = caddy.Duration(50 * time.Millisecond)
	})
	post := func(body string) *httptest.ResponseRecorder { return serveOnceAt(r, "/v1/responses", body) }
	w := post(`{"model":"simple_qa","input":"` + strings.Repeat("Tell me about jackets. ", 200) + `"}`)
	var first struct {
		ID    string `json:"id"`
		Usage struct {
			Input  int64 `json:"input_tokens"`
			Output int64 `json:"output_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &first); err != nil || first.ID == "" || first.Usage.Input == 0 {
		t.Fatalf("first response %d %s", w.Code, w.Body)
	}
	mock.Set("deepseek-chat", mockllm.Behavior{Latency: time.Minute})
	w = post(`{"model":"simple_qa","input":"And?","previous_response_id":"` + first.ID + `"}`)
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("%d %s, want the 503 of a timeout", w.Code, w.Body)
	}
	if in, _, _ := estimatedCharge(r, "deepseek-v3.2"); in < first.Usage.Input+first.Usage.Output {
		t.Errorf("the abandoned continuation was charged %d input tokens, want at least the %d+%d it continues",
			in, first.Usage.Input, first.Usage.Output)
	}
}

// TestPreviousResponseIDMustLookLikeAnID: a deployment's 404 is the
// client's error (relayed, no failover) only when it names the stored
// response the request continues; a previous_response_id that is not an
// id (a letter, the deployment's model name) found in some other 404 does
// not make it so: the request fails over and the 404's text (an internal
// address here) never reaches the client.
func TestPreviousResponseIDMustLookLikeAnID(t *testing.T) {
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, body map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		if model == "deepseek-chat" {
			w.WriteHeader(404)
			io.WriteString(w, `{"error":{"message":"no route to model deepseek-chat on inference-7.internal.corp (10.20.30.40:8000) for resp_0123456789abcdef","type":"not_found"}}`)
			return
		}
		io.WriteString(w, `{"id":"resp_ok","object":"response","status":"completed","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"hi"}]}],"usage":{"input_tokens":5,"output_tokens":1,"total_tokens":6}}`)
	})
	r := benchRouter(t, up.URL, nil)
	srv := routerServer(t, r)
	post := func(prev string) (int, string) {
		resp, err := http.Post(srv.URL+"/v1/responses", "application/json", strings.NewReader(`{"model":"simple_qa","input":"hello","previous_response_id":"`+prev+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, prev := range []string{"i", "deepseek-chat", "inference-7", "internal.corp", "resp_0123456789"} {
		if code, b := post(prev); code != 200 || strings.Contains(b, "10.20.30.40") {
			t.Errorf("previous_response_id %q turned a deployment's 404 into the client's error: %d %s", prev, code, b)
		}
	}
	// made by deepseek, as the router remembers: its 404 for it is the
	// client's
	for _, d := range r.deployments {
		if d.name == "deepseek-v3.2" {
			rememberResponse("resp_0123456789abcdef", d, usage{})
		}
	}
	t.Cleanup(func() { responseHomes.Remove("resp_0123456789abcdef") })
	if code, b := post("resp_0123456789abcdef"); code != 404 {
		t.Errorf("a 404 naming the stored response: %d %s, want it relayed", code, b)
	}
}

// TestPreviousResponseIDIsNotAnErrorWord: a deployment's own 404 in
// OpenAI's form (a model it lacks) carries words of the error's form
// ("invalid_request_error", "model_not_found") as long as an id and made
// of an id's bytes; a previous_response_id that is one of them must not
// make that 404 the client's: the request fails over, and the 404's text
// never reaches the client.
func TestPreviousResponseIDIsNotAnErrorWord(t *testing.T) {
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, body map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		if model == "deepseek-chat" {
			w.WriteHeader(404)
			io.WriteString(w, `{"error":{"message":"The model deepseek-chat does not exist on inference-7.internal.corp (10.20.30.40:8000).","type":"invalid_request_error","param":null,"code":"model_not_found"}}`)
			return
		}
		io.WriteString(w, `{"id":"resp_ok","object":"response","status":"completed","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"hi"}]}],"usage":{"input_tokens":5,"output_tokens":1,"total_tokens":6}}`)
	})
	srv := routerServer(t, benchRouter(t, up.URL, nil))
	expectFailoverWith(t, srv, "invalid_request_error", "model_not_found")
}

// TestPreviousResponseIDIsNotPartOfTheModel: an upstream model id in
// parts ("accounts/fireworks/models/llama-v3p1-405b-instruct", or
// "meta-llama/Llama-3.3-70B-Instruct") is a deployment's own 404's word
// too, and each part of it is as guessable as the whole: a
// previous_response_id that is one of its parts must not make the 404 the
// client's either.
func TestPreviousResponseIDIsNotPartOfTheModel(t *testing.T) {
	const upstream = "accounts/fireworks/models/llama-v3p1-405b-instruct"
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, body map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		if model == upstream {
			w.WriteHeader(404)
			io.WriteString(w, `{"error":{"message":"The model `+upstream+` does not exist on inference-7.internal.corp (10.20.30.40:8000).","type":"invalid_request_error","param":null,"code":"model_not_found"}}`)
			return
		}
		io.WriteString(w, `{"id":"resp_ok","object":"response","status":"completed","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"hi"}]}],"usage":{"input_tokens":5,"output_tokens":1,"total_tokens":6}}`)
	})
	srv := routerServer(t, benchRouter(t, up.URL, func(r *Router) {
		r.Models[0].Upstream = upstream
	}))
	expectFailoverWith(t, srv, "llama-v3p1-405b-instruct", "LLAMA-V3P1-405B-INSTRUCT", "v3p1-405b-instruct")
}

// TestLongResponseIDNotRemembered: the response ids remembered are
// bounded in number, and each in length: a provider that answers with an
// id of a megabyte (a bug, a proxy's page in its place) must not have the
// router keep it, 100,000 such ids being 100 GB.
func TestLongResponseIDNotRemembered(t *testing.T) {
	long := "resp_" + strings.Repeat("0123456789abcdef", 1<<16)
	up := reviewUpstream(t, func(w http.ResponseWriter, model string, body map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"`+long+`","object":"response","status":"completed","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"hi"}]}],"usage":{"input_tokens":5,"output_tokens":1,"total_tokens":6}}`)
	})
	srv := routerServer(t, benchRouter(t, up.URL, nil))
	resp, err := http.Post(srv.URL+"/v1/responses", "application/json", strings.NewReader(`{"model":"simple_qa","input":"hello"}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, ok := responseHomes.Peek(long); ok {
		t.Errorf("a response id of %d bytes was remembered", len(long))
	}
}

// expectFailoverWith sends srv a continuation of each id in prevs, whose
// first deployment answers 404 naming its model (and an internal
// address): none of them may make that 404 the client's, each fails over
// to a 200 without the address.
func expectFailoverWith(t *testing.T, srv *httptest.Server, prevs ...string) {
	t.Helper()
	for _, prev := range prevs {
		resp, err := http.Post(srv.URL+"/v1/responses", "application/json", strings.NewReader(`{"model":"simple_qa","input":"hello","previous_response_id":"`+prev+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.Contains(string(b), "10.20.30.40") {
			t.Errorf("previous_response_id %q turned a deployment's 404 into the client's error: %d %s", prev, resp.StatusCode, b)
		}
	}
}

// TestConversationNotFoundIsNotTheDeployments: a Responses API request in
// a conversation (conversation, the Conversations API) that a deployment
// does not have gets its 404 naming the conversation: the client's doing,
// not the deployment's. It fails over (another deployment, on the account
// that made the conversation, may have it) without costing the deployment
// its health: a client naming conversations nobody has cannot disable
// every deployment. The deployment that answered in a conversation is
// tried first for the rest of it.
func TestConversationNotFoundIsNotTheDeployments(t *testing.T) {
	const known = "conv_68a1b2c3d4e5f60718293a4b"
	upstream := reviewUpstream(t, func(w http.ResponseWriter, model string, body map[string]any) {
		conv, _ := body["conversation"].(string)
		if obj, ok := body["conversation"].(map[string]any); ok {
			conv, _ = obj["id"].(string)
		}
		if conv != "" && (conv != known || model != "m2") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":{"message":"Conversation with id '`+conv+`' not found.","type":"invalid_request_error","param":null,"code":null}}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"resp_0123456789abcdef","object":"response","status":"completed","model":"`+model+`","output":[],"usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7}}`)
	})
	g, score := twoModelGateway(t, upstream.URL)
	m1, m2 := score()
	counts := scrape(t)
	for _, conv := range []string{`"conv_0000aaaa1111bbbb2222"`, `{"id":"conv_0000aaaa1111bbbb3333"}`, `"conv_0000aaaa1111bbbb4444"`} {
		// nobody has it: the client's 404, not an outage (503 with
		// Retry-After, which an SDK retries on every deployment again)
		resp, body := g.postPath("/v1/responses", `{"model":"r","input":"Hi","conversation":`+conv+`}`)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, `"param":"conversation"`) || resp.Header.Get("Retry-After") != "" {
			t.Errorf("conversation %s nobody has: %d (Retry-After %q) %s, want an OpenAI-style 404 about the conversation",
				conv, resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
	}
	if a, b := score(); a != m1 || b != m2 {
		t.Errorf("scores went from %d, %d to %d, %d on conversations the client named", m1, m2, a, b)
	}
	expectNotHere(t, counts, "m1", "p", 3)

	resp, body := g.postPath("/v1/responses", `{"model":"r","input":"Hi","conversation":"`+known+`"}`)
	expectModel(t, resp, body, "m2", "p", 2)
	resp, body = g.postPath("/v1/responses", `{"model":"r","input":"And then?","conversation":{"id":"`+known+`"}}`)
	expectModel(t, resp, body, "m2", "p", 1)
	if a, _ := score(); a != m1 {
		t.Errorf("m1's score went from %d to %d", m1, a)
	}
}

// TestStoredItemNotFoundIsNotTheDeployments: a Responses API request that
// names stored items (item_reference, or an item by its id alone) a
// deployment does not have gets its 404 naming the item: the client's
// doing, as for a conversation. It fails over without costing the
// deployment its health: a client naming items nobody has cannot disable
// every deployment.
func TestStoredItemNotFoundIsNotTheDeployments(t *testing.T) {
	upstream := reviewUpstream(t, func(w http.ResponseWriter, model string, body map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		if prompt, ok := body["prompt"].(map[string]any); ok {
			id, _ := prompt["id"].(string)
			io.WriteString(w, `{"error":{"message":"Prompt with id '`+id+`' not found.","type":"invalid_request_error","param":"prompt","code":null}}`)
			return
		}
		items, _ := body["input"].([]any)
		item, _ := items[0].(map[string]any)
		id, _ := item["id"].(string)
		io.WriteString(w, `{"error":{"message":"Item with id '`+id+`' not found.","type":"invalid_request_error","param":"input","code":null}}`)
	})
	g, score := twoModelGateway(t, upstream.URL)
	m1, m2 := score()
	for _, item := range []string{`{"type":"item_reference","id":"msg_0000aaaa1111bbbb2222"}`, `{"id":"msg_0000aaaa1111bbbb3333"}`, `{"type":"item_reference","id":"msg_0000aaaa1111bbbb4444"}`} {
		resp, body := g.postPath("/v1/responses", `{"model":"r","input":[`+item+`,{"role":"user","content":"And?"}]}`)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, `"param":"input"`) {
			t.Errorf("item %s nobody has: %d %s, want an OpenAI-style 404 about the input", item, resp.StatusCode, body)
		}
	}
	// a stored prompt nobody has, likewise
	for _, id := range []string{"pmpt_0000aaaa1111bbbb5555", "pmpt_0000aaaa1111bbbb6666"} {
		resp, body := g.postPath("/v1/responses", `{"model":"r","prompt":{"id":"`+id+`"},"input":"And?"}`)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, `"param":"prompt"`) {
			t.Errorf("prompt %s nobody has: %d %s, want an OpenAI-style 404 about the prompt", id, resp.StatusCode, body)
		}
	}
	if a, b := score(); a != m1 || b != m2 {
		t.Errorf("scores went from %d, %d to %d, %d on items the client named", m1, m2, a, b)
	}
}

// TestNamedFileNotFoundIsNotTheDeployments: a 404 naming a file, vector
// store or container the request names by its id (a content part's
// file_id, a file_search tool's vector_store_ids, code_interpreter's
// container or file_ids) cost the deployment its health and was the
// deployment's fault at every deployment: a client naming files nobody
// has could disable them all. Files are an account's: the id is not at
// this deployment, another may have it (failover, no health change), and
// when none has it the client gets an OpenAI-style 404 about it.
func TestNamedFileNotFoundIsNotTheDeployments(t *testing.T) {
	named := regexp.MustCompile(`(file-|vs_|cntr_)[A-Za-z0-9]+`)
	upstream := reviewUpstream(t, func(w http.ResponseWriter, model string, body map[string]any) {
		b, _ := json.Marshal(body)
		id := named.Find(b)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":{"message":"No such resource with id '`+string(id)+`' found.","type":"invalid_request_error","param":null,"code":null}}`)
	})
	g, score := twoModelGateway(t, upstream.URL, "allow_unpriced file_search code_interpreter")
	m1, m2 := score()
	for _, c := range []struct{ path, body, param, code string }{
		{"/v1/chat/completions", `{"model":"r","messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-0000aaaa1111bbbb2222"}},{"type":"text","text":"Sum it up"}]}]}`, "messages", "file_not_found"},
		{"/v1/responses", `{"model":"r","input":[{"role":"user","content":[{"type":"input_file","file_id":"file-0000aaaa1111bbbb3333"},{"type":"input_text","text":"Sum it up"}]}]}`, "input", "file_not_found"},
		{"/v1/responses", `{"model":"r","input":"Where is it?","tools":[{"type":"file_search","vector_store_ids":["vs_0000aaaa1111bbbb4444"]}]}`, "tools", "vector_store_not_found"},
		{"/v1/responses", `{"model":"r","input":"Plot it","tools":[{"type":"code_interpreter","container":"cntr_0000aaaa1111bbbb5555"}]}`, "tools", "container_not_found"},
		{"/v1/responses", `{"model":"r","input":"Plot it","tools":[{"type":"code_interpreter","container":{"type":"auto","file_ids":["file-0000aaaa1111bbbb6666"]}}]}`, "tools", "file_not_found"},
	} {
		resp, body := g.postPath(c.path, c.body)
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("X-LLM-Attempts") != "2" || !strings.Contains(body, `"param":"`+c.param+`"`) || !strings.Contains(body, `"code":"`+c.code+`"`) {
			t.Errorf("%s %s: %d after %s attempts %s, want an OpenAI-style 404 %s about %s after 2", c.path, c.body, resp.StatusCode, resp.Header.Get("X-LLM-Attempts"), body, c.code, c.param)
		}
	}
	if a, b := score(); a != m1 || b != m2 {
		t.Errorf("scores went from %d, %d to %d, %d on ids the client named", m1, m2, a, b)
	}
	// a 404 that names no id of the request is still the deployment's
	resp, _ := g.postPath("/v1/chat/completions", `{"model":"r","messages":[{"role":"user","content":"Hi"}]}`)
	if a, b := score(); resp.StatusCode != http.StatusServiceUnavailable || a >= m1 || b >= m2 {
		t.Errorf("a 404 for the model: %d, scores %d, %d; want 503 and both lower than %d, %d", resp.StatusCode, a, b, m1, m2)
	}
}

// twoModelGateway is a gateway with route r over m1 then m2, both at the
// provider p at url, probes off, and a reading of their health scores;
// extra is more of the router's config.
func twoModelGateway(t *testing.T, url string, extra ...string) (*gateway, func() (int, int)) {
	g := newGateway(t, `
	provider p {
		base_url `+url+`/v1
		api_key sk-two-model-test-0001
	}
	model m1
	model m2
	route r m1 m2
	health_check {
		interval off
	}
	`+strings.Join(extra, "\n\t")+`
`)
	return g, func() (int, int) {
		return statsFor(t, g, "m1", "p").HealthScore, statsFor(t, g, "m2", "p").HealthScore
	}
}

// TestContinuationWaitsForItsCoolingHome: a continuation whose home is
// cooling down (its provider asked for a pause) went to another candidate,
// whose 404 "previous response not found" was relayed as the client's own
// error: told that its response does not exist, the client starts over,
// though the response is at its home, back in seconds. That 404 says only
// that the response is not there: the request fails over, with no health
// lost, and ends in a 503 whose Retry-After is the home's pause.
func TestContinuationWaitsForItsCoolingHome(t *testing.T) {
	g := newGateway(t, defaultRouter)
	firstID := storedAtTheBackup(t, g)
	// the home is rate limited: a pause of 30 s
	g.backup.Set("claude-sonnet-4.5", mockllm.Behavior{Status: 429, RetryAfter: "30", Times: 1})
	if resp, body := g.postPath("/v1/responses", `{"model":"claude-sonnet-4.5","input":"Hi"}`); resp.StatusCode < 400 {
		t.Fatalf("%d %s, want the rate limit", resp.StatusCode, body)
	}
	before := statsFor(t, g, "gpt-4.1", "primary").HealthScore
	counts := scrape(t)
	resp, body := g.postPath("/v1/responses", `{"model":"complex_reasoning","input":"And the cheaper one?","previous_response_id":"`+firstID+`"}`)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || resp.Header.Get("Retry-After") == "1" {
		t.Errorf("%d (Retry-After %q) %s; want 503 with the home's pause", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if after := statsFor(t, g, "gpt-4.1", "primary").HealthScore; after != before {
		t.Errorf("gpt-4.1's score went from %d to %d on a response it never had", before, after)
	}
	expectNotHere(t, counts, "gpt-4.1", "primary", 1)
}

// expectNotHere checks that the attempts at model@provider since before
// were n answered 404 for stored context they lack, which failed over:
// outcome not_here, in attempts_total and failovers_total, never
// client_error (the client's own 4xx, relayed), as the client was not
// answered with them.
func expectNotHere(t *testing.T, before series, model, provider string, n float64) {
	t.Helper()
	after := scrape(t)
	for _, c := range []struct {
		metric, label, outcome string
		want                   float64
	}{
		{"caddy_llm_router_attempts_total", "outcome", "not_here", n},
		{"caddy_llm_router_attempts_total", "outcome", "client_error", 0},
		{"caddy_llm_router_failovers_total", "reason", "client_error", 0},
	} {
		if d := after.delta(before, sel(c.metric, "model", model, "provider", provider, c.label, c.outcome)); d != c.want {
			t.Errorf("%s{%s=%q} of %s@%s +%v, want %v", c.metric, c.label, c.outcome, model, provider, d, c.want)
		}
	}
}

// TestRuleRoutedContinuationGoesHome: a continuation that names no route
// (model "auto") goes to the deployment that made its response even when
// the rules classify this turn into a route without it: a client sending
// "auto" every turn must not get a 404 for its own conversation because
// the gateway moved it to another provider.
func TestRuleRoutedContinuationGoesHome(t *testing.T) {
	router := strings.Replace(rulesRouter, "model gpt-4.1 {\n\t\tfallback claude-sonnet-4.5\n\t}",
		"model gpt-4.1 {\n\t\tprovider backup\n\t\tfallback claude-sonnet-4.5\n\t}", 1)
	if router == rulesRouter {
		t.Fatal("rulesRouter's gpt-4.1 moved")
	}
	g := newGateway(t, router)
	resp, body := g.postPath("/v1/responses", `{"model":"auto","input":"Where is my order?"}`)
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	firstID := responseID(t, body)
	// a comparison: complex_reasoning by the rules, whose models are all
	// at the backup, which does not have the response
	resp, body = g.postPath("/v1/responses", `{"model":"auto","input":"Compare it with the blue one","previous_response_id":"`+firstID+`"}`)
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	// a route named is the client's choice: routed as it says
	resp, _ = g.postPath("/v1/responses", `{"model":"complex_reasoning","input":"And now?","previous_response_id":"`+firstID+`"}`)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("a named route's continuation elsewhere: %d, want the provider's 404", resp.StatusCode)
	}
}

// responseID is the id of a Responses API answer.
func responseID(t *testing.T, body string) string {
	t.Helper()
	var r struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil || r.ID == "" {
		t.Fatalf("no response id in %s", body)
	}
	return r.ID
}

// TestManyNamedIDsNotFoundIsNotTheDeployments: a request naming more
// files (or stored items) than the router kept track of got a 404 naming
// one of the later ones blamed on the deployment: a client repeating it
// disabled every deployment. Every id the request names is the client's.
func TestManyNamedIDsNotFoundIsNotTheDeployments(t *testing.T) {
	upstream := reviewUpstream(t, func(w http.ResponseWriter, model string, body map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		// the provider checks them in its own order: the last is missing
		io.WriteString(w, `{"error":{"message":"No such File object: file-0000aaaa1111bbbb0012","type":"invalid_request_error","param":null,"code":null}}`)
	})
	g, score := twoModelGateway(t, upstream.URL)
	m1, m2 := score()
	var files, items []string
	for i := range 12 {
		files = append(files, fmt.Sprintf(`{"type":"file","file":{"file_id":"file-0000aaaa1111bbbb%04d"}}`, i+1))
		items = append(items, fmt.Sprintf(`{"type":"item_reference","id":"file-0000aaaa1111bbbb%04d"}`, i+1))
	}
	for _, c := range []struct{ path, body string }{
		{"/v1/chat/completions", `{"model":"r","messages":[{"role":"user","content":[` + strings.Join(files, ",") + `,{"type":"text","text":"Sum them up"}]}]}`},
		{"/v1/responses", `{"model":"r","input":[` + strings.Join(items, ",") + `]}`},
	} {
		resp, body := g.postPath(c.path, c.body)
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("X-LLM-Attempts") != "2" {
			t.Errorf("%s: %d after %s attempts %s, want the client's 404 after 2", c.path, resp.StatusCode, resp.Header.Get("X-LLM-Attempts"), body)
		}
	}
	if a, b := score(); a != m1 || b != m2 {
		t.Errorf("scores went from %d, %d to %d, %d on ids the client named", m1, m2, a, b)
	}
}

// TestContinuationOfAFailingHomeIsNoNotFound: a continuation whose home
// was tried first and failed (a 500, a timeout) went on to another
// candidate, whose 404 "previous response not found" was relayed as the
// client's own error: told that its response does not exist, the client
// starts over, though the response is at its home, which only failed
// once. That 404 says only that the response is not there, as it does
// while the home is cooling down: no health lost, and a 503 to retry.
func TestContinuationOfAFailingHomeIsNoNotFound(t *testing.T) {
	g := newGateway(t, defaultRouter)
	firstID := storedAtTheBackup(t, g)
	g.backup.Set("claude-sonnet-4.5", mockllm.Behavior{Status: 500, Times: 1})
	before := statsFor(t, g, "gpt-4.1", "primary").HealthScore
	follow := `{"model":"complex_reasoning","input":"And the cheaper one?","previous_response_id":"` + firstID + `"}`
	resp, body := g.postPath("/v1/responses", follow)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-LLM-Attempts") != "2" {
		t.Errorf("%d after %s attempts %s; want a 503 after the home and the other", resp.StatusCode, resp.Header.Get("X-LLM-Attempts"), body)
	}
	if after := statsFor(t, g, "gpt-4.1", "primary").HealthScore; after != before {
		t.Errorf("gpt-4.1's score went from %d to %d on a response it never had", before, after)
	}
	// the home is back: the response is there
	resp, body = g.postPath("/v1/responses", follow)
	expectModel(t, resp, body, "claude-sonnet-4.5", "backup", 1)
}

// TestDisabledHomeIsTheFirstLastResort: a continuation whose home is
// disabled tried the other disabled candidates first, as last resorts
// best score first, though none has the response: each a request for a
// 404, and with max_attempts the home was never reached (a 503, though
// the response was there). The home is the first last resort.
func TestDisabledHomeIsTheFirstLastResort(t *testing.T) {
	g := newGateway(t, `
	provider primary {
		base_url {PRIMARY}/v1
		api_key sk-primary-test-key-0001
		timeout 2s
	}
	provider backup {
		base_url {BACKUP}/v1
		api_key sk-backup-test-key-0002
		timeout 2s
	}
	model gpt-4.1
	model gemini-2.5-flash
	model claude-sonnet-4.5 {
		provider backup
	}
	route r gpt-4.1 gemini-2.5-flash claude-sonnet-4.5
	health_check {
		interval off
	}
	failover {
		max_attempts 2
	}
`)
	resp, body := g.postPath("/v1/responses", `{"model":"claude-sonnet-4.5","input":"Which jacket is warmer?"}`)
	expectModel(t, resp, body, "claude-sonnet-4.5", "backup", 1)
	firstID := responseID(t, body)
	// gemini disabled at score 30, the home at 20: gemini first by score
	for model, errors := range map[string]int{"gemini-2.5-flash": 7, "claude-sonnet-4.5": 8} {
		mock := g.primary
		if model == "claude-sonnet-4.5" {
			mock = g.backup
		}
		mock.Set(model, mockllm.Behavior{Status: 500, Times: errors})
		for range errors {
			g.postPath("/v1/responses", `{"model":"`+model+`","input":"Hi"}`)
		}
		if st := statsFor(t, g, model, map[bool]string{true: "backup", false: "primary"}[mock == g.backup]); st.State != stateDisabled {
			t.Fatalf("%s %s after %d 500s, want disabled", model, st.State, errors)
		}
	}
	resp, body = g.postPath("/v1/responses", `{"model":"r","input":"And the cheaper one?","previous_response_id":"`+firstID+`"}`)
	expectModel(t, resp, body, "claude-sonnet-4.5", "backup", 2)
	if n := len(g.primary.RequestsFor("gemini-2.5-flash")); n != 7 {
		t.Errorf("gemini was asked %d times, want 7 (not for the continuation)", n)
	}
}

// TestForgottenHomeContinuationFindsItsResponse: the responses remembered
// are the process's most recent, whoever made them, so any client can
// push another's out by making responses of its own (here the memory is
// shrunk so that one does). The continuation of a response whose home is
// forgotten went to the route's first deployment, whose 404 "previous
// response not found" was relayed as the client's own error: the other
// client's conversation was gone, though its home still had it. A 404
// for a response whose home is not known says only that it is not at
// that deployment: the request fails over, with no health lost, and only
// when every candidate said so is the 404 the client's.
func TestForgottenHomeContinuationFindsItsResponse(t *testing.T) {
	g := newGateway(t, defaultRouter)
	firstID := storedAtTheBackup(t, g)
	responseHomes.Resize(1)
	t.Cleanup(func() { responseHomes.Resize(maxResponseHomes) })
	// another client's response pushes the first one's home out
	if resp, body := g.postPath("/v1/responses", `{"model":"simple_qa","input":"Hi"}`, "Authorization", "Bearer other-tenant"); resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if _, ok := responseHomes.Peek(firstID); ok {
		t.Fatal("the first response's home is still remembered")
	}
	before := statsFor(t, g, "gpt-4.1", "primary").HealthScore
	counts := scrape(t)
	resp, body := g.postPath("/v1/responses", `{"model":"complex_reasoning","input":"And the cheaper one?","previous_response_id":"`+firstID+`"}`)
	expectModel(t, resp, body, "claude-sonnet-4.5", "backup", 2)
	if after := statsFor(t, g, "gpt-4.1", "primary").HealthScore; after != before {
		t.Errorf("gpt-4.1's score went from %d to %d on a response it never had", before, after)
	}
	expectNotHere(t, counts, "gpt-4.1", "primary", 1)
}
