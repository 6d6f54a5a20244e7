package signal

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Session resume across nodes. What lives in Redis, per session:
//
//   - sess:<id>, a hash: sel (the current token's selector), h (SHA-256 of its validator), tu
//     (the TURN user), state (live or parked), node (where it is live, or where it was parked),
//     rooms (comma-separated), and while parked n, b, max (frames and bytes buffered, the
//     bound). A live record expires 2×member_ttl after its node's last heartbeat, a parked
//     one after its window (plus member_ttl).
//   - tok:<selector> → id, with the record's expiry: how a token finds its session.
//   - pre:<id> and buf:<id>, lists: the frames a parked session missed, together bounded by
//     max and maxParkedBytes, with the record's expiry. pre holds what was routed to the
//     session before it was parked (frames still queued for its lost connection, and those
//     in flight to its node through pub/sub, which that node appends as they arrive); buf
//     what publishers appended directly afterwards. Everything in pre was published before
//     anything in buf, so pre then buf is the order the session would have seen.
//   - in each room's sorted set, a parked session's membership is "<id>| parked" (a node name
//     config never allows: node_id has no spaces) scored with the window's end, so it needs no
//     heartbeat, survives its node, and expires like any other membership: the node that
//     removes it tells the room peer-left.
//
// Every change of state is one Lua script, so a claim, a park, an append and an end see each
// other whole. The validator hash is compared in Go, in constant time.

const parkedNode = " parked"

func (r *RedisRooms) sessKey(id string) string { return r.prefix + "sess:" + id }
func (r *RedisRooms) tokKey(sel string) string { return r.prefix + "tok:" + sel }
func (r *RedisRooms) bufKey(id string) string  { return r.prefix + "buf:" + id }
func (r *RedisRooms) preKey(id string) string  { return r.prefix + "pre:" + id }

// liveTTL is how long a live session's record outlives its node's last heartbeat.
func (r *RedisRooms) liveTTL() time.Duration { return 2 * r.expiry }

func (r *RedisRooms) shared() bool { return true }

func (r *RedisRooms) save(ctx context.Context, id string, tok resumeToken, turnUser string) error {
	ttl := r.liveTTL()
	pipe := r.rdb.TxPipeline()
	pipe.HSet(ctx, r.sessKey(id), "sel", tok.sel, "h", tok.hash[:], "tu", turnUser,
		"state", "live", "node", r.node, "rooms", "")
	pipe.PExpire(ctx, r.sessKey(id), ttl)
	pipe.Set(ctx, r.tokKey(tok.sel), id, ttl)
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable(err)
	}
	r.mu.Lock()
	r.sessions[id] = localSession{sel: tok.sel, hash: tok.hash, turnUser: turnUser}
	r.mu.Unlock()
	return nil
}

// setRoomsScript records a live session's rooms, for a node that claims it while this one
// still thinks it connected.
var setRoomsScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'sel') == ARGV[1] then redis.call('HSET', KEYS[1], 'rooms', ARGV[2]) end
return 1
`)

// recordRooms stores id's rooms in its record when this node holds it live.
func (r *RedisRooms) recordRooms(ctx context.Context, id string) {
	r.mu.Lock()
	ls, ok := r.sessions[id]
	rooms := make([]string, 0, len(r.local[id].rooms))
	for room := range r.local[id].rooms {
		rooms = append(rooms, room)
	}
	r.mu.Unlock()
	if !ok || ls.parked {
		return
	}
	if err := setRoomsScript.Run(ctx, r.rdb, []string{r.sessKey(id)}, ls.sel, strings.Join(rooms, ",")).Err(); err != nil {
		r.log.Warn("recording a session's rooms", "peer", id, "err", err)
	}
}

// parkScript turns a live session of node ARGV[2] into a parked one: its memberships become
// "<id>| parked" scored with the window's end, pending frames start its buffer.
var parkScript = redis.NewScript(`
local rec = redis.call('HMGET', KEYS[1], 'sel', 'state', 'node')
if rec[1] ~= ARGV[1] or rec[2] ~= 'live' or rec[3] ~= ARGV[2] then return 0 end
local untilms, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
for room in string.gmatch(ARGV[8], '[^,]+') do
  local key = ARGV[5] .. 'room:' .. room
  redis.call('ZREM', key, ARGV[6] .. '|' .. ARGV[2])
  redis.call('ZADD', key, untilms, ARGV[6] .. '| parked')
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
redis.call('DEL', KEYS[2], KEYS[4])
for i = 10, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if #ARGV >= 10 then redis.call('PEXPIRE', KEYS[2], ttl) end
redis.call('HSET', KEYS[1], 'state', 'parked', 'rooms', ARGV[8], 'n', #ARGV - 9, 'b', ARGV[9], 'max', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
return 1
`)

func (r *RedisRooms) park(ctx context.Context, id string, tok resumeToken, rooms []string, until time.Time, pending [][]byte, max int) error {
	size := 0
	args := []any{tok.sel, r.node, until.UnixMilli(), (time.Until(until) + r.expiry).Milliseconds(),
		r.prefix, id, max, strings.Join(rooms, ","), 0}
	for _, f := range pending {
		size += len(f)
		args = append(args, f)
	}
	if len(pending) > max || size > maxParkedBytes {
		return errOverflow
	}
	args[8] = size
	n, err := parkScript.Run(ctx, r.rdb, []string{r.sessKey(id), r.preKey(id), r.tokKey(tok.sel), r.bufKey(id)}, args...).Int()
	if err != nil {
		return unavailable(err)
	}
	if n == 0 {
		return errNotCurrent
	}
	r.mu.Lock()
	r.sessions[id] = localSession{sel: tok.sel, parked: true}
	if lp, ok := r.local[id]; ok {
		lp.parked = true // the heartbeat leaves its memberships alone; late frames still reach it
		r.local[id] = lp
	}
	r.mu.Unlock()
	return nil
}

// appendScript hands a frame to a parked session, onto list KEYS[2] (KEYS[3] is its other
// list): {0} gone; {1, node} it is live on node (forward it there); {2} buffered; {3,
// rooms...} the frame overflowed the buffer, so the session ended here and left those rooms.
var appendScript = redis.NewScript(`
local rec = redis.call('HMGET', KEYS[1], 'state', 'node', 'n', 'b', 'max', 'rooms', 'sel')
if not rec[1] then return {0} end
if rec[1] == 'live' then return {1, rec[2]} end
local n, b = tonumber(rec[3]) + 1, tonumber(rec[4]) + #ARGV[1]
if n <= tonumber(rec[5]) and b <= tonumber(ARGV[4]) then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], redis.call('PTTL', KEYS[1]))
  redis.call('HSET', KEYS[1], 'n', n, 'b', b)
  return {2}
end
local res = {3}
for room in string.gmatch(rec[6], '[^,]+') do
  if redis.call('ZREM', ARGV[2] .. 'room:' .. room, ARGV[3] .. '| parked') == 1 then table.insert(res, room) end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], ARGV[2] .. 'tok:' .. rec[7])
return res
`)

// toParked hands frame to parked session id wherever it now is: onto pre when the frame was
// routed to the session before it was parked (it reached the session on this node), else onto
// buf. ended reports that the frame overflowed the buffer and the session left the rooms in left.
func (r *RedisRooms) toParked(ctx context.Context, id string, frame []byte, routedBefore bool) (taken, ended bool, left []string, err error) {
	keys := []string{r.sessKey(id), r.bufKey(id), r.preKey(id)}
	if routedBefore {
		keys[1], keys[2] = keys[2], keys[1]
	}
	res, err := appendScript.Run(ctx, r.rdb, keys, frame, r.prefix, id, maxParkedBytes).Slice()
	if err != nil {
		return true, false, nil, unavailable(err)
	}
	code, _ := res[0].(int64)
	switch code {
	case 1:
		node, _ := res[1].(string)
		if node == r.node {
			return false, false, nil, nil // resumed here: the caller keeps it for the new connection
		}
		return true, false, nil, r.rdb.Publish(ctx, r.nodeChan(node), id+"\n"+string(frame)).Err()
	case 3:
		for _, v := range res[1:] {
			if room, ok := v.(string); ok {
				left = append(left, room)
			}
		}
		return true, true, left, nil
	}
	return true, false, nil, nil
}

func (r *RedisRooms) appendParked(id string, frame []byte) (taken, ended bool, left []string) {
	ctx, cancel := context.WithTimeout(context.Background(), storeWait)
	defer cancel()
	taken, ended, left, err := r.toParked(ctx, id, frame, true)
	if err != nil {
		r.log.Warn("buffering a frame for a parked session", "peer", id, "err", err)
	}
	// Not taken: resumed on this node, and the session keeps the frame for its new connection.
	return taken, ended, left
}

// endScript forgets a session whose token is still ARGV[1] and whose state is ARGV[4]; a
// parked one leaves its rooms, which it returns.
var endScript = redis.NewScript(`
local rec = redis.call('HMGET', KEYS[1], 'sel', 'state', 'rooms')
if rec[1] ~= ARGV[1] or rec[2] ~= ARGV[4] then return false end
local left = {}
if rec[2] == 'parked' then
  for room in string.gmatch(rec[3], '[^,]+') do
    if redis.call('ZREM', ARGV[2] .. 'room:' .. room, ARGV[3] .. '| parked') == 1 then table.insert(left, room) end
  end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return left
`)

func (r *RedisRooms) end(ctx context.Context, id string, tok resumeToken, parked bool) ([]string, error) {
	state := "live"
	if parked {
		state = "parked"
	}
	r.mu.Lock()
	if r.sessions[id].sel == tok.sel {
		delete(r.sessions, id)
		if parked {
			delete(r.local, id)
		}
	}
	r.mu.Unlock()
	res, err := endScript.Run(ctx, r.rdb, []string{r.sessKey(id), r.bufKey(id), r.tokKey(tok.sel), r.preKey(id)},
		tok.sel, r.prefix, id, state).StringSlice()
	if errors.Is(err, redis.Nil) {
		return nil, errNotCurrent
	}
	if err != nil {
		return nil, unavailable(err)
	}
	return res, nil
}

// refreshScript extends a live session's record, or writes it again when Redis lost it (a
// restart), as the heartbeat does for memberships. A record another node changed (a claim
// moved it) is left alone: its selector differs.
var refreshScript = redis.NewScript(`
local sel = redis.call('HGET', KEYS[1], 'sel')
if not sel then
  local rooms = ARGV[6]
  redis.call('HSET', KEYS[1], 'sel', ARGV[1], 'h', ARGV[2], 'tu', ARGV[3], 'state', 'live', 'node', ARGV[4], 'rooms', rooms)
  sel = ARGV[1]
end
if sel == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('SET', KEYS[2], ARGV[7], 'PX', ARGV[5])
end
return 1
`)

// refreshSessions extends the records of the sessions live on this node; the heartbeat calls
// it. The script is loaded first: a pipeline cannot fall back from EVALSHA to EVAL.
func (r *RedisRooms) refreshSessions(ctx context.Context, pipe redis.Pipeliner) error {
	if err := refreshScript.Load(ctx, r.rdb).Err(); err != nil {
		return err
	}
	ttl := r.liveTTL().Milliseconds()
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, ls := range r.sessions {
		if ls.parked {
			continue
		}
		rooms := make([]string, 0, len(r.local[id].rooms))
		for room := range r.local[id].rooms {
			rooms = append(rooms, room)
		}
		refreshScript.EvalSha(ctx, pipe, []string{r.sessKey(id), r.tokKey(ls.sel)},
			ls.sel, ls.hash[:], ls.turnUser, r.node, ttl, strings.Join(rooms, ","), id)
	}
	return nil
}
