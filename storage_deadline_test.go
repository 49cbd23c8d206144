package llmrouter

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/certmagic"
)

func init() { caddy.RegisterModule(hangStorage{}) }

// hangStorage is a storage whose every operation on the router's keys and
// locks never returns (until the test lets it go), ignoring its context:
// the worst a hung network file system or database can do. Anything else
// (Caddy's own keys) goes to a file system storage.
type hangStorage struct{}

// hang is what the hanging storage waits on, and where it keeps the rest.
var hang struct {
	release chan struct{}
	root    string
	steps   atomic.Int64 // router steps begun on it
}

func (hangStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caddy.storage.llm_router_test_hang", New: func() caddy.Module { return new(hangStorage) }}
}

func (hangStorage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error { d.Next(); return nil }

func (hangStorage) CertMagicStorage() (certmagic.Storage, error) {
	return &hangingStorage{FileStorage: certmagic.FileStorage{Path: hang.root}}, nil
}

type hangingStorage struct{ certmagic.FileStorage }

// wait hangs on the router's names until the test ends, then fails them.
func (s *hangingStorage) wait(name string) error {
	if strings.HasPrefix(name, "llm_router") {
		hang.steps.Add(1)
		<-hang.release
		return errors.New("the test is over")
	}
	return nil
}

func (s *hangingStorage) Lock(ctx context.Context, name string) error {
	if err := s.wait(name); err != nil {
		return err
	}
	return s.FileStorage.Lock(ctx, name)
}

func (s *hangingStorage) TryLock(ctx context.Context, name string) (bool, error) {
	if err := s.wait(name); err != nil {
		return false, err
	}
	return s.FileStorage.TryLock(ctx, name)
}

func (s *hangingStorage) Unlock(ctx context.Context, name string) error {
	if err := s.wait(name); err != nil {
		return err
	}
	return s.FileStorage.Unlock(ctx, name)
}

func (s *hangingStorage) Load(ctx context.Context, key string) ([]byte, error) {
	if err := s.wait(key); err != nil {
		return nil, err
	}
	return s.FileStorage.Load(ctx, key)
}

func (s *hangingStorage) Store(ctx context.Context, key string, value []byte) error {
	if err := s.wait(key); err != nil {
		return err
	}
	return s.FileStorage.Store(ctx, key, value)
}

func (s *hangingStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	if err := s.wait(prefix); err != nil {
		return nil, err
	}
	return s.FileStorage.List(ctx, prefix, recursive)
}

// TestStorageThatNeverAnswers: a config with synced budgets (their loop
// not due in the test) loads, serves and unloads on a storage that never
// answers: its first storage step gives up at its deadline, the others are
// not begun (one deadline for the load, not one a budget), and the budgets
// count in memory meanwhile.
func TestStorageThatNeverAnswers(t *testing.T) {
	old := storageTimeout
	storageTimeout = 200 * time.Millisecond
	hang.release, hang.root = make(chan struct{}), t.TempDir()
	hang.steps.Store(0)
	t.Cleanup(func() {
		storageTimeout = old
		close(hang.release) // the storage answers at last: its goroutines end
	})
	g := newGateway(t, defaultRouter) // the mocks, and a config to go back to
	global := strings.Replace(globalOptions, "grace_period 1ns", "grace_period 1ns\n\tstorage llm_router_test_hang", 1)
	site := siteAddress + " {\n\tllm_router {" + g.fill(defaultRouter) +
		"\n\tbudget team {\n\t\tlimit 100 per day\n\t\tkey {http.request.header.X-Team}\n\t}" +
		"\n\tbudget user {\n\t\tlimit 10 per day\n\t\tkey {http.request.header.X-User}\n\t}" +
		"\n\tbudget all {\n\t\tlimit 1000 per month\n\t}\n\tbudget_sync 1h\n\t}\n}\n"
	adapt := func(caddyfileText string) []byte {
		cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfileText), nil)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	load := func(cfg []byte) <-chan error {
		done := make(chan error, 1)
		go func() { done <- loadConfig(string(cfg)) }()
		return done
	}
	if err := waitFor(t, load(adapt(global+"\n"+site)), "the config load on a hung storage"); err != nil {
		t.Fatal(err)
	}
	resp, body := g.post(chatBody("simple_qa", false), "X-Team", "storefront")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	for _, name := range []string{"team", "user", "all"} {
		if b := budgetOf(t, name); b.SyncFailures == 0 {
			t.Errorf("budget %s: the first sync, not made, was not counted as failed: %+v", name, b)
		}
	}
	if n := hang.steps.Load(); n != 1 {
		t.Errorf("%d steps begun on the hung storage during the load, want 1 (the first; the others wait for it)", n)
	}
	// unloading it (the last sync, the identity's unlock) returns too
	plain := globalOptions + "\n" + siteAddress + " {\n\tllm_router {" + g.fill(defaultRouter) + "\n\t}\n}\n"
	if err := waitFor(t, load(adapt(plain)), "the unload on a hung storage"); err != nil {
		t.Fatal(err)
	}
	if n := hang.steps.Load(); n != 1 {
		t.Errorf("%d steps begun on the hung storage by the unload too, want 1", n)
	}
}
