// Package storetest is the conformance suite of backend.Store: every store
// (the state directory on disk, PostgreSQL) runs Run against a real backing
// store and must pass every test, which check the sentences of the
// interface's contract one by one: ids, round trips, persistence over a
// restart (a reopen after Close), dropped target data, slot limits under
// concurrent claimers. A store that is a backend.SharedStore also runs the
// tests of several nodes on one backing store: cluster-wide slot limits,
// the node limit, leases, fencing, take-over, logs and import.
//
// Wiring a store is a few lines:
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) storetest.Open {
//			dir := t.TempDir() // or a new database
//			return func(n storetest.Node) (backend.Store, error) { return open(dir, n) }
//		})
//	}
//
// Only test code imports this package.
package storetest
