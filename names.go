package cloudupload

import (
	"strings"
	"unicode/utf8"
)

// MaxNameLen bounds every name taken from a request.
const MaxNameLen = 200

// CheckName validates a project, repository, arch, package, filename or user
// name by OBS's rules, tightened: not empty, at most MaxNameLen bytes, valid
// UTF-8, no '/', no NUL or other control character, not "." or "..", no
// leading '.', and no "..". Only names that pass may become part of a path.
// field names the parameter in the error message.
func CheckName(field, s string) error {
	switch {
	case s == "":
		return Errorf(EINVALID, "%s is missing", field)
	case len(s) > MaxNameLen:
		return Errorf(EINVALID, "%s is longer than %d bytes", field, MaxNameLen)
	case !utf8.ValidString(s):
		return Errorf(EINVALID, "%s is not valid UTF-8", field)
	case strings.HasPrefix(s, "."):
		return Errorf(EINVALID, "%s %q must not start with '.'", field, s)
	case strings.Contains(s, ".."):
		return Errorf(EINVALID, "%s %q must not contain '..'", field, s)
	case strings.ContainsAny(s, "/\\"):
		return Errorf(EINVALID, "%s %q must not contain '/'", field, s)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return Errorf(EINVALID, "%s %q contains a control character", field, s)
		}
	}
	return nil
}

// CheckTargetName validates a target name: a lowercase word such as ec2.
func CheckTargetName(s string) error {
	if s == "" {
		return Errorf(EINVALID, "target is missing")
	}
	if len(s) > 32 {
		return Errorf(EINVALID, "target %q is not known", s[:32])
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return Errorf(EINVALID, "target %q is not known", s)
		}
	}
	return nil
}

// CheckJob validates the names of a job as they arrive from a request.
func CheckJob(j *Job) error {
	for _, f := range []struct{ name, v string }{
		{"project", j.Project}, {"repository", j.Repository}, {"arch", j.Arch},
		{"package", j.Package}, {"filename", j.Filename}, {"user", j.User},
	} {
		if err := CheckName(f.name, f.v); err != nil {
			return err
		}
	}
	return CheckTargetName(j.Target)
}
