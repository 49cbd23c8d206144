// Package chunkstore is a byte-bounded key-value store of immutable
// records that costs the garbage collector nothing, however many it holds.
//
// Records are appended to chunks, large byte slices that are never written
// again where something was written; the index maps a key to a place in a
// chunk (no pointers). A store of a hundred thousand answers is then a few
// hundred pointer-free objects for the collector, not three pointerful ones
// an answer, which it would mark at every cycle. Eviction drops the oldest
// chunk whole, first in, first out, except that a record read since it was
// written is copied to the newest chunk instead (a second chance, as CLOCK
// gives): what is asked for stays, what is not leaves in the order it
// came, and only a write evicts. A record read is a slice of its chunk,
// valid for as long as the caller keeps it, also after the record or its
// chunk left the store: nothing is copied on a read. (A dropped chunk
// that a reader still holds stays in memory until the reader lets go: the
// limit bounds what the store holds, as with any store that hands out
// what it holds.)
package chunkstore

import (
	"encoding/binary"
	"sync"
)

// Key is a record's key: a SHA-256.
type Key = [32]byte

// indexOverhead is what a record costs in the index, in bytes (a key, its
// place and the hash table's slack), counted against the limit.
const indexOverhead = 64

// header is a record's prefix in its chunk: its key (to clear the index
// when the chunk is dropped) and its length.
const header = len(Key{}) + 4

const (
	minChunk = 1 << 10
	maxChunk = 1 << 20
)

// place is where a record is: chunk sequence number, offset of its
// header; read says whether it was read since it was written there.
type place struct {
	seq  uint32
	off  uint32
	read bool
}

// Store is safe for concurrent use.
type Store struct {
	mu        sync.Mutex
	index     map[Key]place
	chunks    [][]byte // live chunks, oldest first; chunks[i] is number first+i
	first     uint32
	chunkSize int
	chunkUsed int64 // the chunks' capacities
	limit     int64
}

// New makes a store that holds at most limit bytes (chunks and index), in
// chunks of a sixty-fourth of it, between 1 KiB and 1 MiB (a drop evicts
// little at a time); a record larger than a chunk gets one of its own.
func New(limit int64) *Store {
	return &Store{
		index:     map[Key]place{},
		chunkSize: int(min(max(limit/64, minChunk), maxChunk)),
		limit:     limit,
	}
}

// Get returns key's record, read-only (false if the store has none).
func (s *Store) Get(key Key) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.index[key]
	if !ok {
		return nil, false
	}
	if !p.read {
		p.read = true
		s.index[key] = p
	}
	return s.record(p), true
}

// Put stores the concatenation of parts as key's record, replacing any.
// The caller must not make a record larger than the limit allows.
func (s *Store) Put(key Key, parts ...[]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.write(key, parts...)
	s.evict()
}

// SetLimit changes the limit, evicting what no longer fits.
func (s *Store) SetLimit(limit int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limit = limit
	s.evict()
}

// Limit is the current limit in bytes.
func (s *Store) Limit() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limit
}

// Len is the number of records.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.index)
}

// Size is the bytes the store holds, counted as the limit counts them.
func (s *Store) Size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size()
}

// Clear drops every record.
func (s *Store) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.index)
	s.first += uint32(len(s.chunks))
	s.chunks, s.chunkUsed = nil, 0
}

func (s *Store) size() int64 { return s.chunkUsed + int64(len(s.index))*indexOverhead }

// record is the record at p, whose chunk is live.
func (s *Store) record(p place) []byte {
	c := s.chunks[p.seq-s.first]
	at := int(p.off) + len(Key{})
	n := int(binary.LittleEndian.Uint32(c[at:]))
	at += 4
	return c[at : at+n : at+n]
}

// write appends key's record, the concatenation of parts, to the newest
// chunk, unread.
func (s *Store) write(key Key, parts ...[]byte) {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	chunk := s.room(header + n)
	off := len(chunk)
	chunk = append(chunk, key[:]...)
	chunk = binary.LittleEndian.AppendUint32(chunk, uint32(n))
	for _, p := range parts {
		chunk = append(chunk, p...)
	}
	s.chunks[len(s.chunks)-1] = chunk
	s.index[key] = place{seq: s.first + uint32(len(s.chunks)-1), off: uint32(off)}
}

// room returns the newest chunk with n bytes free after its length,
// starting a new one if it has not.
func (s *Store) room(n int) []byte {
	if k := len(s.chunks); k > 0 {
		if c := s.chunks[k-1]; cap(c)-len(c) >= n {
			return c
		}
	}
	c := make([]byte, 0, max(s.chunkSize, n))
	s.chunks = append(s.chunks, c)
	s.chunkUsed += int64(cap(c))
	return c
}

// evict drops the oldest chunks while the store is over its limit, never
// the newest (which holds what was just written). A record of a dropped
// chunk that was read since it was written there moves to the newest
// chunk, unread; the others leave. Each move is paid for by a read, and a
// moved record leaves at its chunk's turn unless read again: the loop
// ends.
func (s *Store) evict() {
	for s.size() > s.limit && len(s.chunks) > 1 {
		c := s.chunks[0]
		for at := 0; at < len(c); {
			var key Key
			copy(key[:], c[at:])
			n := int(binary.LittleEndian.Uint32(c[at+len(key):]))
			if p, ok := s.index[key]; ok && p.seq == s.first && int(p.off) == at {
				if p.read {
					s.write(key, c[at+header:at+header+n]) // a second chance
				} else {
					delete(s.index, key)
				}
			}
			at += header + n
		}
		s.chunks[0] = nil
		s.chunks = s.chunks[1:]
		s.first++
		s.chunkUsed -= int64(cap(c))
	}
}
