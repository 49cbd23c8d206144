package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"unicode/utf16"
)

// reading is what a parser makes of the members that decide what a request
// costs: the model, whether it streams, how many answers.
type reading struct {
	model  string
	stream bool
	n      int64
	limits [len(limitNames)]int64 // max_tokens, max_completion_tokens, max_output_tokens; 0 when absent or null
}

// goReading is encoding/json's: member names matched case-insensitively,
// the last one wins (also how Go relays such as one-api read a body).
func goReading(body []byte) (reading, error) {
	var v struct {
		Model  *string `json:"model"`
		Stream *bool   `json:"stream"`
		N      *int64  `json:"n"`
	}
	var limits struct {
		MaxTokens           *int64 `json:"max_tokens"`
		MaxCompletionTokens *int64 `json:"max_completion_tokens"`
		MaxOutputTokens     *int64 `json:"max_output_tokens"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return reading{}, err
	}
	if err := json.Unmarshal(body, &limits); err != nil {
		return reading{}, err
	}
	var r reading
	for i, l := range []*int64{limits.MaxTokens, limits.MaxCompletionTokens, limits.MaxOutputTokens} {
		if l != nil {
			r.limits[i] = *l
		}
	}
	if v.Model != nil {
		r.model = *v.Model
	}
	if v.Stream != nil {
		r.stream = *v.Stream
	}
	if v.N != nil {
		r.n = *v.N
	}
	return r, nil
}

// exactReading matches member names exactly, the first (Java-style
// parsers) or the last (Python's json, JavaScript's JSON.parse) one
// winning; with lower, by their strings.ToLower (the case-insensitive
// lookup of jsoniter and sonic, Go relays' fast decoders, which maps "İ"
// to "i").
func exactReading(body []byte, lastWins, lower bool) (reading, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return reading{}, fmt.Errorf("not an object: %v", err)
	}
	var r reading
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return reading{}, err
		}
		name := tok.(string)
		if lower {
			name = strings.ToLower(name)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return reading{}, err
		}
		if seen[name] && !lastWins {
			continue
		}
		seen[name] = true
		switch name {
		case "model":
			var m *string
			if err := json.Unmarshal(raw, &m); err != nil {
				return reading{}, err
			}
			r.model = ""
			if m != nil {
				r.model = *m
			}
		case "stream":
			var s *bool
			if err := json.Unmarshal(raw, &s); err != nil {
				return reading{}, err
			}
			r.stream = s != nil && *s
		case "n":
			var n *int64
			if err := json.Unmarshal(raw, &n); err != nil {
				return reading{}, err
			}
			r.n = 0
			if n != nil {
				r.n = *n
			}
		case limitNames[0], limitNames[1], limitNames[2]:
			var l *int64
			if err := json.Unmarshal(raw, &l); err != nil {
				return reading{}, err
			}
			i := slices.Index(limitNames[:], name)
			r.limits[i] = 0
			if l != nil {
				r.limits[i] = *l
			}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return reading{}, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return reading{}, errors.New("data after the object")
	}
	return r, nil
}

// readings are the three parsers' readings of body, by name.
func readings(body []byte) map[string]func() (reading, error) {
	return map[string]func() (reading, error){
		"encoding/json (case-insensitive, last wins)": func() (reading, error) { return goReading(body) },
		"case-sensitive, first wins":                  func() (reading, error) { return exactReading(body, false, false) },
		"case-sensitive, last wins":                   func() (reading, error) { return exactReading(body, true, false) },
		"strings.ToLower, last wins":                  func() (reading, error) { return exactReading(body, true, true) },
	}
}

// checkReadingsAgree: a body Parse accepts is read the same by every
// parser, as Parse read it; and the body sent upstream is read by every
// parser as naming the model the gateway chose (the one it bills) and, with
// an output cap, as limiting the output where the provider reads it (the
// limit a budget reserved): the cap's member holds the request's limit, or
// the cap without one.
func checkReadingsAgree(t *testing.T, body []byte) {
	t.Helper()
	for _, api := range []API{0, Chat, Completions, Responses, Embeddings} {
		var r Request
		if r.Parse(body, api) != nil {
			continue
		}
		sent, err := goReading(body)
		if err != nil {
			t.Fatalf("api %d: Parse accepted %q, encoding/json refuses it: %v", api, body, err)
		}
		want := reading{r.Model, r.Stream, r.N, sent.limits}
		if api == Embeddings {
			want.stream = false // embeddings never stream: Parse says so whatever the body
		}
		for name, read := range readings(body) {
			got, err := read()
			if api == Embeddings {
				got.stream = false
			}
			if err != nil || got != want {
				t.Fatalf("api %d: Parse accepted %q as %+v, but %s reads %+v (%v)", api, body, want, name, got, err)
			}
		}
		for _, ask := range []UsageAsk{AskUsage, NoStreamOptions} {
			for _, limit := range []OutputCap{{}, {Tokens: 777}, {Tokens: 777, ChatField: "max_tokens"}} {
				up := r.UpstreamBody("billed-model", ask, limit)
				// a member the provider reads holds a limit: the
				// request's, or the cap without one (completions' default
				// at most); the others as sent (a 0 nulled reads as 0)
				capped := reading{"billed-model", want.stream, want.n, want.limits}
				if f := limit.field(api); limit.Tokens > 0 && f != "" {
					tokens := r.MaxTokens
					if tokens == 0 {
						tokens = limit.Tokens
						if api == Completions {
							tokens = min(tokens, completionsDefaultLimit)
						}
					}
					read := false
					for i, name := range limitNames {
						read = read || (limit.reads(api, name) && want.limits[i] != 0)
					}
					if !read {
						capped.limits[slices.Index(limitNames[:], f)] = tokens
					}
				}
				for name, read := range readings(up) {
					got, err := read()
					if api == Embeddings {
						got.stream = false
					}
					if err != nil || got != capped {
						t.Fatalf("api %d, cap %+v: upstream body %q of %q: %s reads %+v (%v), want %+v", api, limit, up, body, name, got, err, capped)
					}
				}
				if !json.Valid(up) {
					t.Fatalf("upstream body %q of %q is not JSON", up, body)
				}
			}
		}
	}
}

// smuggling are bodies a provider could read otherwise than a lax gateway:
// each must be refused (or read alike by everyone).
var smuggling = []string{
	`{"model":"deepseek-v3.2","messages":[{"role":"user","content":"hi"}],"Model":"o3-pro"}`,
	`{"Model":"o3-pro","messages":[{"role":"user","content":"hi"}]}`,
	`{"MODEL":"o3-pro","model":"deepseek-v3.2","messages":[]}`,
	`{"model":"simple_qa","messages":[],"Stream":true}`,
	`{"model":"simple_qa","messages":[],"stream":"true"}`,
	`{"model":"simple_qa","messages":[],"stream":1}`,
	`{"model":"a","mod\u0065l":"b","messages":[]}`,
	`{"model":"a","messages":[],"n":2,"N":1}`,
	`{"model":"a","messages":[],"n":1.0}`,
	`{"model":"a","messages":[],"n":0}`,
	`{"model":"a","messages":[],"n":"2"}`,
	`{"model":"a","messages":[],"ſtream":true}`,                  // U+017F folds to s
	`{"model":"a","messages":[],"servİce_tier":"priority"}`,      // U+0130 lowers to i (jsoniter, sonic)
	`{"model":"a","messages":[],"max_completİon_tokens":100000}`, // U+0130 lowers to i
	`{"model":"a","messages":[],"stream":true,"stream_optİons":{"include_usage":false}}`,
	`{"model":"a","messages":[],"stream":true,"stream_options":{"ınclude_usage":false,"include_usage":true}}`, // U+0131 uppers to I
	`{"model":"a","messages":[],"modalİtİes":["text","audio"]}`,
	`{"model":"cheap","models":["anthropic/claude-opus-4.1"],"messages":[]}`, // OpenRouter's fallback list
	`{"model":"cheap","Models":["o3-pro"],"messages":[]}`,
	`{"model":"cheap","route":"fallback","messages":[]}`,
	`{"model":"cheap","provider":{"order":["pricey"]},"messages":[]}`,
	`{"model":"cheap","preset":"pricey-models","messages":[]}`,                             // OpenRouter's preset: a model list, provider routing, server tools
	`{"model":"cheap","fallbacks":["o3-pro"],"mock_testing_fallbacks":true,"messages":[]}`, // LiteLLM's
	`{"model":"cheap","context_window_fallbacks":[{"cheap":["o3-pro"]}],"messages":[]}`,
	`{"model":"cheap","user_config":{"model_list":[]},"messages":[]}`,
	`{"model":"a","messages":[],"max_tokens":16,"n_predict":-1}`, // llama.cpp's output limit, read before max_tokens
	`{"model":"a","messages":[],"n_cmpl":8}`,                     // llama.cpp's answer count, read before n
	"{\"model\":\"a\",\"messages\":[],\"\u212aey\":1,\"key\":2}", // Kelvin sign folds to k
	`{"model":"a","messages":[],"stream":true,"stream_options":{"include_usage":false,"Include_Usage":true}}`,
	`{"model":"a","messages":[],"stream":true,"Stream_Options":{"include_usage":true}}`,
	`{"model":"a","messages":[{"role":"user","content":"x","Content":"y"}]}`,
	"{\"model\":\"a\xff\",\"messages\":[]}",
	`{"model":"a","messages":[],"model":"a"}`,
	`{"model":"a","messages":[],"n":129}`,
}

func TestSmugglingRefused(t *testing.T) {
	for _, body := range smuggling {
		var r Request
		err := r.Parse([]byte(body), Chat)
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("%s: accepted as model %q stream %v n %d", body, r.Model, r.Stream, r.N)
			continue
		}
		if e.Code == "" || e.Message == "" {
			t.Errorf("%s: error without code or message: %+v", body, e)
		}
		checkReadingsAgree(t, []byte(body))
	}
}

// TestSmugglingParams: the refusal names the member at fault, as OpenAI's
// envelope does.
func TestSmugglingParams(t *testing.T) {
	for body, want := range map[string]struct{ param, code string }{
		`{"model":"a","messages":[],"Model":"b"}`:                              {"Model", CodeDuplicate},
		`{"Model":"b","messages":[]}`:                                          {"Model", CodeCaseVariant},
		`{"model":"a","messages":[],"Stream":true}`:                            {"Stream", CodeCaseVariant},
		`{"model":"a","messages":[],"stream":"true"}`:                          {"stream", CodeInvalidType},
		`{"model":"a","messages":[],"n":0}`:                                    {"n", CodeInvalidValue},
		`{"model":"a","messages":[],"n":1.5}`:                                  {"n", CodeInvalidType},
		`{"model":"a","messages":[],"max_tokens":-1}`:                          {"max_tokens", CodeInvalidValue},
		`{"model":"a","messages":[],"models":["b"]}`:                           {"models", CodeUnsupported},
		`{"model":"a","messages":[],"n_predict":100000}`:                       {"n_predict", CodeUnsupported},
		`{"model":"a","messages":[],"n":1,"n_cmpl":4}`:                         {"n_cmpl", CodeUnsupported},
		`{"model":"a","messages":[],"N_Predict":100000}`:                       {"N_Predict", CodeCaseVariant},
		`{"model":"a","messages":[],"Fallbacks":["b"]}`:                        {"Fallbacks", CodeCaseVariant},
		`{"model":1,"messages":[]}`:                                            {"model", CodeInvalidType},
		`{"model":"a","messages":{}}`:                                          {"messages", CodeInvalidType},
		`{"model":"a","messages":["hi"]}`:                                      {"messages[0]", CodeInvalidType},
		`{"model":"a","messages":[{"role":1}]}`:                                {"messages[0].role", CodeInvalidType},
		`{"model":"a"}`:                                                        {"messages", CodeMissingParameter},
		`{"model":"a","messages":[],"stream_options":true}`:                    {"stream_options", CodeInvalidType},
		`{"model":"a","messages":[],"stream_options":{"include_usage":"yes"}}`: {"stream_options.include_usage", CodeInvalidType},
	} {
		var r Request
		err := r.Parse([]byte(body), Chat)
		var e *Error
		if !errors.As(err, &e) || e.Param != want.param || e.Code != want.code {
			t.Errorf("%s: got %+v, want param %q code %q", body, err, want.param, want.code)
		}
	}
}

// FuzzReadingsAgree is the differential test of the strict reading: for
// any body Parse accepts, its model, stream and n are what encoding/json,
// a case-sensitive first-wins and a case-sensitive last-wins parser read,
// and the edited body names the billed model to all three. Run it for real
// with: go test -run '^$' -fuzz '^FuzzReadingsAgree$' -fuzztime 60s ./internal/openai/
func FuzzReadingsAgree(f *testing.F) {
	for _, s := range smuggling {
		f.Add(s)
	}
	for _, s := range []string{
		`{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"x","stream":true,"stream_options":{"include_usage":false},"messages":[]}`,
		`{"stream":true,"stream_options":null,"messages":[]}`,
		`{"messages":[],"stream":true,"stream_options":{ }}`,
		`{"stream_options":{"include_usage":true},"stream":true,"messages":[],"n":3}`,
		`{"messages":[],"stream":true,"stream_options":{"x":1} , "n":null}`,
		`{"model":null,"stream":null,"n":null,"messages":[]}`,
		`{"mod\u0065l":"x","stream_options":{"include_us\u0061ge":false},"stream":true,"messages":[]}`,
		`{"input":"hello","model":"e"}`,
		`{"prompt":["a",[1,2],3],"stream":true}`,
		`{"input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]}],"stream":true,"instructions":"be brief"}`,
		` { "messages" : [ ] , "model" : "a\u00e9" } `,
		`{"model":"a","messages":[],"max_tokens":null}`,
		`{"model":"a","messages":[],"max_tokens":0,"max_completion_tokens":-0}`,
		`{"messages":[],"max_completion_tokens":null,"max_output_tokens":0}`,
		`{"input":"hi","max_output_tokens":null,"max_tokens":0}`,
		`{"prompt":"hi","max_tokens":0,"stream":true,"stream_options":{"include_usage":false}}`,
		`{"model":"a","messages":[],"max_tokens":12}`,
		`{}`,
		`{ "max_tokens" : null }`,
		`{"model":"x","max_tokens":0,"max_completion_tokens":5,"messages":[]}`,
		`{"model":"x","max_completion_tokens":5,"messages":[]}`,
		`{"model":"x","max_tokens":777,"messages":[]}`,
		`{"model":"x","prompt":"Say hi"}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		checkReadingsAgree(t, []byte(body))
	})
}

// TestDuplicateAmongManyMembers: past the small list, names are checked
// through a set of hashes; a duplicate is found there as well, whether its
// first occurrence came before or after the switch, and however long.
func TestDuplicateAmongManyMembers(t *testing.T) {
	long := strings.Repeat("k", 70000)
	build := func(names ...string) []byte {
		var b strings.Builder
		b.WriteString(`{"messages":[]`)
		for i := range 100 {
			fmt.Fprintf(&b, `,"m%d":%d`, i, i)
		}
		for _, n := range names {
			fmt.Fprintf(&b, `,%q:1`, n)
		}
		b.WriteString("}")
		return []byte(b.String())
	}
	for _, tc := range []struct {
		body []byte
		dup  bool
	}{
		{build(), false},
		{build("M5"), true},  // first seen in the small list
		{build("m95"), true}, // first seen in the set
		{build("x", "X"), true},
		{build(long, strings.ToUpper(long)), true},
		{build(long, long+"x"), false},
		{[]byte(`{"` + long + `":1,"messages":[],"` + strings.ToUpper(long) + `":2}`), true},
	} {
		var r Request
		err := r.Parse(tc.body, Chat)
		var e *Error
		if got := errors.As(err, &e) && e.Code == CodeDuplicate; got != tc.dup {
			t.Errorf("%.80s…: duplicate %v (%v), want %v", tc.body[len(tc.body)-80:], got, err, tc.dup)
		}
	}
}

// FuzzStringChars: the characters str counts as it scans (free in the
// ASCII run) are those StringChars counts, for any valid string.
func FuzzStringChars(f *testing.F) {
	for _, s := range []string{`"abc"`, `"é✓"`, `"\u00e9\"\\\n"`, `"\ud83d\ude00x"`, `"\udc00"`, `""`, `"a\/b"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, lit string) {
		s := scanner{b: []byte(lit)}
		if len(lit) == 0 || lit[0] != '"' || s.str() != nil {
			return
		}
		if want := StringChars([]byte(lit[1:s.i])); s.chars != want {
			t.Fatalf("%q: str counted %d characters, StringChars %d", lit[:s.i], s.chars, want)
		}
	})
}

// FuzzStringBytes: stringBytes counts the UTF-8 bytes of what a JSON
// string holds, escapes decoded, whether the encoder wrote characters as
// they are (Go, most servers) or escaped everything beyond ASCII, pairs
// of surrogates included (Python's json.dumps).
func FuzzStringBytes(f *testing.F) {
	for _, s := range []string{"", "hello", "héllo", "退货政策", "😀 ok", "a\"b\\c\n\u2028<>&", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		lit, _ := json.Marshal(s)
		var held string
		if err := json.Unmarshal(lit, &held); err != nil {
			t.Fatal(err)
		}
		ascii := []byte{'"'}
		for _, r := range held {
			switch {
			case r < 0x80:
				b, _ := json.Marshal(string(r))
				ascii = append(ascii, b[1:len(b)-1]...)
			case r > 0xFFFF:
				r1, r2 := utf16.EncodeRune(r)
				ascii = fmt.Appendf(ascii, "\\u%04x\\u%04x", r1, r2)
			default:
				ascii = fmt.Appendf(ascii, "\\u%04x", r)
			}
		}
		ascii = append(ascii, '"')
		for _, l := range [][]byte{lit, ascii} {
			if n, end := stringBytes(l[1:]); n != int64(len(held)) || end != len(l)-2 {
				t.Fatalf("%s: %d bytes, closing quote at %d; want %d, %d", l, n, end, len(held), len(l)-2)
			}
		}
	})
}

// TestFoldRune: a character folds as the least of its simple-folding
// orbit and of its lower and upper case's orbits, whichever it starts
// from.
func TestFoldRune(t *testing.T) {
	for _, group := range [][]rune{
		{'k', 'K', 'K'},
		{'s', 'S', 'ſ'},
		{'i', 'I', 'İ', 'ı'},
		{'θ', 'Θ', 'ϑ', 'ϴ'},
		{'é', 'É'},
	} {
		for _, r := range group {
			if got, want := foldRune(r), foldRune(group[0]); got != want {
				t.Errorf("%q folds to %q, %q to %q", r, got, group[0], want)
			}
		}
	}
	if foldRune('é') == foldRune('e') {
		t.Error("é folds as e")
	}
}
