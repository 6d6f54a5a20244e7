package turnserver

import (
	"bufio"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/prometheus/client_golang/prometheus"

	"icehub/auth"
	"icehub/internal/metrictest"
	"icehub/turnserver/internal/stunwire"
)

// streamClient speaks STUN over one TCP connection, frame by frame, with whatever bytes
// the test chooses.
type streamClient struct {
	t     *testing.T
	conn  net.Conn
	br    *bufio.Reader
	cr    auth.Credentials
	realm string
	nonce string
}

func dialStream(t *testing.T, addr string, cr auth.Credentials) *streamClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &streamClient{t: t, conn: conn, br: newReader(conn), cr: cr}
}

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

// request sends a request of method with attrs (signed once a nonce is known) and returns
// the answer's error code (0 for success), learning realm and nonce from 401s and 438s.
func (c *streamClient) request(method stun.Method, attrs ...stun.Setter) int {
	c.t.Helper()
	for range 3 {
		s := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, attrs...)
		if c.nonce != "" && c.cr.Username != "" {
			s = append(s, stun.NewUsername(c.cr.Username), stun.NewRealm(c.realm), stun.NewNonce(c.nonce),
				stun.NewLongTermIntegrity(c.cr.Username, c.realm, c.cr.Password))
		}
		if err := c.write(stun.MustBuild(s...).Raw); err != nil {
			c.t.Fatalf("%v: %v", method, err)
		}
		res, err := c.read()
		if err != nil {
			c.t.Fatalf("%v: %v", method, err)
		}
		code := codeOf(res)
		if (code == 401 && c.nonce == "") || code == 438 {
			var r stun.Realm
			var n stun.Nonce
			if r.GetFrom(res) != nil || n.GetFrom(res) != nil {
				c.t.Fatalf("%v: %d without realm/nonce", method, code)
			}
			c.realm, c.nonce = r.String(), n.String()
			if c.cr.Username != "" {
				continue
			}
		}
		return code
	}
	c.t.Fatalf("%v: still challenged", method)
	return 0
}

func (c *streamClient) write(b []byte) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(testTimeout))
	_, err := c.conn.Write(b)
	return err
}

func (c *streamClient) read() (*stun.Message, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(testTimeout))
	f, err := stunwire.ReadFrame(c.br, nil)
	if err != nil {
		return nil, err
	}
	m := &stun.Message{Raw: f}
	return m, m.Decode()
}

// closedWithin reports whether the server closes the connection within d (reading and
// dropping whatever it still sends).
func (c *streamClient) closedWithin(d time.Duration) bool {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c.br)
	return err == nil // EOF: closed by the server; a timeout is an error
}

func connectionID(id uint32) stun.Setter {
	v := make([]byte, 4)
	binary.BigEndian.PutUint32(v, id)
	return rawAttr{stun.AttrConnectionID, v}
}

// A ConnectionBind that pion refused — unauthenticated (401) or with an unknown
// CONNECTION-ID (400) — leaves the connection a control connection, framed, admitted and
// timed like any other (RFC 6062 section 5.4: it becomes a data connection only after the
// success response). Each of the three things the old code let such a stream do is checked:
// escape the idle and allocate timeouts, escape the per-source limits, pin half frames.
func TestRefusedConnectionBindLeavesStreamGated(t *testing.T) {
	reg := prometheus.NewRegistry()
	ts := newTestServer(t, func(c *Config) {
		c.preAuthIdle = 500 * time.Millisecond
		c.Settings.AllocateTimeout = 1500 * time.Millisecond
		c.Settings.IntegrityRate, c.Settings.IntegrityBurst = 50, 100
	}, slog.LevelInfo, reg)
	cr := ts.creds(t, "binder")
	refusedBind := func(t *testing.T) *streamClient {
		t.Helper()
		c := dialStream(t, ts.tcp, auth.Credentials{})
		if code := c.request(stun.MethodConnectionBind, connectionID(42)); code != 401 {
			t.Fatalf("unauthenticated ConnectionBind: %d, want 401", code)
		}
		c.cr = cr
		if code := c.request(stun.MethodConnectionBind, connectionID(42)); code != 400 {
			t.Fatalf("ConnectionBind of an unknown connection: %d, want 400", code)
		}
		return c
	}

	t.Run("timeouts", func(t *testing.T) {
		c := refusedBind(t)
		// It keeps talking (a Binding every 200 ms) but never allocates.
		start := time.Now()
		for time.Since(start) < 3*time.Second {
			bind := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
			if c.write(bind) != nil {
				break
			}
			if _, err := c.read(); err != nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if waited := time.Since(start); waited > 2500*time.Millisecond {
			t.Fatalf("a stream without an allocation was still open after %v (allocate_timeout 1.5s)", waited)
		}
	})

	t.Run("per-source limits", func(t *testing.T) {
		c := refusedBind(t)
		checks0 := metrictest.Value(t, reg, "icehub_turn_integrity_checks_total", nil)
		failed0 := ts.logs.count("turn auth failed")
		wrong := auth.Credentials{Username: cr.Username, Password: "wrong-password"}
		const n = 2000
		go func() {
			for range n {
				m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP(),
					stun.NewUsername(wrong.Username), stun.NewRealm(c.realm), stun.NewNonce(c.nonce),
					stun.NewLongTermIntegrity(wrong.Username, c.realm, wrong.Password))
				if c.write(m.Raw) != nil {
					return
				}
			}
		}()
		answers := 0
		for answers < n {
			if _, err := c.read(); err != nil {
				break
			}
			answers++
		}
		checks := metrictest.Value(t, reg, "icehub_turn_integrity_checks_total", nil) - checks0
		lines := ts.logs.count("turn auth failed") - failed0
		t.Logf("%d wrong-credential Allocates: %d answered, %v integrity checks, %d log lines", n, answers, checks, lines)
		if checks > 100+50*5 {
			t.Fatalf("%v integrity checks for one source; the cap is a burst of 100 and 50/s", checks)
		}
		if lines > sourceLogBurst+2 {
			t.Fatalf("%d 'turn auth failed' lines from one source", lines)
		}
	})

	t.Run("half frames", func(t *testing.T) {
		c := refusedBind(t)
		// A ChannelData header claiming 64 KiB, 30 KB of it, then silence.
		half := make([]byte, 4+30000)
		binary.BigEndian.PutUint16(half[0:2], 0x4000)
		binary.BigEndian.PutUint16(half[2:4], 0xFFFF)
		if err := c.write(half); err != nil {
			t.Fatal(err)
		}
		if !c.closedWithin(3 * time.Second) {
			t.Fatal("a half frame held the connection open past the idle limit")
		}
	})
}

// With tcp_relay off, a TCP relay is refused with 442 whatever came before on the stream:
// directly, after a refused ConnectionBind, and after a 438 for a stale nonce.
func TestTCPRelayOffWhateverTheOrder(t *testing.T) {
	ts := startServer(t, func(c *Config) { loopbackAllowed(c); c.Settings.TCPRelay = false })
	cr := ts.creds(t, "order")
	tcpAlloc := rawAttr{stun.AttrRequestedTransport, []byte{6, 0, 0, 0}}
	c := dialStream(t, ts.tcp, cr)
	if code := c.request(stun.MethodAllocate, tcpAlloc); code != 442 {
		t.Fatalf("TCP allocation: %d, want 442", code)
	}
	if code := c.request(stun.MethodConnectionBind, connectionID(7)); code != 400 {
		t.Fatalf("ConnectionBind of an unknown connection: %d, want 400", code)
	}
	if code := c.request(stun.MethodAllocate, tcpAlloc); code != 442 {
		t.Fatalf("TCP allocation after a refused ConnectionBind: %d, want 442", code)
	}
	c.nonce = "c3RhbGUtbm9uY2Utb2YtcGlvbg" // stale: the client is told 438, then retries
	if code := c.request(stun.MethodAllocate, tcpAlloc); code != 442 {
		t.Fatalf("TCP allocation after a 438: %d, want 442", code)
	}
	// A UDP allocation on the same stream still works.
	if code := c.request(stun.MethodAllocate, requestedUDP()); code != 0 {
		t.Fatalf("UDP allocation: %d", code)
	}
}

// A TCP client that never completes a frame is cut after the pre-auth idle limit, while a
// client that talks is served.
func TestTCPHalfFrameClientIsCut(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.preAuthIdle = 500 * time.Millisecond })
	half := dialStream(t, ts.tcp, auth.Credentials{})
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	_ = half.write(req[:10]) // half a header, then silence
	silent := dialStream(t, ts.tcp, auth.Credentials{})
	good := dialStream(t, ts.tcp, auth.Credentials{})
	if err := good.write(req); err != nil {
		t.Fatal(err)
	}
	if _, err := good.read(); err != nil {
		t.Fatalf("good client not answered: %v", err)
	}
	for name, c := range map[string]*streamClient{"half frame": half, "silent": silent} {
		start := time.Now()
		if !c.closedWithin(5 * time.Second) {
			t.Fatalf("%s: server did not close the connection", name)
		}
		if waited := time.Since(start); waited > 4*time.Second {
			t.Fatalf("%s: closed only after %s", name, waited)
		}
	}
}
