package llmrouter

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"text/tabwriter"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "llm-router",
		Usage: "stats [--address <admin address>]",
		Short: "Inspects a running LLM gateway",
		Long: `
Commands of the llm_router module.

  stats   prints every deployment's state, health score, traffic, error
          rate, latency and tokens, read from the running Caddy's admin
          API (GET /llm_router/stats).
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
		},
	})
}

// runStats fetches the stats from the admin API at addr and prints them.
func runStats(w io.Writer, addr string) error {
	if addr == "" {
		addr = os.Getenv("CADDY_ADMIN")
	}
	addr, err := caddycmd.DetermineAdminAPIAddress(addr, nil, "", "")
	if err != nil {
		return err
	}
	resp, err := caddycmd.AdminAPIRequest(addr, http.MethodGet, "/llm_router/stats", nil, nil)
	if err != nil {
		return fmt.Errorf("reading stats from %s: %w", addr, err)
	}
	defer resp.Body.Close()
	var s Stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return fmt.Errorf("decoding stats from %s: %w", addr, err)
	}
	return writeStatsTable(w, s)
}

// writeStatsTable prints stats as an aligned table, one deployment a row,
// then the totals.
func writeStatsTable(w io.Writer, s Stats) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tPROVIDER\tSTATE\tSCORE\tREQUESTS\tERR%\tP50\tP95\tTTFT P95\tTOKENS IN\tTOKENS OUT\tCOST")
	for _, d := range s.Deployments {
		state := d.State
		if d.CooldownHuman != "" {
			state += " (until " + d.CooldownHuman + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			d.Model, d.Provider, state, d.HealthScore, d.RequestsHuman, d.ErrorRateHuman,
			d.Latency.P50Human, d.Latency.P95Human, d.TimeToFirstToken.P95Human,
			d.Tokens.InputHuman, d.Tokens.OutputHuman, d.CostHuman)
	}
	t := s.Totals
	fmt.Fprintf(tw, "TOTAL\t\t\t\t%s\t%s\t\t\t\t%s\t%s\t%s\n",
		t.RequestsHuman, t.ErrorRateHuman, t.Tokens.InputHuman, t.Tokens.OutputHuman, t.CostHuman)
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, strconv.Itoa(len(s.Deployments))+" deployments; stats since each deployment's state was created")
	return err
}
