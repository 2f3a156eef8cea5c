package pgstore

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/backend"
	"github.com/cloudupload/cloudupload/internal/pgtest"
)

// make bench runs each benchmark once (-benchtime 1x): every iteration
// times many operations itself and reports per-operation figures and their
// ratio to a baseline measured on the same database in the same run.

const (
	benchJobs    = 300  // jobs through Create+Update per iteration
	benchWorkers = 8    // concurrent workers in the throughput phase
	benchGets    = 2000 // Gets per iteration
)

// BenchmarkCreateUpdate measures a job's writes on PostgreSQL: NextID,
// Create, Update to scheduled, Claim, Update to succeeded, one after the
// other (ms/job, p50 and p99), and jobs/s with 8 workers at once; against
// one committed single-row INSERT (ms/commit; commits/job is the ratio).
func BenchmarkCreateUpdate(b *testing.B) {
	s := benchStore(b)
	commit := commitBaseline(b, s)
	var lat []time.Duration
	var rate float64
	for b.Loop() {
		lat = lat[:0]
		for range benchJobs {
			start := time.Now()
			benchJob(b, s)
			lat = append(lat, time.Since(start))
		}
		start := time.Now()
		var wg sync.WaitGroup
		for range benchWorkers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range benchJobs / benchWorkers {
					benchJob(b, s)
				}
			}()
		}
		wg.Wait()
		rate = float64(benchJobs/benchWorkers*benchWorkers) / time.Since(start).Seconds()
	}
	p50, p99 := percentiles(lat)
	b.ReportMetric(ms(p50), "ms/job-p50")
	b.ReportMetric(ms(p99), "ms/job-p99")
	b.ReportMetric(ms(commit), "ms/commit")
	b.ReportMetric(float64(p50)/float64(commit), "commits/job")
	b.ReportMetric(rate, "jobs/s-8-workers")
	b.ReportMetric(peakHeapMiB(), "MiB-heap-sys")
}

// benchJob takes one job through the store's writes.
func benchJob(b *testing.B, s *Store) {
	ctx := context.Background()
	id, err := s.NextID(ctx)
	if err != nil {
		b.Fatal(err)
	}
	j := cloudupload.Job{ID: id, State: cloudupload.StateCreated, User: fmt.Sprint("u", id%16), Target: "ec2",
		Project: "home:bench", Repository: "images", Package: "appliance", Arch: "x86_64", Filename: "appliance.raw.xz",
		Origin: cloudupload.OriginFetch, Created: time.Now().Unix()}
	if err := s.Create(ctx, j, []byte(`{"region":"eu-central-1","secret":"0123456789abcdef0123456789abcdef"}`)); err != nil {
		b.Fatal(err)
	}
	j.State = cloudupload.StateScheduled
	if err := s.Update(ctx, j); err != nil {
		b.Fatal(err)
	}
	j.State = cloudupload.StateUploading
	if ok, err := s.Claim(ctx, j, backend.Limits{Max: 1000, PerUser: 1000}); err != nil || !ok {
		b.Fatalf("claim: %v, %v", ok, err)
	}
	j.State = cloudupload.StateSucceeded
	if err := s.Update(ctx, j); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkGet measures Get of one of 1000 jobs (µs/get, p50 and p99),
// against a bare SELECT 1 on the same pool (µs/roundtrip; x-roundtrip is
// the ratio).
func BenchmarkGet(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	var ids []int64
	for range 1000 {
		id, err := s.NextID(ctx)
		if err != nil {
			b.Fatal(err)
		}
		j := cloudupload.Job{ID: id, State: cloudupload.StateScheduled, User: "alice", Target: "ec2",
			Project: "home:bench", Filename: "appliance.raw.xz", Details: "waiting for an upload slot"}
		if err := s.Create(ctx, j, []byte("data")); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, id)
	}
	var lat, base []time.Duration
	for b.Loop() {
		lat, base = lat[:0], base[:0]
		for i := range benchGets {
			start := time.Now()
			if _, err := s.Get(ctx, ids[i%len(ids)]); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
			start = time.Now()
			var one int
			if err := s.pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
				b.Fatal(err)
			}
			base = append(base, time.Since(start))
		}
	}
	p50, p99 := percentiles(lat)
	b50, _ := percentiles(base)
	b.ReportMetric(us(p50), "µs/get-p50")
	b.ReportMetric(us(p99), "µs/get-p99")
	b.ReportMetric(us(b50), "µs/roundtrip")
	b.ReportMetric(float64(p50)/float64(b50), "x-roundtrip")
}

func benchStore(b *testing.B) *Store {
	b.Helper()
	return openStore(b, config(pgtest.URL(b), "bench", time.Minute))
}

// commitBaseline is the median time of committing one single-row INSERT.
func commitBaseline(b *testing.B, s *Store) time.Duration {
	ctx := context.Background()
	if _, err := s.pool.Exec(ctx, "CREATE TABLE bench_baseline (id bigserial PRIMARY KEY, doc jsonb)"); err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	for range 200 {
		start := time.Now()
		if _, err := s.pool.Exec(ctx, "INSERT INTO bench_baseline (doc) VALUES ($1)", []byte(`{"state":"created"}`)); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	p50, _ := percentiles(lat)
	return p50
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)*99/100]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

func peakHeapMiB() float64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapSys) / (1 << 20)
}
