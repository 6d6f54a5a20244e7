package turnserver

import (
	"net/netip"
	"time"
)

// Two clients of one server often relay to each other through their own allocations: each
// has a permission for the other's relay address as it was advertised. Behind a 1:1 NAT that
// address is turn.public_ip, and a datagram sent to it leaves the host only to be dropped by
// a NAT that does not hairpin (most home routers, several clouds' defaults). So a datagram a
// relay would send to one of this server's own UDP relay addresses is handed to that relay
// inside the process instead, as if it had arrived from the sender's advertised address: the
// sender's peer check has passed (the own-relay exception, under deny_peers), and the
// receiving allocation applies its permissions and channels exactly as for any peer. It also
// saves two trips through the kernel and the NAT.

// ownRelayReceiver is a relay socket that can take a datagram from inside the process.
type ownRelayReceiver interface {
	receiveFromOwnRelay(payload []byte, from netip.AddrPort)
}

// deliverToOwnRelay hands payload to the relay of to, as sent by the relay advertised at from.
// It reports whether the relay was still there.
func deliverToOwnRelay(to *relayRecord, payload []byte, from netip.AddrPort) bool {
	r, ok := to.conn.(ownRelayReceiver)
	if !ok {
		return false
	}
	r.receiveFromOwnRelay(payload, from)
	return true
}

// wakeReader makes a read blocked on a relay socket return (with a timeout error), so that it
// looks at what was handed over meanwhile; the reader clears the deadline again.
var wakeReader = time.Unix(1, 0)
