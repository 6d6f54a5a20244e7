package turnserver

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// A TCP client that never completes a frame is cut after the pre-auth idle limit, while a
// client that talks is served; an authenticated one is held to the longer limit.
func TestTCPHalfFrameClientIsCut(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.preAuthIdle = 500 * time.Millisecond })

	half, err := net.Dial("tcp", ts.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	half.Write(req[:10]) // half a header, then silence
	silent, err := net.Dial("tcp", ts.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	// Meanwhile a well-behaved client gets its Binding answered.
	good, err := net.Dial("tcp", ts.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	good.Write(req)
	good.SetReadDeadline(time.Now().Add(2 * time.Second))
	resp := make([]byte, 512)
	if _, err := good.Read(resp); err != nil {
		t.Fatalf("good client not answered: %v", err)
	}

	for name, c := range map[string]net.Conn{"half frame": half, "silent": silent} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		_, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("%s: server did not close the connection: %v", name, err)
		}
		if waited := time.Since(start); waited > 4*time.Second {
			t.Fatalf("%s: closed only after %s", name, waited)
		}
	}
}
