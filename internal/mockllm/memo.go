package mockllm

import "sync"

// A mock serving a benchmark gets the same few bodies millions of times, and
// decoding each one again with encoding/json (five passes over the body, and a
// handler goroutine's stack grown for the decoder's recursion) made the mock,
// not the proxy in front of it, the bottleneck of the HTTPS scenarios: a real
// provider's parsing happens on its machines, not on the gateway's. What the
// mock reads from a body is a pure function of its bytes, so it is kept per
// body: a repeat gets the very same reading, and a test's behaviour cannot
// tell the difference.

// memoMaxBody bounds the bodies kept; larger ones are parsed every time.
const memoMaxBody = 16 << 10

// memoMaxEntries bounds the bodies kept per memo; at the bound it starts over.
const memoMaxEntries = 256

// memo maps a body's bytes to what a pure parse function read from them.
type memo[T any] struct {
	mu sync.Mutex
	m  map[string]T
}

// get returns parse(body), from the memo when body was parsed before.
func (m *memo[T]) get(body []byte, parse func([]byte) T) T {
	if len(body) > memoMaxBody {
		return parse(body)
	}
	m.mu.Lock()
	v, ok := m.m[string(body)] // no copy: the compiler looks up without one
	m.mu.Unlock()
	if ok {
		return v
	}
	v = parse(body)
	m.mu.Lock()
	if m.m == nil || len(m.m) >= memoMaxEntries {
		m.m = make(map[string]T, memoMaxEntries)
	}
	m.m[string(body)] = v
	m.mu.Unlock()
	return v
}
