package azure

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/targets/targettest"
	"github.com/cloudupload/cloudupload/uploader/image"
)

// TestConformance runs the targets.Target suite against Azurite and the
// ARM/AAD fake.
func TestConformance(t *testing.T) {
	e := newEnv(t)
	targettest.Run(t, targettest.Harness{
		New:       func(t *testing.T) targets.Target { return e.target() },
		ValidData: func(t *testing.T) []byte { return e.data(t, imageName(t), nil) },
		Getenv:    e.getenv,
		WantsDisk: true,
		Secrets:   []string{testClientID, testSecret},
		Invalid: []targettest.InvalidCase{
			{Data: e.data(t, "x", nil), Field: "image_name"},
			{Data: e.data(t, "img", map[string]any{"container": "Images"}), Field: "container"},
			{Data: e.data(t, "img", map[string]any{"storage_account": "my-account"}), Field: "storage_account"},
			{Data: e.data(t, "img", map[string]any{"resource_group": "rg."}), Field: "resource_group"},
			{Data: e.data(t, "img", map[string]any{"subscription": "ab"}), Field: "subscription"},
			{Data: e.data(t, "img", map[string]any{"application_key": nil}), Field: "application_key"},
			{Name: "undecryptable", Data: e.data(t, "img", map[string]any{"application_id": "bm90IGVuY3J5cHRlZA==\n"}), Field: "application_id"},
			{Data: e.data(t, "img", map[string]any{"colour": "blue"}), Field: "colour"},
			{Data: e.data(t, "img", map[string]any{"hyper_v_generation": "V3"}), Field: "hyper_v_generation"},
			{Data: e.data(t, "img", map[string]any{"gallery": map[string]any{"name": "g", "image_definition": "d", "version": "1.0"}}), Field: "gallery.version"},
		},
		Verify: func(t *testing.T, result string, want []byte) {
			if !strings.HasPrefix(result, imageID("")) {
				t.Errorf("result %q is not a managed image id", result)
			}
			name := result[strings.LastIndex(result, "/")+1:]
			e.checkVHD(t, name+".vhd", want)
		},
		Leftovers: func(t *testing.T) []string { return e.leftovers(t) },
	})
}

// checkVHD downloads the page blob and checks it is the disk, zeros up to
// the next MiB and a fixed VHD footer that uploader/image accepts.
func (e *env) checkVHD(t *testing.T, name string, want []byte) {
	t.Helper()
	got := e.blobBytes(t, name)
	vhdSize := (int64(len(want)) + 1<<20 - 1) &^ (1<<20 - 1)
	if int64(len(got)) != vhdSize+512 {
		t.Fatalf("blob %s has %d bytes, want %d", name, len(got), vhdSize+512)
	}
	if !bytes.Equal(got[:len(want)], want) {
		t.Errorf("blob %s does not hold the disk", name)
	}
	if !bytes.Equal(got[len(want):vhdSize], make([]byte, vhdSize-int64(len(want)))) {
		t.Errorf("blob %s is not zero after the disk", name)
	}
	path := filepath.Join(t.TempDir(), "blob.vhd")
	if err := os.WriteFile(path, got, 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := image.Open(path, "blob.vhd")
	if err != nil {
		t.Fatalf("the blob is not a fixed VHD: %v", err)
	}
	size, err := img.DiskSize(context.Background())
	if err != nil || size != vhdSize {
		t.Errorf("VHD disk size %d, %v; want %d", size, err, vhdSize)
	}
	rc, err := img.OpenDisk(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if n, err := io.Copy(io.Discard, rc); err != nil || n != vhdSize {
		t.Errorf("reading the VHD's disk: %d bytes, %v", n, err)
	}
}
