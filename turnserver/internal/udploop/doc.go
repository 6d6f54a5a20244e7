// Package udploop serves one UDP listener socket and any number of other UDP sockets from a
// single epoll set and goroutine, reading and writing in batches with recvmmsg/sendmmsg, the
// way coturn's event loops do, instead of a read loop per socket. It knows nothing of TURN: a
// Handler decides, per datagram, whether to answer on the listener socket (queued and sent
// in one sendmmsg per round), to send elsewhere, or to copy the datagram out for slower code.
//
// It exists on Linux only (epoll, recvmmsg, sendmmsg, raw socket descriptors); Supported
// reports whether it is built in, and callers fall back to net.PacketConn elsewhere.
package udploop
