package openai

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
)

// MaxEventSize bounds one SSE event, so a provider that never ends a line
// cannot make the gateway buffer without limit.
const MaxEventSize = 4 << 20

// DoneData is the data of the event that ends an OpenAI stream.
var DoneData = []byte("[DONE]")

// EventReader splits a text/event-stream into events, each returned with
// its terminating blank line, in a buffer reused by the next call.
type EventReader struct {
	r   *bufio.Reader
	buf []byte
}

// Small, pooled buffers: thousands of streams stay open at once, and a line
// longer than the reader's buffer is still read whole (in pieces).
var eventReaders = sync.Pool{New: func() any {
	return &EventReader{r: bufio.NewReaderSize(nil, 2<<10), buf: make([]byte, 0, 1<<10)}
}}

// NewEventReader takes a reader from the pool; Release returns it.
func NewEventReader(r io.Reader) *EventReader {
	s := eventReaders.Get().(*EventReader)
	s.r.Reset(r)
	return s
}

// Release returns the reader to the pool; it must not be used after.
func (s *EventReader) Release() {
	s.r.Reset(nil)
	if cap(s.buf) <= 64<<10 { // don't keep a buffer grown by a huge event
		s.buf = s.buf[:0]
		eventReaders.Put(s)
	}
}

var (
	eventEnd     = []byte("\n\n")
	eventEndCRLF = []byte("\r\n\r\n")
)

// Ready reports whether a complete event is already buffered, so Next
// will not wait for the network.
func (s *EventReader) Ready() bool {
	n := s.r.Buffered()
	if n == 0 {
		return false
	}
	b, _ := s.r.Peek(n)
	// stray blank lines before an event do not end one
	for len(b) > 0 && (b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	return bytes.Contains(b, eventEnd) || bytes.Contains(b, eventEndCRLF)
}

// ErrEventTooLarge is an event over MaxEventSize.
var ErrEventTooLarge = errors.New("stream event larger than 4 MiB")

// Next returns the next event. At a clean end of the stream it returns
// io.EOF; a partial event at the end is dropped (io.ErrUnexpectedEOF),
// since it never completed.
func (s *EventReader) Next() ([]byte, error) {
	s.buf = s.buf[:0]
	lineStart := 0 // where the line being read began in buf
	for {
		line, err := s.r.ReadSlice('\n')
		if len(s.buf)+len(line) > MaxEventSize {
			return nil, ErrEventTooLarge
		}
		s.buf = append(s.buf, line...)
		switch {
		case err == bufio.ErrBufferFull:
			continue // the rest of a long line follows
		case err == io.EOF && len(s.buf) > 0:
			return nil, io.ErrUnexpectedEOF
		case err != nil:
			return nil, err
		}
		// a whole line, possibly read in pieces: blank if it is only
		// its terminator
		whole := s.buf[lineStart:]
		lineStart = len(s.buf)
		if len(whole) == 1 || (len(whole) == 2 && whole[0] == '\r') {
			if len(s.buf) == len(whole) {
				s.buf, lineStart = s.buf[:0], 0 // a stray blank line, not an event
				continue
			}
			return s.buf, nil
		}
	}
}

// EventData is the value of an event's data field, for the single-line
// data events OpenAI-compatible providers send; nil if it has none.
func EventData(ev []byte) []byte {
	for len(ev) > 0 {
		i := bytes.IndexByte(ev, '\n')
		line := ev
		if i >= 0 {
			line, ev = ev[:i], ev[i+1:]
		} else {
			ev = nil
		}
		if rest, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			rest = bytes.TrimSuffix(rest, []byte("\r"))
			return bytes.TrimPrefix(rest, []byte(" "))
		}
	}
	return nil
}

// IsEventStream reports whether a Content-Type is text/event-stream
// (parameters allowed), without parsing it in full.
func IsEventStream(ct string) bool {
	const mt = "text/event-stream"
	if len(ct) < len(mt) || !strings.EqualFold(ct[:len(mt)], mt) {
		return false
	}
	rest := strings.TrimLeft(ct[len(mt):], " \t")
	return rest == "" || rest[0] == ';'
}
