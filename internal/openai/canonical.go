package openai

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"sync"
)

// Key is a SHA-256 of what the caller writes first (head: the endpoint,
// the plan, the scope, appended to the buffer it is given) and of the
// request body in a canonical form: the top level's members sorted,
// insignificant white space dropped, and without "user", "stream" and
// "stream_options", which do not change an answer's text (so that a
// streamed and a non-streamed question share one). Two bodies a provider
// could read differently never share a key: nested members keep their
// order, which a provider may follow (a JSON schema's properties are
// generated in the order written); no text is kept. r must have been
// parsed without error.
func (r *Request) Key(head func([]byte) []byte) [sha256.Size]byte {
	c := canonicalizers.Get().(*canonicalizer)
	defer c.release()
	out := head(c.scratch(0))
	// the encoding is about as long as the body: grown once, not by
	// doubling (a copy of everything so far each time)
	out = slices.Grow(out, len(r.Raw)+len(r.Raw)/8)
	s := scanner{b: r.Raw}
	s.ws()
	out = c.value(&s, out, 1, true)
	c.bufs[0] = out
	return sha256.Sum256(out)
}

// AppendString appends a length-prefixed string, for a key's head.
func AppendString[T string | []byte](b []byte, tag byte, v T) []byte {
	return append(AppendLen(b, tag, len(v)), v...)
}

// AppendLen appends a tag and a count, for a key's head.
func AppendLen(b []byte, tag byte, n int) []byte {
	return binary.AppendUvarint(append(b, tag), uint64(n))
}

// keyExcluded are top-level members that do not change the answer's text.
var keyExcluded = []string{"user", "stream", "stream_options"}

// canonicalizer writes a JSON value in a canonical form, in one pass, to
// be hashed. The encoding is self-delimiting, so that different values
// never write the same bytes: a scalar is 's', its length and its bytes as
// written; an array is 'a', its elements, 'e'; an object is 'o', its
// member count, then its members (the top level's sorted by name, a nested
// object's in their order), each as 'k', the name's
// length and the name, then its value: a scalar as above, an object or
// array as 'v', its length and its encoding when that is at most
// inlineValue bytes, else as 'h' and the SHA-256 of its encoding (a Merkle
// tree: no byte is hashed twice, and a byte is copied into its parent's
// encoding only while the value holding it is small). One buffer and
// member list are kept per depth, and the whole is hashed once (many small
// writes to a hash cost more than the copy).
type canonicalizer struct {
	bufs    [][]byte
	members [][]canonMember
}

type canonMember struct {
	key []byte // the name decoded, by which members sort
	// the name as written, when decoding it loses what it was: a lone
	// surrogate escape (\ud800) decodes to U+FFFD for encoding/json, while
	// Python's json keeps the surrogate, so "a\ud800", "a\udbff" and
	// "a\ufffd" are one name to some parsers and three to others
	raw    []byte
	scalar []byte // a scalar value, as written
	// else the value's encoding, at off:end of the object's buffer
	off, end int
}

var canonicalizers = sync.Pool{New: func() any { return new(canonicalizer) }}

// inlineValue is the largest encoding of an object's member value that is
// copied into the object's encoding rather than hashed: copying a few
// hundred bytes costs less than a SHA-256 of them (a short chat's
// messages, ~0.1 µs of a key's 0.9).
const inlineValue = 512

// largeBody is the body size above which buffers are sized before they
// are filled.
const largeBody = 64 << 10

// maxKeptBuffer bounds what a pooled canonicalizer keeps of the buffers a
// large body made it grow.
const maxKeptBuffer = 64 << 10

// scratch is the emptied buffer of depth d.
func (c *canonicalizer) scratch(d int) []byte {
	for len(c.bufs) <= d {
		c.bufs = append(c.bufs, nil)
		c.members = append(c.members, nil)
	}
	return c.bufs[d][:0]
}

func (c *canonicalizer) release() {
	for i, b := range c.bufs {
		if cap(b) > maxKeptBuffer {
			c.bufs[i] = nil
		}
	}
	for i := range c.members {
		clear(c.members[i]) // drop references to the body
		if cap(c.members[i]) > 1024 {
			c.members[i] = nil
		}
		c.members[i] = c.members[i][:0]
	}
	canonicalizers.Put(c)
}

// value appends the value at s.i to out and moves past it; the input is
// known to be valid JSON (Parse checked it, depth included). Top-level
// members in keyExcluded are left out.
func (c *canonicalizer) value(s *scanner, out []byte, depth int, top bool) []byte {
	b := s.b
	switch b[s.i] {
	case '{':
		s.i++
		subs := c.scratch(depth) // makes members[depth-1] and bufs[depth]
		members := c.members[depth-1][:0]
		for {
			s.ws()
			if b[s.i] == '}' {
				s.i++
				break
			}
			if b[s.i] == ',' {
				s.i++
				s.ws()
			}
			kstart := s.i
			skipScalar(s)
			raw := b[kstart+1 : s.i-1]
			key := keyName(raw)
			s.ws()
			s.i++ // ':'
			s.ws()
			if top && slices.Contains(keyExcluded, string(key)) {
				skipValue(s)
				continue
			}
			members = append(members, canonMember{key: key})
			m := &members[len(members)-1]
			if len(key) != len(raw) && loneSurrogate(raw) {
				m.raw = raw
			}
			if ch := b[s.i]; ch != '{' && ch != '[' {
				// a scalar sorts with its own bytes: no digest needed
				start := s.i
				skipScalar(s)
				m.scalar = b[start:s.i]
			} else {
				if top && len(b) > largeBody {
					// a large body's top-level members: size the buffer
					// once from the value's length (a fast skip), rather
					// than by doubling, which copies and allocates twice
					// what it holds (only at the top: a skip at every
					// level would scan a deep value once per level)
					t := *s
					skipValue(&t)
					subs = slices.Grow(subs, t.i-s.i+(t.i-s.i)/8)
				}
				m.off = len(subs)
				subs = c.value(s, subs, depth+1, false)
				m.end = len(subs)
			}
		}
		c.bufs[depth] = subs
		if top {
			sortMembers(members)
		}
		out = AppendLen(out, 'o', len(members))
		for i := range members {
			m := &members[i]
			if m.raw != nil {
				out = AppendString(out, 'r', m.raw) // never the same bytes as a 'k' name
			} else {
				out = AppendString(out, 'k', m.key)
			}
			switch sub := subs[m.off:m.end]; {
			case m.scalar != nil:
				out = AppendString(out, 's', m.scalar)
			case len(sub) <= inlineValue:
				out = AppendString(out, 'v', sub)
			default:
				sum := sha256.Sum256(sub)
				out = append(append(out, 'h'), sum[:]...)
			}
		}
		c.members[depth-1] = members
	case '[':
		s.i++
		out = append(out, 'a')
		for {
			s.ws()
			if b[s.i] == ']' {
				s.i++
				break
			}
			if b[s.i] == ',' {
				s.i++
				s.ws()
			}
			out = c.value(s, out, depth, false)
		}
		out = append(out, 'e')
	default:
		start := s.i
		skipScalar(s)
		out = AppendString(out, 's', b[start:s.i])
	}
	return out
}

// loneSurrogate reports whether the raw text of a valid JSON string has a
// \u escape of a surrogate that is not half of a pair.
func loneSurrogate(raw []byte) bool {
	for i := bytes.IndexByte(raw, '\\'); i >= 0 && i+1 < len(raw); {
		if raw[i+1] != 'u' || i+6 > len(raw) {
			i += 2 // a one-character escape
		} else {
			v, _ := hex4(raw[i+2 : i+6])
			i += 6
			switch {
			case v >= 0xDC00 && v <= 0xDFFF: // a second half first
				return true
			case v >= 0xD800 && v <= 0xDBFF:
				if i+6 > len(raw) || raw[i] != '\\' || raw[i+1] != 'u' {
					return true
				}
				if w, _ := hex4(raw[i+2 : i+6]); w < 0xDC00 || w > 0xDFFF {
					return true
				}
				i += 6
			}
		}
		j := bytes.IndexByte(raw[i:], '\\')
		if j < 0 {
			return false
		}
		i += j
	}
	return false
}

// sortMembers sorts the top level's members by name. Parse refused two
// that any parser takes for one ("Name" and "name", escapes), so the
// names are distinct and their order is no parser's business: a plain
// byte order, each comparison as long as the common prefix (a fold at
// every comparison cost a body of long non-ASCII names seconds). Bodies
// have a few members, where an insertion sort beats the library's set-up.
func sortMembers(members []canonMember) {
	if len(members) > 12 {
		slices.SortFunc(members, func(x, y canonMember) int { return bytes.Compare(x.key, y.key) })
		return
	}
	for i := 1; i < len(members); i++ {
		for j := i; j > 0 && bytes.Compare(members[j-1].key, members[j].key) > 0; j-- {
			members[j-1], members[j] = members[j], members[j-1]
		}
	}
}

// skipValue moves s past the valid value at s.i.
func skipValue(s *scanner) {
	b := s.b
	switch b[s.i] {
	case '{', '[':
		depth := 0
		for {
			switch b[s.i] {
			case '{', '[':
				depth++
				s.i++
			case '}', ']':
				depth--
				s.i++
				if depth == 0 {
					return
				}
			case '"':
				skipScalar(s)
			default:
				s.i++
			}
		}
	default:
		skipScalar(s)
	}
}

// skipScalar moves s past the string, number or literal at s.i, which is
// known to be valid: a string's end is found by IndexByte (the text of the
// messages is most of a body's bytes), not by validating every byte again.
func skipScalar(s *scanner) {
	b := s.b
	if b[s.i] != '"' {
		for s.i < len(b) {
			switch b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return
			}
			s.i++
		}
		return
	}
	i := s.i + 1
	for {
		q := i + bytes.IndexByte(b[i:], '"')
		escapes := 0 // backslashes just before the quote: odd escapes it
		for p := q - 1; p >= i && b[p] == '\\'; p-- {
			escapes++
		}
		i = q + 1
		if escapes%2 == 0 {
			s.i = i
			return
		}
	}
}

// QuestionKey is Key of the body with the last user message's content
// left out: the namespace of a semantic lookup, in which only that text
// may differ (everything else that shapes an answer, earlier messages,
// system prompt, parameters, tools, is the same). ok is false unless the
// body is chat messages ending with a user message whose content is text
// only (no image, audio or file part). The body is copied once.
func (r *Request) QuestionKey(head func([]byte) []byte) (key [sha256.Size]byte, ok bool) {
	if r.API != Chat || !r.lastIsUser || !r.lastUser.ok() || !textOnly(r.Raw[r.lastUser.start:r.lastUser.end]) {
		return key, false
	}
	raw := make([]byte, 0, len(r.Raw))
	raw = append(raw, r.Raw[:r.lastUser.start]...)
	raw = append(raw, "null"...)
	raw = append(raw, r.Raw[r.lastUser.end:]...)
	q := Request{Raw: raw}
	return q.Key(head), true
}

// textOnly reports whether a message content (a string, parts or null) has
// only text: a string, or parts each with one "type", of "text", and one
// "text", a string. Names and the type are read decoded, as providers
// read them. A part with "type" or "text" in another case is not text only:
// encoding/json reads either name (the last), case-sensitive parsers only
// one (Parse refuses such parts too).
func textOnly(v []byte) bool {
	switch v[0] {
	case '"':
		return true
	case '[':
		only := true
		forEachElement(v, func(part []byte) {
			if !only {
				return
			}
			types, texts := 0, 0
			isText := false
			only = ForEachMember(part, func(key, val []byte) {
				switch name := keyName(key); {
				case string(name) == "type":
					types++
					isText = val[0] == '"' && text(val) == "text"
				case string(name) == "text":
					texts++
					if val[0] != '"' {
						texts++ // not a string: not text only
					}
				case equalFold(name, []byte("type")) || equalFold(name, []byte("text")):
					types++ // a case variant
				}
			})
			only = only && types == 1 && texts == 1 && isText
		})
		return only
	}
	return false
}
