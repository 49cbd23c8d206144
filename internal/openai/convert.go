package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
)

// ChatJSONToStream turns a chat.completion into the SSE events a stream of
// it would have been: one chunk per choice with the whole message as its
// delta, one with each finish reason, a usage chunk, [DONE]. A member the
// events would not carry (a provider's citations, a choice's
// stop_reason), unless null, is an error rather than something the stream
// would silently lose, as in ChatStreamToJSON: the cache then answers the
// streamed question from a model.
func ChatJSONToStream(body []byte) ([]byte, error) {
	if err := carried(body, streamedAnswerMembers, func(name string, val []byte) error {
		if name != "choices" || val[0] != '[' {
			return nil
		}
		var err error
		forEachElement(val, func(choice []byte) {
			if err == nil && choice[0] == '{' {
				err = carried(choice, streamedChoiceMembers, nil)
			}
		})
		return err
	}); err != nil {
		return nil, err
	}
	var c struct {
		ID                string          `json:"id"`
		Created           int64           `json:"created"`
		Model             string          `json:"model"`
		ServiceTier       json.RawMessage `json:"service_tier,omitempty"`
		SystemFingerprint json.RawMessage `json:"system_fingerprint,omitempty"`
		Choices           []struct {
			Index        int             `json:"index"`
			Message      json.RawMessage `json:"message"`
			Logprobs     json.RawMessage `json:"logprobs,omitempty"`
			FinishReason json.RawMessage `json:"finish_reason"`
		} `json:"choices"`
		Usage json.RawMessage `json:"usage,omitempty"`
	}
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, err
	}
	type choice struct {
		Index        int             `json:"index"`
		Delta        json.RawMessage `json:"delta"`
		Logprobs     json.RawMessage `json:"logprobs"`
		FinishReason json.RawMessage `json:"finish_reason"`
	}
	type chunk struct {
		ID                string          `json:"id"`
		Object            string          `json:"object"`
		Created           int64           `json:"created"`
		Model             string          `json:"model"`
		ServiceTier       json.RawMessage `json:"service_tier,omitempty"`
		SystemFingerprint json.RawMessage `json:"system_fingerprint,omitempty"`
		Choices           []choice        `json:"choices"`
		Usage             json.RawMessage `json:"usage,omitempty"`
	}
	var out bytes.Buffer
	emit := func(ch chunk) error {
		ch.ID, ch.Object, ch.Created, ch.Model, ch.ServiceTier, ch.SystemFingerprint = c.ID, "chat.completion.chunk", c.Created, c.Model, c.ServiceTier, c.SystemFingerprint
		b, err := json.Marshal(ch)
		if err != nil {
			return err
		}
		out.WriteString("data: ")
		out.Write(b)
		out.WriteString("\n\n")
		return nil
	}
	null := json.RawMessage("null")
	for _, ch := range c.Choices {
		msg, err := deltaOf(ch.Message)
		if err != nil {
			return nil, err
		}
		if err := emit(chunk{Choices: []choice{{Index: ch.Index, Delta: msg, Logprobs: orNull(ch.Logprobs), FinishReason: null}}}); err != nil {
			return nil, err
		}
	}
	for _, ch := range c.Choices {
		if err := emit(chunk{Choices: []choice{{Index: ch.Index, Delta: json.RawMessage("{}"), Logprobs: null, FinishReason: orNull(ch.FinishReason)}}}); err != nil {
			return nil, err
		}
	}
	if len(c.Usage) > 0 && string(c.Usage) != "null" {
		if err := emit(chunk{Choices: []choice{}, Usage: c.Usage}); err != nil {
			return nil, err
		}
	}
	out.WriteString("data: [DONE]\n\n")
	return out.Bytes(), nil
}

// The members of a chat.completion, and of its choices, that
// ChatJSONToStream's events carry.
var (
	streamedAnswerMembers = []string{"id", "object", "created", "model", "service_tier", "system_fingerprint", "choices", "usage"}
	streamedChoiceMembers = []string{"index", "message", "logprobs", "finish_reason"}
)

// carried checks that every member of the JSON object obj is one of
// names or null, and calls each, when not nil, with the members named.
func carried(obj []byte, names []string, each func(name string, val []byte) error) error {
	var err error
	ok := ForEachMember(obj, func(key, val []byte) {
		if err != nil {
			return
		}
		name := string(keyName(key))
		switch {
		case slices.Contains(names, name):
			if each != nil {
				err = each(name, val)
			}
		case string(val) != "null":
			err = fmt.Errorf("the member %q would not be carried by a stream", truncateName(name))
		}
	})
	if !ok && err == nil {
		err = errors.New("not a JSON object")
	}
	return err
}

// truncateName bounds a provider's member name in an error.
func truncateName(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}

// deltaOf is a message as a stream delta: the same members, each tool
// call with the index a stream gives it.
func deltaOf(msg json.RawMessage) (json.RawMessage, error) {
	if len(msg) == 0 || string(msg) == "null" {
		return json.RawMessage("{}"), nil
	}
	if !bytes.Contains(msg, []byte(`"tool_calls"`)) {
		return msg, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(msg, &m); err != nil {
		return nil, err
	}
	var calls []map[string]json.RawMessage
	if err := json.Unmarshal(m["tool_calls"], &calls); err != nil {
		return msg, nil // null or another shape: as it is
	}
	for i, c := range calls {
		c["index"] = json.RawMessage(strconv.Itoa(i))
	}
	b, err := json.Marshal(calls)
	if err != nil {
		return nil, err
	}
	m["tool_calls"] = b
	return json.Marshal(m)
}

func orNull(m json.RawMessage) json.RawMessage {
	if len(m) == 0 {
		return json.RawMessage("null")
	}
	return m
}

// ChatStreamToJSON assembles the SSE events of a chat stream, up to its
// [DONE], into the chat.completion they stream: content and refusal
// concatenated, tool calls merged by index (a second id at one index is an
// error: two calls, not one), log probabilities joined,
// finish reasons and usage kept. A chunk member it does not know is an
// error rather than something the answer would silently lose (the cache
// then does not keep the stream), and so is a member named in another
// case or twice (checkChunkNames).
func ChatStreamToJSON(events []byte) ([]byte, error) {
	type toolCall struct {
		Index    int    `json:"-"`
		ID       string `json:"id,omitempty"`
		Type     string `json:"type,omitempty"`
		Function struct {
			Name      string `json:"name,omitempty"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	}
	type message struct {
		Role      string     `json:"role"`
		Content   *string    `json:"content"`
		Refusal   *string    `json:"refusal,omitempty"`
		ToolCalls []toolCall `json:"tool_calls,omitempty"`
	}
	type logprobs struct {
		Content []json.RawMessage `json:"content"`
		Refusal []json.RawMessage `json:"refusal"`
	}
	type choice struct {
		Index        int             `json:"index"`
		Message      message         `json:"message"`
		Logprobs     *logprobs       `json:"logprobs"`
		FinishReason json.RawMessage `json:"finish_reason"`
	}
	var out struct {
		ID                string          `json:"id"`
		Object            string          `json:"object"`
		Created           int64           `json:"created"`
		Model             string          `json:"model"`
		ServiceTier       json.RawMessage `json:"service_tier,omitempty"`
		SystemFingerprint json.RawMessage `json:"system_fingerprint,omitempty"`
		Choices           []*choice       `json:"choices"`
		Usage             json.RawMessage `json:"usage,omitempty"`
	}
	out.Object = "chat.completion"
	// the texts are gathered in byte buffers, each grown by appending, and
	// made strings once at the end: a string concatenated at each chunk
	// would copy all of it each time, quadratic in the stream's length
	type callText struct {
		toolCall
		name, args []byte
	}
	type choiceText struct {
		*choice
		content, refusal       []byte
		hasContent, hasRefusal bool
		calls                  []callText
		callAt                 map[int]int // a tool call's index → its place in calls
	}
	byIndex := map[int]*choiceText{}
	var texts []*choiceText
	r := NewEventReader(bytes.NewReader(events))
	defer r.Release()
	for {
		ev, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		data := EventData(ev)
		if data == nil {
			continue
		}
		if IsDone(data) {
			break // the stream's end: a client reads nothing after it
		}
		if err := checkChunkNames(data); err != nil {
			return nil, err
		}
		var ch struct {
			ID                string          `json:"id"`
			Object            string          `json:"object"`
			Created           int64           `json:"created"`
			Model             string          `json:"model"`
			ServiceTier       json.RawMessage `json:"service_tier"`
			SystemFingerprint json.RawMessage `json:"system_fingerprint"`
			Obfuscation       json.RawMessage `json:"obfuscation"` // padding against length side channels
			Choices           []struct {
				Index int `json:"index"`
				Delta struct {
					Role      string  `json:"role"`
					Content   *string `json:"content"`
					Refusal   *string `json:"refusal"`
					ToolCalls []struct {
						Index int `json:"index"`
						toolCall
					} `json:"tool_calls"`
				} `json:"delta"`
				Logprobs     *logprobs       `json:"logprobs"`
				FinishReason json.RawMessage `json:"finish_reason"`
			} `json:"choices"`
			Usage json.RawMessage `json:"usage"`
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ch); err != nil {
			return nil, err
		}
		if out.ID == "" {
			out.ID, out.Created, out.Model, out.SystemFingerprint = ch.ID, ch.Created, ch.Model, ch.SystemFingerprint
		}
		if len(ch.ServiceTier) > 0 && string(ch.ServiceTier) != "null" {
			out.ServiceTier = ch.ServiceTier
		}
		if len(ch.Usage) > 0 && string(ch.Usage) != "null" {
			out.Usage = ch.Usage
		}
		for _, d := range ch.Choices {
			c := byIndex[d.Index]
			if c == nil {
				c = &choiceText{choice: &choice{Index: d.Index, Message: message{Role: "assistant"}, FinishReason: json.RawMessage("null")}}
				byIndex[d.Index] = c
				texts = append(texts, c)
				out.Choices = append(out.Choices, c.choice)
			}
			if d.Delta.Role != "" {
				c.Message.Role = d.Delta.Role
			}
			if d.Delta.Content != nil {
				c.content = append(c.content, *d.Delta.Content...)
				c.hasContent = true
			}
			if d.Delta.Refusal != nil {
				c.refusal = append(c.refusal, *d.Delta.Refusal...)
				c.hasRefusal = true
			}
			if lp := d.Logprobs; lp != nil {
				if c.Logprobs == nil {
					c.Logprobs = &logprobs{}
				}
				c.Logprobs.Content = append(c.Logprobs.Content, lp.Content...)
				c.Logprobs.Refusal = append(c.Logprobs.Refusal, lp.Refusal...)
			}
			for _, dc := range d.Delta.ToolCalls {
				i, ok := c.callAt[dc.Index]
				if !ok {
					if c.callAt == nil {
						c.callAt = map[int]int{}
					}
					i = len(c.calls)
					c.callAt[dc.Index] = i
					c.calls = append(c.calls, callText{})
				}
				t := &c.calls[i]
				if dc.ID != "" && t.ID != "" && dc.ID != t.ID {
					// another call at the index of one begun (all at 0, or
					// without an index, as Gemini's OpenAI-compatible
					// endpoint and some relays send them): merged, their
					// names and arguments would run together
					return nil, fmt.Errorf("stream chunk: tool calls %q and %q at one index", truncateName(t.ID), truncateName(dc.ID))
				}
				if dc.ID != "" {
					t.ID = dc.ID
				}
				if dc.Type != "" {
					t.Type = dc.Type
				}
				t.name = append(t.name, dc.Function.Name...)
				t.args = append(t.args, dc.Function.Arguments...)
			}
			if len(d.FinishReason) > 0 && string(d.FinishReason) != "null" {
				c.FinishReason = d.FinishReason
			}
		}
	}
	for _, c := range texts {
		if c.hasContent {
			s := string(c.content)
			c.Message.Content = &s
		}
		if c.hasRefusal {
			s := string(c.refusal)
			c.Message.Refusal = &s
		}
		for _, t := range c.calls {
			t.Function.Name, t.Function.Arguments = string(t.name), string(t.args)
			c.Message.ToolCalls = append(c.Message.ToolCalls, t.toolCall)
		}
	}
	slices.SortFunc(out.Choices, func(a, b *choice) int { return a.Index - b.Index })
	return json.Marshal(out)
}

// The members ChatStreamToJSON reads, by object.
var (
	chunkTop      = []string{"id", "object", "created", "model", "service_tier", "system_fingerprint", "obfuscation", "choices", "usage"}
	chunkChoice   = []string{"index", "delta", "logprobs", "finish_reason"}
	chunkDelta    = []string{"role", "content", "refusal", "tool_calls"}
	chunkToolCall = []string{"index", "id", "type", "function"}
	chunkFunction = []string{"name", "arguments"}
	chunkLogprobs = []string{"content", "refusal"}
)

// checkChunkNames refuses a chunk with a member, in an object the assembly
// reads, whose name (decoded) is not exactly one it knows, or that comes
// twice. encoding/json, which then decodes the chunk, matches names
// case-insensitively and keeps the last, where the rest of this package
// and the clients' parsers match them exactly: with names exact and once
// each, every reading agrees. One pass per level of the five it reads:
// linear.
func checkChunkNames(data []byte) error {
	return checkNames(data, chunkTop, func(i int, val []byte) error {
		if chunkTop[i] != "choices" || val[0] != '[' {
			return nil
		}
		return checkElements(val, func(choice []byte) error {
			return checkNames(choice, chunkChoice, func(i int, val []byte) error {
				switch chunkChoice[i] {
				case "logprobs":
					return checkNames(val, chunkLogprobs, nil)
				case "delta":
					return checkNames(val, chunkDelta, func(i int, val []byte) error {
						if chunkDelta[i] != "tool_calls" || val[0] != '[' {
							return nil
						}
						return checkElements(val, func(call []byte) error {
							return checkNames(call, chunkToolCall, func(i int, val []byte) error {
								if chunkToolCall[i] != "function" {
									return nil
								}
								return checkNames(val, chunkFunction, nil)
							})
						})
					})
				}
				return nil
			})
		})
	})
}

// checkNames checks the names of obj's members against names, and each
// value with sub (when not nil); a value that is not an object is left
// to encoding/json.
func checkNames(obj []byte, names []string, sub func(i int, val []byte) error) error {
	if i := skipSpace(obj, 0); i == len(obj) || obj[i] != '{' {
		return nil
	}
	var seen uint32
	var err error
	ForEachMember(obj, func(key, val []byte) {
		if err != nil {
			return
		}
		name := keyName(key)
		i := slices.Index(names, string(name))
		switch {
		case i < 0:
			err = fmt.Errorf("stream chunk: unknown member %q", shown(name))
		case seen&(1<<i) != 0:
			err = fmt.Errorf("stream chunk: member %q appears twice", names[i])
		default:
			seen |= 1 << i
			if sub != nil {
				err = sub(i, val)
			}
		}
	})
	return err
}

// checkElements checks each element of the array arr with check.
func checkElements(arr []byte, check func(elem []byte) error) error {
	var err error
	forEachElement(arr, func(elem []byte) {
		if err == nil {
			err = check(elem)
		}
	})
	return err
}
