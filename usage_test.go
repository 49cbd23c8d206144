package llmrouter

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

func TestUsageParsing(t *testing.T) {
	body := []byte(`{"id":"x","choices":[{"message":{"content":"\"usage\":{\"prompt_tokens\":999}"}}],"usage":{"prompt_tokens":120,"completion_tokens":10,"total_tokens":130,"prompt_tokens_details":{"cached_tokens":64,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":3}}}`)
	u, ok := usageFromJSON(body)
	if !ok || u != (usage{input: 120, output: 10, cachedInput: 64}) {
		t.Errorf("usageFromJSON = %+v %v", u, ok)
	}
	if _, ok := usageFromJSON([]byte(`{"usage":null}`)); ok {
		t.Error("null usage parsed")
	}
	chunk := []byte(`{"id":"x","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}`)
	if u, n, ok := usageFromChunk(chunk); !ok || n != 0 || u.input != 7 || u.output != 2 {
		t.Errorf("usage chunk = %+v %d %v", u, n, ok)
	}
	final := []byte(`{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":2}}`)
	if u, n, ok := usageFromChunk(final); !ok || n != 1 || u.output != 2 {
		t.Errorf("usage on a content chunk = %+v %d %v", u, n, ok)
	}
	if n := jsonStringChars([]byte(`a\"é✓" tail`)); n != 4 {
		t.Errorf("jsonStringChars = %d, want 4", n)
	}
}

func TestUsageFromJSONTable(t *testing.T) {
	cases := []struct {
		name  string
		body  string
		want  usage
		found bool
	}{
		{"chat", `{"id":"x","usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}`, usage{input: 12, output: 3}, true},
		{"cached", `{"usage":{"prompt_tokens":100,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":96}}}`, usage{100, 1, 96, false}, true},
		{"embeddings", `{"object":"list","data":[{"embedding":[0.1,-2e-3]}],"usage":{"prompt_tokens":8,"total_tokens":8}}`, usage{input: 8}, true},
		{"responses shape", `{"usage":{"input_tokens":5,"output_tokens":7,"input_tokens_details":{"cached_tokens":2},"output_tokens_details":{"reasoning_tokens":4}}}`, usage{5, 7, 2, false}, true},
		{"usage first, spaces", " {\n \"usage\" : { \"completion_tokens\" : 9 , \"prompt_tokens\" : 1 } , \"id\" : \"x\" }\n", usage{input: 1, output: 9}, true},
		{"empty usage", `{"usage":{}}`, usage{}, true},
		{"zeros", `{"usage":{"prompt_tokens":0,"completion_tokens":0}}`, usage{}, true},
		{"large", `{"usage":{"prompt_tokens":9223372036854775807}}`, usage{input: 1<<63 - 1}, true},
		{"not integers count as 0", `{"usage":{"prompt_tokens":-5,"completion_tokens":1.5,"prompt_tokens_details":{"cached_tokens":"3"}}}`, usage{}, true},
		{"exponent counts as 0", `{"usage":{"prompt_tokens":1e3,"completion_tokens":null}}`, usage{}, true},
		{"details null", `{"usage":{"prompt_tokens":4,"prompt_tokens_details":null}}`, usage{input: 4}, true},
		{"details not an object", `{"usage":{"prompt_tokens":4,"prompt_tokens_details":[{"cached_tokens":1}]}}`, usage{input: 4}, true},
		{"duplicate usage: the last counts", `{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}`, usage{input: 2}, true},
		{"duplicate field: the last counts", `{"usage":{"prompt_tokens":1,"prompt_tokens":2}}`, usage{input: 2}, true},
		{"no usage", `{"id":"x","choices":[]}`, usage{}, false},
		{"usage null", `{"usage":null}`, usage{}, false},
		{"usage array", `{"usage":[{"prompt_tokens":1}]}`, usage{}, false},
		{"usage number", `{"usage":5}`, usage{}, false},
		{"usage last null", `{"usage":{"prompt_tokens":1},"usage":null}`, usage{}, false},
		{"nested usage only", `{"choices":[{"usage":{"prompt_tokens":1}}],"meta":{"usage":{"prompt_tokens":2}}}`, usage{}, false},
		{"usage in a string", `{"text":"\"usage\":{\"prompt_tokens\":1}"}`, usage{}, false},
		{"key case", `{"Usage":{"prompt_tokens":1}}`, usage{}, false},
		{"not an object", `[{"usage":{"prompt_tokens":1}}]`, usage{}, false},
		{"invalid JSON", `{"usage":{"prompt_tokens":1},}`, usage{}, false},
		{"invalid JSON after usage", `{"usage":{"prompt_tokens":1},"x":tru}`, usage{}, false},
		{"truncated", `{"usage":{"prompt_tokens":1}`, usage{}, false},
		{"empty", ``, usage{}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, found := usageFromJSON([]byte(tc.body))
			if found != tc.found || (found && u != tc.want) {
				t.Errorf("usageFromJSON(%s) = %+v, %v; want %+v, %v", tc.body, u, found, tc.want, tc.found)
			}
		})
	}
}

func TestUsageFromChunkTable(t *testing.T) {
	cases := []struct {
		name    string
		data    string
		want    usage
		choices int
		found   bool
	}{
		{"usage-only chunk", `{"id":"x","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}`, usage{input: 7, output: 2}, 0, true},
		{"content chunk", `{"choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}`, usage{}, 1, false},
		{"three choices", `{"choices":[{"index":0},{"index":1},{"index":2}]}`, usage{}, 3, false},
		{"choices of odd values", `{"choices":[1, "x" ,null,[],{}]}`, usage{}, 5, false},
		{"usage on the last content chunk", `{"choices":[{"finish_reason":"stop"}],"usage":{"completion_tokens":4}}`, usage{output: 4}, 1, true},
		{"usage before choices", `{"usage":{"prompt_tokens":1},"choices":[]}`, usage{input: 1}, 0, true},
		{"choices null", `{"choices":null,"usage":{"prompt_tokens":1}}`, usage{input: 1}, 0, true},
		{"choices object", `{"choices":{"0":{}},"usage":{"prompt_tokens":1}}`, usage{input: 1}, 0, true},
		{"responses completed", `{"type":"response.completed","response":{"id":"r","output":[],"usage":{"input_tokens":5,"output_tokens":7,"input_tokens_details":{"cached_tokens":2}}}}`, usage{5, 7, 2, false}, 0, true},
		{"responses created", `{"type":"response.created","response":{"id":"r","usage":null}}`, usage{}, 0, false},
		{"nested usage only", `{"choices":[{"delta":{"usage":{"prompt_tokens":1}}}]}`, usage{}, 1, false},
		{"not JSON", `[DONE]`, usage{}, 0, false},
		{"empty", ``, usage{}, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, n, found := usageFromChunk([]byte(tc.data))
			if found != tc.found || n != tc.choices || (found && u != tc.want) {
				t.Errorf("usageFromChunk(%s) = %+v, %d, %v; want %+v, %d, %v", tc.data, u, n, found, tc.want, tc.choices, tc.found)
			}
		})
	}
}

func TestUsageParseObject(t *testing.T) {
	cases := []struct {
		obj  string
		want usage
		ok   bool
	}{
		{`{"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":1}}`, usage{3, 4, 1, false}, true},
		{`{}`, usage{}, true},
		{` { } `, usage{}, true},
		{`{"prompt_tokens_details":{"cached_tokens":5,"audio_tokens":2}}`, usage{cachedInput: 5}, true},
		{`{"completion_tokens_details":{"cached_tokens":5}}`, usage{}, true},
		{`null`, usage{}, false},
		{`[]`, usage{}, false},
		{`"usage"`, usage{}, false},
		{`{"prompt_tokens":}`, usage{}, false},
		{``, usage{}, false},
	}
	for _, tc := range cases {
		u, ok := parseUsageObject([]byte(tc.obj))
		if ok != tc.ok || (ok && u != tc.want) {
			t.Errorf("parseUsageObject(%s) = %+v, %v; want %+v, %v", tc.obj, u, ok, tc.want, tc.ok)
		}
	}
}

// jsonMember is one member of a JSON object as encoding/json reads it: the
// key decoded, the value raw.
type jsonMember struct {
	key string
	val json.RawMessage
}

// jsonMembers reads the members of a valid JSON value in order (duplicates
// kept); false if it is not an object.
func jsonMembers(b []byte) ([]jsonMember, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	var ms []jsonMember
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		key, ok := tok.(string)
		if !ok {
			return nil, false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		ms = append(ms, jsonMember{key, v})
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, false
	}
	return ms, true
}

// tokenCount is a token field as encoding/json reads it: a non-negative
// integer, or 0 for any other value; false when the integer does not fit
// an int64.
func tokenCount(v json.RawMessage) (int64, bool) {
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, true
		}
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	return n, err == nil
}

// wantUsage is the usage encoding/json finds in a usage object; comparable
// is false when a count overflows.
func wantUsage(obj json.RawMessage) (u usage, found, comparable bool) {
	ms, ok := jsonMembers(obj)
	if !ok {
		return usage{}, false, true
	}
	for _, m := range ms {
		var dst *int64
		switch m.key {
		case "prompt_tokens", "input_tokens":
			dst = &u.input
		case "completion_tokens", "output_tokens":
			dst = &u.output
		case "prompt_tokens_details", "input_tokens_details":
			details, _ := jsonMembers(m.val)
			for _, d := range details {
				if d.key == "cached_tokens" {
					n, ok := tokenCount(d.val)
					if !ok {
						return u, true, false
					}
					u.cachedInput = n
				}
			}
		}
		if dst != nil {
			n, ok := tokenCount(m.val)
			if !ok {
				return u, true, false
			}
			*dst = n
		}
	}
	return u, true, true
}

// FuzzUsageParser: usageFromJSON and usageFromChunk never panic, and on
// any JSON object they agree with encoding/json on the usage and the
// number of choices.
func FuzzUsageParser(f *testing.F) {
	f.Add(`{"id":"x","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1}}}`)
	f.Add(`{"choices":[{"index":0,"delta":{"content":"\"usage\":{}"}}],"usage":null}`)
	f.Add(`{"usage":{"prompt_tokens":-1,"completion_tokens":1.5e3,"prompt_tokens":"7"}}`)
	f.Add(`{"usage":{"prompt_tokens":99999999999999999999}}`)
	f.Add(`{"usage":{"prompt_tokens":1},"usage":{"completion_tokens":2}}`)
	f.Add(`{"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":7,"input_tokens_details":{"cached_tokens":2}}}}`)
	f.Add(`{"usage":{"prompt_tokens_details":null,"input_tokens_details":{"cached_tokens":3}},"choices":{"a":[]}}`)
	f.Add(`[{"usage":{"prompt_tokens":1}}]`)
	f.Add(`{"usage":{"prompt_tokens":1}`)
	f.Add(`{"usage":{"prompt_tokens":1}} trailing`)
	f.Add(``)
	f.Fuzz(func(t *testing.T, in string) {
		b := []byte(in)
		u, found := usageFromJSON(b)
		cu, choices, cfound := usageFromChunk(b)
		if !json.Valid(b) || strings.Contains(in, `\u`) {
			// not JSON: no panic is all that is asked; an escaped key
			// ("\u0075sage") is compared undecoded, on purpose
			return
		}
		top, isObject := jsonMembers(b)
		if !isObject {
			if found || cfound || choices != 0 {
				t.Fatalf("%q is not an object, yet usage %+v %v, chunk %+v %d %v", in, u, found, cu, choices, cfound)
			}
			return
		}
		var want, cwant usage
		var wfound, cwfound bool
		comparable := true
		wchoices, nchoices := 0, 0
		for _, m := range top {
			switch m.key {
			case "usage":
				w, f, ok := wantUsage(m.val)
				want, wfound, cwant, cwfound = w, f, w, f
				comparable = comparable && ok
			case "choices":
				nchoices++
				var elems []json.RawMessage
				if json.Unmarshal(m.val, &elems) == nil {
					wchoices += len(elems)
				}
			case "response":
				inner, _ := jsonMembers(m.val)
				for _, r := range inner {
					if r.key == "usage" {
						w, f, ok := wantUsage(r.val)
						cwant, cwfound = w, f
						comparable = comparable && ok
					}
				}
			}
		}
		if !comparable {
			return // a count beyond int64
		}
		if found != wfound || (found && u != want) {
			t.Fatalf("usageFromJSON(%q) = %+v, %v; encoding/json: %+v, %v", in, u, found, want, wfound)
		}
		if cfound != cwfound || (cfound && cu != cwant) {
			t.Fatalf("usageFromChunk(%q) = %+v, %v; encoding/json: %+v, %v", in, cu, cfound, cwant, cwfound)
		}
		if nchoices <= 1 && choices != wchoices {
			t.Fatalf("usageFromChunk(%q): %d choices; encoding/json: %d", in, choices, wchoices)
		}
	})
}
