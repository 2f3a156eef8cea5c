package xmlapi

import (
	"bytes"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"io"
	"strconv"
	"strings"

	"github.com/cloudupload/cloudupload"
)

// skeletonFields are the elements an OBS source server sends in the job
// skeleton, each required but details, which holds the target data
// hex-encoded (absent or empty: no target data, as in OBS).
var skeletonFields = []string{"user", "target", "project", "repository", "package", "arch", "filename", "size", "details"}

// Limits of a job skeleton. A skeleton is one root with nine short fields
// and the hex target data; these bounds keep the parse's memory a small
// multiple of the document's size, whatever a client sends (a document of
// millions of <a/>, deep nesting, huge attributes).
const (
	MaxSkeletonElements = 64      // elements in the whole document
	MaxSkeletonDepth    = 3       // root, fields, and one level below (ignored)
	MaxSkeletonAttr     = 1 << 10 // bytes of one attribute value
	MaxSkeletonField    = 4 << 10 // bytes of one field's text but details
)

// ParseSkeleton parses the internal job skeleton an OBS source server posts
// to create a job whose image it will PUT:
//
//	<clouduploadjob>
//	  <user>..</user> <target>..</target> <project>..</project>
//	  <repository>..</repository> <package>..</package> <arch>..</arch>
//	  <filename>..</filename> <size>..</size> <details>hex of the target data</details>
//	</clouduploadjob>
//
// It returns the job (only the fields above set) and the decoded target
// data. Every field but details must be present and not empty;
// size must be a non-negative decimal integer and details valid hex. Other
// elements and attributes are ignored (OBS's own job document parses), within
// the limits above. Errors are *cloudupload.Error EINVALID naming what was
// wrong, e.g. "user is missing from job skeleton". Names are not checked
// here: the Manager checks them (cloudupload.CheckJob).
//
// The document is read with encoding/xml's tokenizer, one token at a time,
// so that no tree is built for what the limits refuse.
func ParseSkeleton(body []byte) (cloudupload.Job, []byte, error) {
	var job cloudupload.Job
	if len(bytes.TrimSpace(body)) == 0 {
		return job, nil, invalid("job skeleton is empty")
	}
	v, err := scanSkeleton(body)
	if err != nil {
		return job, nil, err
	}
	for _, f := range skeletonFields {
		if f != "details" && v[f] == "" {
			return job, nil, invalid("%s is missing from job skeleton", f)
		}
	}
	size, err := strconv.ParseInt(v["size"], 10, 64)
	if err != nil || size < 0 || strings.HasPrefix(v["size"], "+") {
		return job, nil, invalid("size %q in job skeleton is not a non-negative integer", truncate(v["size"]))
	}
	data, err := hex.DecodeString(strings.TrimSpace(v["details"]))
	if err != nil {
		return job, nil, invalid("details in job skeleton is not hex-encoded target data")
	}
	job = cloudupload.Job{
		User: v["user"], Target: v["target"], Project: v["project"], Repository: v["repository"],
		Package: v["package"], Arch: v["arch"], Filename: v["filename"], Size: size,
		Origin: cloudupload.OriginPut,
	}
	return job, data, nil
}

func invalid(format string, args ...any) error {
	return cloudupload.Errorf(cloudupload.EINVALID, format, args...)
}

// scanSkeleton reads the fields' texts (the character data directly inside
// each field element) and enforces the limits.
func scanSkeleton(body []byte) (map[string]string, error) {
	d := xml.NewDecoder(bytes.NewReader(body))
	d.Strict = true
	v := make(map[string]string, len(skeletonFields))
	seen := make(map[string]bool, len(skeletonFields))
	var field string // the field whose text is being read, "" elsewhere
	var text strings.Builder
	depth, elements, roots := 0, 0, 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, invalid("job skeleton is not valid XML")
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			elements++
			switch {
			case elements > MaxSkeletonElements:
				return nil, invalid("job skeleton has more than %d elements", MaxSkeletonElements)
			case depth > MaxSkeletonDepth:
				return nil, invalid("job skeleton is nested deeper than %d levels", MaxSkeletonDepth)
			}
			for _, a := range t.Attr {
				if len(a.Value) > MaxSkeletonAttr {
					return nil, invalid("job skeleton has an attribute longer than %d bytes", MaxSkeletonAttr)
				}
			}
			name := t.Name.Local
			if t.Name.Space != "" {
				name = t.Name.Space + ":" + name
			}
			switch depth {
			case 1:
				if roots++; roots > 1 {
					return nil, invalid("job skeleton is not valid XML")
				}
				if name != "clouduploadjob" {
					return nil, invalid("job skeleton must be a <clouduploadjob> document, not <%s>", truncate(name))
				}
			case 2:
				if !isSkeletonField(name) {
					continue
				}
				if seen[name] {
					return nil, invalid("%s appears more than once in job skeleton", name)
				}
				seen[name] = true
				field = name
				text.Reset()
			}
		case xml.EndElement:
			if depth == 2 && field != "" {
				v[field] = text.String()
				field = ""
			}
			depth--
		case xml.CharData:
			if depth != 2 || field == "" {
				continue
			}
			if field != "details" && text.Len()+len(t) > MaxSkeletonField {
				return nil, invalid("%s in job skeleton is longer than %d bytes", field, MaxSkeletonField)
			}
			text.Write(t)
		}
	}
	if roots == 0 {
		return nil, invalid("job skeleton is not valid XML")
	}
	return v, nil
}

func isSkeletonField(name string) bool {
	for _, f := range skeletonFields {
		if f == name {
			return true
		}
	}
	return false
}

// truncate shortens s for an error message.
func truncate(s string) string {
	if r := []rune(s); len(r) > 40 {
		return string(r[:40]) + "…"
	}
	return s
}
