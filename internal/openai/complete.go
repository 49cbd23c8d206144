package openai

// IsComplete reports whether answer, a JSON answer of api, is whole enough
// to be served again from a cache: chat and completions answers have at
// least one choice and each choice its finish_reason (a choice without one
// was cut off); a Responses answer has status "completed"; an embeddings
// answer has at least one vector. One pass over the answer, allocating
// nothing. Member names are read as written: one spelled otherwise makes
// the answer incomplete, which only costs a cache entry.
func IsComplete(api API, answer []byte) bool {
	s := scanner{b: answer, lax: true}
	s.ws()
	if s.i >= len(answer) || answer[s.i] != '{' {
		return false
	}
	whole := false
	err := s.object(1, func(s *scanner, key []byte, _, depth int) error {
		switch {
		case (api == Chat || api == Completions) && string(key) == "choices" && s.b[s.i] == '[':
			var err error
			whole, err = choicesFinished(s, depth)
			return err
		case api == Responses && string(key) == "status":
			whole = s.b[s.i] == '"' && hasPrefixAt(s.b, s.i, `"completed"`)
		case api == Embeddings && string(key) == "data" && s.b[s.i] == '[':
			j := skipSpace(s.b, s.i+1)
			whole = j < len(s.b) && s.b[j] != ']'
		}
		return s.value(depth)
	})
	s.ws()
	return err == nil && s.i == len(answer) && whole
}

// choicesFinished scans the array of choices at s.i and reports whether
// it has at least one choice and each a string finish_reason.
func choicesFinished(s *scanner, depth int) (bool, error) {
	n, finished := 0, 0
	err := s.array(depth, func(s *scanner, _, depth int) error {
		n++
		if s.b[s.i] != '{' {
			return s.value(depth)
		}
		reason := false
		err := s.object(depth, func(s *scanner, key []byte, _, depth int) error {
			if string(key) == "finish_reason" {
				reason = s.b[s.i] == '"' && s.i+1 < len(s.b) && s.b[s.i+1] != '"'
			}
			return s.value(depth)
		})
		if reason {
			finished++
		}
		return err
	})
	return n > 0 && finished == n, err
}

// hasPrefixAt reports whether b holds p at i.
func hasPrefixAt(b []byte, i int, p string) bool {
	return len(b)-i >= len(p) && string(b[i:i+len(p)]) == p
}
