package s3

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// sink is an S3 endpoint for benchmarks that costs next to no CPU: it
// takes a multipart upload over loopback HTTP with the real SDK on the
// other side, checks each part's CRC32C (the header S3 checks) and the
// object's size on completion, keeps the sha256 tag, and throws the bytes
// away. Beside versitygw (which stores the parts, hashes them with MD5 and
// copies them into the object on completion, all on the same cores), it
// shows how fast the uploader itself goes, as the in-process endpoints of
// the ec2 and azure benchmarks do. It does not check signatures.
type sink struct {
	url string
	mu  sync.Mutex
	// per completed object: its size and sha256 tag
	size   map[string]int64
	tag    map[string]string
	parts  map[string]int64 // bytes received per upload id
	err    error            // the first protocol error
	nextID int
}

func startSink(tb testing.TB) *sink {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	k := &sink{url: "http://" + ln.Addr().String(), size: map[string]int64{}, tag: map[string]string{}, parts: map[string]int64{}}
	srv := &http.Server{Handler: k}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	return k
}

func (k *sink) fail(w http.ResponseWriter, format string, args ...any) {
	err := fmt.Errorf(format, args...)
	k.mu.Lock()
	if k.err == nil {
		k.err = err
	}
	k.mu.Unlock()
	w.WriteHeader(http.StatusBadRequest)
	fmt.Fprintf(w, "<Error><Code>InvalidRequest</Code><Message>%s</Message></Error>", err)
}

func (k *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	key := strings.TrimPrefix(r.URL.Path, "/")
	switch {
	case r.Method == http.MethodPost && q.Has("uploads"):
		k.mu.Lock()
		k.nextID++
		id := strconv.Itoa(k.nextID)
		k.parts[id] = 0
		k.mu.Unlock()
		fmt.Fprintf(w, "<InitiateMultipartUploadResult><UploadId>%s</UploadId></InitiateMultipartUploadResult>", id)
	case r.Method == http.MethodPut && q.Has("partNumber"):
		c := crc32.New(castagnoli)
		n, err := io.Copy(c, r.Body)
		if err != nil {
			k.fail(w, "part %s: %v", q.Get("partNumber"), err)
			return
		}
		if want, got := r.Header.Get("X-Amz-Checksum-Crc32c"), base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, c.Sum32())); want != got {
			k.fail(w, "part %s: CRC32C %s, the header says %q", q.Get("partNumber"), got, want)
			return
		}
		k.mu.Lock()
		k.parts[q.Get("uploadId")] += n
		k.mu.Unlock()
		w.Header().Set("ETag", `"`+q.Get("partNumber")+`"`)
	case r.Method == http.MethodPost && q.Has("uploadId"):
		io.Copy(io.Discard, r.Body)
		k.mu.Lock()
		n := k.parts[q.Get("uploadId")]
		k.mu.Unlock()
		if want := r.Header.Get("X-Amz-Mp-Object-Size"); want != strconv.FormatInt(n, 10) {
			k.fail(w, "complete: %d bytes received, the request says %q", n, want)
			return
		}
		k.mu.Lock()
		k.size[key] = n
		k.mu.Unlock()
		fmt.Fprintf(w, "<CompleteMultipartUploadResult><Key>%s</Key><ETag>\"x\"</ETag></CompleteMultipartUploadResult>", key)
	case r.Method == http.MethodPut && q.Has("tagging"):
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		s := string(body)
		// <Tag><Key>sha256</Key><Value>…</Value></Tag>
		if i := strings.Index(s, "<Key>"+tagSHA256+"</Key><Value>"); i >= 0 {
			v := s[i+len("<Key>"+tagSHA256+"</Key><Value>"):]
			if j := strings.Index(v, "<"); j >= 0 {
				k.mu.Lock()
				k.tag[key] = v[:j]
				k.mu.Unlock()
			}
		}
	default:
		k.fail(w, "%s %s: not what an upload sends", r.Method, r.URL)
	}
}

// object returns the size and sha256 tag of a completed object, and the
// first protocol error.
func (k *sink) object(key string) (int64, string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.size[key], k.tag[key], k.err
}
