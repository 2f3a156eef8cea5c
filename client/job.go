package client

import (
	"encoding/xml"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cloudupload/cloudupload"
)

// Job is a job document as the server sent it. Numbers the server left out
// are zero; Progress is nil when the server gave no percentage.
type Job struct {
	ID         int64             `json:"id"`
	State      cloudupload.State `json:"state"`
	Details    string            `json:"details,omitempty"`
	Progress   *int              `json:"progress,omitempty"` // percent 0–100, as <progress>
	Created    int64             `json:"created,omitempty"`  // unix seconds
	User       string            `json:"user,omitempty"`
	Target     string            `json:"target,omitempty"`
	Project    string            `json:"project,omitempty"`
	Repository string            `json:"repository,omitempty"`
	Package    string            `json:"package,omitempty"`
	Arch       string            `json:"arch,omitempty"`
	Filename   string            `json:"filename,omitempty"`
	Size       int64             `json:"size,omitempty"` // image size in bytes
	Pid        int               `json:"pid,omitempty"`
	// Transfer holds the figures of a server that reports them (bytes
	// done and total, rate, ETA); nil otherwise.
	Transfer *Transfer `json:"transfer,omitempty"`
	// Extra holds the elements this client does not know, by tag.
	Extra map[string]string `json:"extra,omitempty"`
}

// Transfer is how far a job's current transfer (receiving or uploading)
// is. Zero fields are unknown.
type Transfer struct {
	Done  int64   `json:"done,omitempty"`  // bytes
	Total int64   `json:"total,omitempty"` // bytes
	Rate  float64 `json:"rate,omitempty"`  // bytes per second
	ETA   float64 `json:"eta,omitempty"`   // seconds
}

// Name is the job's public name, its decimal id.
func (j *Job) Name() string { return strconv.FormatInt(j.ID, 10) }

// CreatedTime is the creation time, zero when unknown.
func (j *Job) CreatedTime() time.Time {
	if j.Created == 0 {
		return time.Time{}
	}
	return time.Unix(j.Created, 0)
}

// The elements a server of this project adds after OBS's for the
// transfer: bytes done, bytes total, rate (bytes/s), ETA (seconds). Each
// is omitted when zero or unknown.
const (
	doneTag  = "bytesdone"
	totalTag = "bytestotal"
	rateTag  = "bytespersecond"
	etaTag   = "etaseconds"
)

// xmlJob is the wire form: the name attribute and every child element.
type xmlJob struct {
	Name     string `xml:"name,attr"`
	Children []struct {
		XMLName xml.Name
		Text    string `xml:",chardata"`
	} `xml:",any"`
}

// fromXML turns the wire form into a Job, checking the numbers.
func (x *xmlJob) job() (Job, error) {
	var j Job
	id, err := strconv.ParseInt(x.Name, 10, 64)
	if err != nil || id < 0 {
		return j, fmt.Errorf("job document has no valid name (%q)", oneLine(x.Name))
	}
	j.ID = id
	num := func(tag, v string) (int64, error) {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("job %d: <%s> %q is not a number", id, tag, oneLine(v))
		}
		return n, nil
	}
	for _, c := range x.Children {
		tag, v := c.XMLName.Local, c.Text
		var err error
		switch tag {
		case "state":
			j.State = cloudupload.State(strings.TrimSpace(v))
		case "details":
			j.Details = v
		case "progress":
			if p, perr := parsePercent(v); perr == nil {
				j.Progress = &p
			}
		case "created":
			j.Created, err = num(tag, v)
		case "user":
			j.User = v
		case "target":
			j.Target = v
		case "project":
			j.Project = v
		case "repository":
			j.Repository = v
		case "package":
			j.Package = v
		case "arch":
			j.Arch = v
		case "filename":
			j.Filename = v
		case "size":
			j.Size, err = num(tag, v)
		case "pid":
			var p int64
			p, err = num(tag, v)
			j.Pid = int(p)
		case "try":
		default:
			if j.Extra == nil {
				j.Extra = map[string]string{}
			}
			j.Extra[tag] = strings.TrimSpace(v)
		}
		if err != nil {
			return j, err
		}
	}
	if !j.State.Valid() {
		return j, fmt.Errorf("job %d: unknown state %q", id, oneLine(string(j.State)))
	}
	j.Transfer = transferOf(j.Extra)
	if len(j.Extra) == 0 {
		j.Extra = nil
	}
	return j, nil
}

// parsePercent reads <progress>: an integer or decimal percentage, maybe
// with a '%' sign, clamped to 0–100.
func parsePercent(v string) (int, error) {
	v = strings.TrimSuffix(strings.TrimSpace(v), "%")
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, err
	}
	return int(min(max(f, 0), 100)), nil
}

// transferOf finds the transfer figures among the extra elements; nil
// when the server sent none (an older server, or OBS).
func transferOf(extra map[string]string) *Transfer {
	var t Transfer
	found := false
	get := func(tag string) float64 {
		f, err := strconv.ParseFloat(extra[tag], 64)
		if err != nil || f < 0 {
			return 0
		}
		found = true
		return f
	}
	t.Done, t.Total = int64(get(doneTag)), int64(get(totalTag))
	t.Rate, t.ETA = get(rateTag), get(etaTag)
	if !found {
		return nil
	}
	for _, tag := range []string{doneTag, totalTag, rateTag, etaTag} {
		delete(extra, tag)
	}
	return &t
}

// parseJob reads one <clouduploadjob> document.
func parseJob(doc []byte) (Job, error) {
	var x struct {
		XMLName xml.Name `xml:"clouduploadjob"`
		xmlJob
	}
	if err := xml.Unmarshal(doc, &x); err != nil {
		return Job{}, fmt.Errorf("not a job document: %w", err)
	}
	return x.job()
}

// parseJobList reads a <clouduploadjoblist> document.
func parseJobList(doc []byte) ([]Job, error) {
	var x struct {
		XMLName xml.Name `xml:"clouduploadjoblist"`
		Jobs    []xmlJob `xml:"clouduploadjob"`
	}
	if err := xml.Unmarshal(doc, &x); err != nil {
		return nil, fmt.Errorf("not a job list: %w", err)
	}
	jobs := make([]Job, 0, len(x.Jobs))
	for i := range x.Jobs {
		j, err := x.Jobs[i].job()
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}
