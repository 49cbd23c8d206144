package openai

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestUsageParsing(t *testing.T) {
	body := []byte(`{"id":"x","choices":[{"message":{"content":"\"usage\":{\"prompt_tokens\":999}"}}],"usage":{"prompt_tokens":120,"completion_tokens":10,"total_tokens":130,"prompt_tokens_details":{"cached_tokens":64,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":3}}}`)
	u, ok, valid := AnswerUsage(body)
	if !ok || !valid || u != (Usage{Input: 120, Output: 10, CachedInput: 64}) {
		t.Errorf("AnswerUsage = %+v %v %v", u, ok, valid)
	}
	if _, ok, valid := AnswerUsage([]byte(`{"usage":null}`)); ok || !valid {
		t.Error("null usage parsed")
	}
	chunk := []byte(`{"id":"x","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}`)
	if u, n, ok := ChunkUsage(chunk); !ok || n != 0 || u.Input != 7 || u.Output != 2 {
		t.Errorf("usage chunk = %+v %d %v", u, n, ok)
	}
	// as Python's json.dumps writes it
	spaced := []byte(`{"id": "x", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}`)
	if u, n, ok := ChunkUsage(spaced); !ok || n != 0 || u.Input != 7 || u.Output != 2 {
		t.Errorf("spaced usage chunk = %+v %d %v", u, n, ok)
	}
	final := []byte(`{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":2}}`)
	if u, n, ok := ChunkUsage(final); !ok || n != 1 || u.Output != 2 {
		t.Errorf("usage on a content chunk = %+v %d %v", u, n, ok)
	}
	if n := StringChars([]byte(`a\"é✓" tail`)); n != 4 {
		t.Errorf("StringChars = %d, want 4", n)
	}
}

func TestAnswerUsageTable(t *testing.T) {
	cases := []struct {
		name  string
		body  string
		want  Usage
		found bool
		valid bool
	}{
		{"chat", `{"id":"x","usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}`, Usage{Input: 12, Output: 3}, true, true},
		{"cached", `{"usage":{"prompt_tokens":100,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":96}}}`, Usage{Input: 100, Output: 1, CachedInput: 96}, true, true},
		{"embeddings", `{"object":"list","data":[{"embedding":[0.1,-2e-3]}],"usage":{"prompt_tokens":8,"total_tokens":8}}`, Usage{Input: 8}, true, true},
		{"responses shape", `{"usage":{"input_tokens":5,"output_tokens":7,"input_tokens_details":{"cached_tokens":2},"output_tokens_details":{"reasoning_tokens":4}}}`, Usage{Input: 5, Output: 7, CachedInput: 2}, true, true},
		{"usage first, spaces", " {\n \"usage\" : { \"completion_tokens\" : 9 , \"prompt_tokens\" : 1 } , \"id\" : \"x\" }\n", Usage{Input: 1, Output: 9}, true, true},
		{"python spacing", `{"id": "x", "usage": {"prompt_tokens": 3, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 2}}}`, Usage{Input: 3, Output: 4, CachedInput: 2}, true, true},
		// usage without integer counts is no usage (the caller estimates):
		// an answer charged nothing for "usage":{} or a count of 12.5 was
		// an answer for free
		{"empty usage", `{"usage":{}}`, Usage{}, false, true},
		{"zeros", `{"usage":{"prompt_tokens":0,"completion_tokens":0}}`, Usage{}, true, true},
		{"large", `{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":0}}`, Usage{Input: 1<<63 - 1}, true, true},
		{"past int64 saturates, never wraps to a credit", `{"usage":{"prompt_tokens":9223372036854775808,"completion_tokens":123456789012345678901234567890}}`, Usage{Input: 1<<63 - 1, Output: 1<<63 - 1}, true, true},
		{"not integers", `{"usage":{"prompt_tokens":-5,"completion_tokens":1.5,"prompt_tokens_details":{"cached_tokens":"3"}}}`, Usage{}, false, true},
		{"exponent", `{"usage":{"prompt_tokens":1e3,"completion_tokens":null}}`, Usage{}, false, true},
		{"a float count", `{"usage":{"prompt_tokens":12.5,"completion_tokens":3}}`, Usage{}, false, true},
		{"a float with no fraction", `{"usage":{"prompt_tokens":12,"completion_tokens":3.0}}`, Usage{}, false, true},
		{"a string count", `{"usage":{"prompt_tokens":"12","completion_tokens":3}}`, Usage{}, false, true},
		{"a negative count", `{"usage":{"prompt_tokens":12,"completion_tokens":-3}}`, Usage{}, false, true},
		{"minus zero", `{"usage":{"prompt_tokens":-0,"completion_tokens":3}}`, Usage{}, false, true},
		{"a boolean count", `{"usage":{"prompt_tokens":12,"completion_tokens":true}}`, Usage{}, false, true},
		{"an object count", `{"usage":{"prompt_tokens":12,"completion_tokens":{"n":3}}}`, Usage{}, false, true},
		{"a bad total beside good counts", `{"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15.5}}`, Usage{}, false, true},
		{"a bad count, then a good one", `{"usage":{"prompt_tokens":1.5,"prompt_tokens":2,"completion_tokens":1}}`, Usage{}, false, true},
		{"prompt only", `{"usage":{"prompt_tokens":12}}`, Usage{}, false, true},
		{"completion only", `{"usage":{"completion_tokens":12}}`, Usage{}, false, true},
		{"completion null", `{"usage":{"prompt_tokens":12,"completion_tokens":null}}`, Usage{}, false, true},
		{"all null", `{"usage":{"prompt_tokens":null,"completion_tokens":null,"total_tokens":null}}`, Usage{}, false, true},
		{"details only", `{"usage":{"prompt_tokens_details":{"cached_tokens":5}}}`, Usage{}, false, true},
		{"total only", `{"usage":{"total_tokens":20}}`, Usage{Output: 20}, true, true},
		{"completion null, total", `{"usage":{"prompt_tokens":12,"completion_tokens":null,"total_tokens":20}}`, Usage{Input: 12, Output: 8}, true, true},
		{"null after a count: encoding/json keeps the count", `{"usage":{"prompt_tokens":5,"prompt_tokens":null,"completion_tokens":1}}`, Usage{Input: 5, Output: 1}, true, true},
		{"a bad cached count is 0", `{"usage":{"prompt_tokens":3,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":"2"}}}`, Usage{Input: 3, Output: 1}, true, true},
		{"cached past the prompt is the prompt", `{"usage":{"prompt_tokens":3,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":9}}}`, Usage{Input: 3, Output: 1, CachedInput: 3}, true, true},
		{"details null", `{"usage":{"prompt_tokens":4,"completion_tokens":1,"prompt_tokens_details":null}}`, Usage{Input: 4, Output: 1}, true, true},
		{"details not an object", `{"usage":{"prompt_tokens":4,"completion_tokens":1,"prompt_tokens_details":[{"cached_tokens":1}]}}`, Usage{Input: 4, Output: 1}, true, true},
		{"duplicate usage: the last counts", `{"usage":{"prompt_tokens":1,"completion_tokens":1},"usage":{"prompt_tokens":2,"completion_tokens":1}}`, Usage{Input: 2, Output: 1}, true, true},
		{"duplicate usage: the last, empty, is none", `{"usage":{"prompt_tokens":1,"completion_tokens":1},"usage":{}}`, Usage{}, false, true},
		{"duplicate field: the last counts", `{"usage":{"prompt_tokens":1,"prompt_tokens":2,"completion_tokens":1}}`, Usage{Input: 2, Output: 1}, true, true},
		{"no usage", `{"id":"x","choices":[]}`, Usage{}, false, true},
		{"usage null", `{"usage":null}`, Usage{}, false, true},
		{"usage array", `{"usage":[{"prompt_tokens":1}]}`, Usage{}, false, true},
		{"usage number", `{"usage":5}`, Usage{}, false, true},
		{"usage last null", `{"usage":{"prompt_tokens":1,"completion_tokens":1},"usage":null}`, Usage{}, false, true},
		// a choice's usage (Moonshot's Kimi) when there is no top-level one;
		// usage anywhere else is not the answer's
		{"usage in a choice", `{"choices":[{"usage":{"prompt_tokens":1,"completion_tokens":1}}],"meta":{"usage":{"prompt_tokens":2,"completion_tokens":1}}}`, Usage{Input: 1, Output: 1}, true, true},
		{"top-level usage over a choice's", `{"choices":[{"usage":{"prompt_tokens":1,"completion_tokens":1}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}`, Usage{Input: 3, Output: 1}, true, true},
		{"an empty top-level usage: a choice's", `{"choices":[{"usage":{"prompt_tokens":1,"completion_tokens":1}}],"usage":{}}`, Usage{Input: 1, Output: 1}, true, true},
		{"an empty usage in a choice", `{"choices":[{"usage":{}}]}`, Usage{}, false, true},
		{"nested usage only", `{"choices":[{"message":{"usage":{"prompt_tokens":1}}}],"meta":{"usage":{"prompt_tokens":2}}}`, Usage{}, false, true},
		{"usage in a string", `{"text":"\"usage\":{\"prompt_tokens\":1}"}`, Usage{}, false, true},
		{"key case", `{"Usage":{"prompt_tokens":1}}`, Usage{}, false, true},
		{"not an object", `[{"usage":{"prompt_tokens":1}}]`, Usage{}, false, false},
		{"invalid JSON", `{"usage":{"prompt_tokens":1},}`, Usage{}, false, false},
		{"invalid JSON after usage", `{"usage":{"prompt_tokens":1},"x":tru}`, Usage{}, false, false},
		{"truncated", `{"usage":{"prompt_tokens":1}`, Usage{}, false, false},
		{"empty", ``, Usage{}, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, found, valid := AnswerUsage([]byte(tc.body))
			if found != tc.found || valid != tc.valid || (found && u != tc.want) {
				t.Errorf("AnswerUsage(%s) = %+v, %v, %v; want %+v, %v, %v", tc.body, u, found, valid, tc.want, tc.found, tc.valid)
			}
		})
	}
}

func TestChunkUsageTable(t *testing.T) {
	cases := []struct {
		name    string
		data    string
		want    Usage
		choices int
		found   bool
	}{
		{"usage-only chunk", `{"id":"x","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}`, Usage{Input: 7, Output: 2}, 0, true},
		{"usage-only chunk, python spacing", `{"id": "x", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}`, Usage{Input: 7, Output: 2}, 0, true},
		{"content chunk", `{"choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}`, Usage{}, 1, false},
		// without a "usage" anywhere the choices are not counted
		{"three choices", `{"choices":[{"index":0},{"index":1},{"index":2}]}`, Usage{}, -1, false},
		{"choices of odd values", `{"choices":[1, "x" ,null,[],{}]}`, Usage{}, -1, false},
		{"three choices, usage null", `{"choices":[{"index":0},{"index":1},{"index":2}],"usage":null}`, Usage{}, 3, false},
		{"choices of odd values, usage null", `{"choices":[1, "x" ,null,[],{}],"usage":null}`, Usage{}, 5, false},
		{"usage on the last content chunk", `{"choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":4}}`, Usage{Input: 1, Output: 4}, 1, true},
		{"usage before choices", `{"usage":{"prompt_tokens":1,"completion_tokens":1},"choices":[]}`, Usage{Input: 1, Output: 1}, 0, true},
		{"choices null", `{"choices":null,"usage":{"prompt_tokens":1,"completion_tokens":1}}`, Usage{Input: 1, Output: 1}, 0, true},
		{"choices object", `{"choices":{"0":{}},"usage":{"prompt_tokens":1,"completion_tokens":1}}`, Usage{Input: 1, Output: 1}, 0, true},
		{"empty usage", `{"id":"x","choices":[],"usage":{}}`, Usage{}, 0, false},
		{"float usage", `{"id":"x","choices":[],"usage":{"prompt_tokens":7.5,"completion_tokens":2}}`, Usage{}, 0, false},
		{"string usage", `{"id":"x","choices":[],"usage":{"prompt_tokens":"7","completion_tokens":"2"}}`, Usage{}, 0, false},
		{"responses completed, empty usage", `{"type":"response.completed","response":{"id":"r","usage":{}}}`, Usage{}, 0, false},
		{"responses completed, float usage", `{"type":"response.completed","response":{"id":"r","usage":{"input_tokens":5.5,"output_tokens":7}}}`, Usage{}, 0, false},
		{"responses completed", `{"type":"response.completed","response":{"id":"r","output":[],"usage":{"input_tokens":5,"output_tokens":7,"input_tokens_details":{"cached_tokens":2}}}}`, Usage{Input: 5, Output: 7, CachedInput: 2}, 0, true},
		{"responses created", `{"type":"response.created","response":{"id":"r","usage":null}}`, Usage{}, 0, false},
		{"nested usage only", `{"choices":[{"delta":{"usage":{"prompt_tokens":1}}}]}`, Usage{}, 1, false},
		{"usage as a text", `{"choices":[{"delta":{"content":"usage"}}]}`, Usage{}, 1, false},
		{"not JSON", `[DONE]`, Usage{}, -1, false},
		{"an array with usage", `[{"usage":{"prompt_tokens":1}}]`, Usage{}, 0, false},
		{"empty", ``, Usage{}, -1, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, n, found := ChunkUsage([]byte(tc.data))
			// choices are counted only when a usage object is there
			if found != tc.found || (found && (n != tc.choices || u != tc.want)) || (!found && n > 0 && n != tc.choices) {
				t.Errorf("ChunkUsage(%s) = %+v, %d, %v; want %+v, %d, %v", tc.data, u, n, found, tc.want, tc.choices, tc.found)
			}
		})
	}
}

func TestUsageObject(t *testing.T) {
	cases := []struct {
		obj  string
		want Usage
		ok   bool
	}{
		{`{"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":1}}`, Usage{Input: 3, Output: 4, CachedInput: 1}, true},
		{`{"input_tokens":3,"output_tokens":4,"input_tokens_details":{"cached_tokens":1}}`, Usage{Input: 3, Output: 4, CachedInput: 1}, true},
		{`{"prompt_tokens":8,"total_tokens":8}`, Usage{Input: 8}, true},
		{`{}`, Usage{}, false},
		{` { } `, Usage{}, false},
		{`{"prompt_tokens_details":{"cached_tokens":5,"audio_tokens":2}}`, Usage{}, false},
		{`{"completion_tokens_details":{"cached_tokens":5}}`, Usage{}, false},
		{`{"prompt_tokens":3,"completion_tokens":4.0}`, Usage{}, false},
		{`null`, Usage{}, false},
		{`[]`, Usage{}, false},
		{`"usage"`, Usage{}, false},
		{`{"prompt_tokens":}`, Usage{}, false},
		{``, Usage{}, false},
	}
	for _, tc := range cases {
		u, ok := usageObject([]byte(tc.obj))
		if ok != tc.ok || (ok && u != tc.want) {
			t.Errorf("usageObject(%s) = %+v, %v; want %+v, %v", tc.obj, u, ok, tc.want, tc.ok)
		}
	}
}

func TestIsError(t *testing.T) {
	cases := map[string]bool{
		`{"error":{"message":"x"}}`:                   true,
		`{"error":"x"}`:                               true,
		`{"error":null,"choices":[]}`:                 false,
		`{"type":"error","message":"x"}`:              true,
		`{"type":"response.failed","response":{}}`:    true,
		`{"type":"response.completed","response":{}}`: false,
		`{"choices":[{"message":{"error":"inner"}}]}`: false,
		`{"id":"x","object":"chat.completion"}`:       false,
		`{"Error":{"message":"x"}}`:                   false,
		`[{"error":{}}]`:                              false,
		``:                                            false,
	}
	for in, want := range cases {
		if got := IsError([]byte(in)); got != want {
			t.Errorf("IsError(%s) = %v, want %v", in, got, want)
		}
	}
}

func TestForEachMember(t *testing.T) {
	var keys, vals []string
	ok := ForEachMember([]byte(` {"a" : 1, "b\"c":{"d":[1, 2]} ,"e":"x"} `), func(k, v []byte) {
		keys = append(keys, string(k))
		vals = append(vals, string(v))
	})
	if !ok || strings.Join(keys, "|") != `a|b\"c|e` || strings.Join(vals, "|") != `1|{"d":[1, 2]}|"x"` {
		t.Errorf("ForEachMember: %v %q %q", ok, keys, vals)
	}
	for in, want := range map[string]bool{
		`{}`: true, ` {} `: true, `{"a":1}`: true, `[]`: false, `{"a":1} x`: false, `{"a":}`: false, ``: false, `null`: false,
		`{"a":1}{}`: false,
		// answers are read laxly: a stray byte in a provider's text does
		// not make its answer "not an answer"
		"{\"a\":\"\xff\"}": true,
	} {
		if got := IsObject([]byte(in)); got != want {
			t.Errorf("IsObject(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestStreamTextBytes(t *testing.T) {
	cases := []struct {
		api  API
		data string
		want int64
	}{
		{Chat, `{"choices":[{"index":0,"delta":{"content":"hello"}}]}`, 5},
		// UTF-8 bytes, not characters: é is 2, a CJK character 3 (about a
		// token), an emoji 4, escaped or not
		{Chat, `{"choices": [{"index": 0, "delta": {"content" : "héllo"}}]}`, 6},
		{Chat, `{"choices":[{"delta":{"content":"退货政策"}}]}`, 12},
		{Chat, `{"choices":[{"delta":{"content":"\u9000\u8d27 😀 \ud83d\ude00"}}]}`, 16},
		{Chat, `{"choices":[{"delta":{"content":"a"}},{"delta":{"content":"bc"}}]}`, 3},
		{Chat, `{"choices":[{"delta":{"content":null}}]}`, 0},
		{Chat, `{"choices":[{"delta":{"role":"assistant","content":"say \"content\": x"}}]}`, 16},
		{Chat, `{"choices":[{"text":"abc"}]}`, 0},
		{Completions, `{"choices":[{"text":"abc","index":0}]}`, 3},
		{Responses, `{"type":"response.output_text.delta","delta":"ab\u00e9"}`, 4},
		{Embeddings, `{"content":"x"}`, 0},
		{0, `{"content":"x"}`, 0},
		{API(200), `{"content":"x"}`, 0},
		{Chat, ``, 0},
		{Chat, `"content"`, 0},
		{Chat, `"content":`, 0},
	}
	for _, tc := range cases {
		if got := StreamTextBytes(tc.api, []byte(tc.data)); got != tc.want {
			t.Errorf("StreamTextBytes(%d, %s) = %d, want %d", tc.api, tc.data, got, tc.want)
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

// isCount reports whether a token count is a non-negative JSON integer.
func isCount(v json.RawMessage) bool {
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(v) > 0
}

// wantUsage is the usage encoding/json finds in a usage object: found when
// no count is other than null or a non-negative integer and the input and
// output counts, or the total, are integers; comparable is false when a
// count overflows.
func wantUsage(obj json.RawMessage) (u Usage, found, comparable bool) {
	ms, ok := jsonMembers(obj)
	if !ok {
		return Usage{}, false, true
	}
	total := int64(-1)
	var in, out, tot, bad bool
	for _, m := range ms {
		var dst *int64
		switch m.key {
		case "prompt_tokens", "input_tokens":
			dst = &u.Input
			in = in || isCount(m.val)
		case "completion_tokens", "output_tokens":
			dst = &u.Output
			out = out || isCount(m.val)
		case "total_tokens":
			dst = &total
			tot = tot || isCount(m.val)
		case "prompt_tokens_details", "input_tokens_details":
			details, _ := jsonMembers(m.val)
			for _, d := range details {
				if d.key == "cached_tokens" {
					n, ok := tokenCount(d.val)
					if !ok {
						return u, true, false
					}
					u.CachedInput = n
				}
			}
		}
		if dst != nil {
			if string(m.val) == "null" {
				continue // as if absent: encoding/json leaves the count
			}
			bad = bad || !isCount(m.val)
			n, ok := tokenCount(m.val)
			if !ok {
				return u, true, false
			}
			*dst = n
		}
	}
	if bad || !(in && out || tot) {
		return Usage{}, false, true
	}
	// a total above the parts is output (Gemini's thinking tokens)
	u.Output = max(u.Output, total-u.Input)
	return u, true, true
}

// wantChoicesUsage is the usage encoding/json finds in a list of choices:
// each choice's last "usage", the largest of each count among them.
func wantChoicesUsage(list json.RawMessage) (u Usage, found, comparable bool) {
	var elems []json.RawMessage
	if json.Unmarshal(list, &elems) != nil {
		return u, false, true
	}
	for _, e := range elems {
		ms, _ := jsonMembers(e)
		var cu Usage
		var cfound bool
		for _, m := range ms {
			if m.key == "usage" {
				var ok bool
				if cu, cfound, ok = wantUsage(m.val); !ok {
					return u, false, false
				}
			}
		}
		if cfound {
			u.Input, u.Output, u.CachedInput = max(u.Input, cu.Input), max(u.Output, cu.Output), max(u.CachedInput, cu.CachedInput)
			found = true
		}
	}
	return u, found, true
}

// nesting is the deepest nesting of arrays and objects in valid JSON, the
// outermost counting 1.
func nesting(b []byte) int {
	depth, deepest := 0, 0
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}

// FuzzUsageParser: AnswerUsage and ChunkUsage never panic, and on any JSON
// object they can read (UTF-8, nested no deeper than MaxDepth) they agree
// with encoding/json on the usage and the number of choices.
func FuzzUsageParser(f *testing.F) {
	f.Add(`{"id":"x","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1}}}`)
	f.Add(`{"choices":[{"index":0,"delta":{"content":"\"usage\":{}"}}],"usage":null}`)
	f.Add(`{"usage":{"prompt_tokens":-1,"completion_tokens":1.5e3,"prompt_tokens":"7"}}`)
	f.Add(`{"usage":{"prompt_tokens":99999999999999999999}}`)
	f.Add(`{"usage":{"prompt_tokens":1},"usage":{"completion_tokens":2}}`)
	f.Add(`{"usage":{"prompt_tokens":1,"completion_tokens":null,"total_tokens":3}}`)
	f.Add(`{"usage":{"prompt_tokens":1,"completion_tokens":2.5}}`)
	f.Add(`{"usage":{}}`)
	f.Add(`{"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":7,"input_tokens_details":{"cached_tokens":2}}}}`)
	f.Add(`{"usage":{"prompt_tokens_details":null,"input_tokens_details":{"cached_tokens":3}},"choices":{"a":[]}}`)
	f.Add(`[{"usage":{"prompt_tokens":1}}]`)
	f.Add(`{"usage":{"prompt_tokens":1}`)
	f.Add(`{"usage":{"prompt_tokens":1}} trailing`)
	f.Add(`{"id": "x", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}`)
	f.Add(`{"choices":[{},{}]}`)
	f.Add(`{"choices":[{"index":0,"delta":{},"usage":{"prompt_tokens":19,"completion_tokens":13,"total_tokens":32}}]}`)
	f.Add(`{"choices":[{"usage":{"prompt_tokens":1,"total_tokens":9}},{"usage":null},{"usage":{"completion_tokens":4}}],"usage":null}`)
	f.Add(`{"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":40}}`)
	f.Add(`{"type":"response.completed","response":{"usage":{"input_tokens":3,"total_tokens":2}},"choices":[{"usage":{"prompt_tokens":1}}]}`)
	f.Add(``)
	f.Fuzz(func(t *testing.T, in string) {
		b := []byte(in)
		u, found, valid := AnswerUsage(b)
		cu, choices, cfound := ChunkUsage(b)
		if found && !valid {
			t.Fatalf("AnswerUsage(%q): usage found in a body that is not valid", in)
		}
		if valid != IsObject(b) {
			t.Fatalf("AnswerUsage(%q) valid = %v, IsObject %v", in, valid, !valid)
		}
		hasUsageKey := bytes.Contains(b, []byte(`"usage"`))
		if !hasUsageKey && (choices != -1 || cfound) {
			t.Fatalf("ChunkUsage(%q) without a usage key: %d choices, found %v", in, choices, cfound)
		}
		if !json.Valid(b) || strings.Contains(in, `\u`) {
			// not JSON: no panic is all that is asked; an escaped key
			// ("\u0075sage") is compared undecoded, on purpose
			if valid && !json.Valid(b) {
				t.Fatalf("AnswerUsage(%q): valid, but not JSON", in)
			}
			return
		}
		top, isObject := jsonMembers(b)
		if !isObject {
			if found || valid || cfound || choices > 0 {
				t.Fatalf("%q is not an object, yet usage %+v %v %v, chunk %+v %d %v", in, u, found, valid, cu, choices, cfound)
			}
			return
		}
		if !utf8.Valid(b) || nesting(b) > MaxDepth {
			// JSON that encoding/json reads but the scanner refuses (it
			// holds answers to the request rules: UTF-8, MaxDepth); which
			// of the two an answer should get is not settled here
			return
		}
		if !valid {
			t.Fatalf("AnswerUsage(%q): not valid, but encoding/json reads an object", in)
		}
		var want, cwant Usage
		var wfound, cwfound bool
		comparable := true
		wchoices, nchoices := 0, 0
		var list json.RawMessage // the last choices that are a list
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
					if m.val[0] == '[' {
						list = m.val
					}
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
		if list != nil && (!wfound || !cwfound) {
			// no top-level usage: a choice's (Moonshot's Kimi)
			w, f, ok := wantChoicesUsage(list)
			comparable = comparable && ok
			if !wfound {
				want, wfound = w, f
			}
			if !cwfound {
				cwant, cwfound = w, f
			}
		}
		if !comparable {
			return // a count beyond int64
		}
		if found != wfound || (found && u != want) {
			t.Fatalf("AnswerUsage(%q) = %+v, %v; encoding/json: %+v, %v", in, u, found, want, wfound)
		}
		if cfound != cwfound || (cfound && cu != cwant) {
			t.Fatalf("ChunkUsage(%q) = %+v, %v; encoding/json: %+v, %v", in, cu, cfound, cwant, cwfound)
		}
		if !hasUsageKey {
			wchoices = -1
		}
		if nchoices <= 1 && cfound && choices != wchoices {
			t.Fatalf("ChunkUsage(%q): %d choices; encoding/json: %d", in, choices, wchoices)
		}
	})
}

// TestSDKsRaise: the stream events the official SDKs raise on, and those
// they yield (the Responses API's own error events among them).
func TestSDKsRaise(t *testing.T) {
	for data, want := range map[string]bool{
		`{"error":{"message":"boom","type":"server_error","param":null,"code":null}}`: true,
		`{"error": {"message": "boom"}}`:                                              true,
		`{"error":{"message":"x"},"error":null}`:                                      false,
		`{"error":{}}`:                                                                false,
		`{"error":null}`:                                                              false,
		`{"type":"error","code":"server_error","message":"boom","param":null}`:        false,
		`{"type":"response.failed","response":{"error":{"code":"server_error"}}}`:     false,
		`not json`: false,
	} {
		if got := SDKsRaise([]byte(data)); got != want {
			t.Errorf("SDKsRaise(%s) = %v, want %v", data, got, want)
		}
	}
}

func TestRequestsFault(t *testing.T) {
	for data, want := range map[string]bool{
		`{"error":{"message":"Invalid prompt","type":"invalid_request_error","param":null,"code":"invalid_prompt"}}`: true,
		`{"error":{"message":"too long","type":"invalid_request_error","param":"messages","code":null}}`:             true,
		`{"error": {"type": "invalid_request_error"}}`:                                                               true,
		`{"type":"error","code":"invalid_prompt","message":"flagged","param":null}`:                                  true,
		`{"type":"response.failed","response":{"id":"r","error":{"code":"cyber_policy","message":"flagged"}}}`:       true,
		`{"type":"response.failed","response":{"id":"r","error":{"code":"failed_to_download_image"}}}`:               true,
		// the deployment's, or the provider's
		`{"error":{"message":"Incorrect API key","type":"invalid_request_error","code":"invalid_api_key"}}`: false,
		`{"error":{"message":"no such model","type":"invalid_request_error","code":"model_not_found"}}`:     false,
		`{"error":{"message":"boom","type":"server_error","param":null,"code":null}}`:                       false,
		`{"type":"error","code":"server_error","message":"boom","param":null}`:                              false,
		`{"type":"response.failed","response":{"error":{"code":"rate_limit_exceeded"}}}`:                    false,
		`{"error":"invalid_prompt"}`:        false,
		`{"error":{"code":"invalid_prompt"`: false,
		`not json`:                          false,
	} {
		if got := RequestsFault([]byte(data)); got != want {
			t.Errorf("RequestsFault(%s) = %v, want %v", data, got, want)
		}
	}
}

func TestResponseOpening(t *testing.T) {
	for data, want := range map[string]bool{
		`{"type":"response.created","response":{"id":"r","status":"in_progress"}}`:                  true,
		`{"type":"response.in_progress","sequence_number":1,"response":{"id":"r"}}`:                 true,
		`{"type":"response.queued","response":{"id":"r"}}`:                                          true,
		`{"type":"response.output_item.added","item":{"type":"response.created"}}`:                  false,
		`{"type":"error","code":"server_error","message":"x"}`:                                      false,
		`{"type":"response.created","response":{"id":"r","status":"in_prog`:                         false,
		`{"type":"response.output_text.delta","delta":"hi","metadata":{"type":"response.created"}}`: false,
	} {
		if got := ResponseOpening([]byte(data)); got != want {
			t.Errorf("ResponseOpening(%s) = %v, want %v", data, got, want)
		}
	}
}

func TestChatOpening(t *testing.T) {
	for data, want := range map[string]bool{
		`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}`: true,
		`{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":"","tool_calls":[]}}],"usage":null}`:                 true,
		`{"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant"}, "content_filter_results": {}}]}`:                                               true,
		// OpenAI's with logprobs asked for: none yet
		`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":{"content":[],"refusal":null},"finish_reason":null}],"usage":null}`: true,
		`{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":{"content":[{"token":"a","logprob":0,"bytes":[97],"top_logprobs":[]}],"refusal":null}}]}`:                           false,
		`{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}`:                                                                                                                          false,
		`{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","reasoning_content":"Hm"}}]}`:                                                                                                                false,
		`{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"t"}]}}]}`:                                                                                                     false,
		`{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":"stop"}]}`:                                                                                                     false,
		`{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":{"prompt_tokens":3}}`:                                                                                                false,
		`{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":{"prompt_tokens":3,"completion_tokens":0,"total_tokens":3}}`:                                                         true,
		`{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`:                                                         false,
		`{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":"x"}`:                                                                                                                false,
		`{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":0}}`:                                                                                                                               false,
		`{"id":"c","choices":[]}`:                                  false,
		`{"error":{"message":"overloaded","type":"server_error"}}`: false,
		`{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"error":{"message":"x"}}`: false,
		`{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]`:                          false,
		`[DONE]`: false,
	} {
		if got := ChatOpening([]byte(data)); got != want {
			t.Errorf("ChatOpening(%s) = %v, want %v", data, got, want)
		}
	}
}

func TestChatPromptFilter(t *testing.T) {
	for data, want := range map[string]bool{
		`{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}`: true,
		`{"id": "", "choices": [], "prompt_filter_results": [], "usage": null}`:                                                                                                         true,
		`{"choices":[{"index":0,"delta":{"role":"assistant"}}],"prompt_filter_results":[]}`:                                                                                             false,
		`{"choices":[],"prompt_filter_results":[],"usage":{"prompt_tokens":3}}`:                                                                                                         false,
		`{"choices":[],"prompt_filter_results":[],"error":{"message":"x"}}`:                                                                                                             false,
		`{"choices":[],"prompt_filter_results":null}`:                                                                                                                                   false,
		`{"choices":[]}`: false,
		`{"choices":[],"prompt_filter_results":[]`: false,
		`[DONE]`: false,
	} {
		if got := ChatPromptFilter([]byte(data)); got != want {
			t.Errorf("ChatPromptFilter(%s) = %v, want %v", data, got, want)
		}
	}
}

func TestFlagged(t *testing.T) {
	for data, want := range map[string]bool{
		`{"error":{"code":403,"message":"flagged","metadata":{"reasons":["harassment"],"flagged_input":"x"}}}`: true,
		`{"error":{"code":403,"message":"flagged","metadata":{"flagged_input":"x"}}}`:                          true,
		`{"error":{"code":403,"message":"flagged","metadata":{"reasons":[],"flagged_input":""}}}`:              false,
		`{"error":{"code":403,"message":"Forbidden"}}`:                                                         false,
		`{"error":{"message":"x"},"metadata":{"reasons":["harassment"]}}`:                                      false,
		`{"error":"forbidden"}`: false,
		`forbidden`:             false,
	} {
		if got := Flagged([]byte(data)); got != want {
			t.Errorf("Flagged(%s) = %v, want %v", data, got, want)
		}
	}
}

// TestOverLimit: a rate limit's error says the request alone is over the
// whole limit only when it requests more than the limit; a limit reached
// by the minute's requests, or another error, is not.
func TestOverLimit(t *testing.T) {
	for _, c := range []struct {
		body      string
		ok        bool
		requested int64
	}{
		{`{"error":{"message":"Request too large for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Requested 45000. The input or output tokens must be reduced in order to run successfully.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`, true, 45000},
		{`{"error":{"message":"Request too large for gpt-4o on tokens per min (TPM): Limit 30,000, Requested 342,389.","type":"tokens","code":"rate_limit_exceeded"}}`, true, 342389},
		{`{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Used 29937, Requested 385. Please try again in 644ms.","type":"tokens","code":"rate_limit_exceeded"}}`, false, 0},
		{`{"error":{"message":"Request too large: Limit 30000, Requested 45000.","type":"invalid_request_error","code":"context_length_exceeded"}}`, false, 0}, // not a rate limit
		{`{"error":{"message":"Limit 30000","type":"tokens","code":"rate_limit_exceeded"}}`, false, 0},
		{`not json`, false, 0},
	} {
		_, requested, ok := OverLimit([]byte(c.body))
		if ok != c.ok || ok && requested != c.requested {
			t.Errorf("OverLimit(%s) = %d, %v; want %d, %v", c.body, requested, ok, c.requested, c.ok)
		}
	}
}
