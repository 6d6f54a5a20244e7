//go:build linux

package xdprelay

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"icehub/internal/testenv"
	"icehub/internal/vethbed"

	"golang.org/x/sys/unix"
)

// rig is the namespace testbed with the TURN server's part played by the test: the
// listen and relay sockets in the relay namespace (the user-space path, where passed
// packets must arrive), clients and a peer on either side, and the offload attached to
// both relay-side interfaces.
type rig struct {
	t       *testing.T
	bed     *vethbed.Bed
	off     *Offload
	listen  *net.UDPConn // 198.51.100.1:3478
	relay   *net.UDPConn // 203.0.113.1:50000
	clients []*net.UDPConn
	peer    *net.UDPConn // 203.0.113.2:60000
}

const listenPort, relayPort, peerPort = 3478, 50000, 60000

func newRig(t *testing.T, clients int) *rig {
	t.Helper()
	testenv.Netns(t)
	bed, err := vethbed.New(vethbed.Options{Prefix: "ihxdp-", Clients: clients, Peers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bed.Close() })
	r := &rig{t: t, bed: bed}
	// The far ends stand for remote hosts; on veth they need an XDP program of their own
	// to be handed what the relay's program sends (see vethbed.AttachPass).
	if err := bed.AttachPass(); err != nil {
		t.Fatal(err)
	}
	r.do(bed.Relay, func() (err error) {
		if r.listen, err = net.ListenUDP("udp", udpAddr(vethbed.RelayClientSide, listenPort)); err != nil {
			return err
		}
		if r.relay, err = net.ListenUDP("udp", udpAddr(vethbed.RelayPeerSide, relayPort)); err != nil {
			return err
		}
		r.off, err = Open(Config{Interfaces: []string{bed.RelayClientIf, bed.RelayPeerIf}, NeighbourRefresh: 50 * time.Millisecond})
		return err
	})
	t.Cleanup(func() { _ = r.off.Close() })
	for i := 0; i < clients; i++ {
		r.do(bed.Client, func() error {
			c, err := net.ListenUDP("udp", udpAddr(bed.ClientIPs[i], 40000+i))
			r.clients = append(r.clients, c)
			return err
		})
	}
	r.do(bed.Peer, func() (err error) {
		r.peer, err = net.ListenUDP("udp", udpAddr(bed.PeerIPs[0], peerPort))
		return err
	})
	t.Cleanup(func() {
		for _, c := range append(r.clients, r.listen, r.relay, r.peer) {
			c.Close()
		}
	})
	// A TURN server has talked to its client (the Allocate answers) before any channel
	// exists; its neighbour entries for the clients and the peer exist because of that
	// and because user space relayed the first packets. Warm them the same way.
	for i, c := range r.clients {
		r.send(r.listen, addrOf(c), []byte("warm"))
		r.expect(c, []byte("warm"), netip.AddrPortFrom(vethbed.RelayClientSide, listenPort))
		_ = i
	}
	r.send(r.relay, addrOf(r.peer), []byte("warm"))
	r.expect(r.peer, []byte("warm"), netip.AddrPortFrom(vethbed.RelayPeerSide, relayPort))
	return r
}

func (r *rig) do(ns string, fn func() error) {
	r.t.Helper()
	if err := r.bed.Do(ns, fn); err != nil {
		r.t.Fatal(err)
	}
}

func udpAddr(ip netip.Addr, port int) *net.UDPAddr {
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port)))
}

func addrOf(c *net.UDPConn) netip.AddrPort {
	a := c.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// binding is client i's channel 0x4000+i to the rig's peer through the rig's relay socket.
func (r *rig) binding(i int) Binding {
	return Binding{Alloc: AllocID(i + 1), Client: addrOf(r.clients[i]),
		Listen: netip.AddrPortFrom(vethbed.RelayClientSide, listenPort),
		Relay:  netip.AddrPortFrom(vethbed.RelayPeerSide, relayPort),
		Peer:   addrOf(r.peer), Channel: uint16(0x4000 + i)}
}

func (r *rig) send(c *net.UDPConn, to netip.AddrPort, b []byte) {
	r.t.Helper()
	if _, err := c.WriteToUDPAddrPort(b, to); err != nil {
		r.t.Fatal(err)
	}
}

// recv reads one datagram, waiting at most d; ok is false on timeout.
func recv(c *net.UDPConn, d time.Duration) (b []byte, from netip.AddrPort, ok bool) {
	buf := make([]byte, 70000)
	_ = c.SetReadDeadline(time.Now().Add(d))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil, netip.AddrPort{}, false
	}
	return buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), true
}

// expect reads one datagram on c and checks its bytes and source exactly.
func (r *rig) expect(c *net.UDPConn, want []byte, from netip.AddrPort) {
	r.t.Helper()
	got, src, ok := recv(c, 2*time.Second)
	if !ok {
		r.t.Fatalf("%v: nothing arrived (wanted %d bytes from %v)", addrOf(c), len(want), from)
	}
	if string(got) != string(want) || src != from {
		r.t.Fatalf("%v: got %d bytes from %v %x, want %d bytes from %v %x", addrOf(c), len(got), src, head(got), len(want), from, head(want))
	}
}

// silent checks that nothing arrives on c for a moment: the packet went another way.
func (r *rig) silent(c *net.UDPConn, what string) {
	r.t.Helper()
	if got, src, ok := recv(c, 150*time.Millisecond); ok {
		r.t.Fatalf("%s: %v received %d bytes from %v; want nothing", what, addrOf(c), len(got), src)
	}
}

func head(b []byte) []byte { return b[:min(len(b), 24)] }

// channelData builds a ChannelData frame with pad bytes of value padByte after the data.
func channelData(ch uint16, data []byte, pad int, padByte byte) []byte {
	b := make([]byte, 4, 4+len(data)+pad)
	binary.BigEndian.PutUint16(b[0:2], ch)
	binary.BigEndian.PutUint16(b[2:4], uint16(len(data)))
	b = append(b, data...)
	for i := 0; i < pad; i++ {
		b = append(b, padByte)
	}
	return b
}

func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

// verdicts reads the program's verdict counters, failing the test on error.
func (r *rig) verdicts() map[string]uint64 {
	r.t.Helper()
	v, err := r.off.Verdicts()
	if err != nil {
		r.t.Fatal(err)
	}
	return v
}

// udpCsumErrors reads Udp InCsumErrors (or Udp6) of namespace ns: the receiving kernel
// verifies every checksum, and counts the datagrams it dropped for a bad one there.
func (r *rig) udpCsumErrors(ns string) (n uint64) {
	r.t.Helper()
	r.do(ns, func() error {
		for _, file := range []string{"/proc/thread-self/net/snmp", "/proc/thread-self/net/snmp6"} {
			v, err := snmpField(file)
			if err != nil {
				return err
			}
			n += v
		}
		return nil
	})
	return n
}

func snmpField(file string) (uint64, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var names []string
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 2 && fields[0] == "Udp6InCsumErrors" { // snmp6: "name value"
			return strconv.ParseUint(fields[1], 10, 64)
		}
		if len(fields) < 2 || fields[0] != "Udp:" {
			continue
		}
		if names == nil { // snmp: a header line of names, then a line of values
			names = fields
			continue
		}
		for i, name := range names {
			if name == "InCsumErrors" && i < len(fields) {
				return strconv.ParseUint(fields[i], 10, 64)
			}
		}
	}
	return 0, errors.New(file + ": no InCsumErrors")
}

func listenUDP(a *net.UDPAddr) (*net.UDPConn, error) { return net.ListenUDP("udp", a) }

// sendWithIPOptions sends from b's client socket with an IPv4 options field (three NOPs
// and an end-of-options), which makes the header 24 bytes.
func (r *rig) sendWithIPOptions(b Binding, frame []byte) {
	r.t.Helper()
	c := r.clients[0]
	set := func(opts []byte) {
		sc, err := c.SyscallConn()
		if err != nil {
			r.t.Fatal(err)
		}
		var serr error
		if err := sc.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.IPPROTO_IP, unix.IP_OPTIONS, string(opts))
		}); err != nil || serr != nil {
			r.t.Fatalf("IP_OPTIONS: %v %v", err, serr)
		}
	}
	set([]byte{1, 1, 1, 0})
	r.send(c, b.Listen, frame)
	set(nil)
}

// nonUDPStillWorks opens a TCP connection from the client to the relay host through the
// program (it must pass TCP untouched) and echoes a line over it.
func (r *rig) nonUDPStillWorks() {
	r.t.Helper()
	var ln net.Listener
	r.do(r.bed.Relay, func() (err error) {
		ln, err = net.Listen("tcp", udpAddr(vethbed.RelayClientSide, listenPort).String())
		return err
	})
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			buf := make([]byte, 5)
			_, _ = io.ReadFull(c, buf)
			_, _ = c.Write(buf)
			c.Close()
		}
	}()
	var conn net.Conn
	r.do(r.bed.Client, func() (err error) {
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: r.bed.ClientIPs[1].AsSlice()}}
		conn, err = d.Dial("tcp", ln.Addr().String())
		return err
	})
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("hello")); err != nil {
		r.t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "hello" {
		r.t.Fatalf("TCP through the program: %q %v", buf, err)
	}
}

// expectChannelData reads one ChannelData frame carrying data on channel ch from from. The
// program pads to 4 bytes with zeros when the frame has tailroom and sends it unpadded
// when not (RFC 8656 §12.5 makes padding optional over UDP); both are accepted, anything
// else is not. It reports whether the frame was padded.
func (r *rig) expectChannelData(c *net.UDPConn, ch uint16, data []byte, from netip.AddrPort) (padded bool) {
	r.t.Helper()
	got, src, ok := recv(c, 2*time.Second)
	if !ok {
		r.t.Fatalf("%v: nothing arrived (wanted ChannelData of %d bytes from %v)", addrOf(c), len(data), from)
	}
	n := len(data)
	unpadded, full := channelData(ch, data, 0, 0), channelData(ch, data, (4-n%4)%4, 0)
	if src != from || (string(got) != string(unpadded) && string(got) != string(full)) {
		r.t.Fatalf("%v: got %d bytes from %v %x, want %x (or padded with zeros) from %v", addrOf(c), len(got), src, head(got), head(unpadded), from)
	}
	return len(got) == len(full) && n%4 != 0
}
