package backend

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cloudupload/cloudupload"
)

// TestReceiveAnnouncedSize: for a job with a size (from the skeleton), a
// PUT whose Content-Length says otherwise (an empty one included) fails the
// job before a byte is read, as OBS's "size mismatch" did; an unknown
// length (chunked) is checked against the size as it arrives.
func TestReceiveAnnouncedSize(t *testing.T) {
	cfg := daemonConfig(t.TempDir())
	m := open(t, cfg)
	ctx := context.Background()
	sized := func() cloudupload.Job {
		t.Helper()
		j := testJob("alice")
		j.Size = 5
		j, err := m.Create(ctx, j, fakeData{Mode: "succeed", Result: "ok"}.bytes())
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	for _, c := range []struct {
		body string
		size int64
		msg  string
	}{
		{"12345678", 8, "the request announces 8 bytes, expected 5"},
		{"", 0, "the request announces 0 bytes, expected 5"},
		{"1234567", -1, "received 6 bytes, expected 5"}, // long: read up to size+1
		{"123", -1, "received 3 bytes, expected 5"},
	} {
		j := sized()
		r := &countingBody{r: strings.NewReader(c.body)}
		err := m.Receive(ctx, j.ID, r, c.size)
		wantCode(t, err, cloudupload.EINVALID, c.msg)
		g, _ := m.Get(j.ID)
		wantState(t, g, cloudupload.StateFailed, c.msg)
		if c.size >= 0 && r.n != 0 {
			t.Errorf("%q: %d bytes read though the length was wrong", c.body, r.n)
		}
		if _, err := os.Stat(filepath.Join(cfg.StateDir, dirJobs, strconv.FormatInt(j.ID, 10))); !os.IsNotExist(err) {
			t.Errorf("job %d still has its directory under jobs/: %v", j.ID, err)
		}
	}
	j := sized()
	if err := m.Receive(ctx, j.ID, strings.NewReader("12345"), -1); err != nil {
		t.Fatalf("chunked body of the right size: %v", err)
	}
	if g := wait(t, m, j.ID); g.State != cloudupload.StateSucceeded || g.Size != 5 {
		t.Errorf("chunked PUT: job %s size %d", g.State, g.Size)
	}
}

type countingBody struct {
	r interface{ Read([]byte) (int, error) }
	n int
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
