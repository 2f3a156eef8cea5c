package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/backend"
)

// Node says as which node to open a store. Stores that are not shared
// ignore it.
type Node struct {
	Name  string        // the node's name (its URL is derived from it by the Opener)
	Lease time.Duration // the node's lease; the suite uses short ones (1s) and long ones (30s)
}

// Open opens the backing store its Opener prepared, as node n. Opening it
// again after Close is a restart of that node; a shared store may be open as
// several nodes at once.
type Open func(n Node) (backend.Store, error)

// Opener prepares a new, empty backing store (a state directory, a
// database) for test t and returns how to open it. The backing store is
// removed when t ends.
type Opener func(t *testing.T) Open

const (
	longLease  = 30 * time.Second
	shortLease = 2 * time.Second // long enough that a loaded machine renews in time
)

// Run runs the conformance suite against the store opener prepares: the
// tests of every store, and those of several nodes when the store is a
// backend.SharedStore.
func Run(t *testing.T, opener Opener) {
	probe := (&env{t: t, open: opener(t)}).node("probe", longLease)
	_, shared := probe.Store.(backend.SharedStore)
	probe.close(t)

	tests := []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"IDs", testIDs},
		{"CreateGetList", testCreateGetList},
		{"UpdatePersists", testUpdatePersists},
		{"UpdateUnknown", testUpdateUnknown},
		{"FinalDropsData", testFinalDropsData},
		{"Remove", testRemove},
		{"Load", testLoad},
		{"ClaimLimits", testClaimLimits},
	}
	if shared {
		tests = append(tests, []struct {
			name string
			fn   func(t *testing.T, e *env)
		}{
			{"SharedIDs", testSharedIDs},
			{"SharedLoad", testSharedLoad},
			{"SharedClaimLimits", testSharedClaimLimits},
			{"SharedNodeLimit", testSharedNodeLimit},
			{"SharedNotHeld", testSharedNotHeld},
			{"SharedRenewExpired", testSharedRenewExpired},
			{"SharedTakeOver", testSharedTakeOver},
			{"SharedHolder", testSharedHolder},
			{"SharedLog", testSharedLog},
			{"SharedImport", testSharedImport},
			{"SharedSteal", testSharedSteal},
		}...)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, &env{t: t, open: opener(t), shared: shared})
		})
	}
}

// env is one test's backing store.
type env struct {
	t      *testing.T
	open   Open
	shared bool
}

// handle is a store the suite opened, closed once.
type handle struct {
	backend.Store
	node   Node
	loaded []cloudupload.Job // what Load returned at open
	once   sync.Once
}

// node opens the store as node name and calls Load, as the Manager does;
// the store is closed when the test ends.
func (e *env) node(name string, lease time.Duration) *handle {
	e.t.Helper()
	n := Node{Name: name, Lease: lease}
	s, err := e.open(n)
	if err != nil {
		e.t.Fatalf("open the store as node %s: %v", name, err)
	}
	h := &handle{Store: s, node: n}
	e.t.Cleanup(func() { h.close(e.t) })
	if h.loaded, err = s.Load(context.Background()); err != nil {
		e.t.Fatalf("load: %v", err)
	}
	return h
}

// reopen closes h and opens its node again: a restart.
func (e *env) reopen(h *handle) *handle {
	e.t.Helper()
	h.close(e.t)
	return e.node(h.node.Name, h.node.Lease)
}

func (h *handle) close(t *testing.T) {
	h.once.Do(func() {
		if err := h.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
}

func (h *handle) shared(t *testing.T) backend.SharedStore {
	t.Helper()
	return h.Store.(backend.SharedStore)
}

var ctx = context.Background()

// job is a new job of user as the API makes it (no id yet).
func job(user string) cloudupload.Job {
	now := time.Now().Unix()
	return cloudupload.Job{
		State: cloudupload.StateCreated, Created: now, Updated: now, User: user, Target: "ec2",
		Project: "home:" + user, Repository: "images", Package: "appliance", Arch: "x86_64",
		Filename: "appliance.x86_64.raw.xz", Size: 4096, Client: "obs", Origin: cloudupload.OriginFetch,
	}
}

func dataOf(id int64) []byte { return []byte(fmt.Sprintf(`{"secret":"data of job %d"}`, id)) }

// create records a new job of user with its target data.
func create(t *testing.T, s backend.Store, user string) cloudupload.Job {
	t.Helper()
	id, err := s.NextID(ctx)
	if err != nil {
		t.Fatalf("next id: %v", err)
	}
	j := job(user)
	j.ID = id
	if err := s.Create(ctx, j, dataOf(id)); err != nil {
		t.Fatalf("create job %d: %v", id, err)
	}
	return j
}

// update moves j to state and records it.
func update(t *testing.T, s backend.Store, j cloudupload.Job, state cloudupload.State) cloudupload.Job {
	t.Helper()
	j.State = state
	j.Updated++
	j.Details = "now " + string(state)
	if state.Final() {
		j.Finished = j.Updated
	}
	if err := s.Update(ctx, j); err != nil {
		t.Fatalf("update job %d to %s: %v", j.ID, state, err)
	}
	return j
}

func get(t *testing.T, s backend.Store, id int64) cloudupload.Job {
	t.Helper()
	j, err := s.Get(ctx, id)
	if err != nil {
		t.Fatalf("get job %d: %v", id, err)
	}
	return j
}

func wantJob(t *testing.T, got, want cloudupload.Job) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("job %d is\n%+v\nwant\n%+v", want.ID, got, want)
	}
}

func wantJobs(t *testing.T, what string, got, want []cloudupload.Job) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: got jobs %v, want %v\ngot  %+v\nwant %+v", what, ids(got), ids(want), got, want)
	}
}

func ids(jobs []cloudupload.Job) []int64 {
	var out []int64
	for _, j := range jobs {
		out = append(out, j.ID)
	}
	return out
}

func byID(jobs []cloudupload.Job) []cloudupload.Job {
	out := append([]cloudupload.Job(nil), jobs...)
	sort.Slice(out, func(i, k int) bool { return out[i].ID < out[k].ID })
	return out
}

func wantCode(t *testing.T, err error, code, what string) {
	t.Helper()
	if cloudupload.ErrorCode(err) != code {
		t.Fatalf("%s: error %v (code %q), want code %q", what, err, cloudupload.ErrorCode(err), code)
	}
}

func wantNotHeld(t *testing.T, err error, what string) {
	t.Helper()
	if !errors.Is(err, backend.ErrNotHeld) {
		t.Fatalf("%s: error %v, want one wrapping backend.ErrNotHeld", what, err)
	}
}

func wantData(t *testing.T, s backend.Store, id int64) {
	t.Helper()
	got, err := s.Data(ctx, id)
	if err != nil {
		t.Fatalf("data of job %d: %v", id, err)
	}
	if string(got) != string(dataOf(id)) {
		t.Fatalf("data of job %d is %q, want %q", id, got, dataOf(id))
	}
}

// NextID: positive, unique and increasing for each caller under
// concurrency, and greater than every id given before a restart.
func testIDs(t *testing.T, e *env) {
	s := e.node("a", longLease)
	max := nextIDs(t, []*handle{s}, 8, 25)
	s = e.reopen(s)
	id, err := s.NextID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id <= max {
		t.Fatalf("after a restart NextID gave %d, not greater than %d given before", id, max)
	}
}

// nextIDs calls NextID n times in each of workers goroutines spread over
// the stores, checks the ids, and returns the greatest.
func nextIDs(t *testing.T, stores []*handle, workers, n int) int64 {
	t.Helper()
	got := make([][]int64, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				id, err := stores[w%len(stores)].NextID(ctx)
				if err != nil {
					t.Errorf("next id: %v", err)
					return
				}
				got[w] = append(got[w], id)
			}
		}()
	}
	wg.Wait()
	seen := map[int64]bool{}
	var max int64
	for w, list := range got {
		for i, id := range list {
			if id <= 0 {
				t.Fatalf("NextID gave %d", id)
			} else if seen[id] {
				t.Fatalf("NextID gave %d twice", id)
			} else if i > 0 && id <= list[i-1] {
				t.Fatalf("NextID gave %d after %d to the same caller %d", id, list[i-1], w)
			}
			seen[id] = true
			max = maxOf(max, id)
		}
	}
	if len(seen) != workers*n {
		t.Fatalf("%d ids, want %d", len(seen), workers*n)
	}
	return max
}

func maxOf(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// Create, Get, List and Data return what was recorded; List keeps the
// order asked and skips unknown ids; unknown ids are ENOTFOUND.
func testCreateGetList(t *testing.T, e *env) {
	s := e.node("a", longLease)
	a, b, c := create(t, s, "alice"), create(t, s, "bob"), create(t, s, "carol")
	c.Rate, c.BytesDone, c.BytesTotal, c.Progress = 1.5e6, 1<<20, 1<<30, "0"
	c = update(t, s, c, cloudupload.StateReceiving)
	for _, j := range []cloudupload.Job{a, b, c} {
		wantJob(t, get(t, s, j.ID), j)
		wantData(t, s, j.ID)
	}
	all, err := s.List(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantJobs(t, "List(nil)", all, []cloudupload.Job{a, b, c})
	some, err := s.List(ctx, []int64{c.ID, c.ID + 1000, a.ID})
	if err != nil {
		t.Fatal(err)
	}
	wantJobs(t, "List(c, unknown, a)", some, []cloudupload.Job{c, a})
	none, err := s.List(ctx, []int64{c.ID + 1000})
	if err != nil || len(none) != 0 {
		t.Fatalf("List(unknown) = %v, %v; want nothing", ids(none), err)
	}
	_, err = s.Get(ctx, c.ID+1000)
	wantCode(t, err, cloudupload.ENOTFOUND, "Get(unknown)")
	_, err = s.Data(ctx, c.ID+1000)
	wantCode(t, err, cloudupload.ENOTFOUND, "Data(unknown)")
}

// Updates are kept over a restart.
func testUpdatePersists(t *testing.T, e *env) {
	s := e.node("a", longLease)
	j := create(t, s, "alice")
	j.Pid, j.PidStart, j.Size = 4242, 987654, 1<<33
	j = update(t, s, j, cloudupload.StateReceiving)
	j = update(t, s, j, cloudupload.StateScheduled)
	s = e.reopen(s)
	wantJob(t, get(t, s, j.ID), j)
	wantData(t, s, j.ID)
}

// Update of a job that does not exist is ENOTFOUND and creates nothing.
func testUpdateUnknown(t *testing.T, e *env) {
	s := e.node("a", longLease)
	j := job("alice")
	j.ID = 77
	wantCode(t, s.Update(ctx, j), cloudupload.ENOTFOUND, "Update(unknown)")
	_, err := s.Get(ctx, 77)
	wantCode(t, err, cloudupload.ENOTFOUND, "Get after Update(unknown)")
}

// A final job loses its target data, also over a restart, keeps its
// record, and does not change any more.
func testFinalDropsData(t *testing.T, e *env) {
	s := e.node("a", longLease)
	ok := update(t, s, update(t, s, update(t, s, update(t, s, create(t, s, "alice"),
		cloudupload.StateReceiving), cloudupload.StateScheduled), cloudupload.StateUploading), cloudupload.StateSucceeded)
	failed := update(t, s, create(t, s, "bob"), cloudupload.StateFailed)
	for _, j := range []cloudupload.Job{ok, failed} {
		_, err := s.Data(ctx, j.ID)
		wantCode(t, err, cloudupload.ENOTFOUND, fmt.Sprintf("Data of %s job", j.State))
	}
	again := ok
	again.State, again.Details = cloudupload.StateFailed, "changed after the end"
	wantCode(t, s.Update(ctx, again), cloudupload.ECONFLICT, "Update of a final job")
	s = e.reopen(s)
	for _, j := range []cloudupload.Job{ok, failed} {
		wantJob(t, get(t, s, j.ID), j)
		_, err := s.Data(ctx, j.ID)
		wantCode(t, err, cloudupload.ENOTFOUND, fmt.Sprintf("Data of %s job after a restart", j.State))
	}
}

// Remove deletes a final job's record, also over a restart; removing an
// unknown job is no error.
func testRemove(t *testing.T, e *env) {
	s := e.node("a", longLease)
	gone := update(t, s, create(t, s, "alice"), cloudupload.StateFailed)
	kept := create(t, s, "bob")
	if err := s.Remove(ctx, gone.ID); err != nil {
		t.Fatalf("remove: %v", err)
	}
	_, err := s.Get(ctx, gone.ID)
	wantCode(t, err, cloudupload.ENOTFOUND, "Get after Remove")
	if err := s.Remove(ctx, gone.ID); err != nil {
		t.Fatalf("remove again: %v", err)
	}
	if err := s.Remove(ctx, 9999); err != nil {
		t.Fatalf("remove an unknown job: %v", err)
	}
	s = e.reopen(s)
	all, err := s.List(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantJobs(t, "List after Remove and a restart", all, []cloudupload.Job{kept})
}

// Load after a restart: every job with a disk store, the node's unfinished
// jobs with a shared one.
func testLoad(t *testing.T, e *env) {
	s := e.node("a", longLease)
	if len(s.loaded) != 0 {
		t.Fatalf("Load of an empty store gave %v", ids(s.loaded))
	}
	created := create(t, s, "alice")
	receiving := update(t, s, create(t, s, "alice"), cloudupload.StateReceiving)
	scheduled := update(t, s, receiving, cloudupload.StateScheduled)
	receiving = update(t, s, create(t, s, "bob"), cloudupload.StateReceiving)
	uploading := update(t, s, update(t, s, create(t, s, "bob"), cloudupload.StateScheduled), cloudupload.StateUploading)
	failed := update(t, s, create(t, s, "carol"), cloudupload.StateFailed)
	succeeded := update(t, s, update(t, s, update(t, s, create(t, s, "carol"), cloudupload.StateScheduled),
		cloudupload.StateUploading), cloudupload.StateSucceeded)
	s = e.reopen(s)
	want := []cloudupload.Job{created, scheduled, receiving, uploading, failed, succeeded}
	if e.shared {
		want = []cloudupload.Job{created, scheduled, receiving, uploading}
	}
	wantJobs(t, "Load after a restart", byID(s.loaded), byID(want))
}

// slots counts the uploading jobs from the store's own records and checks
// them against limits; it returns how many there are in all.
func slots(t *testing.T, s backend.Store, limits backend.Limits, holder func(id int64) string) int {
	t.Helper()
	all, err := s.List(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, perUser, perNode := 0, map[string]int{}, map[string]int{}
	for _, j := range all {
		if j.State != cloudupload.StateUploading {
			continue
		}
		n++
		perUser[j.SlotKey()]++
		if holder != nil {
			perNode[holder(j.ID)]++
		}
	}
	if n > limits.Max {
		t.Fatalf("%d jobs uploading, over the limit of %d", n, limits.Max)
	}
	for u, k := range perUser {
		if k > limits.PerUser {
			t.Fatalf("%d jobs of %s uploading, over the limit of %d per user", k, u, limits.PerUser)
		}
	}
	for node, k := range perNode {
		if limits.Node > 0 && k > limits.Node {
			t.Fatalf("%d jobs uploading on node %s, over its limit of %d", k, node, limits.Node)
		}
	}
	return n
}

// scheduledJobs creates n scheduled jobs of users u0..u(users-1), the i-th
// on stores[i%len(stores)].
func scheduledJobs(t *testing.T, stores []*handle, n, users int) []cloudupload.Job {
	t.Helper()
	var jobs []cloudupload.Job
	for i := range n {
		s := stores[i%len(stores)]
		jobs = append(jobs, update(t, s, create(t, s, fmt.Sprintf("u%d", i%users)), cloudupload.StateScheduled))
	}
	return jobs
}

// claimAll claims every job at once, each on stores[i%len(stores)], and
// returns how many claims succeeded.
func claimAll(t *testing.T, stores []*handle, jobs []cloudupload.Job, limits backend.Limits) int {
	t.Helper()
	var won atomic.Int32
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j.State, j.Started, j.Pid = cloudupload.StateUploading, time.Now().Unix(), 1000+i
			ok, err := stores[i%len(stores)].Claim(ctx, j, limits)
			if err != nil {
				t.Errorf("claim job %d: %v", j.ID, err)
			} else if ok {
				won.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(won.Load())
}

// Claim never exceeds Max and PerUser under 40 concurrent claimers, writes
// nothing when no slot is free, and a final job frees its slot.
func testClaimLimits(t *testing.T, e *env) {
	claimLimits(t, []*handle{e.node("a", longLease)}, 40, backend.Limits{Max: 5, PerUser: 2}, nil)
}

// claimLimits runs rounds of n claimers at once, spread over the stores,
// on new scheduled jobs of 8 users: each round must fill the limit exactly
// (8 users can), and the uploads are then ended for the next round. A race
// in a store's slot accounting shows as a round over the limit. Then it
// checks that a claim with every slot taken writes nothing, and that a job
// becoming final frees its slot.
func claimLimits(t *testing.T, stores []*handle, n int, limits backend.Limits, holder func(int64) string) {
	t.Helper()
	s := stores[0]
	holders := map[int64]*handle{}
	holderOf := func(j cloudupload.Job) *handle {
		if h := holders[j.ID]; h != nil {
			return h
		}
		t.Fatalf("job %d is not one of the test's", j.ID)
		return nil
	}
	const rounds = 4
	var waiting, running []cloudupload.Job
	for round := range rounds {
		jobs := scheduledJobs(t, stores, n, 8)
		for i, j := range jobs {
			holders[j.ID] = stores[i%len(stores)]
		}
		if won := claimAll(t, stores, jobs, limits); won != limits.Max {
			t.Fatalf("round %d: %d claims succeeded, want %d (the limit; 8 users could fill it)", round, won, limits.Max)
		}
		if k := slots(t, s, limits, holder); k != limits.Max {
			t.Fatalf("round %d: %d jobs uploading after %d successful claims", round, k, limits.Max)
		}
		all, err := s.List(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		waiting, running = nil, nil
		for _, j := range all {
			switch j.State {
			case cloudupload.StateScheduled:
				waiting = append(waiting, j)
			case cloudupload.StateUploading:
				running = append(running, j)
			}
		}
		if round < rounds-1 {
			for _, j := range running {
				update(t, holderOf(j), j, cloudupload.StateSucceeded)
			}
		}
	}
	// Full: a claim reports false and writes nothing.
	next := waiting[0]
	claim := next
	claim.State, claim.Details = cloudupload.StateUploading, "claimed when full"
	if ok, err := holderOf(next).Claim(ctx, claim, limits); err != nil || ok {
		t.Fatalf("claim with every slot taken: %v, %v; want false", ok, err)
	}
	wantJob(t, get(t, s, next.ID), next)
	// A final job frees its slot, for a job of another user.
	done := update(t, holderOf(running[0]), running[0], cloudupload.StateSucceeded)
	perUser := map[string]int{}
	for _, j := range running[1:] {
		perUser[j.User]++
	}
	for _, j := range waiting {
		if perUser[j.User] < limits.PerUser {
			next = j
			break
		}
	}
	claim = next
	claim.State = cloudupload.StateUploading
	if ok, err := holderOf(next).Claim(ctx, claim, limits); err != nil || !ok {
		t.Fatalf("claim after job %d ended: %v, %v; want true", done.ID, ok, err)
	}
	wantJob(t, get(t, s, next.ID), claim)
	slots(t, s, limits, holder)
}
