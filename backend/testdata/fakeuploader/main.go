// Command fakeuploader is the uploader of the backend tests: it speaks
// clouduploader's argv and behaves as its target data says. It is a
// separate binary (built without the race detector by TestMain) so that
// starting it is cheap.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// fakeData is the target data: it says how to behave. Keep in sync with
// backend/main_test.go.
type fakeData struct {
	Mode    string // succeed, fail, failnoresult, sleep, stubborn, wait, progress
	Result  string // result file content
	Dir     string // shared directory for markers (wait, sleep, stubborn)
	Invalid string // validate: reject with this message (exit 2)
	Crash   bool   // validate: fail with exit 1
	Secret  string // must never show up in argv or logs
	Total   int64  // progress: bytes to report in steps of 1 MiB every 20 ms
}

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) == 2 && args[0] == "validate" {
		b, _ := io.ReadAll(os.Stdin)
		code, msg := validate(b, os.Getenv)
		if code != 0 {
			fmt.Fprint(os.Stderr, msg)
		}
		return code
	}
	if len(args) == 1 && args[0] == "validate-stream" && os.Getenv("FAKE_NO_STREAM") == "" {
		// As `clouduploader validate-stream` (cloudupload.ValidateRequest).
		dec, enc := json.NewDecoder(os.Stdin), json.NewEncoder(os.Stdout)
		for {
			var req struct {
				Env  map[string]string
				Data []byte
			}
			if err := dec.Decode(&req); err == io.EOF {
				return 0
			} else if err != nil {
				return 2
			}
			code, msg := validate(req.Data, func(k string) string { return req.Env[k] })
			enc.Encode(map[string]any{"status": code, "message": msg})
		}
	}
	if len(args) == 1 && args[0] == "grandchild" {
		signal.Ignore(syscall.SIGTERM)
		writeMarker(filepath.Join(os.Getenv("FAKE_DIR"), "grandchild-"+os.Getenv("CLOUDUPLOAD_JOB")), strconv.Itoa(os.Getpid()))
		select {}
	}
	if len(args) != 6 {
		fmt.Println("fake uploader: wrong argv", args)
		return 9
	}
	user, target, image, dataFile, filename, result := args[0], args[1], args[2], args[3], args[4], args[5]
	b, err := os.ReadFile(dataFile)
	if err != nil {
		fmt.Println("fake uploader:", err)
		return 9
	}
	var d fakeData
	if err := json.Unmarshal(b, &d); err != nil {
		fmt.Println("fake uploader:", err)
		return 9
	}
	fi, _ := os.Stat(dataFile)
	img, _ := os.ReadFile(image)
	cwd, _ := os.Getwd()
	stdin, _ := os.Readlink("/proc/self/fd/0")
	job := os.Getenv("CLOUDUPLOAD_JOB")
	fmt.Printf("fake uploader: user=%s target=%s filename=%s job=%s project=%s repository=%s arch=%s package=%s extra=%s data-mode=%o image=%q cwd=%s stdin=%s pgid-is-parent=%v\n",
		user, target, filename, job, os.Getenv("CLOUDUPLOAD_PROJECT"), os.Getenv("CLOUDUPLOAD_REPOSITORY"),
		os.Getenv("CLOUDUPLOAD_ARCH"), os.Getenv("CLOUDUPLOAD_PACKAGE"), os.Getenv("FAKE_EXTRA"),
		fi.Mode().Perm(), img, filepath.Base(cwd), stdin, syscall.Getpgrp() == os.Getppid())
	switch d.Mode {
	case "succeed":
		os.WriteFile(result, []byte(d.Result+"\n"), 0o644)
		return 0
	case "fail":
		os.WriteFile(result, []byte(d.Result+"\n"), 0o644)
		return 3
	case "failnoresult":
		return 3
	case "sleep":
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM)
		writeMarker(filepath.Join(d.Dir, "started-"+job), strconv.Itoa(os.Getpid()))
		<-sigs
		fmt.Println("fake uploader: got SIGTERM, cleaning up")
		os.WriteFile(result, []byte("cancelled\n"), 0o644)
		return 1
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
		exe, _ := os.Executable()
		gc := exec.Command(exe, "grandchild")
		gc.Env = append(os.Environ(), "FAKE_DIR="+d.Dir)
		if err := gc.Start(); err != nil {
			fmt.Println("fake uploader:", err)
			return 9
		}
		for !exists(filepath.Join(d.Dir, "grandchild-"+job)) {
			time.Sleep(5 * time.Millisecond)
		}
		writeMarker(filepath.Join(d.Dir, "started-"+job), strconv.Itoa(os.Getpid()))
		select {}
	case "wait":
		return wait(d, job, user, result)
	case "progress":
		return progress(d, result)
	}
	fmt.Println("fake uploader: unknown mode", d.Mode)
	return 9
}

// validate is `validate`: its exit status and what it prints on stderr.
func validate(data []byte, getenv func(string) string) (int, string) {
	var d fakeData
	if err := json.Unmarshal(data, &d); err != nil {
		return 2, "target data is not JSON\n"
	}
	switch {
	case d.Crash:
		return 1, "validator crashed\n"
	case d.Invalid != "":
		return 2, fmt.Sprintf("\n  %s  \nsecond line\n", d.Invalid)
	case getenv("CLOUDUPLOAD_PROJECT") == "" || getenv("CLOUDUPLOAD_JOB") != "":
		return 1, "job environment wrong\n"
	}
	return 0, ""
}

// wait records its start in d.Dir (under a lock, counting the uploads
// running at once: "<job> <user> <running> <running for user>" appended to
// d.Dir/order), waits for d.Dir/release-<job>, and succeeds.
func wait(d fakeData, job, user, result string) int {
	lock := func() func() {
		f, err := os.OpenFile(filepath.Join(d.Dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			panic(err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			panic(err)
		}
		return func() { f.Close() }
	}
	running := filepath.Join(d.Dir, "running")
	unlock := lock()
	os.MkdirAll(running, 0o755)
	os.WriteFile(filepath.Join(running, job), []byte(user), 0o644)
	ents, _ := os.ReadDir(running)
	total, mine := len(ents), 0
	for _, e := range ents {
		if b, _ := os.ReadFile(filepath.Join(running, e.Name())); string(b) == user {
			mine++
		}
	}
	f, _ := os.OpenFile(filepath.Join(d.Dir, "order"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	fmt.Fprintf(f, "%s %s %d %d\n", job, user, total, mine)
	f.Close()
	unlock()
	writeMarker(filepath.Join(d.Dir, "started-"+job), strconv.Itoa(os.Getpid()))
	for !exists(filepath.Join(d.Dir, "release-"+job)) {
		time.Sleep(10 * time.Millisecond)
	}
	unlock = lock()
	os.Remove(filepath.Join(running, job))
	unlock()
	os.WriteFile(result, []byte(d.Result+"\n"), 0o644)
	return 0
}

// progress reports d.Total bytes in steps of 1 MiB every 20 ms in
// CLOUDUPLOAD_PROGRESS_FILE, as a real uploader does, and succeeds; SIGTERM
// stops it.
func progress(d fakeData, result string) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	path := os.Getenv("CLOUDUPLOAD_PROGRESS_FILE")
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for done := int64(0); ; done = min(d.Total, done+1<<20) {
		writeMarker(path, fmt.Sprintf(`{"done":%d,"total":%d}`, done, d.Total))
		if done == d.Total {
			break
		}
		select {
		case <-sigs:
			fmt.Println("fake uploader: got SIGTERM at", done)
			os.WriteFile(result, []byte("cancelled\n"), 0o644)
			return 1
		case <-t.C:
		}
	}
	os.WriteFile(result, []byte(d.Result+"\n"), 0o644)
	return 0
}

func writeMarker(path, content string) {
	tmp := path + ".tmp"
	os.WriteFile(tmp, []byte(content), 0o644)
	os.Rename(tmp, path)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
