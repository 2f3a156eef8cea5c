package azure

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"

	"github.com/cloudupload/cloudupload/targets/azuretest"
)

// testKey is the server key pair of the tests, made once.
var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// writePrivKey writes the test private key as the server does (PKCS#8).
func writePrivKey(t testing.TB) string {
	der, err := x509.MarshalPKCS8PrivateKey(testKey())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "privkey.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// encryptOBS encrypts s as OBS's frontend does: RSA PKCS#1 v1.5 with the
// server's public key, then Ruby's Base64.encode64 (a newline after every
// 60 characters and at the end).
func encryptOBS(t testing.TB, pub *rsa.PublicKey, s string) string {
	//lint:ignore SA1019 this is what OBS's frontend does
	ct, err := rsa.EncryptPKCS1v15(rand.Reader, pub, []byte(s))
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString(ct)
	var out strings.Builder
	for len(b64) > 60 {
		out.WriteString(b64[:60] + "\n")
		b64 = b64[60:]
	}
	out.WriteString(b64 + "\n")
	return out.String()
}

// env is a test's Azure: Azurite, the ARM/AAD fake and the environment
// pointing the target at them.
type env struct {
	ca      *azuretest.CA
	azurite *azuretest.Azurite
	fake    *fakeAzure
	vars    map[string]string
	cont    *container.Client // the test container, with the account key
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ca := azuretest.NewCA(t)
	e := &env{ca: ca, azurite: azuretest.StartAzurite(t, ca), fake: startFake(t, ca)}
	e.vars = map[string]string{
		"CLOUDUPLOAD_PRIVKEY":             writePrivKey(t),
		"AZURE_AUTHORITY_HOST":            e.fake.URL,
		"CLOUDUPLOAD_AZURE_ARM_ENDPOINT":  e.fake.URL,
		"CLOUDUPLOAD_AZURE_BLOB_ENDPOINT": e.azurite.Endpoint,
		"CLOUDUPLOAD_AZURE_WORKERS":       "4",
	}
	cred, err := container.NewSharedKeyCredential(azuretest.Account, azuretest.Key)
	if err != nil {
		t.Fatal(err)
	}
	e.cont, err = container.NewClientWithSharedKeyCredential(e.azurite.ContainerURL("images"), cred,
		&container.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: ca.Client()}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.cont.Create(ctx, nil); err != nil {
		t.Fatalf("create container: %v\n%s", err, e.azurite.Output())
	}
	return e
}

func (e *env) getenv(k string) string { return e.vars[k] }

// target is the azure target talking to this env, trusting its CA, with
// short polls and retry pauses.
func (e *env) target() *Target {
	return &Target{workers: 4, poll: 10 * time.Millisecond, retryDelay: 50 * time.Millisecond, transport: policy.Transporter(e.ca.Client())}
}

// data returns valid target data for an image called name, with extra
// fields merged in.
func (e *env) data(t testing.TB, name string, extra map[string]any) []byte {
	m := map[string]any{
		"application_id":  encryptOBS(t, &testKey().PublicKey, testClientID),
		"application_key": encryptOBS(t, &testKey().PublicKey, testSecret),
		"user_id":         7,
		"image_name":      name,
		"subscription":    testSubscription,
		"container":       "images",
		"storage_account": azuretest.Account,
		"resource_group":  testGroup,
	}
	for k, v := range extra {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var nameSafe = regexp.MustCompile(`[^A-Za-z0-9]+`)

// imageName derives a unique image name from the test's name.
func imageName(t testing.TB) string {
	s := strings.Trim(nameSafe.ReplaceAllString(t.Name(), "-"), "-")
	if len(s) > 60 {
		s = s[len(s)-60:]
		s = strings.TrimLeft(s, "-")
	}
	return s
}

// blobBytes downloads a blob of the test container.
func (e *env) blobBytes(t testing.TB, name string) []byte {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := e.cont.NewBlobClient(name).DownloadStream(ctx, nil)
	if err != nil {
		t.Fatalf("download %s: %v", name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pageRanges lists the written ranges of a page blob.
func (e *env) pageRanges(t testing.TB, name string) [][2]int64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out [][2]int64
	pager := e.cont.NewPageBlobClient(name).NewGetPageRangesPager(&pageblob.GetPageRangesOptions{})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.PageRange {
			out = append(out, [2]int64{*r.Start, *r.End + 1})
		}
	}
	return out
}

// blobs lists the container's blobs with their cloudupload_state.
func (e *env) blobs(t testing.TB) map[string]string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := map[string]string{}
	pager := e.cont.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Include: container.ListBlobsInclude{Metadata: true}})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Segment.BlobItems {
			out[*b.Name] = metaValue(b.Metadata, metaState)
		}
	}
	return out
}

// leftovers lists unfinished blobs and resources not provisioned.
func (e *env) leftovers(t testing.TB) []string {
	var out []string
	for name, state := range e.blobs(t) {
		if state != "complete" {
			out = append(out, fmt.Sprintf("blob %s (state %q)", name, state))
		}
	}
	e.fake.mu.Lock()
	defer e.fake.mu.Unlock()
	for id, r := range e.fake.resources {
		props, _ := r["properties"].(map[string]any)
		if st, ok := props["provisioningState"]; ok && st != "Succeeded" {
			out = append(out, fmt.Sprintf("%s (%v)", id, st))
		}
	}
	return out
}

// putBlob creates a page blob of size bytes with metadata, as someone else
// would.
func (e *env) putBlob(t testing.TB, name string, size int64, meta map[string]*string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.cont.NewPageBlobClient(name).Create(ctx, size, &pageblob.CreateOptions{Metadata: meta}); err != nil {
		t.Fatal(err)
	}
}
