// Resuming a session in cluster mode: the claim that moves it to the resuming node.

package signal

import (
	"context"
	"crypto/subtle"
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

func (r *RedisRooms) onMoved(f func(id, sel string)) {
	r.mu.Lock()
	r.moved = f
	r.mu.Unlock()
}

// claimScript moves a session, live on some node or parked, to node ARGV[4] under the new
// token, provided the claimed token is still current and every membership is still there.
// It returns {old state, old node, rooms, turn user, {missed frames}}.
var claimScript = redis.NewScript(`
local rec = redis.call('HMGET', KEYS[1], 'sel', 'state', 'node', 'rooms', 'tu')
if rec[1] ~= ARGV[1] then return false end
local from = rec[3]
if rec[2] == 'parked' then from = ' parked' end
local now = tonumber(ARGV[5])
local rooms = {}
for room in string.gmatch(rec[4], '[^,]+') do
  local sc = redis.call('ZSCORE', ARGV[9] .. 'room:' .. room, ARGV[10] .. '|' .. from)
  if not sc or tonumber(sc) < now then
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[5])
    return false
  end
  table.insert(rooms, room)
end
for _, room in ipairs(rooms) do
  local key = ARGV[9] .. 'room:' .. room
  redis.call('ZREM', key, ARGV[10] .. '|' .. from)
  redis.call('ZADD', key, ARGV[6], ARGV[10] .. '|' .. ARGV[4])
  if redis.call('PTTL', key) < tonumber(ARGV[7]) then redis.call('PEXPIRE', key, ARGV[7]) end
end
local missed = redis.call('LRANGE', KEYS[5], 0, -1)
for _, f in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do table.insert(missed, f) end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[5])
redis.call('HSET', KEYS[1], 'sel', ARGV[2], 'h', ARGV[3], 'state', 'live', 'node', ARGV[4], 'n', 0, 'b', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[8])
redis.call('SET', KEYS[4], ARGV[10], 'PX', ARGV[8])
return {rec[2], rec[3], rec[4], rec[5], missed}
`)

func (r *RedisRooms) claim(ctx context.Context, tok, next resumeToken, attach func(string) Deliver) (claimed, error) {
	id, err := r.rdb.Get(ctx, r.tokKey(tok.sel)).Result()
	if errors.Is(err, redis.Nil) {
		return claimed{}, errNoSession
	}
	if err != nil {
		return claimed{}, unavailable(err)
	}
	vals, err := r.rdb.HMGet(ctx, r.sessKey(id), "sel", "h").Result()
	if err != nil {
		return claimed{}, unavailable(err)
	}
	sel, _ := vals[0].(string)
	hash, _ := vals[1].(string)
	if sel != tok.sel || subtle.ConstantTimeCompare([]byte(hash), tok.hash[:]) != 1 {
		return claimed{}, errNoSession
	}

	// Frames may reach the session here as soon as the script has moved its memberships.
	deliver := attach(id)
	r.mu.Lock()
	prev, had := r.local[id]
	r.local[id] = localPeer{deliver: deliver, rooms: map[string]bool{}}
	r.mu.Unlock()
	now := time.Now()
	res, err := claimScript.Run(ctx, r.rdb,
		[]string{r.sessKey(id), r.bufKey(id), r.tokKey(tok.sel), r.tokKey(next.sel), r.preKey(id)},
		tok.sel, next.sel, next.hash[:], r.node, now.UnixMilli(), now.Add(r.expiry).UnixMilli(),
		(2 * r.expiry).Milliseconds(), r.liveTTL().Milliseconds(), r.prefix, id).Slice()
	if err != nil {
		r.mu.Lock()
		if had {
			r.local[id] = prev
		} else {
			delete(r.local, id)
		}
		r.mu.Unlock()
		if errors.Is(err, redis.Nil) {
			return claimed{}, errNoSession
		}
		return claimed{}, unavailable(err)
	}
	oldNode, _ := res[1].(string)
	roomList, _ := res[2].(string)
	turnUser, _ := res[3].(string)
	cl := claimed{id: id, turnUser: turnUser, rooms: []string{}}
	rooms := map[string]bool{}
	for _, room := range strings.Split(roomList, ",") {
		if room != "" {
			rooms[room] = true
			cl.rooms = append(cl.rooms, room)
		}
	}
	missed, _ := res[4].([]any)
	for _, m := range missed {
		if s, ok := m.(string); ok {
			cl.missed = append(cl.missed, []byte(s))
		}
	}
	r.mu.Lock()
	r.local[id] = localPeer{deliver: deliver, rooms: rooms}
	r.sessions[id] = localSession{sel: next.sel, hash: next.hash, turnUser: turnUser}
	r.mu.Unlock()
	if oldNode != r.node {
		// The node that had it stops treating it as its own (and closes a connection it
		// still thinks open).
		if err := r.rdb.Publish(ctx, r.nodeChan(oldNode), "!moved "+id+" "+tok.sel).Err(); err != nil {
			r.log.Warn("telling a node its session moved", "node", oldNode, "err", err)
		}
	}
	return cl, nil
}

// handleMoved runs on the node that had a session another node has just claimed.
func (r *RedisRooms) handleMoved(msg string) {
	id, sel, ok := strings.Cut(msg, " ")
	if !ok {
		return
	}
	r.mu.Lock()
	if r.sessions[id].sel != sel {
		r.mu.Unlock()
		return // it came back here since, under a newer token
	}
	lp := r.local[id]
	delete(r.sessions, id)
	delete(r.local, id)
	moved := r.moved
	r.mu.Unlock()
	// The claim removed this node's memberships; a heartbeat may have put one back since.
	ctx, cancel := context.WithTimeout(context.Background(), storeWait)
	defer cancel()
	pipe := r.rdb.Pipeline()
	for room := range lp.rooms {
		pipe.ZRem(ctx, r.roomKey(room), id+"|"+r.node)
	}
	_, _ = pipe.Exec(ctx)
	if moved != nil {
		moved(id, sel)
	}
}
