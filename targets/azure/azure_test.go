package azure

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/internal/testutil"
	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/uploader/image"
)

// sparseDisk is a disk of size bytes with data (pseudo-random bytes) in the
// given [start, end) ranges and a GPT signature when gpt.
func sparseDisk(size int, gpt bool, ranges ...[2]int) []byte {
	b := make([]byte, size)
	x := uint32(88172645)
	for _, r := range ranges {
		for i := r[0]; i < r[1]; i++ {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			b[i] = byte(x) | 1
		}
	}
	if gpt {
		copy(b[512:], "EFI PART")
	}
	return b
}

// writeSparse writes disk to path as a sparse file: only its 4 KiB blocks
// that hold data are written, the rest are holes.
func writeSparse(t *testing.T, path string, disk []byte) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(len(disk))); err != nil {
		t.Fatal(err)
	}
	zero := make([]byte, 4096)
	for off := 0; off < len(disk); off += 4096 {
		b := disk[off:min(off+4096, len(disk))]
		if !bytes.Equal(b, zero[:len(b)]) {
			if _, err := f.WriteAt(b, int64(off)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// upload publishes disk (as a sparse .raw file) with target data for name plus
// extra, and returns the result, the log and the error.
func (e *env) upload(t *testing.T, tg *Target, job targets.Job, disk []byte, name string, extra map[string]any) (string, string, error) {
	t.Helper()
	if job.Filename == "" {
		job.Filename = "appliance.x86_64-1.0.0-Build1.1.raw"
	}
	if job.ID == "" {
		job = targets.Job{ID: "7", User: "tester", Project: "home:tester", Repository: "images", Arch: "x86_64", Package: "appliance", Filename: job.Filename}
	}
	path := filepath.Join(t.TempDir(), job.Filename)
	writeSparse(t, path, disk)
	mtime := time.Unix(1700000000, 0)
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	img, err := image.Open(path, job.Filename)
	if err != nil {
		t.Fatal(err)
	}
	var log testutil.SyncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := tg.Upload(ctx, targets.Request{Job: job, Data: e.data(t, name, extra), Image: img, Log: targets.NewLog(&log), Getenv: e.getenv})
	for _, s := range []string{testSecret, testClientID} {
		if strings.Contains(log.String(), s) || strings.Contains(res, s) || (err != nil && strings.Contains(err.Error(), s)) {
			t.Errorf("a credential appears in the log, result or error")
		}
	}
	return res, log.String(), err
}

// TestSparseUpload checks that only grains holding data are written, in
// parallel, that the blob is the disk plus a valid footer, and what the
// managed image was created with.
func TestSparseUpload(t *testing.T) {
	e := newEnv(t)
	const mib = 1 << 20
	// 10.5 MiB disk: data in [1 MiB, 1 MiB+100 KiB), a byte at 5 MiB+3, and
	// the last 10 KiB, so the blob is rounded up to 11 MiB.
	size := 10*mib + mib/2
	disk := sparseDisk(size, true, [2]int{mib, mib + 100<<10}, [2]int{5*mib + 3, 5*mib + 4}, [2]int{size - 10<<10, size})
	name := imageName(t)
	res, log, err := e.upload(t, e.target(), targets.Job{}, disk, name, map[string]any{"tags": map[string]string{"team": "os"}})
	if err != nil {
		t.Fatalf("upload: %v\n%s", err, log)
	}
	if res != imageID(name) {
		t.Errorf("result %q, want %q", res, imageID(name))
	}
	e.checkVHD(t, name+".vhd", disk)
	// The written ranges: the first grain (partition table), the two
	// grains of data at 1 MiB, one grain at 5 MiB, the last grain of the
	// disk (64 KiB from 10.5 MiB - 64 KiB) and the footer.
	want := [][2]int64{{0, 64 << 10}, {mib, mib + 128<<10}, {5 * mib, 5*mib + 64<<10}, {int64(size) - 64<<10, int64(size)}, {11 * mib, 11*mib + 512}}
	if got := e.pageRanges(t, name+".vhd"); !equalRanges(got, want) {
		t.Errorf("page ranges %v, want %v", got, want)
	}
	if !strings.Contains(log, "with the service principal's token") {
		t.Errorf("the log does not say the token was used:\n%s", log)
	}
	if !strings.Contains(log, "is a sparse file: reading only where it holds data") {
		t.Errorf("the sparse file was read whole:\n%s", log)
	}
	if !strings.Contains(log, "skipped") {
		t.Errorf("the log does not say what was skipped:\n%s", log)
	}
	puts := e.fake.Calls("PUT", "/images/"+name+"$")
	if len(puts) != 1 {
		t.Fatalf("%d PUT image calls, want 1", len(puts))
	}
	body := puts[0].Body
	props := body["properties"].(map[string]any)
	osDisk := props["storageProfile"].(map[string]any)["osDisk"].(map[string]any)
	if props["hyperVGeneration"] != "V2" {
		t.Errorf("hyperVGeneration %v, want V2 for a GPT disk", props["hyperVGeneration"])
	}
	if osDisk["osState"] != "Generalized" || osDisk["osType"] != "Linux" {
		t.Errorf("os disk %v", osDisk)
	}
	if osDisk["blobUri"] != e.azurite.ContainerURL("images")+"/"+name+".vhd" {
		t.Errorf("blobUri %v", osDisk["blobUri"])
	}
	tags := body["tags"].(map[string]any)
	if tags["team"] != "os" || tags[tagJob] != "7" || len(tags[tagToken].(string)) != 32 || tags[tagImage] != "appliance.x86_64-1.0.0-Build1.1.raw" {
		t.Errorf("tags %v", tags)
	}
	if body["location"] != testLocation {
		t.Errorf("location %v, want the storage account's", body["location"])
	}
	// The tenant was found through the challenge; tokens were asked with
	// the client id, never with the secret in a URL.
	if n := len(e.fake.Calls("GET", "^/subscriptions/"+testSubscription+"$")); n != 1 {
		t.Errorf("%d tenant discovery calls, want 1", n)
	}
	for _, c := range e.fake.Calls("", ".") {
		if strings.Contains(c.Query.Encode(), testSecret) || strings.Contains(c.Path, testSecret) {
			t.Errorf("the secret appears in a URL: %s %s", c.Method, c.Path)
		}
	}
}

func equalRanges(a, b [][2]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAccountKeyFallback: a principal without a data-plane role writes with
// the account key from listKeys, and says so.
func TestAccountKeyFallback(t *testing.T) {
	e := newEnv(t)
	e.fake.denyStorage = true
	name := imageName(t)
	disk := sparseDisk(2<<20, false, [2]int{0, 4096})
	_, log, err := e.upload(t, e.target(), targets.Job{}, disk, name, nil)
	if err != nil {
		t.Fatalf("upload: %v\n%s", err, log)
	}
	if !strings.Contains(log, "with the storage account key") {
		t.Errorf("the log does not say the account key was used:\n%s", log)
	}
	if n := len(e.fake.Calls("POST", "/listKeys$")); n != 1 {
		t.Errorf("%d listKeys calls, want 1", n)
	}
	e.checkVHD(t, name+".vhd", disk)
}

// TestRerunIsIdempotent: the same job run again reuses its blob and image;
// another job with the same image_name is refused, naming the blob, and
// leaves it alone.
func TestRerunIsIdempotent(t *testing.T) {
	e := newEnv(t)
	name := imageName(t)
	disk := sparseDisk(2<<20, false, [2]int{0, 4096})
	job := targets.Job{ID: "9", User: "tester", Project: "p", Repository: "r", Arch: "x86_64", Package: "a", Filename: "a.x86_64.raw"}
	res1, log, err := e.upload(t, e.target(), job, disk, name, nil)
	if err != nil {
		t.Fatalf("first run: %v\n%s", err, log)
	}
	// Same job, same file (upload gives every file the same mtime): the
	// token matches.
	res2, log2, err := e.upload(t, e.target(), job, disk, name, nil)
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, log2)
	}
	if res1 != res2 {
		t.Errorf("results differ: %q, %q", res1, res2)
	}
	if !strings.Contains(log2, "reusing it") || strings.Contains(log2, "create managed image") {
		t.Errorf("the second run did not reuse:\n%s", log2)
	}
	if n := len(e.fake.Calls("PUT", "/images/")); n != 1 {
		t.Errorf("%d PUT image calls, want 1", n)
	}

	other := job
	other.ID = "10"
	_, log3, err := e.upload(t, e.target(), other, disk, name, nil)
	if err == nil || cloudupload.ErrorCode(err) != cloudupload.EINVALID || !strings.Contains(err.Error(), name+".vhd") {
		t.Fatalf("another job: %v, want a conflict naming the blob\n%s", err, log3)
	}
	if st := e.blobs(t)[name+".vhd"]; st != "complete" {
		t.Errorf("the first job's blob is now %q", st)
	}
}

// TestForeignBlob: a blob of the name that this job did not write is a
// conflict, and is left as it was.
func TestForeignBlob(t *testing.T) {
	e := newEnv(t)
	name := imageName(t)
	e.putBlob(t, name+".vhd", 1<<20+512, nil)
	_, log, err := e.upload(t, e.target(), targets.Job{}, sparseDisk(1<<20, false, [2]int{0, 512}), name, nil)
	if err == nil || !strings.Contains(err.Error(), "exists and was not written by this job") {
		t.Fatalf("error %v\n%s", err, log)
	}
	if _, ok := e.blobs(t)[name+".vhd"]; !ok {
		t.Errorf("the foreign blob was removed")
	}
	if n := len(e.fake.Calls("PUT", "/images/")); n != 0 {
		t.Errorf("an image was created")
	}
}

// TestImageFailureCleansUp: ARM throttles the image creation once (429
// with Retry-After, retried), then the long-running operation fails: the
// job fails and removes the image and the blob it made.
func TestImageFailureCleansUp(t *testing.T) {
	e := newEnv(t)
	e.fake.throttle["PUT images"] = 1
	e.fake.failOp["PUT images"] = "InternalOperationError"
	e.fake.pollsPerOp = 2
	name := imageName(t)
	_, log, err := e.upload(t, e.target(), targets.Job{}, sparseDisk(1<<20, false, [2]int{0, 512}), name, nil)
	if err == nil || !strings.Contains(err.Error(), "create managed image "+name) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("error %q, want one line naming the image\n%s", err, log)
	}
	if n := len(e.fake.Calls("PUT", "/images/"+name+"$")); n != 2 {
		t.Errorf("%d PUT image calls, want 2 (one throttled)", n)
	}
	if n := len(e.fake.Calls("DELETE", "/images/"+name+"$")); n != 1 {
		t.Errorf("%d DELETE image calls, want 1", n)
	}
	if e.fake.resource(imageID(name)) != nil {
		t.Errorf("the failed image is still there")
	}
	if _, ok := e.blobs(t)[name+".vhd"]; ok {
		t.Errorf("the blob is still there")
	}
}

// TestGallery publishes a gallery image version from the blob (no managed
// image) with replication regions, and one from a managed image.
func TestGallery(t *testing.T) {
	e := newEnv(t)
	e.fake.addResource(galleryImageID("gal", "sles"), map[string]any{"name": "sles", "location": testLocation,
		"properties": map[string]any{"osType": "Linux", "osState": "Generalized", "hyperVGeneration": "V1", "architecture": "x64", "provisioningState": "Succeeded"}})
	disk := sparseDisk(1<<20, false, [2]int{0, 512})

	name := imageName(t)
	res, log, err := e.upload(t, e.target(), targets.Job{}, disk, name, map[string]any{
		"managed_image": false,
		"gallery":       map[string]any{"name": "gal", "image_definition": "sles", "version": "1.2.3", "target_regions": []string{"northeurope", "westeurope"}},
	})
	if err != nil {
		t.Fatalf("upload: %v\n%s", err, log)
	}
	if want := galleryImageID("gal", "sles") + "/versions/1.2.3"; res != want {
		t.Errorf("result %q, want %q", res, want)
	}
	puts := e.fake.Calls("PUT", "/versions/1.2.3$")
	if len(puts) != 1 {
		t.Fatalf("%d PUT version calls", len(puts))
	}
	b, _ := json.Marshal(puts[0].Body)
	for _, want := range []string{`"storageAccountId":"` + storageAccountID("devstoreaccount1") + `"`,
		`"uri":"` + e.azurite.ContainerURL("images") + "/" + name + `.vhd"`,
		`"targetRegions":[{"name":"westeurope"},{"name":"northeurope"}]`, `"cloudupload:token"`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("version body lacks %s: %s", want, b)
		}
	}

	name2 := name + "-2"
	res, log, err = e.upload(t, e.target(), targets.Job{}, disk, name2, map[string]any{
		"gallery": map[string]any{"name": "gal", "image_definition": "sles", "version": "1.2.4"},
	})
	if err != nil {
		t.Fatalf("upload: %v\n%s", err, log)
	}
	if want := imageID(name2) + "," + galleryImageID("gal", "sles") + "/versions/1.2.4"; res != want {
		t.Errorf("result %q, want %q", res, want)
	}
	puts = e.fake.Calls("PUT", "/versions/1.2.4$")
	if b, _ := json.Marshal(puts[0].Body); len(puts) != 1 || !bytes.Contains(b, []byte(`"source":{"id":"`+imageID(name2)+`"}`)) {
		t.Errorf("version 1.2.4 not made from the managed image: %s", b)
	}

	// A definition for another generation is refused before any upload.
	_, _, err = e.upload(t, e.target(), targets.Job{}, disk, name+"-3", map[string]any{
		"hyper_v_generation": "V2",
		"gallery":            map[string]any{"name": "gal", "image_definition": "sles", "version": "1.2.5"},
	})
	if err == nil || !strings.Contains(err.Error(), "generation V1") {
		t.Errorf("generation mismatch: %v", err)
	}
	if _, ok := e.blobs(t)[name+"-3.vhd"]; ok {
		t.Errorf("a blob was written for a refused job")
	}
}

// TestWrongSecret: Azure AD refuses the principal; the error says so
// without quoting AAD (whose message names the client id).
func TestWrongSecret(t *testing.T) {
	e := newEnv(t)
	name := imageName(t)
	_, log, err := e.upload(t, e.target(), targets.Job{}, sparseDisk(1<<20, false), name, map[string]any{
		"application_key": encryptOBS(t, &testKey().PublicKey, "not-the-secret"),
		"tenant":          testTenant,
	})
	if err == nil || !strings.Contains(err.Error(), "cannot sign in as the service principal") || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("error %v\n%s", err, log)
	}
	if strings.Contains(err.Error(), "AADSTS") {
		t.Errorf("the error quotes AAD: %v", err)
	}
	if n := len(e.fake.Calls("GET", "^/subscriptions/[^/]+$")); n != 0 {
		t.Errorf("the tenant was looked up although given")
	}
}

// TestKeepBlobFalse removes the blob once the image exists.
func TestKeepBlobFalse(t *testing.T) {
	e := newEnv(t)
	name := imageName(t)
	_, log, err := e.upload(t, e.target(), targets.Job{}, sparseDisk(1<<20, false, [2]int{0, 512}), name, map[string]any{"keep_blob": false})
	if err != nil {
		t.Fatalf("upload: %v\n%s", err, log)
	}
	if _, ok := e.blobs(t)[name+".vhd"]; ok {
		t.Errorf("the blob is still there")
	}
}

// TestThrottledPagesRetried: Azure answers some Put Page requests with 503
// ServerBusy (its throttling); they are retried and the blob is complete.
// Every Put Page carries the CRC64 of its body.
func TestThrottledPagesRetried(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	var pages, refused int
	badCRC := 0
	e.vars["CLOUDUPLOAD_AZURE_BLOB_ENDPOINT"] = proxy(t, e, func(w http.ResponseWriter, r *http.Request) bool {
		if !isPutPage(r) {
			return false
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		mu.Lock()
		defer mu.Unlock()
		if !crcMatches(r, body) {
			badCRC++
		}
		pages++
		if pages%3 == 1 {
			refused++
			w.Header().Set("x-ms-error-code", "ServerBusy")
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}
		return false
	}) + "/{account}"
	name := imageName(t)
	disk := sparseDisk(12<<20, false, [2]int{0, 5 << 20}, [2]int{8 << 20, 9 << 20})
	_, log, err := e.upload(t, e.target(), targets.Job{}, disk, name, nil)
	if err != nil {
		t.Fatalf("upload: %v\n%s", err, log)
	}
	e.checkVHD(t, name+".vhd", disk)
	mu.Lock()
	defer mu.Unlock()
	if refused == 0 || badCRC != 0 {
		t.Errorf("%d Put Page requests, %d refused, %d without the right x-ms-content-crc64", pages, refused, badCRC)
	}
}

// crcMatches reports whether a Put Page request carries the CRC64 of its
// body in x-ms-content-crc64, as the SDK computes it (so the target's own
// table is checked against the SDK's), and no Content-MD5.
func crcMatches(r *http.Request, body []byte) bool {
	var sdk crcCapture
	if _, err := blob.TransferValidationTypeComputeCRC64().Apply(streaming.NopCloser(bytes.NewReader(body)), &sdk); err != nil || sdk.crc == nil {
		return false
	}
	return r.Header.Get("x-ms-content-crc64") == base64.StdEncoding.EncodeToString(sdk.crc) && r.Header.Get("Content-MD5") == ""
}

// crcCapture receives the checksum the SDK computes.
type crcCapture struct{ crc []byte }

func (c *crcCapture) SetCRC64(b []byte)               { c.crc = b }
func (c *crcCapture) SetMD5([]byte)                   {}
func (c *crcCapture) SetStructuredBody(string, int64) {}
