package xmlapi

import (
	"strings"
	"testing"

	"github.com/beevik/etree"
)

// The transfer's elements come after all of OBS's, so an OBS frontend that
// reads the document by name sees what it always saw.
func TestJobProgressElements(t *testing.T) {
	j := obsJob
	j.BytesDone, j.BytesTotal, j.Rate, j.ETA = 42<<20, 100<<20, 12.5*(1<<20), 5
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(Job(j)); err != nil {
		t.Fatal(err)
	}
	var tags, values []string
	for _, e := range doc.Root().ChildElements() {
		tags = append(tags, e.Tag)
		values = append(values, e.Text())
	}
	want := "state details progress created user target project repository package arch filename size pid bytesdone bytestotal bytespersecond etaseconds"
	if got := strings.Join(tags, " "); got != want {
		t.Errorf("children %q, want %q", got, want)
	}
	if got := strings.Join(values[len(values)-4:], " "); got != "44040192 104857600 13107200 5" {
		t.Errorf("values %q", got)
	}
}
