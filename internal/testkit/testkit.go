// Package testkit holds helpers that tests of more than one package use.
// Test code only.
package testkit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// ChunkReader returns its chunks one Read at a time, never joining two, so
// a test decides exactly where the network split a stream.
type ChunkReader struct {
	Chunks []string
	Err    error // returned after the last chunk; io.EOF when nil
}

// NewChunkReader reads a copy of chunks.
func NewChunkReader(chunks ...string) *ChunkReader {
	return &ChunkReader{Chunks: append([]string(nil), chunks...)}
}

func (r *ChunkReader) Read(p []byte) (int, error) {
	for len(r.Chunks) > 0 && r.Chunks[0] == "" {
		r.Chunks = r.Chunks[1:]
	}
	if len(r.Chunks) == 0 {
		if r.Err != nil {
			return 0, r.Err
		}
		return 0, io.EOF
	}
	n := copy(p, r.Chunks[0])
	r.Chunks[0] = r.Chunks[0][n:]
	return n, nil
}

// Short quotes events, eliding the middle of long ones.
func Short(events []string) string {
	q := make([]string, len(events))
	for i, ev := range events {
		if len(ev) > 40 {
			q[i] = fmt.Sprintf("%q…(%d bytes)…%q", ev[:16], len(ev), ev[len(ev)-16:])
		} else {
			q[i] = fmt.Sprintf("%q", ev)
		}
	}
	return "[" + strings.Join(q, " ") + "]"
}

// JSONEqual reports whether two JSON texts decode to the same value.
func JSONEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}
