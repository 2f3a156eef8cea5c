package cloudupload

import "fmt"

// State is where a job stands in its life:
//
//	created --> receiving --> scheduled --> uploading --> succeeded | failed
//
// Any unfinished state may end in failed (kill, fetch error, lost uploader).
type State string

const (
	StateCreated   State = "created"   // job exists, image not yet being received
	StateReceiving State = "receiving" // image being copied into the job
	StateScheduled State = "scheduled" // image complete, waiting for an upload slot
	StateUploading State = "uploading" // uploader process running
	StateSucceeded State = "succeeded" // final: details hold the uploader's result
	StateFailed    State = "failed"    // final: details say why
)

// States lists every state in life order.
var States = []State{StateCreated, StateReceiving, StateScheduled, StateUploading, StateSucceeded, StateFailed}

// transitions is the state machine: the states each state may move to.
var transitions = map[State][]State{
	StateCreated:   {StateReceiving, StateFailed},
	StateReceiving: {StateScheduled, StateFailed, StateReceiving}, // receiving→receiving: redone after a restart
	StateScheduled: {StateUploading, StateFailed},
	StateUploading: {StateSucceeded, StateFailed},
}

// Valid reports whether s is one of the known states.
func (s State) Valid() bool {
	for _, k := range States {
		if s == k {
			return true
		}
	}
	return false
}

// Final reports whether no transition leaves s.
func (s State) Final() bool { return s == StateSucceeded || s == StateFailed }

// CanMove reports whether the state machine allows from → to.
func CanMove(from, to State) bool {
	for _, t := range transitions[from] {
		if t == to {
			return true
		}
	}
	return false
}

// CheckMove returns an ECONFLICT error when from → to is not allowed.
func CheckMove(from, to State) error {
	if !CanMove(from, to) {
		return Errorf(ECONFLICT, "job is %s, cannot become %s", from, to)
	}
	return nil
}

// Origin says where a job's image comes from, so a restarted daemon knows
// whether it can fetch the image again.
type Origin string

const (
	OriginFetch Origin = "fetch" // fetched by the daemon from the build root or repository server
	OriginPut   Origin = "put"   // sent by an OBS source server with PUT /cloudupload/<id>
)

// Job is one upload. The first block of fields is OBS's public job document;
// the second is the daemon's own bookkeeping, stored on disk (job.json, with
// the JSON names below) but never shown to API clients.
type Job struct {
	ID         int64  `json:"id"`
	State      State  `json:"state"`
	Details    string `json:"details"`
	Progress   string `json:"progress"` // percentage, "" when unknown
	Created    int64  `json:"created"`  // unix seconds
	User       string `json:"user"`
	Target     string `json:"target"`
	Project    string `json:"project"`
	Repository string `json:"repository"`
	Package    string `json:"package"`
	Arch       string `json:"arch"`
	Filename   string `json:"filename"`
	Size       int64  `json:"size"`             // image size in bytes, 0 when unknown
	Pid        int    `json:"pid"`              // supervising process while receiving/uploading, 0 otherwise
	Client     string `json:"client,omitempty"` // the --clients entry that created the job, "" for the shared token or none; shown after OBS's elements

	// How far the job's image has come: received while receiving, processed
	// by the uploader while uploading (as it reports it; for disk images the
	// disk's bytes, zero blocks included). Progress above is its percentage.
	// Live values while the job runs; a final job keeps its last ones (a
	// succeeded one 100%) and ETA 0. Shown after OBS's fields.
	BytesDone  int64   `json:"bytes_done,omitempty"`
	BytesTotal int64   `json:"bytes_total,omitempty"` // 0 when unknown
	Rate       float64 `json:"bytes_per_second,omitempty"`
	ETA        int64   `json:"-"` // seconds left at Rate, 0 when unknown

	Origin   Origin `json:"origin"`
	PidStart uint64 `json:"pid_start"` // start time of Pid in clock ticks since boot (/proc/<pid>/stat field 22), to tell a recycled pid
	Updated  int64  `json:"updated"`   // unix seconds of the last state change
	Started  int64  `json:"started"`   // unix seconds the upload started, 0 before
	Finished int64  `json:"finished"`  // unix seconds the job became final, 0 before
}

// Name is the job's public name, its decimal id.
func (j *Job) Name() string { return fmt.Sprint(j.ID) }

// Slot key: uploads are limited per user.
func (j *Job) SlotKey() string { return j.User }
