package llmrouter

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestParseRequestBody(t *testing.T) {
	cases := []struct {
		body         string
		model        string
		stream       bool
		includeUsage bool
		messages     bool
	}{
		{`{"model":"gpt-4.1","messages":[]}`, "gpt-4.1", false, false, true},
		{` { "messages" : [ {"content":"{\"model\":\"x\"}"} ] , "model" : "a\u00e9" } `, "aé", false, false, true},
		{`{"model":null,"stream":true,"messages":[1]}`, "", true, false, true},
		{`{"stream":false,"stream_options":{"include_usage":true},"messages":[]}`, "", false, false, true}, // only streams care
		{`{"stream":true,"stream_options":{"include_usage":true},"messages":[]}`, "", true, true, true},
		{`{"nested":{"model":"inner"},"messages":"not an array"}`, "", false, false, false},
	}
	for _, tc := range cases {
		rb, err := parseRequestBody([]byte(tc.body))
		if err != nil {
			t.Errorf("%s: %v", tc.body, err)
			continue
		}
		if rb.modelName != tc.model || rb.stream != tc.stream || rb.includeUsage != tc.includeUsage || rb.hasMessages != tc.messages {
			t.Errorf("%s: got model %q stream %v usage %v messages %v", tc.body, rb.modelName, rb.stream, rb.includeUsage, rb.hasMessages)
		}
	}
}

// TestScannerAgreesWithEncodingJSON: the scanner accepts exactly what
// encoding/json accepts, for objects.
func TestScannerAgreesWithEncodingJSON(t *testing.T) {
	inputs := []string{
		`{}`, `{"a":1}`, `{"a":-0.5e+10}`, `{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":-}`, `{"a":1e}`,
		`{"a":"\q"}`, `{"a":"\u12"}`, `{"a":"\u12ab"}`, "{\"a\":\"tab\there\"}", `{"a":[1,2,]}`, `{"a":[,]}`,
		`{"a":tru}`, `{"a":true}`, `{"a":nul}`, `{"a" 1}`, `{"a":1,}`, `{a:1}`, `{"a":1}}`, `{"a":1} x`,
		`{"a":{"b":[{"c":null}]}}`, `{"a":"unterminated}`, `{"a":[1 2]}`, `{"a":"\/\b\f\n\r\t\"\\"}`,
		`{"a":1}` + "\n", "\t{\"a\":1}\r\n", `{"a":-01}`, `{"a":1E5}`, `{"a":1e-5}`, `{"a":"é✓"}`,
		strings.Repeat(`{"a":`, 100) + "1" + strings.Repeat("}", 100),
	}
	for _, in := range inputs {
		_, err := parseRequestBody([]byte(in))
		if got, want := err == nil, json.Valid([]byte(in)); got != want {
			t.Errorf("%q: scanner says valid=%v (%v), encoding/json says %v", in, got, err, want)
		}
	}
}

func FuzzParseRequestBody(f *testing.F) {
	f.Add(`{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	f.Add(`{"model":"x","stream":true,"stream_options":{"include_usage":false},"messages":[]}`)
	f.Add(`{"stream":true,"stream_options":null,"messages":[]}`)
	f.Add(`{"messages":[],"stream":true,"stream_options":{ }}`)
	f.Add(`{"model":[],"messages":[]}`)
	f.Add(`{"model":null,"stream":true}`)
	f.Add(`{"mod\u0065l":"x","stream_options":{"include_us\u0061ge":false},"stream":true}`)
	f.Fuzz(func(t *testing.T, in string) {
		rb, err := parseRequestBody([]byte(in))
		valid := json.Valid([]byte(in)) && strings.HasPrefix(strings.TrimLeft(in, " \t\r\n"), "{")
		var pe *paramError
		if err != nil && valid && errors.As(err, &pe) {
			return // JSON, but not a request: "model" not a string, or a member twice
		}
		if (err == nil) != valid {
			t.Fatalf("%q: scanner err %v, json.Valid %v", in, err, valid)
		}
		if err != nil {
			return
		}
		var before map[string]any
		if json.Unmarshal([]byte(in), &before) != nil {
			return // duplicate keys and the like: encoding/json is laxer than us here
		}
		if _, isString := before["model"].(string); before["model"] != nil && !isString {
			return
		}
		out := rb.upstreamBody("up/model-1")
		var after map[string]any
		if err := json.Unmarshal(out, &after); err != nil {
			t.Fatalf("edited body is not JSON: %q -> %q: %v", in, out, err)
		}
		if after["model"] != "up/model-1" {
			t.Fatalf("model not rewritten: %q", out)
		}
		if rb.stream {
			opts, _ := after["stream_options"].(map[string]any)
			if opts["include_usage"] != true {
				t.Fatalf("include_usage not set: %q", out)
			}
		}
	})
}

// hasNonStringModel reports whether a JSON object has a top-level "model"
// that is neither a string nor null.
func hasNonStringModel(in string) bool {
	members, _ := jsonMembers([]byte(in))
	for _, m := range members {
		if m.key == "model" && m.val[0] != '"' && string(m.val) != "null" {
			return true
		}
	}
	return false
}

func TestUpstreamBodyEdits(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{"model":"a","messages":[]}`, `{"model":"up","messages":[]}`},
		{`{"messages":[]}`, `{"model":"up","messages":[]}`},
		{`{ }`, `{"model":"up" }`},
		{`{"model":"a","stream":true,"messages":[]}`, `{"stream_options":{"include_usage":true},"model":"up","stream":true,"messages":[]}`},
		{`{"stream":true,"stream_options":{},"model":"a"}`, `{"stream":true,"stream_options":{"include_usage":true},"model":"up"}`},
		{`{"stream":true,"stream_options":{"x":1},"model":"a"}`, `{"stream":true,"stream_options":{"include_usage":true,"x":1},"model":"up"}`},
		{`{"model":"a","stream":true,"stream_options":{"include_usage":false}}`, `{"model":"up","stream":true,"stream_options":{"include_usage":true}}`},
		{`{"model":"a","stream":true,"stream_options":null}`, `{"model":"up","stream":true,"stream_options":{"include_usage":true}}`},
		{`{"model":"a","stream":true,"stream_options":{"include_usage":true}}`, `{"model":"up","stream":true,"stream_options":{"include_usage":true}}`},
		{`{"stream":true,"messages":[]}`, `{"model":"up","stream_options":{"include_usage":true},"stream":true,"messages":[]}`},
	}
	for _, tc := range cases {
		rb, err := parseRequestBody([]byte(tc.in))
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if got := string(rb.upstreamBody("up")); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

// TestParseRequestBodyFields: what the scanner extracts from the top level,
// and only from the top level.
func TestParseRequestBodyFields(t *testing.T) {
	cases := []struct {
		body         string
		model        string
		hasModel     bool // a "model" string is present
		stream       bool
		includeUsage bool
		messages     bool
		input        bool
	}{
		{`{"model":"a\"b\\c\/d","messages":[]}`, `a"b\c/d`, true, false, false, true, false},
		{`{"model":"\u0067pt-4\u002e1"}`, "gpt-4.1", true, false, false, false, false},
		{`{"model":"\ud83d\ude00 \t\n"}`, "😀 \t\n", true, false, false, false, false},
		{`{"model":"","messages":[]}`, "", true, false, false, true, false},
		{`{"model":"é✓","input":"text"}`, "é✓", true, false, false, false, true},
		{`{"model":null}`, "", true, false, false, false, false}, // present: the edit replaces the null
		{`{"input":null}`, "", false, false, false, false, false},
		{`{"input":""}`, "", false, false, false, false, true},
		{`{"input":[]}`, "", false, false, false, false, true},
		{`{"input":[[1,2],[3]]}`, "", false, false, false, false, true},
		{`{"messages":{}}`, "", false, false, false, false, false},
		{`{"messages":null}`, "", false, false, false, false, false},
		{`{"messages":[],"messages":"x"}`, "", false, false, false, false, false}, // the last one counts, as in encoding/json
		{`{"stream":"true"}`, "", false, false, false, false, false},
		{`{"stream":1}`, "", false, false, false, false, false},
		{`{"stream":null}`, "", false, false, false, false, false},
		{`{"stream":true,"stream_options":{"include_usage":"true"}}`, "", false, true, false, false, false},
		{`{"stream":true,"stream_options":{"include_usage":1}}`, "", false, true, false, false, false},
		{`{"stream":true,"stream_options":{"nested":{"include_usage":true}}}`, "", false, true, false, false, false},
		{`{"stream":true,"include_usage":true}`, "", false, true, false, false, false},
		{`{"stream":true,"stream_options":{"include_usage":true}}`, "", false, true, true, false, false},
		{`{"metadata":{"model":"inner","stream":true,"messages":[],"input":1}}`, "", false, false, false, false, false},
		{`{"tools":[{"model":"x"}],"model":"outer"}`, "outer", true, false, false, false, false},
		{`{"Model":"case","MESSAGES":[]}`, "", false, false, false, false, false}, // keys are case-sensitive
	}
	for _, tc := range cases {
		rb, err := parseRequestBody([]byte(tc.body))
		if err != nil {
			t.Errorf("%s: %v", tc.body, err)
			continue
		}
		if rb.modelName != tc.model || (rb.model.start >= 0) != tc.hasModel || rb.stream != tc.stream ||
			rb.includeUsage != tc.includeUsage || rb.hasMessages != tc.messages || rb.hasInput != tc.input {
			t.Errorf("%s: got model %q (span %v) stream %v usage %v messages %v input %v", tc.body,
				rb.modelName, rb.model, rb.stream, rb.includeUsage, rb.hasMessages, rb.hasInput)
		}
		if rb.model.start >= 0 && rb.raw[rb.model.start] != '"' && rb.raw[rb.model.start] != 'n' {
			t.Errorf("%s: model span %v does not start at its quote", tc.body, rb.model)
		}
		if want := tc.stream && !tc.includeUsage; rb.stripUsage() != want {
			t.Errorf("%s: stripUsage = %v, want %v", tc.body, rb.stripUsage(), want)
		}
	}
}

// TestParseRequestBodyRejects: bodies that are JSON but not a usable
// request, and bodies that are not JSON.
func TestParseRequestBodyRejects(t *testing.T) {
	cases := []string{
		"", " \n\t", `[]`, `[{"model":"a"}]`, `"model"`, `1`, `null`, `true`,
		`{"model":1}`, `{"model":["a"]}`, `{"model":{"name":"a"}}`, `{"model":true}`, `{"model":"a","model":2}`,
		// a member the router reads, twice (escapes decoded): JSON, but the
		// provider could read another value than the router did
		`{"stream":true,"stream":false}`, `{"model":"a","mod\u0065l":"b"}`, `{"stream_options":{},"stream_options":null}`,
		`{"stream":true,"stream_options":{"include_usage":true,"include_us\u0061ge":false}}`,
		`{"model":"\ud83d"x}`, `{"model":"a\u00"}`,
		`{} {}`, `{}x`, `{}]`, `{},`, "{}\x00", "\ufeff{}", "{}\v", "\f{}",
	}
	for _, in := range cases {
		if rb, err := parseRequestBody([]byte(in)); err == nil {
			t.Errorf("%q: accepted (model %q)", in, rb.modelName)
		}
	}
	var se *SyntaxError
	_, err := parseRequestBody([]byte(`{"a":1} x`))
	if !asSyntaxError(err, &se) || se.Offset != 8 {
		t.Errorf("trailing garbage: %v, want a SyntaxError at byte 8", err)
	}
	if _, err := parseRequestBody([]byte(`[1]`)); err != errNotObject {
		t.Errorf("array: %v, want errNotObject", err)
	}
}

func asSyntaxError(err error, se **SyntaxError) bool {
	e, ok := err.(*SyntaxError)
	*se = e
	return ok
}

// TestScannerValidity compares the scanner with encoding/json on a table of
// valid and invalid bodies: parseRequestBody accepts exactly the valid JSON
// objects.
func TestScannerValidity(t *testing.T) {
	inputs := []string{
		// top level
		``, ` `, `[]`, `[1]`, `"s"`, `0`, `null`, `true`, `{`, `}`, `{}`, ` {} `, "\r\n{}\r\n", `{}}`, `{}{}`, `{} 1`, `{}/`,
		"{}\x00", "\xef\xbb\xbf{}", "{}\v", "\u00a0{}",
		// members
		`{"":1}`, `{"a":1,"a":2}`, `{"a"}`, `{"a":}`, `{:1}`, `{1:1}`, `{null:1}`, `{"a":1 "b":2}`, `{"a":1,,"b":2}`, `{,"a":1}`,
		`{'a':1}`, `{"a":1;}`, `{"a":{"b":{}}}`, `{"a":{"b":}}`, `{"a":{"b":1,}}`,
		// arrays
		`{"a":[]}`, `{"a":[ ]}`, `{"a":[[[]]]}`, `{"a":[1,[2,[3]]]}`, `{"a":[}`, `{"a":[1,]}`, `{"a":[1}`, `{"a":]}`, `{"a":[[]}`,
		// numbers
		`{"a":0}`, `{"a":-0}`, `{"a":0.0}`, `{"a":1e9}`, `{"a":1E+9}`, `{"a":-1.5e-9}`, `{"a":123456789012345678901234567890}`,
		`{"a":00}`, `{"a":+1}`, `{"a":1.e5}`, `{"a":-.5}`, `{"a":1e+}`, `{"a":0x1}`, `{"a":Infinity}`, `{"a":NaN}`, `{"a":1_000}`,
		`{"a":- 1}`, `{"a":1 .5}`, `{"a":--1}`,
		// strings
		`{"a":""}`, `{"a":"\u0000"}`, `{"a":"\uD83D\uDE00"}`, `{"a":"\uDEAD"}`, `{"a":"\uGGGG"}`, `{"a":"\u00e"}`, `{"a":"\U00e9"}`,
		`{"a":"\x41"}`, `{"a":"\'"}`, `{"a":"\0"}`, `{"a":"\`, `{"a":"\"}`, "{\"a\":\"\x01\"}", "{\"a\":\"\x1f\"}", "{\"a\":\"\x7f\"}",
		"{\"a\":\"\xff\xfe\"}", "{\"a\":\"\xc3\"}", "{\"a\":\"line\nbreak\"}", `{"a":"é✓😀"}`, `{"a\"b":1}`, `{"a\u0000":1}`,
		// literals
		`{"a":true}`, `{"a":false}`, `{"a":null}`, `{"a":True}`, `{"a":truex}`, `{"a":nulll}`, `{"a":fals}`, `{"a":t}`, `{"a":n}`,
		`{"a":true,"b":false,"c":null}`, `{"a":undefined}`,
		// a realistic request
		`{"model":"gpt-4.1","stream":true,"stream_options":{"include_usage":false},"messages":[{"role":"user","content":[{"type":"text","text":"hi \"there\""}]}],"temperature":0.7,"max_tokens":256,"tools":[]}`,
	}
	for _, in := range inputs {
		valid := json.Valid([]byte(in)) && strings.HasPrefix(strings.TrimLeft(in, " \t\r\n"), "{")
		_, err := parseRequestBody([]byte(in))
		if (err == nil) != valid {
			t.Errorf("%q: scanner err %v, but encoding/json valid object = %v", in, err, valid)
		}
	}
}

// TestScannerDepthLimit: the scanner limits nesting as encoding/json does,
// and a very deep body is rejected without exhausting the stack.
func TestScannerDepthLimit(t *testing.T) {
	objects := func(n int) string { // n levels of objects, the top level included
		return strings.Repeat(`{"a":`, n-1) + "{}" + strings.Repeat("}", n-1)
	}
	arrays := func(n int) string { // the top-level object, then n-1 levels of arrays
		return `{"a":` + strings.Repeat("[", n-1) + strings.Repeat("]", n-1) + "}"
	}
	cases := []struct {
		name string
		in   string
		skip string
	}{
		{"objects 100", objects(100), ""},
		{"objects 9999", objects(9999), ""},
		{"objects 10000", objects(10000), ""},
		{"objects 10001", objects(10001), ""},
		{"objects 10002", objects(10002), ""},
		{"arrays 10000", arrays(10000), ""},
		{"arrays 10001", arrays(10001), ""},
		{"arrays 10002", arrays(10002), ""},
		{"objects 1000000", objects(1000000), ""},
		{"arrays 1000000 unclosed", `{"a":` + strings.Repeat("[", 1000000), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip != "" {
				t.Skip(tc.skip)
			}
			_, err := parseRequestBody([]byte(tc.in))
			if want := json.Valid([]byte(tc.in)); (err == nil) != want {
				t.Errorf("scanner err %v, encoding/json valid = %v", err, want)
			}
		})
	}
}

// TestUpstreamBodyDecodes: the edited body is JSON that decodes to the
// client's body with only model and, for streams, include_usage changed.
func TestUpstreamBodyDecodes(t *testing.T) {
	cases := []struct {
		name     string
		in       string
		upstream string
		want     string // the decoded upstream body
		skip     string
	}{
		{"model replaced", `{"model":"a","messages":[{"role":"user","content":"hi"}],"temperature":0.2}`, "b",
			`{"model":"b","messages":[{"role":"user","content":"hi"}],"temperature":0.2}`, ""},
		{"model with escapes replaced", `{"model":"a\"\u00e9","messages":[]}`, "b",
			`{"model":"b","messages":[]}`, ""},
		{"upstream name needing escapes", `{"model":"a","messages":[]}`, `org/mod"el\é✓`,
			`{"model":"org/mod\"el\\é✓","messages":[]}`, ""},
		{"model inserted", ` { "messages" : [ ] } `, "b", `{"model":"b","messages":[]}`, ""},
		{"model inserted in an empty object", "{\n}", "b", `{"model":"b"}`, ""},
		{"model last", `{"messages":[],"model":"a"}`, "b", `{"messages":[],"model":"b"}`, ""},
		{"nested model untouched", `{"model":"a","tools":[{"model":"keep"}],"metadata":{"model":"keep"}}`, "b",
			`{"model":"b","tools":[{"model":"keep"}],"metadata":{"model":"keep"}}`, ""},
		{"embeddings", `{"model":"a","input":["x","y"]}`, "b", `{"model":"b","input":["x","y"]}`, ""},
		{"stream: include_usage inserted", `{"model":"a","stream":true,"messages":[]}`, "b",
			`{"model":"b","stream":true,"stream_options":{"include_usage":true},"messages":[]}`, ""},
		{"stream, no model: both inserted", `{"stream":true}`, "b",
			`{"model":"b","stream":true,"stream_options":{"include_usage":true}}`, ""},
		{"stream_options empty with spaces", `{"stream":true,"stream_options":{ },"model":"a"}`, "b",
			`{"stream":true,"stream_options":{"include_usage":true},"model":"b"}`, ""},
		{"stream_options with other members", `{"stream":true,"stream_options":{ "x" : [1] },"model":"a"}`, "b",
			`{"stream":true,"stream_options":{"include_usage":true,"x":[1]},"model":"b"}`, ""},
		{"stream_options before model", `{"stream_options":{"x":1},"model":"a","stream":true}`, "b",
			`{"stream_options":{"include_usage":true,"x":1},"model":"b","stream":true}`, ""},
		{"include_usage false replaced", `{"model":"a","stream":true,"stream_options":{"x":1,"include_usage":false}}`, "b",
			`{"model":"b","stream":true,"stream_options":{"x":1,"include_usage":true}}`, ""},
		{"include_usage null replaced", `{"model":"a","stream":true,"stream_options":{"include_usage":null}}`, "b",
			`{"model":"b","stream":true,"stream_options":{"include_usage":true}}`, ""},
		{"include_usage string replaced", `{"model":"a","stream":true,"stream_options":{"include_usage":"yes"}}`, "b",
			`{"model":"b","stream":true,"stream_options":{"include_usage":true}}`, ""},
		{"include_usage object replaced", `{"model":"a","stream":true,"stream_options":{"include_usage":{"a":[]}}}`, "b",
			`{"model":"b","stream":true,"stream_options":{"include_usage":true}}`, ""},
		{"stream_options null replaced", `{"stream":true,"stream_options":null,"model":"a"}`, "b",
			`{"stream":true,"stream_options":{"include_usage":true},"model":"b"}`, ""},
		{"stream_options array replaced", `{"model":"a","stream":true,"stream_options":[1,2]}`, "b",
			`{"model":"b","stream":true,"stream_options":{"include_usage":true}}`, ""},
		{"stream_options number replaced", `{"model":"a","stream":true,"stream_options":0}`, "b",
			`{"model":"b","stream":true,"stream_options":{"include_usage":true}}`, ""},
		{"include_usage true kept", `{"model":"a","stream":true,"stream_options":{"include_usage":true}}`, "b",
			`{"model":"b","stream":true,"stream_options":{"include_usage":true}}`, ""},
		{"no stream: stream_options untouched", `{"model":"a","stream":false,"stream_options":{"include_usage":false}}`, "b",
			`{"model":"b","stream":false,"stream_options":{"include_usage":false}}`, ""},
		{
			"model null", `{"model":null,"messages":[]}`, "b", `{"model":"b","messages":[]}`,
			"",
		},
		{
			"model null after a string", `{"model":"a","model":null,"messages":[]}`, "b", "",
			"",
		},
		{
			"include_usage true then false", `{"model":"a","stream":true,"stream_options":{"include_usage":true,"include_usage":false}}`, "b",
			"", "",
		},
		{
			"escaped model key", `{"model":"a","mod\u0065l":"other","messages":[]}`, "b", "",
			"",
		},
		{
			"escaped model key only", `{"mod\u0065l":"other","messages":[]}`, "b", `{"model":"b","messages":[]}`,
			"",
		},
		{
			"escaped include_usage key", `{"model":"a","stream":true,"stream_options":{"include_us\u0061ge":false}}`, "b",
			`{"model":"b","stream":true,"stream_options":{"include_usage":true}}`,
			"",
		},
		{
			"upstream name with a control character", `{"model":"a"}`, "b\x01", `{"model":"b\u0001"}`,
			"",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip != "" {
				t.Skip(tc.skip)
			}
			rb, err := parseRequestBody([]byte(tc.in))
			if tc.want == "" { // two members that decode to one name: refused
				var pe *paramError
				if !errors.As(err, &pe) {
					t.Fatalf("err = %v, want the duplicate refused", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			parts := rb.upstreamParts(tc.upstream)
			out := parts.join()
			if streamed, _ := io.ReadAll(parts.reader()); !bytes.Equal(streamed, out) || len(out) != parts.size {
				t.Errorf("reader gives %q, join %q, size %d", streamed, out, parts.size)
			}
			if !bytes.Equal(rb.upstreamBody(tc.upstream), out) {
				t.Errorf("upstreamBody differs from upstreamParts")
			}
			if !json.Valid(out) {
				t.Fatalf("edited body is not JSON: %s", out)
			}
			var got, want map[string]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tc.want), &want); err != nil {
				t.Fatalf("bad want: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("edited body %s\ndecodes to %v\nwant %v", out, got, want)
			}
			if strings.Count(string(out), `"model"`) != strings.Count(tc.in, `"model"`)+btoi(rb.model.start < 0) {
				t.Errorf("edited body %s: more than the top-level model changed", out)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestUpstreamBodyLeavesTheRestAlone: outside the edits, the upstream body
// is the client's bytes, whitespace and escapes included.
func TestUpstreamBodyLeavesTheRestAlone(t *testing.T) {
	in := "{\n  \"model\" : \"a\",\n  \"messages\": [ {\"content\": \"\\u00e9 \\/ \\\"q\\\"\"} ],\n  \"n\": 1.50e+2\n}\n"
	rb, err := parseRequestBody([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(in, `"a"`, `"up"`, 1)
	if got := string(rb.upstreamBody("up")); got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}
