package pgstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations are the schema, one step per version: migrations[0] is
// version 1. Append; never change a step that has shipped.
var migrations = []string{
	`CREATE TABLE nodes (
		name    text PRIMARY KEY,
		url     text NOT NULL,
		gen     bigint NOT NULL,
		expires timestamptz NOT NULL
	);
	CREATE SEQUENCE job_ids AS bigint;
	CREATE TABLE jobs (
		id       bigint PRIMARY KEY,
		state    text NOT NULL,
		slot_key text NOT NULL,
		node     text REFERENCES nodes (name),
		doc      jsonb NOT NULL,
		data     bytea,
		created  timestamptz NOT NULL DEFAULT now(),
		updated  timestamptz NOT NULL DEFAULT now()
	);
	CREATE INDEX jobs_uploading ON jobs (slot_key, node) WHERE state = 'uploading';
	CREATE INDEX jobs_unfinished ON jobs (node) WHERE state NOT IN ('succeeded', 'failed');
	CREATE TABLE job_logs (
		id  bigint PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
		log bytea NOT NULL
	);`,
}

// migrateLock is the advisory lock key held while migrating ("cloudupm").
const migrateLock = 0x636c6f756475706d

// migrate brings the schema up to date and returns its version. Nodes
// starting at once wait for each other on the advisory lock.
func migrate(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(migrateLock)); err != nil {
		return 0, fmt.Errorf("lock for migration: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(migrateLock))
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version int PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())`); err != nil {
		return 0, fmt.Errorf("create schema_migrations: %w", err)
	}
	var version int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&version); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if version > len(migrations) {
		return version, fmt.Errorf("the database's schema is version %d, newer than this program's %d: upgrade cloudupload", version, len(migrations))
	}
	for v := version + 1; v <= len(migrations); v++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, migrations[v-1]); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version) VALUES ($1)", v)
			return err
		})
		if err != nil {
			return version, fmt.Errorf("migrate the schema to version %d: %w", v, err)
		}
		version = v
	}
	return version, nil
}
