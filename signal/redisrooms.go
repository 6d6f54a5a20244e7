package signal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisRooms shares rooms between icehub nodes through Redis, the way socket.io's Redis adapter
// does: membership and capacity live in one sorted set per room (member "peer|node", score = the
// membership's expiry in unix ms, refreshed by a heartbeat), and frames travel over one pub/sub
// channel per node to whichever node holds the recipient. A node that dies stops refreshing; the
// surviving nodes evict its peers once their expiry passes and tell the room.
type RedisRooms struct {
	rdb    *redis.Client
	node   string
	prefix string
	expiry time.Duration
	log    *slog.Logger

	mu       sync.Mutex
	local    map[string]localPeer    // peer id → its delivery and the rooms it is in
	sessions map[string]localSession // peer id → the sessions this node holds, live or parked
	evict    func(room, peer string)
	moved    func(id, sel string)

	cancel context.CancelFunc
	done   sync.WaitGroup
}

type localPeer struct {
	deliver Deliver
	rooms   map[string]bool
	parked  bool // its memberships are "id| parked" and need no heartbeat
}

// localSession is a resumable session this node holds: its current token's record (kept so
// the heartbeat can write it again into a Redis that restarted empty).
type localSession struct {
	sel      string
	hash     [32]byte
	turnUser string
	parked   bool
}

// RedisRoomsConfig configures NewRedisRooms. Expiry is how long a node's peers outlive its last
// heartbeat (default 15s); NodeID must be unique per running node (default: random).
type RedisRoomsConfig struct {
	URL    string
	NodeID string
	Prefix string
	Expiry time.Duration
	Logger *slog.Logger
}

// NewRedisRooms connects to Redis lazily: an unreachable Redis is not an error here, it makes
// Join and Publish fail with ErrUnavailable until it comes back.
func NewRedisRooms(cfg RedisRoomsConfig) (*RedisRooms, error) {
	opt, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("cluster.redis_url: %w", err)
	}
	opt.DialTimeout = time.Second
	opt.ReadTimeout = time.Second
	opt.WriteTimeout = time.Second
	opt.MaxRetries = 1
	opt.MinRetryBackoff = 50 * time.Millisecond
	opt.MaxRetryBackoff = time.Second
	r := &RedisRooms{
		rdb: redis.NewClient(opt), node: cfg.NodeID, prefix: cfg.Prefix, expiry: cfg.Expiry,
		log: cfg.Logger, local: make(map[string]localPeer), sessions: make(map[string]localSession),
	}
	if r.node == "" {
		r.node = newPeerID()[:12]
	}
	if r.prefix == "" {
		r.prefix = "icehub:"
	}
	if r.expiry <= 0 {
		r.expiry = 15 * time.Second
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.done.Add(2)
	go r.subscribe(ctx)
	go r.heartbeat(ctx)
	return r, nil
}

// OnEvict registers what to do when this node evicts a dead node's peer from a room: the hub
// tells the room's remaining members peer-left.
func (r *RedisRooms) OnEvict(f func(room, peer string)) {
	r.mu.Lock()
	r.evict = f
	r.mu.Unlock()
}

// Close stops the heartbeat and subscription and removes this node's peers from Redis.
func (r *RedisRooms) Close() error {
	r.cancel()
	r.done.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	pipe := r.rdb.Pipeline()
	r.mu.Lock()
	for id, lp := range r.local {
		if lp.parked {
			continue // parked sessions outlive this node; their membership expires by itself
		}
		for room := range lp.rooms {
			pipe.ZRem(ctx, r.roomKey(room), id+"|"+r.node)
		}
	}
	r.mu.Unlock()
	_, _ = pipe.Exec(ctx)
	return r.rdb.Close()
}

func (r *RedisRooms) roomKey(room string) string  { return r.prefix + "room:" + room }
func (r *RedisRooms) nodeChan(node string) string { return r.prefix + "node:" + node }

func unavailable(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// joinScript drops expired members, then adds ARGV[1] unless the room holds ARGV[4] already.
// Running it in Redis makes the capacity check and the add one atomic step cluster-wide.
var joinScript = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local all = redis.call('ZRANGE', KEYS[1], 0, -1)
local peer = ARGV[1]
local others = {}
local present = false
for _, m in ipairs(all) do
  local id = string.match(m, '^([^|]*)|')
  if id == string.match(peer, '^([^|]*)|') then present = true else table.insert(others, id) end
end
if not present and tonumber(ARGV[4]) > 0 and #all >= tonumber(ARGV[4]) then return false end
redis.call('ZADD', KEYS[1], ARGV[3], peer)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return others
`)

// Join implements Rooms.
func (r *RedisRooms) Join(ctx context.Context, room, peer string, max int, deliver Deliver) ([]string, error) {
	now := time.Now()
	res, err := joinScript.Run(ctx, r.rdb, []string{r.roomKey(room)},
		peer+"|"+r.node, now.UnixMilli(), now.Add(r.expiry).UnixMilli(), max, (2 * r.expiry).Milliseconds()).Result()
	if errors.Is(err, redis.Nil) {
		return nil, ErrRoomFull
	}
	if err != nil {
		return nil, unavailable(err)
	}
	raw, _ := res.([]any)
	members := make([]string, 0, len(raw))
	for _, m := range raw {
		if s, ok := m.(string); ok {
			members = append(members, s)
		}
	}
	r.mu.Lock()
	lp, ok := r.local[peer]
	if !ok {
		lp = localPeer{deliver: deliver, rooms: map[string]bool{}}
	}
	lp.rooms[room] = true
	r.local[peer] = lp
	r.mu.Unlock()
	r.recordRooms(ctx, peer)
	return members, nil
}

// Leave implements Rooms. The local record goes even when Redis is down, so a dropped
// connection never lingers here; Redis forgets it at the latest when its expiry passes.
func (r *RedisRooms) Leave(ctx context.Context, room, peer string) error {
	r.mu.Lock()
	lp, ok := r.local[peer]
	if ok {
		delete(lp.rooms, room)
		if len(lp.rooms) == 0 {
			delete(r.local, peer)
		}
	}
	r.mu.Unlock()
	n, err := r.rdb.ZRem(ctx, r.roomKey(room), peer+"|"+r.node).Result()
	if err != nil {
		return unavailable(err)
	}
	if n == 0 && !ok {
		return ErrNotMember
	}
	r.recordRooms(ctx, peer)
	return nil
}

// Publish implements Rooms: local recipients get the frame directly, each other node holding
// recipients gets one pub/sub message naming them.
func (r *RedisRooms) Publish(ctx context.Context, room, from, to string, frame []byte) error {
	all, err := r.rdb.ZRangeByScore(ctx, r.roomKey(room), &redis.ZRangeBy{
		Min: strconv.FormatInt(time.Now().UnixMilli(), 10), Max: "+inf",
	}).Result()
	if err != nil {
		return unavailable(err)
	}
	byNode := map[string][]string{}
	var parked []string
	found := false
	for _, m := range all {
		id, node, ok := strings.Cut(m, "|")
		if !ok || id == from || to != "" && id != to {
			continue
		}
		found = true
		if node == parkedNode {
			parked = append(parked, id)
			continue
		}
		byNode[node] = append(byNode[node], id)
	}
	if to != "" && !found {
		return ErrNoPeer
	}
	var errs []error
	for _, id := range parked {
		taken, ended, left, err := r.toParked(ctx, id, frame, false)
		switch {
		case err != nil:
			errs = append(errs, err)
		case !taken:
			r.deliverLocal([]string{id}, frame)
		case ended:
			r.parkedOverflow(id, left)
		}
	}
	for node, ids := range byNode {
		if node == r.node {
			r.deliverLocal(ids, frame)
			continue
		}
		msg := strings.Join(ids, ",") + "\n" + string(frame)
		if err := r.rdb.Publish(ctx, r.nodeChan(node), msg).Err(); err != nil {
			errs = append(errs, err)
		}
	}
	return unavailable(errors.Join(errs...))
}

func (r *RedisRooms) deliverLocal(ids []string, frame []byte) {
	r.mu.Lock()
	targets := make([]Deliver, 0, len(ids))
	for _, id := range ids {
		if lp, ok := r.local[id]; ok {
			targets = append(targets, lp.deliver)
		}
	}
	r.mu.Unlock()
	for _, d := range targets {
		d(frame)
	}
}

// Len returns the number of rooms this node has members in, for the rooms gauge.
func (r *RedisRooms) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	rooms := map[string]bool{}
	for _, lp := range r.local {
		for room := range lp.rooms {
			rooms[room] = true
		}
	}
	return len(rooms)
}

// subscribe receives frames other nodes address to this node's peers. go-redis re-dials and
// re-subscribes by itself after Redis restarts.
func (r *RedisRooms) subscribe(ctx context.Context) {
	defer r.done.Done()
	ps := r.rdb.Subscribe(ctx, r.nodeChan(r.node))
	defer ps.Close()
	ch := ps.Channel(redis.WithChannelHealthCheckInterval(5 * time.Second))
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			if msg, ok := strings.CutPrefix(m.Payload, "!moved "); ok {
				r.handleMoved(msg)
				continue
			}
			ids, frame, ok := strings.Cut(m.Payload, "\n")
			if !ok {
				continue
			}
			r.deliverLocal(strings.Split(ids, ","), []byte(frame))
		}
	}
}

// heartbeat refreshes this node's memberships and evicts expired ones in the rooms it shares.
// It re-adds members unconditionally, so a Redis that restarted empty learns them again.
func (r *RedisRooms) heartbeat(ctx context.Context) {
	defer r.done.Done()
	t := time.NewTicker(r.expiry / 3)
	defer t.Stop()
	down := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := r.beat(ctx)
		switch {
		case err != nil && !down:
			down = true
			r.log.Warn("redis unreachable; cross-node rooms unavailable until it returns", "err", err)
		case err == nil && down:
			down = false
			r.log.Info("redis reachable again")
		}
	}
}

func (r *RedisRooms) beat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.expiry/3)
	defer cancel()
	now := time.Now()
	exp := float64(now.Add(r.expiry).UnixMilli())
	r.mu.Lock()
	rooms := map[string]bool{}
	pipe := r.rdb.Pipeline()
	for id, lp := range r.local {
		if lp.parked {
			continue
		}
		for room := range lp.rooms {
			rooms[room] = true
			pipe.ZAdd(ctx, r.roomKey(room), redis.Z{Score: exp, Member: id + "|" + r.node})
		}
	}
	evict := r.evict
	r.mu.Unlock()
	if err := r.refreshSessions(ctx, pipe); err != nil {
		return err
	}
	for room := range rooms {
		pipe.PExpire(ctx, r.roomKey(room), 2*r.expiry)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	if err := r.rdb.Ping(ctx).Err(); err != nil {
		return err
	}
	for room := range rooms {
		stale, err := r.rdb.ZRangeByScore(ctx, r.roomKey(room), &redis.ZRangeBy{
			Min: "-inf", Max: "(" + strconv.FormatInt(now.UnixMilli(), 10),
		}).Result()
		if err != nil {
			return err
		}
		for _, m := range stale {
			// Only the node whose ZREM removes the member announces it, so peer-left goes out once.
			if n, err := r.rdb.ZRem(ctx, r.roomKey(room), m).Result(); err == nil && n == 1 && evict != nil {
				id, node, _ := strings.Cut(m, "|")
				if node == parkedNode {
					r.log.Info("parked peer evicted: its resume window passed", "peer", id, "room", room)
				} else {
					r.log.Info("peer evicted: its node stopped heartbeating", "peer", id, "room", room, "node", node)
				}
				evict(room, id)
			}
		}
	}
	return nil
}

// parkedOverflow tells the rooms of a parked session that overflowed its buffer that it left.
func (r *RedisRooms) parkedOverflow(id string, left []string) {
	r.mu.Lock()
	evict := r.evict
	r.mu.Unlock()
	r.log.Info("parked peer ended: it missed more than its resume buffer holds", "peer", id)
	if evict != nil {
		for _, room := range left {
			evict(room, id)
		}
	}
}
