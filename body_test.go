package llmrouter

import (
	"encoding/json"
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
	f.Fuzz(func(t *testing.T, in string) {
		rb, err := parseRequestBody([]byte(in))
		valid := json.Valid([]byte(in)) && strings.HasPrefix(strings.TrimLeft(in, " \t\r\n"), "{")
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
