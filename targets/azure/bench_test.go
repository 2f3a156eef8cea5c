package azure

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/targets/azuretest"
	"github.com/cloudupload/cloudupload/uploader/image"
)

// The benchmark's child process: the test binary re-run with childEnv set
// to "upload" or "read" does one upload of (or one read through) the image
// at CLOUDUPLOAD_AZURE_BENCH_IMAGE, prints its figures (its peak memory
// among them) as JSON and exits.
const childEnv = "CLOUDUPLOAD_AZURE_BENCH_CHILD"

// Sizes of the benchmark's image, configurable for a smaller run:
// CLOUDUPLOAD_AZURE_BENCH_DISK and CLOUDUPLOAD_AZURE_BENCH_DATA in MiB.
const (
	defaultBenchDisk = 4096
	defaultBenchData = 1024
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(benchChild(mode))
	}
	os.Exit(m.Run())
}

type childResult struct {
	Seconds float64 `json:"seconds"`
	Disk    int64   `json:"disk"`
	Sent    int64   `json:"sent"`
	Skipped int64   `json:"skipped"`
	// Peak resident memory in MiB of the child itself (its VmHWM: the
	// rusage of an exec'd child starts from its parent's, which is the
	// benchmark's) and of the decompressor it ran, if any.
	PeakMiB        float64 `json:"peak_mib"`
	DecoderPeakMiB float64 `json:"decoder_peak_mib"`
}

func benchChild(mode string) int {
	path := os.Getenv("CLOUDUPLOAD_AZURE_BENCH_IMAGE")
	img, err := image.Open(path, filepath.Base(path))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx := context.Background()
	size, err := img.DiskSize(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if os.Getenv("CLOUDUPLOAD_AZURE_BENCH_COLD") != "" {
		if err := dropCache(path); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if f := os.Getenv("CLOUDUPLOAD_AZURE_BENCH_PROFILE_FILE"); f != "" {
		pf, err := os.Create(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer pf.Close()
		pprof.StartCPUProfile(pf)
		defer pprof.StopCPUProfile()
		defer func() { // and what was allocated, in <name>.allocs
			if af, err := os.Create(strings.TrimSuffix(f, ".pprof") + ".allocs"); err == nil {
				pprof.Lookup("allocs").WriteTo(af, 0)
				af.Close()
			}
		}()
	}
	start := time.Now()
	res := childResult{Disk: size}
	switch mode {
	case "read": // the baseline: the disk's bytes read (decompressed) and dropped
		rc, err := img.OpenDisk(ctx)
		if err == nil {
			// In the upload's 4 MiB reads: io.Copy to io.Discard would
			// read 8 KiB at a time, a slower baseline than it should be.
			_, err = io.CopyBuffer(struct{ io.Writer }{io.Discard}, struct{ io.Reader }{rc}, make([]byte, chunkSize))
			rc.Close()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	case "upload": // the target's blob upload, as Upload runs it
		r, err := benchRun(img)
		if err == nil {
			err = r.uploadBlob(ctx, size)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		res.Sent, res.Skipped = r.sent.Sent+image.VHDFooterSize, r.sent.Skipped
	}
	res.Seconds = time.Since(start).Seconds()
	res.PeakMiB = vmHWM()
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru) == nil {
		res.DecoderPeakMiB = float64(ru.Maxrss) / 1024 // KiB on Linux
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// benchRun is a run writing to the Azurite at CLOUDUPLOAD_AZURE_BENCH_URL
// with the account key, trusting the CA in SSL_CERT_FILE.
func benchRun(img targets.Image) (*run, error) {
	pem, err := os.ReadFile(os.Getenv("SSL_CERT_FILE"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tg := New().(*Target)
	tg.transport = (&azuretest.CA{Pool: pool}).Client()
	e, err := endpointsFrom(os.Getenv)
	if err != nil {
		return nil, err
	}
	cred, err := container.NewSharedKeyCredential(azuretest.Account, azuretest.Key)
	if err != nil {
		return nil, err
	}
	cc, err := container.NewClientWithSharedKeyCredential(os.Getenv("CLOUDUPLOAD_AZURE_BENCH_URL"), cred,
		&container.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: tg.blobTransport(e.workers), Retry: tg.clientOptions(e).Retry}})
	if err != nil {
		return nil, err
	}
	d := &data{ImageName: "bench-" + strconv.Itoa(os.Getpid()), Container: "images", StorageAccount: azuretest.Account}
	r := &run{t: tg, e: e, d: d, img: img, log: targets.NewLog(os.Stderr), job: targets.Job{ID: "bench", Filename: filepath.Base(img.Path())}}
	r.token = jobToken(r.job, d, img)
	r.blob = cc.NewPageBlobClient(d.blobName())
	return r, nil
}

// BenchmarkSparseUpload uploads a sparse image (default a 4 GiB disk with
// 1 GiB of data in 64 MiB extents; CLOUDUPLOAD_AZURE_BENCH_DISK and
// CLOUDUPLOAD_AZURE_BENCH_DATA in MiB for another size), as .raw (a sparse
// file) and as .raw.xz, into a page blob, each upload in a child process,
// and reads the same image to /dev/null in the same run as the baseline.
// Two servers, over HTTPS on loopback: Azurite (Node; it bounds the
// figures), and "sink", an in-process page blob endpoint that checks each
// request's CRC64 and drops the data, which shows what the target itself
// can do. It reports per format: MiB/s of disk read, and per server MiB/s
// of disk uploaded, the ratio to the read (x-read), MiB actually sent, the
// upload's peak RSS (and its decompressor's) and its CPU time
// (decompressor included), and Azurite's CPU time.
//
// Reading a sparse file from the page cache copies zeros for its holes at
// memory speed, which no upload of its data can match. Two more baselines
// for the raw image, in the same run: "cold", the read and the uploads
// with the image's pages dropped from the page cache first (as a service
// reading a fresh build's image from disk); and "put", curl PUTting the
// same data bytes (a file of the image's data alone) to the same server as
// one block blob over HTTPS, as `aws s3 cp` is the baseline of the s3
// target: x-put is the upload's MiB/s of data sent over curl's.
func BenchmarkSparseUpload(b *testing.B) {
	diskMiB, dataMiB := benchSize(b, "CLOUDUPLOAD_AZURE_BENCH_DISK", defaultBenchDisk), benchSize(b, "CLOUDUPLOAD_AZURE_BENCH_DATA", defaultBenchData)
	if dataMiB > diskMiB {
		b.Fatalf("data (%d MiB) larger than the disk (%d MiB)", dataMiB, diskMiB)
	}
	ca := azuretest.NewCA(b)
	// Azurite keeps the blobs in memory when it can: the figures are the
	// client's, not this machine's disk.
	store := b.TempDir()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if store, err = os.MkdirTemp("/dev/shm", "azurite-"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(store) })
	}
	az := azuretest.StartAzuriteIn(b, ca, store)
	cred, _ := container.NewSharedKeyCredential(azuretest.Account, azuretest.Key)
	cc, err := container.NewClientWithSharedKeyCredential(az.ContainerURL("images"), cred,
		&container.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: ca.Client()}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := cc.Create(context.Background(), nil); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	raw := filepath.Join(dir, "appliance.x86_64-1.0-Build1.1.raw")
	dataFile := filepath.Join(dir, "data.bin")
	dataBytes := writeSparseImage(b, raw, dataFile, int64(diskMiB)<<20, int64(dataMiB)<<20)
	xzFile := raw + ".xz"
	cmd := exec.Command("sh", "-c", "xz -0 -T2 --block-size=16MiB -c "+raw+" > "+xzFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("xz: %v %s", err, out)
	}
	sink := startSink(b, ca)
	b.ResetTimer()
	servers := []struct{ name, url string }{{"azurite", az.ContainerURL("images")}, {"sink", sink}}
	mibs := func(r childResult) float64 { return float64(r.Disk) / (1 << 20) / r.Seconds }
	for range b.N {
		for _, f := range []struct{ name, path, cold string }{{"raw", raw, ""}, {"raw-cold", raw, "1"}, {"xz", xzFile, ""}} {
			b.Setenv("CLOUDUPLOAD_AZURE_BENCH_COLD", f.cold)
			read, _ := runChild(b, "read", f.path, ca.File, "", "")
			b.ReportMetric(mibs(read), f.name+"-read-MiB/s")
			for _, srv := range servers {
				azCPU := az.CPUSeconds()
				up, cpu := runChild(b, "upload", f.path, ca.File, srv.url, srv.name+"-"+f.name)
				m := srv.name + "-" + f.name + "-"
				if srv.name == "azurite" {
					b.ReportMetric(az.CPUSeconds()-azCPU, m+"server-cpu-s")
				}
				b.ReportMetric(mibs(up), m+"MiB/s")
				b.ReportMetric(mibs(up)/mibs(read), m+"x-read")
				b.ReportMetric(float64(up.Sent)/(1<<20), m+"sent-MiB")
				b.ReportMetric(up.PeakMiB, m+"peak-MiB")
				if up.DecoderPeakMiB > 0 {
					b.ReportMetric(up.DecoderPeakMiB, m+"decoder-peak-MiB")
				}
				b.ReportMetric(cpu, m+"cpu-s")
				if f.name == "raw" {
					put := curlPut(b, ca.File, srv.url, dataFile, dataBytes)
					dataMiBs := float64(up.Sent) / (1 << 20) / up.Seconds
					b.ReportMetric(put, srv.name+"-put-MiB/s")
					b.ReportMetric(dataMiBs, m+"data-MiB/s")
					b.ReportMetric(dataMiBs/put, m+"x-put")
				}
			}
		}
	}
	b.ReportMetric(float64(dataBytes)/(1<<20), "data-MiB")
	b.ReportMetric(float64(diskMiB), "disk-MiB")
	b.ReportMetric(0, "ns/op")
}

func benchSize(b *testing.B, env string, def int) int {
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q is not a size in MiB", env, v)
	}
	return n
}

// vmHWM is this process's peak resident memory in MiB, 0 if unknown.
func vmHWM() float64 {
	b, _ := os.ReadFile("/proc/self/status")
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kib / 1024
		}
	}
	return 0
}

// runChild runs one child of the benchmark and returns its figures and
// CPU seconds (its decompressor's included). With CLOUDUPLOAD_AZURE_BENCH_PROFILE
// set to a directory, an upload child writes its CPU profile there as
// <name>.pprof.
func runChild(b *testing.B, mode, path, caFile, containerURL, name string) (childResult, float64) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, "CLOUDUPLOAD_AZURE_BENCH_IMAGE="+path,
		"SSL_CERT_FILE="+caFile, "CLOUDUPLOAD_AZURE_BENCH_URL="+containerURL)
	if dir := os.Getenv("CLOUDUPLOAD_AZURE_BENCH_PROFILE"); dir != "" && name != "" {
		cmd.Env = append(cmd.Env, "CLOUDUPLOAD_AZURE_BENCH_PROFILE_FILE="+filepath.Join(dir, name+".pprof"))
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s %s: %v\n%s", mode, path, err, errOut.String())
	}
	var res childResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		b.Fatalf("%s %s: %q: %v", mode, path, out.String(), err)
	}
	cpu := (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	return res, cpu
}

// writeSparseImage writes a sparse raw disk of size bytes holding data
// bytes in 64 MiB extents spread evenly over it, with a GPT signature,
// and the same data bytes one after the other into dataPath. The data
// compresses about 2:1 (half of every 4 KiB is random), like a file
// system's. Both files are synced (their pages clean, so that a cold run
// can drop them from the page cache). It returns the bytes of data
// written.
func writeSparseImage(b *testing.B, path, dataPath string, size, data int64) int64 {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	df, err := os.Create(dataPath)
	if err != nil {
		b.Fatal(err)
	}
	defer df.Close()
	defer func() {
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		if err := df.Sync(); err != nil {
			b.Fatal(err)
		}
	}()
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	const extent = 64 << 20
	n := (data + extent - 1) / extent
	if n == 0 {
		return 0
	}
	stride := size / n
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, extent)
	var written int64
	for i := int64(0); i < n; i++ {
		ln := min(extent, data-written)
		for k := 0; k < int(ln); k += 4096 {
			blk := buf[k:min(k+4096, int(ln))]
			for j := 0; j < len(blk)/2; j += 8 {
				v := rng.Uint64()
				for m := 0; m < 8 && j+m < len(blk)/2; m++ {
					blk[j+m] = byte(v >> (8 * m))
				}
			}
			for j := len(blk) / 2; j < len(blk); j++ {
				blk[j] = byte(j % 61)
			}
		}
		if i == 0 {
			copy(buf[512:], "EFI PART")
		}
		if _, err := f.WriteAt(buf[:ln], i*stride); err != nil {
			b.Fatal(err)
		}
		if _, err := df.Write(buf[:ln]); err != nil {
			b.Fatal(err)
		}
		written += ln
	}
	return written
}

// startSink serves the page blob calls the upload makes (Get Properties:
// not found; Create; Put Page, checking its CRC64; Set Metadata) and
// drops the data.
func startSink(b *testing.B, ca *azuretest.CA) string {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-ms-request-id", "sink")
		w.Header().Set("x-ms-version", "2025-11-05")
		switch q := r.URL.Query().Get("comp"); {
		case r.Method == http.MethodHead:
			w.Header().Set("x-ms-error-code", "BlobNotFound")
			w.WriteHeader(http.StatusNotFound)
		case r.Method == http.MethodPut && q == "page":
			body, err := io.ReadAll(io.LimitReader(r.Body, chunkSize+1))
			if err != nil || !crcMatches(r, body) {
				w.Header().Set("x-ms-error-code", "Crc64Mismatch")
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusCreated)
		case r.Method == http.MethodPut && q == "metadata":
			w.WriteHeader(http.StatusOK)
		case r.Method == http.MethodPut: // Create, and curl's Put Blob
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusCreated)
		default:
			w.WriteHeader(http.StatusBadRequest)
		}
	})
	return ca.Serve(b, h) + "/" + azuretest.Account + "/images"
}

// curlPut PUTs the file at path (n bytes) to the container at
// containerURL as one block blob with curl, over HTTPS, with a SAS, and
// returns its MiB/s: the baseline of "the same bytes through a plain
// upload to the same server".
func curlPut(b *testing.B, caFile, containerURL, path string, n int64) float64 {
	cred, err := container.NewSharedKeyCredential(azuretest.Account, azuretest.Key)
	if err != nil {
		b.Fatal(err)
	}
	blobName := "put-" + strconv.Itoa(rand.Int())
	q, err := sas.BlobSignatureValues{
		Protocol:      sas.ProtocolHTTPS,
		ExpiryTime:    time.Now().Add(time.Hour),
		Permissions:   (&sas.BlobPermissions{Create: true, Write: true}).String(),
		ContainerName: "images",
		BlobName:      blobName,
	}.SignWithSharedKey(cred)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command("curl", "-sS", "--fail", "--cacert", caFile, "-T", path, "-H", "Expect:",
		"-H", "x-ms-blob-type: BlockBlob", "-o", "/dev/null", containerURL+"/"+blobName+"?"+q.Encode())
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("curl PUT: %v\n%s", err, out)
	}
	return float64(n) / (1 << 20) / time.Since(start).Seconds()
}
