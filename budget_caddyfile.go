package llmrouter

import (
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// unmarshalBudget reads a budget block.
func unmarshalBudget(d *caddyfile.Dispenser, b *Budget) error {
	// amountPer reads "<amount> per <period>"; per <period> is optional
	// when optional is true
	amountPer := func(args []string, optional bool) (float64, string, error) {
		if len(args) != 1 && len(args) != 3 || (len(args) == 1 && !optional) || (len(args) == 3 && args[1] != "per") {
			return 0, "", d.ArgErr()
		}
		v, err := parseNumber(args[0])
		if err != nil || v <= 0 {
			return 0, "", d.Errf("%s: want a positive amount in the handler's currency, got %q", d.Val(), args[0])
		}
		p := ""
		if len(args) == 3 {
			if _, ok := parsePeriod(args[2]); !ok {
				return 0, "", d.Errf("%s: period must be hour, day, week or month, got %q", d.Val(), args[2])
			}
			p = args[2]
		}
		return v, p, nil
	}
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := once(d, seen, "limit", "match"); err != nil {
			return err
		}
		switch d.Val() {
		case "limit":
			v, p, err := amountPer(d.RemainingArgs(), false)
			if err != nil {
				return err
			}
			b.Limits = append(b.Limits, BudgetLimit{Amount: v, Period: p})
		case "hard":
			v, p, err := amountPer(d.RemainingArgs(), true)
			if err != nil {
				return err
			}
			b.Hard, b.HardPeriod = v, p
		case "key":
			args := d.RemainingArgs()
			switch {
			case len(args) == 1:
			case len(args) == 2 && args[1] == "label":
				b.KeyIsLabel = true
			default:
				return d.ArgErr()
			}
			b.Key = args[0]
		case "match":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			b.Match = append(b.Match, args...)
		case "downgrade":
			if !d.AllArgs(&b.Downgrade) {
				return d.ArgErr()
			}
		case "warn_at":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			pct, err := parseNumber(strings.TrimSuffix(v, "%"))
			if err != nil || pct <= 0 || pct > 100 {
				return d.Errf("warn_at: want a percentage from 1 to 100, got %q", v)
			}
			b.WarnAt = pct
		case "reserve_output":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return d.Errf("reserve_output: want a positive number of tokens, got %q", v)
			}
			b.ReserveOutput = n
		case "output_cap":
			on, err := onOff(d)
			if err != nil {
				return err
			}
			b.NoOutputCap = !on
		case "timezone":
			if !d.AllArgs(&b.Timezone) {
				return d.ArgErr()
			}
			if _, err := time.LoadLocation(b.Timezone); err != nil {
				return d.Errf("timezone: unknown zone %q (use an IANA name such as Asia/Ho_Chi_Minh)", b.Timezone)
			}
		default:
			return unrecognized(d, "budget", budgetSubdirectives)
		}
	}
	if len(b.Limits) == 0 {
		return d.Errf("budget %s needs at least one limit", b.Name)
	}
	return nil
}
