package llmrouter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/llmrouter/caddy-llm-router/internal/mockllm"
)

// caddyProcess is a real Caddy process of this module, out of process.
type caddyProcess struct {
	t         *testing.T
	bin       string
	name      string
	caddyfile string
	dataDir   string // XDG_DATA_HOME: the instance ID lives here
	url       string // the site
	admin     string // the admin API
	cmd       *exec.Cmd
	out       *lockedBuffer
	exited    chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// buildCaddy builds ./cmd/caddy once per test binary.
var buildCaddy = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "llm-router-caddy-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "caddy")
	out, err := exec.Command("go", "build", "-o", bin, "./cmd/caddy").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out)
	}
	return bin, nil
})

// newCaddyProcess writes a Caddyfile whose site runs routerBody, with its
// own ports and data directory, and the given storage directory.
func newCaddyProcess(t *testing.T, name, storage, routerBody string) *caddyProcess {
	t.Helper()
	bin, err := buildCaddy()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), name)
	p := &caddyProcess{t: t, bin: bin, name: name, dataDir: filepath.Join(dir, "data"), out: &lockedBuffer{}}
	port, admin := freePort(), freePort()
	p.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	p.admin = fmt.Sprintf("http://127.0.0.1:%d", admin)
	cf := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	auto_https off
	skip_install_trust
	storage file_system %s
	log {
		level WARN
	}
}

http://127.0.0.1:%d {
	llm_router {%s
	}
}
`, admin, storage, port, routerBody)
	p.caddyfile = filepath.Join(dir, "Caddyfile")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.caddyfile, []byte(cf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd != nil && p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("--- caddy %s output\n%s", name, p.out.String())
		}
	})
	return p
}

// start runs the process and waits until its admin API answers.
func (p *caddyProcess) start() {
	p.t.Helper()
	p.cmd = exec.Command(p.bin, "run", "--config", p.caddyfile, "--adapter", "caddyfile")
	p.cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+p.dataDir, "XDG_CONFIG_HOME="+filepath.Join(filepath.Dir(p.dataDir), "config"))
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.exited = make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	p.await("its admin API", func() bool {
		resp, err := http.Get(p.admin + "/config/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// stop asks Caddy to shut down gracefully (SIGINT) and waits for it.
func (p *caddyProcess) stop() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	waitFor(p.t, p.exited, "caddy "+p.name+" to exit")
}

// await polls cond (every 20 ms, for at most 30 s) until it holds: the
// condition is an event in another process.
func (p *caddyProcess) await(what string, cond func() bool) {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			p.t.Fatalf("caddy %s: timed out waiting for %s\n%s", p.name, what, p.out.String())
		}
		select {
		case <-p.exited:
			p.t.Fatalf("caddy %s exited while waiting for %s\n%s", p.name, what, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// chat sends a chat request for model and returns the answer's headers.
func (p *caddyProcess) chat(model string) http.Header {
	p.t.Helper()
	resp, err := http.Post(p.url+"/v1/chat/completions", "application/json", strings.NewReader(chatBody(model, false)))
	if err != nil {
		p.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		p.t.Fatalf("caddy %s: %d %s", p.name, resp.StatusCode, b)
	}
	return resp.Header
}

// budget reads one budget's stats.
func (p *caddyProcess) budget(name string) BudgetStats {
	p.t.Helper()
	resp, err := http.Get(p.admin + "/llm_router/stats")
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var s Stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		p.t.Fatal(err)
	}
	for _, b := range s.Budgets {
		if b.Name == name {
			return b
		}
	}
	p.t.Fatalf("caddy %s has no budget %s", p.name, name)
	return BudgetStats{}
}

func (b BudgetStats) spent() float64 {
	if len(b.Periods) == 0 || len(b.Periods[0].TopKeys) == 0 {
		return 0
	}
	return b.Periods[0].TopKeys[0].Spent.Amount
}

// TestBudgetFleet: two Caddy processes sharing one storage directory and
// one data directory (so one Caddy instance ID, the usual shared-volume
// setup), no balancer. Each writes its spend under its own identity, spend
// at A moves B to the downgrade route within two sync intervals, and
// neither loses the other's spend when one restarts.
func TestBudgetFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Caddy and runs two processes; skipped with -short")
	}
	mock := mockllm.New()
	srv := newMockServer(mock)
	storage := t.TempDir()
	router := `
		provider p {
			base_url ` + srv.URL + `/v1
			api_key sk-fleet-test-key-00000001
		}
		model gpt-4.1 {
			price 1000
		}
		model deepseek-v3.2 {
			price 1000
		}
		route complex_reasoning gpt-4.1
		route simple_qa deepseek-v3.2
		budget fleet_daily {
			limit 0.05 per day
			match complex_reasoning simple_qa
			downgrade simple_qa
		}
		budget_sync 300ms
		health_check {
			interval off
		}`
	a := newCaddyProcess(t, "a", storage, router)
	b := newCaddyProcess(t, "b", storage, router)
	b.dataDir = a.dataDir // one XDG_DATA_HOME: one instance ID for both
	a.start()
	b.start()

	// A spends to its limit: three answers of 0.017, the fourth downgraded
	for i := range 3 {
		if h := a.chat("complex_reasoning"); h.Get("X-LLM-Model") != "gpt-4.1" {
			t.Fatalf("A, request %d: answered by %s", i+1, h.Get("X-LLM-Model"))
		}
	}
	if h := a.chat("complex_reasoning"); h.Get("X-LLM-Budget") != "downgraded (fleet_daily)" {
		t.Fatalf("A at its limit: X-LLM-Budget %q", h.Get("X-LLM-Budget"))
	}
	// two sync intervals: A writes at its next sync, B reads at its next
	// sync after that (the second B sync to begin after A's write)
	aSyncs := a.budget("fleet_daily").Syncs
	a.await("A's next sync", func() bool { return a.budget("fleet_daily").Syncs > aSyncs })
	bSyncs := b.budget("fleet_daily").Syncs
	b.await("two syncs of B", func() bool { return b.budget("fleet_daily").Syncs >= bSyncs+2 })
	if got := b.budget("fleet_daily").spent(); math.Abs(got-4*costPerAnswer) > 1e-9 {
		t.Errorf("B sees %v spent, want A's %v", got, 4*costPerAnswer)
	}
	if h := b.chat("complex_reasoning"); h.Get("X-LLM-Budget") != "downgraded (fleet_daily)" || h.Get("X-LLM-Model") != "deepseek-v3.2" {
		t.Fatalf("B after two syncs: budget %q model %q; want downgraded by A's spend", h.Get("X-LLM-Budget"), h.Get("X-LLM-Model"))
	}

	// B restarts (same data directory: same instance): it reads back its
	// own spend and A's; A keeps B's
	b.stop()
	b.start()
	want := 5 * costPerAnswer // A's four, B's one
	if got := b.budget("fleet_daily").spent(); math.Abs(got-want) > 1e-9 {
		t.Errorf("B after its restart sees %v spent, want %v (its own and A's)", got, want)
	}
	if h := b.chat("complex_reasoning"); h.Get("X-LLM-Budget") != "downgraded (fleet_daily)" {
		t.Errorf("B after its restart: X-LLM-Budget %q; the restart reset the budget", h.Get("X-LLM-Budget"))
	}
	want += costPerAnswer
	bSyncs = b.budget("fleet_daily").Syncs
	b.await("B's next sync", func() bool { return b.budget("fleet_daily").Syncs > bSyncs })
	aSyncs = a.budget("fleet_daily").Syncs
	a.await("two syncs of A", func() bool { return a.budget("fleet_daily").Syncs >= aSyncs+2 })
	if got := a.budget("fleet_daily").spent(); math.Abs(got-want) > 1e-9 {
		t.Errorf("A sees %v spent, want %v (its own and B's, across B's restart)", got, want)
	}
	// A restarts too: it reads back its own spend and B's
	a.stop()
	a.start()
	if got := a.budget("fleet_daily").spent(); math.Abs(got-want) > 1e-9 {
		t.Errorf("A after its restart sees %v spent, want %v", got, want)
	}
	// one file per process and window, each written by its own process
	// only: B's restart took its identity back rather than a third
	files, err := filepath.Glob(filepath.Join(storage, "llm_router", "budgets", "fleet_daily", "day-*", "*.json"))
	if err != nil || len(files) != 2 {
		t.Fatalf("ledger files %v (%v), want two: one per process", files, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var content struct{ Instance string }
		if err := json.Unmarshal(b, &content); err != nil || content.Instance+".json" != filepath.Base(f) {
			t.Errorf("%s holds instance %q: written by another process than its name says", f, content.Instance)
		}
	}
}
