package llmrouter

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"reflect"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// pruneAfter is how long after a window ended its files are kept. A
// window id does not say its time zone, so an instance reads another
// zone's stamps (a fleet sharing the storage with another timezone, or
// this one before a change of it) as up to 26 hours off; two days keep
// such a window's current files, and the previous window of every period,
// for instances whose clocks lag.
const pruneAfter = 48 * time.Hour

func (l *budgetLedger) run(ctx context.Context) {
	defer close(l.done)
	defer func() {
		if v := recover(); v != nil {
			l.logger.Error("budget sync panicked", zap.String("budget", l.name), zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
		}
	}()
	l.mu.Lock()
	interval := l.interval
	l.mu.Unlock()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.wake: // the owner changed its interval
			l.mu.Lock()
			interval = l.interval
			l.mu.Unlock()
			t.Reset(interval)
			continue
		case <-t.C:
		}
		// bounded: a storage that stops answering fails each sync at its
		// deadline, counted, rather than hold the loop in one sync for
		// good; Destruct's cancellation reaches the storage through ctx
		at := now()
		_, err := storageIOWith(ctx, loopSyncTimeout, func(ctx context.Context) (struct{}, error) { return struct{}{}, l.sync(ctx, at, false) })
		if ctx.Err() != nil {
			return // Destruct syncs once more
		}
		if err != nil {
			l.syncFailed(err)
		}
		// the pruning apart, bounded too: deleting many past windows may
		// outlast a sync's deadline and must not count as a failed sync
		// nor hold the next ones (it goes on in the background)
		var windows [periodCount]window
		for p := range periodCount {
			windows[p] = l.window(p, at)
		}
		if _, err := storageIOWith(ctx, loopSyncTimeout, func(ctx context.Context) (struct{}, error) { l.pruneDue(ctx, windows); return struct{}{}, nil }); err != nil {
			l.logger.Warn("deleting a budget's past windows from storage outlasted its deadline; it goes on",
				zap.String("budget", l.name), zap.Error(err))
		}
	}
}

// syncFailed counts and logs a failed sync; the budget keeps counting
// locally (fail open).
func (l *budgetLedger) syncFailed(err error) {
	metrics.budgetSyncFailures.WithLabelValues(l.name).Inc()
	l.failures.Add(1)
	prev := l.lastSync.Load()
	l.lastSync.Store(&syncResult{at: now(), err: err.Error()})
	if prev == nil || prev.err == "" || now().Sub(prev.at) > time.Minute {
		l.logger.Warn("budget spend could not be synced with storage; counting locally until it can",
			zap.String("budget", l.name), zap.Error(err))
	}
}

// instanceFile is what one instance stores for one budget and period.
type instanceFile struct {
	Instance string             `json:"instance"`
	Updated  time.Time          `json:"updated"`
	Spend    map[string]float64 `json:"spend"` // by key
}

// sync writes this instance's spend of the current periods to storage and
// reads the other instances', in one file per instance, budget and period
// (as caddy-ratelimit does for its zones). Only this instance writes its
// own file, so adding what it spent since the last sync to what the file
// holds is exact, for keys in memory and keys dropped from it alike. With
// prune, it also deletes the files of past windows (pruneDue, which the
// sync loop runs apart, each bounded on its own; a config load or a stop
// does not prune).
func (l *budgetLedger) sync(ctx context.Context, t time.Time, prune bool) error {
	if l.storage == nil {
		return nil
	}
	// one sync at a time: one that outlived its deadline on a storage that
	// does not answer may still be running (storageIO); the spend it took
	// is written by it, or given back when it fails. This one fails: the
	// storage has not answered
	if !l.syncing.TryLock() {
		return errSyncPending
	}
	defer l.syncing.Unlock()
	var errs []error
	var windows [periodCount]window
	for p := range periodCount {
		windows[p] = l.window(p, t)
	}
	if err := l.syncEnded(ctx, windows); err != nil {
		errs = append(errs, err)
	}
	for p := range periodCount {
		if err := l.syncPeriod(ctx, p, windows[p]); err != nil {
			errs = append(errs, err)
		}
	}
	if prune {
		l.pruneDue(ctx, windows)
	}
	if len(errs) == 0 {
		l.lastSync.Store(&syncResult{at: now()})
		l.syncs.Add(1)
	}
	return errors.Join(errs...)
}

// pruneDue prunes once an hour: every period begins on an hour, so a new
// hour is when any window may have gone past keeping. One pruning at a
// time: one that outlived its deadline may still be running.
func (l *budgetLedger) pruneDue(ctx context.Context, windows [periodCount]window) {
	if !l.pruning.TryLock() {
		return
	}
	defer l.pruning.Unlock()
	hour := windows[periodHour].id
	if l.prunedAt == hour {
		return
	}
	// housekeeping, not the spend: a failure is logged and retried at the
	// next sync, and does not count as a failed sync
	if err := l.prune(ctx, windows); err != nil {
		l.logger.Warn("could not delete a budget's past windows from storage; will retry",
			zap.String("budget", l.name), zap.Error(err))
		return
	}
	l.prunedAt = hour
}

func (l *budgetLedger) syncPeriod(ctx context.Context, p period, w window) error {
	dir := path.Join(budgetStoragePrefix, l.name, w.id)
	own := path.Join(dir, l.instance+".json")

	// take the unsynced spend of this period
	deltas := map[string]float64{}
	l.mu.Lock()
	take := func(key string, ks *keySpend) {
		if ps := &ks.periods[p]; ps.id == w.id && ps.delta != 0 {
			deltas[key] += ps.delta
			ps.base += ps.delta
			ps.delta = 0
		}
	}
	for _, key := range l.keys.Keys() {
		if ks, ok := l.keys.Peek(key); ok {
			take(key, ks)
		}
	}
	for key, ks := range l.spilled {
		take(key, ks)
		if !l.keepSpilled(ks) {
			delete(l.spilled, key)
		}
	}
	l.mu.Unlock()
	giveBack := func() {
		l.mu.Lock()
		for key, d := range deltas {
			if ks, ok := l.keys.Peek(key); ok && ks.periods[p].id == w.id {
				ks.periods[p].base -= d
				ks.periods[p].delta += d
			} else {
				// added to what is spilled already: the key may have other
				// periods' spend there, or have left memory again since
				ks := l.spilled[key]
				if ks == nil {
					ks = new(keySpend)
					l.spilled[key] = ks
				}
				l.advance(key, p, &ks.periods[p], w).delta += d
			}
		}
		l.mu.Unlock()
	}

	mine, err := loadInstanceFile(ctx, l.storage, own)
	var corrupt []error
	if errors.Is(err, errCorruptFile) {
		// only this instance writes the file: rewritten from what memory
		// holds, else every sync of the window would fail on it, and what
		// is spent meanwhile would be lost to a restart
		l.logger.Error("this instance's budget ledger file does not decode; writing it anew from the spend in memory",
			zap.String("budget", l.name), zap.String("file", own), zap.Error(err))
		corrupt = append(corrupt, err)
		mine, err = l.storedSpend(p, w, deltas), nil
	}
	if err != nil {
		giveBack()
		return err
	}
	if len(deltas) > 0 || corrupt != nil {
		for key, d := range deltas {
			mine.Spend[key] += d
		}
		if err := l.storeOwn(ctx, own, mine); err != nil {
			giveBack()
			return err
		}
	}

	others := map[string]float64{}
	names, err := l.storage.List(ctx, dir, false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// a file that does not decode stays so until its instance writes it
	// again (never, for one gone): skipped, so that it does not keep every
	// instance from reading the rest of the fleet; the sync still fails
	for _, name := range names {
		if path.Base(name) == l.instance+".json" || !strings.HasSuffix(name, ".json") {
			continue
		}
		f, err := loadInstanceFile(ctx, l.storage, name)
		if errors.Is(err, errCorruptFile) {
			corrupt = append(corrupt, err)
			continue
		}
		if err != nil {
			return err
		}
		for key, v := range f.Spend {
			others[key] += v
		}
	}

	// what storage says is now this period's truth, for the keys in memory
	// (what was added meanwhile stays in delta), unless a key has moved on
	// to the next window while the storage answered: what it holds there
	// is newer than anything read here
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, key := range l.keys.Keys() {
		ks, _ := l.keys.Peek(key)
		if ps := l.advance(key, p, &ks.periods[p], w); ps.id == w.id {
			ps.base, ps.others = mine.Spend[key], others[key]
		}
	}
	// while there is room, bring in the keys spent on elsewhere or before a
	// restart, so that their first request here already knows their spend
	for _, spent := range []map[string]float64{mine.Spend, others} {
		for key := range spent {
			if l.keys.Len() >= maxBudgetKeys {
				return errors.Join(corrupt...)
			}
			if !l.keys.Contains(key) {
				ks := new(keySpend)
				ks.periods[p] = periodSpend{id: w.id, start: w.start.UnixNano(), base: mine.Spend[key], others: others[key]}
				l.keys.Add(key, ks)
			}
		}
	}
	return errors.Join(corrupt...)
}

// storeOwn writes f as this instance's file own. A write that the storage
// answers with an error may have been made all the same (a network
// storage whose answer was lost): the file is read back, and one that
// holds this write (its Updated) was made, so that what it added is not
// given back to be added again by the next sync.
func (l *budgetLedger) storeOwn(ctx context.Context, own string, f instanceFile) error {
	f.Instance, f.Updated = l.instance, now()
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	err = l.storage.Store(ctx, own, b)
	if err == nil {
		return nil
	}
	// read back even when ctx has ended: a write canceled late (a stop)
	// may have been made
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storageTimeout)
	defer cancel()
	if back, lerr := loadInstanceFile(rctx, l.storage, own); lerr == nil && back.Updated.Equal(f.Updated) {
		return nil
	}
	return err
}

// storedSpend is what this instance's file of window w held at the last
// sync, as far as memory knows (the keys in it, and those spilled), before
// deltas were taken (l.mu not held): what a file that no longer decodes is
// written anew from.
func (l *budgetLedger) storedSpend(p period, w window, deltas map[string]float64) instanceFile {
	f := instanceFile{Spend: map[string]float64{}}
	l.mu.Lock()
	defer l.mu.Unlock()
	add := func(key string, ks *keySpend) {
		if ps := ks.periods[p]; ps.id == w.id {
			if v := ps.base - deltas[key]; v > 0 {
				f.Spend[key] = max(f.Spend[key], v)
			}
		}
	}
	for _, key := range l.keys.Keys() {
		ks, _ := l.keys.Peek(key)
		add(key, ks)
	}
	for key, ks := range l.spilled {
		add(key, ks)
	}
	return f
}

// syncEnded adds to this instance's files of windows that have ended the
// spend they had unsynced when their keys moved on (budgetLedger.advance),
// first moving every key on, idle and spilled ones included. No limit reads those windows any more, but an
// instance whose clock lags still does, and they are the record of what
// was spent. What storage does not take is kept for the next sync, unless
// its window has gone past keeping (pruneAfter).
func (l *budgetLedger) syncEnded(ctx context.Context, current [periodCount]window) error {
	l.mu.Lock()
	for _, key := range l.keys.Keys() { // idle keys too
		ks, _ := l.keys.Peek(key)
		for p := range periodCount {
			l.advance(key, p, &ks.periods[p], current[p])
		}
	}
	for key, ks := range l.spilled {
		for p := range periodCount {
			l.advance(key, p, &ks.periods[p], current[p])
		}
		if !l.keepSpilled(ks) {
			delete(l.spilled, key)
		}
	}
	ended, dropped := l.ended, l.endedDropped
	l.ended, l.endedDropped = nil, 0
	l.mu.Unlock()
	if dropped > 0 {
		l.logger.Warn("storage has not taken the spend of ended windows for a while; dropped what did not fit in memory from their record (limits are unaffected)",
			zap.String("budget", l.name), zap.Int("dropped", dropped))
	}
	if len(ended) == 0 {
		return nil
	}
	byWindow := map[string]map[endedWindowKey]float64{}
	for k, d := range ended {
		if byWindow[k.window] == nil {
			byWindow[k.window] = map[endedWindowKey]float64{}
		}
		byWindow[k.window][k] = d
	}
	var errs []error
	for id, spend := range byWindow {
		own := path.Join(budgetStoragePrefix, l.name, id, l.instance+".json")
		mine, err := loadInstanceFile(ctx, l.storage, own)
		if errors.Is(err, errCorruptFile) {
			// what it held cannot be read, and memory holds no more of
			// an ended window: written anew with what is unsynced, else
			// every sync would fail on it until the window is past keeping
			l.logger.Error("this instance's budget ledger file of an ended window does not decode; writing it anew with the spend not yet in it",
				zap.String("budget", l.name), zap.String("file", own), zap.Error(err))
			errs = append(errs, err)
			mine, err = instanceFile{Spend: map[string]float64{}}, nil
		}
		if err == nil {
			for k, d := range spend {
				mine.Spend[k.key] += d
			}
			err = l.storeOwn(ctx, own, mine)
		}
		if err == nil {
			continue
		}
		errs = append(errs, err)
		l.mu.Lock()
		for k, d := range spend {
			if l.windowKept(k, current) {
				l.keepEnded(k, d)
			}
		}
		l.mu.Unlock()
	}
	return errors.Join(errs...)
}

// windowKept says whether k's window is still within pruneAfter of its
// period's current window: storage keeps its files that long.
func (l *budgetLedger) windowKept(k endedWindowKey, current [periodCount]window) bool {
	w := current[k.p]
	start, ok := windowStart(k.window, w.start.Location())
	return !ok || !k.p.windowAt(start, w.start.Location()).end.Before(w.start.Add(-pruneAfter))
}

// prune deletes the budget's files of windows that ended more than
// pruneAfter before the current window of their period (in current) began:
// an instance reads only its current windows, so they are never read
// again, and storage would otherwise gain a directory an hour for an hourly
// limit, forever. Any instance prunes every instance's files (those of
// instances gone for good included); it runs once an hour, from the sync
// loop (not at a config load, which would otherwise wait on a first
// pruning of years of files).
func (l *budgetLedger) prune(ctx context.Context, current [periodCount]window) error {
	names, err := l.storage.List(ctx, path.Join(budgetStoragePrefix, l.name), false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, name := range names {
		id := path.Base(name)
		pname, _, _ := strings.Cut(id, "-")
		p, ok := parsePeriod(pname)
		if !ok {
			continue // not a window
		}
		if !l.windowKept(endedWindowKey{p: p, window: id}, current) {
			if err := l.storage.Delete(ctx, name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// errCorruptFile is a ledger file that storage returned but that does not
// decode.
var errCorruptFile = errors.New("not a budget ledger file")

func loadInstanceFile(ctx context.Context, s certmagic.Storage, key string) (instanceFile, error) {
	f := instanceFile{Spend: map[string]float64{}}
	b, err := s.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return f, err
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("%s: %w: %w", key, errCorruptFile, err)
	}
	if f.Spend == nil {
		f.Spend = map[string]float64{}
	}
	return f, nil
}

// budgetInstances are this process's ledger identities, one per storage
// (and override): every budget of the process writes its files under it.
var budgetInstances = caddy.NewUsagePool()

// storageTimeout bounds each storage step of a config load or unload (the
// identity, the key secret, the first and last sync), so that a storage
// that does not answer cannot hang a load or a stop, which hold Caddy's
// config lock.
var storageTimeout = 5 * time.Second

// loopSyncTimeout bounds each sync (and pruning) of the sync loop: longer
// than a load's step, since no lock waits on it and a large fleet's files
// on a slow storage take a while, but not forever, so that a storage that
// stops answering shows as failed syncs.
var loopSyncTimeout = time.Minute

// errStorageTimeout is a storage step that did not end by its deadline.
var errStorageTimeout = errors.New("the storage did not answer in time")

// errSyncPending is a sync that could not begin: one begun earlier has
// not ended, its storage not answering.
var errSyncPending = errors.New("an earlier sync is still waiting for the storage")

// errStorageHung is a load or unload step not begun: an earlier step on
// the same storage passed its deadline and has not answered yet.
var errStorageHung = errors.New("the storage has not answered an earlier step")

// storageIO runs op on st with a context that ends after storageTimeout,
// and returns by then even if the storage ignores its context: op then
// goes on in the background, its result dropped, and the load or unload
// goes on without it (fail open, as a failed sync does). While such a step
// has not answered, the storage is hung: further steps on it fail at once
// (errStorageHung), so that a load of many budgets waits one deadline on
// it, not one a step, with Caddy's config lock held.
func storageIO[T any](st certmagic.Storage, op func(ctx context.Context) (T, error)) (T, error) {
	key := hungKey(st)
	if key != nil && hungSteps.pending(key) {
		var zero T
		return zero, errStorageHung
	}
	var mu sync.Mutex
	late, ended := false, false
	v, err := storageIOWith(context.Background(), storageTimeout, func(ctx context.Context) (T, error) {
		defer func() {
			mu.Lock()
			ended = true
			if late {
				hungSteps.answered(key)
			}
			mu.Unlock()
		}()
		return op(ctx)
	})
	if key != nil && errors.Is(err, errStorageTimeout) {
		mu.Lock()
		if !ended {
			late = true
			hungSteps.add(key)
		}
		mu.Unlock()
	}
	return v, err
}

// hungSteps counts, per storage, the load and unload steps that passed
// their deadline and have not answered yet (storageIO).
var hungSteps = hungCounts{n: map[any]int{}}

type hungCounts struct {
	mu sync.Mutex
	n  map[any]int
}

func (h *hungCounts) pending(key any) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[key] > 0
}

func (h *hungCounts) add(key any) {
	h.mu.Lock()
	h.n[key]++
	h.mu.Unlock()
}

func (h *hungCounts) answered(key any) {
	h.mu.Lock()
	if h.n[key]--; h.n[key] <= 0 {
		delete(h.n, key)
	}
	h.mu.Unlock()
}

// hungKey is how hungSteps knows a storage: the value itself when it can
// be a map key (a pointer, as storage modules give), else nil (no steps
// skipped).
func hungKey(st certmagic.Storage) any {
	if st == nil || !reflect.TypeOf(st).Comparable() {
		return nil
	}
	return st
}

// storageIOWith is storageIO with its own timeout, whose op's context is
// also canceled with parent; the wait still ends only with op or at the
// deadline, so that what op does on its cancellation (a sync giving back
// the spend it took) is done when it returns.
func storageIOWith[T any](parent context.Context, timeout time.Duration, op func(ctx context.Context) (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ctx, cancel := context.WithTimeout(parent, timeout)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	done := make(chan result, 1)
	go func() {
		defer cancel()
		defer func() {
			if v := recover(); v != nil {
				done <- result{err: fmt.Errorf("storage panicked: %v", v)}
			}
		}()
		v, err := op(ctx)
		done <- result{v, err}
	}()
	// not ctx.Done: op cancels ctx once it has answered, and a wait that
	// began after that would find both ready and might take the deadline
	select {
	case r := <-done:
		return r.v, r.err
	case <-deadline.C:
		var zero T
		return zero, fmt.Errorf("%w (%s)", errStorageTimeout, timeout)
	}
}

// budgetInstance is the identity under which a process writes its budget
// spend: unique among the processes that share the storage, even when they
// share Caddy's data directory (and so its instance ID), and the same
// across restarts of one process.
type budgetInstance struct {
	id      string
	storage certmagic.Storage
	lock    string // held for the process's life, "" if none
	key     string // in budgetInstances
	secret  []byte // keys the hash of budget key values, shared by the fleet
}

// acquireInstance returns the identity of this process in storage (where
// names it). With an override (budget_instance) that is the identity.
// Otherwise it is the host name and Caddy's instance ID, which processes
// sharing a data directory share, plus the first slot number whose lock no
// other live process holds: the lock is the "something only this process
// holds". A graceful stop unlocks the slot, so a restart takes the same
// one; after a crash the stale lock expires within seconds (certmagic
// keeps a held lock fresh).
func acquireInstance(storage certmagic.Storage, where, override string, logger *zap.Logger) (*budgetInstance, error) {
	key := where + "\x00" + override
	v, _, err := budgetInstances.LoadOrNew(key, func() (caddy.Destructor, error) {
		bi := &budgetInstance{storage: storage, key: key}
		secret, err := storageIO(storage, func(ctx context.Context) ([]byte, error) { return fleetSecret(ctx, storage) })
		if err != nil {
			// fail open, as a sync does: this process's keys will not
			// match the fleet's until a restart can read the secret
			logger.Warn("could not read or make the budget key secret in storage; hashing keys with a secret of this process",
				zap.Error(err))
			secret = localSecret
		}
		bi.secret = secret
		if override != "" {
			bi.id = safeName(override)
			logger.Info("budget ledger identity", zap.String("instance", bi.id), zap.String("from", "budget_instance"))
			return bi, nil
		}
		host, _ := os.Hostname()
		uuid, err := caddy.InstanceID()
		if err != nil {
			return nil, err
		}
		base := safeName(host + "-" + uuid.String())
		bi.id = base
		locker, ok := storage.(certmagic.TryLocker)
		if !ok {
			logger.Warn("the storage cannot lock: processes that share Caddy's data directory share a budget identity; set budget_instance",
				zap.String("instance", bi.id))
			return bi, nil
		}
		slot, err := storageIO(storage, func(ctx context.Context) (int, error) {
			for slot := 0; slot < 64; slot++ {
				got, err := locker.TryLock(ctx, slotLock(base, slot))
				if err != nil || got {
					return slot, err
				}
			}
			return -1, nil
		})
		switch {
		case err != nil:
			// a slot the storage locks after the deadline stays locked
			// until its lock goes stale: the next start takes another
			logger.Warn("could not lock a budget identity slot; using the host and instance ID alone",
				zap.String("instance", bi.id), zap.Error(err))
			return bi, nil
		case slot >= 0:
			bi.id, bi.lock = base+"-"+strconv.Itoa(slot), slotLock(base, slot)
		}
		logger.Info("budget ledger identity", zap.String("instance", bi.id))
		return bi, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*budgetInstance), nil
}

// slotLock names the storage lock of an identity slot.
func slotLock(base string, slot int) string {
	return "llm_router_instance_" + base + "_" + strconv.Itoa(slot)
}

// keySecretPath holds the secret that keys the hash of budget key values,
// the same for every process that shares the storage.
const keySecretPath = "llm_router/budget_key_secret"

// fleetSecret loads the fleet's key secret from storage, making it (under
// a storage lock, so that two processes starting together agree) when
// there is none, or what is there is too short to be one. A read that
// fails is an error, never a reason to make another: the secret may well
// be there, and a new one would rename every hashed key for the processes
// started after, giving each its budget afresh.
func fleetSecret(ctx context.Context, storage certmagic.Storage) ([]byte, error) {
	load := func() ([]byte, bool, error) {
		b, err := storage.Load(ctx, keySecretPath)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, false, fmt.Errorf("reading the budget key secret: %w", err)
		}
		return b, err == nil && len(b) >= 32, nil
	}
	if b, ok, err := load(); ok || err != nil {
		return b, err
	}
	if err := storage.Lock(ctx, "llm_router_budget_key_secret"); err != nil {
		return nil, fmt.Errorf("locking the budget key secret: %w", err)
	}
	defer func() { _ = storage.Unlock(ctx, "llm_router_budget_key_secret") }()
	if b, ok, err := load(); ok || err != nil {
		return b, err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if err := storage.Store(ctx, keySecretPath, b); err != nil {
		return nil, fmt.Errorf("storing the budget key secret: %w", err)
	}
	return b, nil
}

// localSecret keys the hash of the key values when the storage cannot
// give the fleet's secret (acquireInstance, budgetLedger.keySecret): such
// keys are this process's alone until it restarts.
var localSecret = func() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}()

// release lets go of the identity (budgetInstances destructs it with the
// last ledger).
func (bi *budgetInstance) release() { _, _ = budgetInstances.Delete(bi.key) }

// Destruct unlocks the identity's slot, so that this process's restart
// takes it again.
func (bi *budgetInstance) Destruct() error {
	if bi.lock == "" {
		return nil
	}
	_, err := storageIO(bi.storage, func(ctx context.Context) (struct{}, error) { return struct{}{}, bi.storage.Unlock(ctx, bi.lock) })
	return err
}

// safeName keeps letters, digits, '.', '-' and '_' of a name for a storage
// path, and replaces the rest.
func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		}
		return '_'
	}, s)
}

// Interface guards
var _ caddy.Destructor = (*budgetInstance)(nil)
