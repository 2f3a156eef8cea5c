package azure

import (
	"crypto/tls"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/cloudupload/cloudupload/targets"
)

// TestBlobConnectionsReused: the page writes keep a connection per worker
// alive and speak HTTP/1.1, even when the client they start from keeps
// only 2 idle connections per host (Go's default; the SDK's is 10) and
// offers HTTP/2: 12 workers writing 30 chunks open at most 13 TLS
// connections to the blob service. The server answers the writes in
// bursts, on 50 ms ticks, so that many connections fall idle at once (as
// when the workers wait for a decompressor).
func TestBlobConnectionsReused(t *testing.T) {
	e := newEnv(t)
	upstream, _ := url.Parse(e.azurite.URL)
	rp := httputil.NewSingleHostReverseProxy(upstream)
	rp.Transport = e.ca.Client().Transport
	var conns, requests, http2 atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.ProtoMajor != 1 {
			http2.Add(1)
		}
		if !isPutPage(r) {
			rp.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r)
		const tick = 50 * time.Millisecond
		time.Sleep(time.Until(time.Now().Truncate(tick).Add(tick)))
		maps.Copy(w.Header(), rec.Header())
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	}))
	cert, _, _ := e.ca.ServerCert(t)
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	e.vars["CLOUDUPLOAD_AZURE_BLOB_ENDPOINT"] = srv.URL + "/{account}"
	const workers = 12
	e.vars["CLOUDUPLOAD_AZURE_WORKERS"] = "12"

	client := e.ca.Client()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = 2
	tg := e.target()
	tg.transport = policy.Transporter(client)
	var ranges [][2]int
	for off := 0; off < 30*chunkSize; off += chunkSize {
		ranges = append(ranges, [2]int{off + grainSize, off + 2*grainSize})
	}
	disk := sparseDisk(30*chunkSize, false, ranges...)
	name := imageName(t)
	_, log, err := e.upload(t, tg, targets.Job{}, disk, name, nil)
	if err != nil {
		t.Fatalf("upload: %v\n%s", err, log)
	}
	e.checkVHD(t, name+".vhd", disk)
	if n := conns.Load(); n > workers+1 || requests.Load() < 31 || http2.Load() != 0 {
		t.Errorf("%d requests (%d over HTTP/2) on %d connections; want at least 31 requests (30 chunks and the footer) on at most %d HTTP/1.1 connections",
			requests.Load(), http2.Load(), n, workers+1)
	}
}
