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

// migrate brings the schema up to date in one transaction and returns its
// version. Nodes starting at once wait for each other on a
// transaction-level advisory lock (which also works through a pooler in
// transaction mode), then find the schema current.
func migrate(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	var version int
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrateLock)); err != nil {
			return fmt.Errorf("lock for migration: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version int PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&version); err != nil {
			return fmt.Errorf("read the schema version: %w", err)
		}
		if version > len(migrations) {
			return fmt.Errorf("the database's schema is version %d, newer than this program's %d: upgrade cloudupload", version, len(migrations))
		}
		for v := version + 1; v <= len(migrations); v++ {
			if _, err := tx.Exec(ctx, migrations[v-1]); err != nil {
				return fmt.Errorf("migrate the schema to version %d: %w", v, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version) VALUES ($1)", v); err != nil {
				return fmt.Errorf("record schema version %d: %w", v, err)
			}
		}
		return nil
	})
	if err != nil {
		return version, err
	}
	return len(migrations), nil
}
