package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/beevik/etree"

	"github.com/cloudupload/cloudupload/internal/testutil"
)

// The crash test's size: small in `make test`, larger with `make soak`.
var (
	crashJobs  = flag.Int("crash.jobs", 24, "TestCrash: jobs to submit")
	crashKills = flag.Int("crash.kills", 8, "TestCrash: times the daemon is SIGKILLed")
	crashSeed  = flag.Uint64("crash.seed", 7, "TestCrash: seed of the random schedule")
)

// TestCrash submits many mirror jobs through the real daemon and uploader
// while SIGKILLing the daemon at random moments and restarting it. It then
// holds that every id a create returned exists, every job ends, a job
// succeeded exactly when its build was published (with the image's bytes),
// and that no process, staging directory, temporary or partial file is
// left.
func TestCrash(t *testing.T) {
	bin := testutil.BuildBinaries(t)
	dir := t.TempDir()
	testutil.StopStrays(t, dir)
	c := &crashRun{
		t: t, bin: bin, rng: rand.New(rand.NewPCG(*crashSeed, 1)),
		state: filepath.Join(dir, "state"), build: filepath.Join(dir, "build"), mirror: filepath.Join(dir, "mirror"),
		logPath: filepath.Join(dir, "daemon.log"), images: map[string][32]byte{},
	}
	os.MkdirAll(c.build, 0o755)
	os.MkdirAll(c.mirror, 0o755)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = l.Addr().String()
	l.Close()
	c.start()
	t.Cleanup(c.stop)

	var mu sync.Mutex // guards killing, and returned and next below
	killing := true

	// The killer: SIGKILL at random moments, restart at once.
	killerDone := make(chan int)
	stopKilling := make(chan struct{})
	go func() {
		kills := 0
		defer func() {
			mu.Lock()
			killing = false
			mu.Unlock()
			killerDone <- kills
		}()
		for kills < *crashKills {
			select {
			case <-stopKilling:
				return
			case <-time.After(c.jitter(50*time.Millisecond, 700*time.Millisecond)):
			}
			c.kill()
			kills++
			c.start()
		}
	}()

	// Three clients submit jobs, a few of which they kill, until at least
	// crash.jobs were created and the killer is done (at most ten times as
	// many attempts).
	var wg sync.WaitGroup
	var returned []string
	next := 0
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if (len(returned) >= *crashJobs && !killing) || next >= 10**crashJobs {
					mu.Unlock()
					return
				}
				k := next
				next++
				mu.Unlock()
				if name := c.submit(k); name != "" {
					mu.Lock()
					returned = append(returned, name)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	close(stopKilling)
	kills := <-killerDone

	// The final daemon finishes every job.
	deadline := time.Now().Add(2 * time.Minute)
	var jobs []crashJob
	for {
		jobs = c.list()
		unfinished := 0
		for _, j := range jobs {
			if j.state != "succeeded" && j.state != "failed" {
				unfinished++
			}
		}
		if unfinished == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d jobs still unfinished 2 minutes after the last kill: %+v\ndaemon log: %s", unfinished, jobs, c.logPath)
		}
		time.Sleep(100 * time.Millisecond)
	}
	byName := map[string]crashJob{}
	for _, j := range jobs {
		byName[j.name] = j
	}
	for _, name := range returned {
		if _, ok := byName[name]; !ok {
			t.Errorf("job %s, returned by a create, does not exist", name)
		}
	}

	// Outcome ⇔ publication.
	succeeded, failed := 0, 0
	reasons := map[string]int{}
	for _, j := range jobs {
		m := regexp.MustCompile(`^img-(\d+)\.raw$`).FindStringSubmatch(j.filename)
		if m == nil {
			t.Errorf("job %s: unexpected file name %q", j.name, j.filename)
			continue
		}
		rel := filepath.Join("crash", "b-"+m[1], j.filename)
		b, err := os.ReadFile(filepath.Join(c.mirror, rel))
		published := err == nil
		wrong := ""
		switch {
		case j.state == "succeeded" && !published:
			wrong = fmt.Sprintf("job %s succeeded (%s) but %s was not published", j.name, j.details, rel)
		case j.state == "succeeded" && sha256.Sum256(b) != c.image(j.filename):
			wrong = fmt.Sprintf("job %s: %s does not hold the image's bytes", j.name, rel)
		case j.state == "succeeded" && j.details != "crash:"+rel:
			wrong = fmt.Sprintf("job %s succeeded with details %q, want crash:%s", j.name, j.details, rel)
		case j.state == "failed" && published:
			wrong = fmt.Sprintf("job %s failed (%s) but its build %s was published", j.name, j.details, rel)
		}
		if wrong != "" {
			t.Errorf("%s; its log:\n%s\nthe daemon's lines about it:\n%s", wrong,
				c.get("/cloudupload/"+j.name+"/_log?nostream=1"), c.daemonLines(j.name))
		}
		if j.state == "succeeded" {
			succeeded++
		} else {
			failed++
			reasons[j.details]++
		}
		if log := c.get("/cloudupload/" + j.name + "/_log?nostream=1"); strings.Contains(log, c.state) || strings.Contains(log, c.mirror) {
			t.Errorf("job %s: a server path reached the job's log:\n%s", j.name, log)
		}
	}
	t.Logf("%d jobs (%d returned by creates), %d SIGKILLs survived: %d succeeded, %d failed %v",
		len(jobs), len(returned), kills, succeeded, failed, reasons)
	if succeeded == 0 {
		t.Error("no job succeeded: the run proves nothing")
	}

	// Nothing left behind.
	c.stop()
	if ents, _ := os.ReadDir(filepath.Join(c.state, "jobs")); len(ents) != 0 {
		t.Errorf("%d job directories left in jobs/ with every job final", len(ents))
	}
	for _, root := range []string{c.state, c.mirror} {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			name := d.Name()
			switch {
			case strings.HasPrefix(name, ".staging-"), strings.Contains(name, ".tmp-"):
				t.Errorf("left behind: %s", p)
			case name == "image" && strings.Contains(p, "/done/"):
				t.Errorf("image of a finished job kept: %s", p)
			}
			return nil
		})
	}
	if pids := processesMentioning(c.state); len(pids) > 0 {
		t.Errorf("processes of the jobs still run after every job ended: %v", pids)
	}
}

// daemonLines returns the lines of the daemons' log about job name.
func (c *crashRun) daemonLines(name string) string {
	b, _ := os.ReadFile(c.logPath)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "job="+name+" ") || strings.Contains(l, "msg=starting") || strings.Contains(l, "msg=listening") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

type crashRun struct {
	t                    *testing.T
	bin, addr            string
	state, build, mirror string
	logPath              string
	rngMu                sync.Mutex
	rng                  *rand.Rand
	daemonMu             sync.Mutex
	daemon               *exec.Cmd
	imagesMu             sync.Mutex
	images               map[string][32]byte
}

type crashJob struct {
	name, state, details, filename string
}

func (c *crashRun) jitter(lo, hi time.Duration) time.Duration {
	c.rngMu.Lock()
	defer c.rngMu.Unlock()
	return lo + time.Duration(c.rng.Int64N(int64(hi-lo)))
}

func (c *crashRun) intn(n int) int {
	c.rngMu.Lock()
	defer c.rngMu.Unlock()
	return c.rng.IntN(n)
}

// start runs the daemon and waits until it answers.
func (c *crashRun) start() {
	c.daemonMu.Lock()
	defer c.daemonMu.Unlock()
	logf, err := os.OpenFile(c.logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		c.t.Error(err)
		return
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(c.bin, "cloudupload-server"), "--listen", c.addr, "--state-dir", c.state,
		"--build-root", c.build, "--mirror", "crash="+c.mirror, "--kill-grace", "3s",
		"--max-uploads", "4", "--max-uploads-per-user", "4", "--min-free-space", "0", "--receive-idle-timeout", "3s")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		c.t.Error(err)
		return
	}
	c.daemon = cmd
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if resp, err := http.Get("http://" + c.addr + "/"); err == nil {
			resp.Body.Close()
			return
		}
	}
	log, _ := os.ReadFile(c.logPath)
	c.t.Errorf("the daemon did not answer within 30s after a restart; its log ends:\n%s", tail(log, 3000))
}

// kill SIGKILLs the daemon (only the daemon: its uploaders live on).
func (c *crashRun) kill() {
	c.daemonMu.Lock()
	defer c.daemonMu.Unlock()
	c.daemon.Process.Signal(syscall.SIGKILL)
	c.daemon.Wait()
}

// stop ends the daemon gently.
func (c *crashRun) stop() {
	c.daemonMu.Lock()
	defer c.daemonMu.Unlock()
	if c.daemon == nil || c.daemon.ProcessState != nil {
		return
	}
	c.daemon.Process.Signal(syscall.SIGTERM)
	c.daemon.Wait()
}

// image makes (once) the build root's image for filename and returns its
// digest.
func (c *crashRun) image(filename string) [32]byte {
	c.imagesMu.Lock()
	defer c.imagesMu.Unlock()
	if d, ok := c.images[filename]; ok {
		return d
	}
	b := make([]byte, (256<<10)+c.intn(3<<20))
	c.rngMu.Lock()
	for i := 0; i+8 <= len(b); i += 8 {
		v := c.rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	c.rngMu.Unlock()
	p := filepath.Join(c.build, "home:crash", "images", "x86_64", "appliance", filename)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		c.t.Error(err)
	}
	d := sha256.Sum256(b)
	c.images[filename] = d
	return d
}

// submit creates job k (by the build-root route for even k, by skeleton
// and PUT for odd k), kills some, and returns its name, or "" when the
// daemon died before answering. A retry is a new job, never the same build.
func (c *crashRun) submit(k int) string {
	filename := fmt.Sprintf("img-%03d.raw", k)
	c.image(filename)
	data, _ := json.Marshal(map[string]any{"tree": "crash", "series": "crash", "build_id": fmt.Sprintf("b-%03d", k), "links": []string{"latest"}})
	client := &http.Client{Timeout: 30 * time.Second}
	var name string
	if k%2 == 0 {
		q := url.Values{"project": {"home:crash"}, "repository": {"images"}, "arch": {"x86_64"}, "package": {"appliance"},
			"filename": {filename}, "user": {"u" + strconv.Itoa(k%3)}, "target": {"mirror"}}
		resp, err := client.Post("http://"+c.addr+"/cloudupload?"+q.Encode(), "application/octet-stream", bytes.NewReader(data))
		if err != nil {
			time.Sleep(20 * time.Millisecond) // the daemon is restarting
			return ""
		}
		name = jobName(resp)
	} else {
		img, _ := os.ReadFile(filepath.Join(c.build, "home:crash", "images", "x86_64", "appliance", filename))
		skel := "<clouduploadjob><user>u" + strconv.Itoa(k%3) + "</user><target>mirror</target><project>home:crash</project>" +
			"<repository>images</repository><package>appliance</package><arch>x86_64</arch><filename>" + filename +
			"</filename><size>" + strconv.Itoa(len(img)) + "</size><details>" + hex.EncodeToString(data) + "</details></clouduploadjob>"
		resp, err := client.Post("http://"+c.addr+"/cloudupload", "text/xml", strings.NewReader(skel))
		if err != nil {
			time.Sleep(20 * time.Millisecond) // the daemon is restarting
			return ""
		}
		name = jobName(resp)
		// The PUT is retried while the daemon restarts: a job created by
		// a skeleton waits for it (for at most --receive-idle-timeout).
		for try := 0; try < 5 && name != ""; try++ {
			req, _ := http.NewRequest("PUT", "http://"+c.addr+"/cloudupload/"+name, bytes.NewReader(img))
			resp, err := client.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if name != "" && c.intn(8) == 0 {
		time.Sleep(c.jitter(0, 300*time.Millisecond))
		if resp, err := client.Post("http://"+c.addr+"/cloudupload/"+name+"?cmd=kill", "", nil); err == nil {
			resp.Body.Close()
		}
	}
	return name
}

// jobName reads the name of the job document in resp ("" if none).
func jobName(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return ""
	}
	d := etree.NewDocument()
	if d.ReadFromBytes(b) != nil || d.Root() == nil {
		return ""
	}
	return d.Root().SelectAttrValue("name", "")
}

func (c *crashRun) get(path string) string {
	resp, err := http.Get("http://" + c.addr + path)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func (c *crashRun) list() []crashJob {
	d := etree.NewDocument()
	if err := d.ReadFromString(c.get("/cloudupload")); err != nil || d.Root() == nil {
		c.t.Fatalf("job list: %v", err)
	}
	var out []crashJob
	for _, el := range d.Root().SelectElements("clouduploadjob") {
		text := func(tag string) string {
			if e := el.SelectElement(tag); e != nil {
				return e.Text()
			}
			return ""
		}
		out = append(out, crashJob{name: el.SelectAttrValue("name", ""), state: text("state"), details: text("details"), filename: text("filename")})
	}
	return out
}

// processesMentioning returns the processes whose command line holds s.
func processesMentioning(s string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && bytes.Contains(b, []byte(s)) {
			if st, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil && bytes.Contains(st, []byte(") Z ")) {
				continue // a zombie runs nothing
			}
			pids = append(pids, pid)
		}
	}
	return pids
}

// tail returns the last n bytes of b.
func tail(b []byte, n int) []byte {
	return b[max(0, len(b)-n):]
}
