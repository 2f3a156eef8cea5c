package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/backend"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// claimLock is the advisory lock key that serializes Claim ("cloudupc").
const claimLock = 0x636c6f7564757063

// Load returns the unfinished jobs this node holds, by id.
func (s *Store) Load(ctx context.Context) ([]cloudupload.Job, error) {
	jobs, err := s.query(ctx, `SELECT doc FROM jobs WHERE node = $1 AND `+unfinished+` ORDER BY id`, s.node.Name)
	if err != nil {
		return nil, s.fail(err, "load the jobs of node %s", s.node.Name)
	}
	return jobs, nil
}

// NextID takes the next value of the id sequence.
func (s *Store) NextID(ctx context.Context) (int64, error) {
	var id int64
	if err := s.pool.QueryRow(ctx, "SELECT nextval('job_ids')").Scan(&id); err != nil {
		return 0, s.fail(err, "next job id")
	}
	return id, nil
}

// Create inserts job j held by this node, if its lease is live.
func (s *Store) Create(ctx context.Context, j cloudupload.Job, data []byte) error {
	if err := s.insert(ctx, s.pool, j, data); err != nil {
		return s.fail(err, "create job %d", j.ID)
	}
	return nil
}

// insert writes a new job row, fenced.
func (s *Store) insert(ctx context.Context, q querier, j cloudupload.Job, data []byte) error {
	if err := s.writable(j.ID); err != nil {
		return err
	}
	doc, err := encode(j)
	if err != nil {
		return err
	}
	var sealed []byte
	if !j.State.Final() {
		sealed = s.seal(j.ID, data)
	}
	tag, err := q.Exec(ctx, `INSERT INTO jobs (id, state, slot_key, node, doc, data)
		SELECT @id, @state, @slot, @node, @doc, @data WHERE `+fence,
		s.args(pgx.NamedArgs{"id": j.ID, "state": j.State, "slot": j.SlotKey(), "doc": doc, "data": sealed}))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" { // unique_violation
		return cloudupload.Errorf(cloudupload.ECONFLICT, "job %d exists already", j.ID)
	} else if err != nil {
		return err
	} else if tag.RowsAffected() == 0 {
		return s.notHeld(j.ID)
	}
	return nil
}

// encode checks j and returns its JSON document.
func encode(j cloudupload.Job) ([]byte, error) {
	if j.ID <= 0 {
		return nil, cloudupload.Errorf(cloudupload.EINVALID, "job id %d is not positive", j.ID)
	}
	if !j.State.Valid() {
		return nil, cloudupload.Errorf(cloudupload.EINVALID, "job %d: unknown state %q", j.ID, j.State)
	}
	return json.Marshal(j)
}

// update is the fenced update of a job's record, in Update and Claim.
const update = `UPDATE jobs SET state = @state, slot_key = @slot, doc = @doc, updated = now(),
	data = CASE WHEN @final THEN NULL ELSE data END
	WHERE id = @id AND node = @node AND ` + unfinished + ` AND ` + fence

func (s *Store) updateArgs(j cloudupload.Job) (pgx.NamedArgs, error) {
	doc, err := encode(j)
	if err != nil {
		return nil, err
	}
	return s.args(pgx.NamedArgs{"id": j.ID, "state": j.State, "slot": j.SlotKey(), "doc": doc, "final": j.State.Final()}), nil
}

// Update records j if this node holds it with a live lease.
func (s *Store) Update(ctx context.Context, j cloudupload.Job) error {
	err := s.writable(j.ID)
	var args pgx.NamedArgs
	if err == nil {
		args, err = s.updateArgs(j)
	}
	if err == nil {
		var tag pgconn.CommandTag
		if tag, err = s.pool.Exec(ctx, update, args); err == nil && tag.RowsAffected() == 0 {
			err = s.missed(ctx, s.pool, j.ID)
		}
	}
	if err != nil {
		return s.fail(err, "update job %d", j.ID)
	}
	return nil
}

// claim is Claim's statement: it counts the uploading jobs other than j
// (in all, with j's slot key, on this node) and makes the fenced update
// only when a slot is free. It reports whether a slot was free and whether
// the job was claimed.
const claim = `WITH counts AS (
		SELECT count(*) AS total, count(*) FILTER (WHERE slot_key = @slot) AS by_key,
			count(*) FILTER (WHERE node = @node) AS on_node
		FROM jobs WHERE state = 'uploading' AND id <> @id),
	free AS (
		SELECT total < @max AND by_key < @per_key AND (@node_max = 0 OR on_node < @node_max) AS free FROM counts),
	claimed AS (
		UPDATE jobs SET state = @state, slot_key = @slot, doc = @doc, updated = now()
		WHERE id = @id AND node = @node AND ` + unfinished + ` AND ` + fence + ` AND (SELECT free FROM free)
		RETURNING id)
	SELECT (SELECT free FROM free), EXISTS (SELECT 1 FROM claimed)`

// Claim records j as uploading if a slot is free in the cluster, for its
// slot key and on this node. One batch, one round trip: the batch is an
// implicit transaction whose first statement takes an advisory lock held
// until it commits, so claims run one after the other, and each counts
// with a snapshot taken after the claims before it committed.
func (s *Store) Claim(ctx context.Context, j cloudupload.Job, limits backend.Limits) (bool, error) {
	var free, claimed bool
	err := s.writable(j.ID)
	var args pgx.NamedArgs
	if err == nil {
		args, err = s.updateArgs(j)
	}
	if err == nil {
		args["max"], args["per_key"], args["node_max"] = limits.Max, limits.PerUser, limits.Node
		b := &pgx.Batch{}
		b.Queue("SELECT pg_advisory_xact_lock($1)", int64(claimLock))
		b.Queue(claim, args).QueryRow(func(row pgx.Row) error { return row.Scan(&free, &claimed) })
		err = s.pool.SendBatch(ctx, b).Close()
	}
	if err == nil && free && !claimed {
		err = s.missed(ctx, s.pool, j.ID)
	}
	if err != nil {
		return false, s.fail(err, "claim an upload slot for job %d", j.ID)
	}
	return claimed, nil
}

// Data opens the sealed target data of unfinished job id.
func (s *Store) Data(ctx context.Context, id int64) ([]byte, error) {
	var sealed []byte
	err := s.pool.QueryRow(ctx, `SELECT data FROM jobs WHERE id = $1 AND `+unfinished+` AND data IS NOT NULL`, id).Scan(&sealed)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound(id)
	} else if err != nil {
		return nil, s.fail(err, "read the target data of job %d", id)
	}
	return s.open(id, sealed)
}

// Get returns job id.
func (s *Store) Get(ctx context.Context, id int64) (cloudupload.Job, error) {
	jobs, err := s.query(ctx, "SELECT doc FROM jobs WHERE id = $1", id)
	if err != nil {
		return cloudupload.Job{}, s.fail(err, "get job %d", id)
	} else if len(jobs) == 0 {
		return cloudupload.Job{}, notFound(id)
	}
	return jobs[0], nil
}

// List returns the jobs with these ids in that order, or all by id.
func (s *Store) List(ctx context.Context, ids []int64) ([]cloudupload.Job, error) {
	if ids == nil {
		jobs, err := s.query(ctx, "SELECT doc FROM jobs ORDER BY id")
		if err != nil {
			return nil, s.fail(err, "list jobs")
		}
		return jobs, nil
	}
	found, err := s.query(ctx, "SELECT doc FROM jobs WHERE id = ANY($1)", ids)
	if err != nil {
		return nil, s.fail(err, "list %d jobs", len(ids))
	}
	byID := make(map[int64]cloudupload.Job, len(found))
	for _, j := range found {
		byID[j.ID] = j
	}
	jobs := make([]cloudupload.Job, 0, len(found))
	for _, id := range ids {
		if j, ok := byID[id]; ok {
			jobs = append(jobs, j)
		}
	}
	return jobs, nil
}

// query returns the jobs whose documents sql selects.
func (s *Store) query(ctx context.Context, sql string, args ...any) ([]cloudupload.Job, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (cloudupload.Job, error) {
		var doc []byte
		var j cloudupload.Job
		if err := row.Scan(&doc); err != nil {
			return j, err
		}
		if err := json.Unmarshal(doc, &j); err != nil {
			return j, fmt.Errorf("decode a job document: %w", err)
		}
		return j, nil
	})
}

// Remove deletes a final job (and its log), or an unfinished one this node
// holds.
func (s *Store) Remove(ctx context.Context, id int64) error {
	err := s.writable(id)
	if err == nil {
		var tag pgconn.CommandTag
		tag, err = s.pool.Exec(ctx, `DELETE FROM jobs WHERE id = @id AND (NOT (`+unfinished+`) OR (node = @node AND `+fence+`))`,
			s.args(pgx.NamedArgs{"id": id}))
		if err == nil && tag.RowsAffected() == 0 {
			if err = s.missed(ctx, s.pool, id); cloudupload.ErrorCode(err) == cloudupload.ENOTFOUND {
				err = nil
			}
		}
	}
	if err != nil {
		return s.fail(err, "remove job %d", id)
	}
	return nil
}

// Renew extends the lease of this node's generation while it is live.
func (s *Store) Renew(ctx context.Context) error {
	if s.lost.Load() {
		return s.fail(backend.ErrNotHeld, "renew the lease of node %s", s.node.Name)
	}
	tag, err := s.pool.Exec(ctx, `UPDATE nodes SET expires = now() + $3::interval WHERE name = $1 AND gen = $2 AND expires > now()`,
		s.node.Name, s.gen, s.lease)
	if err != nil {
		return s.fail(err, "renew the lease of node %s", s.node.Name)
	} else if tag.RowsAffected() == 0 {
		s.lost.Store(true)
		why := s.whyLost(ctx)
		s.log.Error("this node lost its lease: it writes nothing more until it starts again",
			"node", s.node.Name, "generation", s.gen, "why", why)
		return s.fail(backend.ErrNotHeld, "renew the lease of node %s (generation %d): %s", s.node.Name, s.gen, why)
	}
	return nil
}

// whyLost says why this node's lease cannot be renewed.
func (s *Store) whyLost(ctx context.Context) string {
	var gen int64
	if err := s.pool.QueryRow(ctx, "SELECT gen FROM nodes WHERE name = $1", s.node.Name).Scan(&gen); err != nil {
		return "its lease ran out"
	} else if gen != s.gen {
		return fmt.Sprintf("another process opened the store as node %s (generation %d): are two servers started with the same node name?", s.node.Name, gen)
	}
	return "its lease ran out"
}

// TakeOver moves the unfinished jobs of nodes whose lease ran out more than
// grace ago to this node.
func (s *Store) TakeOver(ctx context.Context, grace time.Duration) ([]backend.TakenJob, error) {
	var taken []backend.TakenJob
	err := s.writable(0)
	if err == nil {
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			taken = nil
			var live bool
			if err := tx.QueryRow(ctx, "SELECT "+fence, s.args(pgx.NamedArgs{})).Scan(&live); err != nil {
				return err
			} else if !live {
				return fmt.Errorf("node %s: %w", s.node.Name, backend.ErrNotHeld)
			}
			rows, err := tx.Query(ctx, `SELECT name FROM nodes WHERE expires < now() - @grace::interval AND name <> @node
				AND EXISTS (SELECT 1 FROM jobs WHERE jobs.node = nodes.name AND `+unfinished+`)
				ORDER BY name FOR UPDATE SKIP LOCKED`, s.args(pgx.NamedArgs{"grace": grace}))
			if err != nil {
				return err
			}
			lost, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil || len(lost) == 0 {
				return err
			}
			rows, err = tx.Query(ctx, `WITH moved AS (
					SELECT id, node FROM jobs WHERE node = ANY(@lost) AND `+unfinished+` FOR UPDATE)
				UPDATE jobs SET node = @node, updated = now() FROM moved WHERE jobs.id = moved.id
				RETURNING moved.node, jobs.doc`, s.args(pgx.NamedArgs{"lost": lost}))
			if err != nil {
				return err
			}
			taken, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (backend.TakenJob, error) {
				var t backend.TakenJob
				var doc []byte
				if err := row.Scan(&t.From, &doc); err != nil {
					return t, err
				}
				return t, json.Unmarshal(doc, &t.Job)
			})
			return err
		})
	}
	if err != nil {
		return nil, s.fail(err, "take over the jobs of lost nodes")
	}
	sort.Slice(taken, func(i, k int) bool { return taken[i].Job.ID < taken[k].Job.ID })
	for _, t := range taken {
		s.log.Warn("took over a job of a lost node", "job", t.Job.ID, "from", t.From, "node", s.node.Name, "state", t.Job.State)
	}
	return taken, nil
}

// Steal moves to this node the oldest scheduled fetch jobs of other live
// nodes that waited longer than wait.
func (s *Store) Steal(ctx context.Context, n int, wait time.Duration, limits backend.Limits) ([]backend.TakenJob, error) {
	if n <= 0 {
		return nil, nil
	}
	var moved []backend.TakenJob
	err := s.writable(0)
	if err == nil {
		rows, qerr := s.pool.Query(ctx, `WITH moved AS (
				SELECT j.id, j.node FROM jobs j JOIN nodes o ON o.name = j.node
				WHERE j.state = 'scheduled' AND j.doc->>'origin' = 'fetch' AND j.node <> @node
					AND o.expires > now() AND j.updated < now() - @wait::interval
					AND (SELECT count(*) FROM jobs WHERE state = 'uploading') < @max
					AND (SELECT count(*) FROM jobs u WHERE u.state = 'uploading' AND u.slot_key = j.slot_key) < @per_key
				ORDER BY j.id LIMIT @n FOR UPDATE OF j SKIP LOCKED)
			UPDATE jobs SET node = @node, updated = now() FROM moved
			WHERE jobs.id = moved.id AND `+fence+`
			RETURNING moved.node, jobs.doc`, s.args(pgx.NamedArgs{"n": n, "wait": wait, "max": limits.Max, "per_key": limits.PerUser}))
		if qerr == nil {
			moved, qerr = pgx.CollectRows(rows, func(row pgx.CollectableRow) (backend.TakenJob, error) {
				var t backend.TakenJob
				var doc []byte
				if err := row.Scan(&t.From, &doc); err != nil {
					return t, err
				}
				return t, json.Unmarshal(doc, &t.Job)
			})
		}
		err = qerr
	}
	if err != nil {
		return nil, s.fail(err, "take over waiting jobs of busy nodes")
	}
	sort.Slice(moved, func(i, k int) bool { return moved[i].Job.ID < moved[k].Job.ID })
	for _, t := range moved {
		s.log.Info("took a waiting job of a busy node", "job", t.Job.ID, "from", t.From, "node", s.node.Name)
	}
	return moved, nil
}

// Holder returns the node holding unfinished job id and whether its lease
// is live.
func (s *Store) Holder(ctx context.Context, id int64) (backend.NodeInfo, bool, bool, error) {
	var state string
	var name, url *string
	var live *bool
	err := s.pool.QueryRow(ctx, `SELECT j.state, j.node, n.url, n.expires > now()
		FROM jobs j LEFT JOIN nodes n ON n.name = j.node WHERE j.id = $1`, id).Scan(&state, &name, &url, &live)
	if errors.Is(err, pgx.ErrNoRows) {
		return backend.NodeInfo{}, false, false, notFound(id)
	} else if err != nil {
		return backend.NodeInfo{}, false, false, s.fail(err, "find the holder of job %d", id)
	}
	if cloudupload.State(state).Final() || name == nil || url == nil || live == nil {
		return backend.NodeInfo{}, false, false, nil
	}
	return backend.NodeInfo{Name: *name, URL: *url}, *live, true, nil
}

// SaveLog keeps the log of job id.
func (s *Store) SaveLog(ctx context.Context, id int64, log []byte) error {
	if err := s.saveLog(ctx, s.pool, id, log); err != nil {
		return s.fail(err, "save the log of job %d", id)
	}
	return nil
}

func (s *Store) saveLog(ctx context.Context, q querier, id int64, log []byte) error {
	if log == nil {
		log = []byte{}
	}
	_, err := q.Exec(ctx, `INSERT INTO job_logs (id, log) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET log = excluded.log`, id, log)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23503" { // foreign_key_violation: no such job
		return notFound(id)
	}
	return err
}

// Log returns the kept log of job id.
func (s *Store) Log(ctx context.Context, id int64) ([]byte, error) {
	var log []byte
	err := s.pool.QueryRow(ctx, "SELECT log FROM job_logs WHERE id = $1", id).Scan(&log)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, cloudupload.Errorf(cloudupload.ENOTFOUND, "no log kept for job %d", id)
	} else if err != nil {
		return nil, s.fail(err, "read the log of job %d", id)
	}
	return log, nil
}

// Import inserts j with its own id, held by this node, with its data and
// log, and moves the id sequence past j's id. Meant for moving a state
// directory into a database before nodes serve from it: an id that a node
// takes from the sequence at the same moment may collide, and then one of
// the two inserts fails.
func (s *Store) Import(ctx context.Context, j cloudupload.Job, data []byte, log []byte) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := s.insert(ctx, tx, j, data); err != nil {
			return err
		}
		if log != nil {
			if err := s.saveLog(ctx, tx, j.ID, log); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `SELECT setval('job_ids', $1) FROM job_ids
			WHERE $1 > CASE WHEN is_called THEN last_value ELSE last_value - 1 END`, j.ID)
		return err
	})
	if err != nil {
		return s.fail(err, "import job %d", j.ID)
	}
	return nil
}
