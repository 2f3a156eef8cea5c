package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/beevik/etree"
	"github.com/jackc/pgx/v5"

	"github.com/cloudupload/cloudupload/internal/pgtest"
	"github.com/cloudupload/cloudupload/internal/testutil"
)

// Limits of the cluster test, which the database's record must never
// exceed.
const (
	clusterMaxUploads = 4
	clusterPerUser    = 2
	clusterLease      = 3 * time.Second
	clusterKillGrace  = 2 * time.Second
)

// TestCluster runs three nodes on one PostgreSQL with the real uploader and
// mirror target, submits 60 jobs through all of them, and SIGKILLs one node
// while it uploads. Every job ends; a job succeeded exactly when its build
// was published with the image's bytes; `latest` never goes back; the slot
// limits hold in the database at every moment sampled; kill and log work
// through any node; the lost node's jobs are taken over by the others.
func TestCluster(t *testing.T) {
	bin := testutil.BuildBinaries(t)
	db := pgtest.URL(t)
	dir := t.TempDir()
	testutil.StopStrays(t, dir)
	pub, priv := testKeys()
	cl := &cluster{t: t, bin: bin, db: db, dir: dir, pub: pub, priv: priv,
		build: filepath.Join(dir, "build"), mirror: filepath.Join(dir, "mirror"), images: map[int][32]byte{}}
	os.MkdirAll(cl.build, 0o755)
	os.MkdirAll(cl.mirror, 0o755)
	for i := range 3 {
		cl.nodes = append(cl.nodes, cl.startNode(fmt.Sprintf("n%d", i+1)))
	}
	t.Cleanup(cl.stopAll)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	// Watchers: the slot limits in the database, and `latest`.
	var watch sync.WaitGroup
	var worst struct {
		sync.Mutex
		all, user int
		latest    []string
	}
	watch.Add(1)
	go func() {
		defer watch.Done()
		wconn, err := pgx.Connect(ctx, db)
		if err != nil {
			t.Error(err)
			return
		}
		defer wconn.Close(context.Background())
		for ctx.Err() == nil {
			var all, user int
			err := wconn.QueryRow(ctx, `SELECT count(*), coalesce(max(n), 0) FROM
				(SELECT count(*) AS n FROM jobs WHERE state = 'uploading' GROUP BY slot_key) AS u`).Scan(new(int), &user)
			if err == nil {
				err = wconn.QueryRow(ctx, `SELECT count(*) FROM jobs WHERE state = 'uploading'`).Scan(&all)
			}
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("watching slots: %v", err)
				}
				return
			}
			l, _ := os.Readlink(filepath.Join(cl.mirror, "s", "latest"))
			worst.Lock()
			worst.all, worst.user = max(worst.all, all), max(worst.user, user)
			if n := len(worst.latest); l != "" && (n == 0 || worst.latest[n-1] != l) {
				worst.latest = append(worst.latest, l)
			}
			worst.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()

	// 60 jobs, round robin over the nodes: most fetch their image from the
	// build root (any node can run them again), every fifth is sent with PUT.
	const jobs = 60
	names := make([]string, jobs)
	var submit sync.WaitGroup
	through := cl.nodes
	for k := range jobs {
		n := through[k%len(through)]
		submit.Add(1)
		go func() {
			defer submit.Done()
			names[k] = cl.submit(n, k)
		}()
		if k == 20 {
			// Lose n2 while it uploads.
			submit.Wait()
			cl.killWhenUploading(ctx, conn, cl.nodes[1])
			through = []*clusterNode{cl.nodes[0], cl.nodes[2]}
		}
	}
	submit.Wait()
	live := []*clusterNode{cl.nodes[0], cl.nodes[2]}

	// Kill and log through a node that does not hold the job.
	if name := cl.submit(live[0], 1000); name != "" {
		cl.waitState(live[1], name, "uploading", "scheduled", "succeeded")
		status, body := cl.do(live[1], "POST", "/cloudupload/"+name+"?cmd=kill", nil)
		if status != 200 {
			t.Errorf("kill of %s through another node: %d %s", name, status, body)
		}
		_, doc := cl.do(live[1], "GET", "/cloudupload/"+name, nil)
		if s := xmlField(doc, "state"); s != "failed" && s != "succeeded" {
			t.Errorf("after a kill through another node, job %s is %s", name, s)
		}
	}

	// Every job ends (the lost node's after its lease, the grace and the
	// takeover margin).
	deadline := time.Now().Add(3 * time.Minute)
	var final map[string]clusterJob
	for {
		final = cl.list(live[0])
		unfinished := 0
		for _, name := range names {
			if j, ok := final[name]; !ok || (j.state != "succeeded" && j.state != "failed") {
				unfinished++
			}
		}
		if unfinished == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d jobs still unfinished after 3 minutes: %v", unfinished, final)
		}
		time.Sleep(200 * time.Millisecond)
	}
	cancel()
	watch.Wait()

	// Outcome ⇔ publication, and every node answers the same.
	other := cl.list(live[1])
	succeeded, failed, fromLost := 0, 0, 0
	reasons := map[string]int{}
	highest := ""
	for k, name := range names {
		if name == "" {
			t.Errorf("job %d was not created", k)
			continue
		}
		j := final[name]
		if o := other[name]; o.state != j.state || o.details != j.details {
			t.Errorf("job %s: node n1 says %s %q, node n3 says %s %q", name, j.state, j.details, o.state, o.details)
		}
		id := fmt.Sprintf("b-%03d", k)
		rel := filepath.Join("s", id, fmt.Sprintf("img-%03d.raw", k))
		b, err := os.ReadFile(filepath.Join(cl.mirror, rel))
		published := err == nil
		lostWhileUploading := strings.Contains(j.details, "node n2 was lost while uploading")
		switch {
		case j.state == "succeeded" && !published:
			t.Errorf("job %s succeeded (%s) but %s was not published", name, j.details, rel)
		case j.state == "succeeded" && sha256.Sum256(b) != cl.images[k]:
			t.Errorf("job %s: %s does not hold the image's bytes", name, rel)
		case j.state == "failed" && published && !lostWhileUploading:
			t.Errorf("job %s failed (%s) but its build was published", name, j.details)
		}
		if j.state == "succeeded" {
			succeeded++
			if strings.Compare(id, highest) > 0 {
				highest = id
			}
		} else {
			failed++
			reasons[j.details]++
		}
	}
	for _, n := range live {
		fromLost += strings.Count(n.log.String(), "from_node=n2")
	}
	t.Logf("%d jobs: %d succeeded, %d failed %v; %d recovered from the lost node; highest slot use %d (per user %d); latest went %v",
		len(names), succeeded, failed, reasons, fromLost, worst.all, worst.user, worst.latest)
	if fromLost == 0 {
		t.Error("no job of the lost node was taken over")
	}
	if succeeded < jobs/2 {
		t.Errorf("only %d of %d jobs succeeded", succeeded, jobs)
	}
	if worst.all > clusterMaxUploads || worst.user > clusterPerUser {
		t.Errorf("slot limits exceeded in the database: %d uploading (max %d), %d for one user (max %d)",
			worst.all, clusterMaxUploads, worst.user, clusterPerUser)
	}
	if worst.all == 0 {
		t.Error("no upload was ever seen running: the watch proves nothing")
	}
	for i := 1; i < len(worst.latest); i++ {
		if strings.Compare(worst.latest[i], worst.latest[i-1]) < 0 {
			t.Errorf("latest went back from %s to %s", worst.latest[i-1], worst.latest[i])
		}
	}
	if l, _ := os.Readlink(filepath.Join(cl.mirror, "s", "latest")); l != highest {
		t.Errorf("latest is %q, want the highest published build %q", l, highest)
	}
	// Each build published once: one directory per build id, no staging
	// left.
	ents, _ := os.ReadDir(filepath.Join(cl.mirror, "s"))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") && e.Name() != ".lock" { // the series lock stays
			t.Errorf("left in the mirror: %s", e.Name())
		}
	}

	// The lost node's jobs were taken over: none is still held by it.
	var held int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM jobs WHERE node = 'n2' AND state NOT IN ('succeeded', 'failed')`).Scan(&held); err != nil {
		t.Fatal(err)
	}
	if held != 0 {
		t.Errorf("%d unfinished jobs still held by the lost node", held)
	}

	// Logs of finished jobs read through any node, whichever ran them.
	for _, name := range names[:6] {
		for _, n := range live {
			if status, log := cl.do(n, "GET", "/cloudupload/"+name+"/_log?nostream=1", nil); status != 200 || (final[name].state == "succeeded" && !strings.Contains(log, "uploader")) {
				t.Errorf("log of %s through %s: %d %q", name, n.name, status, log)
			}
		}
	}

	// The lost node comes back with its state directory: nothing of its
	// old jobs runs any more (its shims stopped when its lease ran out),
	// their local files are archived, and it serves the same answers.
	if pids := processesMentioning(filepath.Join(cl.dir, "n2")); len(pids) > 0 {
		t.Errorf("processes of the lost node still run after its jobs were taken over: %v", pids)
	}
	back := cl.startNode("n2")
	cl.nodes[1] = back
	if ents, _ := os.ReadDir(filepath.Join(back.state, "jobs")); len(ents) != 0 {
		t.Errorf("the returning node kept %d job directories of jobs it no longer holds", len(ents))
	}
	again := cl.list(back)
	for _, name := range names {
		if a, b := again[name], final[name]; a != b {
			t.Errorf("job %s through the returning node: %s %q, want %s %q", name, a.state, a.details, b.state, b.details)
		}
	}
	if name := cl.submit(back, 2000); name != "" {
		if s, _ := cl.waitFinal(back, name); s != "succeeded" {
			t.Errorf("a new job through the returning node: %s", s)
		}
	}
}

// waitFinal polls job name through node n until it is final.
func (cl *cluster) waitFinal(n *clusterNode, name string) (string, string) {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		_, doc := cl.do(n, "GET", "/cloudupload/"+name, nil)
		if s := xmlField(doc, "state"); s == "succeeded" || s == "failed" {
			return s, xmlField(doc, "details")
		}
	}
	cl.t.Errorf("job %s not final after a minute", name)
	return "", ""
}

type cluster struct {
	t             *testing.T
	bin, db, dir  string
	pub, priv     string
	build, mirror string
	nodes         []*clusterNode
	imagesMu      sync.Mutex
	images        map[int][32]byte
}

type clusterNode struct {
	name, addr, state string
	cmd               *exec.Cmd
	log               *testutil.SyncBuffer
}

type clusterJob struct{ state, details string }

func (cl *cluster) startNode(name string) *clusterNode {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cl.t.Fatal(err)
	}
	n := &clusterNode{name: name, addr: l.Addr().String(), state: filepath.Join(cl.dir, name), log: &testutil.SyncBuffer{}}
	l.Close()
	n.cmd = exec.Command(filepath.Join(cl.bin, "cloudupload-server"), "--listen", n.addr, "--state-dir", n.state,
		"--config", databaseConfig(cl.t, cl.db), "--node", name, "--advertise-url", "http://"+n.addr, "--lease", clusterLease.String(),
		"--kill-grace", clusterKillGrace.String(), "--pubkey", cl.pub, "--privkey", cl.priv,
		"--build-root", cl.build, "--mirror", "cl="+cl.mirror, "--min-free-space", "0",
		"--max-uploads", strconv.Itoa(clusterMaxUploads), "--max-uploads-per-user", strconv.Itoa(clusterPerUser))
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		cl.t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get("http://" + n.addr + "/"); err == nil {
			resp.Body.Close()
			return n
		}
		if time.Now().After(deadline) {
			cl.t.Fatalf("node %s did not start:\n%s", name, n.log.String())
		}
	}
}

func (cl *cluster) stopAll() {
	for _, n := range cl.nodes {
		if n.cmd.ProcessState == nil {
			n.cmd.Process.Signal(syscall.SIGTERM)
			n.cmd.Wait()
		}
		if cl.t.Failed() {
			cl.t.Logf("log of node %s:\n%s", n.name, tail([]byte(n.log.String()), 6000))
		}
	}
}

// killWhenUploading SIGKILLs node n's daemon (only the daemon: its shims
// live on, and must stop their uploaders once its lease is gone) as soon as
// it runs an upload.
func (cl *cluster) killWhenUploading(ctx context.Context, conn *pgx.Conn, n *clusterNode) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		var uploading int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM jobs WHERE node = $1 AND state = 'uploading'`, n.name).Scan(&uploading); err != nil {
			cl.t.Fatal(err)
		}
		if uploading > 0 {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	n.cmd.Process.Signal(syscall.SIGKILL)
	n.cmd.Wait()
}

// image makes the build root's image of job k and returns its digest.
func (cl *cluster) image(k int) []byte {
	b := make([]byte, 512<<10+k*4096)
	for i := range b {
		b[i] = byte(i*7 + k)
	}
	p := filepath.Join(cl.build, "home:cl", "images", "x86_64", "appliance", fmt.Sprintf("img-%03d.raw", k))
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		cl.t.Error(err)
	}
	cl.imagesMu.Lock()
	cl.images[k] = sha256.Sum256(b)
	cl.imagesMu.Unlock()
	return b
}

// submit creates job k through node n and returns its name ("" when the
// node is gone).
func (cl *cluster) submit(n *clusterNode, k int) string {
	img := cl.image(k)
	filename := fmt.Sprintf("img-%03d.raw", k)
	data, _ := json.Marshal(map[string]any{"tree": "cl", "series": "s", "build_id": fmt.Sprintf("b-%03d", k), "links": []string{"latest"}})
	user := "u" + strconv.Itoa(k%4)
	if k%5 != 4 {
		q := url.Values{"project": {"home:cl"}, "repository": {"images"}, "arch": {"x86_64"}, "package": {"appliance"},
			"filename": {filename}, "user": {user}, "target": {"mirror"}}
		status, body := cl.do(n, "POST", "/cloudupload?"+q.Encode(), data)
		if status != 200 {
			cl.t.Errorf("create %d through %s: %d %s", k, n.name, status, body)
			return ""
		}
		return xmlAttr(body, "name")
	}
	skel := "<clouduploadjob><user>" + user + "</user><target>mirror</target><project>home:cl</project>" +
		"<repository>images</repository><package>appliance</package><arch>x86_64</arch><filename>" + filename +
		"</filename><size>" + strconv.Itoa(len(img)) + "</size><details>" + hex.EncodeToString(data) + "</details></clouduploadjob>"
	status, body := cl.do(n, "POST", "/cloudupload", []byte(skel))
	if status != 200 {
		cl.t.Errorf("create %d through %s: %d %s", k, n.name, status, body)
		return ""
	}
	name := xmlAttr(body, "name")
	if status, body := cl.do(n, "PUT", "/cloudupload/"+name, img); status != 200 {
		cl.t.Errorf("PUT %d through %s: %d %s", k, n.name, status, body)
	}
	return name
}

func (cl *cluster) do(n *clusterNode, method, path string, body []byte) (int, string) {
	req, _ := http.NewRequest(method, "http://"+n.addr+path, bytes.NewReader(body))
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		cl.t.Errorf("%s %s through %s: %v", method, path, n.name, err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (cl *cluster) waitState(n *clusterNode, name string, states ...string) {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		_, doc := cl.do(n, "GET", "/cloudupload/"+name, nil)
		for _, s := range states {
			if xmlField(doc, "state") == s {
				return
			}
		}
	}
	cl.t.Errorf("job %s never reached %v", name, states)
}

func (cl *cluster) list(n *clusterNode) map[string]clusterJob {
	status, doc := cl.do(n, "GET", "/cloudupload", nil)
	if status != 200 {
		cl.t.Fatalf("list through %s: %d %s", n.name, status, doc)
	}
	d := etree.NewDocument()
	if err := d.ReadFromString(doc); err != nil || d.Root() == nil {
		cl.t.Fatalf("list through %s: %v", n.name, err)
	}
	out := map[string]clusterJob{}
	for _, el := range d.Root().SelectElements("clouduploadjob") {
		out[el.SelectAttrValue("name", "")] = clusterJob{state: elText(el, "state"), details: elText(el, "details")}
	}
	return out
}

func elText(el *etree.Element, tag string) string {
	if e := el.SelectElement(tag); e != nil {
		return e.Text()
	}
	return ""
}

// xmlField is the text of element tag of the job document doc.
func xmlField(doc, tag string) string {
	d := etree.NewDocument()
	if d.ReadFromString(doc) != nil || d.Root() == nil {
		return ""
	}
	return elText(d.Root(), tag)
}

// xmlAttr is attribute name of the root of doc.
func xmlAttr(doc, name string) string {
	d := etree.NewDocument()
	if d.ReadFromString(doc) != nil || d.Root() == nil {
		return ""
	}
	return d.Root().SelectAttrValue(name, "")
}

// databaseConfig writes a config file naming the database, whose URL
// carries a password (the command line refuses one), and returns its path.
func databaseConfig(t testing.TB, db string) string {
	p := filepath.Join(t.TempDir(), "database.conf")
	if err := os.WriteFile(p, []byte("database = "+db+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestClusterDatabaseGone: a node whose database goes away while it uploads
// stops its uploader and exits once it could not renew its lease for a whole
// lease; restarted once the database is back, it finds the job ended with a
// reason that says why, and serves again.
func TestClusterDatabaseGone(t *testing.T) {
	srv := pgtest.NewServer(t)
	db := srv.URL(t)
	dir := t.TempDir()
	testutil.StopStrays(t, dir)
	t.Setenv("RELEASE_DIR", t.TempDir()) // the slow job never gets released
	args := []string{"--config", databaseConfig(t, db), "--node", "solo", "--advertise-url", "http://{addr}",
		"--lease", "3s", "--kill-grace", "2s", "--log-level", "info"}
	p := startProcessIn(t, buildServer(t), dir, args...)
	name, _ := submitPutMode(t, p.url, "alice", 4096, bytes.NewReader(make([]byte, 4096)), "slow")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if jobField(t, string(get(t, p.url+"/cloudupload/"+name)), "state") == "uploading" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the job never started uploading")
		}
	}

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	select {
	case err := <-exited:
		if err == nil {
			t.Errorf("the node exited with status 0 after losing its lease")
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the node still runs 30 s after its database went away:\n%s", p.log.String())
	}
	t.Logf("the node exited %s after the database went away", time.Since(stopped).Round(100*time.Millisecond))
	if !strings.Contains(p.log.String(), "lost its lease") {
		t.Errorf("the node's log does not say it lost its lease:\n%s", p.log.String())
	}
	for deadline := time.Now().Add(10 * time.Second); len(processesMentioning(filepath.Join(dir, "uploader"))) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the uploader still runs 10 s after its node exited")
		}
	}

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	p2 := startProcessIn(t, buildServer(t), dir, args...)
	state, _ := waitFinal(t, p2.url, name)
	doc := string(get(t, p2.url+"/cloudupload/"+name))
	if state != "failed" || !strings.Contains(jobField(t, doc, "details"), "lost its lease") {
		t.Errorf("after the restart:\n%s", doc)
	}
	next, _ := submitPut(t, p2.url, "alice", 4096, bytes.NewReader(make([]byte, 4096)))
	if s, _ := waitFinal(t, p2.url, next); s != "succeeded" {
		t.Errorf("a new job after the database came back: %s", s)
	}
}

// TestClusterSteal: jobs waiting for the upload slots of their own node
// (--node-uploads) move to a node with free slots, which fetches their
// image again and runs them; the first node then passes requests about
// them on.
func TestClusterSteal(t *testing.T) {
	db := pgtest.URL(t)
	build := t.TempDir()
	img := filepath.Join(build, "P", "R", "x86_64", "K", "img.raw")
	os.MkdirAll(filepath.Dir(img), 0o755)
	os.WriteFile(img, make([]byte, 64<<10), 0o644)
	release := t.TempDir()
	t.Setenv("RELEASE_DIR", release)
	conf := databaseConfig(t, db)
	node := func(name string, extra ...string) *serverProcess {
		dir := t.TempDir()
		testutil.StopStrays(t, dir)
		args := append([]string{"--config", conf, "--node", name, "--advertise-url", "http://{addr}",
			"--build-root", build, "--max-uploads-per-user", "4"}, extra...)
		return startProcessIn(t, buildServer(t), dir, args...)
	}
	busy := node("busy", "--node-uploads", "1")
	free := node("free")

	var names []string
	for range 3 {
		q := url.Values{"project": {"P"}, "repository": {"R"}, "arch": {"x86_64"}, "package": {"K"},
			"filename": {"img.raw"}, "user": {"alice"}, "target": {"test"}}
		resp, err := http.Post(busy.url+"/cloudupload?"+q.Encode(), "application/octet-stream", strings.NewReader("slow"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("create: %s %s", resp.Status, b)
		}
		names = append(names, jobField(t, string(b), "name"))
	}
	// One runs on busy; the other two wait there, then move to free.
	t0 := time.Now()
	deadline := t0.Add(time.Minute)
	for {
		uploading := 0
		for _, name := range names {
			if jobField(t, string(get(t, busy.url+"/cloudupload/"+name)), "state") == "uploading" {
				uploading++
			}
		}
		if uploading == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 3 jobs uploading a minute after they were created; logs:\n%s\n%s", uploading, busy.log.String(), free.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("all three uploading after %s", time.Since(t0).Round(100*time.Millisecond))
	if n := strings.Count(free.log.String(), "moved from node busy"); n != 2 {
		t.Errorf("node free took %d jobs, want 2", n)
	}
	os.WriteFile(filepath.Join(release, "release"), nil, 0o644)
	for _, name := range names {
		if s, _ := waitFinal(t, busy.url, name); s != "succeeded" {
			t.Errorf("job %s %s", name, s)
		}
	}
	if !strings.Contains(string(get(t, free.url+"/cloudupload/"+names[2]+"/_log?nostream=1")), "released") {
		t.Errorf("the log of a moved job does not show its run")
	}
}
