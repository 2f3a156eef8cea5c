package uploader

import (
	"bytes"
	"context"
	"testing"

	"github.com/cloudupload/cloudupload"
)

// TestProtocol: `clouduploader protocol` prints the line the daemon probes
// for at start.
func TestProtocol(t *testing.T) {
	var out bytes.Buffer
	if code := Main(context.Background(), []string{"protocol"}, Options{Stdout: &out}); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	if out.String() != cloudupload.UploaderProtocol+"\n" {
		t.Errorf("printed %q", out.String())
	}
}
