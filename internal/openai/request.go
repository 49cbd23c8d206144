package openai

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"io"
	"slices"
	"strconv"
	"strings"
)

// API is the OpenAI API a request is for; the wire format differs by it.
// The values match the root package's endpoints.
type API uint8

const (
	Chat        API = iota + 1 // POST /chat/completions
	Completions                // POST /completions
	Responses                  // POST /responses
	Embeddings                 // POST /embeddings
)

// MaxChoices is the largest "n" a request may ask for, as OpenAI allows.
const MaxChoices = 128

// Error codes of the requests Parse refuses (OpenAI's where it has one).
const (
	CodeInvalidJSON      = "invalid_json"
	CodeInvalidType      = "invalid_type"
	CodeInvalidValue     = "invalid_value"
	CodeDuplicate        = "duplicate_parameter"
	CodeCaseVariant      = "unknown_parameter"
	CodeMissingParameter = "missing_required_parameter"
	CodeUnsupported      = "unsupported_parameter"
)

// Error is a request body the gateway refuses, with what OpenAI's error
// envelope says of it: the member at fault (Param, "" for the whole body),
// a code and a message.
type Error struct {
	Param   string
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

func refuse(param, code, format string, args ...any) *Error {
	return &Error{Param: param, Code: code, Message: fmt.Sprintf(format, args...)}
}

func wrongType(param, want string) *Error {
	return refuse(param, CodeInvalidType, "Invalid type for '%s': expected %s.", param, want)
}

// Request is what the gateway knows of a client's request body, found in
// one validating pass that decodes nothing it does not need.
//
// The members the gateway acts on are read as strictly as the strictest
// provider, so that no provider can read them otherwise: their names are
// compared after decoding escapes, a top-level member that another would
// match case-insensitively (as encoding/json and relays written in Go
// match them) is refused, and so is a member the gateway acts on written
// in another case ("Model"); "stream" must be a boolean, "n" an integer
// from 1 to MaxChoices, the token limits non-negative integers. Every other
// member passes through unread.
type Request struct {
	Raw []byte
	API API

	Model        string  // the model named; "" when absent or null
	Stream       bool    // a streamed answer (never for embeddings)
	IncludeUsage bool    // the client asked for a stream's usage chunk
	N            int64   // answers asked for; 0 when absent
	BestOf       int64   // completions' best_of: answers generated (and billed) to return the N best; 0 when absent
	MaxTokens    int64   // the output limit of the API: the larger of chat's max_completion_tokens and max_tokens, completions' max_tokens, Responses' max_output_tokens (any of them without an API); 0 when absent
	Temperature  float64 // -1 when absent
	HasTools     bool    // tools or functions are given
	JSONMode     bool    // response_format asks for JSON
	// ServiceTier is the service_tier asked for ("" when absent or null):
	// a tier's price may differ from the standard one (priority costs
	// more, flex less)
	ServiceTier string
	// Background is the Responses API's background: the answer is fetched
	// later, from another endpoint, with usage the router never sees
	Background bool
	// Unpriced are the features asked for that a provider bills apart from
	// tokens, which the gateway cannot count: hosted tools by their type as
	// sent (any tool type but function and custom: "web_search_preview",
	// "file_search", "code_interpreter", "image_generation"...),
	// "web_search" for chat's web_search_options, "audio" for audio output
	// (modalities, audio), "plugin_" and its id for each of OpenRouter's
	// plugins ("plugin_web": its web search, billed by the result); nil
	// for none
	Unpriced []string
	// unpricedSet holds Unpriced once it is long (unpriced)
	unpricedSet map[string]struct{}
	// PreviousResponseID is the Responses API's previous_response_id: the
	// stored response this one continues, which only the provider that
	// made it knows; "" when absent or null
	PreviousResponseID string
	// UnseenInput is set when the request makes the provider read input
	// whose size the gateway cannot count: context the provider stores (a
	// Responses API item_reference input item or an item given by its id
	// alone, a reasoning item by its id, a stored prompt, a chat
	// assistant's audio by its id; previous_response_id and conversation
	// are apart), or a document (a file part, a file's data URL), whose
	// pages the provider reads as text and images whatever its bytes. The
	// gateway reserves a bound for it.
	UnseenInput bool
	// StoredItems are the ids of the stored input items the Responses
	// API request names by reference, all of them (a 404 may name any),
	// and StoredPrompt the id of its stored prompt: a 404 naming one is
	// about the request's reference, not the deployment
	StoredItems  []string
	StoredPrompt string
	// Named are the ids of the files, vector stores and containers the
	// request names (a content part's file_id, a hosted tool's
	// vector_store_ids, container or its file_ids), all of them (a 404
	// may name any), which live at one provider account: a 404 naming
	// one is about the request's reference, not the deployment
	Named []NamedID
	// Conversation is the id of the Responses API's conversation (given
	// as its id or as an object with the id): a conversation the provider
	// stored, which only the account that made it knows; "" when absent
	// or null
	Conversation string

	// The input, for routing rules and estimates.
	Messages      int64 // chat messages, Responses input items, prompts, embedding inputs
	TextChars     int64 // characters of all text the model reads (messages, prompts, instructions, a structured output's schema, a completions suffix, a stored prompt's variables): a message's content, and its other members but the role (tool calls, names, reasoning...): their strings' characters, their member names' and numbers' bytes, a data URL counting as the medium it holds
	LastUserChars int64 // characters of the last user message's text
	Images        int64 // image parts
	Audio         int64 // audio parts
	Files         int64 // file parts
	ToolBytes     int64 // bytes of the tool and function definitions
	TokenIDs      int64 // input given as token ids (completions, embeddings)

	model      span // the "model" value, quotes included
	streamOpts span // the "stream_options" value
	// the whole "stream_options" member, with a comma that separates it
	// from a neighbour, for dropping it
	streamOptsMember span
	// where "include_usage":true goes when the client did not ask for it
	usageAt   span
	usageText string
	// the values of the output limit members the API reads, by
	// limitNames' index: where an output cap goes (Upstream)
	limitVals [len(limitNames)]span

	lastUser     span  // the last user message's content (a string or parts)
	lastIsUser   bool  // the last message is the user's (lastUser)
	contentChars int64 // of the message being read
	// textWide is how many more bytes than characters the text counted in
	// TextChars takes in UTF-8: the estimate counts bytes (InputTokens)
	textWide     int64
	system       []span // system and developer messages' content, in order
	systemFirst  [2]span
	instructions span // the Responses API's "instructions"

	scan scanner
}

// nameSet holds the folded names of an object's members, to refuse two
// that a case-insensitive parser would take for one. It lives on Parse's
// stack (the Request, which lives as long as its exchange, stays small),
// and so holds offsets into its buffer rather than slices of it, which
// would move it to the heap.
type nameSet struct {
	buf   [256]byte
	n     int     // bytes of buf in use
	ends  [24]int // where each name ends in buf
	count int
	set   map[uint64]int // for many or long names: hash of a folded name → its key's offset
}

// Parse reads raw, a request body for api, into r. A body that is not a
// JSON object, or that the gateway could read otherwise than a provider,
// is an *Error. An api of 0 reads the members every API shares and
// requires none.
func (r *Request) Parse(raw []byte, api API) error {
	*r = Request{Raw: raw, API: api, Temperature: -1,
		model: absent, streamOpts: absent, streamOptsMember: absent, usageAt: absent,
		lastUser: absent, instructions: absent, limitVals: [len(limitNames)]span{absent, absent, absent}}
	r.system = r.systemFirst[:0]
	var names nameSet

	// the scanner is passed to the readers through function values, which
	// escape analysis cannot follow: kept here, it costs no allocation
	r.scan = scanner{b: raw}
	s := &r.scan
	s.ws()
	if s.i >= len(raw) {
		return refuse("", CodeInvalidJSON, "request body is empty")
	}
	if raw[s.i] != '{' {
		return refuse("", CodeInvalidJSON, "request body must be a JSON object")
	}
	var seen struct{ messages, input, prompt bool }
	commaBefore := -1 // the comma before the member being read, -1 for the first
	err := s.object(0, func(s *scanner, key []byte, keyStart, depth int) error {
		name := keyName(key)
		canon, err := names.check(r.Raw, name, keyStart)
		if err != nil {
			return err
		}
		vstart := s.i
		switch canon {
		case "model":
			err = r.readModel(s)
		case "stream":
			err = readBool(s, &r.Stream, "stream")
		case "stream_options":
			err = r.readStreamOptions(s, depth)
			r.streamOptsMember = span{keyStart, s.i}
			if commaBefore >= 0 {
				r.streamOptsMember.start = commaBefore // dropped with it, unless the one after is
			}
		case "n":
			err = readInt(s, &r.N, "n", 1, MaxChoices)
		case "best_of":
			err = readInt(s, &r.BestOf, "best_of", 0, MaxChoices)
		case "max_tokens", "max_completion_tokens", "max_output_tokens":
			// each is checked whatever the API (a provider that reads it
			// must not be sent what it refuses), but only the API's own
			// set MaxTokens
			var v int64
			switch err = readInt(s, &v, canon, 0, 1<<53); {
			case err != nil:
			case readsLimit(api, canon):
				r.MaxTokens = max(r.MaxTokens, v)
				r.limitVals[slices.Index(limitNames[:], canon)] = span{vstart, s.i}
			case api != 0 && api != Embeddings && s.b[vstart] != 'n':
				// another API's limit, which OpenAI refuses: llama.cpp
				// reads max_completion_tokens before max_tokens on every
				// endpoint, so the limit counted would not bind
				err = refuse(canon, CodeUnsupported,
					"Unsupported parameter: '%s' is not an output limit of this API; use '%s'.", canon, ownLimit(api))
			}
		case "temperature":
			err = r.readTemperature(s)
		case "user":
			err = readString(s, "user")
		case "service_tier":
			if err = readString(s, canon); err == nil && s.b[vstart] == '"' {
				r.ServiceTier = strings.Clone(text(s.b[vstart:s.i]))
			}
		case "background":
			err = readBool(s, &r.Background, canon)
		case "previous_response_id":
			if err = readString(s, canon); err == nil && api == Responses && s.b[vstart] == '"' {
				r.PreviousResponseID = strings.Clone(text(s.b[vstart:s.i]))
			}
		case "conversation":
			err = r.readConversation(s, depth)
		case "tools", "functions":
			err = r.readTools(s, canon, depth)
		case "models", "route", "provider", "preset", "fallbacks", "context_window_fallbacks", "mock_testing_fallbacks", "user_config":
			err = refuse(canon, CodeUnsupported,
				"Unsupported parameter: '%s' chooses the model (or provider) another gateway serves; this gateway chooses it, by 'model' and its routes, and bills what it chose.", canon)
		case "n_predict", "n_cmpl":
			// llama.cpp's server reads these before max_tokens and n (it
			// passes a chat body's other members through to them): the
			// output cap the router adds and the answers it counts would
			// not bind
			err = refuse(canon, CodeUnsupported,
				"Unsupported parameter: '%s' is llama.cpp's own %s, which a provider running llama.cpp reads before OpenAI's; use OpenAI's.", canon, llamaNames[canon])
		case "web_search_options", "audio":
			if err = s.value(depth); err == nil && s.b[vstart] != 'n' {
				feature := "audio"
				if canon == "web_search_options" {
					feature = "web_search"
				}
				r.unpriced(feature)
			}
		case "search_parameters":
			err = r.readSearchParameters(s, depth)
		case "modalities":
			err = r.readModalities(s, depth)
		case "plugins":
			err = r.readPlugins(s, depth)
		case "response_format":
			err = r.readResponseFormat(s, depth)
		case "messages":
			seen.messages = s.b[s.i] == '['
			if api == Chat {
				err = r.readMessages(s, "messages", depth)
			} else {
				err = s.value(depth)
			}
		case "input":
			seen.input = s.b[s.i] != 'n'
			switch api {
			case Responses:
				err = r.readResponsesInput(s, depth)
			case Embeddings:
				err = r.readPrompts(s, "input", depth)
			default:
				err = s.value(depth)
			}
		case "prompt":
			seen.prompt = s.b[s.i] != 'n'
			switch api {
			case Completions:
				err = r.readPrompts(s, "prompt", depth)
			case Responses:
				// a stored prompt, named; its variables are text the
				// model reads
				err = r.readStoredPrompt(s, depth)
				r.UnseenInput = r.UnseenInput || seen.prompt
			default:
				err = s.value(depth)
			}
		case "text", "suffix":
			// text the model reads, billed as input: the Responses API's
			// text.format (a structured output's schema), completions'
			// suffix; counted as a message's other members are
			if api == Responses && canon == "text" || api == Completions && canon == "suffix" {
				err = r.readOther(s, depth)
			} else {
				err = s.value(depth)
			}
		case "instructions":
			if api == Responses && s.b[s.i] == '"' {
				if err = s.str(); err == nil {
					r.instructions = span{vstart, s.i}
					r.TextChars += s.chars
					r.textWide += s.wide
				}
			} else {
				err = s.value(depth)
			}
		default:
			err = s.value(depth)
		}
		if err != nil {
			return err
		}
		commaBefore = -1
		if j := skipSpace(s.b, s.i); j < len(s.b) && s.b[j] == ',' {
			commaBefore = j // the next member's
			if canon == "stream_options" {
				r.streamOptsMember = span{keyStart, j + 1} // the member and the comma after it
			}
		}
		return nil
	})
	if err != nil {
		if e, ok := err.(*Error); ok {
			return e
		}
		return refuse("", CodeInvalidJSON, "request body is not valid JSON: %v", err)
	}
	s.ws()
	if s.i != len(raw) {
		return refuse("", CodeInvalidJSON, "request body is not valid JSON: unexpected data after the top-level object at byte %d", s.i)
	}
	switch api {
	case Chat:
		if !seen.messages {
			return refuse("messages", CodeMissingParameter, "'messages' is a required property and must be an array")
		}
	case Completions:
		if !seen.prompt {
			return refuse("prompt", CodeMissingParameter, "'prompt' is a required property")
		}
	case Embeddings:
		if !seen.input {
			return refuse("input", CodeMissingParameter, "'input' is a required property")
		}
		r.Stream = false
	case Responses:
		// not a parameter of the API (OpenAI refuses it): a provider that
		// ignores it makes one answer, one that honours it several, and
		// the gateway could not tell which it bills
		if r.N > 1 {
			return refuse("n", CodeUnsupported, "Unsupported parameter: 'n' is not a parameter of the Responses API, which makes one answer a request.")
		}
	}
	if r.Stream && (api == Chat || api == Completions) {
		r.planIncludeUsage()
	}
	return nil
}

// Generations is how many answers the provider generates, and bills, for
// the request: n (completions' best_of when larger) for each prompt of a
// completions request, whose prompt may be a list; one for a Responses
// API request, which has no n (a provider that takes one ignores it).
func (r *Request) Generations() int64 {
	if r.API == Responses {
		return 1
	}
	g := max(r.N, 1)
	if r.API == Completions {
		g = max(g, r.BestOf) * max(r.Messages, 1) // Messages counts its prompts
	}
	return g
}

// limitNames are the output limit members, of every API.
var limitNames = [...]string{"max_tokens", "max_completion_tokens", "max_output_tokens"}

// readsLimit reports whether api reads the output limit member name: chat
// max_completion_tokens and (deprecated) max_tokens, completions
// max_tokens, Responses max_output_tokens, embeddings none. Without an API
// (0) any of them.
func readsLimit(api API, name string) bool {
	switch api {
	case 0:
		return true
	case Chat:
		return name == "max_completion_tokens" || name == "max_tokens"
	case Completions:
		return name == "max_tokens"
	case Responses:
		return name == "max_output_tokens"
	}
	return false
}

// llamaNames says what llama.cpp's own members stand for.
var llamaNames = map[string]string{
	"n_predict": "output limit (max_tokens)",
	"n_cmpl":    "answer count (n)",
}

// ownLimit names api's output limit members, for a message.
func ownLimit(api API) string {
	switch api {
	case Chat:
		return "max_completion_tokens' or 'max_tokens"
	case Completions:
		return "max_tokens"
	}
	return "max_output_tokens"
}

// actedOn are the top-level members the gateway reads, by folded name.
var actedOn = func() map[string]string {
	m := map[string]string{}
	for _, n := range []string{"model", "stream", "stream_options", "n", "messages", "input", "prompt",
		"instructions", "text", "suffix", "tools", "functions", "response_format", "max_tokens", "max_completion_tokens",
		"max_output_tokens", "temperature", "user", "previous_response_id", "conversation", "service_tier", "background", "best_of", "web_search_options", "audio", "modalities",
		"plugins", "models", "route", "provider", "preset", "fallbacks", "context_window_fallbacks", "mock_testing_fallbacks", "user_config",
		"n_predict", "n_cmpl", "search_parameters"} {
		m[string(appendFold(nil, []byte(n)))] = n
	}
	return m
}()

// check refuses a top-level member that another one would be to a
// case-insensitive parser, and a member the gateway acts on written in
// another case; it returns the name of a member the gateway acts on, ""
// for any other. keyStart is the offset of the key's opening quote.
func (ns *nameSet) check(raw, name []byte, keyStart int) (string, error) {
	f := appendFold(ns.buf[ns.n:ns.n], name) // in buf when it fits, else new
	canon := actedOn[string(f)]
	dup := false
	if ns.set == nil && ns.count < len(ns.ends) && ns.n+len(f) <= len(ns.buf) {
		from := 0
		for _, end := range ns.ends[:ns.count] {
			if bytes.Equal(ns.buf[from:end], f) {
				dup = true
				break
			}
			from = end
		}
		ns.n += len(f)
		ns.ends[ns.count] = ns.n
		ns.count++
	} else {
		if ns.set == nil {
			// many or long names: a set of hashes from here on, so that
			// the check stays linear (and small)
			ns.set = make(map[uint64]int, 4*ns.count)
			from := 0
			for _, end := range ns.ends[:ns.count] {
				ns.set[maphash.Bytes(foldSeed, ns.buf[from:end])] = -1
				from = end
			}
		}
		h := maphash.Bytes(foldSeed, f)
		if at, seen := ns.set[h]; seen {
			// the same hash: the same name, or (almost never) a
			// collision, refused too rather than risk missing a
			// duplicate; names seen before the set hold -1
			dup = true
			if at >= 0 && !bytes.Equal(appendFold(nil, keyName(keyAt(raw, at))), f) {
				return "", refuse(shown(name), CodeDuplicate, "The request body has too many members to check for duplicates.")
			}
		}
		ns.set[h] = keyStart
	}
	if dup {
		return "", refuse(shown(name), CodeDuplicate,
			"The request body has the member '%s' twice (member names that differ only in case, or in escapes, are the same member to some providers).", shown(name))
	}
	if canon != "" && canon != string(name) {
		return "", refuse(shown(name), CodeCaseVariant,
			"Unknown parameter '%s': member names are case-sensitive; did you mean '%s'?", shown(name), canon)
	}
	return canon, nil
}

// foldSeed keys the hashes of member names: unknown to clients, so that
// none can make two names collide on purpose.
var foldSeed = maphash.MakeSeed()

// keyAt is the raw name of the key whose opening quote is at i.
func keyAt(raw []byte, i int) []byte {
	s := scanner{b: raw, i: i}
	_ = s.str()
	return raw[i+1 : s.i-1]
}

// shown is a member name as an error message repeats it: at most 64 bytes.
func shown(name []byte) string {
	if len(name) > 64 {
		return string(name[:64]) + "…"
	}
	return string(name)
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

func (r *Request) readModel(s *scanner) error {
	start := s.i
	switch s.b[s.i] {
	case '"':
		if err := s.str(); err != nil {
			return err
		}
		// a copy: the name outlives the body (metric labels)
		r.Model = strings.Clone(text(s.b[start:s.i]))
	case 'n': // null is as if absent (the edit replaces it)
		if err := s.literal("null"); err != nil {
			return err
		}
	default:
		return wrongType("model", "a string")
	}
	r.model = span{start, s.i}
	return nil
}

// readBool reads a boolean (or null: false).
func readBool(s *scanner, v *bool, param string) error {
	switch s.b[s.i] {
	case 't':
		*v = true
		return s.literal("true")
	case 'f':
		*v = false
		return s.literal("false")
	case 'n':
		*v = false
		return s.literal("null")
	}
	return wrongType(param, "a boolean")
}

// readInt reads an integer from lo to hi (or null: 0), written as one.
func readInt(s *scanner, v *int64, param string, lo, hi int64) error {
	start := s.i
	c := s.b[s.i]
	if c == 'n' {
		*v = 0
		return s.literal("null")
	}
	if c != '-' && !isDigit(c) {
		return wrongType(param, "an integer")
	}
	if err := s.number(); err != nil {
		return err
	}
	lit := s.b[start:s.i]
	if bytes.ContainsAny(lit, ".eE") {
		return wrongType(param, "an integer")
	}
	n, err := strconv.ParseInt(string(lit), 10, 64)
	if err != nil || n < lo {
		return refuse(param, CodeInvalidValue, "Invalid '%s': expected an integer of at least %d, got %s.", param, lo, shown(lit))
	}
	if n > hi {
		return refuse(param, CodeInvalidValue, "Invalid '%s': expected an integer of at most %d, got %s.", param, hi, shown(lit))
	}
	*v = n
	return nil
}

func readString(s *scanner, param string) error {
	switch s.b[s.i] {
	case '"':
		return s.str()
	case 'n':
		return s.literal("null")
	}
	return wrongType(param, "a string")
}

func (r *Request) readTemperature(s *scanner) error {
	start := s.i
	c := s.b[s.i]
	if c == 'n' {
		return s.literal("null")
	}
	if c != '-' && !isDigit(c) {
		return wrongType("temperature", "a number")
	}
	if err := s.number(); err != nil {
		return err
	}
	t, err := strconv.ParseFloat(string(s.b[start:s.i]), 64)
	if err != nil {
		return refuse("temperature", CodeInvalidValue, "Invalid 'temperature': %s is out of range.", shown(s.b[start:s.i]))
	}
	r.Temperature = t
	return nil
}

// readStreamOptions reads "stream_options": an object or null, whose
// include_usage is a boolean.
func (r *Request) readStreamOptions(s *scanner, depth int) error {
	r.streamOpts = span{s.i, -1}
	defer func() { r.streamOpts.end = s.i }()
	switch s.b[s.i] {
	case 'n':
		return s.literal("null")
	case '{':
	default:
		return wrongType("stream_options", "an object")
	}
	var names memberNames
	return s.object(depth, func(s *scanner, key []byte, _, depth int) error {
		switch names.check(keyName(key), "stream_options.", "include_usage") {
		case 0:
			if err := readBool(s, &r.IncludeUsage, "stream_options.include_usage"); err != nil {
				return err
			}
			return nil
		case -1:
			return s.value(depth)
		}
		return names.err
	})
}

// readConversation reads the Responses API's conversation: its id, or an
// object whose "id" is.
func (r *Request) readConversation(s *scanner, depth int) error {
	start := s.i
	switch s.b[s.i] {
	case 'n':
		return s.literal("null")
	case '"':
		err := s.str()
		if err == nil && r.API == Responses {
			r.Conversation = strings.Clone(text(s.b[start:s.i]))
		}
		return err
	case '{':
	default:
		return wrongType("conversation", "a string or an object")
	}
	var names memberNames
	return s.object(depth, func(s *scanner, key []byte, _, depth int) error {
		switch names.check(keyName(key), "conversation.", "id") {
		case 0:
			vstart := s.i
			if err := readString(s, "conversation.id"); err != nil {
				return err
			}
			if r.API == Responses && s.b[vstart] == '"' {
				r.Conversation = strings.Clone(text(s.b[vstart:s.i]))
			}
			return nil
		case -1:
			return s.value(depth)
		}
		return names.err
	})
}

// memberNames checks the members of a nested object the gateway reads:
// each name it acts on once, in its own case.
type memberNames struct {
	seen uint32
	err  error
}

// check returns the index of name among known, -1 for a name not known,
// -2 (with err set) for a second or case-variant one.
func (m *memberNames) check(name []byte, prefix string, known ...string) int {
	for i, k := range known {
		if len(name) < len(k)/3 || !equalFold(name, []byte(k)) {
			continue
		}
		if string(name) != k {
			m.err = refuse(prefix+shown(name), CodeCaseVariant,
				"Unknown parameter '%s%s': member names are case-sensitive; did you mean '%s%s'?", prefix, shown(name), prefix, k)
			return -2
		}
		if m.seen&(1<<i) != 0 {
			m.err = refuse(prefix+k, CodeDuplicate, "'%s%s' appears twice.", prefix, k)
			return -2
		}
		m.seen |= 1 << i
		return i
	}
	return -1
}

func (r *Request) readTools(s *scanner, param string, depth int) error {
	start := s.i
	if null, err := nullOrArray(s, param); null || err != nil {
		return err
	}
	n := 0
	err := s.array(depth, func(s *scanner, i, depth int) error {
		n++
		if s.b[s.i] != '{' || param != "tools" {
			return s.value(depth) // a legacy function, or what the provider refuses
		}
		var names memberNames
		const prefix = "tools[]." // the index goes in only on an error: no allocation per tool
		err := s.object(depth, func(s *scanner, key []byte, _, depth int) error {
			switch names.check(keyName(key), prefix, "type") {
			case 0:
				vstart := s.i
				if err := readString(s, prefix+"type"); err != nil || s.b[vstart] != '"' {
					return err
				}
				if t := text(s.b[vstart:s.i]); t != "function" && t != "custom" {
					r.unpriced(strings.Clone(t))
				}
				return nil
			case -1:
				start := s.i
				if err := s.value(depth); err != nil {
					return err
				}
				r.noteNamedIn(key, s.b[start:s.i], "tools")
				return nil
			}
			return names.err
		})
		return atIndex(err, prefix, "tools", i)
	})
	r.HasTools = r.HasTools || n > 0
	r.ToolBytes += int64(s.i - start)
	return err
}

// nullOrArray reads a member that is null (null: nothing else to read)
// or checks that it is an array, which the caller reads.
func nullOrArray(s *scanner, param string) (null bool, err error) {
	switch s.b[s.i] {
	case 'n':
		return true, s.literal("null")
	case '[':
		return false, nil
	}
	return false, wrongType(param, "an array")
}

// readModalities reads the output modalities: "audio" among them is
// unpriced.
func (r *Request) readModalities(s *scanner, depth int) error {
	if null, err := nullOrArray(s, "modalities"); null || err != nil {
		return err
	}
	return s.array(depth, func(s *scanner, i, depth int) error {
		vstart := s.i
		if s.b[s.i] != '"' {
			return wrongType("modalities["+strconv.Itoa(i)+"]", "a string")
		}
		if err := s.str(); err != nil {
			return err
		}
		if text(s.b[vstart:s.i]) == "audio" {
			r.unpriced("audio")
		}
		return nil
	})
}

// readSearchParameters reads xAI's search_parameters, which turn on its
// Live Search, billed by the source apart from tokens ("live_search"),
// unless their mode is "off" (its default is "auto").
func (r *Request) readSearchParameters(s *scanner, depth int) error {
	switch s.b[s.i] {
	case 'n':
		return s.literal("null")
	case '{':
	default:
		r.unpriced("live_search") // what a provider makes of it is its own
		return s.value(depth)
	}
	off := false
	var names memberNames
	err := s.object(depth, func(s *scanner, key []byte, _, depth int) error {
		switch names.check(keyName(key), "search_parameters.", "mode") {
		case 0:
			vstart := s.i
			if err := readString(s, "search_parameters.mode"); err != nil {
				return err
			}
			off = s.b[vstart] == '"' && text(s.b[vstart:s.i]) == "off"
			return nil
		case -1:
			return s.value(depth)
		}
		return names.err
	})
	if err == nil && !off {
		r.unpriced("live_search")
	}
	return err
}

// readPlugins reads OpenRouter's plugins, which it bills apart from tokens
// (the web plugin by the search result, the file parser's OCR by the
// page): each is unpriced as "plugin_" and its id, one without an id as
// "plugin" (what OpenRouter would make of it is its own).
func (r *Request) readPlugins(s *scanner, depth int) error {
	if null, err := nullOrArray(s, "plugins"); null || err != nil {
		return err
	}
	return s.array(depth, func(s *scanner, i, depth int) error {
		if s.b[s.i] != '{' {
			r.unpriced("plugin")
			return s.value(depth)
		}
		id := ""
		var names memberNames
		const prefix = "plugins[]."
		err := s.object(depth, func(s *scanner, key []byte, _, depth int) error {
			switch names.check(keyName(key), prefix, "id") {
			case 0:
				vstart := s.i
				if err := s.value(depth); err != nil {
					return err
				}
				if s.b[vstart] == '"' {
					id = strings.Clone(text(s.b[vstart:s.i]))
				}
				return nil
			case -1:
				return s.value(depth)
			}
			return names.err
		})
		err = atIndex(err, prefix, "plugins", i)
		if err == nil {
			if id == "" {
				r.unpriced("plugin")
			} else {
				r.unpriced("plugin_" + id)
			}
		}
		return err
	})
}

// atIndex names the array element i of member in err, an error about one
// of its members named as prefix (member + "[]."): "tools[3].type" rather
// than "tools[].type".
func atIndex(err error, prefix, member string, i int) error {
	if e, ok := err.(*Error); ok && strings.HasPrefix(e.Param, prefix) {
		at := member + "[" + strconv.Itoa(i) + "]."
		e.Param = at + e.Param[len(prefix):]
		e.Message = strings.ReplaceAll(e.Message, prefix, at)
	}
	return err
}

// unpriced adds feature to Unpriced, once. A body may name thousands of
// distinct tool types or plugin ids: past a few, a set keeps the cost of
// each addition constant (a search of the list made the parse quadratic,
// minutes of CPU for a body of a few MB).
func (r *Request) unpriced(feature string) {
	if r.unpricedSet == nil {
		if len(r.Unpriced) < unpricedListMax {
			if !slices.Contains(r.Unpriced, feature) {
				r.Unpriced = append(r.Unpriced, feature)
			}
			return
		}
		r.unpricedSet = make(map[string]struct{}, 2*len(r.Unpriced))
		for _, f := range r.Unpriced {
			r.unpricedSet[f] = struct{}{}
		}
	}
	if _, ok := r.unpricedSet[feature]; !ok {
		r.unpricedSet[feature] = struct{}{}
		r.Unpriced = append(r.Unpriced, feature)
	}
}

// unpricedListMax is how many unpriced features are searched as a list
// before a set takes over.
const unpricedListMax = 16

func (r *Request) readResponseFormat(s *scanner, depth int) error {
	switch s.b[s.i] {
	case 'n':
		return s.literal("null")
	case '{':
	default:
		return wrongType("response_format", "an object")
	}
	var names memberNames
	return s.object(depth, func(s *scanner, key []byte, _, depth int) error {
		switch names.check(keyName(key), "response_format.", "type") {
		case 0:
			start := s.i
			if err := readString(s, "response_format.type"); err != nil {
				return err
			}
			// decoded, as a provider reads it ("json_\u006fbject")
			switch text(s.b[start:s.i]) {
			case "json_object", "json_schema":
				r.JSONMode = true
			}
			return nil
		case -1:
			// json_schema: the schema is part of the prompt the
			// provider bills, as tool definitions are
			r.TextChars += int64(len(key))
			return r.readOther(s, depth)
		}
		return names.err
	})
}

// readMessages reads chat messages: an array of message objects.
func (r *Request) readMessages(s *scanner, param string, depth int) error {
	if s.b[s.i] != '[' {
		return wrongType(param, "an array")
	}
	return s.array(depth, func(s *scanner, i, depth int) error {
		if s.b[s.i] != '{' {
			return wrongType(param+"["+strconv.Itoa(i)+"]", "an object")
		}
		return r.readMessage(s, param, i, depth)
	})
}

// readMessage reads one message (or Responses input item): its role, its
// content, a text or parts, and the size of its other members.
func (r *Request) readMessage(s *scanner, param string, i, depth int) error {
	r.Messages++
	var role, content, typ span = absent, absent, absent
	var names memberNames
	known, hasID, sealed := messageMembers, false, false
	id := absent
	if param == "input" {
		known = itemMembers
	}
	err := s.object(depth, func(s *scanner, key []byte, _, depth int) error {
		switch names.check(keyName(key), "", known...) {
		case 2: // a Responses item's type, read as text too
			start := s.i
			err := r.readOther(s, depth)
			typ = span{start, s.i}
			return err
		case 3: // a Responses item's id
			hasID = s.b[s.i] == '"'
			start := s.i
			err := r.readOther(s, depth)
			id = span{start, s.i}
			return err
		case 4: // a reasoning item's own content
			sealed = s.b[s.i] == '"'
			return r.readOther(s, depth)
		case 0:
			start := s.i
			if c := s.b[s.i]; c != '"' && c != 'n' {
				return wrongType(param+"["+strconv.Itoa(i)+"].role", "a string")
			}
			if err := readString(s, ""); err != nil {
				return err
			}
			role = span{start, s.i}
			return nil
		case 1:
			start := s.i
			if err := r.readContent(s, param, i, depth); err != nil {
				return err
			}
			content = span{start, s.i}
			return nil
		case -1:
			if param == "messages" && s.b[s.i] == '{' && equalFold(keyName(key), []byte("audio")) {
				// an assistant's audio by its id: the provider reads the
				// stored audio back, at a size the body does not show
				r.UnseenInput = true
			}
			// any other member (tool calls and their arguments, a name,
			// reasoning, a Responses item's output, a member no API
			// defines) may be text the model reads: counted too
			return r.readOther(s, depth)
		}
		return names.err
	})
	if err != nil {
		return err
	}
	if param == "input" {
		// a stored item the provider reads: an item_reference, its type
		// given or not (an item of an id alone), or a reasoning item by
		// its id, without its encrypted_content (a stored response's
		// reasoning, which the provider reads back)
		switch t := text(s.b[max(typ.start, 0):max(typ.end, 0)]); {
		case t == "item_reference", t == "" && !given(s.b, role) && !given(s.b, content) && hasID,
			t == "reasoning" && hasID && !sealed:
			r.UnseenInput = true
			if hasID {
				r.StoredItems = append(r.StoredItems, strings.Clone(text(s.b[id.start:id.end])))
			}
		}
	}
	if !content.ok() {
		return nil
	}
	r.lastIsUser = false
	// decoded, as a provider reads it ("us\u0065r" is the user)
	switch text(s.b[max(role.start, 0):max(role.end, 0)]) {
	case "user":
		r.lastUser, r.lastIsUser = content, true
		r.LastUserChars = r.contentChars
	case "system", "developer":
		r.system = append(r.system, content)
	}
	return nil
}

// readStoredPrompt reads the Responses API's prompt, a stored prompt by
// its id, counted as a message's other members are (its variables are
// text the model reads), and its id (StoredPrompt), read strictly as
// conversation's is: a 404 is matched against it and it keeps the request
// from being hedged, so an "Id" (encoding/json's id) or a second id (a
// first-wins parser's) must not pass unread.
func (r *Request) readStoredPrompt(s *scanner, depth int) error {
	if s.b[s.i] != '{' {
		return r.readOther(s, depth)
	}
	var names memberNames
	return s.object(depth, func(s *scanner, key []byte, _, depth int) error {
		r.TextChars += int64(len(key))
		start := s.i
		switch names.check(keyName(key), "prompt.", "id") {
		case 0:
			if err := readString(s, "prompt.id"); err != nil {
				return err
			}
			if s.b[start] == '"' {
				r.TextChars += s.chars
				r.textWide += s.wide
				r.StoredPrompt = strings.Clone(text(s.b[start:s.i]))
			}
			return nil
		case -1:
			return r.readOther(s, depth)
		}
		return names.err
	})
}

// NamedID is an id of something stored at the provider that the request
// names (Request.Named).
type NamedID struct {
	ID    string
	Kind  string // "file", "vector_store" or "container"
	Param string // the request's member it is in: "messages", "input" or "tools"
}

// noteNamed adds the ids in val, a string or an array of strings, to
// Named: kind of thing, named in the request's member param.
func (r *Request) noteNamed(val []byte, kind, param string) {
	add := func(v []byte) {
		if len(v) > 0 && v[0] == '"' {
			r.Named = append(r.Named, NamedID{ID: strings.Clone(text(v)), Kind: kind, Param: param})
		}
	}
	if len(val) > 0 && val[0] == '[' {
		forEachElement(val, add)
		return
	}
	add(val)
}

// noteNamedIn adds to Named the ids a tool or a content part names in
// its member key of value val, whichever case the key is in (any is read
// by some provider): a file_id, a file with its file_id (chat's file
// part), vector_store_ids (file_search), a container by its id or with
// file_ids (code_interpreter).
func (r *Request) noteNamedIn(key, val []byte, param string) {
	k := keyName(key)
	if r.noteIDs(k, val, param) || (!equalFold(k, []byte("file")) && !equalFold(k, []byte("container"))) {
		return
	}
	if val[0] == '{' {
		// its ids one level down, no deeper (where the file part and the
		// container have them): a file in a file... read again at each
		// level made the scan quadratic in the nesting
		ForEachMember(val, func(key, val []byte) { r.noteIDs(keyName(key), val, param) })
	} else if equalFold(k, []byte("container")) {
		r.noteNamed(val, "container", param)
	}
}

// noteIDs adds to Named the ids of a member named k (decoded) that holds
// file or vector store ids, and reports whether it is one.
func (r *Request) noteIDs(k, val []byte, param string) bool {
	switch {
	case equalFold(k, []byte("file_id")), equalFold(k, []byte("file_ids")):
		r.noteNamed(val, "file", param)
	case equalFold(k, []byte("vector_store_ids")):
		r.noteNamed(val, "vector_store", param)
	default:
		return false
	}
	return true
}

// given reports whether a member's value v is there and not null: a
// provider may read a null member as an absent one.
func given(b []byte, v span) bool { return v.ok() && b[v.start] != 'n' }

// The members of a message, and of a Responses API input item, that the
// gateway reads (memberNames.check).
var (
	messageMembers = []string{"role", "content"}
	itemMembers    = []string{"role", "content", "type", "id", "encrypted_content"}
)

// readOther reads the value of a message's member other than its role and
// content (tool calls and their arguments, a name, reasoning, a Responses
// item's output, a member no API defines), in the same pass, and counts the
// text in it as the model may read it: a string's characters, and in an
// object or array, each string's, each member name's bytes and each
// number's or literal's (null aside). A data URL is not text but the
// medium it holds, counted as a content part of its kind is (a screenshot
// in a tool's output is an image, not a megabyte of text).
func (r *Request) readOther(s *scanner, depth int) error {
	start := s.i
	switch s.b[s.i] {
	case '"':
		if err := s.str(); err != nil {
			return err
		}
		switch v := s.b[start+1 : s.i-1]; {
		case !bytes.HasPrefix(v, []byte("data:")):
			r.TextChars += s.chars
			r.textWide += s.wide
		case bytes.HasPrefix(v[5:], []byte("image/")):
			r.Images++
		case bytes.HasPrefix(v[5:], []byte("audio/")):
			r.Audio++
		default:
			r.Files++
			r.UnseenInput = true
		}
		return nil
	case '{':
		// an object of type file or input_file is a document (a tool's
		// output in parts, as the Responses API's function_call_output
		// may be): read by the provider page by page, as a file part is
		document, files := false, r.Files
		err := s.object(depth, func(s *scanner, key []byte, _, depth int) error {
			r.TextChars += int64(len(key))
			vstart := s.i
			err := r.readOther(s, depth)
			if err == nil && s.b[vstart] == '"' && equalFold(keyName(key), []byte("type")) {
				t := text(s.b[vstart:s.i])
				document = document || t == "file" || t == "input_file"
			}
			return err
		})
		if err == nil && document {
			r.Files = max(r.Files, files+1) // once, its data URL counted or not
			r.UnseenInput = true
		}
		return err
	case '[':
		return s.array(depth, func(s *scanner, _, depth int) error {
			return r.readOther(s, depth)
		})
	case 'n':
		return s.literal("null")
	}
	err := s.value(depth)
	r.TextChars += int64(s.i - start)
	return err
}

// readContent reads a message's content: a string, parts or null; it sets
// contentChars to the characters of its text.
func (r *Request) readContent(s *scanner, param string, i, depth int) error {
	r.contentChars = 0
	switch s.b[s.i] {
	case '"':
		if err := s.str(); err != nil {
			return err
		}
		r.contentChars = s.chars
		r.textWide += s.wide
	case '[':
		if err := s.array(depth, func(s *scanner, j, depth int) error {
			if s.b[s.i] != '{' {
				return wrongType(param+"["+strconv.Itoa(i)+"].content["+strconv.Itoa(j)+"]", "an object")
			}
			return r.readPart(s, param, depth)
		}); err != nil {
			return err
		}
	default:
		if err := s.value(depth); err != nil {
			return err
		}
	}
	r.TextChars += r.contentChars
	return nil
}

// readPart reads one content part of a message in param: its type, its
// text when it has one, and the ids it names (Named).
func (r *Request) readPart(s *scanner, param string, depth int) error {
	var typ span = absent
	var names memberNames
	err := s.object(depth, func(s *scanner, key []byte, _, depth int) error {
		switch names.check(keyName(key), "", "type", "text") {
		case 0:
			start := s.i
			if err := s.value(depth); err != nil {
				return err
			}
			typ = span{start, s.i}
			return nil
		case 1:
			start := s.i
			if err := s.value(depth); err != nil {
				return err
			}
			if s.b[start] == '"' {
				r.contentChars += s.chars
				r.textWide += s.wide
			}
			return nil
		case -1:
			start := s.i
			if err := s.value(depth); err != nil {
				return err
			}
			// a refusal part (an assistant's, sent back) is text too
			if s.b[start] == '"' && equalFold(keyName(key), []byte("refusal")) {
				r.contentChars += s.chars
				r.textWide += s.wide
			}
			r.noteNamedIn(key, s.b[start:s.i], param)
			return nil
		}
		return names.err
	})
	if err == nil && typ.ok() {
		t := s.b[typ.start:typ.end]
		if t[0] == '"' && bytes.IndexByte(t, '\\') >= 0 {
			t = []byte(text(t)) // "\u0069mage_url" is an image
		}
		switch {
		case bytes.Contains(t, []byte("image")):
			r.Images++
		case bytes.Contains(t, []byte("audio")):
			r.Audio++
		case bytes.Contains(t, []byte("file")):
			r.Files++
			r.UnseenInput = true
		}
	}
	return err
}

// readResponsesInput reads the Responses API's input: a text (one user
// message) or items.
func (r *Request) readResponsesInput(s *scanner, depth int) error {
	switch s.b[s.i] {
	case '"':
		return r.readUserText(s)
	case '[':
		return s.array(depth, func(s *scanner, i, depth int) error {
			if s.b[s.i] != '{' {
				return wrongType("input["+strconv.Itoa(i)+"]", "an object")
			}
			return r.readMessage(s, "input", i, depth)
		})
	case 'n':
		return s.literal("null")
	}
	return wrongType("input", "a string or an array")
}

// readPrompts reads completions' prompt or embeddings' input: a text, or
// texts, token ids or arrays of token ids.
func (r *Request) readPrompts(s *scanner, param string, depth int) error {
	switch s.b[s.i] {
	case '"':
		return r.readUserText(s)
	case 'n':
		return s.literal("null")
	case '[':
	default:
		return wrongType(param, "a string or an array")
	}
	return s.array(depth, func(s *scanner, i, depth int) error {
		switch c := s.b[s.i]; {
		case c == '"':
			return r.readUserText(s)
		case c == '[':
			r.Messages++
			return s.array(depth, func(s *scanner, _, depth int) error {
				r.TokenIDs++
				return s.value(depth)
			})
		case c == '-' || isDigit(c):
			r.TokenIDs++
			return s.number()
		}
		return wrongType(param+"["+strconv.Itoa(i)+"]", "a string, a token id or an array of token ids")
	})
}

// readUserText reads a text given bare (a prompt, an input): one user
// message.
func (r *Request) readUserText(s *scanner) error {
	start := s.i
	if err := s.str(); err != nil {
		return err
	}
	r.Messages++
	r.lastUser = span{start, s.i}
	r.LastUserChars = s.chars
	r.TextChars += r.LastUserChars
	r.textWide += s.wide
	return nil
}

// planIncludeUsage works out the smallest edit that makes the upstream send
// a usage chunk when the client did not ask for one.
func (r *Request) planIncludeUsage() {
	raw := r.Raw
	if r.IncludeUsage {
		return
	}
	if !r.streamOpts.ok() {
		// insert a member right after the top-level '{'; the object is not
		// empty (it has "stream"), so a trailing comma is always right.
		open := skipSpace(raw, 0)
		r.usageAt = span{open + 1, open + 1}
		r.usageText = `"stream_options":{"include_usage":true},`
		return
	}
	if raw[r.streamOpts.start] != '{' { // null: replace it
		r.usageAt = r.streamOpts
		r.usageText = `{"include_usage":true}`
		return
	}
	// an include_usage that is false or null: replace its value
	s := scanner{b: raw, i: r.streamOpts.start}
	empty, err := s.open(1, '}')
	for more := !empty; more && err == nil; {
		var key []byte
		if key, _, err = s.key(); err != nil {
			break
		}
		start := s.i
		if err = s.value(2); err == nil {
			if string(keyName(key)) == "include_usage" {
				r.usageAt = span{start, s.i}
				r.usageText = "true"
			}
			more, err = s.next('}')
		}
	}
	if r.usageAt.ok() {
		return
	}
	at := r.streamOpts.start + 1
	r.usageAt = span{at, at}
	if raw[skipSpace(raw, at)] == '}' {
		r.usageText = `"include_usage":true`
	} else {
		r.usageText = `"include_usage":true,`
	}
}

// StripUsage reports whether a usage-only chunk of the answer must not
// reach the client: a chat or completions stream whose client did not ask
// for usage (the gateway asks on its behalf, or the provider sends it
// unasked).
func (r *Request) StripUsage() bool {
	return r.Stream && !r.IncludeUsage && (r.API == Chat || r.API == Completions)
}

// Body is an attempt's body in pieces: the unedited runs share the client
// body's memory, and an edit's text is kept as the string it is, copied
// only by Join or Reader (no allocation of its own).
type Body struct {
	parts [2*maxEdits + 1]piece
	n     int // pieces in use
	Size  int // total length
}

// piece is a run of the client's body (b) or an edit's text (s).
type piece struct {
	b []byte
	s string
}

func (b *Body) add(p []byte) {
	b.parts[b.n].b = p
	b.n++
	b.Size += len(p)
}

func (b *Body) addText(s string) {
	b.parts[b.n].s = s
	b.n++
	b.Size += len(s)
}

// Join copies the pieces into one slice.
func (b *Body) Join() []byte {
	out := make([]byte, 0, b.Size)
	for _, p := range b.parts[:b.n] {
		out = append(out, p.b...)
		out = append(out, p.s...)
	}
	return out
}

// Reader reads the pieces in order without joining them.
func (b *Body) Reader() io.Reader {
	readers := make([]io.Reader, b.n)
	for i, p := range b.parts[:b.n] {
		if p.b != nil {
			readers[i] = bytes.NewReader(p.b)
		} else {
			readers[i] = strings.NewReader(p.s)
		}
	}
	return io.MultiReader(readers...)
}

// Usage is how an upstream is asked for a stream's usage.
type UsageAsk uint8

const (
	// AskUsage turns stream_options.include_usage on (the default).
	AskUsage UsageAsk = iota
	// NoStreamOptions drops stream_options: for providers that reject it.
	NoStreamOptions
)

// OutputCap is an output limit Upstream gives a request that sets none
// (MaxTokens 0): what a budget reserved for each answer.
type OutputCap struct {
	Tokens int64 // per answer; 0: none
	// ChatField is the chat member that carries it: "max_completion_tokens"
	// (OpenAI's, the default) or "max_tokens" (for providers that read only
	// that one); completions use max_tokens, Responses max_output_tokens
	ChatField string
}

// reads reports whether a provider that takes its limit in c's field
// reads member name: OpenAI's chat reads max_tokens as well as
// max_completion_tokens; a provider given max_tokens reads only that.
func (c OutputCap) reads(api API, name string) bool {
	f := c.field(api)
	return name == f || (f == "max_completion_tokens" && name == "max_tokens")
}

// field is the member that carries the cap in api's requests, "" for none.
func (c OutputCap) field(api API) string {
	switch api {
	case Chat:
		if c.ChatField == "" {
			return "max_completion_tokens"
		}
		return c.ChatField
	case Completions:
		return "max_tokens"
	case Responses:
		return "max_output_tokens"
	}
	return ""
}

// maxEdits bounds Upstream's edits: the model, stream_options, an output
// limit member's value per name, and the cap inserted.
const maxEdits = 3 + len(limitNames)

// completionsDefaultLimit is the output limit of a completions request
// that sets none, at OpenAI (and vLLM): a cap never raises it.
const completionsDefaultLimit = 16

// ResponsesMinLimit is the smallest max_output_tokens OpenAI's Responses
// API takes: a smaller one is refused (integer_below_min_value).
const ResponsesMinLimit = 16

// CappedLimit is the output limit the request goes upstream with under a
// cap of tokens for each answer: its own, else the cap (at most
// completions' default; at least the Responses API's minimum, which the
// client, who set no limit, could not have known to avoid).
func (r *Request) CappedLimit(tokens int64) int64 {
	switch {
	case r.MaxTokens != 0:
		return r.MaxTokens
	case r.API == Completions:
		return min(tokens, completionsDefaultLimit)
	case r.API == Responses:
		return max(tokens, ResponsesMinLimit)
	}
	return tokens
}

// Upstream is the body for one attempt: Raw with "model" set to model; for
// a chat or completions stream, usage asked for (or stream_options
// dropped); and, with limit, an output limit the provider reads: unless a
// member it reads (limit.reads) holds one already, limit.field gets the
// request's limit, or limit's tokens without one (at most completions'
// default), added when absent. Any limit member the API reads that is 0
// (which a provider may take for "no limit") becomes null. Nothing else is
// touched.
func (r *Request) Upstream(model string, ask UsageAsk, limit OutputCap) Body {
	type edit struct {
		at   span
		text string
	}
	var edits [maxEdits]edit
	n := 0
	if field := limit.field(r.API); limit.Tokens > 0 && field != "" {
		text := strconv.FormatInt(r.CappedLimit(limit.Tokens), 10)
		read, at, atZero := false, absent, false // a limit the provider reads; where field's value is
		for i, v := range r.limitVals {
			if !v.ok() {
				continue
			}
			lit := string(r.Raw[v.start:v.end])
			zero := lit == "0" || lit == "-0"
			read = read || (limit.reads(r.API, limitNames[i]) && !zero && lit != "null")
			switch {
			case limitNames[i] == field:
				at, atZero = v, zero
			case zero:
				edits[n] = edit{v, "null"}
				n++
			}
		}
		switch {
		case read:
			if atZero {
				edits[n] = edit{at, "null"}
				n++
			}
		case at.ok():
			edits[n] = edit{at, text}
			n++
		default:
			// first, before a model inserted at the same place: the
			// object holds at least the model after it, hence the comma
			open := skipSpace(r.Raw, 0)
			edits[n] = edit{span{open + 1, open + 1}, `"` + field + `":` + text + ","}
			n++
		}
	}
	switch {
	case r.model.ok() && r.Raw[r.model.start] == '"' && !needsEscape(model):
		// between the quotes the body has already (not a null's): no
		// string to build
		edits[n] = edit{span{r.model.start + 1, r.model.end - 1}, model}
	case r.model.ok():
		edits[n] = edit{r.model, Quote(model)}
	default:
		open := skipSpace(r.Raw, 0)
		text := `"model":` + Quote(model)
		if r.Raw[skipSpace(r.Raw, open+1)] != '}' {
			text += ","
		}
		edits[n] = edit{span{open + 1, open + 1}, text}
	}
	n++
	switch {
	case !r.Stream || (r.API != Chat && r.API != Completions):
	case ask == NoStreamOptions && r.streamOptsMember.ok():
		edits[n] = edit{r.streamOptsMember, ""}
		n++
	case ask == AskUsage && r.usageAt.ok():
		edits[n] = edit{r.usageAt, r.usageText}
		n++
	}
	// in body order; stable, so that of two insertions at one place the
	// first made comes first
	for i := 1; i < n; i++ {
		for j := i; j > 0 && edits[j].at.start < edits[j-1].at.start; j-- {
			edits[j], edits[j-1] = edits[j-1], edits[j]
		}
	}
	var b Body
	pos := 0
	for _, e := range edits[:n] {
		b.add(r.Raw[pos:e.at.start])
		b.addText(e.text)
		pos = e.at.end
	}
	b.add(r.Raw[pos:])
	return b
}

// UpstreamBody is Upstream joined.
func (r *Request) UpstreamBody(model string, ask UsageAsk, limit OutputCap) []byte {
	b := r.Upstream(model, ask, limit)
	return b.Join()
}
