package httpapi

import (
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/backend"
)

// Metrics are the daemon's Prometheus metrics, served at /metrics. Labels
// are only target, state, outcome, route and code: never a user, a job id
// or a raw path, so their number stays bounded whatever clients send.
//
//	cloudupload_jobs{state,target}                      jobs known, by state and target (gauge)
//	cloudupload_job_duration_seconds{target,outcome}    creation to end of finished jobs (histogram; outcome succeeded|failed)
//	cloudupload_received_bytes_total                    image bytes received (PUT or fetched)
//	cloudupload_uploaded_bytes_total                    bytes the uploaders reported done
//	cloudupload_upload_rate_bytes_per_second            current rate of all running uploads together (gauge)
//	cloudupload_uploads_running                         uploaders running (gauge)
//	cloudupload_upload_slots_free                       uploads that could start now (gauge)
//	cloudupload_uploader_exits_total{target,outcome}    uploaders ended: succeeded|failed|killed|signal|lost|not_started
//	cloudupload_http_requests_total{route,code}         requests by route template ("GET /cloudupload/{id}") and status
//	cloudupload_http_request_duration_seconds{route}    request latency (histogram; streamed logs last as long as they stream)
//	go_*, process_*                                     the Go runtime's and the process's own
type Metrics struct {
	reg       *prometheus.Registry
	handler   http.Handler
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	durations *prometheus.HistogramVec
	exits     *prometheus.CounterVec
	stats     atomic.Pointer[func() backend.Stats]
}

// NewMetrics returns the metrics; SetStats connects them to the job
// manager. Metrics is the backend.Observer of finished jobs.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudupload_http_requests_total", Help: "HTTP requests by route template and status code.",
	}, []string{"route", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cloudupload_http_request_duration_seconds", Help: "HTTP request latency by route template.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"route"})
	m.durations = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cloudupload_job_duration_seconds", Help: "Time from a job's creation to its end, by target and outcome.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 16), // 1 s … 9 h
	}, []string{"target", "outcome"})
	m.exits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloudupload_uploader_exits_total", Help: "Uploader processes ended, by target and how they ended.",
	}, []string{"target", "outcome"})
	m.reg.MustRegister(m.requests, m.latency, m.durations, m.exits, statsCollector{m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	return m
}

// SetStats makes the gauges read the job manager's Stats at each scrape.
func (m *Metrics) SetStats(stats func() backend.Stats) { m.stats.Store(&stats) }

// JobFinished counts a finished job (backend.Observer).
func (m *Metrics) JobFinished(j cloudupload.Job, upload string) {
	if d := j.Finished - j.Created; j.Finished > 0 && d >= 0 {
		m.durations.WithLabelValues(j.Target, string(j.State)).Observe(float64(d))
	}
	if upload != "" {
		m.exits.WithLabelValues(j.Target, upload).Inc()
	}
}

// ServeHTTP serves the metrics in Prometheus' text format.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) { m.handler.ServeHTTP(w, r) }

// observe counts one request.
func (m *Metrics) observe(r *http.Request, status int, took time.Duration) {
	route := routeOf(r)
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(route).Observe(took.Seconds())
}

// routeOf names r's route as a template, never with the raw path.
func routeOf(r *http.Request) string {
	method := r.Method
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut:
	default:
		return "other"
	}
	p := r.URL.Path
	var route string
	switch {
	case p == "/" || p == "/cloudupload" || p == "/cloudupload/_pubkey" || p == "/metrics":
		route = p
	case p == uiPrefix || strings.HasPrefix(p, uiPrefix):
		route = uiPrefix
	case strings.HasPrefix(p, "/cloudupload/"):
		name, rest, _ := strings.Cut(p[len("/cloudupload/"):], "/")
		if _, ok := ParseID(name); !ok {
			return "other"
		}
		switch rest {
		case "":
			route = "/cloudupload/{id}"
		case "_log":
			route = "/cloudupload/{id}/_log"
		default:
			return "other"
		}
	default:
		return "other"
	}
	return method + " " + route
}

// statsCollector turns the job manager's Stats into gauges and counters at
// each scrape.
type statsCollector struct{ m *Metrics }

var (
	descJobs = prometheus.NewDesc("cloudupload_jobs", "Jobs known to the server, by state and target.",
		[]string{"state", "target"}, nil)
	descRunning = prometheus.NewDesc("cloudupload_uploads_running", "Uploader processes running.", nil, nil)
	descFree    = prometheus.NewDesc("cloudupload_upload_slots_free",
		"Uploads that could start now (the server's limit minus those running).", nil, nil)
	descReceived = prometheus.NewDesc("cloudupload_received_bytes_total",
		"Image bytes received by the server (sent with PUT or fetched).", nil, nil)
	descUploaded = prometheus.NewDesc("cloudupload_uploaded_bytes_total",
		"Bytes the uploaders reported done (for disk images: disk bytes processed).", nil, nil)
	descRate = prometheus.NewDesc("cloudupload_upload_rate_bytes_per_second",
		"Current rate of all running uploads together.", nil, nil)
)

func (c statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descJobs, descRunning, descFree, descReceived, descUploaded, descRate} {
		ch <- d
	}
}

func (c statsCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.m.stats.Load()
	if f == nil {
		return
	}
	st := (*f)()
	for k, n := range st.Jobs {
		ch <- prometheus.MustNewConstMetric(descJobs, prometheus.GaugeValue, float64(n), string(k.State), k.Target)
	}
	ch <- prometheus.MustNewConstMetric(descRunning, prometheus.GaugeValue, float64(st.Uploading))
	ch <- prometheus.MustNewConstMetric(descFree, prometheus.GaugeValue, float64(max(0, st.MaxUploads-st.Uploading)))
	ch <- prometheus.MustNewConstMetric(descReceived, prometheus.CounterValue, float64(st.BytesReceived))
	ch <- prometheus.MustNewConstMetric(descUploaded, prometheus.CounterValue, float64(st.BytesUploaded))
	ch <- prometheus.MustNewConstMetric(descRate, prometheus.GaugeValue, st.UploadRate)
}
