package signal

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"icehub/internal/testenv"
)

// redisProc is a real redis-server on a loopback port, without persistence.
type redisProc struct {
	t    *testing.T
	path string
	port int
	url  string
	cmd  *exec.Cmd
	done chan struct{}
}

// startRedis runs a real redis-server on a free loopback port and returns its URL. It skips
// (or fails under ICEHUB_TEST_REQUIRE_ALL) without redis-server.
func startRedis(t *testing.T) string {
	t.Helper()
	return newRedis(t).url
}

func newRedis(t *testing.T) *redisProc {
	t.Helper()
	r := &redisProc{t: t, path: testenv.Tool(t, "redis-server", "redis-server")}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	r.url = fmt.Sprintf("redis://127.0.0.1:%d/0", r.port)
	r.start()
	t.Cleanup(r.stop)
	return r
}

// start (re)starts the server on its port, empty, and waits until it answers.
func (r *redisProc) start() {
	r.t.Helper()
	r.cmd = exec.Command(r.path, "--port", fmt.Sprint(r.port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", r.t.TempDir())
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(r.cmd, r.done)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", r.port)); err == nil {
			_, _ = c.Write([]byte("PING\r\n"))
			b := make([]byte, 7)
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			n, _ := c.Read(b)
			c.Close()
			if strings.HasPrefix(string(b[:n]), "+PONG") {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.t.Fatal("redis-server did not start")
}

func (r *redisProc) stop() {
	select {
	case <-r.done:
	default:
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// newNode starts a hub whose rooms are shared through redisURL as node `name`. Both nodes
// of a test share one secret ring, as a cluster's nodes share auth.secrets.
func newNode(t *testing.T, redisURL, name string, mod func(*Settings)) *testEnv {
	t.Helper()
	rr, err := NewRedisRooms(RedisRoomsConfig{URL: redisURL, NodeID: name, Expiry: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rr.Close() }) // after the hub's shutdown (cleanups run last-first)
	sig := DefaultSettings()
	sig.PingInterval = 5 * time.Second
	if mod != nil {
		mod(&sig)
	}
	return newEnvConfig(t, Config{Settings: sig, Ring: newTestRing(t), TTL: time.Hour, ICEURLs: testICE, Rooms: rr})
}
