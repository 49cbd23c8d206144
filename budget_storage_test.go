package llmrouter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// flakyLoadStorage is a file storage whose reads of one key fail (not as
// a missing key: a network storage that timed out) while fail is set.
type flakyLoadStorage struct {
	certmagic.FileStorage
	key  string
	fail bool
}

func (s *flakyLoadStorage) Load(ctx context.Context, key string) ([]byte, error) {
	if s.fail && key == s.key {
		return nil, errors.New("storage unavailable")
	}
	return s.FileStorage.Load(ctx, key)
}

// TestFleetSecretKeptOnReadError: a process that cannot read the fleet's
// key secret (the storage fails, the secret is there) must not make a new
// one over it: every process started after it would hash keys under
// another secret, and each key would get its budget afresh.
func TestFleetSecretKeptOnReadError(t *testing.T) {
	ctx := context.Background()
	st := &flakyLoadStorage{FileStorage: certmagic.FileStorage{Path: t.TempDir()}, key: keySecretPath}
	first, err := fleetSecret(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	st.fail = true
	if got, err := fleetSecret(ctx, st); err == nil && !bytes.Equal(got, first) {
		t.Errorf("a failed read of the secret gave another secret, without an error")
	}
	st.fail = false
	if stored, err := st.Load(ctx, keySecretPath); err != nil || !bytes.Equal(stored, first) {
		t.Errorf("the fleet's secret in storage was replaced after a failed read (err %v)", err)
	}
}

// TestCorruptLedgerFileOfAnotherInstance: one instance's file that does
// not decode (a storage that wrote it partly, a crash mid-write) does not
// stop every other instance from reading the rest of the fleet's spend:
// it is skipped, and the sync is counted as failed.
func TestCorruptLedgerFileOfAnotherInstance(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	st := &certmagic.FileStorage{Path: t.TempDir()}
	b, l := storedBudget(t, &Budget{Name: "corrupt", Limits: []BudgetLimit{{1000, "day"}}}, st, "a")
	dir := "llm_router/budgets/corrupt/" + periodDay.windowAt(t0, time.UTC).id + "/"
	if err := st.Store(ctx, dir+"b.json", []byte(`{"instance":"b","spend":{"":7}}`)); err != nil {
		t.Fatal(err)
	}
	if err := st.Store(ctx, dir+"c.json", []byte(`{"instance":"c","spend":{"":3`)); err != nil {
		t.Fatal(err)
	}
	l.add(b, "", 1, t0)
	if err := l.sync(ctx, t0, false); err == nil {
		t.Error("a sync that could not read a file succeeded")
	}
	if s := l.spend("", t0); s[periodDay] != 8 {
		t.Errorf("spend %v after the sync, want 8: its own 1 and b's 7", s[periodDay])
	}
}

// TestCorruptOwnLedgerFile: an instance whose own file does not decode
// writes it anew from the spend it knows, rather than failing every sync
// of the window from then on and losing what it spends to its next
// restart.
func TestCorruptOwnLedgerFile(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	st := &certmagic.FileStorage{Path: t.TempDir()}
	cfg := &Budget{Name: "corrupt_own", Limits: []BudgetLimit{{1000, "day"}}, Key: "{k}"}
	b, l := storedBudget(t, cfg, st, "a")
	l.add(b, "team", 1, t0)
	if err := l.sync(ctx, t0, false); err != nil {
		t.Fatal(err)
	}
	own := "llm_router/budgets/corrupt_own/" + periodDay.windowAt(t0, time.UTC).id + "/a.json"
	if err := st.Store(ctx, own, []byte(`{"instance":"a","spend":{"team":1`)); err != nil {
		t.Fatal(err)
	}
	l.add(b, "team", 2, t0)
	_ = l.sync(ctx, t0, false) // fails, or writes the file anew
	l.add(b, "team", 4, t0)
	if err := l.sync(ctx, t0, false); err != nil {
		t.Errorf("the sync after the file was written anew: %v", err)
	}
	// a restart reads back what it spent
	_, restarted := storedBudget(t, cfg, st, "a")
	if err := restarted.sync(ctx, t0, false); err != nil {
		t.Fatal(err)
	}
	if s := restarted.spend("team", t0); s[periodDay] != 7 {
		t.Errorf("after a restart the key has %v spent, want 7", s[periodDay])
	}
}

// TestBudgetNameIsOnePathSegment: a budget's name is a directory of its
// ledger files in Caddy's storage. One that is not a single segment
// ("../x", "a/b") put them outside the budgets' directory, up to outside
// the storage itself, where pruning deletes, or in another budget's; it
// is refused at load.
func TestBudgetNameIsOnePathSegment(t *testing.T) {
	for _, name := range []string{"../../../escaped", "a/b", "..", ".", `a\b`, "a\x00b"} {
		var r Router
		quoted, _ := json.Marshal(name)
		cfg := `{"providers":[{"name":"p","base_url":"http://127.0.0.1:1/v1"}],"models":[{"name":"a"}],
			"budgets":[{"name":` + string(quoted) + `,"limits":[{"amount":1,"period":"day"}]}]}`
		if err := json.Unmarshal([]byte(cfg), &r); err != nil {
			t.Fatal(err)
		}
		r.setDefaults()
		if err := r.Validate(); err == nil || !strings.Contains(err.Error(), "budget") {
			t.Errorf("budget name %q: Validate() = %v, want it refused", name, err)
		}
	}
}

// TestCorruptOwnEndedLedgerFile: the spend of an ended window is written
// to this instance's file of that window even when the file no longer
// decodes (written anew), rather than failing every sync until the window
// is past keeping.
func TestCorruptOwnEndedLedgerFile(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 28, 11, 59, 59, 0, time.UTC)
	t1 := t0.Add(2 * time.Second) // 12:00:01
	st := &certmagic.FileStorage{Path: t.TempDir()}
	b, l := storedBudget(t, &Budget{Name: "corrupt_ended", Limits: []BudgetLimit{{1000, "hour"}}}, st, "a")
	ended := "llm_router/budgets/corrupt_ended/" + periodHour.windowAt(t0, time.UTC).id + "/a.json"
	if err := st.Store(ctx, ended, []byte(`{"spend":{"":1`)); err != nil {
		t.Fatal(err)
	}
	l.add(b, "", 2, t0)
	l.add(b, "", 4, t1) // the key moves on: the old hour's 2 are to be written there
	_ = l.sync(ctx, t1, false)
	if err := l.sync(ctx, t1, false); err != nil {
		t.Errorf("the sync after the ended window's file was written anew: %v", err)
	}
	if f, err := loadInstanceFile(ctx, st, ended); err != nil || f.Spend[""] != 2 {
		t.Errorf("the ended hour's file holds %v (err %v), want the 2 spent in it", f.Spend, err)
	}
}

// TestStorageIOKeepsAnAnswer: a storage step that answered in time is
// never reported as timed out. The step's context is canceled as it ends,
// and a caller that came to wait only after that saw the cancellation as
// a deadline (one in some ten thousand steps): the fleet's key secret then
// went unused (keys hashed apart from the fleet's), a slot's lock was
// taken and never released, a first sync that wrote counted as failed.
func TestStorageIOKeepsAnAnswer(t *testing.T) {
	for i := range 100_000 {
		v, err := storageIO(nil, func(context.Context) (int, error) { return 1, nil })
		if err != nil || v != 1 {
			t.Fatalf("step %d answered 1 at once; storageIO returned %v, %v", i, v, err)
		}
	}
}

// blockingStorage is a file storage whose reads block, ignoring their
// context, until release is closed: a storage that hangs at run time.
type blockingStorage struct {
	certmagic.FileStorage
	release chan struct{}
}

func (s *blockingStorage) Load(ctx context.Context, key string) ([]byte, error) {
	<-s.release
	return s.FileStorage.Load(ctx, key)
}

// TestSyncLoopOnAHungStorage: a storage that stops answering while the
// sync loop runs makes each sync fail at its deadline, counted (and so
// alerted on) as any failed sync, rather than hold the loop in its first
// sync for good, when the fleet stops sharing its spend without a word.
func TestSyncLoopOnAHungStorage(t *testing.T) {
	old := loopSyncTimeout
	loopSyncTimeout = 20 * time.Millisecond
	st := &blockingStorage{FileStorage: certmagic.FileStorage{Path: t.TempDir()}, release: make(chan struct{})}
	_, l := storedBudget(t, &Budget{Name: "hung_loop", Limits: []BudgetLimit{{1000, "day"}}}, st, "a")
	l.interval, l.wake, l.done = 10*time.Millisecond, make(chan struct{}, 1), make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go l.run(ctx)
	t.Cleanup(func() {
		cancel()
		close(st.release)
		<-l.done
		loopSyncTimeout = old
	})
	deadline := time.After(10 * time.Second)
	for l.failures.Load() < 3 {
		select {
		case <-deadline:
			t.Fatalf("%d failed syncs counted in 10 s of a hung storage, want one per interval", l.failures.Load())
		case <-time.After(5 * time.Millisecond): // polled: the failures happen on the loop's clock
		}
	}
}

// lostAnswerStorage is a file storage whose next write is made but
// answered with an error (a network storage whose answer was lost).
type lostAnswerStorage struct {
	certmagic.FileStorage
	lose bool
}

func (s *lostAnswerStorage) Store(ctx context.Context, key string, value []byte) error {
	if err := s.FileStorage.Store(ctx, key, value); err != nil || !s.lose {
		return err
	}
	s.lose = false
	return errors.New("connection reset after the write")
}

// TestWriteMadeButAnsweredWithAnError: a ledger write that the storage
// made but answered with an error is not added again at the next sync:
// the spend would count twice, in storage and for every instance.
func TestWriteMadeButAnsweredWithAnError(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	st := &lostAnswerStorage{FileStorage: certmagic.FileStorage{Path: t.TempDir()}}
	b, l := storedBudget(t, &Budget{Name: "lost_answer", Limits: []BudgetLimit{{1000, "day"}}}, st, "a")
	l.add(b, "", 1, t0)
	st.lose = true
	_ = l.sync(ctx, t0, false)
	if err := l.sync(ctx, t0, false); err != nil {
		t.Fatal(err)
	}
	for p := range periodCount {
		f, err := loadInstanceFile(ctx, st, "llm_router/budgets/lost_answer/"+p.windowAt(t0, time.UTC).id+"/a.json")
		if err != nil || f.Spend[""] != 1 {
			t.Errorf("%s: storage holds %v (err %v), want the 1 spent", p, f.Spend[""], err)
		}
	}
	if s := l.spend("", t0); s != [periodCount]float64{1, 1, 1, 1} {
		t.Errorf("the ledger holds %v spent, want 1 in each period", s)
	}
}
