// Package cli gives the project's commands (cloudupload-server,
// clouduploader, cloudupload-prune) one behaviour for their command line:
// -h or --help prints the usage to standard output and exits 0; a bad
// flag, argument or setting prints one line "<command>: <what is wrong>
// (see <command> --help)" to standard error and exits 2.
package cli
