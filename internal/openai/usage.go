package openai

import (
	"bytes"
	"encoding/json"
	"math/bits"
	"strings"
)

// Usage is what one answer consumed, as the provider reported it, or as
// estimated (Estimated) when it reported nothing. With Estimated,
// InputReported says the input is still the provider's: only the output
// was estimated (text that came after its last report).
type Usage struct {
	Input, Output, CachedInput int64
	Estimated, InputReported   bool
}

// AnswerUsage reads a JSON answer: its top-level "usage" (found), or when
// it has none, the usage some providers (Moonshot's Kimi) put in its
// choices; and whether it is one valid JSON object at all (valid; the scan
// that finds the usage validates the whole body, so the check costs nothing
// extra). It decodes nothing else and allocates nothing; any white space
// and member order are read (ReadAnswer, whose Complete it leaves).
func AnswerUsage(b []byte) (u Usage, found, valid bool) {
	a := ReadAnswer(0, b)
	return a.Usage, a.Found, a.Valid
}

// ChunkUsage reads a stream event's data: its usage, if any (a chat or
// completions chunk's "usage", else one in its choices as Moonshot's Kimi
// sends it, or the "response.usage" of the Responses API's
// response.completed event), and how many choices it has (a usage-only
// chunk has none; usage found in a choice comes with that choice). An event
// with no usage object is not parsed (choices -1): most chunks are read at
// the cost of a byte search.
func ChunkUsage(data []byte) (u Usage, choices int, found bool) {
	if !hasUsageObject(data) {
		// the common chunk: no usage, or "usage": null
		return u, -1, false
	}
	var list []byte
	ForEachMember(data, func(key, val []byte) {
		switch string(key) {
		case "usage":
			u, found = usageObject(val)
		case "choices":
			if val[0] == '[' {
				forEachElement(val, func([]byte) { choices++ })
				list = val
			}
		case "response":
			ForEachMember(val, func(key, val []byte) {
				if string(key) == "usage" {
					u, found = usageObject(val)
				}
			})
		}
	})
	if !found && list != nil {
		u, found = choicesUsage(list)
	}
	return u, choices, found
}

// choicesUsage reads the usage objects of a list of choices (a member
// "usage" of a choice, not deeper). Several choices with usage each report
// the whole answer's or their own: each count is the largest of theirs,
// never a sum that would count the prompt once per choice.
func choicesUsage(list []byte) (u Usage, found bool) {
	forEachElement(list, func(choice []byte) {
		if choice[0] != '{' {
			return
		}
		var cu Usage
		var ok bool
		ForEachMember(choice, func(key, val []byte) {
			if string(key) == "usage" {
				cu, ok = usageObject(val)
			}
		})
		if ok {
			u.Input, u.Output, u.CachedInput = max(u.Input, cu.Input), max(u.Output, cu.Output), max(u.CachedInput, cu.CachedInput)
			found = true
		}
	})
	return u, found
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
// input_tokens_details.cached_tokens (Responses). It is found (ok) only
// when the input and output counts, or the total, are non-negative JSON
// integers and no count is anything else but null (which, as for
// encoding/json, leaves a count as it was): an empty usage, a count of
// 12.5 or "12" would charge the answer nothing, and the caller estimates
// it instead. A cached count that is not an integer is 0 (the whole input
// at the full price).
//
// The output is the larger of the completion (or output) tokens and the
// total less the prompt (or input) tokens: Gemini's thinking models bill
// thinking tokens that are in total_tokens but not in completion_tokens.
// Where reasoning tokens are already in completion_tokens (OpenAI's rule,
// completion_tokens_details.reasoning_tokens being a part of it) the total
// is their sum and adds nothing.
//
// The cached count is a part of the input (OpenAI's rule): one past it (an
// odd report) is the input's, so that no report bills more than its input
// and output at their full prices.
func usageObject(obj []byte) (Usage, bool) {
	var u Usage
	total := int64(-1)
	const in, out, tot, bad = 1, 2, 4, 8
	var seen uint8 // counts read as integers, or one that is not
	count := func(val []byte, dst *int64, bit uint8) {
		switch n, ok := countOf(val); {
		case !ok:
			seen |= bad
		case n >= 0:
			*dst = n
			seen |= bit
		} // null: as if absent
	}
	valid := ForEachMember(obj, func(key, val []byte) {
		switch string(key) {
		case "prompt_tokens", "input_tokens":
			count(val, &u.Input, in)
		case "completion_tokens", "output_tokens":
			count(val, &u.Output, out)
		case "total_tokens":
			count(val, &total, tot)
		case "prompt_tokens_details", "input_tokens_details":
			ForEachMember(val, func(key, val []byte) {
				if string(key) == "cached_tokens" {
					u.CachedInput = atoi(val)
				}
			})
		}
	})
	if !valid || seen&bad != 0 || (seen&(in|out) != in|out && seen&tot == 0) {
		return Usage{}, false
	}
	if total-u.Input > u.Output { // no overflow: both are at least 0
		u.Output = total - u.Input
	}
	u.CachedInput = min(u.CachedInput, u.Input)
	return u, true
}

// countOf reads a token count: a non-negative JSON integer (saturated
// at math.MaxInt64), or null (-1); ok is false for anything else.
func countOf(val []byte) (n int64, ok bool) {
	if string(val) == "null" {
		return -1, true
	}
	for _, c := range val {
		if c < '0' || c > '9' {
			return 0, false // a sign, a fraction, an exponent, not a number
		}
	}
	return atoi(val), len(val) > 0
}

// IsError reports whether a JSON object is an error rather than an
// answer: it has a non-null top-level "error", or is the Responses API's
// {"type":"error"} (or "response.failed") event.
func IsError(b []byte) bool {
	return ReadAnswer(0, b).Error
}

// SDKsRaise reports whether the official SDKs raise on a stream event's
// data: its top-level "error" (the last, as their parsers keep) is an
// object with members (Python's SDK tests it for truth, so "{}" is not
// one). They yield any other event to the caller, the Responses API's
// {"type":"error"} and response.failed events included.
func SDKsRaise(data []byte) bool {
	raises := false
	ForEachMember(data, func(key, val []byte) {
		if string(key) == "error" {
			raises = val[0] == '{' && val[skipSpace(val, 1)] != '}'
		}
	})
	return raises
}

// RequestsFault reports whether a stream's error event blames the request
// rather than the provider, as a 400 would: its error's code is one a
// request causes (a prompt the provider's policy flagged, which OpenAI
// reports mid-stream; a context too long; an image it could not use), or
// its type is invalid_request_error with no code (a code names what is
// wrong, and invalid_api_key or model_not_found, of that type too, are
// the deployment's). The error is the data's top-level "error" object,
// the Responses API's error event itself, or response.failed's
// response.error.
func RequestsFault(data []byte) bool {
	code, typ, ok := eventError(data)
	if code != "" {
		return requestCodes[code]
	}
	return ok && typ == "invalid_request_error"
}

// RateLimited reports whether a stream's error event is a rate limit, as
// a 429 is: its error's code (or, with no code, its type) is OpenAI's
// rate_limit_exceeded or insufficient_quota, or Anthropic's
// rate_limit_error. The error is found as RequestsFault finds it.
func RateLimited(data []byte) bool {
	code, typ, _ := eventError(data)
	if code == "" {
		code = typ
	}
	return rateLimitCodes[code]
}

var rateLimitCodes = map[string]bool{"rate_limit_exceeded": true, "insufficient_quota": true, "rate_limit_error": true}

// OverLimit reports whether a rate limit's error (a 429's body) says the
// request alone asks more than the whole limit: OpenAI's "Request too
// large for gpt-4o ... on tokens per min (TPM): Limit 30000, Requested
// 45000", whose code is rate_limit_exceeded as any rate limit's. Its
// numbers are read, not its words: a limit reached by others' requests
// says "Limit 30000, Used 29000, Requested 2000", which a pause cures;
// no pause lets a request over the whole limit through. limit and
// requested are the numbers, for the client's error.
func OverLimit(data []byte) (limit, requested int64, ok bool) {
	code, typ, _ := eventError(data)
	if code == "" {
		code = typ
	}
	if !rateLimitCodes[code] {
		return 0, 0, false
	}
	var env struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &env) != nil {
		return 0, 0, false
	}
	msg := env.Error.Message
	limit, okL := numberAfter(msg, "Limit ")
	requested, okR := numberAfter(msg, "Requested ")
	return limit, requested, okL && okR && requested > limit
}

// numberAfter reads the number (its digits, any thousands' commas
// skipped) that follows the first occurrence of label in msg.
func numberAfter(msg, label string) (int64, bool) {
	i := strings.Index(msg, label)
	if i < 0 {
		return 0, false
	}
	var n int64
	digits := 0
	for _, c := range []byte(msg[i+len(label):]) {
		switch {
		case c >= '0' && c <= '9':
			if n > (1<<62)/10 {
				return 0, false
			}
			n = n*10 + int64(c-'0')
			digits++
		case c == ',' && digits > 0:
		default:
			return n, digits > 0
		}
	}
	return n, digits > 0
}

// eventError is the code and type of a stream error event's error (see
// RequestsFault); ok is false when data is not one JSON object.
func eventError(data []byte) (code, typ string, ok bool) {
	var obj, c, t []byte
	valid := ForEachMember(data, func(key, val []byte) {
		switch string(key) {
		case "error":
			obj = val
		case "code":
			c = val // the Responses API's error event
		case "response":
			ForEachMember(val, func(key, val []byte) {
				if string(key) == "error" {
					obj = val
				}
			})
		}
	})
	if !valid {
		return "", "", false // not one JSON object: no error of any kind
	}
	if obj != nil && obj[0] == '{' {
		c = nil
		ForEachMember(obj, func(key, val []byte) {
			switch string(key) {
			case "code":
				c = val
			case "type":
				t = val
			}
		})
	}
	return text(c), text(t), true
}

// Flagged reports whether an error answer's data is a moderation
// refusal of the request: OpenRouter answers a prompt its moderation
// flagged with a 403 whose error's metadata names the reasons and the
// flagged input. The request's fault, not the account's.
func Flagged(data []byte) bool {
	flagged := false
	ForEachMember(data, func(key, val []byte) {
		if string(key) != "error" || val[0] != '{' {
			return
		}
		ForEachMember(val, func(key, val []byte) {
			if string(key) != "metadata" || val[0] != '{' {
				return
			}
			ForEachMember(val, func(key, val []byte) {
				switch string(key) {
				case "flagged_input", "reasons":
					flagged = flagged || !emptyValue(val)
				}
			})
		})
	})
	return flagged
}

// ErrorEnvelope is a stream error event's error (found as RequestsFault
// finds it) in the form the official SDKs raise on, as a 4xx body has it:
// {"error":{"message","type","param","code"}}. The Responses API's error
// event and response.failed's error name no type: the type is then
// invalid_request_error, what a 400 with that code says.
func ErrorEnvelope(data []byte) []byte {
	src := data
	var obj []byte
	ForEachMember(data, func(key, val []byte) {
		switch string(key) {
		case "error":
			obj = val
		case "response":
			ForEachMember(val, func(key, val []byte) {
				if string(key) == "error" {
					obj = val
				}
			})
		}
	})
	inner := obj != nil && obj[0] == '{'
	if inner {
		src = obj
	}
	var e struct {
		Message string          `json:"message"`
		Type    string          `json:"type"`
		Param   json.RawMessage `json:"param"`
		Code    json.RawMessage `json:"code"`
	}
	_ = json.Unmarshal(src, &e) // what it reads of a member of another kind: nothing
	if !inner {
		e.Type = "" // the Responses API's error event: its type is the event's
	}
	if e.Type == "" {
		e.Type = "invalid_request_error"
	}
	if e.Param == nil {
		e.Param = json.RawMessage("null")
	}
	if e.Code == nil {
		e.Code = json.RawMessage("null")
	}
	b, _ := json.Marshal(struct {
		Error any `json:"error"`
	}{e})
	return b
}

// requestCodes are the error codes of OpenAI's APIs (the Responses API's
// response.error codes among them) that a request causes.
var requestCodes = map[string]bool{
	"invalid_prompt": true, "cyber_policy": true, "bio_policy": true, "content_policy_violation": true,
	"context_length_exceeded": true, "string_above_max_length": true,
	"invalid_image": true, "invalid_image_format": true, "invalid_base64_image": true, "invalid_image_url": true,
	"image_too_large": true, "image_too_small": true, "image_parse_error": true, "image_content_policy_violation": true,
	"invalid_image_mode": true, "image_file_too_large": true, "unsupported_image_media_type": true,
	"empty_image_file": true, "failed_to_download_image": true, "image_file_not_found": true,
}

// ResponseOpening reports whether a Responses API stream event's data is
// one of the events that open its stream as the provider takes the
// request, before the model runs: response.created, response.queued,
// response.in_progress. They carry no output.
func ResponseOpening(data []byte) bool {
	switch EventType(data) {
	case "response.created", "response.queued", "response.in_progress":
		return true
	}
	return false
}

// ChatOpening reports whether a chat stream event's data is the chunk
// providers open a stream with as they take the request, before the model
// writes: its choices' deltas name the role and nothing else (their other
// members, content, reasoning, tool calls, are null or empty), no finish
// reason, no error, and no usage but one of no output. It carries no
// output.
func ChatOpening(data []byte) bool {
	ok, choices := true, 0
	if !ForEachMember(data, func(key, val []byte) {
		switch string(key) {
		case "choices":
			if val[0] != '[' {
				ok = false
				return
			}
			forEachElement(val, func(c []byte) {
				choices++
				ok = ok && openingChoice(c)
			})
		case "usage":
			// null, or a running report of no output yet (providers
			// that report usage in every chunk put the prompt's here)
			if string(val) != "null" {
				u, found := usageObject(val)
				ok = ok && found && u.Output == 0
			}
		case "error":
			ok = ok && string(val) == "null"
		}
	}) {
		return false
	}
	return ok && choices > 0
}

// ChatPromptFilter reports whether a chat stream event's data is the chunk
// Azure OpenAI opens a stream with, before its role chunk: the content
// filter's results on the prompt ("prompt_filter_results"), no choices,
// no usage and no error. It carries no output.
func ChatPromptFilter(data []byte) bool {
	ok, filter := true, false
	if !ForEachMember(data, func(key, val []byte) {
		switch string(key) {
		case "prompt_filter_results":
			filter = val[0] == '['
		case "choices":
			ok = ok && emptyValue(val)
		case "usage", "error":
			ok = ok && string(val) == "null"
		}
	}) {
		return false
	}
	return ok && filter
}

// openingChoice reports whether a choice of a chat chunk is an opening's
// (ChatOpening): an index, a delta with a role, and nothing else that is
// not empty: an object of empty members is empty too (OpenAI's role chunk
// has "logprobs":{"content":[],"refusal":null} when they are asked for).
func openingChoice(c []byte) bool {
	ok := true
	return ForEachMember(c, func(key, val []byte) {
		switch string(key) {
		case "index":
		case "delta":
			empty := true
			valid := ForEachMember(val, func(k, v []byte) {
				empty = empty && (string(k) == "role" || emptyValue(v))
			})
			ok = ok && valid && empty
		default:
			ok = ok && (emptyValue(val) || emptyMembers(val))
		}
	}) && ok
}

// emptyMembers reports whether v is a JSON object whose members are all
// empty (emptyValue).
func emptyMembers(v []byte) bool {
	if len(v) == 0 || v[0] != '{' {
		return false
	}
	empty := true
	return ForEachMember(v, func(_, m []byte) { empty = empty && emptyValue(m) }) && empty
}

// emptyValue reports whether a JSON value is null or an empty string,
// array or object.
func emptyValue(v []byte) bool {
	switch string(v) {
	case "null", `""`, "[]", "{}":
		return true
	}
	return false
}

// EventType is the top-level "type" of a stream event's data (the last,
// as JSON parsers read a repeated member), decoded; "" when there is none.
// A member of that name deeper in the event (an item's type, a client's
// metadata echoed in response.created) is not the event's type, and data
// that is not one JSON object has none. It is data's own bytes when it
// has no escapes: not to be kept.
func EventType(data []byte) string {
	var typ []byte
	if !ForEachMember(data, func(key, val []byte) {
		if string(key) == "type" {
			typ = nil
			if val[0] == '"' {
				typ = val
			}
		}
	}) {
		return "" // not one JSON object: no event's type
	}
	return text(typ)
}

// textKeys are the members whose string values are text a model wrote,
// for an API, as quoted names. names[alias:] are one text under several
// names (vLLM and others in transition send both "reasoning" and
// "reasoning_content"): only the largest of their counts is added.
type textKeys struct {
	names [][]byte
	alias int
	// ends[c] has bit j set when names[j] ends with c (before its closing
	// quote): most member names are passed over at one look-up
	ends [256]uint8
	// in, when set, is the quoted name of the top-level member the text is
	// in ("choices"): what comes before its first occurrence as a member
	// name is not read
	in []byte
}

// newTextKeys makes the textKeys of names (at most 8, the last two at most
// aliases from alias on) in the member in ("" for anywhere).
func newTextKeys(in string, alias int, names ...string) *textKeys {
	if len(names) > 8 || len(names)-alias > 2 {
		panic("openai: too many text keys")
	}
	k := &textKeys{alias: alias}
	if in != "" {
		k.in = []byte(`"` + in + `"`)
	}
	for j, n := range names {
		k.names = append(k.names, []byte(`"`+n+`"`))
		k.ends[n[len(n)-1]] |= 1 << j
	}
	return k
}

// chatText is a chat delta's or message's text: its content and refusal,
// its tool calls' (and legacy function call's) arguments, a custom tool
// call's input, its reasoning. A reasoning's "reasoning_details" repeat
// its text, and are not counted.
var chatText = newTextKeys("choices", 4, "content", "refusal", "arguments", "input", "reasoning_content", "reasoning")

// streamTextKeys are where each API's streamed text is: a chat delta's
// (chatText), a completion's text, and for the Responses API the "delta"
// of its text, refusal, arguments, reasoning and summary delta events (its
// .done events and response.completed repeat them, and are not counted).
var streamTextKeys = [Responses + 1]*textKeys{
	Chat:        chatText,
	Completions: newTextKeys("choices", 1, "text"),
	Responses:   newTextKeys("", 1, "delta"),
}

// StreamTextBytes counts the text in one stream event's data, in UTF-8
// bytes (stringBytes), to estimate the output of a stream that ends
// without usage. It looks for the API's text members whatever the white
// space around their colon, in one pass over the event and without
// parsing it.
func StreamTextBytes(api API, data []byte) int64 {
	if int(api) >= len(streamTextKeys) || streamTextKeys[api] == nil {
		return 0
	}
	return textBytes(streamTextKeys[api], data)
}

// answerTextKeys are where each API's text is in a JSON answer: a chat
// message's (chatText), a completion's text, and in a Responses output the
// texts of its messages, reasoning summaries and reasoning ("text"), its
// refusals, its function calls' arguments and its custom tool calls' input.
var answerTextKeys = [Responses + 1]*textKeys{
	Chat:        chatText,
	Completions: newTextKeys("choices", 1, "text"),
	Responses:   newTextKeys("output", 4, "text", "refusal", "arguments", "input"),
}

// AnswerTextBytes counts the text in a JSON answer, in UTF-8 bytes
// (stringBytes), to estimate the output of an answer that reports no
// usage.
func AnswerTextBytes(api API, answer []byte) int64 {
	if int(api) >= len(answerTextKeys) || answerTextKeys[api] == nil {
		return 0
	}
	return textBytes(answerTextKeys[api], answer)
}

// textBytes counts the UTF-8 bytes of the string values of the members
// keys names in data. It visits each colon once: a member name is the quoted
// string just before one (white space between them allowed); a colon in a
// string is passed over, as the quote before it, if any, is an escaped one
// (\"content\": in a text is not a member), and a counted value is skipped
// whole.
func textBytes(keys *textKeys, data []byte) int64 {
	start := 0
	if keys.in != nil {
		if start = memberValue(data, keys.in, 0); start < 0 {
			return 0
		}
	}
	var n int64
	var aliased [2]int64
	for i := start; ; {
		c := bytes.IndexByte(data[i:], ':')
		if c < 0 {
			break
		}
		c += i
		i = c + 1
		p := c - 1
		for p >= 0 && isSpace(data[p]) {
			p--
		}
		if p < 1 || data[p] != '"' {
			continue
		}
		for m := keys.ends[data[p-1]]; m != 0; m &= m - 1 {
			j := bits.TrailingZeros8(m)
			name := keys.names[j]
			if p+1 < len(name) || !bytes.Equal(data[p+1-len(name):p+1], name) {
				continue
			}
			if v := skipSpace(data, i); v < len(data) && data[v] == '"' {
				size, end := stringBytes(data[v+1:])
				i = v + 1 + end
				if j < keys.alias {
					n += size
				} else {
					aliased[j-keys.alias] += size
				}
			}
			break
		}
	}
	return n + max(aliased[0], aliased[1])
}

// ResponseID is the id of a Responses API answer: the "id" of the
// "response" a stream event carries (response.created and the ones after
// it), else the top-level "id" of a response object; "" when there is
// none. It reads one level down, no deeper: one pass over data, whatever
// its nesting.
func ResponseID(data []byte) string {
	var id, inner []byte
	ForEachMember(data, func(key, val []byte) {
		switch string(key) {
		case "id":
			if val[0] == '"' {
				id = val
			}
		case "response":
			inner = nil
			if val[0] == '{' {
				ForEachMember(val, func(key, val []byte) {
					if string(key) == "id" && val[0] == '"' {
						inner = val
					}
				})
			}
		}
	})
	if inner != nil {
		id = inner
	}
	if id == nil {
		return ""
	}
	return strings.Clone(text(id))
}
