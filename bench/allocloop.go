//go:build linux

package main

import (
	"crypto/hmac"
	"crypto/md5" //nolint:gosec // the TURN long-term key is MD5(username:realm:password) by RFC.
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // MESSAGE-INTEGRITY is HMAC-SHA1 by RFC.
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The allocation-rate driver keeps the generator's cost per allocation low so the figure is
// about the server: each goroutine runs its share of the workers as state machines over raw
// non-blocking sockets on one epoll set (no netpoller wakeup, no net.Conn per socket), and
// builds and parses the few messages it needs by hand into reused buffers. The exchange is
// the one a new client makes: bare Allocate, 401 with REALM and NONCE, authenticated
// Allocate, Refresh with LIFETIME 0.

const (
	stunAllocate        = 0x0003
	stunRefresh         = 0x0004
	attrUsername        = 0x0006
	attrMessageIntegrit = 0x0008
	attrErrorCode       = 0x0009
	attrLifetime        = 0x000D
	attrRealm           = 0x0014
	attrNonce           = 0x0015
	attrReqTransport    = 0x0019
	stunMagicCookie     = 0x2112A442
	allocReplyTimeout   = time.Second
)

// allocStep is where a worker is in its exchange.
type allocStep int

const (
	stepBare allocStep = iota
	stepAuth
	stepRefresh
)

// allocWorker is one client that allocates and frees in a loop.
type allocWorker struct {
	fd       int
	step     allocStep
	txid     [12]byte
	deadline time.Time
	username string
	realm    string
	nonce    []byte
	mac      hash.Hash // HMAC-SHA1 keyed with the long-term key for (username, realm)
	password string
}

// allocLoop drives workers on one epoll set from one goroutine.
type allocLoop struct {
	server  unix.SockaddrInet4
	epfd    int
	ep      *os.File // epfd in Go's poller, so the loop parks like a network read
	events  []unix.EpollEvent
	nev     int
	workers []*allocWorker
	buf     []byte
	out     []byte
	ok, bad *atomic.Uint64
	seq     *atomic.Uint32
	errOnce *sync.Once
	err     *error
}

var errAllocReply = errors.New("unexpected reply")

// allocRate has par workers loop for dur: open a socket, Allocate the way a new client does
// (bare request, 401, authenticated request), Refresh with LIFETIME 0, close. The rate
// counts completed allocations.
func allocRate(server *net.UDPAddr, secret string, par int, dur time.Duration, pid int) allocResult {
	var ok, bad atomic.Uint64
	var seq atomic.Uint32
	var errOnce sync.Once
	var firstErr error
	loops := min(2, par)
	cpu, self := startCPU(pid), startCPU(os.Getpid())
	start := time.Now()
	deadline := start.Add(dur)
	var wg sync.WaitGroup
	for g := 0; g < loops; g++ {
		l, err := newAllocLoop(server, &ok, &bad, &seq, &errOnce, &firstErr)
		if err != nil {
			errOnce.Do(func() { firstErr = err })
			continue
		}
		for w := g; w < par; w += loops {
			username, password := restCredentials(secret, fmt.Sprintf("rate%d", w), time.Now().Add(time.Hour))
			l.workers = append(l.workers, &allocWorker{fd: -1, username: username, password: password})
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run(deadline)
		}()
	}
	wg.Wait()
	r := allocResult{allocs: ok.Load(), failed: bad.Load(), dur: time.Since(start), firstErr: firstErr}
	r.cpu, r.gen = cpu.perUnit(r.allocs), self.perUnit(r.allocs)
	return r
}

func newAllocLoop(server *net.UDPAddr, ok, bad *atomic.Uint64, seq *atomic.Uint32, once *sync.Once, err *error) (*allocLoop, error) {
	ip := server.IP.To4()
	if ip == nil {
		return nil, fmt.Errorf("alloc: %v is not an IPv4 address", server)
	}
	epfd, e := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if e != nil {
		return nil, e
	}
	l := &allocLoop{epfd: epfd, buf: make([]byte, 1500), out: make([]byte, 0, 512),
		ok: ok, bad: bad, seq: seq, errOnce: once, err: err}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, err
	}
	l.ep = os.NewFile(uintptr(epfd), "alloc-epoll")
	l.server.Port = server.Port
	copy(l.server.Addr[:], ip)
	return l, nil
}

func (l *allocLoop) fail(w *allocWorker, err error) {
	l.errOnce.Do(func() { *l.err = err })
	l.bad.Add(1)
	l.closeWorker(w)
}

func (l *allocLoop) closeWorker(w *allocWorker) {
	if w.fd >= 0 {
		_ = unix.Close(w.fd) // also leaves the epoll set
		w.fd = -1
	}
}

// start opens a new socket for w, from 127.0.0.2-254 in turn (coturn keeps a deallocated
// 5-tuple for a while and answers a new Allocate on it with 437), and sends the bare Allocate.
func (l *allocLoop) start(i int, w *allocWorker) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	src := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, byte(2 + l.seq.Add(1)%253)}}
	if err := unix.Bind(fd, src); err != nil {
		_ = unix.Close(fd)
		return err
	}
	if err := unix.Connect(fd, &l.server); err != nil {
		_ = unix.Close(fd)
		return err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(i)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		_ = unix.Close(fd)
		return err
	}
	w.fd, w.step = fd, stepBare
	return l.send(w, stunAllocate, false)
}

// send sends w's next request and starts its answer timer.
func (l *allocLoop) send(w *allocWorker, method uint16, auth bool) error {
	_, _ = rand.Read(w.txid[:])
	b := w.appendRequest(l.out[:0], method, auth)
	l.out = b[:0]
	w.deadline = time.Now().Add(allocReplyTimeout)
	// Raw: the socket is non-blocking, and entering the scheduler's syscall state for each
	// short call keeps sysmon waking every 20 µs.
	_, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(w.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return e
	}
	return nil
}

// appendRequest appends w's request with its transaction ID: Allocate with
// REQUESTED-TRANSPORT UDP or Refresh with LIFETIME 0, with USERNAME, REALM, NONCE and
// MESSAGE-INTEGRITY when auth.
func (w *allocWorker) appendRequest(b []byte, method uint16, auth bool) []byte {
	b = binary.BigEndian.AppendUint16(b, method) // request class
	b = append(b, 0, 0)                          // length, set below
	b = binary.BigEndian.AppendUint32(b, stunMagicCookie)
	b = append(b, w.txid[:]...)
	if method == stunAllocate {
		b = appendAttr(b, attrReqTransport, []byte{17, 0, 0, 0})
	} else {
		b = appendAttr(b, attrLifetime, []byte{0, 0, 0, 0})
	}
	if auth {
		b = appendAttr(b, attrUsername, []byte(w.username))
		b = appendAttr(b, attrRealm, []byte(w.realm))
		b = appendAttr(b, attrNonce, w.nonce)
		// MESSAGE-INTEGRITY covers the header with the length already counting itself.
		binary.BigEndian.PutUint16(b[2:4], uint16(len(b)-20+24))
		w.mac.Reset()
		w.mac.Write(b)
		b = binary.BigEndian.AppendUint16(b, attrMessageIntegrit)
		b = binary.BigEndian.AppendUint16(b, 20)
		b = w.mac.Sum(b)
	}
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)-20))
	return b
}

func appendAttr(b []byte, typ uint16, v []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// stunReply is what the driver needs from an answer.
type stunReply struct {
	typ          uint16
	code         int
	realm, nonce []byte
}

// parseReply checks the header and transaction ID and picks ERROR-CODE, REALM and NONCE.
func parseReply(b []byte, txid *[12]byte) (stunReply, bool) {
	var r stunReply
	if len(b) < 20 || binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie || string(b[8:20]) != string(txid[:]) {
		return r, false
	}
	r.typ = binary.BigEndian.Uint16(b[0:2])
	attrs := b[20:]
	if n := int(binary.BigEndian.Uint16(b[2:4])); n <= len(attrs) {
		attrs = attrs[:n]
	}
	for len(attrs) >= 4 {
		t, n := binary.BigEndian.Uint16(attrs[0:2]), int(binary.BigEndian.Uint16(attrs[2:4]))
		if 4+n > len(attrs) {
			return r, false
		}
		v := attrs[4 : 4+n]
		switch t {
		case attrErrorCode:
			if n >= 4 {
				r.code = int(v[2]&7)*100 + int(v[3])
			}
		case attrRealm:
			r.realm = v
		case attrNonce:
			r.nonce = v
		}
		attrs = attrs[min(len(attrs), 4+(n+3)&^3):]
	}
	return r, true
}

func (l *allocLoop) run(deadline time.Time) {
	defer l.ep.Close()
	rc, err := l.ep.SyscallConn()
	if err != nil {
		l.errOnce.Do(func() { *l.err = err })
		return
	}
	l.events = make([]unix.EpollEvent, len(l.workers))
	wait := func(fd uintptr) bool { // non-blocking epoll_wait; false parks until epfd is readable
		r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), 0, 0, 0)
		if e != 0 || r == 0 {
			return e != 0 && e != unix.EINTR
		}
		l.nev = int(r)
		return true
	}
	defer func() {
		for _, w := range l.workers {
			l.closeWorker(w)
		}
	}()
	for i, w := range l.workers {
		if err := l.start(i, w); err != nil {
			l.fail(w, err)
		}
	}
	for {
		now := time.Now()
		if now.After(deadline) || (l.bad.Load() > 1000 && l.ok.Load() == 0) {
			return // done, or the server is not answering: do not spin
		}
		for i, w := range l.workers { // lost answers and failed restarts
			if w.fd < 0 || now.After(w.deadline) {
				if w.fd >= 0 {
					l.fail(w, fmt.Errorf("no answer within %v", allocReplyTimeout))
				}
				if err := l.start(i, w); err != nil {
					l.fail(w, err)
				}
			}
		}
		l.nev = 0
		_ = l.ep.SetReadDeadline(now.Add(20 * time.Millisecond)) // to look at the deadlines
		if err := rc.Read(wait); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			l.errOnce.Do(func() { *l.err = err })
			return
		}
		for _, ev := range l.events[:l.nev] {
			i := int(ev.Fd)
			w := l.workers[i]
			if w.fd < 0 {
				continue
			}
			m, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(w.fd), uintptr(unsafe.Pointer(&l.buf[0])), uintptr(len(l.buf)))
			if e == unix.EAGAIN {
				continue
			}
			if e != 0 {
				l.fail(w, e)
				continue
			}
			if err := l.advance(w, l.buf[:m]); err != nil {
				l.fail(w, err)
			}
			if w.fd < 0 && !time.Now().After(deadline) {
				if err := l.start(i, w); err != nil {
					l.fail(w, err)
				}
			}
		}
	}
}

// advance handles one answer to w's outstanding request.
func (l *allocLoop) advance(w *allocWorker, b []byte) error {
	r, ok := parseReply(b, &w.txid)
	if !ok {
		return nil // not ours (a late retransmission answer): keep waiting
	}
	switch {
	case w.step == stepBare && r.typ == 0x0113 && r.code == 401:
		if len(r.realm) == 0 || len(r.nonce) == 0 {
			return fmt.Errorf("401 without REALM or NONCE")
		}
		if string(r.realm) != w.realm || w.mac == nil {
			w.learnRealm(string(r.realm))
		}
		w.nonce = append(w.nonce[:0], r.nonce...)
		w.step = stepAuth
		return l.send(w, stunAllocate, true)
	case w.step == stepAuth && r.typ == 0x0103:
		w.step = stepRefresh
		return l.send(w, stunRefresh, true)
	case w.step == stepRefresh && r.typ == 0x0104:
		l.ok.Add(1)
		l.closeWorker(w)
		return nil
	case r.code != 0:
		return fmt.Errorf("%w: %s error %d", errAllocReply, methodName(w.step), r.code)
	default:
		return fmt.Errorf("%w: %s answered with type %#04x", errAllocReply, methodName(w.step), r.typ)
	}
}

// learnRealm keys w's MESSAGE-INTEGRITY with MD5(username:realm:password).
func (w *allocWorker) learnRealm(realm string) {
	w.realm = realm
	key := md5.Sum([]byte(w.username + ":" + realm + ":" + w.password)) //nolint:gosec
	w.mac = hmac.New(sha1.New, key[:])
}

func methodName(s allocStep) string {
	if s == stepRefresh {
		return "Refresh"
	}
	return "Allocate"
}
