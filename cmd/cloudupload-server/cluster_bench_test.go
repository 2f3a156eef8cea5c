package main

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/internal/pgtest"
)

// BenchmarkClusterJobs: jobs per second from skeleton + PUT of 4 KiB to
// succeeded with the instant test uploader, 4 clients at once, through one
// node on the state directory, one node on PostgreSQL, and three nodes on
// one PostgreSQL (the clients spread over them), in the same run.
func BenchmarkClusterJobs(b *testing.B) {
	for _, c := range []struct {
		name  string
		nodes int
		db    bool
	}{{"disk-1node", 1, false}, {"postgres-1node", 1, true}, {"postgres-3nodes", 3, true}} {
		b.Run(c.name, func(b *testing.B) {
			urls := startBenchNodes(b, c.nodes, c.db)
			const perClient = 25
			var total time.Duration
			jobs := 0
			for b.Loop() {
				t0 := time.Now()
				var wg sync.WaitGroup
				for k := range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						base := urls[k%len(urls)]
						for range perClient {
							name, _ := submitPut(b, base, fmt.Sprintf("u%d", k), 4096, bytes.NewReader(make([]byte, 4096)))
							waitFinal(b, base, name)
						}
					}()
				}
				wg.Wait()
				total += time.Since(t0)
				jobs += 4 * perClient
			}
			b.ReportMetric(float64(jobs)/total.Seconds(), "jobs/s")
		})
	}
}

// BenchmarkClusterGet: latency of GET /cloudupload/<id> of a finished job
// (500 a round),
// on the state directory and on PostgreSQL (through the node that ran the
// job, and through another node), in the same run.
func BenchmarkClusterGet(b *testing.B) {
	for _, c := range []struct {
		name   string
		nodes  int
		db     bool
		remote bool
	}{{"disk", 1, false, false}, {"postgres-own", 2, true, false}, {"postgres-other-node", 2, true, true}} {
		b.Run(c.name, func(b *testing.B) {
			urls := startBenchNodes(b, c.nodes, c.db)
			name, _ := submitPut(b, urls[0], "u", 4096, bytes.NewReader(make([]byte, 4096)))
			waitFinal(b, urls[0], name)
			url := urls[0] + "/cloudupload/" + name
			if c.remote {
				url = urls[1] + "/cloudupload/" + name
			}
			var lat []time.Duration
			for b.Loop() {
				for range 500 {
					t0 := time.Now()
					get(b, url)
					lat = append(lat, time.Since(t0))
				}
			}
			b.ReportMetric(ms(percentile(lat, 0.5)), "p50-ms")
			b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
		})
	}
}

// startBenchNodes starts n daemons with the test uploader, on one fresh
// PostgreSQL database when db, and returns their URLs.
func startBenchNodes(b *testing.B, n int, db bool) []string {
	var database string
	if db {
		database = pgtest.URL(b)
	}
	var urls []string
	for i := range n {
		dir := b.TempDir()
		args := []string{"--max-uploads", "8", "--max-uploads-per-user", "8", "--min-free-space", "0"}
		if db {
			args = append(args, "--config", databaseConfig(b, database), "--node", fmt.Sprintf("n%d", i+1), "--advertise-url", "http://{addr}")
		}
		p := startProcessIn(b, buildServer(b), dir, args...)
		urls = append(urls, p.url)
	}
	return urls
}
