package llmrouter

// This file reads and relays SSE streams: it knows events, not attempts.
// handler.go decides when a stream is committed and what its end means.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// maxEventSize bounds one SSE event, so a provider that never ends a line
// cannot make the router buffer without limit.
const maxEventSize = 4 << 20

// errWritingDownstream wraps errors from writing to the client, to tell a
// client that went away from an upstream that failed: only the latter counts
// against the deployment.
var errWritingDownstream = errors.New("writing to the client")

// streamRelay writes events to the client, pulling the usage out on the way.
type streamRelay struct {
	strip   bool   // the client did not ask for usage: drop the usage-only chunk
	textKey []byte // where the API's streamed text is
	// idleTimer, when set, is rearmed for idle after every upstream event
	idle      time.Duration
	idleTimer *time.Timer

	// capture, when not nil, collects every upstream event (usage chunk
	// included) for the response cache, up to captureMax bytes; beyond
	// that it is dropped (nil)
	capture    []byte
	captureMax int

	usage  *usage
	done   bool  // saw [DONE]
	chars  int64 // characters of text streamed, to estimate usage
	events int   // events relayed
}

var (
	usagePrefix = []byte(`"usage":{`)
	doneData    = []byte("[DONE]")
)

// relay writes first, then every following event of events, to w. Each
// event is flushed as soon as no further complete event is already waiting:
// event by event for a live stream, one write for a burst that arrived
// together. It returns nil at the stream's clean end, an error wrapping
// errWritingDownstream when the client could not be written to, or the
// upstream's read error.
func (s *streamRelay) relay(w io.Writer, flush func() error, events *sseReader, first []byte) error {
	err := s.forward(w, first)
	if err == nil {
		err = flush()
	}
	for err == nil {
		ev, rerr := events.next()
		if s.idleTimer != nil {
			s.idleTimer.Reset(s.idle)
		}
		if rerr != nil {
			if rerr == io.EOF {
				return nil
			}
			return rerr
		}
		if err = s.forward(w, ev); err == nil && !events.ready() {
			err = flush()
		}
	}
	return fmt.Errorf("%w: %w", errWritingDownstream, err)
}

// forward relays one event (the caller flushes).
func (s *streamRelay) forward(w io.Writer, ev []byte) error {
	s.events++
	if s.capture != nil {
		if len(s.capture)+len(ev) > s.captureMax {
			s.capture = nil
		} else {
			s.capture = append(s.capture, ev...)
		}
	}
	data := eventData(ev)
	if len(s.textKey) > 0 {
		if i := bytes.Index(data, s.textKey); i >= 0 {
			s.chars += jsonStringChars(data[i+len(s.textKey):])
		}
	}
	if bytes.Equal(data, doneData) {
		s.done = true
	} else if bytes.Contains(data, usagePrefix) {
		if u, choices, ok := usageFromChunk(data); ok {
			s.usage = &u
			if s.strip && choices == 0 {
				return nil
			}
		}
	}
	_, err := w.Write(ev)
	return err
}

// writeStreamError ends a committed stream with an error event in the form
// the official SDKs raise on (a data member "error").
func writeStreamError(w io.Writer, e *routerError) error {
	b := make([]byte, 0, 256)
	b = append(b, "data: "...)
	b = append(b, e.envelope()...)
	b = append(b, "\n\n"...)
	_, err := w.Write(b)
	return err
}

// sseReader splits a text/event-stream into events, each returned with its
// terminating blank line, in a buffer reused by the next call.
type sseReader struct {
	r   *bufio.Reader
	buf []byte
}

// Small, pooled buffers: thousands of streams stay open at once, and a line
// longer than the reader's buffer is still read whole (in pieces).
var sseReaders = sync.Pool{New: func() any {
	return &sseReader{r: bufio.NewReaderSize(nil, 2<<10), buf: make([]byte, 0, 1<<10)}
}}

func newSSEReader(r io.Reader) *sseReader {
	s := sseReaders.Get().(*sseReader)
	s.r.Reset(r)
	return s
}

// release returns the reader to the pool; it must not be used after.
func (s *sseReader) release() {
	s.r.Reset(nil)
	if cap(s.buf) <= 64<<10 { // don't keep a buffer grown by a huge event
		s.buf = s.buf[:0]
		sseReaders.Put(s)
	}
}

var (
	eventEnd     = []byte("\n\n")
	eventEndCRLF = []byte("\r\n\r\n")
)

// ready reports whether a complete event is already buffered, so next
// will not wait for the network.
func (s *sseReader) ready() bool {
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

// next returns the next event. At a clean end of the stream it returns
// io.EOF; a partial event at the end is dropped, since it never completed.
func (s *sseReader) next() ([]byte, error) {
	s.buf = s.buf[:0]
	lineStart := 0 // where the line being read began in buf
	for {
		line, err := s.r.ReadSlice('\n')
		if len(s.buf)+len(line) > maxEventSize {
			return nil, errors.New("stream event larger than 4 MiB")
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

// eventData is the value of an event's data field, for the single-line
// data events OpenAI-compatible providers send; nil if it has none.
func eventData(ev []byte) []byte {
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

// jsonStringChars counts the characters of a JSON string's content up to
// its closing quote: Unicode characters, an escape counting as the one it
// stands for (a surrogate pair, \ud83d\ude00, as one).
func jsonStringChars(b []byte) int64 {
	var n int64
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return n
		case c == '\\':
			if i+5 < len(b) && b[i+1] == 'u' {
				v, _ := hex4(b[i+2 : i+6])
				i += 5
				if v < 0xDC00 || v > 0xDFFF { // not the second half of a pair already counted
					n++
				}
				continue
			}
			i++
			n++
		case c&0xC0 != 0x80: // not a UTF-8 continuation byte
			n++
		}
	}
	return n
}

// hex4 reads four hex digits.
func hex4(b []byte) (uint16, bool) {
	var v uint16
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		v = v<<4 | uint16(c)
	}
	return v, true
}

// isEventStream reports whether a Content-Type is text/event-stream
// (parameters allowed), without parsing it in full.
func isEventStream(ct string) bool {
	const mt = "text/event-stream"
	if len(ct) < len(mt) || !strings.EqualFold(ct[:len(mt)], mt) {
		return false
	}
	rest := strings.TrimLeft(ct[len(mt):], " \t")
	return rest == "" || rest[0] == ';'
}
