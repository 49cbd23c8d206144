package openai

import (
	"bytes"
	"strings"
)

// Usage is what one answer consumed, as the provider reported it, or as
// estimated (Estimated) when it reported nothing.
type Usage struct {
	Input, Output, CachedInput int64
	Estimated                  bool
}

// AnswerUsage reads a JSON answer: its top-level "usage" (found), and
// whether it is one valid JSON object at all (valid; the scan that finds
// the usage validates the whole body, so the check costs nothing extra).
// It decodes nothing else and allocates nothing; any white space and member
// order are read.
func AnswerUsage(b []byte) (u Usage, found, valid bool) {
	valid = ForEachMember(b, func(key, val []byte) {
		if string(key) == "usage" {
			u, found = usageObject(val)
		}
	})
	return u, found && valid, valid
}

// ChunkUsage reads a stream event's data: its usage, if any (a chat or
// completions chunk's "usage", or the "response.usage" of the Responses
// API's response.completed event), and how many choices it has (a
// usage-only chunk has none). An event with no usage object is not parsed
// (choices -1): most chunks are read at the cost of a byte search.
func ChunkUsage(data []byte) (u Usage, choices int, found bool) {
	if !hasUsageObject(data) {
		// the common chunk: no usage, or "usage": null
		return u, -1, false
	}
	ForEachMember(data, func(key, val []byte) {
		switch string(key) {
		case "usage":
			u, found = usageObject(val)
		case "choices":
			if val[0] == '[' {
				forEachElement(val, func([]byte) { choices++ })
			}
		case "response":
			ForEachMember(val, func(key, val []byte) {
				if string(key) == "usage" {
					u, found = usageObject(val)
				}
			})
		}
	})
	return u, choices, found
}

var usageKey = []byte(`"usage"`)

// hasUsageObject reports whether data may have a usage object: a "usage"
// member name followed by an object. A cheap look before the parse, which
// most chunks ("usage": null, or none) skip.
func hasUsageObject(data []byte) bool {
	for v := 0; ; {
		if v = memberValue(data, usageKey, v); v < 0 {
			return false
		}
		if data[v] == '{' {
			return true
		}
	}
}

// memberValue finds, from offset from, key (a quoted name) followed by a
// colon, whatever the white space, and returns where the value after it
// begins; -1 when there is none. A quoted name not followed by a colon is
// a string's text, not a member, and is passed over.
func memberValue(data, key []byte, from int) int {
	for {
		i := bytes.Index(data[from:], key)
		if i < 0 {
			return -1
		}
		from += i + len(key)
		j := skipSpace(data, from)
		if j < len(data) && data[j] == ':' {
			if j = skipSpace(data, j+1); j < len(data) {
				return j
			}
			return -1
		}
	}
}

// usageObject reads a usage object in either of OpenAI's shapes:
// prompt_tokens, completion_tokens and prompt_tokens_details.cached_tokens
// (chat, completions, embeddings), or input_tokens, output_tokens and
// input_tokens_details.cached_tokens (Responses). A null usage is not found.
func usageObject(obj []byte) (Usage, bool) {
	var u Usage
	ok := ForEachMember(obj, func(key, val []byte) {
		switch string(key) {
		case "prompt_tokens", "input_tokens":
			u.Input = atoi(val)
		case "completion_tokens", "output_tokens":
			u.Output = atoi(val)
		case "prompt_tokens_details", "input_tokens_details":
			ForEachMember(val, func(key, val []byte) {
				if string(key) == "cached_tokens" {
					u.CachedInput = atoi(val)
				}
			})
		}
	})
	return u, ok
}

// IsError reports whether a JSON object is an error rather than an
// answer: it has a non-null top-level "error", or is the Responses API's
// {"type":"error"} (or "response.failed") event.
func IsError(b []byte) bool {
	isErr := false
	ForEachMember(b, func(key, val []byte) {
		switch string(key) {
		case "error":
			isErr = isErr || val[0] != 'n'
		case "type":
			isErr = isErr || string(val) == `"error"` || string(val) == `"response.failed"`
		}
	})
	return isErr
}

// streamTextKeys are where each API's streamed text is: a chat delta's
// content, a completion's text, a Responses text delta.
var streamTextKeys = [Responses + 1][]byte{Chat: []byte(`"content"`), Completions: []byte(`"text"`), Responses: []byte(`"delta"`)}

// StreamTextChars counts the characters of text in one stream event's
// data, to estimate the output of a stream that ends without usage. It
// looks for the API's text member whatever the white space around its
// colon, without parsing the whole event.
func StreamTextChars(api API, data []byte) int64 {
	return textChars(&streamTextKeys, api, data)
}

// answerTextKeys are where each API's text is in a JSON answer: a chat
// message's content, a completion's text, a Responses output text.
var answerTextKeys = [Responses + 1][]byte{Chat: []byte(`"content"`), Completions: []byte(`"text"`), Responses: []byte(`"text"`)}

// AnswerTextChars counts the characters of text in a JSON answer, to
// estimate the output of an answer that reports no usage.
func AnswerTextChars(api API, answer []byte) int64 {
	return textChars(&answerTextKeys, api, answer)
}

// textChars counts the characters of the string values of the API's text
// member in data.
func textChars(keys *[Responses + 1][]byte, api API, data []byte) int64 {
	if int(api) >= len(keys) || keys[api] == nil {
		return 0
	}
	var n int64
	for v := 0; ; {
		if v = memberValue(data, keys[api], v); v < 0 {
			return n
		}
		if data[v] == '"' {
			n += StringChars(data[v+1:])
		}
	}
}

// ResponseID is the id of a Responses API answer: the top-level "id" of a
// response object, or that of the "response" a stream event carries
// (response.created and the ones after it); "" when there is none.
func ResponseID(data []byte) string {
	var id string
	ForEachMember(data, func(key, val []byte) {
		switch string(key) {
		case "id":
			if id == "" && val[0] == '"' {
				id = strings.Clone(text(val))
			}
		case "response":
			if val[0] == '{' {
				id = ResponseID(val)
			}
		}
	})
	return id
}
