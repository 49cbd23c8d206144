//go:build unix

package llmrouter

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestDemo runs scripts/demo.sh (what `make demo` runs): it builds Caddy and
// the mock, starts both on free 127.0.0.1 ports and checks routing, streaming, errors and
// failover out of process. A cold build of Caddy takes a few minutes.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Caddy and runs it out of process; skipped with -short")
	}
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required for the demo: %v", tool, err)
			}
			t.Skipf("%s not found; the demo needs it", tool)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "scripts/demo.sh")
	cmd.Env = append(os.Environ(), "BIN_DIR="+t.TempDir(), "KEEP_TMP=0")
	// the script and everything it starts form one process group; on
	// timeout the group gets SIGTERM so the script's trap stops Caddy
	// and the mock, and after WaitDelay the script is killed
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second

	start := time.Now()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("demo timed out after %s; output:\n%s", time.Since(start).Round(time.Second), out)
	}
	if err != nil {
		t.Fatalf("bash scripts/demo.sh: %v; output:\n%s", err, out)
	}
	t.Logf("demo passed in %s", time.Since(start).Round(time.Second))
}
