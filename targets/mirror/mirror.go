package mirror

import (
	"context"
	"time"

	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/uploader/image"
)

// Mirror is the mirror target.
type Mirror struct {
	now func() time.Time
}

// New returns the mirror target.
func New() targets.Target { return &Mirror{now: time.Now} }

// Name is "mirror".
func (*Mirror) Name() string { return "mirror" }

// Check validates target data: see ParseOptions.
func (m *Mirror) Check(job targets.Job, data []byte, getenv func(string) string) error {
	_, err := ParseOptions(job, data, getenv, m.now())
	return err
}

// Upload publishes req.Image as it was received (not decompressed), or
// with "unpack" the tree of the tar archive it is (see PublishArchive).
func (m *Mirror) Upload(ctx context.Context, req targets.Request) (string, error) {
	o, err := ParseOptions(req.Job, req.Data, req.Getenv, m.now())
	if err != nil {
		return "", err
	}
	if o.Unpack {
		done := req.Log.Step("publish the tree of %s to mirror tree %s, series %s", req.Job.Filename, o.Tree.Name, o.Series)
		r, err := image.OpenStream(ctx, req.Image.Path(), req.Job.Filename)
		if err != nil {
			return "", err
		}
		defer r.Close()
		result, err := PublishArchive(ctx, o, r, req.Job.Filename, req.Log)
		if err != nil {
			return "", err
		}
		done()
		return result, nil
	}
	done := req.Log.Step("publish %s to mirror tree %s, series %s", req.Job.Filename, o.Tree.Name, o.Series)
	result, err := Publish(ctx, o, req.Image.Path(), req.Job.Filename, req.Log)
	if err != nil {
		return "", err
	}
	done()
	return result, nil
}
