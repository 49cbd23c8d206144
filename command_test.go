package llmrouter

import (
	"bytes"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// TestStatsTable formats a fixed stats answer; the table is golden.
func TestStatsTable(t *testing.T) {
	at := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	mk := func(model, provider, state string, score int, req, errs int64, p50, p95, ttft time.Duration, in, out int64, cost float64) DeploymentStats {
		d := DeploymentStats{Model: model, Provider: provider, State: state, HealthScore: score, Requests: req, Attempts: req + errs, Errors: errs,
			Tokens: TokenStats{Input: in, Output: out}, Costs: moneyStats(map[string]float64{"CNY": cost})}
		d.RequestsHuman, d.AttemptsHuman, d.ErrorsHuman = humanCount(req), humanCount(req+errs), humanCount(errs)
		d.ErrorRate = ratio(errs, req)
		d.ErrorRateHuman = humanPercent(d.ErrorRate)
		var h, f latencyHistogram
		if p50 > 0 {
			h.observe(p50)
			h.observe(p50)
			h.observe(p95)
		}
		if ttft > 0 {
			f.observe(ttft)
		}
		d.Latency, d.TimeToFirstToken = h.report(), f.report()
		d.Tokens.humanize()
		return d
	}
	s := Stats{GeneratedAt: at, Deployments: []DeploymentStats{
		mk("deepseek-v3.2", "holysheep", "up", 100, 1_234_567, 1_234, 420*time.Millisecond, 1900*time.Millisecond, 180*time.Millisecond, 617_283_500, 123_456_700, 311.0868),
		mk("gpt-4.1", "holysheep", "cooldown", 85, 52_000, 2_600, 1500*time.Millisecond, 4*time.Second, 0, 26_000_000, 13_000_000, 312),
		mk("gpt-4.1", "backup", "disabled", 20, 12, 9, 0, 0, 0, 0, 0, 0),
		mk("text-embedding-3-small", "holysheep", "up", 100, 3, 0, 0, 0, 0, 1_100, 0, 0.000614),
	}}
	s.Deployments[1].CooldownHuman = "25 seconds from now"
	s.Totals = TotalStats{Requests: 1_286_579, Errors: 3_843, Costs: moneyStats(map[string]float64{"CNY": 623.0868, "USD": 0.000614})}
	s.Totals.Attempts = s.Totals.Requests + s.Totals.Errors
	s.Totals.RequestsHuman, s.Totals.AttemptsHuman, s.Totals.ErrorRateHuman = humanCount(s.Totals.Requests), humanCount(s.Totals.Attempts), humanPercent(ratio(3_843, 1_286_579))
	s.Totals.Tokens = TokenStats{Input: 643_283_500, Output: 136_456_700}
	s.Totals.Tokens.humanize()

	var buf bytes.Buffer
	if err := writeStatsTable(&buf, s); err != nil {
		t.Fatal(err)
	}
	if *update {
		os.WriteFile("testdata/stats_table.golden", buf.Bytes(), 0o644)
	}
	golden, err := os.ReadFile("testdata/stats_table.golden")
	if err != nil {
		t.Fatal(err)
	}
	if buf.String() != string(golden) {
		t.Errorf("table differs from testdata/stats_table.golden:\n%s", buf.String())
	}
}

// TestStatsAdminNoAnswer: an admin address that accepts the connection and
// never answers (a hung Caddy, another service on the port) fails the
// stats command within its deadline instead of hanging it.
func TestStatsAdminNoAnswer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // held open, never answered
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-accepted
		for _, c := range conns {
			c.Close()
		}
	})
	defer func(d time.Duration) { adminStatsTimeout = d }(adminStatsTimeout)
	adminStatsTimeout = 200 * time.Millisecond

	done := make(chan error, 1)
	go func() { done <- runStats(io.Discard, l.Addr().String()) }()
	err = waitFor(t, done, "caddy llm-router stats to give up on an admin API that never answers")
	if err == nil || !strings.Contains(err.Error(), "no answer") {
		t.Errorf("err = %v, want no answer within the deadline", err)
	}
}

// TestHumanCount: counts read as the README writes them; one that rounds
// up to the next unit is written in it (1M, not 1000k).
func TestHumanCount(t *testing.T) {
	for n, want := range map[int64]string{
		950: "950", 1000: "1k", 1234: "1.2k", 52_000: "52k", 999_949: "999.9k",
		999_950: "1M", 999_999: "1M", 1_234_567: "1.2M", 999_960_000: "1G",
	} {
		if got := humanCount(n); got != want {
			t.Errorf("humanCount(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestCalibratePrecisionFlag: --precision takes a share above 0 and at
// most 1; NaN, which compares false with both bounds, is refused too.
func TestCalibratePrecisionFlag(t *testing.T) {
	for _, p := range []string{"0", "-0.5", "1.5", "NaN"} {
		root := &cobra.Command{Use: "llm-router"}
		caddycmd.Commands()["llm-router"].CobraFunc(root)
		root.SetArgs([]string{"semantic-calibrate", "--config", "testdata/full.caddyfile", "--precision", p, "pairs.jsonl"})
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "--precision") {
			t.Errorf("--precision %s: err = %v, want it refused", p, err)
		}
	}
}
