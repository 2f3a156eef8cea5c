package backend_test

import (
	"path/filepath"
	"testing"

	"github.com/cloudupload/cloudupload/backend"
	"github.com/cloudupload/cloudupload/backend/storetest"
)

// TestDiskStore runs the store conformance suite on the state directory.
func TestDiskStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Open {
		dir := filepath.Join(t.TempDir(), "state")
		return func(storetest.Node) (backend.Store, error) { return backend.OpenDiskStore(dir) }
	})
}
