package llmrouter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// requestBody is what the router needs to know about a client's JSON body,
// found in one validating pass without decoding the body into Go values.
// Spans index into raw; a span with start < 0 is absent.
type requestBody struct {
	raw []byte

	model        span // the top-level "model" value, quotes included
	modelName    string
	stream       bool
	streamOpts   span // the top-level "stream_options" value
	includeUsage bool // stream_options.include_usage is true
	// where "include_usage":true goes when the client did not ask for it:
	// usageEdit replaces usageSpan with usageText.
	usageSpan   span
	usageText   string
	hasMessages bool
	hasInput    bool
	hasPrompt   bool
	choices     int64 // "n": answers asked for; 0 when absent

	// where the members routing rules look at are (rules.go reads them
	// only when a rule is evaluated)
	fields [fieldCount]span
}

// The members of a request body routing rules look at.
const (
	fieldMessages     = iota // chat
	fieldInput               // responses, embeddings
	fieldPrompt              // completions
	fieldInstructions        // responses
	fieldTools
	fieldFunctions
	fieldResponseFormat
	fieldMaxTokens // max_tokens, max_completion_tokens or max_output_tokens
	fieldTemperature
	fieldCount
)

type span struct{ start, end int }

var absent = span{-1, -1}

// maxJSONDepth bounds nesting, as encoding/json does, so a hostile body
// cannot exhaust the stack.
const maxJSONDepth = 10000

var errNotObject = errors.New("request body must be a JSON object")

// paramError is a body that is JSON but has a member of the wrong type; param
// names the member, as OpenAI's error envelope does.
type paramError struct{ param, msg string }

func (e *paramError) Error() string { return e.msg }

// parseRequestBody validates raw as JSON and indexes its top-level members.
func parseRequestBody(raw []byte) (requestBody, error) {
	rb := requestBody{raw: raw, model: absent, streamOpts: absent, usageSpan: absent}
	for i := range rb.fields {
		rb.fields[i] = absent
	}
	s := jsonScanner{b: raw}
	s.ws()
	if s.i >= len(raw) || raw[s.i] != '{' {
		if s.i >= len(raw) {
			return rb, errors.New("request body is empty")
		}
		return rb, errNotObject
	}
	var seen uint8 // the members read below, to refuse a second one
	err := s.object(0, func(key []byte, val span) error {
		name := keyName(key)
		bit := uint8(0)
		switch string(name) {
		case "model":
			bit = 1
		case "stream":
			bit = 2
		case "stream_options":
			bit = 4
		}
		if seen&bit != 0 {
			// two members that decode to the same name: JSON parsers keep
			// the last one, so the router could route on one value while
			// the provider reads another
			return &paramError{string(name), fmt.Sprintf("%q appears twice", name)}
		}
		seen |= bit
		switch string(name) {
		case "model":
			rb.model = val // a null too: the edit replaces it
			if raw[val.start] == '"' {
				name, err := unquote(raw[val.start:val.end])
				if err != nil {
					return err
				}
				rb.modelName = name
			} else if raw[val.start] != 'n' { // null is the same as absent
				return &paramError{"model", `"model" must be a string`}
			}
		case "stream":
			rb.stream = raw[val.start] == 't'
		case "stream_options":
			rb.streamOpts = val
		case "messages":
			rb.hasMessages = raw[val.start] == '['
			rb.fields[fieldMessages] = val
		case "input":
			rb.hasInput = raw[val.start] != 'n'
			rb.fields[fieldInput] = val
		case "prompt":
			rb.hasPrompt = raw[val.start] != 'n'
			rb.fields[fieldPrompt] = val
		case "n":
			rb.choices = atoi(raw[val.start:val.end])
		case "instructions":
			rb.fields[fieldInstructions] = val
		case "tools":
			rb.fields[fieldTools] = val
		case "functions":
			rb.fields[fieldFunctions] = val
		case "response_format":
			rb.fields[fieldResponseFormat] = val
		case "max_tokens", "max_completion_tokens", "max_output_tokens":
			rb.fields[fieldMaxTokens] = val
		case "temperature":
			rb.fields[fieldTemperature] = val
		}
		return nil
	})
	if err != nil {
		return rb, err
	}
	s.ws()
	if s.i != len(raw) {
		return rb, s.errorf("unexpected data after the top-level object")
	}
	if rb.stream {
		if err := rb.planIncludeUsage(); err != nil {
			return rb, err
		}
	}
	return rb, nil
}

// keyName is a member name as JSON decoders see it: decoded when it has
// escapes (rare, and then allocated), else the raw bytes themselves.
func keyName(key []byte) []byte {
	if bytes.IndexByte(key, '\\') < 0 {
		return key
	}
	var s string
	if json.Unmarshal(append(append([]byte{'"'}, key...), '"'), &s) != nil {
		return key
	}
	return []byte(s)
}

// planIncludeUsage works out the smallest edit that makes the upstream send
// a usage chunk, and records whether the client asked for it itself.
func (rb *requestBody) planIncludeUsage() error {
	raw := rb.raw
	if rb.streamOpts.start < 0 {
		// insert a member right after the top-level '{'; the object is not
		// empty (it has "stream"), so a trailing comma is always right.
		open := indexNonSpace(raw, 0)
		rb.usageSpan = span{open + 1, open + 1}
		rb.usageText = `"stream_options":{"include_usage":true},`
		return nil
	}
	if raw[rb.streamOpts.start] != '{' { // null or another type: replace it
		rb.usageSpan = rb.streamOpts
		rb.usageText = `{"include_usage":true}`
		return nil
	}
	found := false
	s := jsonScanner{b: raw, i: rb.streamOpts.start}
	err := s.object(1, func(key []byte, val span) error {
		if string(keyName(key)) == "include_usage" {
			if found {
				return &paramError{"stream_options", `"include_usage" appears twice`}
			}
			found = true
			if raw[val.start] == 't' {
				rb.includeUsage = true
			} else {
				rb.usageSpan = val
				rb.usageText = "true"
			}
		}
		return nil
	})
	if err != nil || rb.includeUsage || found {
		return err
	}
	at := rb.streamOpts.start + 1
	rb.usageSpan = span{at, at}
	if raw[indexNonSpace(raw, at)] == '}' {
		rb.usageText = `"include_usage":true`
	} else {
		rb.usageText = `"include_usage":true,`
	}
	return nil
}

// stripUsage reports whether the router asks for usage on the client's
// behalf, so the usage-only chunk must not reach the client.
func (rb *requestBody) stripUsage() bool {
	return rb.usageSpan.start >= 0
}

// keepStreamOptions drops the planned include_usage edit, for APIs whose
// streams report usage without being asked (the Responses API).
func (rb *requestBody) keepStreamOptions() {
	rb.usageSpan = absent
}

// bodyParts is an attempt's body as up to five pieces: the unedited runs
// share the client body's memory, the edits are new.
type bodyParts struct {
	parts [5][]byte
	n     int // pieces in use
	size  int // total length
}

func (b *bodyParts) add(p []byte) {
	b.parts[b.n] = p
	b.n++
	b.size += len(p)
}

// join copies the pieces into one slice.
func (b *bodyParts) join() []byte {
	out := make([]byte, 0, b.size)
	for _, p := range b.parts[:b.n] {
		out = append(out, p...)
	}
	return out
}

// reader reads the pieces in order without joining them.
func (b *bodyParts) reader() io.Reader {
	readers := make([]io.Reader, b.n)
	for i, p := range b.parts[:b.n] {
		readers[i] = bytes.NewReader(p)
	}
	return io.MultiReader(readers...)
}

// upstreamParts is the body for one attempt: raw with model set to
// upstreamModel and, for streams, include_usage turned on; nothing else
// of the body is touched.
func (rb *requestBody) upstreamParts(upstreamModel string) bodyParts {
	type edit struct {
		at   span
		text string
	}
	var edits [2]edit
	n := 0
	quoted := jsonQuote(upstreamModel)
	if rb.model.start >= 0 {
		edits[n] = edit{rb.model, quoted}
	} else {
		open := indexNonSpace(rb.raw, 0)
		text := `"model":` + quoted
		if rb.raw[indexNonSpace(rb.raw, open+1)] != '}' {
			text += ","
		}
		edits[n] = edit{span{open + 1, open + 1}, text}
	}
	n++
	if rb.stripUsage() {
		edits[n] = edit{rb.usageSpan, rb.usageText}
		if edits[1].at.start < edits[0].at.start {
			edits[0], edits[1] = edits[1], edits[0]
		}
		n++
	}
	var b bodyParts
	pos := 0
	for _, e := range edits[:n] {
		b.add(rb.raw[pos:e.at.start])
		b.add([]byte(e.text))
		pos = e.at.end
	}
	b.add(rb.raw[pos:])
	return b
}

// upstreamBody is upstreamParts joined.
func (rb *requestBody) upstreamBody(upstreamModel string) []byte {
	b := rb.upstreamParts(upstreamModel)
	return b.join()
}

// jsonQuote is a JSON string literal of s: the name between quotes when
// nothing in it needs escaping (the common case), else encoding/json's.
func jsonQuote(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c == 0x7f {
			b, _ := json.Marshal(s)
			return string(b)
		}
	}
	return `"` + s + `"`
}

func indexNonSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	if i >= len(b) {
		return len(b) - 1
	}
	return i
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// unquote decodes a JSON string literal; the common case without escapes
// costs one string conversion.
func unquote(lit []byte) (string, error) {
	inner := lit[1 : len(lit)-1]
	for _, c := range inner {
		if c == '\\' {
			var s string
			err := json.Unmarshal(lit, &s)
			return s, err
		}
	}
	return string(inner), nil
}

// jsonScanner is a validating JSON skipper: it checks syntax as strictly as
// encoding/json.Valid while only recording where top-level members are.
type jsonScanner struct {
	b []byte
	i int
}

// SyntaxError says where a body stopped being JSON.
type SyntaxError struct {
	Offset int
	Msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at byte %d: %s", e.Offset, e.Msg)
}

func (s *jsonScanner) errorf(format string, args ...any) error {
	return &SyntaxError{Offset: s.i, Msg: fmt.Sprintf(format, args...)}
}

func (s *jsonScanner) ws() {
	for s.i < len(s.b) && isSpace(s.b[s.i]) {
		s.i++
	}
}

// object scans the object at s.i, calling member (if not nil) for each
// key, with the key's raw bytes (escapes undecoded) and the value's span.
func (s *jsonScanner) object(depth int, member func(key []byte, val span) error) error {
	if depth >= maxJSONDepth {
		return s.errorf("nesting too deep")
	}
	s.i++ // '{'
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return nil
	}
	for {
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return s.errorf("expected a string key")
		}
		kstart := s.i
		if err := s.str(); err != nil {
			return err
		}
		key := s.b[kstart+1 : s.i-1]
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return s.errorf("expected ':' after object key")
		}
		s.i++
		s.ws()
		vstart := s.i
		if err := s.value(depth + 1); err != nil {
			return err
		}
		if member != nil {
			if err := member(key, span{vstart, s.i}); err != nil {
				return err
			}
		}
		s.ws()
		if s.i >= len(s.b) {
			return s.errorf("unexpected end of input in object")
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return s.errorf("expected ',' or '}' in object")
		}
	}
}

func (s *jsonScanner) value(depth int) error {
	if s.i >= len(s.b) {
		return s.errorf("unexpected end of input")
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object(depth, nil)
	case c == '[':
		return s.array(depth)
	case c == '"':
		return s.str()
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	default:
		return s.errorf("unexpected character %q", c)
	}
}

func (s *jsonScanner) array(depth int) error {
	if depth >= maxJSONDepth {
		return s.errorf("nesting too deep")
	}
	s.i++ // '['
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return nil
	}
	for {
		s.ws()
		if err := s.value(depth + 1); err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return s.errorf("unexpected end of input in array")
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return s.errorf("expected ',' or ']' in array")
		}
	}
}

func (s *jsonScanner) str() error {
	s.i++ // opening quote
	for s.i < len(s.b) {
		for s.i < len(s.b) && plainStringByte[s.b[s.i]] {
			s.i++ // the common case, one table lookup a byte
		}
		if s.i >= len(s.b) {
			break
		}
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return nil
		case c == '\\':
			if s.i+1 >= len(s.b) {
				return s.errorf("unexpected end of input in string escape")
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.b) {
					return s.errorf("short \\u escape")
				}
				for _, h := range s.b[s.i+2 : s.i+6] {
					if !isHex(h) {
						return s.errorf("invalid \\u escape")
					}
				}
				s.i += 6
			default:
				return s.errorf("invalid escape character")
			}
		case c < 0x20:
			return s.errorf("control character in string")
		default:
			s.i++
		}
	}
	return s.errorf("unterminated string")
}

// plainStringByte is true for the bytes a JSON string holds as they are:
// not the quote, the backslash or a control character.
var plainStringByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func (s *jsonScanner) number() error {
	b := s.b
	if b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(b) && b[s.i] == '0':
		s.i++
	case s.i < len(b) && isDigit(b[s.i]):
		for s.i < len(b) && isDigit(b[s.i]) {
			s.i++
		}
	default:
		return s.errorf("invalid number")
	}
	if s.i < len(b) && b[s.i] == '.' {
		s.i++
		if s.i >= len(b) || !isDigit(b[s.i]) {
			return s.errorf("invalid number fraction")
		}
		for s.i < len(b) && isDigit(b[s.i]) {
			s.i++
		}
	}
	if s.i < len(b) && (b[s.i] == 'e' || b[s.i] == 'E') {
		s.i++
		if s.i < len(b) && (b[s.i] == '+' || b[s.i] == '-') {
			s.i++
		}
		if s.i >= len(b) || !isDigit(b[s.i]) {
			return s.errorf("invalid number exponent")
		}
		for s.i < len(b) && isDigit(b[s.i]) {
			s.i++
		}
	}
	return nil
}

func (s *jsonScanner) literal(lit string) error {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return s.errorf("invalid literal")
	}
	s.i += len(lit)
	return nil
}
