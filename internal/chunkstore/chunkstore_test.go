package chunkstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

func key(i int) Key {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(i))
	return sha256.Sum256(b[:])
}

func value(i, n int) []byte {
	return bytes.Repeat([]byte{byte('a' + i%26)}, n)
}

// TestPutGet: a record reads back as written, from its parts; a second
// Put replaces it.
func TestPutGet(t *testing.T) {
	s := New(1 << 20)
	s.Put(key(1), []byte("head:"), []byte("body"))
	if got, ok := s.Get(key(1)); !ok || string(got) != "head:body" {
		t.Fatalf("Get = %q, %v", got, ok)
	}
	if _, ok := s.Get(key(2)); ok {
		t.Fatal("Get found a key never put")
	}
	s.Put(key(1), []byte("new"))
	if got, _ := s.Get(key(1)); string(got) != "new" {
		t.Fatalf("after a second Put, Get = %q", got)
	}
	if s.Len() != 1 {
		t.Fatalf("Len = %d, want 1", s.Len())
	}
	s.Clear()
	if _, ok := s.Get(key(1)); ok || s.Len() != 0 || s.Size() != 0 {
		t.Fatalf("after Clear: Len %d, Size %d", s.Len(), s.Size())
	}
}

// TestBound: whatever is written, the store stays within its limit, and
// what it counts is what it serves.
func TestBound(t *testing.T) {
	const limit = 20_000
	s := New(limit)
	for i := range 1000 {
		s.Put(key(i), value(i, 100+i%700))
		if s.Size() > limit {
			t.Fatalf("after %d records: %d bytes, limit %d", i+1, s.Size(), limit)
		}
	}
	found := 0
	for i := range 1000 {
		if got, ok := s.Get(key(i)); ok {
			found++
			if !bytes.Equal(got, value(i, 100+i%700)) {
				t.Fatalf("record %d reads %q", i, got)
			}
		}
	}
	if found != s.Len() || found == 0 {
		t.Fatalf("%d records found, Len %d", found, s.Len())
	}
	// the newest stay, the oldest left
	if _, ok := s.Get(key(999)); !ok {
		t.Error("the newest record was evicted")
	}
	if _, ok := s.Get(key(0)); ok {
		t.Error("the oldest record of a full store was kept")
	}
}

// TestSecondChance: a record read since it was written survives its
// chunk's eviction; its unread neighbours do not. Reads never evict.
func TestSecondChance(t *testing.T) {
	const limit = 16 << 10 // chunks of 1 KiB
	s := New(limit)
	for i := range 8 { // the first chunk
		s.Put(key(i), value(i, 80))
	}
	if _, ok := s.Get(key(3)); !ok {
		t.Fatal("record 3 missing")
	}
	n := s.Len()
	for range 3 {
		for i := range 8 {
			s.Get(key(i))
		}
	}
	if s.Len() != n {
		t.Fatalf("reads changed the store: %d records, then %d", n, s.Len())
	}
	s.Clear()
	for i := range 8 {
		s.Put(key(i), value(i, 80))
	}
	// ~90 records fit: record 3, read every 40 writes, is read again
	// in each of its chunks' lifetimes
	for i := 100; i < 400; i++ { // several times the limit
		if i%40 == 0 {
			s.Get(key(3))
		}
		s.Put(key(i), value(i, 80))
	}
	if _, ok := s.Get(key(3)); !ok {
		t.Error("a record read before its chunk was dropped was evicted")
	}
	for _, i := range []int{0, 2, 4, 7} {
		if _, ok := s.Get(key(i)); ok {
			t.Errorf("unread record %d survived", i)
		}
	}
	for i := 400; i < 1000; i++ { // unread since: it leaves in turn
		s.Put(key(i), value(i, 80))
	}
	if _, ok := s.Get(key(3)); ok {
		t.Error("a record not read since its second chance was kept for ever")
	}
}

// TestReadRecordOutlivesEviction: a record read is the caller's for as
// long as it keeps it, even once evicted.
func TestReadRecordOutlivesEviction(t *testing.T) {
	s := New(4 << 10)
	s.Put(key(1), []byte("the answer"))
	got, _ := s.Get(key(1))
	for i := 2; i < 500; i++ {
		s.Put(key(i), value(i, 200))
	}
	if _, ok := s.Get(key(1)); ok {
		// read once: it had one second chance, not hundreds
		t.Fatal("the record is still stored")
	}
	if string(got) != "the answer" {
		t.Fatalf("the record read before reads %q", got)
	}
}

// TestSetLimit: shrinking the limit evicts at once; growing it keeps more.
func TestSetLimit(t *testing.T) {
	s := New(64 << 10)
	for i := range 200 {
		s.Put(key(i), value(i, 200))
	}
	before := s.Len()
	s.SetLimit(16 << 10)
	if s.Size() > 16<<10 || s.Len() >= before {
		t.Fatalf("after SetLimit(16 KiB): %d bytes, %d records (before %d)", s.Size(), s.Len(), before)
	}
	if s.Limit() != 16<<10 {
		t.Fatalf("Limit = %d", s.Limit())
	}
	s.SetLimit(64 << 10)
	for i := 200; i < 400; i++ {
		s.Put(key(i), value(i, 200))
	}
	if s.Size() <= 16<<10 {
		t.Fatalf("after the limit grew back: only %d bytes", s.Size())
	}
}

// TestLargeRecord: a record larger than a chunk gets a chunk of its own.
func TestLargeRecord(t *testing.T) {
	s := New(1 << 20) // 16 KiB chunks
	big := value(1, 60<<10)
	s.Put(key(1), []byte("x"))
	s.Put(key(2), big)
	s.Put(key(3), []byte("y"))
	for i, want := range map[int][]byte{1: []byte("x"), 2: big, 3: []byte("y")} {
		if got, ok := s.Get(key(i)); !ok || !bytes.Equal(got, want) {
			t.Errorf("record %d: %d bytes, %v", i, len(got), ok)
		}
	}
}

// TestAgainstAMap: random writes, rewrites, reads and limit changes; a
// record read is always the last one written under its key (never another
// key's, never an older version), and the store stays within its limit.
func TestAgainstAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	s := New(32 << 10)
	last := map[int]string{}
	for op := range 200_000 {
		k := rng.IntN(400)
		switch r := rng.IntN(100); {
		case r < 45:
			v := fmt.Sprintf("%d/%d/%s", k, op, strings.Repeat("x", rng.IntN(300)))
			s.Put(key(k), []byte(v[:len(v)/2]), []byte(v[len(v)/2:]))
			last[k] = v
		case r < 99:
			got, ok := s.Get(key(k))
			if ok && string(got) != last[k] {
				t.Fatalf("op %d: key %d reads %.40q, last written %.40q", op, k, got, last[k])
			}
		default:
			s.SetLimit(int64(16<<10 + rng.IntN(32<<10)))
		}
		if s.Size() > s.Limit() {
			t.Fatalf("op %d: %d bytes over a limit of %d", op, s.Size(), s.Limit())
		}
	}
}

// TestConcurrent: writers and readers at once (run with -race).
func TestConcurrent(t *testing.T) {
	s := New(64 << 10)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				k := w*10000 + i
				s.Put(key(k), []byte(fmt.Sprint(k)))
				if got, ok := s.Get(key(k - 5)); ok && string(got) != fmt.Sprint(k-5) {
					t.Errorf("record %d reads %q", k-5, got)
					return
				}
			}
		})
	}
	wg.Wait()
	if s.Size() > 64<<10 {
		t.Fatalf("%d bytes over the limit", s.Size())
	}
}

// BenchmarkPutFull stores into a full store (every Put evicts), the cache
// miss's part; BenchmarkGet reads a stored record, a hit's.
func BenchmarkPutFull(b *testing.B) {
	s := New(8 << 20)
	rec := value(0, 400)
	i := 0
	for ; s.Size() < 8<<20-(64<<10); i++ {
		s.Put(key(i), rec)
	}
	b.ReportAllocs()
	for b.Loop() {
		i++
		s.Put(key(i), rec)
	}
}

func BenchmarkGet(b *testing.B) {
	s := New(8 << 20)
	rec := value(0, 400)
	for i := range 10000 {
		s.Put(key(i), rec)
	}
	k := key(5000)
	b.ReportAllocs()
	for b.Loop() {
		s.Get(k)
	}
}
