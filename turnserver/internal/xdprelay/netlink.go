//go:build linux

package xdprelay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rtnl is one NETLINK_ROUTE socket, opened by Open. A netlink socket answers for the
// network namespace it was created in, so every later question (from whatever thread the
// caller's goroutines run on) is about the namespace the offload is attached in.
type rtnl struct {
	mu  sync.Mutex
	fd  int
	seq uint32
	buf []byte
}

func openRtnl() (*rtnl, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	// A kernel that never answers must not hang Bind or the refresher.
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return &rtnl{fd: fd, buf: make([]byte, 1<<16)}, nil
}

func (r *rtnl) close() { unix.Close(r.fd) }

// request sends one message and collects the answers: up to NLMSG_DONE for a dump, the
// single answer otherwise. A netlink error answer becomes the error.
func (r *rtnl) request(typ uint16, dump bool, body []byte) ([]syscall.NetlinkMessage, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	flags := uint16(unix.NLM_F_REQUEST)
	if dump {
		flags |= unix.NLM_F_DUMP
	}
	msg := make([]byte, unix.NLMSG_HDRLEN+len(body))
	binary.NativeEndian.PutUint32(msg[0:4], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:6], typ)
	binary.NativeEndian.PutUint16(msg[6:8], flags)
	binary.NativeEndian.PutUint32(msg[8:12], r.seq)
	copy(msg[unix.NLMSG_HDRLEN:], body)
	if err := unix.Sendto(r.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("netlink send: %w", err)
	}
	var out []syscall.NetlinkMessage
	for {
		n, _, err := unix.Recvfrom(r.fd, r.buf, 0)
		if err != nil {
			return nil, fmt.Errorf("netlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(r.buf[:n])
		if err != nil {
			return nil, fmt.Errorf("netlink parse: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != r.seq {
				continue // a late answer to an earlier request that timed out
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
						return nil, unix.Errno(-code)
					}
				}
				return out, nil // an ACK
			}
			// Keep a copy: the next Recvfrom reuses the buffer.
			m.Data = append([]byte(nil), m.Data...)
			out = append(out, m)
			if !dump {
				return out, nil
			}
		}
	}
}

// attrs splits rtnetlink attributes (4-byte aligned type-length-value) into a map.
func attrs(b []byte) map[uint16][]byte {
	out := map[uint16][]byte{}
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		t := binary.NativeEndian.Uint16(b[2:4]) & 0x3fff // strip NLA_F_NESTED / BYTEORDER
		if l < 4 || l > len(b) {
			break
		}
		out[t] = b[4:l]
		b = b[min((l+3)&^3, len(b)):]
	}
	return out
}

func attr(t uint16, v []byte) []byte {
	b := make([]byte, (4+len(v)+3)&^3)
	binary.NativeEndian.PutUint16(b[0:2], uint16(4+len(v)))
	binary.NativeEndian.PutUint16(b[2:4], t)
	copy(b[4:], v)
	return b
}

func family(a netip.Addr) uint8 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// route is what `ip route get DST from SRC` says: the output interface and, for a
// destination behind a router, the gateway whose MAC the frame carries.
type route struct {
	oif int
	hop netip.Addr // the gateway, or dst itself when on-link
}

var errNotUnicast = errors.New("not a unicast route")

func (r *rtnl) routeGet(src, dst netip.Addr) (route, error) {
	bits := uint8(dst.BitLen())
	rtm := unix.RtMsg{Family: family(dst), Dst_len: bits, Src_len: bits}
	body := append((*[unix.SizeofRtMsg]byte)(unsafe.Pointer(&rtm))[:], attr(unix.RTA_DST, dst.AsSlice())...)
	body = append(body, attr(unix.RTA_SRC, src.AsSlice())...)
	msgs, err := r.request(unix.RTM_GETROUTE, false, body)
	if err != nil {
		return route{}, fmt.Errorf("route to %v from %v: %w", dst, src, err)
	}
	if len(msgs) == 0 || len(msgs[0].Data) < unix.SizeofRtMsg {
		return route{}, fmt.Errorf("route to %v: empty answer", dst)
	}
	got := (*unix.RtMsg)(unsafe.Pointer(&msgs[0].Data[0]))
	if got.Type != unix.RTN_UNICAST {
		return route{}, fmt.Errorf("route to %v: type %d: %w", dst, got.Type, errNotUnicast)
	}
	a := attrs(msgs[0].Data[unix.SizeofRtMsg:])
	rt := route{hop: dst}
	if v := a[unix.RTA_OIF]; len(v) == 4 {
		rt.oif = int(binary.NativeEndian.Uint32(v))
	}
	if v, ok := netip.AddrFromSlice(a[unix.RTA_GATEWAY]); ok {
		rt.hop = v.Unmap()
	}
	return rt, nil
}

// neighKey is a neighbour table entry's identity.
type neighKey struct {
	ifindex int
	ip      netip.Addr
}

// neighbours dumps the neighbour tables and returns the usable link-layer addresses:
// entries the kernel has resolved (reachable, stale, delay, probe, permanent). Incomplete
// and failed ones are left out; their packets keep going up the stack, whose traffic
// makes the kernel resolve them.
func (r *rtnl) neighbours() (map[neighKey]net.HardwareAddr, error) {
	ndm := make([]byte, 12) // struct ndmsg, family AF_UNSPEC: both families
	msgs, err := r.request(unix.RTM_GETNEIGH, true, ndm)
	if err != nil {
		return nil, fmt.Errorf("neighbour dump: %w", err)
	}
	const usable = unix.NUD_REACHABLE | unix.NUD_STALE | unix.NUD_DELAY | unix.NUD_PROBE | unix.NUD_PERMANENT
	out := map[neighKey]net.HardwareAddr{}
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWNEIGH || len(m.Data) < 12 {
			continue
		}
		ifindex := int(int32(binary.NativeEndian.Uint32(m.Data[4:8])))
		state := binary.NativeEndian.Uint16(m.Data[8:10])
		if state&usable == 0 {
			continue
		}
		a := attrs(m.Data[12:])
		ip, ok := netip.AddrFromSlice(a[unix.NDA_DST])
		if !ok || len(a[unix.NDA_LLADDR]) != 6 {
			continue
		}
		out[neighKey{ifindex, ip.Unmap()}] = net.HardwareAddr(a[unix.NDA_LLADDR])
	}
	return out, nil
}

// linkInfo is what the program needs of an egress interface.
type linkInfo struct {
	mac net.HardwareAddr
	mtu int
}

func (r *rtnl) links() (map[int]linkInfo, error) {
	msgs, err := r.request(unix.RTM_GETLINK, true, make([]byte, unix.SizeofIfInfomsg))
	if err != nil {
		return nil, fmt.Errorf("link dump: %w", err)
	}
	out := map[int]linkInfo{}
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWLINK || len(m.Data) < unix.SizeofIfInfomsg {
			continue
		}
		ifi := (*unix.IfInfomsg)(unsafe.Pointer(&m.Data[0]))
		a := attrs(m.Data[unix.SizeofIfInfomsg:])
		li := linkInfo{mac: net.HardwareAddr(a[unix.IFLA_ADDRESS])}
		if v := a[unix.IFLA_MTU]; len(v) == 4 {
			li.mtu = int(binary.NativeEndian.Uint32(v))
		}
		out[int(ifi.Index)] = li
	}
	return out, nil
}
