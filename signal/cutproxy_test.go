package signal

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
)

// cutProxy stands between one browser page and the hub, so a test can do to the page's
// WebSocket what networks do: cut it (a TCP reset both ways, no close frame: the hub and the
// browser each see the connection die), keep a new one from getting through for a while, or
// hold back what the hub sends, to make two pages' messages cross. Plain HTTP requests pass
// untouched.
type cutProxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu    sync.Mutex
	cond  *sync.Cond
	conns map[*proxied]struct{}
	held  bool
	stuck int // chunks from the hub waiting while held

	gated   bool // new WebSocket connections wait before they reach the hub
	waiting int  // new WebSocket connections waiting at the gate
	closed  bool
}

type proxied struct {
	client, server *net.TCPConn
	ws             bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{t: t, ln: ln, target: target, conns: make(map[*proxied]struct{})}
	p.cond = sync.NewCond(&p.mu)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// url is the proxy's origin, http://127.0.0.1:port.
func (p *cutProxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *cutProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.serve(c.(*net.TCPConn))
	}
}

func (p *cutProxy) serve(client *net.TCPConn) {
	br := bufio.NewReader(client)
	// Browsers open a connection of its own for every WebSocket: its first bytes tell.
	ws := false
	if head, err := br.Peek(8); err == nil && (bytes.Equal(head, []byte("GET /ws?")) || bytes.Equal(head, []byte("GET /ws "))) {
		ws = true
	}
	if ws && !p.pass() {
		client.Close()
		return
	}
	s, err := net.Dial("tcp4", p.target)
	if err != nil {
		client.Close()
		return
	}
	pc := &proxied{client: client, server: s.(*net.TCPConn), ws: ws}
	p.mu.Lock()
	p.conns[pc] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
		pc.client.Close()
		pc.server.Close()
	}()
	go func() {
		_, _ = io.Copy(pc.server, br)
		_ = pc.server.CloseWrite()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := pc.server.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for pc.ws && p.held {
				p.stuck++
				p.cond.Wait()
				p.stuck--
			}
			p.mu.Unlock()
			if _, werr := pc.client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			_ = pc.client.CloseWrite()
			return
		}
	}
}

// cut resets the page's WebSocket connections, both towards the browser and towards the hub.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pc := range p.conns {
		if pc.ws {
			for _, c := range []*net.TCPConn{pc.client, pc.server} {
				_ = c.SetLinger(0) // close sends RST
				_ = c.Close()
			}
		}
	}
}

// pass waits while new WebSocket connections are gated; it reports false when the proxy
// closed meanwhile.
func (p *cutProxy) pass() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.gated && !p.closed {
		p.waiting++
		p.cond.Wait()
		p.waiting--
	}
	return !p.closed
}

// gate keeps (true) new WebSocket connections waiting, connected to the proxy but not yet to
// the hub, as an opening that hangs in the network would; false lets them through.
func (p *cutProxy) gate(on bool) {
	p.mu.Lock()
	p.gated = on
	p.mu.Unlock()
	p.cond.Broadcast()
}

// atGate returns how many new WebSocket connections are waiting at the gate.
func (p *cutProxy) atGate() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waiting
}

// hold stops (true) or resumes (false) passing the hub's WebSocket frames to the page.
func (p *cutProxy) hold(on bool) {
	p.mu.Lock()
	p.held = on
	p.mu.Unlock()
	p.cond.Broadcast()
}

// holding returns how many chunks from the hub are being held back.
func (p *cutProxy) holding() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stuck
}

func (p *cutProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.hold(false)
	p.mu.Lock()
	for pc := range p.conns {
		pc.client.Close()
		pc.server.Close()
	}
	p.mu.Unlock()
}
