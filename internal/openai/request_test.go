package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// parseErr is Parse's error as an *Error; it fails the test on any other
// kind of error.
func parseErr(t *testing.T, in string, err error) *Error {
	t.Helper()
	if err == nil {
		return nil
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%q: error %v (%T) is not an *Error", in, err, err)
	}
	return e
}

func TestParseRequest(t *testing.T) {
	cases := []struct {
		api          API
		body         string
		model        string
		stream       bool
		includeUsage bool
		code, param  string // the refusal, if refused
	}{
		{Chat, `{"model":"gpt-4.1","messages":[]}`, "gpt-4.1", false, false, "", ""},
		{Chat, ` { "messages" : [ {"content":"{\"model\":\"x\"}"} ] , "model" : "a\u00e9" } `, "aé", false, false, "", ""},
		// a messages element that is not an object: refused for chat; read
		// as written without an API
		{Chat, `{"model":null,"stream":true,"messages":[1]}`, "", false, false, CodeInvalidType, "messages[0]"},
		{0, `{"model":null,"stream":true,"messages":[1]}`, "", true, false, "", ""},
		// include_usage is read as the client wrote it; only a stream acts on it
		{Chat, `{"stream":false,"stream_options":{"include_usage":true},"messages":[]}`, "", false, true, "", ""},
		{Chat, `{"stream":true,"stream_options":{"include_usage":true},"messages":[]}`, "", true, true, "", ""},
		// messages that are not an array: refused for chat; a nested model
		// is never the model
		{Chat, `{"nested":{"model":"inner"},"messages":"not an array"}`, "", false, false, CodeInvalidType, "messages"},
		{0, `{"nested":{"model":"inner"},"messages":"not an array"}`, "", false, false, "", ""},
		// each API's required member
		{Chat, `{"model":"a"}`, "", false, false, CodeMissingParameter, "messages"},
		{Chat, `{"model":"a","input":"x","prompt":"y"}`, "", false, false, CodeMissingParameter, "messages"},
		{Completions, `{"model":"a","messages":[]}`, "", false, false, CodeMissingParameter, "prompt"},
		{Completions, `{"model":"a","prompt":null}`, "", false, false, CodeMissingParameter, "prompt"},
		{Completions, `{"model":"a","prompt":"p","stream":true}`, "a", true, false, "", ""},
		{Embeddings, `{"model":"a","messages":[]}`, "", false, false, CodeMissingParameter, "input"},
		{Embeddings, `{"model":"a","input":null}`, "", false, false, CodeMissingParameter, "input"},
		{Embeddings, `{"model":"a","input":"x","stream":true}`, "a", false, false, "", ""}, // never a stream
		{Responses, `{"model":"a"}`, "a", false, false, "", ""},
		{Responses, `{"model":"a","input":"x","stream":true}`, "a", true, false, "", ""},
		{0, `{}`, "", false, false, "", ""},
	}
	for _, tc := range cases {
		var r Request
		e := parseErr(t, tc.body, r.Parse([]byte(tc.body), tc.api))
		if tc.code != "" {
			if e == nil || e.Code != tc.code || e.Param != tc.param {
				t.Errorf("api %d %s: err %+v, want code %q param %q", tc.api, tc.body, e, tc.code, tc.param)
			}
			continue
		}
		if e != nil {
			t.Errorf("api %d %s: %+v", tc.api, tc.body, e)
			continue
		}
		if r.Model != tc.model || r.Stream != tc.stream || r.IncludeUsage != tc.includeUsage || r.API != tc.api {
			t.Errorf("api %d %s: got model %q stream %v usage %v api %d", tc.api, tc.body, r.Model, r.Stream, r.IncludeUsage, r.API)
		}
	}
}

// TestScannerAgreesWithEncodingJSON: the scanner accepts exactly what
// encoding/json accepts, for objects without the request rules' refusals.
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
		var r Request
		err := r.Parse([]byte(in), 0)
		if got, want := err == nil, json.Valid([]byte(in)); got != want {
			t.Errorf("%q: scanner says valid=%v (%v), encoding/json says %v", in, got, err, want)
		}
		// the bare scanner too, on any value
		s := scanner{b: []byte(in)}
		s.ws()
		ok := s.i < len(s.b) && s.value(0) == nil
		if ok {
			s.ws()
			ok = s.i == len(s.b)
		}
		if ok != json.Valid([]byte(in)) {
			t.Errorf("%q: scanner.value says valid=%v, encoding/json says %v", in, ok, !ok)
		}
	}
}

// The names the fuzz target routes to: plain, and needing escapes.
var fuzzUpstreams = []string{"up/model-1", "org/mod\"el\\é✓\x01<&>"}

// FuzzParseRequestBody: Parse never accepts what is not JSON, and whatever
// it accepts, for any API, has an upstream body that encoding/json reads
// with the routed model (and, for chat and completions streams, usage
// asked for or stream_options dropped), that Parse itself accepts again,
// and that encoding/json reads the client's model and stream from as Parse
// did.
func FuzzParseRequestBody(f *testing.F) {
	f.Add(`{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	f.Add(`{"model":"x","stream":true,"stream_options":{"include_usage":false},"messages":[]}`)
	f.Add(`{"stream":true,"stream_options":null,"messages":[]}`)
	f.Add(`{"messages":[],"stream":true,"stream_options":{ }}`)
	f.Add(`{"model":[],"messages":[]}`)
	f.Add(`{"model":null,"stream":true}`)
	f.Add(`{"mod\u0065l":"x","stream_options":{"include_us\u0061ge":false},"stream":true}`)
	// added with the stricter rules
	f.Add(`{"Model":"x","messages":[]}`)
	f.Add(`{"ſtream":true,"prompt":"p"}`)
	f.Add(`{"n":2,"max_tokens":16,"temperature":0.5,"prompt":["a",[1,2]],"stream":true,"stream_options":{"x":1}}`)
	f.Add(`{"input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]}],"instructions":"be brief","stream":true}`)
	f.Add(`{"stream":true,"prompt":"p","stream_options":{"include_usage":null}}`)
	f.Add("{\"a\":\"\xff\"}")
	f.Fuzz(func(t *testing.T, in string) {
		raw := []byte(in)
		valid := json.Valid(raw)
		for _, api := range []API{0, Chat, Completions, Responses, Embeddings} {
			var r Request
			err := r.Parse(raw, api)
			if err != nil {
				var e *Error
				if !errors.As(err, &e) {
					t.Fatalf("api %d, %q: error %v (%T) is not an *Error", api, in, err, err)
				}
				continue
			}
			if !valid {
				t.Fatalf("api %d: %q accepted, but encoding/json says it is not JSON", api, in)
			}
			if !utf8.Valid(raw) {
				t.Fatalf("api %d: %q accepted, but it is not UTF-8", api, in)
			}
			// encoding/json reads the client's model and stream as Parse did
			// (case-insensitively, the last of two: the rules refuse both)
			var client struct {
				Model  json.RawMessage `json:"model"`
				Stream json.RawMessage `json:"stream"`
			}
			if err := json.Unmarshal(raw, &client); err != nil {
				t.Fatalf("api %d, %q: encoding/json cannot read it: %v", api, in, err)
			}
			var clientModel string
			if len(client.Model) > 0 && string(client.Model) != "null" {
				if err := json.Unmarshal(client.Model, &clientModel); err != nil {
					t.Fatalf("api %d, %q: model %s is not a string", api, in, client.Model)
				}
			}
			if clientModel != r.Model {
				t.Fatalf("api %d, %q: routed on model %q, encoding/json reads %q", api, in, r.Model, clientModel)
			}
			clientStream := string(client.Stream) == "true"
			if api == Embeddings {
				clientStream = false
			}
			if clientStream != r.Stream {
				t.Fatalf("api %d, %q: stream %v, encoding/json reads %s", api, in, r.Stream, client.Stream)
			}
			usageEdits := r.Stream && (api == Chat || api == Completions)
			for _, up := range append(fuzzUpstreams, r.Model) {
				if !utf8.ValidString(up) {
					continue
				}
				for _, ask := range []UsageAsk{AskUsage, NoStreamOptions} {
					b := r.Upstream(up, ask, OutputCap{})
					out := b.Join()
					if streamed, _ := io.ReadAll(b.Reader()); !bytes.Equal(streamed, out) || len(out) != b.Size {
						t.Fatalf("reader gives %q, join %q, size %d", streamed, out, b.Size)
					}
					if ask == AskUsage && !bytes.Equal(r.UpstreamBody(up, ask, OutputCap{}), out) {
						t.Fatalf("UpstreamBody differs from Upstream")
					}
					var after struct {
						Model         *string         `json:"model"`
						StreamOptions json.RawMessage `json:"stream_options"`
					}
					if err := json.Unmarshal(out, &after); err != nil {
						t.Fatalf("api %d: edited body is not JSON: %q -> %q: %v", api, in, out, err)
					}
					if after.Model == nil || *after.Model != up {
						t.Fatalf("api %d: model not rewritten to %q: %q -> %q", api, up, in, out)
					}
					if usageEdits && ask == NoStreamOptions && after.StreamOptions != nil {
						t.Fatalf("api %d: stream_options not dropped: %q -> %q", api, in, out)
					}
					if !usageEdits && ask == NoStreamOptions && !bytes.Equal(out, r.UpstreamBody(up, AskUsage, OutputCap{})) {
						t.Fatalf("api %d: the usage mode changed a body that is not a chat or completions stream: %q", api, in)
					}
					// the upstream body is a request Parse accepts, for the
					// routed model, asking for usage
					var again Request
					if err := again.Parse(out, api); err != nil {
						t.Fatalf("api %d: upstream body %q (of %q) refused: %v", api, out, in, err)
					}
					if again.Model != up || again.Stream != r.Stream {
						t.Fatalf("api %d: upstream body %q reads as model %q stream %v", api, out, again.Model, again.Stream)
					}
					if usageEdits && ask == AskUsage && !again.IncludeUsage {
						t.Fatalf("api %d: include_usage not set: %q -> %q", api, in, out)
					}
					if usageEdits && ask == AskUsage {
						var opts struct {
							StreamOptions struct {
								IncludeUsage bool `json:"include_usage"`
							} `json:"stream_options"`
						}
						if err := json.Unmarshal(out, &opts); err != nil || !opts.StreamOptions.IncludeUsage {
							t.Fatalf("api %d: encoding/json does not read include_usage true in %q (%v)", api, out, err)
						}
					}
				}
			}
		}
	})
}

func TestUpstreamBodyEdits(t *testing.T) {
	cases := []struct {
		api    API
		in     string
		want   string
		noOpts string // with NoStreamOptions; "" when the same as want
	}{
		{Chat, `{"model":"a","messages":[]}`, `{"model":"up","messages":[]}`, ""},
		{Chat, `{"messages":[]}`, `{"model":"up","messages":[]}`, ""},
		{0, `{ }`, `{"model":"up" }`, ""},
		{Chat, `{"model":"a","stream":true,"messages":[]}`, `{"stream_options":{"include_usage":true},"model":"up","stream":true,"messages":[]}`,
			`{"model":"up","stream":true,"messages":[]}`},
		{Chat, `{"stream":true,"stream_options":{},"model":"a","messages":[]}`, `{"stream":true,"stream_options":{"include_usage":true},"model":"up","messages":[]}`,
			`{"stream":true,"model":"up","messages":[]}`},
		{Completions, `{"stream":true,"stream_options":{"x":1},"model":"a","prompt":"p"}`, `{"stream":true,"stream_options":{"include_usage":true,"x":1},"model":"up","prompt":"p"}`,
			`{"stream":true,"model":"up","prompt":"p"}`},
		{Chat, `{"model":"a","stream":true,"stream_options":{"include_usage":false},"messages":[]}`, `{"model":"up","stream":true,"stream_options":{"include_usage":true},"messages":[]}`,
			`{"model":"up","stream":true,"messages":[]}`},
		{Chat, `{"model":"a","stream":true,"messages":[],"stream_options":null}`, `{"model":"up","stream":true,"messages":[],"stream_options":{"include_usage":true}}`,
			`{"model":"up","stream":true,"messages":[]}`},
		{Chat, `{"model":"a","stream":true,"stream_options":{"include_usage":true},"messages":[]}`, `{"model":"up","stream":true,"stream_options":{"include_usage":true},"messages":[]}`,
			`{"model":"up","stream":true,"messages":[]}`},
		{Chat, `{"stream":true,"messages":[]}`, `{"model":"up","stream_options":{"include_usage":true},"stream":true,"messages":[]}`,
			`{"model":"up","stream":true,"messages":[]}`},
		// stream_options first, last, with spaces around it, next to the model
		{Chat, `{"stream_options":{},"stream":true,"messages":[]}`, `{"model":"up","stream_options":{"include_usage":true},"stream":true,"messages":[]}`,
			`{"model":"up","stream":true,"messages":[]}`},
		{Chat, `{ "messages" : [] , "stream" : true , "stream_options" : { } }`, `{"model":"up", "messages" : [] , "stream" : true , "stream_options" : {"include_usage":true } }`,
			`{"model":"up", "messages" : [] , "stream" : true  }`},
		{Chat, `{"stream":true,"messages":[],"model":"a","stream_options":{"include_usage":false}}`, `{"stream":true,"messages":[],"model":"up","stream_options":{"include_usage":true}}`,
			`{"stream":true,"messages":[],"model":"up"}`},
		{Chat, `{"stream":true,"messages":[],"stream_options":{"include_usage":false},"model":"a"}`, `{"stream":true,"messages":[],"stream_options":{"include_usage":true},"model":"up"}`,
			`{"stream":true,"messages":[],"model":"up"}`},
		// no usage edits but for chat and completions streams
		{Chat, `{"model":"a","stream":false,"stream_options":{"include_usage":false},"messages":[]}`, `{"model":"up","stream":false,"stream_options":{"include_usage":false},"messages":[]}`, ""},
		{Responses, `{"model":"a","stream":true,"input":"x"}`, `{"model":"up","stream":true,"input":"x"}`, ""},
		{Responses, `{"model":"a","stream":true,"stream_options":{"include_usage":false},"input":"x"}`, `{"model":"up","stream":true,"stream_options":{"include_usage":false},"input":"x"}`, ""},
		{Embeddings, `{"model":"a","stream":true,"input":"x"}`, `{"model":"up","stream":true,"input":"x"}`, ""},
		{0, `{"model":"a","stream":true}`, `{"model":"up","stream":true}`, ""},
	}
	for _, tc := range cases {
		var r Request
		if err := r.Parse([]byte(tc.in), tc.api); err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if got := string(r.UpstreamBody("up", AskUsage, OutputCap{})); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.in, got, tc.want)
		}
		want := tc.noOpts
		if want == "" {
			want = tc.want
		}
		if got := string(r.UpstreamBody("up", NoStreamOptions, OutputCap{})); got != want {
			t.Errorf("%s, NoStreamOptions:\n got %s\nwant %s", tc.in, got, want)
		}
	}
}

// TestParseRequestFields: what the scanner extracts from the top level,
// and only from the top level.
func TestParseRequestFields(t *testing.T) {
	cases := []struct {
		body         string
		model        string
		hasModel     bool // a "model" string (or null) is present
		stream       bool
		includeUsage bool
	}{
		{`{"model":"a\"b\\c\/d","messages":[]}`, `a"b\c/d`, true, false, false},
		{`{"model":"\u0067pt-4\u002e1"}`, "gpt-4.1", true, false, false},
		{`{"model":"\ud83d\ude00 \t\n"}`, "😀 \t\n", true, false, false},
		{`{"model":"","messages":[]}`, "", true, false, false},
		{`{"model":"é✓","input":"text"}`, "é✓", true, false, false},
		{`{"model":null}`, "", true, false, false}, // present: the edit replaces the null
		{`{"mod\u0065l":"x"}`, "x", true, false, false},
		{`{"stream":null}`, "", false, false, false},
		{`{"stream":true,"stream_options":{"nested":{"include_usage":true}}}`, "", false, true, false},
		{`{"stream":true,"include_usage":true}`, "", false, true, false},
		{`{"stream":true,"stream_options":{"include_usage":true}}`, "", false, true, true},
		{`{"stream":true,"stream_options":{"include_usage":null}}`, "", false, true, false},
		{`{"stream":true,"stream_options":{"include_us\u0061ge":true}}`, "", false, true, true},
		{`{"metadata":{"model":"inner","stream":true,"messages":[],"input":1}}`, "", false, false, false},
		{`{"tools":[{"model":"x"}],"model":"outer"}`, "outer", true, false, false},
	}
	for _, tc := range cases {
		var r Request
		if err := r.Parse([]byte(tc.body), 0); err != nil {
			t.Errorf("%s: %v", tc.body, err)
			continue
		}
		if r.Model != tc.model || r.model.ok() != tc.hasModel || r.Stream != tc.stream || r.IncludeUsage != tc.includeUsage {
			t.Errorf("%s: got model %q (span %v) stream %v usage %v", tc.body, r.Model, r.model, r.Stream, r.IncludeUsage)
		}
		if r.model.ok() && r.Raw[r.model.start] != '"' && r.Raw[r.model.start] != 'n' {
			t.Errorf("%s: model span %v does not start at its quote", tc.body, r.model)
		}
		if r.StripUsage() {
			t.Errorf("%s: StripUsage without an API", tc.body)
		}
	}
}

func TestParseServiceTierAndBackground(t *testing.T) {
	for _, tc := range []struct {
		body       string
		tier       string
		background bool
	}{
		{`{"input":"x"}`, "", false},
		{`{"input":"x","service_tier":null,"background":null}`, "", false},
		{`{"input":"x","service_tier":"pri\u006frity","background":true}`, "priority", true},
		{`{"input":"x","service_tier":"flex","background":false}`, "flex", false},
	} {
		var r Request
		if err := r.Parse([]byte(tc.body), Responses); err != nil {
			t.Errorf("%s: %v", tc.body, err)
			continue
		}
		if r.ServiceTier != tc.tier || r.Background != tc.background {
			t.Errorf("%s: service_tier %q background %v, want %q %v", tc.body, r.ServiceTier, r.Background, tc.tier, tc.background)
		}
	}
}

// TestParseUnseenInput: what makes a request read input the gateway
// cannot size: context the provider stores, which the body does not
// carry, and documents.
func TestParseUnseenInput(t *testing.T) {
	for _, tc := range []struct {
		api    API
		body   string
		stored bool
	}{
		{Responses, `{"input":"x"}`, false},
		{Responses, `{"input":"x","conversation":null,"prompt":null}`, false},
		// a conversation is apart (Conversation), as previous_response_id is
		{Responses, `{"input":"x","conversation":"conv_1"}`, false},
		{Responses, `{"input":"x","conversation":{"id":"conv_1"}}`, false},
		{Responses, `{"prompt":{"id":"pmpt_1"}}`, true},
		{Responses, `{"input":[{"type":"item_reference","id":"msg_1"}]}`, true},
		{Responses, `{"input":[{"type":"item_r\u0065ference","id":"msg_1"}]}`, true},
		{Responses, `{"input":[{"type":null,"id":"msg_1"}]}`, true},
		{Responses, `{"input":[{"id":"msg_1"}]}`, true},
		// items that carry what the model reads, with their ids
		{Responses, `{"input":[{"type":"message","id":"msg_1","role":"assistant","content":"hi"}]}`, false},
		{Responses, `{"input":[{"type":"function_call_output","id":"fc_1","call_id":"c","output":"42"}]}`, false},
		{Responses, `{"input":[{"role":"user","content":"x","id":"msg_1"}]}`, false},
		{Responses, `{"input":[{"id":null}]}`, false},
		// a null role or content is no content: a provider may read the
		// item as an id alone
		{Responses, `{"input":[{"id":"msg_1","role":null,"content":null}]}`, true},
		// a reasoning item by its id is read back from storage; with its
		// encrypted_content, from the body
		{Responses, `{"input":[{"type":"reasoning","id":"rs_1","summary":[]}]}`, true},
		{Responses, `{"input":[{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":null}]}`, true},
		{Responses, `{"input":[{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"gAAAAB"}]}`, false},
		// not the Responses API: passed through unread
		{Chat, `{"messages":[{"role":"user","content":"x","type":"item_reference","id":"m"}],"conversation":"c"}`, false},
		{Completions, `{"prompt":"x","conversation":"c"}`, false},
		// documents, by reference or inline, in either API; images are not
		{Chat, `{"messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-1"}}]}]}`, true},
		{Responses, `{"input":[{"role":"user","content":[{"type":"input_file","file_url":"https://example.com/a.pdf"}]}]}`, true},
		{Chat, `{"messages":[{"role":"tool","tool_call_id":"c","content":"x","extra":"data:application/pdf;base64,JVBERi0="}]}`, true},
		{Chat, `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]}]}`, false},
		// an assistant's audio, by its id: stored by the provider
		{Chat, `{"messages":[{"role":"assistant","audio":{"id":"audio_1"}},{"role":"user","content":"x"}]}`, true},
		{Chat, `{"messages":[{"role":"assistant","content":"hi","audio":null},{"role":"user","content":"x"}]}`, false},
		// a tool's output in parts, a document among them
		{Responses, `{"input":[{"type":"function_call_output","call_id":"c","output":[{"type":"input_file","file_id":"file-1"}]}]}`, true},
		{Responses, `{"input":[{"type":"function_call_output","call_id":"c","output":[{"type":"input_f\u0069le","file_url":"https://example.com/a.pdf"}]}]}`, true},
		{Responses, `{"input":[{"type":"function_call_output","call_id":"c","output":[{"type":"input_image","image_url":"https://example.com/a.png"}]}]}`, false},
	} {
		var r Request
		if err := r.Parse([]byte(tc.body), tc.api); err != nil {
			t.Errorf("%s: %v", tc.body, err)
			continue
		}
		if r.UnseenInput != tc.stored {
			t.Errorf("%s: UnseenInput %v, want %v", tc.body, r.UnseenInput, tc.stored)
		}
	}
}

// TestParseConversation: the Responses API's conversation, by its id or
// as an object with the id.
func TestParseConversation(t *testing.T) {
	for body, want := range map[string]string{
		`{"input":"x"}`:                                            "",
		`{"input":"x","conversation":null}`:                        "",
		`{"input":"x","conversation":"conv_\u0031"}`:               "conv_1",
		`{"input":"x","conversation":{"id":"conv_2","extra":[1]}}`: "conv_2",
		`{"input":"x","conversation":{"id":null}}`:                 "",
	} {
		var r Request
		if err := r.Parse([]byte(body), Responses); err != nil || r.Conversation != want {
			t.Errorf("%s: conversation %q (%v), want %q", body, r.Conversation, err, want)
		}
	}
}

func TestStripUsage(t *testing.T) {
	cases := []struct {
		api  API
		body string
		want bool
	}{
		{Chat, `{"messages":[],"stream":true}`, true},
		{Chat, `{"messages":[],"stream":true,"stream_options":{"include_usage":false}}`, true},
		{Chat, `{"messages":[],"stream":true,"stream_options":{"include_usage":true}}`, false},
		{Chat, `{"messages":[],"stream":false}`, false},
		{Chat, `{"messages":[],"stream_options":{"include_usage":true}}`, false},
		{Completions, `{"prompt":"p","stream":true}`, true},
		{Completions, `{"prompt":"p","stream":true,"stream_options":{"include_usage":true}}`, false},
		{Responses, `{"input":"p","stream":true}`, false},
		{Embeddings, `{"input":"p","stream":true}`, false},
		{0, `{"stream":true}`, false},
	}
	for _, tc := range cases {
		var r Request
		if err := r.Parse([]byte(tc.body), tc.api); err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		if got := r.StripUsage(); got != tc.want {
			t.Errorf("api %d %s: StripUsage = %v, want %v", tc.api, tc.body, got, tc.want)
		}
	}
}

// TestParseRequestRefusals: bodies that are JSON but that a provider could
// read otherwise than the gateway, or that break a rule of the members the
// gateway acts on, each with its code and the member at fault.
func TestParseRequestRefusals(t *testing.T) {
	cases := []struct {
		api         API
		body        string
		code, param string
	}{
		// top-level members that a case-insensitive parser takes for one
		{0, `{"foo":1,"FOO":2}`, CodeDuplicate, "FOO"},
		{0, `{"foo":1,"foo":2}`, CodeDuplicate, "foo"},
		{0, `{"k":1,"` + "\u212a" + `":2}`, CodeDuplicate, "\u212a"}, // the Kelvin sign folds to k
		{0, `{"s":1,"ſ":2}`, CodeDuplicate, "ſ"},
		{0, `{"s":1,"\u017f":2}`, CodeDuplicate, "ſ"},
		{0, `{"model":"a","mod\u0065l":"b"}`, CodeDuplicate, "model"},
		{Chat, `{"messages":[],"messages":"x"}`, CodeDuplicate, "messages"},
		{0, `{"model":"a","model":null}`, CodeDuplicate, "model"},
		// members the gateway acts on, in another case
		{0, `{"Model":"case","MESSAGES":[]}`, CodeCaseVariant, "Model"},
		{Chat, `{"messages":[],"STREAM":true}`, CodeCaseVariant, "STREAM"},
		{0, `{"ſtream":true}`, CodeCaseVariant, "ſtream"},
		{0, "{\"max_to\u212aens\":1}", CodeCaseVariant, "max_to\u212aens"},
		{0, `{"stream":true,"stream_options":{"Include_Usage":true}}`, CodeCaseVariant, "stream_options.Include_Usage"},
		{0, `{"response_format":{"TYPE":"json_object"}}`, CodeCaseVariant, "response_format.TYPE"},
		{Chat, `{"messages":[{"Role":"user","content":"x"}]}`, CodeCaseVariant, "Role"},
		{Responses, `{"input":[{"TYPE":"item_reference","id":"msg_1"}]}`, CodeCaseVariant, "TYPE"},
		{Responses, `{"input":"x","n":2}`, CodeUnsupported, "n"},
		{Responses, `{"input":[{"type":"item_reference","Id":"msg_1"}]}`, CodeCaseVariant, "Id"},
		// nested members the gateway reads, twice
		{0, `{"stream":true,"stream_options":{"include_usage":true,"include_us\u0061ge":false}}`, CodeDuplicate, "stream_options.include_usage"},
		{Chat, `{"messages":[{"role":"user","role":"system","content":"x"}]}`, CodeDuplicate, "role"},
		{Responses, `{"input":"x","Conversation":"conv_1"}`, CodeCaseVariant, "Conversation"},
		{Responses, `{"input":"x","conversation":{"id":"conv_1","ID":"conv_2"}}`, CodeCaseVariant, "conversation.ID"},
		{Responses, `{"input":"x","conversation":{"id":"conv_1","i\u0064":"conv_2"}}`, CodeDuplicate, "conversation.id"},
		{Responses, `{"input":"x","conversation":1}`, CodeInvalidType, "conversation"},
		{Responses, `{"input":"x","conversation":{"id":1}}`, CodeInvalidType, "conversation.id"},
		// a stored prompt's id, which a 404 is matched against and which
		// keeps a request from being hedged: read as strictly
		{Responses, `{"input":"x","prompt":{"Id":"pmpt_1"}}`, CodeCaseVariant, "prompt.Id"},
		{Responses, `{"input":"x","prompt":{"id":"pmpt_1","ID":"pmpt_2"}}`, CodeCaseVariant, "prompt.ID"},
		{Responses, `{"input":"x","prompt":{"id":"pmpt_1","i\u0064":"pmpt_2"}}`, CodeDuplicate, "prompt.id"},
		{Responses, `{"input":"x","prompt":{"id":1}}`, CodeInvalidType, "prompt.id"},
		// the price tier and background, which the gateway acts on
		{0, `{"Service_Tier":"priority"}`, CodeCaseVariant, "Service_Tier"},
		{0, `{"service_tier":"default","SERVICE_TIER":"priority"}`, CodeDuplicate, "SERVICE_TIER"},
		{0, `{"service_tier":1}`, CodeInvalidType, "service_tier"},
		{Responses, `{"background":"true"}`, CodeInvalidType, "background"},
		{Responses, `{"Background":true}`, CodeCaseVariant, "Background"},
		// model
		{0, `{"model":1}`, CodeInvalidType, "model"},
		{0, `{"model":["a"]}`, CodeInvalidType, "model"},
		{0, `{"model":{"name":"a"}}`, CodeInvalidType, "model"},
		{0, `{"model":true}`, CodeInvalidType, "model"},
		// stream and stream_options
		{0, `{"stream":"true"}`, CodeInvalidType, "stream"},
		{0, `{"stream":1}`, CodeInvalidType, "stream"},
		{0, `{"stream":true,"stream_options":{"include_usage":"true"}}`, CodeInvalidType, "stream_options.include_usage"},
		{0, `{"stream":true,"stream_options":{"include_usage":1}}`, CodeInvalidType, "stream_options.include_usage"},
		{0, `{"stream":true,"stream_options":[1,2]}`, CodeInvalidType, "stream_options"},
		{0, `{"stream":true,"stream_options":0}`, CodeInvalidType, "stream_options"},
		// n
		{0, `{"n":0}`, CodeInvalidValue, "n"},
		{0, `{"n":-1}`, CodeInvalidValue, "n"},
		{0, `{"n":129}`, CodeInvalidValue, "n"},
		{0, `{"n":99999999999999999999}`, CodeInvalidValue, "n"},
		{0, `{"n":1.0}`, CodeInvalidType, "n"},
		{0, `{"n":1e2}`, CodeInvalidType, "n"},
		{0, `{"n":"2"}`, CodeInvalidType, "n"},
		{0, `{"n":true}`, CodeInvalidType, "n"},
		// token limits
		{0, `{"max_tokens":-1}`, CodeInvalidValue, "max_tokens"},
		{0, `{"max_completion_tokens":1.5}`, CodeInvalidType, "max_completion_tokens"},
		{0, `{"max_output_tokens":"16"}`, CodeInvalidType, "max_output_tokens"},
		{0, `{"max_tokens":9007199254740993}`, CodeInvalidValue, "max_tokens"},
		// the other members the gateway reads
		{0, `{"temperature":"0.5"}`, CodeInvalidType, "temperature"},
		{0, `{"temperature":1e999}`, CodeInvalidValue, "temperature"},
		{0, `{"user":1}`, CodeInvalidType, "user"},
		{0, `{"tools":{}}`, CodeInvalidType, "tools"},
		{0, `{"functions":"f"}`, CodeInvalidType, "functions"},
		{0, `{"response_format":"json"}`, CodeInvalidType, "response_format"},
		{0, `{"response_format":{"type":1}}`, CodeInvalidType, "response_format.type"},
		// messages and their content
		{Chat, `{"messages":{}}`, CodeInvalidType, "messages"},
		{Chat, `{"messages":null}`, CodeInvalidType, "messages"},
		{Chat, `{"messages":[{},1]}`, CodeInvalidType, "messages[1]"},
		{Chat, `{"messages":[{"role":1}]}`, CodeInvalidType, "messages[0].role"},
		{Chat, `{"messages":[{"role":"user","content":[{"type":"text","text":"a"},"b"]}]}`, CodeInvalidType, "messages[0].content[1]"},
		// each API's input
		{Responses, `{"input":5}`, CodeInvalidType, "input"},
		{Responses, `{"input":[1]}`, CodeInvalidType, "input[0]"},
		{Completions, `{"prompt":{}}`, CodeInvalidType, "prompt"},
		{Completions, `{"prompt":["a",true]}`, CodeInvalidType, "prompt[1]"},
		{Embeddings, `{"input":[null]}`, CodeInvalidType, "input[0]"},
	}
	for _, tc := range cases {
		var r Request
		e := parseErr(t, tc.body, r.Parse([]byte(tc.body), tc.api))
		if e == nil || e.Code != tc.code || e.Param != tc.param || e.Message == "" || e.Error() != e.Message {
			t.Errorf("api %d %s: err %+v, want code %q param %q", tc.api, tc.body, e, tc.code, tc.param)
		}
	}
}

// TestParseRequestLimits: the values at the edges of the rules are
// accepted.
func TestParseRequestLimits(t *testing.T) {
	var r Request
	body := `{"n":128,"max_tokens":10,"max_completion_tokens":20,"max_output_tokens":0,"temperature":-0.5e1,"user":null,` +
		`"tools":null,"response_format":{"type":"json_schema","x":{"type":1}},"stream":null,"stream_options":null}`
	if err := r.Parse([]byte(body), 0); err != nil {
		t.Fatal(err)
	}
	if r.N != MaxChoices || r.MaxTokens != 20 || r.Temperature != -5 || r.HasTools || !r.JSONMode || r.Stream {
		t.Errorf("got %+v", r)
	}
	if err := r.Parse([]byte(`{"n":null,"max_tokens":9007199254740992}`), 0); err != nil || r.N != 0 || r.MaxTokens != 1<<53 || r.Temperature != -1 {
		t.Errorf("got %v: n %d max_tokens %d temperature %v", err, r.N, r.MaxTokens, r.Temperature)
	}
}

// TestParseRequestRejects: bodies that are JSON but not a usable request,
// and bodies that are not JSON.
func TestParseRequestRejects(t *testing.T) {
	cases := []string{
		"", " \n\t", `[]`, `[{"model":"a"}]`, `"model"`, `1`, `null`, `true`,
		`{"model":1}`, `{"model":["a"]}`, `{"model":{"name":"a"}}`, `{"model":true}`, `{"model":"a","model":2}`,
		// a member the router reads, twice (escapes decoded): JSON, but the
		// provider could read another value than the router did
		`{"stream":true,"stream":false}`, `{"model":"a","mod\u0065l":"b"}`, `{"stream_options":{},"stream_options":null}`,
		`{"stream":true,"stream_options":{"include_usage":true,"include_us\u0061ge":false}}`,
		`{"model":"\ud83d"x}`, `{"model":"a\u00"}`,
		`{} {}`, `{}x`, `{}]`, `{},`, "{}\x00", "\ufeff{}", "{}\v", "\f{}",
		// not UTF-8
		"{\"a\":\"\xff\"}", "{\"model\":\"\xc3\"}", "{\"\xe2\x82\":1}",
	}
	for _, in := range cases {
		for _, api := range []API{0, Chat, Completions, Responses, Embeddings} {
			var r Request
			err := r.Parse([]byte(in), api)
			if err == nil {
				t.Errorf("api %d, %q: accepted (model %q)", api, in, r.Model)
				continue
			}
			parseErr(t, in, err)
		}
	}
	var r Request
	e := parseErr(t, "", r.Parse([]byte(`{"a":1} x`), 0))
	if e == nil || e.Code != CodeInvalidJSON || e.Param != "" || !strings.Contains(e.Message, "byte 8") {
		t.Errorf("trailing garbage: %+v, want invalid_json at byte 8", e)
	}
	e = parseErr(t, "", r.Parse([]byte(`{"a":tru}`), 0))
	if e == nil || e.Code != CodeInvalidJSON || !strings.Contains(e.Message, "invalid JSON at byte 5") {
		t.Errorf("bad literal: %+v, want invalid_json with the scanner's offset", e)
	}
	for _, in := range []string{`[1]`, `"x"`, ` 1`} {
		e = parseErr(t, in, r.Parse([]byte(in), 0))
		if e == nil || e.Code != CodeInvalidJSON || !strings.Contains(e.Message, "must be a JSON object") {
			t.Errorf("%s: %+v, want invalid_json: not an object", in, e)
		}
	}
	e = parseErr(t, "", r.Parse([]byte(" "), 0))
	if e == nil || e.Code != CodeInvalidJSON || !strings.Contains(e.Message, "empty") {
		t.Errorf("empty: %+v", e)
	}
}

// TestScannerValidity compares the scanner with encoding/json on a table of
// valid and invalid bodies: Parse accepts exactly the valid JSON objects,
// but for those the stricter rules refuse.
func TestScannerValidity(t *testing.T) {
	inputs := []string{
		// top level
		``, ` `, `[]`, `[1]`, `"s"`, `0`, `null`, `true`, `{`, `}`, `{}`, ` {} `, "\r\n{}\r\n", `{}}`, `{}{}`, `{} 1`, `{}/`,
		"{}\x00", "\xef\xbb\xbf{}", "{}\v", "\u00a0{}",
		// members
		`{"":1}`, `{"a"}`, `{"a":}`, `{:1}`, `{1:1}`, `{null:1}`, `{"a":1 "b":2}`, `{"a":1,,"b":2}`, `{,"a":1}`,
		`{'a':1}`, `{"a":1;}`, `{"a":{"b":{}}}`, `{"a":{"b":}}`, `{"a":{"b":1,}}`, `{"a":{"b":1,"b":2}}`,
		// arrays
		`{"a":[]}`, `{"a":[ ]}`, `{"a":[[[]]]}`, `{"a":[1,[2,[3]]]}`, `{"a":[}`, `{"a":[1,]}`, `{"a":[1}`, `{"a":]}`, `{"a":[[]}`,
		// numbers
		`{"a":0}`, `{"a":-0}`, `{"a":0.0}`, `{"a":1e9}`, `{"a":1E+9}`, `{"a":-1.5e-9}`, `{"a":123456789012345678901234567890}`,
		`{"a":00}`, `{"a":+1}`, `{"a":1.e5}`, `{"a":-.5}`, `{"a":1e+}`, `{"a":0x1}`, `{"a":Infinity}`, `{"a":NaN}`, `{"a":1_000}`,
		`{"a":- 1}`, `{"a":1 .5}`, `{"a":--1}`,
		// strings
		`{"a":""}`, `{"a":"\u0000"}`, `{"a":"\uD83D\uDE00"}`, `{"a":"\uDEAD"}`, `{"a":"\uGGGG"}`, `{"a":"\u00e"}`, `{"a":"\U00e9"}`,
		`{"a":"\x41"}`, `{"a":"\'"}`, `{"a":"\0"}`, `{"a":"\`, `{"a":"\"}`, "{\"a\":\"\x01\"}", "{\"a\":\"\x1f\"}", "{\"a\":\"\x7f\"}",
		"{\"a\":\"line\nbreak\"}", `{"a":"é✓😀"}`, `{"a\"b":1}`, `{"a\u0000":1}`,
		// literals
		`{"a":true}`, `{"a":false}`, `{"a":null}`, `{"a":True}`, `{"a":truex}`, `{"a":nulll}`, `{"a":fals}`, `{"a":t}`, `{"a":n}`,
		`{"a":true,"b":false,"c":null}`, `{"a":undefined}`,
		// a realistic request
		`{"model":"gpt-4.1","stream":true,"stream_options":{"include_usage":false},"messages":[{"role":"user","content":[{"type":"text","text":"hi \"there\""}]}],"temperature":0.7,"max_tokens":256,"tools":[]}`,
	}
	// JSON objects that encoding/json reads, refused by the request rules
	refused := []string{
		`{"a":1,"a":2}`, `{"a":1,"A":2}`, // one member to a case-insensitive parser
		"{\"a\":\"\xff\xfe\"}", "{\"a\":\"\xc3\"}", "{\"\xc3\":1}", // not UTF-8
		`{"model":"gpt-4.1","n":1.5,"messages":[]}`,                                       // a member the gateway acts on, of the wrong type
		`{"a":` + strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1) + `}`, // deeper than MaxDepth
	}
	for _, in := range inputs {
		valid := json.Valid([]byte(in)) && strings.HasPrefix(strings.TrimLeft(in, " \t\r\n"), "{")
		var r Request
		err := r.Parse([]byte(in), 0)
		if (err == nil) != valid {
			t.Errorf("%q: scanner err %v, but encoding/json valid object = %v", in, err, valid)
		}
	}
	for _, in := range refused {
		if !json.Valid([]byte(in)) {
			t.Errorf("%q: not JSON to encoding/json", in)
		}
		var r Request
		if err := r.Parse([]byte(in), 0); err == nil {
			t.Errorf("%q: accepted", in)
		}
	}
}

// TestScannerDepthLimit: the scanner refuses a body nested deeper than
// MaxDepth (the top-level object is depth 0), and a very deep body is
// refused without exhausting the stack.
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
		ok   bool
	}{
		{"objects 100", objects(100), true},
		{"objects MaxDepth+1", objects(MaxDepth + 1), true},
		{"objects MaxDepth+2", objects(MaxDepth + 2), false},
		{"objects 10000", objects(10000), false},
		{"arrays MaxDepth+1", arrays(MaxDepth + 1), true},
		{"arrays MaxDepth+2", arrays(MaxDepth + 2), false},
		{"arrays 10001", arrays(10001), false},
		{"objects 1000000", objects(1000000), false},
		{"arrays 1000000 unclosed", `{"a":` + strings.Repeat("[", 1000000), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r Request
			err := r.Parse([]byte(tc.in), 0)
			if (err == nil) != tc.ok {
				t.Errorf("err %v, want accepted = %v", err, tc.ok)
			}
			if err != nil {
				parseErr(t, tc.name, err)
			}
		})
	}
}

// TestDepthLimitEveryPath: the members each API reads itself (messages,
// content parts, prompts, input items, tools, stream_options,
// response_format) are held to MaxDepth as the rest of the body is.
func TestDepthLimitEveryPath(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	cases := []struct {
		api    API
		prefix string // the body up to the nested arrays
		suffix string
		levels int // the depth the first '[' is at
	}{
		{0, `{"a":`, `}`, 1},
		{Chat, `{"messages":[{"role":"user","content":[{"type":"text","text":"x","extra":`, `}]}]}`, 5},
		{Chat, `{"messages":[{"role":"user","content":[{"type":"text","text":`, `}]}]}`, 5},
		{Chat, `{"messages":[{"x":`, `}]}`, 3},
		{Chat, `{"messages":[{"tool_calls":[{"function":`, `}]}]}`, 5},
		{Responses, `{"input":[{"type":"function_call_output","output":{"a":`, `}}]}`, 4},
		{Completions, `{"prompt":[`, `]}`, 2},
		{Embeddings, `{"input":[[1,`, `]]}`, 3},
		{Responses, `{"input":[{"role":"user","content":[{"type":"input_text","x":`, `}]}]}`, 5},
		{0, `{"tools":[{"type":"function","function":{"parameters":`, `}}]}`, 4},
		{0, `{"stream":true,"stream_options":{"x":`, `}}`, 2},
		{0, `{"response_format":{"type":"json_schema","json_schema":`, `}}`, 2},
	}
	for _, tc := range cases {
		// the deepest array at MaxDepth: accepted; one more: refused
		okLevels := MaxDepth - tc.levels + 1
		for _, n := range []int{okLevels, okLevels + 1, 100000} {
			body := tc.prefix + deep(n) + tc.suffix
			if n < 9000 && !json.Valid([]byte(body)) {
				t.Fatalf("%s…: not JSON", tc.prefix)
			}
			var r Request
			err := r.Parse([]byte(body), tc.api)
			if want := n == okLevels; (err == nil) != want {
				t.Errorf("api %d, %s + %d levels: err %v, want accepted = %v", tc.api, tc.prefix, n, err, want)
			}
		}
	}
}

// TestNamedIdsReadOnce: the ids a content part's file or a tool's
// container names are looked for one level down, not at every level of a
// file nested in a file: each level read again cost the body's bytes
// times its depth (an 8 MB body nested 120 levels was 2.4 s of CPU, a
// flat one 30 ms). The time is the wire benchmark's (the nested_files
// shape of BenchmarkAdversarialBodies); this test holds the reading that
// keeps it linear: an id two levels down is not looked for.
func TestNamedIdsReadOnce(t *testing.T) {
	part := func(v string) string {
		return `{"messages":[{"role":"user","content":[{"type":"file","file":` + v + `}]}]}`
	}
	// the ids one level down are still found; none deeper
	var r Request
	if err := r.Parse([]byte(part(`{"file_id":"file-1","file":{"file_id":"file-2"}}`)), Chat); err != nil {
		t.Fatal(err)
	}
	if want := []NamedID{{ID: "file-1", Kind: "file", Param: "messages"}}; !reflect.DeepEqual(r.Named, want) {
		t.Errorf("Named = %v, want %v", r.Named, want)
	}
}

// TestUpstreamBodyDecodes: the edited body is JSON that decodes to the
// client's body with only model and, for streams, include_usage changed.
func TestUpstreamBodyDecodes(t *testing.T) {
	cases := []struct {
		name     string
		api      API
		in       string
		upstream string
		want     string // the decoded upstream body
		code     string // the refusal, when want is ""
	}{
		{"model replaced", Chat, `{"model":"a","messages":[{"role":"user","content":"hi"}],"temperature":0.2}`, "b",
			`{"model":"b","messages":[{"role":"user","content":"hi"}],"temperature":0.2}`, ""},
		{"model with escapes replaced", Chat, `{"model":"a\"\u00e9","messages":[]}`, "b",
			`{"model":"b","messages":[]}`, ""},
		{"upstream name needing escapes", Chat, `{"model":"a","messages":[]}`, `org/mod"el\é✓`,
			`{"model":"org/mod\"el\\é✓","messages":[]}`, ""},
		{"model inserted", Chat, ` { "messages" : [ ] } `, "b", `{"model":"b","messages":[]}`, ""},
		{"model inserted in an empty object", 0, "{\n}", "b", `{"model":"b"}`, ""},
		{"model last", Chat, `{"messages":[],"model":"a"}`, "b", `{"messages":[],"model":"b"}`, ""},
		{"nested model untouched", 0, `{"model":"a","tools":[{"model":"keep"}],"metadata":{"model":"keep"}}`, "b",
			`{"model":"b","tools":[{"model":"keep"}],"metadata":{"model":"keep"}}`, ""},
		{"embeddings", Embeddings, `{"model":"a","input":["x","y"]}`, "b", `{"model":"b","input":["x","y"]}`, ""},
		{"stream: include_usage inserted", Chat, `{"model":"a","stream":true,"messages":[]}`, "b",
			`{"model":"b","stream":true,"stream_options":{"include_usage":true},"messages":[]}`, ""},
		{"stream, no model: both inserted", Completions, `{"stream":true,"prompt":"p"}`, "b",
			`{"model":"b","stream":true,"stream_options":{"include_usage":true},"prompt":"p"}`, ""},
		{"stream_options empty with spaces", Chat, `{"stream":true,"stream_options":{ },"model":"a","messages":[]}`, "b",
			`{"stream":true,"stream_options":{"include_usage":true},"model":"b","messages":[]}`, ""},
		{"stream_options with other members", Chat, `{"stream":true,"stream_options":{ "x" : [1] },"model":"a","messages":[]}`, "b",
			`{"stream":true,"stream_options":{"include_usage":true,"x":[1]},"model":"b","messages":[]}`, ""},
		{"stream_options before model", Chat, `{"stream_options":{"x":1},"model":"a","stream":true,"messages":[]}`, "b",
			`{"stream_options":{"include_usage":true,"x":1},"model":"b","stream":true,"messages":[]}`, ""},
		{"include_usage false replaced", Chat, `{"model":"a","stream":true,"stream_options":{"x":1,"include_usage":false},"messages":[]}`, "b",
			`{"model":"b","stream":true,"stream_options":{"x":1,"include_usage":true},"messages":[]}`, ""},
		{"include_usage null replaced", Chat, `{"model":"a","stream":true,"stream_options":{"include_usage":null},"messages":[]}`, "b",
			`{"model":"b","stream":true,"stream_options":{"include_usage":true},"messages":[]}`, ""},
		// include_usage and stream_options of another type are refused now
		{"include_usage string", Chat, `{"model":"a","stream":true,"stream_options":{"include_usage":"yes"},"messages":[]}`, "b", "", CodeInvalidType},
		{"include_usage object", Chat, `{"model":"a","stream":true,"stream_options":{"include_usage":{"a":[]}},"messages":[]}`, "b", "", CodeInvalidType},
		{"stream_options null replaced", Chat, `{"stream":true,"stream_options":null,"model":"a","messages":[]}`, "b",
			`{"stream":true,"stream_options":{"include_usage":true},"model":"b","messages":[]}`, ""},
		{"stream_options array", Chat, `{"model":"a","stream":true,"stream_options":[1,2],"messages":[]}`, "b", "", CodeInvalidType},
		{"stream_options number", Chat, `{"model":"a","stream":true,"stream_options":0,"messages":[]}`, "b", "", CodeInvalidType},
		{"include_usage true kept", Chat, `{"model":"a","stream":true,"stream_options":{"include_usage":true},"messages":[]}`, "b",
			`{"model":"b","stream":true,"stream_options":{"include_usage":true},"messages":[]}`, ""},
		{"no stream: stream_options untouched", Chat, `{"model":"a","stream":false,"stream_options":{"include_usage":false},"messages":[]}`, "b",
			`{"model":"b","stream":false,"stream_options":{"include_usage":false},"messages":[]}`, ""},
		{"model null", Chat, `{"model":null,"messages":[]}`, "b", `{"model":"b","messages":[]}`, ""},
		{"model null after a string", Chat, `{"model":"a","model":null,"messages":[]}`, "b", "", CodeDuplicate},
		{"include_usage true then false", Chat, `{"model":"a","stream":true,"stream_options":{"include_usage":true,"include_usage":false},"messages":[]}`, "b",
			"", CodeDuplicate},
		{"escaped model key", Chat, `{"model":"a","mod\u0065l":"other","messages":[]}`, "b", "", CodeDuplicate},
		{"model key in another case", Chat, `{"model":"a","Model":"other","messages":[]}`, "b", "", CodeDuplicate},
		{"escaped model key only", Chat, `{"mod\u0065l":"other","messages":[]}`, "b", `{"model":"b","messages":[]}`, ""},
		{"escaped include_usage key", Chat, `{"model":"a","stream":true,"stream_options":{"include_us\u0061ge":false},"messages":[]}`, "b",
			`{"model":"b","stream":true,"stream_options":{"include_usage":true},"messages":[]}`, ""},
		{"upstream name with a control character", 0, `{"model":"a"}`, "b\x01", `{"model":"b\u0001"}`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r Request
			err := r.Parse([]byte(tc.in), tc.api)
			if tc.want == "" {
				e := parseErr(t, tc.in, err)
				if e == nil || e.Code != tc.code {
					t.Fatalf("err = %+v, want code %q", e, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			parts := r.Upstream(tc.upstream, AskUsage, OutputCap{})
			out := parts.Join()
			if streamed, _ := io.ReadAll(parts.Reader()); !bytes.Equal(streamed, out) || len(out) != parts.Size {
				t.Errorf("reader gives %q, join %q, size %d", streamed, out, parts.Size)
			}
			if !bytes.Equal(r.UpstreamBody(tc.upstream, AskUsage, OutputCap{}), out) {
				t.Errorf("UpstreamBody differs from Upstream")
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
			if strings.Count(string(out), `"model"`) != strings.Count(tc.in, `"model"`)+btoi(!r.model.ok()) {
				t.Errorf("edited body %s: more than the top-level model changed", out)
			}
		})
	}
}

// TestUpstreamAllocatesNothing: the edits of a usual request (model and
// usage) are pieces of the client's body and strings that exist already;
// only Join copies.
func TestUpstreamAllocatesNothing(t *testing.T) {
	var r Request
	if err := r.Parse([]byte(`{"model":"simple_qa","stream":true,"messages":[{"role":"user","content":"hi"}],"max_tokens":64}`), Chat); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { r.Upstream("deepseek-chat", AskUsage, OutputCap{}) }); n != 0 {
		t.Errorf("Upstream allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { r.UpstreamBody("deepseek-chat", AskUsage, OutputCap{}) }); n != 1 {
		t.Errorf("UpstreamBody allocates %v times, want 1 (the joined body)", n)
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
	in := "{\n  \"model\" : \"a\",\n  \"messages\": [ {\"content\": \"\\u00e9 \\/ \\\"q\\\"\"} ],\n  \"n\": 2, \"top_p\": 1.50e-1\n}\n"
	var r Request
	if err := r.Parse([]byte(in), Chat); err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(in, `"a"`, `"up"`, 1)
	if got := string(r.UpstreamBody("up", AskUsage, OutputCap{})); got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

// TestParseRequestReuse: a Request parsed again holds nothing of the body
// it read before.
func TestParseRequestReuse(t *testing.T) {
	var r Request
	if err := r.Parse([]byte(`{"model":"a","stream":true,"stream_options":{"include_usage":true},"n":3,"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}]}`), Chat); err != nil {
		t.Fatal(err)
	}
	if err := r.Parse([]byte(`{"messages":[]}`), Chat); err != nil {
		t.Fatal(err)
	}
	if r.Model != "" || r.Stream || r.IncludeUsage || r.N != 0 || r.Messages != 0 || r.System() != "" || r.LastUser() != "" || r.model.ok() {
		t.Errorf("left over: %+v", r)
	}
	if got := string(r.UpstreamBody("m", AskUsage, OutputCap{})); got != `{"model":"m","messages":[]}` {
		t.Errorf("upstream %s", got)
	}
}

// TestParseRequestManyMembers: a body with more top-level members than the
// fold buffer holds still refuses a late duplicate, and accepts distinct
// names.
func TestParseRequestManyMembers(t *testing.T) {
	name := func(i int) string {
		return "m" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + "_" + strconv.Itoa(i)
	}
	var b strings.Builder
	b.WriteString(`{"messages":[]`)
	for i := range 2000 {
		b.WriteString(`,"` + name(i) + `":1`)
	}
	ok := b.String() + `}`
	var r Request
	if err := r.Parse([]byte(ok), Chat); err != nil {
		t.Fatalf("distinct members refused: %v", err)
	}
	for _, dup := range []string{`,"MESSAGES":1}`, `,"` + strings.ToUpper(name(0)) + `":1}`, `,"` + name(1999) + `":2}`,
		`,"` + strings.ToUpper(name(1000)) + `":2}`, `,"Model":"x"}`} {
		var r Request
		e := parseErr(t, dup, r.Parse([]byte(b.String()+dup), Chat))
		if e == nil || (e.Code != CodeDuplicate && e.Code != CodeCaseVariant) {
			t.Errorf("%s after 2000 members: %+v, want refused", dup, e)
		}
	}
}

// TestUpstreamOutputCap: where an output cap goes, per API and provider
// field, and what it never does (raise completions' default of 16, or add
// a member beside a limit the provider reads).
func TestUpstreamOutputCap(t *testing.T) {
	for _, tc := range []struct {
		api        API
		field      string
		body, want string
	}{
		{Chat, "", `{"messages":[]}`, `{"max_completion_tokens":40,"model":"m","messages":[]}`},
		{Chat, "max_tokens", `{"messages":[]}`, `{"max_tokens":40,"model":"m","messages":[]}`},
		{Chat, "", `{"messages":[],"max_tokens":7}`, `{"model":"m","messages":[],"max_tokens":7}`},
		{Chat, "max_tokens", `{"messages":[],"max_completion_tokens":5}`, `{"max_tokens":5,"model":"m","messages":[],"max_completion_tokens":5}`},
		{Chat, "max_tokens", `{"messages":[],"max_tokens":0,"max_completion_tokens":5}`, `{"model":"m","messages":[],"max_tokens":5,"max_completion_tokens":5}`},
		{Chat, "", `{"messages":[],"max_tokens":0}`, `{"max_completion_tokens":40,"model":"m","messages":[],"max_tokens":null}`},
		{Chat, "", `{"messages":[],"max_completion_tokens":null}`, `{"model":"m","messages":[],"max_completion_tokens":40}`},
		{Completions, "", `{"prompt":"Say hi"}`, `{"max_tokens":16,"model":"m","prompt":"Say hi"}`},
		{Completions, "", `{"prompt":"Say hi","max_tokens":100}`, `{"model":"m","prompt":"Say hi","max_tokens":100}`},
		{Responses, "", `{"input":"hi"}`, `{"max_output_tokens":40,"model":"m","input":"hi"}`},
		{Embeddings, "", `{"input":"hi"}`, `{"model":"m","input":"hi"}`},
	} {
		var r Request
		if err := r.Parse([]byte(tc.body), tc.api); err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		if got := string(r.UpstreamBody("m", AskUsage, OutputCap{Tokens: 40, ChatField: tc.field})); got != tc.want {
			t.Errorf("api %d, field %q, %s:\n got %s\nwant %s", tc.api, tc.field, tc.body, got, tc.want)
		}
	}
}

// TestForeignOutputLimitRefused: an output limit member of another API is
// refused, as OpenAI refuses an argument it does not know: llama.cpp reads
// max_completion_tokens before max_tokens on every endpoint (the Responses
// API's converted to chat), so a completions request's max_tokens, or a
// Responses request's max_output_tokens, would not be the limit it
// generates to. null stands for absent, and a request without an API (0)
// or for embeddings (nothing generated) keeps any of them.
func TestForeignOutputLimitRefused(t *testing.T) {
	for _, tc := range []struct {
		api   API
		body  string
		param string // "" for accepted
	}{
		{Completions, `{"prompt":"x","max_tokens":16,"max_completion_tokens":100000}`, "max_completion_tokens"},
		{Completions, `{"prompt":"x","max_output_tokens":100000}`, "max_output_tokens"},
		{Responses, `{"input":"x","max_output_tokens":16,"max_completion_tokens":100000}`, "max_completion_tokens"},
		{Responses, `{"input":"x","max_tokens":100000}`, "max_tokens"},
		{Chat, `{"messages":[],"max_tokens":16,"max_output_tokens":100000}`, "max_output_tokens"},
		{Chat, `{"messages":[],"max_tokens":16,"max_completion_tokens":32}`, ""},
		{Completions, `{"prompt":"x","max_tokens":16,"max_completion_tokens":null}`, ""},
		{Responses, `{"input":"x","max_tokens":null,"max_output_tokens":16}`, ""},
		{Embeddings, `{"input":"x","max_tokens":16}`, ""},
	} {
		var r Request
		e := parseErr(t, tc.body, r.Parse([]byte(tc.body), tc.api))
		switch {
		case tc.param == "" && e != nil:
			t.Errorf("api %d %s: refused: %v", tc.api, tc.body, e)
		case tc.param != "" && (e == nil || e.Code != CodeUnsupported || e.Param != tc.param):
			t.Errorf("api %d %s: got %+v (max tokens %d), want %s refused", tc.api, tc.body, e, r.MaxTokens, tc.param)
		}
	}
}

// TestLiveSearchUnpriced: xAI's search_parameters turns on Live Search,
// billed by the source apart from tokens, unless its mode is "off".
func TestLiveSearchUnpriced(t *testing.T) {
	for body, want := range map[string]bool{
		`{"messages":[],"search_parameters":{"mode":"on","max_search_results":50}}`: true,
		`{"messages":[],"search_parameters":{}}`:                                    true, // "auto" by default
		`{"messages":[],"search_parameters":{"mode":"auto"}}`:                       true,
		`{"messages":[],"search_parameters":{"mode":"off"}}`:                        false,
		`{"messages":[],"search_parameters":null}`:                                  false,
	} {
		var r Request
		if err := r.Parse([]byte(body), Chat); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if got := slices.Contains(r.Unpriced, "live_search"); got != want {
			t.Errorf("%s: live_search unpriced %v, want %v (%v)", body, got, want, r.Unpriced)
		}
	}
	var r Request
	if err := r.Parse([]byte(`{"messages":[],"search_parameters":{"mode":"off","Mode":"on"}}`), Chat); err == nil {
		t.Error("a mode in another case accepted")
	}
}
