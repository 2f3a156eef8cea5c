package xmlapi

import (
	"strconv"

	"github.com/beevik/etree"

	"github.com/cloudupload/cloudupload"
)

// HelloName is the name the server gives in its <hello> document, as OBS's.
const HelloName = "Cloud Upload Server"

// jobElement builds the <clouduploadjob> element of j: OBS's public fields
// in OBS's order, absent values omitted, then the transfer's bytes done,
// total, rate (bytes per second) and ETA (seconds). The daemon's own
// bookkeeping (Origin, PidStart, Updated, Started, Finished) is never shown.
func jobElement(j *cloudupload.Job) *etree.Element {
	e := etree.NewElement("clouduploadjob")
	e.CreateAttr("name", strconv.FormatInt(j.ID, 10))
	text := func(tag, v string) {
		if v != "" {
			e.CreateElement(tag).SetText(v)
		}
	}
	num := func(tag string, v int64) {
		if v != 0 {
			e.CreateElement(tag).SetText(strconv.FormatInt(v, 10))
		}
	}
	text("state", string(j.State))
	text("details", j.Details)
	text("progress", j.Progress)
	// <try> is declared by OBS but was never set; the Job has no such field.
	num("created", j.Created)
	text("user", j.User)
	text("target", j.Target)
	text("project", j.Project)
	text("repository", j.Repository)
	text("package", j.Package)
	text("arch", j.Arch)
	text("filename", j.Filename)
	num("size", j.Size)
	num("pid", int64(j.Pid))
	// Not OBS's: the client (--clients) that created the job, after all of
	// OBS's elements so that OBS's parsers are not disturbed.
	text("client", j.Client)
	// Ours, after all of OBS's: how far the transfer has come.
	num("bytesdone", j.BytesDone)
	num("bytestotal", j.BytesTotal)
	num("bytespersecond", int64(j.Rate))
	num("etaseconds", j.ETA)
	return e
}

// Job returns the job document of j.
func Job(j cloudupload.Job) []byte {
	return write(jobElement(&j))
}

// JobList returns the <clouduploadjoblist> document of jobs, in the order
// given. The empty list is "<clouduploadjoblist>\n</clouduploadjoblist>\n".
func JobList(jobs []cloudupload.Job) []byte {
	e := etree.NewElement("clouduploadjoblist")
	for i := range jobs {
		e.AddChild(jobElement(&jobs[i]))
	}
	return write(e, "clouduploadjoblist")
}

// Status returns the error document OBS sent with an HTTP error: code is the
// HTTP status, summary the person-readable message, details "<code> <summary>".
func Status(code int, summary string) []byte {
	e := etree.NewElement("status")
	c := strconv.Itoa(code)
	e.CreateAttr("code", c)
	e.CreateElement("summary").SetText(summary)
	e.CreateElement("details").SetText(c + " " + summary)
	return write(e)
}

// OK returns `<status code="ok" />`, the answer of a successful kill or PUT.
func OK() []byte {
	e := etree.NewElement("status")
	e.CreateAttr("code", "ok")
	return write(e)
}

// Hello returns `<hello name="Cloud Upload Server" />`, the answer of GET /.
func Hello() []byte {
	e := etree.NewElement("hello")
	e.CreateAttr("name", HelloName)
	return write(e)
}

// LogEntry returns the `?view=entry` answer of a job log: one <entry> named
// _log with the log's size in bytes and its modification time (unix seconds).
func LogEntry(size, mtime int64) []byte {
	e := etree.NewElement("directory")
	ent := e.CreateElement("entry")
	ent.CreateAttr("name", "_log")
	ent.CreateAttr("size", strconv.FormatInt(size, 10))
	ent.CreateAttr("mtime", strconv.FormatInt(mtime, 10))
	return write(e, "directory")
}

// PubkeyInfo describes the server's public key for `_pubkey?view=info`.
type PubkeyInfo struct {
	KeyID       string // last 8 hex digits of the fingerprint
	Algo        string // "rsa"
	KeySize     int    // bits
	Fingerprint string // hex in groups of four, space separated, as OBS wrote it
	PEM         []byte // the key itself
}

// Pubkey returns the `view=info` document of OBS's source server
// (BSXML pubkeyinfo): <pubkey keyid=".." algo=".." keysize=".."
// fingerprint="..">PEM</pubkey>.
func Pubkey(info PubkeyInfo) []byte {
	e := etree.NewElement("pubkey")
	if info.KeyID != "" {
		e.CreateAttr("keyid", info.KeyID)
	}
	if info.Algo != "" {
		e.CreateAttr("algo", info.Algo)
	}
	if info.KeySize != 0 {
		e.CreateAttr("keysize", strconv.Itoa(info.KeySize))
	}
	if info.Fingerprint != "" {
		e.CreateAttr("fingerprint", info.Fingerprint)
	}
	e.SetText(string(info.PEM))
	return write(e)
}
