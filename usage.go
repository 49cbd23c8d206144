package llmrouter

// usage is what one response consumed, as the provider reported it (or as
// estimated when a stream ended without a usage chunk).
type usage struct {
	input, output, cachedInput int64
	estimated                  bool
}

// usageFromJSON finds the top-level "usage" of a response body.
func usageFromJSON(b []byte) (usage, bool) {
	u, found, _ := answerUsage(b)
	return u, found
}

// answerUsage finds the top-level "usage" of a response body; valid reports
// whether b is a JSON object at all (the check costs nothing extra: the scan
// that finds usage validates the whole body). It decodes nothing else and
// allocates nothing.
func answerUsage(b []byte) (u usage, found, valid bool) {
	valid = forEachMember(b, func(key []byte, val []byte) {
		if string(key) == "usage" {
			u, found = parseUsageObject(val)
		}
	})
	return u, found && valid, valid
}

// usageFromChunk reads a stream event's usage and how many choices it has
// (a usage-only chunk has none): a chat or completions chunk's "usage", or
// the "response.usage" of the Responses API's response.completed event.
func usageFromChunk(data []byte) (u usage, choices int, found bool) {
	forEachMember(data, func(key []byte, val []byte) {
		switch string(key) {
		case "usage":
			u, found = parseUsageObject(val)
		case "choices":
			if val[0] == '[' {
				forEachElement(val, func([]byte) { choices++ })
			}
		case "response":
			forEachMember(val, func(key []byte, val []byte) {
				if string(key) == "usage" {
					u, found = parseUsageObject(val)
				}
			})
		}
	})
	return u, choices, found
}

// parseUsageObject reads a usage object in either of OpenAI's shapes:
// prompt_tokens, completion_tokens and prompt_tokens_details.cached_tokens
// (chat, completions, embeddings), or input_tokens, output_tokens and
// input_tokens_details.cached_tokens (Responses). A null usage is not found.
func parseUsageObject(obj []byte) (usage, bool) {
	var u usage
	ok := forEachMember(obj, func(key []byte, val []byte) {
		switch string(key) {
		case "prompt_tokens", "input_tokens":
			u.input = atoi(val)
		case "completion_tokens", "output_tokens":
			u.output = atoi(val)
		case "prompt_tokens_details", "input_tokens_details":
			forEachMember(val, func(key []byte, val []byte) {
				if string(key) == "cached_tokens" {
					u.cachedInput = atoi(val)
				}
			})
		}
	})
	return u, ok
}

// errorMember reports whether a JSON object is an error rather than an
// answer: it has a non-null top-level "error", or is the Responses API's
// {"type":"error"} event.
func errorMember(b []byte) bool {
	isErr := false
	forEachMember(b, func(key []byte, val []byte) {
		switch string(key) {
		case "error":
			isErr = isErr || val[0] != 'n'
		case "type":
			isErr = isErr || string(val) == `"error"` || string(val) == `"response.failed"`
		}
	})
	return isErr
}

// forEachMember calls f with each member of the JSON object b (keys raw,
// values as their bytes); false if b is not one valid object (white space
// around it allowed).
func forEachMember(b []byte, f func(key, val []byte)) bool {
	s := jsonScanner{b: b}
	s.ws()
	if s.i >= len(b) || b[s.i] != '{' {
		return false
	}
	if s.object(0, func(key []byte, val span) error {
		f(key, b[val.start:val.end])
		return nil
	}) != nil {
		return false
	}
	s.ws()
	return s.i == len(b)
}

// isJSONObject reports whether b is one valid JSON object.
func isJSONObject(b []byte) bool {
	return forEachMember(b, func(_, _ []byte) {})
}

// forEachElement calls f with each element of the JSON array b.
func forEachElement(b []byte, f func(val []byte)) {
	s := jsonScanner{b: b, i: 1}
	for {
		s.ws()
		if s.i >= len(b) || b[s.i] == ']' {
			return
		}
		start := s.i
		if s.value(1) != nil {
			return
		}
		f(b[start:s.i])
		s.ws()
		if s.i < len(b) && b[s.i] == ',' {
			s.i++
		}
	}
}

// atoi reads a non-negative JSON integer; anything else counts as 0.
func atoi(b []byte) int64 {
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int64(c-'0')
	}
	return n
}
