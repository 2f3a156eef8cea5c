package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/backend"
)

// The tests of several nodes on one shared store.

// Ids stay unique and increasing for each caller across nodes.
func testSharedIDs(t *testing.T, e *env) {
	a, b, c := e.node("a", longLease), e.node("b", longLease), e.node("c", longLease)
	max := nextIDs(t, []*handle{a, b, c}, 9, 15)
	id, err := b.NextID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id <= max {
		t.Fatalf("NextID gave %d, not greater than %d given before", id, max)
	}
}

// Load gives a node its own unfinished jobs only.
func testSharedLoad(t *testing.T, e *env) {
	a, b := e.node("a", longLease), e.node("b", longLease)
	mine := create(t, a, "alice")
	update(t, a, create(t, a, "alice"), cloudupload.StateFailed)
	create(t, b, "bob")
	a = e.reopen(a)
	wantJobs(t, "Load of node a", a.loaded, []cloudupload.Job{mine})
	// Any node reads every job.
	all, err := b.List(ctx, nil)
	if err != nil || len(all) != 3 {
		t.Fatalf("List on node b: %v, %v; want 3 jobs", ids(all), err)
	}
	wantJob(t, get(t, b, mine.ID), mine)
	wantData(t, b, mine.ID)
}

// holderFunc reports which node holds a job, from the store's records.
func holderFunc(t *testing.T, s *handle) func(int64) string {
	return func(id int64) string {
		n, _, ok, err := s.shared(t).Holder(ctx, id)
		if err != nil || !ok {
			t.Fatalf("holder of uploading job %d: %v, %v", id, ok, err)
		}
		return n.Name
	}
}

// The slot limits hold for the whole cluster, claimed from three nodes at
// once.
func testSharedClaimLimits(t *testing.T, e *env) {
	stores := []*handle{e.node("a", longLease), e.node("b", longLease), e.node("c", longLease)}
	limits := backend.Limits{Max: 5, PerUser: 2}
	claimLimits(t, stores, 42, limits, holderFunc(t, stores[0]))
}

// A node's own limit holds besides the cluster's.
func testSharedNodeLimit(t *testing.T, e *env) {
	a, b := e.node("a", longLease), e.node("b", longLease)
	limits := backend.Limits{Max: 10, PerUser: 10, Node: 2}
	onA := scheduledJobs(t, []*handle{a}, 12, 6)
	if won := claimAll(t, []*handle{a}, onA, limits); won != 2 {
		t.Fatalf("%d claims on node a succeeded, want 2 (its limit)", won)
	}
	onB := scheduledJobs(t, []*handle{b}, 3, 3)
	if won := claimAll(t, []*handle{b}, onB, limits); won != 2 {
		t.Fatalf("%d claims on node b succeeded, want 2: node a's uploads count against node b's limit", won)
	}
	slots(t, a, limits, holderFunc(t, a))
}

// A node that does not hold a job cannot write it.
func testSharedNotHeld(t *testing.T, e *env) {
	a, b := e.node("a", longLease), e.node("b", longLease)
	j := update(t, a, create(t, a, "alice"), cloudupload.StateScheduled)
	w := j
	w.State, w.Details = cloudupload.StateFailed, "written by b"
	wantNotHeld(t, b.Update(ctx, w), "Update by a node that does not hold the job")
	w.State = cloudupload.StateUploading
	_, err := b.Claim(ctx, w, backend.Limits{Max: 10, PerUser: 10})
	wantNotHeld(t, err, "Claim by a node that does not hold the job")
	wantJob(t, get(t, a, j.ID), j)
	wantData(t, a, j.ID)
}

// A lease not renewed runs out: the node's writes are refused and Renew
// fails.
func testSharedRenewExpired(t *testing.T, e *env) {
	a := e.node("a", shortLease)
	j := create(t, a, "alice")
	for range 3 {
		time.Sleep(shortLease / 3)
		if err := a.shared(t).Renew(ctx); err != nil {
			t.Fatalf("renew a live lease: %v", err)
		}
	}
	time.Sleep(shortLease + shortLease/2)
	// The node writes nothing once its lease ran out, even before it
	// learns so from Renew, and nothing after.
	w := j
	w.State = cloudupload.StateFailed
	wantNotHeld(t, a.Update(ctx, w), "Update after the lease ran out, before Renew")
	wantNotHeld(t, a.shared(t).Renew(ctx), "Renew after the lease ran out")
	wantNotHeld(t, a.Update(ctx, w), "Update after Renew failed")
	wantJob(t, get(t, a, j.ID), j)
	// A restart registers the node anew: it holds its jobs again.
	a = e.reopen(a)
	wantJobs(t, "Load after a restart", a.loaded, []cloudupload.Job{j})
	update(t, a, j, cloudupload.StateFailed)
}

// The unfinished jobs of a lost node go to exactly one of several nodes
// taking over at once, not before the grace, and the lost node's writes are
// refused after.
func testSharedTakeOver(t *testing.T, e *env) {
	start := time.Now()
	lost := e.node("lost", shortLease)
	opened := time.Now() // the lease runs out between start+lease and opened+lease
	var unfinished []cloudupload.Job
	for i := range 6 {
		j := create(t, lost, fmt.Sprint("u", i))
		if i%2 == 1 {
			j = update(t, lost, j, cloudupload.StateScheduled)
		}
		unfinished = append(unfinished, j)
	}
	final := update(t, lost, create(t, lost, "u9"), cloudupload.StateFailed)
	nodes := []*handle{e.node("b", longLease), e.node("c", longLease), e.node("d", longLease)}
	const grace = time.Second

	time.Sleep(time.Until(start.Add(shortLease + grace/2))) // the lease ran out, the grace not yet
	taken, err := nodes[0].shared(t).TakeOver(ctx, grace)
	if err != nil || len(taken) != 0 {
		t.Fatalf("TakeOver before the grace: %v, %v; want nothing", taken, err)
	}
	time.Sleep(time.Until(opened.Add(shortLease + grace + grace/4)))

	var mu sync.Mutex
	got := map[int64][]string{}
	var all []cloudupload.Job
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			taken, err := n.shared(t).TakeOver(ctx, grace)
			if err != nil {
				t.Errorf("take over on %s: %v", n.node.Name, err)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, tj := range taken {
				if tj.From != "lost" {
					t.Errorf("job %d taken from %q, want from lost", tj.Job.ID, tj.From)
				}
				got[tj.Job.ID] = append(got[tj.Job.ID], n.node.Name)
				all = append(all, tj.Job)
			}
		}()
	}
	wg.Wait()
	for id, by := range got {
		if len(by) != 1 {
			t.Fatalf("job %d taken over by %v, want one node", id, by)
		}
	}
	wantJobs(t, "jobs taken over", byID(all), unfinished)
	for _, j := range unfinished {
		n, live, ok, err := nodes[0].shared(t).Holder(ctx, j.ID)
		if err != nil || !ok || !live || n.Name != got[j.ID][0] {
			t.Fatalf("holder of job %d after take-over: %+v live %v ok %v err %v; want %s", j.ID, n, live, ok, err, got[j.ID][0])
		}
	}

	// Fencing: the lost node writes nothing more, the new holder does.
	j := unfinished[0]
	w := j
	w.State, w.Details = cloudupload.StateFailed, "written by the lost node"
	wantNotHeld(t, lost.Update(ctx, w), "Update by a node whose jobs were taken over")
	wantNotHeld(t, lost.shared(t).Renew(ctx), "Renew by a node whose jobs were taken over")
	wantJob(t, get(t, nodes[0], j.ID), j)
	wantData(t, nodes[0], j.ID)
	var holder *handle
	for _, n := range nodes {
		if n.node.Name == got[j.ID][0] {
			holder = n
		}
	}
	update(t, holder, j, cloudupload.StateFailed)
	wantJob(t, get(t, nodes[0], final.ID), final)

	// Nothing is left to take; a restarted lost node loads nothing.
	if taken, err := nodes[1].shared(t).TakeOver(ctx, grace); err != nil || len(taken) != 0 {
		t.Fatalf("second take-over: %v, %v; want nothing", taken, err)
	}
	lost = e.reopen(lost)
	wantJobs(t, "Load of the lost node after a take-over", lost.loaded, nil)
}

// Holder names the node holding an unfinished job and whether its lease
// is live.
func testSharedHolder(t *testing.T, e *env) {
	a, b := e.node("a", shortLease), e.node("b", longLease)
	j := create(t, a, "alice")
	n, live, ok, err := b.shared(t).Holder(ctx, j.ID)
	if err != nil || !ok || !live || n != a.shared(t).Node() {
		t.Fatalf("Holder = %+v live %v ok %v err %v; want %+v live", n, live, ok, err, a.shared(t).Node())
	}
	if n.Name != "a" || n.URL == "" {
		t.Fatalf("node a is %+v, want name a and its URL", n)
	}
	done := update(t, b, create(t, b, "bob"), cloudupload.StateSucceeded)
	if _, _, ok, err := b.shared(t).Holder(ctx, done.ID); err != nil || ok {
		t.Fatalf("Holder of a final job: ok %v err %v; want not ok", ok, err)
	}
	_, _, _, err = b.shared(t).Holder(ctx, done.ID+100)
	wantCode(t, err, cloudupload.ENOTFOUND, "Holder of an unknown job")
	time.Sleep(shortLease + shortLease/2)
	if n, live, ok, err := b.shared(t).Holder(ctx, j.ID); err != nil || !ok || live || n.Name != "a" {
		t.Fatalf("Holder after a's lease ran out = %+v live %v ok %v err %v; want a, not live", n, live, ok, err)
	}
}

// A final job's log is kept where every node reads it.
func testSharedLog(t *testing.T, e *env) {
	a, b := e.node("a", longLease), e.node("b", longLease)
	j := update(t, a, create(t, a, "alice"), cloudupload.StateFailed)
	_, err := b.shared(t).Log(ctx, j.ID)
	wantCode(t, err, cloudupload.ENOTFOUND, "Log before SaveLog")
	log := []byte("uploading...\n\x00binary\xff\ndone\n")
	if err := a.shared(t).SaveLog(ctx, j.ID, log); err != nil {
		t.Fatalf("save log: %v", err)
	}
	got, err := b.shared(t).Log(ctx, j.ID)
	if err != nil || string(got) != string(log) {
		t.Fatalf("Log on node b = %q, %v; want %q", got, err, log)
	}
	if err := a.Remove(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	_, err = b.shared(t).Log(ctx, j.ID)
	wantCode(t, err, cloudupload.ENOTFOUND, "Log of a removed job")
}

// Import keeps ids, data and logs; the id sequence continues past them; an
// existing id is refused.
func testSharedImport(t *testing.T, e *env) {
	a := e.node("a", longLease)
	first := create(t, a, "alice")
	done := job("bob")
	done.ID, done.State, done.Details, done.Finished = first.ID+500, cloudupload.StateSucceeded, "ami-123", 1700000000
	running := job("carol")
	running.ID, running.State, running.Pid = first.ID+300, cloudupload.StateUploading, 77
	s := a.shared(t)
	if err := s.Import(ctx, done, nil, []byte("done log\n")); err != nil {
		t.Fatalf("import a final job: %v", err)
	}
	if err := s.Import(ctx, running, dataOf(running.ID), nil); err != nil {
		t.Fatalf("import an unfinished job: %v", err)
	}
	if err := s.Import(ctx, first, dataOf(first.ID), nil); err == nil {
		t.Fatalf("import of an existing id %d: no error", first.ID)
	}
	wantJob(t, get(t, a, first.ID), first)
	wantJob(t, get(t, a, done.ID), done)
	wantJob(t, get(t, a, running.ID), running)
	wantData(t, a, running.ID)
	if log, err := s.Log(ctx, done.ID); err != nil || string(log) != "done log\n" {
		t.Fatalf("log of the imported job: %q, %v", log, err)
	}
	id, err := a.NextID(ctx)
	if err != nil || id <= done.ID {
		t.Fatalf("NextID after import = %d, %v; want more than %d", id, err, done.ID)
	}
	a = e.reopen(a)
	wantJobs(t, "Load after import", byID(a.loaded), []cloudupload.Job{first, running})
	update(t, a, running, cloudupload.StateSucceeded)
}

// Steal hands a node with free slots the oldest scheduled fetch jobs of
// other live nodes that waited long enough, each to one node, only while
// the cluster has a slot for them; the old holder may not write them any
// more.
func testSharedSteal(t *testing.T, e *env) {
	a, b, c := e.node("a", longLease), e.node("b", longLease), e.node("c", longLease)
	limits := backend.Limits{Max: 10, PerUser: 10}
	fetch := update(t, a, create(t, a, "alice"), cloudupload.StateScheduled)
	put := create(t, a, "alice")
	put.Origin = cloudupload.OriginPut
	if err := a.Update(ctx, put); err != nil {
		t.Fatal(err)
	}
	put = update(t, a, put, cloudupload.StateScheduled)
	create(t, a, "alice") // not scheduled yet
	if got, err := b.shared(t).Steal(ctx, 10, time.Hour, limits); err != nil || len(got) != 0 {
		t.Fatalf("Steal of jobs that did not wait long enough: %v, %v", got, err)
	}
	if got, err := b.shared(t).Steal(ctx, 10, 0, backend.Limits{Max: 0, PerUser: 10}); err != nil || len(got) != 0 {
		t.Fatalf("Steal with no slot free in the cluster: %v, %v", got, err)
	}
	const wait = 300 * time.Millisecond // also keeps a job just stolen from being stolen again at once
	time.Sleep(wait + 50*time.Millisecond)
	var wg sync.WaitGroup
	got := make([][]backend.TakenJob, 2)
	for i, s := range []*handle{b, c} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if got[i], err = s.shared(t).Steal(ctx, 10, wait, limits); err != nil {
				t.Errorf("Steal on node %s: %v", s.node.Name, err)
			}
		}()
	}
	wg.Wait()
	all := append(got[0], got[1]...)
	if len(all) != 1 || all[0].Job.ID != fetch.ID || all[0].From != "a" {
		t.Fatalf("Steal by two nodes at once handed %+v, want job %d from a to one of them", all, fetch.ID)
	}
	thief := b
	if len(got[1]) == 1 {
		thief = c
	}
	if n, _, _, err := a.shared(t).Holder(ctx, fetch.ID); err != nil || n.Name != thief.node.Name {
		t.Fatalf("holder of the stolen job: %v, %v; want %s", n.Name, err, thief.node.Name)
	}
	w := fetch
	w.State = cloudupload.StateUploading
	_, err := a.Claim(ctx, w, limits)
	wantNotHeld(t, err, "Claim by the node a job was stolen from")
	wantData(t, thief, fetch.ID)
	update(t, thief, all[0].Job, cloudupload.StateFailed)
}
