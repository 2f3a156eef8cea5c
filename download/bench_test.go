package download

import (
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/targets/mirror"
)

// The benchmarks compare the download server with Go's http.FileServer
// serving the same tree, in the same run, over loopback TCP, alternating
// the two so that the noise of a shared machine hits both alike.

const (
	benchLarge  = 256 << 20
	benchRounds = 4 // GETs of the large file per server and iteration
	benchSmall  = 2000
	smallSize   = 4 << 10
	benchConc   = 4 // concurrent clients for the small files
)

type benchServers struct {
	ours, plain *httptest.Server
	client      *http.Client
	digest      string
}

func newBenchServers(b *testing.B, dir string) *benchServers {
	h, err := New(Config{Trees: []mirror.Tree{{Name: "t", Dir: dir}}, CookieKey: make([]byte, 32)})
	if err != nil {
		b.Fatal(err)
	}
	s := &benchServers{
		ours:   httptest.NewServer(h),
		plain:  httptest.NewServer(http.StripPrefix("/t", http.FileServer(http.Dir(dir)))),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: benchConc, DisableCompression: true}},
		digest: LicenceDigest("<p>bench licence</p>"),
	}
	b.Cleanup(func() { s.ours.Close(); s.plain.Close(); h.Close() })
	return s
}

func (s *benchServers) get(b *testing.B, base, path string) int64 {
	req, _ := http.NewRequest("GET", base+path, nil)
	req.Header.Set(AcceptHeader, s.digest)
	resp, err := s.client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
	}
	return n
}

// peakHeap samples the heap in use until stop is called and returns the
// highest value seen, in MiB.
func peakHeap() (stop func() float64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() float64 { close(done); wg.Wait(); return float64(peak.Load()) / (1 << 20) }
}

// BenchmarkLargeFile: one 256 MiB file, GET whole, in a directory whose
// BUILD-INFO.txt puts it under a licence accepted by header (the full
// check on every request), against http.FileServer.
func BenchmarkLargeFile(b *testing.B) {
	dir := b.TempDir()
	buf := make([]byte, benchLarge)
	rand.New(rand.NewSource(1)).Read(buf)
	os.MkdirAll(filepath.Join(dir, "build"), 0o755)
	if err := os.WriteFile(filepath.Join(dir, "build/image.img"), buf, 0o644); err != nil {
		b.Fatal(err)
	}
	buf = nil
	runtime.GC()
	write(b, filepath.Join(dir, "build/BUILD-INFO.txt"), "Format-Version: 0.5\n\nFiles-Pattern: *.img\nLicense-Type: protected\nLicense-Text: <p>bench licence</p>\n")
	s := newBenchServers(b, dir)
	s.get(b, s.ours.URL, "/t/build/image.img") // warm the page cache
	var ours, plain time.Duration
	stop := peakHeap()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for r := 0; r < benchRounds; r++ {
			first, second := s.ours.URL, s.plain.URL
			if r%2 == 1 {
				first, second = second, first
			}
			for _, base := range []string{first, second} {
				start := time.Now()
				s.get(b, base, "/t/build/image.img")
				if base == s.ours.URL {
					ours += time.Since(start)
				} else {
					plain += time.Since(start)
				}
			}
		}
	}
	b.StopTimer()
	mibs := func(d time.Duration) float64 {
		return float64(benchLarge) * float64(b.N*benchRounds) / d.Seconds() / (1 << 20)
	}
	b.ReportMetric(mibs(ours), "MiB/s")
	b.ReportMetric(mibs(plain), "fileserver-MiB/s")
	b.ReportMetric(plain.Seconds()/ours.Seconds(), "x-fileserver")
	b.ReportMetric(stop(), "peak-heap-MiB")
}

// BenchmarkSmallFiles: 2,000 files of 4 KiB, fetched by 4 clients at once,
// against http.FileServer; "open" is a directory without BUILD-INFO.txt,
// "licence" one whose BUILD-INFO.txt needs a licence (accepted by header).
func BenchmarkSmallFiles(b *testing.B) {
	dir := b.TempDir()
	small := strings.Repeat("x", smallSize)
	for _, d := range []string{"open", "licence"} {
		for i := 0; i < benchSmall; i++ {
			write(b, filepath.Join(dir, d, fmt.Sprintf("f%04d.img", i)), small)
		}
	}
	write(b, filepath.Join(dir, "licence/BUILD-INFO.txt"), "Format-Version: 0.5\n\nFiles-Pattern: *.img\nLicense-Type: protected\nLicense-Text: <p>bench licence</p>\n")
	s := newBenchServers(b, dir)
	fetchAll := func(base, d string) time.Duration {
		start := time.Now()
		var next atomic.Int64
		var wg sync.WaitGroup
		for w := 0; w < benchConc; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := next.Add(1) - 1; i < benchSmall; i = next.Add(1) - 1 {
					s.get(b, base, fmt.Sprintf("/t/%s/f%04d.img", d, i))
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	for _, d := range []string{"open", "licence"} {
		b.Run(d, func(b *testing.B) {
			fetchAll(s.ours.URL, d) // warm up connections and caches
			fetchAll(s.plain.URL, d)
			runtime.GC()
			var ours, plain time.Duration
			stop := peakHeap()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for r := 0; r < 2; r++ {
					if r == i%2 {
						ours += fetchAll(s.ours.URL, d)
					} else {
						plain += fetchAll(s.plain.URL, d)
					}
				}
			}
			b.StopTimer()
			rps := func(t time.Duration) float64 { return float64(benchSmall*b.N) / t.Seconds() }
			b.ReportMetric(rps(ours), "req/s")
			b.ReportMetric(rps(plain), "fileserver-req/s")
			b.ReportMetric(plain.Seconds()/ours.Seconds(), "x-fileserver")
			b.ReportMetric(stop(), "peak-heap-MiB")
		})
	}
}
