package backend

import (
	"context"
	"errors"
	"time"

	"github.com/cloudupload/cloudupload"
)

// Store keeps the job records of a Manager: every job's cloudupload.Job,
// the target data of unfinished jobs, and the job id sequence. The Manager
// writes each state change to its Store before it shows it or acts on it.
//
// Two implementations pass the one conformance suite in backend/storetest:
// the state directory on disk (the default, one node; see doc.go), and
// PostgreSQL (backend/pgstore), which several nodes share. The Manager
// keeps each job's local files (image, log, work directory, exit and result
// files) under its state directory with either store.
//
// Every method is safe for concurrent use. Errors are wrapped; a job that
// does not exist is a *cloudupload.Error ENOTFOUND.
type Store interface {
	// Load returns the jobs this node must know when it starts: with a
	// disk store every job, with a shared store the unfinished jobs this
	// node holds. It is called once, before any other method but Close.
	Load(ctx context.Context) ([]cloudupload.Job, error)

	// NextID reserves a new job id: positive, greater than every id given
	// before (also across restarts and nodes), never the same twice.
	NextID(ctx context.Context) (int64, error)

	// Create records the new job j (state created, an id from NextID) with
	// its target data, held by this node. The data is kept until the job is
	// final and is never returned by Get or List.
	Create(ctx context.Context, j cloudupload.Job, data []byte) error

	// Update records j as the new state of the job with j's id. The job must
	// exist (ENOTFOUND) and, in a shared store, be held by this node: when
	// another node has taken it over, nothing is written and the error
	// wraps ErrNotHeld. Once j is final the target data is dropped, and the
	// job does not change any more: Update of a final job is ECONFLICT.
	Update(ctx context.Context, j cloudupload.Job) error

	// Claim records j, a job that was scheduled and is now uploading, if an
	// upload slot is free: fewer than limits.Max jobs uploading in the whole
	// store and fewer than limits.PerUser with j's slot key
	// (cloudupload.Job.SlotKey), and, in a shared store, fewer than
	// limits.Node on this node. It reports false, writing nothing, when no
	// slot is free. Claims never exceed the limits, whatever runs at once.
	// In a shared store j must be held by this node, as for Update.
	Claim(ctx context.Context, j cloudupload.Job, limits Limits) (bool, error)

	// Data returns the target data of an unfinished job (ENOTFOUND when the
	// job does not exist or is final).
	Data(ctx context.Context, id int64) ([]byte, error)

	// Get returns the job with this id as last recorded.
	Get(ctx context.Context, id int64) (cloudupload.Job, error)

	// List returns the jobs with these ids in the order asked, skipping
	// unknown ids; nil returns every job in ascending id order.
	List(ctx context.Context, ids []int64) ([]cloudupload.Job, error)

	// Remove deletes the record of a final job (retention); removing an
	// unknown job is not an error.
	Remove(ctx context.Context, id int64) error

	// Close releases the store; the Manager calls it from its own Close.
	Close() error
}

// Limits are the upload slots Claim checks.
type Limits struct {
	Max     int // uploads at once in all (in a shared store, the whole cluster)
	PerUser int // uploads at once per slot key
	Node    int // uploads at once on this node (shared stores only); 0: no limit of its own
}

// ErrNotHeld is wrapped by a shared store's errors when this node no longer
// holds the job it writes (its lease expired and another node took it
// over). The node must stop working on the job and write nothing more.
var ErrNotHeld = errors.New("this node no longer holds the job")

// SharedStore is a Store several nodes use at once. A node holds a lease
// in it, renewed every LeaseDuration/3; the jobs of a node whose lease has
// run out are taken over by a live node.
type SharedStore interface {
	Store

	// Node is this node's name and advertised URL.
	Node() NodeInfo

	// Renew extends this node's lease. An error wrapping ErrNotHeld means
	// the lease ran out (another node may have taken over its jobs): the
	// node must stop every uploader it runs, write nothing more for those
	// jobs, and start again with Load.
	Renew(ctx context.Context) error

	// TakeOver hands this node the unfinished jobs of nodes whose lease ran
	// out more than grace ago, and returns them as recorded (the caller
	// decides, by origin and state, whether they run again or fail). Each
	// job is handed to one node only.
	TakeOver(ctx context.Context, grace time.Duration) ([]TakenJob, error)

	// Steal hands this node at most n scheduled jobs whose image comes
	// from the image source (Origin fetch), held by other live nodes and
	// scheduled for longer than wait, oldest first, each only while the
	// cluster has a slot free for it (limits.Max, limits.PerUser): they wait
	// for their own node's slots (limits.Node there), and a node with free
	// slots runs them (fetching the image again). Each job is handed to one
	// node; the old holder's writes to it are then refused (ErrNotHeld) and
	// Holder names the new one.
	Steal(ctx context.Context, n int, wait time.Duration, limits Limits) ([]TakenJob, error)

	// Holder returns the node holding unfinished job id, and whether its
	// lease is live; ok is false for final jobs, and a job that does not
	// exist is ENOTFOUND.
	Holder(ctx context.Context, id int64) (node NodeInfo, live bool, ok bool, err error)

	// SaveLog keeps the log of final job id where every node can read it;
	// Log returns it (ENOTFOUND when none was kept).
	SaveLog(ctx context.Context, id int64, log []byte) error
	Log(ctx context.Context, id int64) ([]byte, error)

	// Import records j as it is (any state, its own id, held by this node
	// when unfinished), for moving a state directory into the store; the id
	// sequence then continues past j's id. An existing id is an error.
	Import(ctx context.Context, j cloudupload.Job, data []byte, log []byte) error
}

// NodeInfo names a node of a cluster.
type NodeInfo struct {
	Name string // unique in the cluster (--node, default the host name)
	URL  string // how other nodes reach its API (--advertise-url)
}

// TakenJob is a job taken over from a lost node.
type TakenJob struct {
	Job  cloudupload.Job
	From string // the lost node's name
}
