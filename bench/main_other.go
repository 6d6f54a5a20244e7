//go:build !linux

// Command bench measures icehub side by side with coturn and socket.io. It drives real
// servers through Linux-only interfaces (recvmmsg, epoll, /proc), so it runs on Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "bench runs on Linux only (it uses recvmmsg, epoll and /proc)")
	os.Exit(2)
}
