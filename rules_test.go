package llmrouter

import (
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"cel.dev/cel-go/common/types"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/llmrouter/caddy-llm-router/internal/openai"
)

// parseBody reads a request body as the router does.
func parseBody(ep endpoint, body []byte) (*openai.Request, error) {
	r := new(openai.Request)
	return r, r.Parse(body, ep.api())
}

// varsOf computes every rule variable of a body.
func varsOf(t *testing.T, ep endpoint, body string, header http.Header, client string) map[string]any {
	t.Helper()
	rb, err := parseBody(ep, []byte(body))
	if err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	a := newRuleVars(ep, rb, header, client)
	out := map[string]any{}
	for _, v := range ruleVariables {
		val, ok := a.ResolveName(v.name)
		if !ok {
			t.Fatalf("no variable %s", v.name)
		}
		out[v.name] = val.(interface{ Value() any }).Value()
	}
	return out
}

func TestRuleVariables(t *testing.T) {
	long := `{"role":"user","content":"` + strings.Repeat("x", 50) + `"},{"role":"assistant","content":"ok"},`
	cases := []struct {
		name   string
		ep     endpoint
		body   string
		header http.Header
		want   map[string]any
	}{
		{"a plain question", chatEndpoint,
			`{"model":"auto","messages":[{"role":"system","content":"You are a shop assistant."},{"role":"user","content":"Where is my order?"}]}`, nil,
			map[string]any{"endpoint": "chat", "model": "auto", "messages": int64(2), "prompt_chars": int64(43), "last_user_chars": int64(18),
				"last_user": "Where is my order?", "system": "You are a shop assistant.", "has_tools": false, "has_images": false,
				"json_mode": false, "max_tokens": int64(0), "stream": false, "temperature": -1.0}},
		{"Vietnamese: characters, not bytes", chatEndpoint,
			`{"messages":[{"role":"user","content":"Sản phẩm nào đang giảm giá?"}],"stream":true,"temperature":0.2,"max_tokens":300}`, nil,
			map[string]any{"messages": int64(1), "last_user_chars": int64(27), "prompt_chars": int64(27), "last_user": "Sản phẩm nào đang giảm giá?",
				"stream": true, "temperature": 0.2, "max_tokens": int64(300)}},
		{"escapes count as the characters they stand for", chatEndpoint,
			`{"messages":[{"role":"user","content":"caf\u00e9 \ud83d\ude00 \"ok\""}]}`, nil,
			map[string]any{"last_user_chars": int64(11), "last_user": "café 😀 \"ok\""}},
		{"tools and JSON mode", chatEndpoint,
			`{"messages":[{"role":"user","content":"track 42"}],"tools":[{"type":"function","function":{"name":"track"}}],"response_format":{"type":"json_object"},"max_completion_tokens":64}`, nil,
			map[string]any{"has_tools": true, "json_mode": true, "max_tokens": int64(64)}},
		// decoded, as a provider reads it
		{"JSON mode written with an escape", chatEndpoint,
			`{"messages":[],"response_format":{"type":"json_\u006fbject"}}`, nil, map[string]any{"json_mode": true}},
		{"no tools in an empty list", chatEndpoint, `{"messages":[],"tools":[ ]}`, nil, map[string]any{"has_tools": false, "messages": int64(0)}},
		{"images as content parts", chatEndpoint,
			`{"messages":[{"role":"user","content":[{"type":"text","text":"Is this the right size?"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}`, nil,
			map[string]any{"has_images": true, "last_user": "Is this the right size?", "last_user_chars": int64(23)}},
		{"a long conversation: the last user message counts", chatEndpoint,
			`{"messages":[` + strings.Repeat(long, 5) + `{"role":"user","content":"and now?"}]}`, nil,
			map[string]any{"messages": int64(11), "last_user": "and now?", "last_user_chars": int64(8), "prompt_chars": int64(5*52 + 8)}},
		{"responses: input and instructions", responsesEndpoint,
			`{"model":"auto","instructions":"Be brief.","input":[{"role":"user","content":[{"type":"input_text","text":"Hi there"}]}],"max_output_tokens":16}`, nil,
			map[string]any{"endpoint": "responses", "messages": int64(1), "last_user": "Hi there", "system": "Be brief.", "max_tokens": int64(16), "prompt_chars": int64(17)}},
		{"completions: the prompt", completionsEndpoint, `{"prompt":"Say hi"}`, nil,
			map[string]any{"endpoint": "completions", "messages": int64(1), "last_user": "Say hi", "last_user_chars": int64(6)}},
		{"headers by lower-case name, and the client", chatEndpoint, `{"messages":[]}`, http.Header{"X-Team": {"storefront"}},
			map[string]any{"client": "storefront"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client := ""
			if tc.header != nil {
				client = tc.header.Get("X-Team")
			}
			got := varsOf(t, tc.ep, tc.body, tc.header, client)
			for k, want := range tc.want {
				if got[k] != want {
					t.Errorf("%s = %#v, want %#v", k, got[k], want)
				}
			}
			if tc.header != nil {
				if h := got["header"].(map[string]string); h["x-team"] != "storefront" {
					t.Errorf("header = %v", got["header"])
				}
			}
		})
	}
}

// exampleRules are the rules of example.Caddyfile's e-commerce chatbot.
var exampleRules = []*RouteRule{
	{Route: "complex_reasoning", When: []string{
		"has_tools || has_images",
		"messages > 6 || prompt_chars > 4000",
		`last_user_chars > 600 || contains_any(last_user, ["compare", "so sánh", "why", "tại sao", "explain", "giải thích"])`,
	}},
	{Route: "simple_qa", When: []string{"last_user_chars <= 600"}},
}

func TestRulesChoose(t *testing.T) {
	rs, err := compileRules(exampleRules)
	if err != nil {
		t.Fatal(err)
	}
	for body, want := range map[string]string{
		`{"messages":[{"role":"user","content":"Where is my order?"}]}`:                                           "rule:simple_qa#1",
		`{"messages":[{"role":"user","content":"Tại sao đơn hàng của tôi bị hủy?"}]}`:                             "rule:complex_reasoning#3",
		`{"messages":[{"role":"user","content":"COMPARE these two jackets"}]}`:                                    "rule:complex_reasoning#3",
		`{"messages":[{"role":"user","content":"track"}],"tools":[{"type":"function"}]}`:                          "rule:complex_reasoning#1",
		`{"messages":[` + strings.Repeat(`{"role":"user","content":"a"},`, 7) + `{"role":"user","content":"b"}]}`: "rule:complex_reasoning#2",
		`{"messages":[{"role":"user","content":"` + strings.Repeat("á", 601) + `"}]}`:                             "rule:complex_reasoning#3",
		`{"messages":[{"role":"user","content":"` + strings.Repeat("á", 600) + `"}]}`:                             "rule:simple_qa#1",
	} {
		rb, err := parseBody(chatEndpoint, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		got := "none"
		if r := rs.choose(newRuleVars(chatEndpoint, rb, nil, ""), nil, nil); r != nil {
			got = r.reason
		}
		if got != want {
			t.Errorf("%.60s: %s, want %s", body, got, want)
		}
		// one by one (the dry run's way, and the fallback after an error)
		// chooses the same as the combined program
		oneByOne := "none"
		if r := rs.choose(newRuleVars(chatEndpoint, rb, nil, ""), nil, func(ruleOutcome) {}); r != nil {
			oneByOne = r.reason
		}
		if oneByOne != got {
			t.Errorf("%.60s: %s one by one, %s combined", body, oneByOne, got)
		}
	}
}

// TestRulesCombinedWithComments: a When may end in a // comment, which must
// not swallow the rest of the combined program.
func TestRulesCombinedWithComments(t *testing.T) {
	rs, err := compileRules([]*RouteRule{
		{Route: "a", When: []string{"messages > 5 // long conversations"}},
		{Route: "b", When: []string{"// any short one\nmessages <= 5"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := parseBody(chatEndpoint, []byte(`{"messages":[{"role":"user","content":"hi"}]}`))
	if r := rs.choose(newRuleVars(chatEndpoint, rb, nil, ""), nil, nil); r == nil || r.route != "b" {
		t.Fatalf("chose %v, want b", r)
	}
	none, _ := compileRules([]*RouteRule{{Route: "a", When: []string{"false // never"}}})
	if r := none.choose(newRuleVars(chatEndpoint, rb, nil, ""), nil, nil); r != nil {
		t.Fatalf("chose %v, want none", r.reason)
	}
}

func TestRuleCompileErrors(t *testing.T) {
	for expr, want := range map[string]string{
		"has_tools > 3":          "no matching overload",
		"lenght > 3":             "undeclared reference to 'lenght'",
		"prompt_chars + 1":       "is a int, not a bool",
		"contains_any(system)":   "found no matching overload for 'contains_any'",
		"last_user.size() > 2 &": "Syntax error",
	} {
		_, err := compileRules([]*RouteRule{{Route: "r", When: []string{"true", expr}}})
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "when #2") {
			t.Errorf("%q: %v, want an error with %q", expr, err, want)
		}
	}
}

// TestRuleRuntimeError: a rule that fails when evaluated is false, and its
// failure is logged once a minute, not per request.
func TestRuleRuntimeError(t *testing.T) {
	rs, err := compileRules([]*RouteRule{{Route: "a", When: []string{`header["x-team"] == "b"`}}, {Route: "b", When: []string{"true"}}})
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	rb, _ := parseBody(chatEndpoint, []byte(`{"messages":[]}`))
	for range 3 {
		if r := rs.choose(newRuleVars(chatEndpoint, rb, http.Header{}, ""), zap.New(core), nil); r == nil || r.route != "b" {
			t.Fatalf("chose %v, want b after a failing rule", r)
		}
	}
	if n := logs.FilterMessage("routing rule failed; treated as false").Len(); n != 1 {
		t.Errorf("%d failure logs for 3 requests, want 1", n)
	}
}

// TestRuleCostLimit: a rule that CEL stops at the cost limit counts as
// false (the next rule decides), is logged once for the rule's life with
// where it was written, and is counted every time.
func TestRuleCostLimit(t *testing.T) {
	defer func(l uint64) { ruleCostLimit = l }(ruleCostLimit)
	ruleCostLimit = 1000 // a small body's text scanned a few times is far below, a large one's above
	rs, err := compileRules([]*RouteRule{
		{Route: "a", When: []string{`system.contains("refund") || last_user.matches("order [0-9]+")`}, Sources: []string{"Caddyfile:12"}},
		{Route: "b", When: []string{"true"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	value := func() float64 { return ruleCostCount(t, "a") }
	before := value()
	core, logs := observer.New(zap.WarnLevel)
	small, _ := parseBody(chatEndpoint, []byte(`{"messages":[{"role":"system","content":"refund"},{"role":"user","content":"hi"}]}`))
	if r := rs.choose(newRuleVars(chatEndpoint, small, nil, ""), zap.New(core), nil); r == nil || r.route != "a" {
		t.Fatalf("a small body: chose %v, want a", r)
	}
	text := strings.Repeat("x", 100_000)
	large, _ := parseBody(chatEndpoint, []byte(`{"messages":[{"role":"system","content":"`+text+` refund"},{"role":"user","content":"`+text+`"}]}`))
	for range 3 {
		if r := rs.choose(newRuleVars(chatEndpoint, large, nil, ""), zap.New(core), nil); r == nil || r.route != "b" {
			t.Fatalf("a large body: chose %v, want b (the rule over the limit is false)", r)
		}
	}
	entries := logs.FilterMessageSnippet("cost limit").All()
	if len(entries) != 1 || entries[0].ContextMap()["source"] != "Caddyfile:12" || entries[0].ContextMap()["route"] != "a" {
		t.Errorf("cost limit logs %+v, want one naming route a at Caddyfile:12", entries)
	}
	if got := value() - before; got != 3 {
		t.Errorf("rule_cost_exceeded_total{route=a,when=1} +%v, want 3", got)
	}
}

func TestContainsFold(t *testing.T) {
	for _, c := range []struct {
		s, sub string
		want   bool
	}{
		{"Giảm GIÁ hôm nay", "giảm giá", true}, {"Straße", "STRASSE", false}, {"ĐƠN HÀNG", "đơn hàng", true}, {"refund please", "Refund", true},
		{"abc", "", true}, {"abc", "abcd", false}, {"tại sao", "vì sao", false},
		{"xxSxsxsO", "so", true}, {"1-2-3", "-3", true}, {"ab", "b", true}, {"ab", "a", true}, {"sSs", "ss", true},
		{"SSSSSSSSSSSSSSSSSSSs", "sx", false}, {"đơn", "Đ", true},
	} {
		if got := containsFold(c.s, c.sub); got != c.want {
			t.Errorf("containsFold(%q, %q) = %v", c.s, c.sub, got)
		}
	}
}

// containsFoldEverywhere is containsFold's definition: a comparison at
// every character.
func containsFoldEverywhere(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
		_, n := utf8.DecodeRuneInString(s[i:])
		i += n
	}
	return sub == ""
}

// FuzzContainsFold: the fast search finds what a comparison at every
// character finds.
func FuzzContainsFold(f *testing.F) {
	f.Add("Có so sánh GIÁ không?", "SO SÁNH")
	f.Add("sSsSs", "ss")
	f.Add("ĐƠN HÀNG", "đơn")
	f.Fuzz(func(t *testing.T, s, sub string) {
		if got, want := containsFold(s, sub), containsFoldEverywhere(s, sub); got != want {
			t.Errorf("containsFold(%q, %q) = %v, want %v", s, sub, got, want)
		}
	})
}

// BenchmarkRules evaluates example.Caddyfile's rules on a short question:
// the allocations are those of the activation (its values, made once a
// request), not of the evaluation.
func BenchmarkRules(b *testing.B) {
	rs, err := compileRules(exampleRules)
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"model":"auto","messages":[{"role":"system","content":"You are the shop's assistant."},{"role":"user","content":"Sản phẩm nào đang giảm giá?"}]}`)
	rb, err := parseBody(chatEndpoint, body)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("activation", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			v := newRuleVars(chatEndpoint, rb, nil, "")
			for _, name := range []string{"has_tools", "has_images", "messages", "prompt_chars", "last_user_chars", "last_user"} {
				v.ResolveName(name)
			}
		}
	})
	b.Run("evaluate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r := rs.choose(newRuleVars(chatEndpoint, rb, nil, ""), nil, nil); r == nil || r.route != "simple_qa" {
				b.Fatal(r)
			}
		}
	})
}

// TestRulesMany: more Whens than one combined program can nest still load,
// and are tried in order.
func TestRulesMany(t *testing.T) {
	var rules []*RouteRule
	for i := range 400 {
		rules = append(rules, &RouteRule{Route: "r" + strconv.Itoa(i), When: []string{"messages == " + strconv.Itoa(i)}})
	}
	rs, err := compileRules(rules)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := parseBody(chatEndpoint, []byte(`{"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"},{"role":"user","content":"c"}]}`))
	if r := rs.choose(newRuleVars(chatEndpoint, rb, nil, ""), nil, nil); r == nil || r.route != "r3" {
		t.Fatalf("chose %v, want r3", r)
	}
	t.Logf("combined program: %v", rs.first != nil)
}

// TestNativeWhenMatchesCEL: a When that has a Go form is true exactly when
// CEL says it is, on bodies that exercise every variable; and the forms
// outside the native subset are left to CEL.
// nativeWhens have a Go form: TestNativeWhenMatchesCEL and
// FuzzNativeWhenMatchesCEL hold it to CEL's answers.
var nativeWhens = []string{
	"has_tools || has_images",
	"messages > 8 || prompt_chars > 6000",
	`last_user_chars > 400 || contains_any(last_user, ["compare", "difference", "why", "so sánh", "TẠI SAO"])`,
	"last_user_chars <= 400",
	"!has_tools && !(messages >= 3)",
	"messages == 1 && prompt_chars != 0 && last_user_chars < 30",
	"max_tokens > 0 && max_tokens <= 256",
	"temperature >= 0.0 && temperature < 0.5",
	"temperature == -1.0",
	`model == "auto" || model == ""`,
	`endpoint == "chat" && client != "storefront"`,
	`system < "M" || last_user >= "b"`,
	"stream == true",
	"json_mode != has_images",
	"true",
	"false || stream",
	`contains_any(system, [])`,
	`contains_any(last_user, [""])`,
	`contains_any("fixed text", ["TEXT"])`,
	"1 < 2",
	"last_user == system",
}

func TestNativeWhenMatchesCEL(t *testing.T) {
	native := nativeWhens
	celOnly := []string{
		`header["x-team"] == "vip"`,
		`last_user.contains("order")`,
		`size(last_user) > 10`,
		"messages + 1 > 2",
		"double(messages) > 1.5",
		`last_user.matches("^[0-9]+$")`,
		"messages in [1, 2, 3]",
		`contains_any(last_user, [system])`,
		`has(header.x)`,
	}
	bodies := []string{
		`{"model":"auto","messages":[{"role":"system","content":"You are a shop assistant."},{"role":"user","content":"Where is my order?"}]}`,
		`{"messages":[{"role":"user","content":"Tại sao đơn hàng của tôi bị hủy?"}],"stream":true,"temperature":0.2,"max_tokens":300}`,
		`{"messages":[{"role":"user","content":"track"}],"tools":[{"type":"function"}],"response_format":{"type":"json_object"}}`,
		`{"messages":[{"role":"user","content":[{"type":"text","text":"COMPARE sizes"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}],"temperature":0.7}`,
		`{"model":"gpt-4.1","messages":[` + strings.Repeat(`{"role":"user","content":"a"},`, 9) + `{"role":"user","content":"b"}],"max_tokens":64}`,
		`{"messages":[{"role":"user","content":"` + strings.Repeat("á", 401) + `"}],"stream":false}`,
		`{"messages":[]}`,
	}
	check := func(expr string, wantNative bool) {
		t.Helper()
		rs, err := compileRules([]*RouteRule{{Route: "r", When: []string{expr}}})
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		r := rs.rules[0]
		if (r.native != nil) != wantNative || rs.native != wantNative {
			t.Fatalf("%s: native %v, want %v", expr, r.native != nil, wantNative)
		}
		for _, body := range bodies {
			rb, err := parseBody(chatEndpoint, []byte(body))
			if err != nil {
				t.Fatal(err)
			}
			for _, client := range []string{"", "storefront"} {
				out, _, err := r.prg.Eval(newRuleVars(chatEndpoint, rb, http.Header{"X-Team": {"vip"}}, client))
				if err != nil {
					t.Fatalf("%s: CEL: %v", expr, err)
				}
				cel := out == types.True
				if got := rs.choose(newRuleVars(chatEndpoint, rb, http.Header{"X-Team": {"vip"}}, client), nil, nil) != nil; got != cel {
					t.Errorf("%s on %.50s (client %q): chose %v, CEL says %v", expr, body, client, got, cel)
				}
			}
		}
	}
	for _, expr := range native {
		check(expr, true)
	}
	for _, expr := range celOnly {
		check(expr, false)
	}
	// the example's rules run without CEL
	if rs, err := compileRules(exampleRules); err != nil || !rs.native {
		t.Errorf("example rules: native %v, %v", rs != nil && rs.native, err)
	}
}

// FuzzNativeWhenMatchesCEL: on any request body, each native When says
// what CEL says.
func FuzzNativeWhenMatchesCEL(f *testing.F) {
	f.Add(`{"messages":[{"role":"user","content":"Tại sao đơn hàng của tôi bị hủy?"}],"temperature":0.3}`)
	f.Add(`{"model":"auto","messages":[{"role":"system","content":"Be brief"},{"role":"user","content":[{"type":"text","text":"COMPARE"},{"type":"image_url"}]}],"tools":[{}],"max_tokens":9}`)
	f.Add(`{"messages":[]}`)
	var sets []*ruleSet
	for _, expr := range nativeWhens {
		rs, err := compileRules([]*RouteRule{{Route: "r", When: []string{expr}}})
		if err != nil || !rs.native {
			f.Fatalf("%s: %v", expr, err)
		}
		sets = append(sets, rs)
	}
	f.Fuzz(func(t *testing.T, body string) {
		rb, err := parseBody(chatEndpoint, []byte(body))
		if err != nil {
			return
		}
		for i, rs := range sets {
			out, _, err := rs.rules[0].prg.Eval(newRuleVars(chatEndpoint, rb, nil, "storefront"))
			if err != nil {
				t.Fatalf("%s: CEL: %v", nativeWhens[i], err)
			}
			if got := rs.rules[0].native(newRuleVars(chatEndpoint, rb, nil, "storefront")); got != (out == types.True) {
				t.Errorf("%s on %q: native %v, CEL %v", nativeWhens[i], body, got, out)
			}
		}
	})
}

// TestRuleCostLimitCombined: a When over the cost limit is false however
// choose evaluates the rules: the combined program (the gateway's way)
// chooses what one by one (the dry run's way) does, also when the When
// costs more than one limit but less than the combined program's.
func TestRuleCostLimitCombined(t *testing.T) {
	defer func(l uint64) { ruleCostLimit = l }(ruleCostLimit)
	ruleCostLimit = 1000
	rs, err := compileRules([]*RouteRule{
		{Route: "a", When: []string{`last_user.contains("compare")`}},
		{Route: "b", When: []string{"true"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if rs.native || rs.first == nil {
		t.Fatal("want a combined CEL program")
	}
	// a text costing between one limit and two to scan
	text := strings.Repeat("x", 15_000) + " compare"
	rb, _ := parseBody(chatEndpoint, []byte(`{"messages":[{"role":"user","content":"`+text+`"}]}`))
	oneByOne := rs.choose(newRuleVars(chatEndpoint, rb, nil, ""), nil, func(ruleOutcome) {})
	combined := rs.choose(newRuleVars(chatEndpoint, rb, nil, ""), nil, nil)
	if oneByOne == nil || oneByOne.route != "b" {
		t.Fatalf("one by one: chose %v, want b (a is over the limit)", oneByOne)
	}
	if combined != oneByOne {
		t.Errorf("combined: chose %s, one by one %s", combined.route, oneByOne.route)
	}
}

// TestRuleCostScansText: contains_any and size cost what they scan of
// their text, as CEL's own string functions do, so that a rule calling
// them in a loop the client sizes (one a header) is stopped at the cost
// limit rather than scanning a large body once a header.
func TestRuleCostScansText(t *testing.T) {
	text := strings.Repeat("x", 1_000_000)
	rb, err := parseBody(chatEndpoint, []byte(`{"messages":[{"role":"user","content":"`+text+`"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	header := http.Header{}
	for i := range 1000 {
		header.Set("X-Hint-"+strconv.Itoa(i), "1")
	}
	for _, when := range []string{
		`header.exists(k, contains_any(last_user, [k]))`,
		`header.exists(k, size(last_user) < size(k))`,
		`header.exists(k, last_user.size() < k.size())`,
	} {
		rs, err := compileRules([]*RouteRule{{Route: "a", When: []string{when}}})
		if err != nil {
			t.Fatal(err)
		}
		var outcomes []ruleOutcome
		rs.choose(newRuleVars(chatEndpoint, rb, header, ""), nil, func(o ruleOutcome) { outcomes = append(outcomes, o) })
		if len(outcomes) != 1 || outcomes[0].err == nil || !strings.Contains(outcomes[0].err.Error(), "cost limit exceeded") {
			t.Errorf("%s over a 1 MB text and 1000 headers: %+v, want stopped at the cost limit", when, outcomes)
		}
	}
}

// TestRuleErrorHidesHeaders: a When failing on a header's value (here the
// client's Authorization) must not put that value in the warning log nor in
// the dry run's outcome.
func TestRuleErrorHidesHeaders(t *testing.T) {
	const secret = "sk-client-SECRET-0123456789"
	rs, err := compileRules([]*RouteRule{
		{Route: "a", When: []string{`timestamp(header["authorization"]) > timestamp("2020-01-01T00:00:00Z")`}},
		{Route: "b", When: []string{`{"x": 1}[header["authorization"]] == 1`}},
	})
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	rb, _ := parseBody(chatEndpoint, []byte(`{"messages":[]}`))
	h := http.Header{"Authorization": {"Bearer " + secret}}
	var outcomes []ruleOutcome
	rs.choose(newRuleVars(chatEndpoint, rb, h, ""), zap.New(core), func(o ruleOutcome) { outcomes = append(outcomes, o) })
	if len(outcomes) != 2 || logs.Len() != 2 {
		t.Fatalf("%d outcomes, %d logs, want 2 failures", len(outcomes), logs.Len())
	}
	for _, o := range outcomes {
		if o.err == nil || strings.Contains(o.err.Error(), secret) {
			t.Errorf("dry run outcome %v, want an error without the header's value", o.err)
		}
	}
	for _, e := range logs.All() {
		if strings.Contains(e.ContextMap()["error"].(string), secret) {
			t.Errorf("log %v holds the header's value", e.ContextMap())
		}
	}
}

// TestRuleErrorHidesText: a When failing on the request's text (a
// conversion of the last user message or the system prompt) must not put
// that text in the warning log nor in the dry run's outcome: CEL quotes
// the value a conversion or a pattern failed on (as it came, or escaped),
// and a prompt is the client's data, kept out of logs as out of spans.
func TestRuleErrorHidesText(t *testing.T) {
	const question, system = "Patient Jane Roe (diagnosis: confidential", `You answer for \"ACME\"\nprivate ledger`
	rs, err := compileRules([]*RouteRule{
		{Route: "a", When: []string{`int(last_user) > 3`}},
		{Route: "b", When: []string{`timestamp(system) > timestamp("2020-01-01T00:00:00Z")`}},
		{Route: "c", When: []string{`duration(last_user) > duration("1s")`}},
		{Route: "d", When: []string{`"x".matches(last_user)`}},
	})
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	rb, _ := parseBody(chatEndpoint, []byte(`{"messages":[{"role":"system","content":"`+system+`"},{"role":"user","content":"`+question+`"}]}`))
	var outcomes []ruleOutcome
	rs.choose(newRuleVars(chatEndpoint, rb, http.Header{}, ""), zap.New(core), func(o ruleOutcome) { outcomes = append(outcomes, o) })
	if len(outcomes) != 4 || logs.Len() != 4 {
		t.Fatalf("%d outcomes, %d logs, want 4 failures", len(outcomes), logs.Len())
	}
	leaks := func(s string) bool {
		return strings.Contains(s, "Jane") || strings.Contains(s, "confidential") || strings.Contains(s, "ACME")
	}
	for _, o := range outcomes {
		if o.err == nil || leaks(o.err.Error()) {
			t.Errorf("dry run outcome %v, want an error without the request's text", o.err)
		}
	}
	for _, e := range logs.All() {
		if leaks(e.ContextMap()["error"].(string)) {
			t.Errorf("log %v holds the request's text", e.ContextMap())
		}
	}
}

// TestRuleErrorScrubLinear: masking the headers' values in a rule's error
// costs what the headers hold, not their words times the error's length: a
// client's header of many words, quoted by the error (a conversion, a
// timestamp of it, here), made one request allocate (and scan) the error
// once a word: 220 MB for a header of 32 KB.
func TestRuleErrorScrubLinear(t *testing.T) {
	rs, err := compileRules([]*RouteRule{{Route: "a", When: []string{`timestamp(header["x-deadline"]) > timestamp("2020-01-01T00:00:00Z")`}}})
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := parseBody(chatEndpoint, []byte(`{"messages":[]}`))
	perByte := func(n int) float64 {
		var v strings.Builder
		for i := 0; v.Len() < n; i++ {
			fmt.Fprintf(&v, "w%06d\t", i) // a tab: quoted as \t, so the value as a whole is not found
		}
		h := http.Header{"X-Deadline": {v.String()}}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		rs.choose(newRuleVars(chatEndpoint, rb, h, ""), nil, func(ruleOutcome) {})
		runtime.ReadMemStats(&after)
		return float64(after.TotalAlloc-before.TotalAlloc) / float64(n)
	}
	small, large := perByte(4<<10), perByte(32<<10)
	t.Logf("%.1f bytes allocated a header byte at 4 KB, %.1f at 32 KB", small, large)
	if large > 2*small+16 {
		t.Errorf("%.1f bytes allocated a header byte at 32 KB, %.1f at 4 KB: not linear", large, small)
	}
}

// ruleCostCount is rule_cost_exceeded_total of route's first rule.
func ruleCostCount(t *testing.T, route string) float64 {
	t.Helper()
	var m dto.Metric
	if err := metrics.ruleCost.WithLabelValues(route, "1").Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestRuleCostLimitNotByText: a rule's failure is told to be the cost
// limit by CEL's cancellation, not by its text, which may quote the
// client's: a prompt saying "cost limit exceeded", quoted by a failed
// conversion, counted in rule_cost_limit_total, used up the limit's one
// warning (a real one then went unlogged) and kept the failure out of the
// log.
func TestRuleCostLimitNotByText(t *testing.T) {
	rs, err := compileRules([]*RouteRule{{Route: "a", When: []string{`timestamp(last_user) > timestamp("2020-01-01T00:00:00Z")`}}})
	if err != nil {
		t.Fatal(err)
	}
	value := func() float64 { return ruleCostCount(t, "a") }
	before := value()
	core, logs := observer.New(zap.WarnLevel)
	rb, _ := parseBody(chatEndpoint, []byte(`{"messages":[{"role":"user","content":"operation cancelled: actual cost limit exceeded"}]}`))
	rs.choose(newRuleVars(chatEndpoint, rb, http.Header{}, ""), zap.New(core), nil)
	if n := value() - before; n != 0 {
		t.Errorf("a failed conversion counted %v times at the cost limit", n)
	}
	if logs.FilterMessage("routing rule failed; treated as false").Len() != 1 || logs.FilterMessageSnippet("cost limit").Len() != 0 {
		t.Errorf("logs %v, want the rule's failure", logs.All())
	}
}
