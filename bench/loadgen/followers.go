package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"
)

// FollowersResult is what `loadgen followers` measures: rounds of n
// identical streams sent at once to a cached route, where one leads (the
// cache's miss) and the others follow it; how late each follower's first
// event is against the leader's.
type FollowersResult struct {
	Rounds       int            `json:"rounds"`
	Streams      int            `json:"streams_per_round"`
	Leaders      int            `json:"leaders"`   // responses with X-LLM-Cache: miss
	Followers    int            `json:"followers"` // with X-LLM-Cache: hit
	Errors       int            `json:"errors"`
	ErrorKinds   map[string]int `json:"error_kinds,omitempty"`
	LeaderTTFB50 float64        `json:"leader_ttfb_p50_ms"`
	FollowTTFB50 float64        `json:"follower_ttfb_p50_ms"`
	FollowTTFB99 float64        `json:"follower_ttfb_p99_ms"`
	LagP50       float64        `json:"follower_lag_p50_ms"` // follower's first event minus its leader's
	LagMax       float64        `json:"follower_lag_max_ms"`
	StreamP50    float64        `json:"stream_p50_ms"`
}

// cmdFollowers: -rounds R rounds of -n N identical streams at once, each
// round with a question of its own ("Round k. " put before the last
// message's text), so that each round has one leader.
func cmdFollowers(args []string) error {
	fs := flag.NewFlagSet("followers", flag.ExitOnError)
	var rf reqFlags
	rf.register(fs)
	n := fs.Int("n", 5, "identical streams a round")
	rounds := fs.Int("rounds", 20, "rounds")
	_ = fs.Parse(args)
	rf.stream = true
	if err := rf.load(); err != nil {
		return err
	}
	at := bytes.LastIndex(rf.body, []byte(`"content":"`))
	if at < 0 {
		return errors.New(`the body has no "content":"`)
	}
	at += len(`"content":"`)
	client := &http.Client{Transport: newTransport(*n), Timeout: rf.timeout}
	res := FollowersResult{Rounds: *rounds, Streams: *n, ErrorKinds: map[string]int{}}
	var leaderTTFB, followTTFB, lags, whole durs
	for round := range *rounds {
		body := append(append(append([]byte{}, rf.body[:at]...), "Round "+strconv.Itoa(round)+". "...), rf.body[at:]...)
		type one struct {
			cache       string
			first, took time.Duration
			kind        string
		}
		out := make([]one, *n)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range out {
			wg.Go(func() {
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, rf.url, bytes.NewReader(body))
				req.Header = rf.header()
				resp, err := client.Do(req)
				if err != nil {
					out[i].kind = errKind(err)
					return
				}
				w := &bodyWatch{rc: resp.Body, start: start}
				_, err = io.Copy(io.Discard, w)
				_ = w.Close()
				out[i] = one{cache: resp.Header.Get("X-LLM-Cache"), first: w.first, took: time.Since(start)}
				switch {
				case err != nil:
					out[i].kind = errKind(err)
				case resp.StatusCode != http.StatusOK:
					out[i].kind = "status " + strconv.Itoa(resp.StatusCode)
				case !w.sawDone:
					out[i].kind = "stream without [DONE]"
				}
			})
		}
		wg.Wait()
		var leader time.Duration
		for _, o := range out {
			if o.kind == "" && o.cache == "miss" {
				leader = o.first
			}
		}
		for _, o := range out {
			switch {
			case o.kind != "":
				res.Errors++
				res.ErrorKinds[o.kind]++
				continue
			case o.cache == "miss":
				res.Leaders++
				leaderTTFB = append(leaderTTFB, o.first)
			case o.cache == "hit":
				res.Followers++
				followTTFB = append(followTTFB, o.first)
				if leader > 0 {
					lags = append(lags, max(o.first-leader, 0))
				}
			}
			whole = append(whole, o.took)
		}
	}
	for _, d := range []durs{leaderTTFB, followTTFB, lags, whole} {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	}
	res.LeaderTTFB50, res.FollowTTFB50, res.FollowTTFB99 = leaderTTFB.pct(50), followTTFB.pct(50), followTTFB.pct(99)
	res.LagP50, res.LagMax = lags.pct(50), lags.pct(100)
	res.StreamP50 = whole.pct(50)
	return printJSON(res)
}
