package main

import (
	"log/slog"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"icehub/auth"
	"icehub/config"
	"icehub/internal/statuspage"
	"icehub/internal/usagelog"
	icesignal "icehub/signal"
	"icehub/turnserver"
)

// turnConfig maps the file's [turn] table onto what turnserver needs; validation has
// accepted every value, so parse errors cannot happen here.
func turnConfig(cfg config.Config, hp *hubPort, cs *certs, ring *auth.Ring, log *slog.Logger, reg prometheus.Registerer) (turnserver.Config, error) {
	t := cfg.TURN
	listen, err := t.Listen.AddrPorts()
	if err != nil {
		return turnserver.Config{}, err
	}
	tlsListen, err := hp.turnTLS.AddrPorts()
	if err != nil {
		return turnserver.Config{}, err
	}
	return turnserver.Config{
		Listen:     listen,
		TLSListen:  tlsListen,
		TLS:        cs.turnConfig(),
		Streams:    hp.turnStreams,
		Realm:      t.Realm,
		PublicIP:   optionalIP(t.PublicIP),
		RelayIP:    optionalIP(t.RelayIP),
		RelayPorts: turnserver.PortRange{Min: t.RelayPorts.Min, Max: t.RelayPorts.Max},
		UDPSockets: t.UDPSockets,
		Offload:    t.Offload,
		// A copy: the config is kept for the next reload's comparison.
		OffloadInterfaces: append([]string(nil), t.OffloadInterfaces...),
		Ring:              ring,
		Logger:            log,
		Registerer:        reg,
		Settings:          turnSettings(t),
	}, nil
}

// turnSettings maps the reloadable [turn] keys.
func turnSettings(t config.TURN) turnserver.Settings {
	return turnserver.Settings{
		AllowPeers:            config.Prefixes(t.AllowPeers),
		DenyPeers:             config.Prefixes(t.DenyPeers),
		MaxAllocationsPerUser: t.MaxAllocationsPerUser,
		MaxAllocations:        t.MaxAllocations,
		MaxAllocationsPerIP:   t.MaxAllocationsPerIP,
		TCPRelay:              t.TCPRelay,
		AnswerAllowance:       float64(t.AnswerAllowance),
		AnswerRefill:          float64(t.AnswerRefill),
		IntegrityRate:         t.IntegrityRate,
		IntegrityBurst:        t.IntegrityBurst,
		MaxConnsPerIP:         t.MaxConnsPerIP,
		AllocateTimeout:       t.AllocateTimeout.Duration,
		ProxyFrom:             config.Prefixes(t.ProxyFrom),
		MaxBitrate:            uint64(t.MaxBitrate),
		TotalBitrate:          uint64(t.TotalBitrate),
		STUNOnly:              t.STUNOnly,
		AlternateServers:      config.AlternateAddrs(t.AlternateServers),
	}
}

// hubSettings maps the file's [signal] table onto the hub's settings, with the ICE URLs of
// the whole file (iceURLs); cs supplies the names in the HTTPS certificate, which are the
// hub's own for the same-origin rule.
func hubSettings(cfg config.Config, cs *certs) icesignal.Settings {
	s := cfg.Signal
	var names []string
	if crt := cs.signal.Load(); crt != nil && crt.Leaf != nil {
		names = append(names, crt.Leaf.DNSNames...)
		for _, ip := range crt.Leaf.IPAddresses {
			names = append(names, ip.String())
		}
	}
	return icesignal.Settings{
		MaxPeersPerRoom:   s.MaxPeersPerRoom,
		MaxRoomsPerConn:   s.MaxRoomsPerConn,
		MaxFrameBytes:     s.MaxFrameBytes,
		SendQueue:         s.SendQueue,
		PingInterval:      s.PingInterval.Duration,
		AllowedOrigins:    s.AllowedOrigins,
		PublicOrigins:     s.PublicOrigins,
		Hostnames:         names,
		APIKeys:           s.APIKeys,
		MaxConnsPerIP:     s.MaxConnsPerIP,
		MessagesPerSecond: s.MessagesPerSecond,
		MessageBurst:      s.MessageBurst,
		ResumeWindow:      s.ResumeWindow.Duration,
		ResumeBuffer:      s.ResumeBuffer,
		IdleTimeout:       s.IdleTimeout.Duration,
		ReadTimeout:       s.ReadTimeout.Duration,
		ProxyFrom:         config.Prefixes(s.ProxyFrom),
		ClientIPHeader:    s.ClientIPHeader,
		ICEURLs:           iceURLs(cfg),
	}
}

// optionalIP parses an address validation accepted; empty is the zero Addr.
func optionalIP(s string) netip.Addr {
	a, _ := netip.ParseAddr(s)
	return a.Unmap()
}

// usageRecord maps turnserver's account of an ended allocation onto a usage line.
func usageRecord(r turnserver.AllocationRecord) usagelog.Record {
	end := r.Start.Add(r.Duration)
	return usagelog.Record{
		User: r.User, Client: r.Client.String(), Transport: r.ClientTransport,
		Relay: r.Relay.String(), RelayTransport: r.RelayTransport,
		Start: r.Start.UTC(), End: end.UTC(), DurationMS: r.Duration.Milliseconds(),
		BytesToPeer: r.BytesToPeer, BytesToClient: r.BytesToClient,
		PacketsToPeer: r.PacketsToPeer, PacketsToClient: r.PacketsToClient,
		Reason: r.Reason,
	}
}

// liveAllocations maps the TURN server's live allocations onto the status page's table.
func (a *app) liveAllocations() []statuspage.Allocation {
	live := a.turn.Allocations()
	out := make([]statuspage.Allocation, len(live))
	for i, r := range live {
		out[i] = statuspage.Allocation{
			User: r.User, Client: r.Client.String(), Transport: r.ClientTransport,
			Relay: r.Relay.String(), RelayTransport: r.RelayTransport, Start: r.Start,
			BytesToPeer: r.BytesToPeer, BytesToClient: r.BytesToClient,
		}
	}
	return out
}
