package llmrouter

// usage is what one response consumed, as the provider reported it (or as
// estimated when a stream ended without a usage chunk).
type usage struct {
	input, output, cachedInput int64
	estimated                  bool
}

// usageFromJSON finds the top-level "usage" of a response body. It decodes
// nothing else and allocates nothing.
func usageFromJSON(b []byte) (usage, bool) {
	var u usage
	found := false
	ok := forEachMember(b, func(key []byte, val []byte) {
		if string(key) == "usage" {
			u, found = parseUsageObject(val)
		}
	})
	return u, ok && found
}

// usageFromChunk reads a stream chunk's usage and how many choices it has
// (a usage-only chunk has none).
func usageFromChunk(data []byte) (u usage, choices int, found bool) {
	forEachMember(data, func(key []byte, val []byte) {
		switch string(key) {
		case "usage":
			u, found = parseUsageObject(val)
		case "choices":
			if val[0] == '[' {
				forEachElement(val, func([]byte) { choices++ })
			}
		}
	})
	return u, choices, found
}

// parseUsageObject reads OpenAI's usage object: prompt_tokens,
// completion_tokens and prompt_tokens_details.cached_tokens.
func parseUsageObject(obj []byte) (usage, bool) {
	var u usage
	ok := forEachMember(obj, func(key []byte, val []byte) {
		switch string(key) {
		case "prompt_tokens":
			u.input = atoi(val)
		case "completion_tokens":
			u.output = atoi(val)
		case "prompt_tokens_details":
			forEachMember(val, func(key []byte, val []byte) {
				if string(key) == "cached_tokens" {
					u.cachedInput = atoi(val)
				}
			})
		}
	})
	return u, ok
}

// forEachMember calls f with each member of the JSON object b (keys raw,
// values as their bytes); false if b is not a valid object.
func forEachMember(b []byte, f func(key, val []byte)) bool {
	s := jsonScanner{b: b}
	s.ws()
	if s.i >= len(b) || b[s.i] != '{' {
		return false
	}
	return s.object(1, func(key []byte, val span) error {
		f(key, b[val.start:val.end])
		return nil
	}) == nil
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
