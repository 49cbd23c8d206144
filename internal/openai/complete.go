package openai

// Answer is what the gateway reads of a JSON answer.
type Answer struct {
	Usage Usage
	// Found: the answer reports its usage, at its top level or, as
	// Moonshot's Kimi does, in its choices
	Found bool
	// Valid: the answer is one valid JSON object
	Valid bool
	// Error: it is an error rather than an answer: a non-null top-level
	// "error", or the Responses API's {"type":"error"} (or
	// "response.failed") event
	Error bool
	// Complete: the answer is whole enough to be served again from a
	// cache: a chat or completions answer has at least one choice and each
	// choice its finish_reason (a choice without one was cut off; one with
	// finish_reason "error", "insufficient_system_resource" (DeepSeek's) or
	// "abort" (vLLM's), or an "error", failed midway; one with
	// "content_filter" had content a provider's filter omitted, a verdict
	// on one generation that another would not necessarily get); a
	// Responses answer has status "completed"; an embeddings answer has at
	// least one vector. Member names are read as written: one spelled
	// otherwise makes the answer incomplete, which only costs a cache entry.
	Complete bool
}

// IsAnswer reports whether a is an answer at all: one valid JSON object that
// is not an error.
func (a Answer) IsAnswer() bool { return a.Valid && !a.Error }

// ReadAnswer reads a JSON answer of api in one pass that validates it;
// any white space and member order are read. It allocates nothing: the
// loops are written out, as ForEachMember's are, so that the scanner stays
// on the stack.
func ReadAnswer(api API, b []byte) Answer {
	var a Answer
	s := scanner{b: b, lax: true}
	s.ws()
	if s.i >= len(b) || b[s.i] != '{' {
		return a
	}
	var inChoices Usage
	var foundInChoices bool
	empty, err := s.open(1, '}')
	for more := !empty; more && err == nil; {
		var key []byte
		if key, _, err = s.key(); err != nil {
			break
		}
		start := s.i
		switch {
		case string(key) == "choices" && b[s.i] == '[':
			a.Complete, err = s.readChoices(2, &inChoices, &foundInChoices)
			a.Complete = a.Complete && (api == Chat || api == Completions)
		case string(key) == "usage":
			if err = s.value(2); err == nil {
				a.Usage, a.Found = usageObject(b[start:s.i])
			}
		default:
			switch {
			case string(key) == "error":
				a.Error = a.Error || b[s.i] != 'n'
			case string(key) == "type":
				a.Error = a.Error || hasPrefixAt(b, s.i, `"error"`) || hasPrefixAt(b, s.i, `"response.failed"`)
			case api == Responses && string(key) == "status":
				a.Complete = hasPrefixAt(b, s.i, `"completed"`)
			case api == Embeddings && string(key) == "data" && b[s.i] == '[':
				j := skipSpace(b, s.i+1)
				a.Complete = j < len(b) && b[j] != ']'
			}
			err = s.value(2)
		}
		if err == nil {
			more, err = s.next('}')
		}
	}
	s.ws()
	a.Valid = err == nil && s.i == len(b)
	if !a.Found {
		a.Usage, a.Found = inChoices, foundInChoices
	}
	a.Found = a.Found && a.Valid
	a.Complete = a.Complete && a.Valid && !a.Error
	return a
}

// IsComplete reports whether answer, a JSON answer of api, is whole
// (Answer.Complete).
func IsComplete(api API, answer []byte) bool {
	return ReadAnswer(api, answer).Complete
}

// readChoices scans the array of choices at s.i: whether it has at least
// one choice and each a string finish_reason, and the usage some choices
// carry (each count the largest of theirs, never a sum that would count
// the prompt once per choice).
func (s *scanner) readChoices(depth int, u *Usage, found *bool) (bool, error) {
	n, finished := 0, 0
	empty, err := s.open(depth, ']')
	for more := !empty; more && err == nil; n++ {
		if s.i >= len(s.b) {
			return false, s.errorf("unexpected end of input in array")
		}
		if s.b[s.i] != '{' {
			err = s.value(depth + 1)
		} else {
			var reason bool
			reason, err = s.readChoice(depth+1, u, found)
			if reason {
				finished++
			}
		}
		if err == nil {
			more, err = s.next(']')
		}
	}
	return n > 0 && finished == n, err
}

// readChoice scans one choice: whether it has a string finish_reason that
// ends a generation, and its usage, if any, into u. A choice whose
// generation failed midway has no such end: finish_reason "error", or a
// non-null "error" member, as OpenRouter reports a provider that broke
// off after some text, "insufficient_system_resource", as DeepSeek ends
// one its inference system could not finish, or "abort", as vLLM ends one
// its engine aborted (a shutdown, a pause for new weights); nor has one whose
// content a filter omitted (finish_reason "content_filter").
func (s *scanner) readChoice(depth int, u *Usage, found *bool) (reason bool, err error) {
	failed := false
	empty, err := s.open(depth, '}')
	for more := !empty; more && err == nil; {
		var key []byte
		if key, _, err = s.key(); err != nil {
			break
		}
		start := s.i
		if err = s.value(depth + 1); err != nil {
			break
		}
		switch string(key) {
		case "finish_reason":
			reason = s.b[start] == '"' && s.i-start > 2 && !isUnfinished(s.b[start:s.i])
		case "error":
			failed = s.b[start] != 'n'
		case "usage":
			if cu, ok := usageObject(s.b[start:s.i]); ok {
				u.Input, u.Output, u.CachedInput = max(u.Input, cu.Input), max(u.Output, cu.Output), max(u.CachedInput, cu.CachedInput)
				*found = true
			}
		}
		more, err = s.next('}')
	}
	return reason && !failed, err
}

// unfinished are the finish reasons, as written, of a generation that
// did not end as its model meant it to: failed midway ("error", as
// OpenRouter reports it; "insufficient_system_resource", DeepSeek's
// when its inference system had no resources to go on; "abort", vLLM's
// for a request its engine aborted), or with content a provider's filter
// omitted ("content_filter").
var unfinished = [...]string{`"error"`, `"insufficient_system_resource"`, `"abort"`, `"content_filter"`}

// isUnfinished reports whether the finish reason written as v is one of
// unfinished (a comparison, not a conversion: ReadAnswer allocates
// nothing).
func isUnfinished(v []byte) bool {
	for _, u := range unfinished {
		if string(v) == u {
			return true
		}
	}
	return false
}

// hasPrefixAt reports whether b holds p at i.
func hasPrefixAt(b []byte, i int, p string) bool {
	return len(b)-i >= len(p) && string(b[i:i+len(p)]) == p
}
