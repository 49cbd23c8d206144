package llmrouter

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "llm-router",
		Usage: "stats [--address <admin address>] | cost --config <file> [--cache-hit <ratio>] [--stats <file or URL> | --address <admin address>] | route --config <file> [--header 'Name: value'] <request.json | -> | semantic-calibrate --config <file> <pairs.jsonl>",
		Short: "Inspects a running LLM gateway and projects its cost",
		Long: `
Commands of the llm_router module.

  stats   prints every deployment's state, health score, traffic, error
          rate, latency and tokens, read from the running Caddy's admin
          API (GET /llm_router/stats).

  cost    projects the monthly cost of a config's llm_router handlers from
          their prices (the same prices and currency the gateway counts):
          per model and per route as if all traffic went there, and, with
          --stats or --address, at the mix of traffic the stats observed.
          Nothing is loaded or started; {env.X} keys need not be set.

            caddy llm-router cost --config Caddyfile
            caddy llm-router cost --config Caddyfile --requests 3,000,000 \
                --input-tokens 375 --output-tokens 125 --stats stats.json
            caddy llm-router cost --config caddy.json --address localhost:2019

  route   shows how a request body would be routed, without sending it:
          the variables the routing rules see, each rule's result, the
          route chosen and its candidate deployments in order (with
          today's health scores when --address names a running gateway).
          Useful to test rules in CI before a deploy.

            caddy llm-router route --config Caddyfile request.json
            echo '{"messages":[...]}' | caddy llm-router route -c Caddyfile \
                -H 'X-Team: storefront' -

  semantic-calibrate
          measures, before a semantic cache is turned on, how often it
          would serve the answer to a different question: both questions
          of each labelled pair ({"a":…,"b":…,"same":true|false}, one per
          line) are embedded with the cache's model through the configured
          providers, the guards applied, and precision and recall printed
          per threshold, with the lowest threshold that reaches
          --precision.

            caddy llm-router semantic-calibrate -c Caddyfile pairs.jsonl
`,
		CobraFunc: func(cmd *cobra.Command) {
			stats := &cobra.Command{
				Use:   "stats [--address <admin address>]",
				Short: "Prints per-deployment stats of a running gateway as a table",
				RunE: func(c *cobra.Command, _ []string) error {
					addr, _ := c.Flags().GetString("address")
					return runStats(c.OutOrStdout(), addr)
				},
			}
			stats.Flags().String("address", "", "admin API address (default: localhost:2019, or CADDY_ADMIN)")
			cmd.AddCommand(stats)

			cost := &cobra.Command{
				Use:   "cost --config <file> [--adapter <name>] [--requests <n>] [--input-tokens <n> --output-tokens <n> | --tokens <n> --output-ratio <r>] [--cache-hit <r>] [--stats <file or URL> | --address <admin address>]",
				Short: "Projects monthly cost per model, per route and for an observed traffic mix",
				Args:  cobra.NoArgs,
				RunE: func(c *cobra.Command, _ []string) error {
					f := c.Flags()
					config, _ := f.GetString("config")
					adapter, _ := f.GetString("adapter")
					statsSrc, _ := f.GetString("stats")
					addr, _ := f.GetString("address")
					reqs, _ := f.GetString("requests")
					toks, _ := f.GetString("tokens")
					ratio, _ := f.GetFloat64("output-ratio")
					hit, _ := f.GetFloat64("cache-hit")
					opts := costOptions{OutputRatio: ratio, CacheHit: hit}
					var err error
					if opts.Requests, err = parseCount("requests", reqs); err != nil {
						return err
					}
					if opts.Tokens, err = parseCount("tokens", toks); err != nil {
						return err
					}
					// an explicit split wins over tokens and ratio
					if f.Changed("input-tokens") || f.Changed("output-tokens") {
						in, _ := f.GetString("input-tokens")
						out, _ := f.GetString("output-tokens")
						nIn, err := parseCount("input-tokens", in)
						if err != nil {
							return err
						}
						nOut, err := parseCount("output-tokens", out)
						if err != nil {
							return err
						}
						opts.Tokens, opts.OutputRatio = nIn+nOut, 0
						if nIn+nOut > 0 {
							opts.OutputRatio = float64(nOut) / float64(nIn+nOut)
						}
					}
					return runCost(c.OutOrStdout(), config, adapter, opts, statsSrc, addr, f.Changed("address"))
				},
			}
			cf := cost.Flags()
			cf.StringP("config", "c", "", "Caddyfile or JSON config to price (required)")
			cf.StringP("adapter", "a", "", `config adapter (default: "caddyfile" if the file name contains "Caddyfile", else JSON)`)
			cf.String("requests", strconv.Itoa(defaultCostRequests), "requests per month (3000000 or 3,000,000)")
			cf.String("tokens", strconv.Itoa(defaultCostTokens), "tokens per request, input and output together")
			cf.Float64("output-ratio", defaultCostOutputRatio, "share of the tokens that are output")
			cf.String("input-tokens", strconv.Itoa(defaultCostTokens-int(defaultCostTokens*defaultCostOutputRatio)), "input tokens per request (with --output-tokens, instead of --tokens and --output-ratio)")
			cf.String("output-tokens", strconv.Itoa(int(defaultCostTokens*defaultCostOutputRatio)), "output tokens per request (with --input-tokens)")
			cost.MarkFlagsMutuallyExclusive("input-tokens", "tokens")
			cost.MarkFlagsMutuallyExclusive("input-tokens", "output-ratio")
			cost.MarkFlagsMutuallyExclusive("output-tokens", "tokens")
			cost.MarkFlagsMutuallyExclusive("output-tokens", "output-ratio")
			cf.Float64("cache-hit", 0, "share of the requests answered from the response cache (e.g. 0.3), which cost nothing")
			cf.String("stats", "", "stats to take the traffic mix from: a saved GET /llm_router/stats answer or its URL")
			cf.String("address", "", "admin API address to read the stats from (e.g. localhost:2019; empty: CADDY_ADMIN or localhost:2019)")
			cost.MarkFlagsMutuallyExclusive("stats", "address")
			_ = cost.MarkFlagRequired("config")
			cmd.AddCommand(cost)

			route := &cobra.Command{
				Use:   "route --config <file> [--header 'Name: value']... [--endpoint chat|completions|responses|embeddings] [--handler <n>] [--address <admin address>] <request.json | ->",
				Short: "Shows how a request would be routed: its variables, each rule's result, the route and its candidates",
				Args:  cobra.ExactArgs(1),
				RunE: func(c *cobra.Command, args []string) error {
					f := c.Flags()
					config, _ := f.GetString("config")
					adapter, _ := f.GetString("adapter")
					headers, _ := f.GetStringArray("header")
					ep, _ := f.GetString("endpoint")
					handler, _ := f.GetInt("handler")
					var stats *Stats
					if f.Changed("address") {
						addr, _ := f.GetString("address")
						var err error
						if stats, err = fetchAdminStats(addr); err != nil {
							return err
						}
					}
					return runRoute(c.OutOrStdout(), config, adapter, routeOptions{Endpoint: ep, Headers: headers, Handler: handler}, args[0], stats)
				},
			}
			rf := route.Flags()
			rf.StringP("config", "c", "", "Caddyfile or JSON config whose rules to apply (required)")
			rf.StringP("adapter", "a", "", `config adapter (default: "caddyfile" if the file name contains "Caddyfile", else JSON)`)
			rf.StringArrayP("header", "H", nil, `a request header, "Name: value"; repeatable`)
			rf.String("endpoint", "chat", "the endpoint the request is for: chat, completions, responses or embeddings")
			rf.Int("handler", 1, "which llm_router handler of the config, from 1 in document order")
			rf.String("address", "", "admin API address of a running gateway, to show today's health scores (e.g. localhost:2019)")
			_ = route.MarkFlagRequired("config")
			cmd.AddCommand(route)

			calibrate := &cobra.Command{
				Use:   "semantic-calibrate --config <file> [--handler <n>] [--precision <p>] <pairs.jsonl>",
				Short: "Measures the semantic cache's precision and recall on labelled question pairs, per threshold",
				Args:  cobra.ExactArgs(1),
				RunE: func(c *cobra.Command, args []string) error {
					f := c.Flags()
					config, _ := f.GetString("config")
					adapter, _ := f.GetString("adapter")
					handler, _ := f.GetInt("handler")
					precision, _ := f.GetFloat64("precision")
					if !(precision > 0 && precision <= 1) { // NaN too, which compares false with both
						return fmt.Errorf("--precision %v: want a share above 0 and at most 1", precision)
					}
					return runCalibrate(c.Context(), c.OutOrStdout(), config, adapter, calibrateOptions{Handler: handler, Precision: precision}, args[0])
				},
			}
			kf := calibrate.Flags()
			kf.StringP("config", "c", "", "Caddyfile or JSON config whose semantic cache to calibrate (required)")
			kf.StringP("adapter", "a", "", `config adapter (default: "caddyfile" if the file name contains "Caddyfile", else JSON)`)
			kf.Int("handler", 1, "which llm_router handler of the config, from 1 in document order")
			kf.Float64("precision", 0.99, "the share of served semantic hits that must be right")
			_ = calibrate.MarkFlagRequired("config")
			cmd.AddCommand(calibrate)
		},
	})
}

// runStats fetches the stats from the admin API at addr and prints them.
func runStats(w io.Writer, addr string) error {
	s, err := fetchAdminStats(addr)
	if err != nil {
		return err
	}
	return writeStatsTable(w, *s)
}

// fetchAdminStats reads GET /llm_router/stats from the admin API at addr
// (default: CADDY_ADMIN, else Caddy's default admin address).
func fetchAdminStats(addr string) (*Stats, error) {
	if addr == "" {
		addr = os.Getenv("CADDY_ADMIN")
	}
	addr, err := caddycmd.DetermineAdminAPIAddress(addr, nil, "", "")
	if err != nil {
		return nil, err
	}
	type result struct {
		s   *Stats
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := readAdminStats(addr)
		done <- result{s, err}
	}()
	timer := time.NewTimer(adminStatsTimeout)
	defer timer.Stop()
	select {
	case r := <-done:
		return r.s, r.err
	case <-timer.C:
		return nil, fmt.Errorf("reading stats from %s: no answer within %s", addr, adminStatsTimeout)
	}
}

// adminStatsTimeout bounds reading the stats from the admin API: Caddy's
// AdminAPIRequest sets no deadline, so an address that accepts the
// connection and never answers (a hung process, another service) would
// hang the command. A variable for tests.
var adminStatsTimeout = 30 * time.Second

// readAdminStats is one GET /llm_router/stats, without a deadline.
func readAdminStats(addr string) (*Stats, error) {
	resp, err := caddycmd.AdminAPIRequest(addr, http.MethodGet, "/llm_router/stats", nil, nil)
	if err != nil {
		return nil, fmt.Errorf("reading stats from %s: %w", addr, err)
	}
	defer resp.Body.Close()
	var s Stats
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&s); err != nil {
		return nil, fmt.Errorf("decoding stats from %s: %w", addr, err)
	}
	return &s, nil
}

// section starts one more table of the stats after a blank line: its
// header written, its rows to follow, then Flush.
func section(w io.Writer, header string) *tabwriter.Writer {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	return tw
}

// writeStatsTable prints stats as an aligned table, one deployment a row,
// then the totals, then a table each for budgets, caches and clients.
func writeStatsTable(w io.Writer, s Stats) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tPROVIDER\tSTATE\tSCORE\tREQUESTS\tATTEMPTS\tERR%\tP50\tP95\tTTFT P95\tTOKENS IN\tTOKENS OUT\tCOST")
	// a model and provider listed twice (two handlers' endpoints of one
	// provider name) show the provider's host and key to tell them apart
	rows := map[[2]string]int{}
	for _, d := range s.Deployments {
		rows[[2]string{d.Model, d.Provider}]++
	}
	for _, d := range s.Deployments {
		provider := d.Provider
		if rows[[2]string{d.Model, d.Provider}] > 1 {
			provider += " (" + terminalSafe(d.Host) + " key " + terminalSafe(d.Key) + ")"
		}
		state := d.State
		if d.CooldownHuman != "" {
			state += " (until " + d.CooldownHuman + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			d.Model, provider, state, d.HealthScore, d.RequestsHuman, d.AttemptsHuman, d.ErrorRateHuman,
			d.Latency.P50Human, d.Latency.P95Human, d.TimeToFirstToken.P95Human,
			d.Tokens.InputHuman, d.Tokens.OutputHuman, joinMoney(d.Costs))
	}
	t := s.Totals
	fmt.Fprintf(tw, "TOTAL\t\t\t\t%s\t%s\t%s\t\t\t\t%s\t%s\t%s\n",
		t.RequestsHuman, t.AttemptsHuman, t.ErrorRateHuman, t.Tokens.InputHuman, t.Tokens.OutputHuman, joinMoney(t.Costs))
	if err := tw.Flush(); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(w, strconv.Itoa(len(s.Deployments))+" deployments; stats since each deployment's state was created"); err != nil {
		return err
	}
	if len(s.Budgets) > 0 {
		tw := section(w, "BUDGET\tPERIOD\tLIMIT\tTOP KEY\tSPENT\tUSED\tKEYS\tRESETS\tACTIONS\tSYNC")
		for _, b := range s.Budgets {
			actions := fmt.Sprintf("warned %d, downgraded %d, refused %d", b.Actions["warned"], b.Actions["downgraded"], b.Actions["refused"])
			sync := b.Sync
			if b.LastSyncError != "" {
				sync += " (failing)"
			}
			for _, p := range b.Periods {
				key, spent, used := "-", "0.00 "+p.Limit.Currency, "0%"
				if len(p.TopKeys) > 0 {
					top := p.TopKeys[0]
					key, spent, used = terminalSafe(top.Key), top.Spent.Human, top.UsedHuman
					if key == "" {
						key = "(all)"
					}
				}
				limit := p.Limit.Human
				if p.Hard {
					limit = "hard " + limit
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n",
					b.Name, p.Period, limit, key, spent, used, p.Keys, p.ResetsHuman, actions, sync)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(s.Caches) > 0 {
		tw := section(w, "CACHE\tENTRIES\tSIZE\tHITS\tMISSES\tSTALE\tBYPASSED\tHIT RATIO\tSAVED")
		for _, c := range s.Caches {
			name := c.Store
			if name == "" {
				name = "(own)"
			}
			fmt.Fprintf(tw, "%s max_size %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", terminalSafe(name), humanBytes(c.MaxBytes), humanCount(c.Entries), c.BytesHuman,
				humanCount(c.Hits), humanCount(c.Misses), humanCount(c.Stale), humanCount(c.Bypassed), c.HitRatioHuman, joinMoney(c.Saved))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(s.Clients) > 0 {
		tw := section(w, "CLIENT\tANSWERS\tTOKENS IN\tTOKENS OUT\tCOST")
		for _, c := range s.Clients {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", terminalSafe(c.Client), humanCount(c.Answers), c.Tokens.InputHuman, c.Tokens.OutputHuman, joinMoney(c.Costs))
		}
		return tw.Flush()
	}
	return nil
}

// terminalSafe is s as printed to a terminal: budget keys and client
// labels may come from the request, so one with a control character (an
// escape sequence, a newline or a tab that would forge rows), or bytes that
// are not UTF-8, is shown escaped as in a Go string.
func terminalSafe(s string) string {
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			q := strconv.Quote(s)
			return q[1 : len(q)-1]
		}
	}
	return s
}

// joinMoney writes amounts of several currencies side by side.
func joinMoney(ms []MoneyStats) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.Human
	}
	return strings.Join(parts, " + ")
}
