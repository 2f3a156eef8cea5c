package testutil

import "net"

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, for
// a server a test starts that cannot listen on port 0 itself. Another
// process may take it first: retry the start on a new port when it fails.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
