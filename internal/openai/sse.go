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
// cannot make the gateway buffer without limit. It is the bound of a whole
// JSON answer (the router's maxResponseBody): a Responses API stream's
// last event, response.completed, is the whole response again (every
// output text, their log probabilities when asked for, an image tool's
// base64 result), as large as the same answer unstreamed, and a smaller
// bound broke such a stream at its end, its usage unread and its
// provider blamed. A variable for the tests only.
var MaxEventSize = 256 << 20

// DoneData is the data of the event that ends an OpenAI stream.
var DoneData = []byte("[DONE]")

// IsDone reports whether an event's data is [DONE], the end of an OpenAI
// stream: data that starts with it, as the official SDKs read it (they
// test the data's start: "[DONE] " and "[DONE]x" end their stream too, and
// what follows is never read).
func IsDone(data []byte) bool {
	if len(data) < len(DoneData) || data[0] != '[' {
		return false // every other event (a JSON object): one byte read
	}
	return bytes.HasPrefix(data, DoneData)
}

// EventReader splits a text/event-stream into events, each returned with
// its terminating blank line, in a buffer reused by the next call. Lines
// end with LF, CR LF or a lone CR, as the SSE spec has it; an event's bytes
// are returned as they came.
type EventReader struct {
	r   *bufio.Reader
	buf []byte
	err error // the read error that ended the stream, returned from then on
	// partial: buf holds the event Next dropped, cut off at the end (Partial)
	partial bool
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
	s.err = nil
	return s
}

// Release returns the reader to the pool; it must not be used after.
func (s *EventReader) Release() {
	s.r.Reset(nil)
	s.err = nil
	s.partial = false
	if cap(s.buf) <= 64<<10 { // don't keep a buffer grown by a huge event
		s.buf = s.buf[:0]
		eventReaders.Put(s)
	}
}

// lineEnd is the index of the first CR or LF in b, -1 if none: two
// vectorised searches per window, the second only over the line the first
// found. The windows keep a stream of short lines with CR endings and no
// LF linear: a search for LF over all of b at each line would be
// quadratic in b.
func lineEnd(b []byte) int {
	const window = 512
	for off := 0; off < len(b); off += window {
		w := b[off:min(off+window, len(b))]
		n := bytes.IndexByte(w, '\n')
		if n < 0 {
			n = len(w)
		}
		if c := bytes.IndexByte(w[:n], '\r'); c >= 0 {
			return off + c
		}
		if n < len(w) {
			return off + n
		}
	}
	return -1
}

// Ready reports whether a complete event is already buffered, so Next
// will not wait for the network.
func (s *EventReader) Ready() bool {
	n := s.r.Buffered()
	if n == 0 {
		return false
	}
	b, _ := s.r.Peek(n)
	return eventEnd(b[strayBlankLines(b):]) >= 0
}

// strayBlankLines is the length of the blank lines at the start of b,
// which are no event's.
func strayBlankLines(b []byte) int {
	i := 0
	for i < len(b) && (b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// eventEnd is the length of the event at the start of b (whose first line
// is not blank) up to and with its blank line, as Next reads it; -1 when
// b does not hold all of it.
func eventEnd(b []byte) int {
	loneCR := false // the last line ended with a lone CR
	for i, line := 0, 0; i < len(b); line = i {
		if c := b[i]; c != '\n' && c != '\r' { // else a blank line: no search
			e := lineEnd(b[i:])
			if e < 0 {
				return -1
			}
			i += e
		}
		blank := i == line
		switch {
		case b[i] == '\n':
			i++
			loneCR = false
		case blank && loneCR:
			return i + 1 // a CR stream's blank line: what follows does not matter
		case i+1 == len(b):
			return -1 // CR LF or a lone CR: the next byte says
		case b[i+1] == '\n':
			i += 2
			loneCR = false
		default:
			i++
			loneCR = true
		}
		if blank {
			return i
		}
	}
	return -1
}

// ErrEventTooLarge is an event over MaxEventSize.
var ErrEventTooLarge = errors.New("stream event larger than 256 MiB")

// Next returns the next event. At a clean end of the stream it returns
// io.EOF; a partial event at the end is dropped (io.ErrUnexpectedEOF),
// since it never completed.
//
// A CR may be the first half of a CR LF: Next reads the byte after it
// before deciding, except for a blank line (a CR) after a line that ended
// with a lone CR (a stream with CR line endings), which ends its event at
// once; an LF after it is then a stray blank line. So an event's bytes
// never depend on how the stream was cut into reads.
func (s *EventReader) Next() ([]byte, error) {
	s.buf = s.buf[:0]
	s.partial = false
	// the common case: the whole event is buffered, taken at once
	if n := s.r.Buffered(); n > 0 {
		b, _ := s.r.Peek(n)
		i := strayBlankLines(b)
		if e := eventEnd(b[i:]); e >= 0 && e <= MaxEventSize {
			s.buf = append(s.buf, b[i:i+e]...)
			_, _ = s.r.Discard(i + e)
			return s.buf, nil
		}
	}
	// else line by line, reading as it goes
	loneCR := false // the last line ended with a lone CR
	for {
		start := len(s.buf)
		end, err := s.line(loneCR)
		if err != nil {
			if err == io.EOF && len(s.buf) > 0 {
				s.partial = true
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		blank := s.buf[start] == '\n' || s.buf[start] == '\r'
		if blank && start == 0 {
			s.buf = s.buf[:0] // a stray blank line, not an event
			continue
		}
		if end == endCRUnread {
			// CR LF or a lone CR: the next byte says
			end = endCR
			if b, err := s.peek(); err == nil && b[0] == '\n' {
				if len(s.buf) >= MaxEventSize {
					return nil, ErrEventTooLarge
				}
				s.buf = append(s.buf, '\n')
				_, _ = s.r.Discard(1)
				end = endLF
			}
		}
		loneCR = end == endCR
		if blank {
			return s.buf, nil
		}
	}
}

// Partial is the event that the last call of Next dropped as cut off by
// the stream's end (io.ErrUnexpectedEOF): its lines so far, valid until
// the next call; nil after any other result. It never completed, so it is
// no event to relay, but what it says (a usage a provider sent without the
// blank line after it) may still be read (EventData).
func (s *EventReader) Partial() []byte {
	if !s.partial {
		return nil
	}
	return s.buf
}

// How a line read by line ends.
const (
	endLF       = iota // LF or CR LF
	endCR              // a lone CR
	endCRUnread        // a CR whose next byte is not read yet
)

// line appends the next line and its line ending to buf. A CR that ends
// what is buffered is endCRUnread; a blank line ending with CR after a
// line that ended with a lone CR (loneCR) is endCR, whatever follows.
func (s *EventReader) line(loneCR bool) (int, error) {
	start := len(s.buf)
	for {
		b, err := s.peek()
		if err != nil {
			return 0, err
		}
		e := lineEnd(b)
		take, end := len(b), endLF
		if e >= 0 {
			take = e + 1
			if b[e] == '\r' {
				switch {
				case loneCR && e == 0 && len(s.buf) == start:
					end = endCR
				case e+1 == len(b):
					end = endCRUnread
				case b[e+1] == '\n':
					take++
				default:
					end = endCR
				}
			}
		}
		if len(s.buf)+take > MaxEventSize {
			return 0, ErrEventTooLarge
		}
		s.buf = append(s.buf, b[:take]...)
		_, _ = s.r.Discard(take)
		if e >= 0 {
			return end, nil
		}
	}
}

// peek returns the bytes buffered, reading when there are none. An error
// is kept: bufio returns it only once.
func (s *EventReader) peek() ([]byte, error) {
	if s.err != nil {
		return nil, s.err
	}
	if s.r.Buffered() == 0 {
		if _, err := s.r.Peek(1); err != nil {
			s.err = err
			return nil, err
		}
	}
	b, _ := s.r.Peek(s.r.Buffered())
	return b, nil
}

// EventData is the data of an event: the values of its "data" fields up
// to its blank line, joined by new lines as the SSE spec joins them; nil
// if it has none. A
// single data line, what every provider sends, is a slice of ev; several
// are joined in a new slice.
func EventData(ev []byte) []byte {
	var data, joined []byte
	found := false
	for len(ev) > 0 && ev[0] != '\n' && ev[0] != '\r' { // up to the blank line that ends the event
		line := ev
		if e := lineEnd(ev); e >= 0 {
			cr := ev[e] == '\r'
			line, ev = ev[:e], ev[e+1:]
			if cr && len(ev) > 0 && ev[0] == '\n' {
				ev = ev[1:] // CR LF
			}
		} else {
			ev = nil
		}
		v, ok := dataValue(line)
		switch {
		case !ok:
		case !found:
			data, found = v, true
		case joined == nil:
			// one allocation: what is left of ev bounds the other lines
			joined = make([]byte, 0, len(data)+1+len(v)+len(ev))
			joined = append(append(append(joined, data...), '\n'), v...)
		default:
			joined = append(append(joined, '\n'), v...)
		}
	}
	if joined != nil {
		return joined
	}
	return data
}

// dataValue is the value of a "data" field line (after "data:" and one
// space; a line "data" alone has an empty one).
func dataValue(line []byte) ([]byte, bool) {
	const name = "data"
	if len(line) < len(name) || string(line[:len(name)]) != name {
		return nil, false
	}
	if len(line) == len(name) {
		return line[len(name):], true
	}
	if line[len(name)] != ':' {
		return nil, false
	}
	v := line[len(name)+1:]
	if len(v) > 0 && v[0] == ' ' {
		v = v[1:]
	}
	return v, true
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
