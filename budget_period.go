package llmrouter

import (
	"slices"
	"strings"
	"time"
)

// period is a budget period.
type period uint8

const (
	periodHour period = iota
	periodDay
	periodWeek
	periodMonth
	periodCount
)

var periodNames = [periodCount]string{"hour", "day", "week", "month"}

func (p period) String() string { return periodNames[p] }

func parsePeriod(s string) (period, bool) {
	i := slices.Index(periodNames[:], s)
	return period(i), i >= 0
}

// window is one period: when it began and ends, and its id in storage.
type window struct {
	start, end time.Time
	id         string
}

// windowAt is the period p that holds t, in loc.
func (p period) windowAt(t time.Time, loc *time.Location) window {
	t = t.In(loc)
	y, m, d := t.Date()
	var start, end time.Time
	switch p {
	case periodHour:
		// an instant, not a wall-clock hour: the hour a DST change
		// repeats is two windows, each an hour long
		start = t.Add(-time.Duration(t.Minute())*time.Minute - time.Duration(t.Second())*time.Second - time.Duration(t.Nanosecond()))
		end = start.Add(time.Hour)
		return window{start: start, end: end, id: p.String() + "-" + start.UTC().Format(hourStamp)}
	case periodDay:
		start = time.Date(y, m, d, 0, 0, 0, 0, loc)
		end = time.Date(y, m, d+1, 0, 0, 0, 0, loc)
	case periodWeek:
		back := (int(t.Weekday()) + 6) % 7 // days since Monday
		start = time.Date(y, m, d-back, 0, 0, 0, 0, loc)
		end = time.Date(y, m, d-back+7, 0, 0, 0, 0, loc)
	default:
		start = time.Date(y, m, 1, 0, 0, 0, 0, loc)
		end = time.Date(y, m+1, 1, 0, 0, 0, 0, loc)
	}
	return window{start: start, end: end, id: p.String() + "-" + start.Format(windowStamp)}
}

// windowStart reads the start of window id (a period's name, "-", the
// start's windowStamp, or hourStamp for an hour), in loc.
func windowStart(id string, loc *time.Location) (time.Time, bool) {
	pname, stamp, _ := strings.Cut(id, "-")
	if p, ok := parsePeriod(pname); ok && p == periodHour {
		if s, err := time.Parse(hourStamp, stamp); err == nil {
			return s, true
		}
	}
	start, err := time.ParseInLocation(windowStamp, stamp, loc)
	return start, err == nil
}

// windowStamp is the layout of a window's start in its id, in the
// budget's time zone; an hour window's is hourStamp, in UTC (with minutes,
// for zones half an hour off UTC), as the hour is an instant.
const (
	windowStamp = "2006-01-02T15"
	hourStamp   = "2006-01-02T1504Z"
)
