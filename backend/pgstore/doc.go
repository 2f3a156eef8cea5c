// Package pgstore is the job store of a cluster: a backend.SharedStore on
// PostgreSQL (github.com/jackc/pgx/v5), so that several cloudupload-server
// nodes serve one queue. The state directory on disk stays the default
// store of a single node; each node keeps its jobs' local files (image, log
// while running, work directory) under its own state directory either way.
//
// # Schema
//
// Open applies the schema migrations (see migrations.go) in one transaction
// under an advisory lock, so nodes starting at once migrate once; the versions
// applied are in schema_migrations. A database with a newer schema than the
// program knows is refused.
//
//	nodes(name pk, url, gen, expires)   one row per node: its lease
//	jobs(id pk, state, slot_key, node, doc jsonb, data bytea, created, updated)
//	                                    doc is the whole cloudupload.Job as JSON;
//	                                    data the sealed target data, NULL once final
//	job_logs(id pk → jobs, log bytea)   logs of final jobs, readable by every node
//	job_ids                             the id sequence
//
// Partial indexes cover what Claim counts (uploading jobs by slot key and
// node) and what Load and TakeOver read (unfinished jobs by node).
//
// # Leases and fencing
//
// A node holds a lease: its nodes row, whose expires is set from the
// database's clock (now() + lease), never the nodes' own clocks. Open
// registers the node and starts a new generation (gen+1), so a store opened
// earlier under the same name writes nothing more. Renew extends the lease
// while it is live; once it has run out, Renew fails with
// backend.ErrNotHeld and the Store refuses every write until the node opens
// it again.
//
// Every write to a job is fenced: one statement that changes the row only
// if the job is held by this node (jobs.node) and this node's generation
// still holds a live lease. A node that lost its lease therefore writes
// nothing even if it does not know yet, and once another node has taken the
// job over the old holder's writes fail with backend.ErrNotHeld.
//
// TakeOver locks the rows of nodes whose lease ran out more than the grace
// ago with FOR UPDATE SKIP LOCKED and moves their unfinished jobs to the
// calling node in the same transaction: of several nodes taking over at
// once, each lost node's jobs go to exactly one.
//
// Claim serializes slot accounting with a transaction-level advisory lock,
// counts the uploading jobs (all, with the job's slot key, on this node)
// and makes the fenced update in the same transaction, so the limits hold
// for the whole cluster whatever runs at once.
//
// # Target data
//
// A job must be recoverable by another node when its node dies, so its
// target data (credentials and settings for the upload) lives where every
// node reads it: in the database, sealed with AES-256-GCM under
// Config.DataKey (a random nonce per write, the job id as additional data,
// so a sealed value moved to another job does not open). The key is derived
// from the server's private key, which every node of a cluster shares
// because OBS's frontend encrypts the target data to one public key; a
// database dump alone does not reveal the data. The data is dropped when
// the job becomes final.
//
// # Errors and secrets
//
// Errors are wrapped with what was being done; a job that does not exist
// is a *cloudupload.Error ENOTFOUND. The database URL's password never
// appears in an error or a log line. The connection pool is bounded
// (Config.MaxConns, default 8) and every call honours its context; when the
// database is unreachable calls fail and work again once it is back (the
// lease must be renewed before it runs out, or the node starts again).
package pgstore
