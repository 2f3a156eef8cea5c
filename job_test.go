package cloudupload

import (
	"errors"
	"fmt"
	"testing"
)

func TestTransitions(t *testing.T) {
	allowed := map[[2]State]bool{
		{StateCreated, StateReceiving}:   true,
		{StateCreated, StateFailed}:      true,
		{StateReceiving, StateReceiving}: true,
		{StateReceiving, StateScheduled}: true,
		{StateReceiving, StateFailed}:    true,
		{StateScheduled, StateUploading}: true,
		{StateScheduled, StateFailed}:    true,
		{StateUploading, StateSucceeded}: true,
		{StateUploading, StateFailed}:    true,
	}
	for _, from := range States {
		for _, to := range States {
			want := allowed[[2]State{from, to}]
			if got := CanMove(from, to); got != want {
				t.Errorf("CanMove(%s, %s) = %v, want %v", from, to, got, want)
			}
			err := CheckMove(from, to)
			if want != (err == nil) {
				t.Errorf("CheckMove(%s, %s) = %v", from, to, err)
			}
			if err != nil && ErrorCode(err) != ECONFLICT {
				t.Errorf("CheckMove(%s, %s) code %q, want conflict", from, to, ErrorCode(err))
			}
		}
		if from.Final() != (from == StateSucceeded || from == StateFailed) {
			t.Errorf("%s.Final() = %v", from, from.Final())
		}
		if !from.Valid() {
			t.Errorf("%s not valid", from)
		}
	}
	if State("done").Valid() {
		t.Error("unknown state valid")
	}
}

func TestErrors(t *testing.T) {
	e := Errorf(ENOTFOUND, "no such job")
	wrapped := fmt.Errorf("get job 5: %w", e)
	if ErrorCode(wrapped) != ENOTFOUND || ErrorMessage(wrapped) != "no such job" {
		t.Errorf("wrapped: %q %q", ErrorCode(wrapped), ErrorMessage(wrapped))
	}
	internal := errors.New("open /var/lib/cloudupload/jobs/5/job.json: permission denied")
	if ErrorCode(internal) != EINTERNAL || ErrorMessage(internal) != "internal error" {
		t.Errorf("plain error must not leak: %q %q", ErrorCode(internal), ErrorMessage(internal))
	}
	withCause := &Error{Code: EINVALID, Message: "bad image", Err: internal}
	if ErrorMessage(withCause) != "bad image" || !errors.Is(withCause, internal) {
		t.Errorf("cause: %q", ErrorMessage(withCause))
	}
	if ErrorCode(nil) != "" || ErrorMessage(nil) != "" {
		t.Error("nil error has a code")
	}
}

func TestCheckName(t *testing.T) {
	good := []string{"Base:System", "openSUSE_Factory", "x86_64", "rpm", "rpm-4.14.0-504.2.x86_64.rpm", "pkg:flavor", "image.raw.xz"}
	for _, s := range good {
		if err := CheckName("package", s); err != nil {
			t.Errorf("CheckName(%q) = %v", s, err)
		}
	}
	bad := []string{"", ".", "..", ".hidden", "a/b", "../etc", "a..b", "a\\b", "a\x00b", "a\nb", string([]byte{0xff}), string(make([]byte, MaxNameLen+1))}
	for _, s := range bad {
		err := CheckName("package", s)
		if err == nil {
			t.Errorf("CheckName(%q) accepted", s)
			continue
		}
		if ErrorCode(err) != EINVALID {
			t.Errorf("CheckName(%q) code %q", s, ErrorCode(err))
		}
		if msg := ErrorMessage(err); len(msg) < 8 || msg[:7] != "package" {
			t.Errorf("CheckName(%q) message %q does not name the field", s, msg)
		}
	}
}

func TestCheckJob(t *testing.T) {
	j := Job{User: "alice", Target: "ec2", Project: "home:alice", Repository: "images", Arch: "x86_64", Package: "appliance", Filename: "appliance.x86_64.raw.xz"}
	if err := CheckJob(&j); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mutate func(*Job)
		want   string
	}{
		{func(j *Job) { j.Project = "" }, "project is missing"},
		{func(j *Job) { j.Filename = "../x" }, `filename "../x" must not start with '.'`},
		{func(j *Job) { j.Target = "EC2" }, `target "EC2" is not known`},
		{func(j *Job) { j.Target = "" }, "target is missing"},
		{func(j *Job) { j.User = "a/b" }, `user "a/b" must not contain '/'`},
	} {
		k := j
		tc.mutate(&k)
		if err := CheckJob(&k); err == nil || ErrorMessage(err) != tc.want {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}

func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"rpm", "..", "a/b", ".x", "Base:System"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if CheckName("f", s) != nil {
			return
		}
		// What passes may become a path component: it must be one.
		if s == "" || s == "." || s == ".." || s[0] == '.' {
			t.Fatalf("accepted %q", s)
		}
		for i := 0; i < len(s); i++ {
			if s[i] == '/' || s[i] == 0 {
				t.Fatalf("accepted %q", s)
			}
		}
	})
}
