package openai

import "strings"

// LastUser is the last user message's text (a text content, or its text
// parts joined by new lines; a bare prompt or input text counts as a user
// message). It is the body's own bytes when the text has no escapes.
func (r *Request) LastUser() string {
	if !r.lastUser.ok() {
		return ""
	}
	return contentText(r.Raw[r.lastUser.start:r.lastUser.end])
}

// System is the text of the system and developer messages, then the
// Responses API's instructions, joined by new lines.
func (r *Request) System() string {
	n := len(r.system)
	if r.instructions.ok() {
		n++
	}
	switch {
	case n == 0:
		return ""
	case n == 1 && len(r.system) == 1:
		return contentText(r.Raw[r.system[0].start:r.system[0].end])
	case n == 1:
		return text(r.Raw[r.instructions.start:r.instructions.end])
	}
	// many system messages: one builder, so that the cost stays linear,
	// sized once (the raw lengths bound the texts)
	var b strings.Builder
	size := 0
	for _, sp := range r.system {
		size += sp.end - sp.start
	}
	if r.instructions.ok() {
		size += r.instructions.end - r.instructions.start
	}
	b.Grow(size)
	add := func(t string) {
		if t == "" {
			return
		}
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(t)
	}
	for _, sp := range r.system {
		add(contentText(r.Raw[sp.start:sp.end]))
	}
	if r.instructions.ok() {
		add(text(r.Raw[r.instructions.start:r.instructions.end]))
	}
	return b.String()
}

// contentText is a message content's text: a string, or the text parts of
// an array joined by new lines. v is known to be valid. Member names are
// read decoded, as providers read them: a part's "te\u0078t" is its text.
func contentText(v []byte) string {
	switch v[0] {
	case '"':
		return text(v)
	case '[':
		var b strings.Builder
		parts := 0
		var only string
		forEachElement(v, func(part []byte) {
			ForEachMember(part, func(key, val []byte) {
				if val[0] != '"' || string(keyName(key)) != "text" {
					return
				}
				t := text(val)
				if parts == 0 {
					only = t
				} else {
					if parts == 1 {
						b.WriteString(only)
					}
					b.WriteByte('\n')
					b.WriteString(t)
				}
				parts++
			})
		})
		if parts <= 1 {
			return only
		}
		return b.String()
	}
	return ""
}

// What a request's input is estimated to cost in tokens, where a provider
// reports no usage: text at about four bytes of UTF-8 a token (an English
// character is one byte; a Chinese, Japanese or Korean one three, as they
// take about a token each), and each media part at a fixed figure rather
// than by its bytes (a base64 image of 2 MB is not 500,000 tokens). An
// answer's text is estimated the same way (StreamTextBytes,
// AnswerTextBytes).
const (
	CharsPerToken   = 4
	ImageTokens     = 765  // a 1024×1024 image at high detail, by OpenAI's tile rule
	AudioTokens     = 1000 // about a minute of audio input
	FileTokens      = 1000 // a short document
	MessageOverhead = 4    // the role and separators of each message
)

// InputTokens estimates the request's input tokens (see the constants
// above); tool definitions count as text.
func (r *Request) InputTokens() int64 {
	text := r.TextChars + r.textWide + r.ToolBytes // in bytes of UTF-8
	return (text+CharsPerToken-1)/CharsPerToken + r.TokenIDs +
		r.Messages*MessageOverhead + r.Images*ImageTokens + r.Audio*AudioTokens + r.Files*FileTokens
}
