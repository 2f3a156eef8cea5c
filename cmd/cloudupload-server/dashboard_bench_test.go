package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// timedGet sends GET url (with If-None-Match when tag is set) and returns
// how long it took, the status and the ETag.
func timedGet(tb testing.TB, url, tag string) (time.Duration, int, string) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if tag != "" {
		req.Header.Set("If-None-Match", tag)
	}
	t0 := time.Now()
	resp, err := benchClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return time.Since(t0), resp.StatusCode, resp.Header.Get("ETag")
}

// latencies runs n sequential GETs of url and returns their durations.
func latencies(tb testing.TB, url, tag string, n int, want int) []time.Duration {
	d := make([]time.Duration, n)
	for i := range d {
		var code int
		d[i], code, _ = timedGet(tb, url, tag)
		if code != want {
			tb.Fatalf("GET %s: %d, want %d", url, code, want)
		}
	}
	return d
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// dashboard polls as the dashboard's list page does (the list with its
// ETag every interval) and a job page (the job and its log's tail), until
// ctx ends; interval 0 polls without pause (a worst case, not a person).
func dashboard(ctx context.Context, tb testing.TB, base, job string, interval time.Duration) {
	var listTag, jobTag string
	for ctx.Err() == nil {
		_, _, listTag = timedGet(tb, base+"/cloudupload", listTag)
		_, _, jobTag = timedGet(tb, base+"/cloudupload/"+job, jobTag)
		timedGet(tb, base+"/cloudupload/"+job+"/_log?nostream=1&start=-4096", "")
		if interval > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(interval):
			}
		}
	}
}

// BenchmarkDashboard measures, against one daemon holding 200 finished
// jobs and 2 running uploads that report progress:
//   - the per-request cost of what the dashboard and Prometheus ask for:
//     the list (200; 304 for the finished jobs by name, as the whole list
//     changes while uploads run), a job (304), the page's files, /metrics;
//   - GET /cloudupload/<id> of a running job (live progress read) alone,
//     with 20 dashboards open polling at their own pace (list every 2 s,
//     job and log) plus a Prometheus scrape every second, and with 2
//     clients polling the dashboard's requests without pause (a worst
//     case), all in the same run: the ratios say what a dashboard costs
//     the API.
func BenchmarkDashboard(b *testing.B) {
	e := start(b, "--log-level", "warn", "--max-uploads-per-user", "4")
	var last string
	var names []string
	for range 200 {
		last = e.create("instant")
		names = append(names, last)
	}
	waitFinal(b, e.url, last)
	running := []string{e.create("progress"), e.create("progress")}
	b.Cleanup(func() {
		os.WriteFile(filepath.Join(e.release, "release"), nil, 0o644)
		for _, name := range running {
			waitFinal(b, e.url, name)
		}
	})
	for _, name := range running {
		for !strings.Contains(string(get(b, e.url+"/cloudupload/"+name)), "<bytesdone>") {
			time.Sleep(10 * time.Millisecond)
		}
	}
	jobURL := e.url + "/cloudupload/" + running[0]
	const n = 1000
	var alone, polite, busy []time.Duration
	costs := map[string][]time.Duration{}
	for b.Loop() {
		alone = append(alone, latencies(b, jobURL, "", n, 200)...)
		// While uploads run the whole list changes every second: the 304
		// is measured on the 200 finished jobs asked for by name.
		finished := "/cloudupload?name=" + strings.Join(names, "&name=")
		_, _, listTag := timedGet(b, e.url+finished, "")
		_, _, doneTag := timedGet(b, e.url+"/cloudupload/"+last, "")
		for name, c := range map[string]struct {
			path, tag string
			code      int
		}{
			"list-200":  {"/cloudupload", "", 200},
			"list-304":  {finished, listTag, 304},
			"job-304":   {"/cloudupload/" + last, doneTag, 304},
			"ui-html":   {"/ui/", "", 200},
			"ui-js":     {"/ui/app.js", "", 200},
			"metrics":   {"/metrics", "", 200},
			"job-alone": {"/cloudupload/" + running[0], "", 200},
		} {
			if c.code == 304 && c.tag == "" {
				b.Fatalf("%s: no ETag", name)
			}
			costs[name] = append(costs[name], latencies(b, e.url+c.path, c.tag, n/5, c.code)...)
		}

		// 20 dashboards at a person's pace, and Prometheus.
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				time.Sleep(time.Duration(i) * 100 * time.Millisecond) // spread over the 2 s
				dashboard(ctx, b, e.url, running[i%2], 2*time.Second)
			})
		}
		wg.Go(func() {
			for ctx.Err() == nil {
				timedGet(b, e.url+"/metrics", "")
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		})
		time.Sleep(2 * time.Second)
		polite = append(polite, latencies(b, jobURL, "", n, 200)...)
		cancel()
		wg.Wait()

		// A worst case: two clients polling without pause.
		ctx, cancel = context.WithCancel(context.Background())
		for i := range 2 {
			wg.Go(func() { dashboard(ctx, b, e.url, running[i], 0) })
		}
		time.Sleep(100 * time.Millisecond)
		busy = append(busy, latencies(b, jobURL, "", n, 200)...)
		cancel()
		wg.Wait()
	}
	p50 := func(d []time.Duration) float64 { return us(percentile(d, 0.5)) }
	for name, d := range costs {
		b.ReportMetric(p50(d), name+"-p50-µs")
	}
	b.ReportMetric(p50(alone), "get-alone-p50-µs")
	b.ReportMetric(us(percentile(alone, 0.99)), "get-alone-p99-µs")
	b.ReportMetric(p50(polite), "get-20dash-p50-µs")
	b.ReportMetric(us(percentile(polite, 0.99)), "get-20dash-p99-µs")
	b.ReportMetric(p50(busy), "get-busy-p50-µs")
	b.ReportMetric(p50(polite)/p50(alone), "x-get-20dash/alone")
	b.ReportMetric(p50(busy)/p50(alone), "x-get-busy/alone")
}
