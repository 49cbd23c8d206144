package llmrouter

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
	"github.com/llmrouter/caddy-llm-router/internal/openai"
)

// TestSmuggledMembersRefused: a body that a provider written in Go (the
// mock decodes with encoding/json, case-insensitively, last member wins)
// would read otherwise than the router gets 400 and reaches no provider,
// so that what is billed is what would have been served.
func TestSmuggledMembersRefused(t *testing.T) {
	g := newGateway(t, defaultRouter)
	msgs := `"messages":[{"role":"user","content":"Where is my order?"}]`
	cases := []struct {
		name, body, param, code string
	}{
		{"Model beside model", `{"model":"deepseek-v3.2",` + msgs + `,"Model":"gpt-4.1"}`, "Model", openai.CodeDuplicate},
		{"MODEL alone", `{"MODEL":"gpt-4.1",` + msgs + `}`, "MODEL", openai.CodeCaseVariant},
		{"model twice by escape", `{"model":"deepseek-v3.2",` + msgs + `,"mod\u0065l":"gpt-4.1"}`, "model", openai.CodeDuplicate},
		{"Stream", `{"model":"simple_qa",` + msgs + `,"Stream":true}`, "Stream", openai.CodeCaseVariant},
		{"stream as a string", `{"model":"simple_qa",` + msgs + `,"stream":"true"}`, "stream", openai.CodeInvalidType},
		{"stream as a number", `{"model":"simple_qa",` + msgs + `,"stream":1}`, "stream", openai.CodeInvalidType},
		{"n as a float", `{"model":"simple_qa",` + msgs + `,"n":2.0}`, "n", openai.CodeInvalidType},
		{"n zero", `{"model":"simple_qa",` + msgs + `,"n":0}`, "n", openai.CodeInvalidValue},
		{"include_usage twice", `{"model":"simple_qa",` + msgs + `,"stream":true,"stream_options":{"include_usage":false,"INCLUDE_USAGE":true}}`,
			"stream_options.INCLUDE_USAGE", openai.CodeCaseVariant},
		{"service tier with a dotted I", `{"model":"simple_qa",` + msgs + `,"servİce_tier":"priority"}`, "servİce_tier", openai.CodeCaseVariant},
		{"another gateway's model list", `{"model":"simple_qa",` + msgs + `,"models":["o3-pro"]}`, "models", openai.CodeUnsupported},
		{"another gateway's preset", `{"model":"simple_qa",` + msgs + `,"preset":"o3-pro-first"}`, "preset", openai.CodeUnsupported},
		{"another gateway's fallbacks", `{"model":"simple_qa",` + msgs + `,"fallbacks":["o3-pro"],"mock_testing_fallbacks":true}`, "fallbacks", openai.CodeUnsupported},
		// llama.cpp reads n_predict before max_tokens and n_cmpl before n:
		// the cap the router adds, and the answers it counts, would not bind
		{"llama.cpp's output limit", `{"model":"simple_qa",` + msgs + `,"max_tokens":16,"n_predict":-1}`, "n_predict", openai.CodeUnsupported},
		{"llama.cpp's answer count", `{"model":"simple_qa",` + msgs + `,"n_cmpl":8}`, "n_cmpl", openai.CodeUnsupported},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := g.post(tc.body)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", resp.StatusCode, body)
			}
			e := apiErr(t, body)
			if e.Type != "invalid_request_error" || e.Code != tc.code || e.Param == nil || *e.Param != tc.param || e.Message == "" {
				t.Errorf("error %+v (param %v), want param %q code %q", e, derefOr(e.Param), tc.param, tc.code)
			}
		})
	}
	// another API's output limit: llama.cpp reads max_completion_tokens
	// before max_tokens on every endpoint
	for path, body := range map[string]string{
		"/v1/completions": `{"model":"simple_qa","prompt":"Where is my order?","max_tokens":16,"max_completion_tokens":100000}`,
		"/v1/responses":   `{"model":"simple_qa","input":"Where is my order?","max_output_tokens":16,"max_completion_tokens":100000}`,
	} {
		resp, out := g.postPath(path, body)
		if e := apiErr(t, out); resp.StatusCode != http.StatusBadRequest || e.Code != openai.CodeUnsupported || derefOr(e.Param) != "max_completion_tokens" {
			t.Errorf("%s %s: %d %s, want 400 unsupported_parameter max_completion_tokens", path, body, resp.StatusCode, out)
		}
	}
	if n := len(g.primary.Requests()) + len(g.backup.Requests()); n != 0 {
		t.Errorf("refused requests reached a provider (%d)", n)
	}
	// the unambiguous forms of the same requests are served
	resp, body := g.post(`{"model":"deepseek-v3.2",` + msgs + `,"stream":false,"n":1}`)
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
}

// TestUnbillableRequestsRefused: a service tier priced above the model's
// price, and a Responses API background request (answered later, past
// the router), get 400 and reach no provider unless the config offers the
// tier; the tiers that cost no more are served by default.
func TestUnbillableRequestsRefused(t *testing.T) {
	g := newGateway(t, defaultRouter)
	msgs := `"messages":[{"role":"user","content":"Where is my order?"}]`
	for _, tc := range []struct {
		path, body, param string
	}{
		{"/v1/chat/completions", `{"model":"simple_qa",` + msgs + `,"service_tier":"priority"}`, "service_tier"},
		{"/v1/responses", `{"model":"simple_qa","input":"Where is my order?","service_tier":"scale"}`, "service_tier"},
		{"/v1/responses", `{"model":"simple_qa","input":"Where is my order?","background":true}`, "background"},
		// billed apart from tokens: hosted tools, web search, audio output
		{"/v1/responses", `{"model":"simple_qa","input":"Where is my order?","tools":[{"type":"web_search_preview"}]}`, "tools"},
		{"/v1/responses", `{"model":"simple_qa","input":"Draw it","tools":[{"type":"function","name":"f"},{"type":"image_generation"}]}`, "tools"},
		{"/v1/responses", `{"model":"simple_qa","input":"Find it","tools":[{"t\u0079pe":"file_search"}]}`, "tools"},
		{"/v1/chat/completions", `{"model":"simple_qa",` + msgs + `,"web_search_options":{}}`, "web_search_options"},
		{"/v1/chat/completions", `{"model":"simple_qa",` + msgs + `,"search_parameters":{"mode":"on"}}`, "search_parameters"}, // xAI's Live Search
		{"/v1/chat/completions", `{"model":"simple_qa",` + msgs + `,"modalities":["text","audio"],"audio":{"voice":"alloy","format":"wav"}}`, "modalities"},
	} {
		resp, body := g.postPath(tc.path, tc.body)
		e := apiErr(t, body)
		if resp.StatusCode != http.StatusBadRequest || e.Code != openai.CodeInvalidValue || derefOr(e.Param) != tc.param {
			t.Errorf("%s: %d %+v (param %s), want 400 invalid_value for %s", tc.body, resp.StatusCode, e, derefOr(e.Param), tc.param)
		}
	}
	if n := len(g.primary.Requests()) + len(g.backup.Requests()); n != 0 {
		t.Errorf("refused requests reached a provider (%d)", n)
	}
	for _, tier := range []string{"auto", "default", "flex"} {
		resp, body := g.post(`{"model":"deepseek-v3.2",` + msgs + `,"service_tier":"` + tier + `"}`)
		expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	}
	// offered where the model is priced at that tier
	g = newGateway(t, defaultRouter+"\tservice_tiers default priority\n")
	resp, body := g.post(`{"model":"deepseek-v3.2",` + msgs + `,"service_tier":"priority"}`)
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	resp, body = g.post(`{"model":"deepseek-v3.2",` + msgs + `,"service_tier":"flex"}`)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "default, priority") {
		t.Errorf("a tier the config does not offer: %d %s", resp.StatusCode, body)
	}
	// function tools are priced as tokens; allowed features pass
	g = newGateway(t, defaultRouter+"\tallow_unpriced web_search\n")
	resp, body = g.post(`{"model":"deepseek-v3.2",` + msgs + `,"tools":[{"type":"function","function":{"name":"track"}}]}`)
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	resp, body = g.post(`{"model":"deepseek-v3.2",` + msgs + `,"web_search_options":{"search_context_size":"low"}}`)
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	resp, body = g.postPath("/v1/responses", `{"model":"deepseek-v3.2","input":"Where is my order?","tools":[{"type":"web_search_preview_2025_03_11"}]}`)
	expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
	resp, body = g.postPath("/v1/responses", `{"model":"deepseek-v3.2","input":"Where is my order?","tools":[{"type":"web_searchx"}]}`)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("web_searchx passed an allow list of web_search: %d %s", resp.StatusCode, body)
	}
}

func derefOr(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

// TestPythonStyleUsage: a provider that writes JSON as Python's json.dumps
// does (", " and ": ") has its usage read exactly, from JSON answers and
// stream chunks, and its usage chunk reaches only a client that asked.
func TestPythonStyleUsage(t *testing.T) {
	g := newGateway(t, withHealth("\t\tinterval off"))
	g.primary.SetDefault(mockllm.Behavior{PythonJSON: true})
	requests := []struct {
		body      string
		wantUsage bool // the client sees a usage chunk
	}{
		{chatBody("deepseek-v3.2", false), false},
		{chatBody("deepseek-v3.2", true), false},
		{`{"model":"deepseek-v3.2","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Where is my order?"}]}`, true},
	}
	for _, r := range requests {
		resp, body := g.post(r.body)
		expectModel(t, resp, body, "deepseek-v3.2", "primary", 1)
		if !strings.Contains(r.body, `"stream":true`) {
			if !strings.Contains(body, `"usage": {`) {
				t.Fatalf("the mock did not answer Python-style: %s", body)
			}
			continue
		}
		usageChunks := 0
		for _, d := range sseData(body) {
			if d == "[DONE]" {
				continue
			}
			var chunk struct {
				Choices []json.RawMessage `json:"choices"`
				Usage   json.RawMessage   `json:"usage"`
			}
			if err := json.Unmarshal([]byte(d), &chunk); err != nil {
				t.Fatalf("chunk %q: %v", d, err)
			}
			if len(chunk.Usage) > 0 && string(chunk.Usage) != "null" {
				usageChunks++
			}
			if len(chunk.Choices) == 0 && (len(chunk.Usage) == 0 || string(chunk.Usage) == "null") {
				t.Errorf("a chunk without choices or usage reached the client: %s", d)
			}
		}
		if want := map[bool]int{true: 1, false: 0}[r.wantUsage]; usageChunks != want {
			t.Errorf("%s: the client saw %d usage chunks, want %d: %s", r.body, usageChunks, want, body)
		}
	}
	served := g.primary.Served("deepseek-chat")
	st := statsFor(t, g, "deepseek-v3.2", "primary")
	if served.Requests != 3 || st.Tokens.Input != int64(served.Prompt) || st.Tokens.Output != int64(served.Completion) {
		t.Errorf("tokens %+v, the mock served %+v: usage not read exactly", st.Tokens, served)
	}
	if st.Tokens.EstimatedInput != 0 || st.Tokens.EstimatedOutput != 0 {
		t.Errorf("usage estimated (%d, %d) though the provider reported it", st.Tokens.EstimatedInput, st.Tokens.EstimatedOutput)
	}
}

// TestStreamUsageOff: a provider configured with stream_usage off gets no
// stream_options (the client's own dropped too), and the stream's tokens
// are estimated from its text and counted as estimated.
func TestStreamUsageOff(t *testing.T) {
	router := strings.Replace(withHealth("\t\tinterval off"), "timeout 2s\n\t}\n\tprovider backup", "timeout 2s\n\t\tstream_usage off\n\t}\n\tprovider backup", 1)
	g := newGateway(t, router)
	bodies := []string{
		chatBody("deepseek-v3.2", true),
		`{"model":"deepseek-v3.2","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Where is my order?"}]}`,
		`{"stream_options":{"include_usage":true},"model":"deepseek-v3.2","stream":true,"messages":[{"role":"user","content":"Where is my order?"}]}`,
	}
	var wantIn, wantOut int64
	for _, b := range bodies {
		resp, out := g.post(b)
		expectModel(t, resp, out, "deepseek-v3.2", "primary", 1)
		var rb openai.Request
		if err := rb.Parse([]byte(b), openai.Chat); err != nil {
			t.Fatal(err)
		}
		wantIn += rb.InputTokens()
		wantOut += (int64(len("w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 ")) + 3) / 4
	}
	for _, r := range g.primary.Requests() {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(r.Body, &m); err != nil {
			t.Fatalf("upstream body %q: %v", r.Body, err)
		}
		if _, ok := m["stream_options"]; ok {
			t.Errorf("stream_options reached a provider with stream_usage off: %s", r.Body)
		}
	}
	st := statsFor(t, g, "deepseek-v3.2", "primary")
	if st.Tokens.Input != wantIn || st.Tokens.Output != wantOut || st.Tokens.EstimatedInput != wantIn || st.Tokens.EstimatedOutput != wantOut {
		t.Errorf("tokens %+v, want %d in and %d out, all estimated", st.Tokens, wantIn, wantOut)
	}
}
