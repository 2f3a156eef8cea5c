package xmlapi

import (
	"bytes"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/beevik/etree"

	"github.com/cloudupload/cloudupload"
)

// skeletonFields are the elements an OBS source server sends in the job
// skeleton, each required but details, which holds the target data
// hex-encoded (absent or empty: no target data, as in OBS).
var skeletonFields = []string{"user", "target", "project", "repository", "package", "arch", "filename", "size", "details"}

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
// size must be a non-negative decimal integer and details valid hex. Errors
// are *cloudupload.Error EINVALID naming what was wrong, e.g.
// "user is missing from job skeleton". Names are not checked here: the
// Manager checks them (cloudupload.CheckJob).
func ParseSkeleton(body []byte) (cloudupload.Job, []byte, error) {
	var job cloudupload.Job
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(body); err != nil {
		return job, nil, cloudupload.Errorf(cloudupload.EINVALID, "job skeleton is not valid XML")
	}
	root := doc.Root()
	if root == nil && len(bytes.TrimSpace(body)) == 0 {
		return job, nil, cloudupload.Errorf(cloudupload.EINVALID, "job skeleton is empty")
	} else if root == nil {
		return job, nil, cloudupload.Errorf(cloudupload.EINVALID, "job skeleton is not valid XML")
	}
	if root.Tag != "clouduploadjob" || root.Space != "" {
		return job, nil, cloudupload.Errorf(cloudupload.EINVALID, "job skeleton must be a <clouduploadjob> document, not <%s>", truncate(root.FullTag()))
	}
	v := make(map[string]string, len(skeletonFields))
	for _, f := range skeletonFields {
		els := root.SelectElements(f)
		switch {
		case len(els) == 0 && f == "details":
			continue
		case len(els) == 0:
			return job, nil, cloudupload.Errorf(cloudupload.EINVALID, "%s is missing from job skeleton", f)
		case len(els) > 1:
			return job, nil, cloudupload.Errorf(cloudupload.EINVALID, "%s appears more than once in job skeleton", f)
		}
		v[f] = els[0].Text()
		if f != "details" && v[f] == "" {
			return job, nil, cloudupload.Errorf(cloudupload.EINVALID, "%s is missing from job skeleton", f)
		}
	}
	size, err := strconv.ParseInt(v["size"], 10, 64)
	if err != nil || size < 0 || strings.HasPrefix(v["size"], "+") {
		return job, nil, cloudupload.Errorf(cloudupload.EINVALID, "size %q in job skeleton is not a non-negative integer", truncate(v["size"]))
	}
	data, err := hex.DecodeString(string(bytes.TrimSpace([]byte(v["details"]))))
	if err != nil {
		return job, nil, cloudupload.Errorf(cloudupload.EINVALID, "details in job skeleton is not hex-encoded target data")
	}
	job = cloudupload.Job{
		User: v["user"], Target: v["target"], Project: v["project"], Repository: v["repository"],
		Package: v["package"], Arch: v["arch"], Filename: v["filename"], Size: size,
		Origin: cloudupload.OriginPut,
	}
	return job, data, nil
}

// truncate shortens s for an error message.
func truncate(s string) string {
	if r := []rune(s); len(r) > 40 {
		return string(r[:40]) + "…"
	}
	return s
}
