// Package openai is the gateway's one reading of the OpenAI wire format: the
// request scan (every member the router acts on, read as strictly as the
// strictest provider), the targeted edit of a request's model, the content
// that routing rules and estimates read, the canonical form cache keys hash,
// usage in JSON answers and SSE events, and the conversions between a chat
// answer and its stream. It knows bytes, not Caddy: the root package holds
// the glue.
//
// Every function here runs in time and memory linear in its input.
package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"unicode"
	"unicode/utf8"
	"unsafe"
)

// MaxDepth is the deepest nesting of arrays and objects a request body may
// have; deeper bodies are refused. Real requests stay far below it (a tool's
// JSON schema is the deepest part, rarely past 10 levels); the bound keeps
// the recursive scan's stack small whatever a client sends.
const MaxDepth = 128

// span is a range of a body's bytes; start < 0 means absent.
type span struct{ start, end int }

var absent = span{-1, -1}

func (s span) ok() bool { return s.start >= 0 }

// SyntaxError says where a body stopped being JSON.
type SyntaxError struct {
	Offset int
	Msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at byte %d: %s", e.Offset, e.Msg)
}

// scanner is a validating JSON reader: it checks syntax as strictly as
// encoding/json.Valid, and also refuses invalid UTF-8 (as Python's json
// does) and nesting deeper than MaxDepth, without decoding anything.
type scanner struct {
	b []byte
	i int
	// lax reads a provider's answer rather than a client's request: any
	// bytes in strings, nesting as deep as encoding/json allows. The
	// gateway only looks for usage and errors in an answer; refusing one
	// for a stray byte would fail over an answer the provider billed.
	lax bool
	// chars is the character count of the last string str scanned, and
	// wide how many more bytes than characters its UTF-8 takes (decoded):
	// 2 for a Chinese character, 0 for English
	chars, wide int64
}

// maxAnswerDepth bounds the nesting of an answer, as encoding/json does.
const maxAnswerDepth = 10000

func (s *scanner) tooDeep(depth int) bool {
	if s.lax {
		return depth > maxAnswerDepth
	}
	return depth > MaxDepth
}

func (s *scanner) errorf(format string, args ...any) error {
	return &SyntaxError{Offset: s.i, Msg: fmt.Sprintf(format, args...)}
}

func (s *scanner) ws() {
	b, i := s.b, s.i
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	s.i = i
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// member is called for each member of an object with the key's raw bytes
// (escapes undecoded) and its opening quote's offset; s.i is at the value,
// which the callback must scan (s.value for anything it does not read).
type memberFunc func(s *scanner, key []byte, keyStart, depth int) error

// An object or array is read in steps (open, each member's key, the
// separator after each value), so that a loop can read one without
// handing the scanner to a callback: a scanner passed through a function
// value escapes to the heap.

// open starts the object or array at s.i; empty reports "{}" or "[]".
func (s *scanner) open(depth int, closer byte) (empty bool, err error) {
	if s.tooDeep(depth) {
		return false, s.errorf("nesting deeper than %d levels", MaxDepth)
	}
	s.i++ // '{' or '['
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == closer {
		s.i++
		return true, nil
	}
	return false, nil
}

// key reads a member's name and colon, leaving s.i at its value.
func (s *scanner) key() (key []byte, keyStart int, err error) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, 0, s.errorf("expected a string key")
	}
	keyStart = s.i
	if err := s.str(); err != nil {
		return nil, 0, err
	}
	key = s.b[keyStart+1 : s.i-1]
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != ':' {
		return nil, 0, s.errorf("expected ':' after object key")
	}
	s.i++
	s.ws()
	if s.i >= len(s.b) {
		return nil, 0, s.errorf("unexpected end of input")
	}
	return key, keyStart, nil
}

// next reads what follows a member or element: more (a comma) or the end
// of the object or array (closer).
func (s *scanner) next(closer byte) (more bool, err error) {
	s.ws()
	if s.i >= len(s.b) {
		return false, s.errorf("unexpected end of input")
	}
	switch s.b[s.i] {
	case ',':
		s.i++
		s.ws()
		return true, nil
	case closer:
		s.i++
		return false, nil
	}
	return false, s.errorf("expected ',' or '%c'", closer)
}

// object scans the object at s.i; member reads each value.
func (s *scanner) object(depth int, member memberFunc) error {
	empty, err := s.open(depth, '}')
	for more := !empty; more && err == nil; {
		var key []byte
		var keyStart int
		if key, keyStart, err = s.key(); err != nil {
			return err
		}
		if err = member(s, key, keyStart, depth+1); err == nil {
			more, err = s.next('}')
		}
	}
	return err
}

// array scans the array at s.i; elem reads each element, with its index.
func (s *scanner) array(depth int, elem func(s *scanner, index, depth int) error) error {
	empty, err := s.open(depth, ']')
	for n, more := 0, !empty; more && err == nil; n++ {
		if s.i >= len(s.b) {
			return s.errorf("unexpected end of input in array")
		}
		if err = elem(s, n, depth+1); err == nil {
			more, err = s.next(']')
		}
	}
	return err
}

// skipObject and skipArray validate without reading.
func (s *scanner) skipObject(depth int) error {
	empty, err := s.open(depth, '}')
	for more := !empty; more && err == nil; {
		if _, _, err = s.key(); err == nil {
			if err = s.value(depth + 1); err == nil {
				more, err = s.next('}')
			}
		}
	}
	return err
}

func (s *scanner) skipArray(depth int) error {
	empty, err := s.open(depth, ']')
	for more := !empty; more && err == nil; {
		if err = s.value(depth + 1); err == nil {
			more, err = s.next(']')
		}
	}
	return err
}

// value scans any value at s.i.
func (s *scanner) value(depth int) error {
	if s.i >= len(s.b) {
		return s.errorf("unexpected end of input")
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.skipObject(depth)
	case c == '[':
		return s.skipArray(depth)
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

// str scans a string; it must be valid UTF-8 (unless lax). It leaves in
// s.chars the characters of its content, counted as StringChars counts
// them, at no cost in the common ASCII run: the bytes it scanned, less
// what escapes and multi-byte characters take beyond one each; and in
// s.wide the bytes its multi-byte characters take beyond one each.
func (s *scanner) str() error {
	plain := &plainStringByte
	if s.lax {
		plain = &plainAnswerByte
	}
	b, i := s.b, s.i+1 // after the opening quote; locals, not s's fields, in the loop
	start, extra, wide := i, 0, 0
	for i < len(b) {
		for i < len(b) && plain[b[i]] {
			i++ // the common case, one table lookup a byte
		}
		if i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			s.i, s.chars, s.wide = i+1, int64(i-start-extra), int64(wide)
			return nil
		case c == '\\':
			if i+1 >= len(b) {
				s.i = i
				return s.errorf("unexpected end of input in string escape")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
				extra++
			case 'u':
				v, ok := uint16(0), i+6 <= len(b)
				if ok {
					v, ok = hex4(b[i+2 : i+6])
				}
				if !ok {
					s.i = i
					return s.errorf("invalid \\u escape")
				}
				i += 6
				extra += 5
				switch {
				case v >= 0xDC00 && v <= 0xDFFF: // the second half of a pair: counted with the first
					extra++
				case v >= 0xD800 && v <= 0xDBFF: // a pair: four bytes
					wide += 3
				case v >= 0x800:
					wide += 2
				case v >= 0x80:
					wide++
				}
			default:
				s.i = i
				return s.errorf("invalid escape character")
			}
		case c < 0x20:
			s.i = i
			return s.errorf("control character in string")
		default: // the first byte of a multi-byte character
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n == 1 {
				s.i = i
				return s.errorf("invalid UTF-8 in string")
			}
			i += n
			extra += n - 1
			wide += n - 1
		}
	}
	s.i = i
	return s.errorf("unterminated string")
}

// plainStringByte is true for the bytes a JSON string holds as they are:
// ASCII other than the quote, the backslash and control characters.
var plainStringByte = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plainAnswerByte is plainStringByte with every byte from 0x80: a lax
// scan does not check UTF-8.
var plainAnswerByte = func() (t [256]bool) {
	t = plainStringByte
	for c := 0x80; c < 0x100; c++ {
		t[c] = true
	}
	return t
}()

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func (s *scanner) number() error {
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

func (s *scanner) literal(lit string) error {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return s.errorf("invalid literal")
	}
	s.i += len(lit)
	return nil
}

// hex4 reads four hex digits.
func hex4(b []byte) (uint16, bool) {
	var v uint16
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		v = v<<4 | uint16(c)
	}
	return v, true
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

// appendFold appends name folded so that two names fold to the same bytes
// when any parser a provider may use takes them for one: bytes.EqualFold
// (encoding/json), which follows Unicode simple folding ("k", "K" and the
// Kelvin sign "K"; "s", "S" and "ſ"), and strings.ToLower or ToUpper
// (jsoniter's and sonic's case-insensitive lookups), which also map "İ" to
// "i" and "ı" to "I". Each character becomes the smallest character of
// its folding orbit and of its lower and upper cases' orbits.
func appendFold(dst, name []byte) []byte {
	for i := 0; i < len(name); {
		c := name[i]
		if c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(name[i:])
		i += n
		dst = utf8.AppendRune(dst, foldRune(r))
	}
	return dst
}

// equalFold reports whether a and b fold alike (appendFold): whether any
// parser may take one name for the other.
func equalFold(a, b []byte) bool {
	for len(a) > 0 && len(b) > 0 {
		ra, na := foldedRune(a)
		rb, nb := foldedRune(b)
		if ra != rb {
			return false
		}
		a, b = a[na:], b[nb:]
	}
	return len(a) == len(b)
}

// foldedRune is the first character of b folded, and its length in b.
func foldedRune(b []byte) (rune, int) {
	if c := b[0]; c < utf8.RuneSelf {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		return rune(c), 1
	}
	r, n := utf8.DecodeRune(b)
	return foldRune(r), n
}

// foldRune is appendFold's character: the least of the simple-folding
// orbits of r and of its lower and upper case.
func foldRune(r rune) rune {
	lower, upper := unicode.ToLower(r), unicode.ToUpper(r)
	least := r
	seenLower, seenUpper := lower == r, upper == r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		least = min(least, f)
		seenLower, seenUpper = seenLower || f == lower, seenUpper || f == upper
	}
	// a case outside r's orbit ("İ" lowers to "i"): its orbit too
	for _, c := range [...]rune{lower, upper} {
		if (c == lower && seenLower) || (c == upper && seenUpper) {
			continue
		}
		least = min(least, c)
		for f := unicode.SimpleFold(c); f != c; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
	}
	return least
}

// text is the text of a valid JSON string literal: the literal's own bytes
// when it has no escapes (no copy: callers keep the body alive while they
// use it), else decoded.
func text(lit []byte) string {
	if len(lit) < 2 || lit[0] != '"' {
		return ""
	}
	inner := lit[1 : len(lit)-1]
	if bytes.IndexByte(inner, '\\') >= 0 {
		var s string
		_ = json.Unmarshal(lit, &s)
		return s
	}
	if len(inner) == 0 {
		return ""
	}
	return unsafe.String(&inner[0], len(inner))
}

// Quote is a JSON string literal of s: the text between quotes when nothing
// in it needs escaping (the common case), else encoding/json's.
func Quote(s string) string {
	if needsEscape(s) {
		b, _ := json.Marshal(s)
		return string(b)
	}
	return `"` + s + `"`
}

// needsEscape reports whether s is not its own JSON string content as it
// is: it holds a control character, a quote or a backslash (or DEL, which
// Quote escapes too).
func needsEscape(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c == 0x7f {
			return true
		}
	}
	return false
}

// StringChars counts the characters of a JSON string's content, from just
// after its opening quote up to its closing quote: Unicode characters, an
// escape counting as the one it stands for (a surrogate pair, \ud83d\ude00,
// as one).
func StringChars(b []byte) int64 {
	n, _ := stringChars(b)
	return n
}

// stringChars is StringChars, and where the closing quote is in b (len(b)
// when there is none).
func stringChars(b []byte) (n int64, end int) { return stringSize(b, false) }

// stringBytes is the size in UTF-8 of a JSON string's content, from just
// after its opening quote up to its closing quote (an escape counting as
// the bytes of the character it stands for), and where the closing quote
// is in b (len(b) when there is none). Output is estimated from it, not
// from characters: at CharsPerToken a token, English text is about four
// bytes a token, while a Chinese, Japanese or Korean character (three
// bytes) is about one, which a count of characters would bill at a
// quarter.
func stringBytes(b []byte) (n int64, end int) { return stringSize(b, true) }

// stringSize is stringChars, or with inBytes stringBytes: one walk over
// the escapes for both.
func stringSize(b []byte, inBytes bool) (n int64, end int) {
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return n, i
		case c == '\\':
			if i+5 < len(b) && b[i+1] == 'u' {
				v, _ := hex4(b[i+2 : i+6])
				i += 5
				switch {
				case inBytes && v >= 0xD800 && v <= 0xDFFF:
					n += 2 // each half of a surrogate pair: 4 bytes for the pair
				case inBytes:
					n += int64(utf8.RuneLen(rune(v)))
				case v < 0xDC00 || v > 0xDFFF: // not the second half of a pair already counted
					n++
				}
				continue
			}
			i++
			n++
		case inBytes || c&0xC0 != 0x80: // a byte, or a character's first
			n++
		}
	}
	return n, len(b)
}

// ForEachMember calls f with each member of the JSON object b (keys raw,
// values as their bytes); false if b is not one valid object (white space
// around it allowed).
//
// It reads answers and events from providers, so it is lax: strings may
// hold any bytes, nesting may go as deep as encoding/json allows.
func ForEachMember(b []byte, f func(key, val []byte)) bool {
	s := scanner{b: b, lax: true}
	s.ws()
	if s.i >= len(b) || b[s.i] != '{' {
		return false
	}
	empty, err := s.open(1, '}')
	for more := !empty; more && err == nil; {
		var key []byte
		if key, _, err = s.key(); err != nil {
			return false
		}
		start := s.i
		if err = s.value(2); err == nil {
			f(key, b[start:s.i])
			more, err = s.next('}')
		}
	}
	if err != nil {
		return false
	}
	s.ws()
	return s.i == len(b)
}

// IsObject reports whether b is one valid JSON object.
func IsObject(b []byte) bool {
	return ForEachMember(b, func(_, _ []byte) {})
}

// forEachElement calls f with each element of the valid JSON array b.
func forEachElement(b []byte, f func(val []byte)) {
	s := scanner{b: b, lax: true}
	empty, err := s.open(1, ']')
	for more := !empty; more && err == nil; {
		start := s.i
		if err = s.value(2); err == nil {
			f(b[start:s.i])
			more, err = s.next(']')
		}
	}
}

// atoi reads a non-negative JSON integer; anything else counts as 0, and
// one past int64 as math.MaxInt64.
func atoi(b []byte) int64 {
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0
		}
		if n > (math.MaxInt64-9)/10 {
			// saturate rather than wrap: a wrapped count would be
			// negative usage (a credit) or an index before the start
			return math.MaxInt64
		}
		n = n*10 + int64(c-'0')
	}
	return n
}
