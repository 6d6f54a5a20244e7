package echopeer

import (
	"net"
	"testing"
	"time"
)

func TestEchoCounts(t *testing.T) {
	p := Start(t)
	c, err := net.DialUDP("udp4", nil, p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	for i, msg := range []string{"a", "bcd"} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != msg {
			t.Fatalf("echo %d: %q, %v", i, buf[:n], err)
		}
	}
	if p.RxBytes.Load() != 4 || p.RxPackets.Load() != 2 || p.TxBytes.Load() != 4 {
		t.Fatalf("counted rx %d bytes %d packets, tx %d bytes; want 4, 2, 4", p.RxBytes.Load(), p.RxPackets.Load(), p.TxBytes.Load())
	}
}
