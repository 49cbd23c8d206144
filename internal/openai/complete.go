package openai

// IsComplete reports whether answer, a JSON answer of api, is whole enough
// to be served again from a cache: chat and completions answers have at
// least one choice and each choice its finish_reason (a choice without one
// was cut off); a Responses answer has status "completed"; an embeddings
// answer has at least one vector. Member names are read as written: one
// spelled otherwise makes the answer incomplete, which only costs a
// cache entry.
func IsComplete(api API, answer []byte) bool {
	whole := false
	ok := ForEachMember(answer, func(key, val []byte) {
		switch api {
		case Chat, Completions:
			if string(key) == "choices" {
				whole = choicesFinished(val)
			}
		case Responses:
			if string(key) == "status" {
				whole = string(val) == `"completed"`
			}
		case Embeddings:
			if string(key) == "data" {
				whole = val[0] == '['
				n := 0
				forEachElement(val, func([]byte) { n++ })
				whole = whole && n > 0
			}
		}
	})
	return ok && whole
}

// choicesFinished reports whether list is a non-empty array of choices,
// each with a string finish_reason.
func choicesFinished(list []byte) bool {
	if list[0] != '[' {
		return false
	}
	n, finished := 0, 0
	forEachElement(list, func(choice []byte) {
		n++
		reason := false
		ForEachMember(choice, func(key, val []byte) {
			if string(key) == "finish_reason" {
				reason = val[0] == '"' && len(val) > 2
			}
		})
		if reason {
			finished++
		}
	})
	return n > 0 && finished == n
}
