// Command fakeuploader is the uploader of the backend tests: it speaks
// clouduploader's argv and behaves as its target data says. It is a
// separate binary (built without the race detector by TestMain) so that
// starting it is cheap.
package main

import (
	"encoding/json"
	"fmt"
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
		var d fakeData
		if err := json.NewDecoder(os.Stdin).Decode(&d); err != nil {
			fmt.Fprintln(os.Stderr, "target data is not JSON")
			return 2
		}
		switch {
		case d.Crash:
			fmt.Fprintln(os.Stderr, "validator crashed")
			return 1
		case d.Invalid != "":
			fmt.Fprintf(os.Stderr, "\n  %s  \nsecond line\n", d.Invalid)
			return 2
		case os.Getenv("CLOUDUPLOAD_PROJECT") == "" || os.Getenv("CLOUDUPLOAD_JOB") != "":
			fmt.Fprintln(os.Stderr, "job environment wrong")
			return 1
		}
		return 0
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
