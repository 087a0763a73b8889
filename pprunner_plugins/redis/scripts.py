"""The Lua scripts that make each Redis status change atomic.

Keys are built inside the scripts from the prefix (ARGV[1]), so the backend
works on a single Redis server or a replicated one, not on Redis Cluster.
Layout, for prefix ``p``:

``p:inv:<id>``       hash: the invocation's fields (absent field = None)
``p:seq``            counter: enqueue order
``p:queue``          list: PENDING invocations that are due, oldest first
``p:delayed``        sorted set: PENDING retries, by ``not_before``
``p:owned:<runner>`` list: what a runner claimed and has not finished
``p:idle``           list: runners blocked waiting for work, first come first served
``p:inbox:<runner>`` stream: invocations handed straight to that idle runner
``p:status:<S>``     sorted set per status, by enqueue order (counts, listings)
``p:runners``        sorted set: runner id by last heartbeat
``p:runner:<id>``    hash: the runner's record
"""

from __future__ import annotations

#: shared by the claim scripts: take the PENDING invocation ARGV-named ``id`` for ``runner``
_MARK = """
local function mark(p, id, runner, now)
  local key = p .. ':inv:' .. id
  local status = redis.call('HGET', key, 'status')
  if status == 'RUNNING' and redis.call('HGET', key, 'owner') == runner then
    return redis.call('HGETALL', key)  -- ours already: a retry after a lost reply
  end
  if status ~= 'PENDING' then
    redis.call('LREM', p .. ':owned:' .. runner, 0, id)
    return false
  end
  redis.call('HSET', key, 'status', 'RUNNING', 'owner', runner, 'started_at', now)
  redis.call('HINCRBY', key, 'attempts', 1)
  local seq = redis.call('HGET', key, 'seq')
  redis.call('ZREM', p .. ':status:PENDING', id)
  redis.call('ZADD', p .. ':status:RUNNING', seq, id)
  return redis.call('HGETALL', key)
end
"""

#: ARGV: prefix, runner, now, id... -> the hash of the first due PENDING one, or nil
CLAIM_ONE_OF = _MARK + """
local p, runner, now = ARGV[1], ARGV[2], ARGV[3]
for i = 4, #ARGV do
  local id = ARGV[i]
  local key = p .. ':inv:' .. id
  local not_before = redis.call('HGET', key, 'not_before')
  if redis.call('HGET', key, 'status') == 'PENDING'
      and (not not_before or tonumber(not_before) <= tonumber(now)) then
    if redis.call('LREM', p .. ':queue', 1, id) == 0 then
      redis.call('ZREM', p .. ':delayed', id)
    end
    redis.call('RPUSH', p .. ':owned:' .. runner, id)
    return mark(p, id, runner, now)
  end
end
return nil
"""

#: One round trip for a claim when work is waiting. ARGV: prefix, runner, now, resent
#: ('1' when this is a retry after a dropped connection: an invocation it already
#: claimed for this runner is that claim, whose reply was lost), the last inbox entry
#: id read -> {inbox entry id or '', field, value, ...} of the claimed invocation;
#: or, when nothing is due, the wake-up counter (an integer)
TRY_CLAIM = _MARK + """
local p, runner, now, resent, last = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local handed = redis.call('XRANGE', p .. ':inbox:' .. runner, '(' .. last, '+', 'COUNT', 1)
if #handed > 0 then
  local entry = handed[1]
  local reply = {entry[1]}
  for _, v in ipairs(entry[2]) do table.insert(reply, v) end
  return reply
end
local due = redis.call('ZRANGEBYSCORE', p .. ':delayed', '-inf', now)
for _, id in ipairs(due) do
  redis.call('ZREM', p .. ':delayed', id)
  redis.call('RPUSH', p .. ':queue', id)
end
for _, id in ipairs(redis.call('LRANGE', p .. ':owned:' .. runner, 0, -1)) do
  local status = redis.call('HGET', p .. ':inv:' .. id, 'status')
  -- PENDING here: left by an older claim; RUNNING on a resend: ours, its reply lost
  if status == 'PENDING' or (resent == '1' and status == 'RUNNING') then
    local claimed = mark(p, id, runner, now)
    if claimed then table.insert(claimed, 1, ''); return claimed end
  end
end
while true do
  local id = redis.call('LMOVE', p .. ':queue', p .. ':owned:' .. runner, 'LEFT', 'RIGHT')
  if not id then break end
  local claimed = mark(p, id, runner, now)
  if claimed then table.insert(claimed, 1, ''); return claimed end
end
return tonumber(redis.call('GET', p .. ':wakeups') or '0')
"""

#: ARGV: prefix, id, now, field, value, ... -> 1, or 0 when the id exists already.
#: When a runner waits idle, the invocation is claimed for it right here and the
#: whole record added to its inbox stream: the worker starts after one hop.
ENQUEUE = _MARK + """
local p, id, now = ARGV[1], ARGV[2], ARGV[3]
local key = p .. ':inv:' .. id
if redis.call('EXISTS', key) == 1 then return 0 end
local seq = redis.call('INCR', p .. ':seq')
for i = 4, #ARGV, 2 do redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
redis.call('HSET', key, 'seq', seq)
redis.call('ZADD', p .. ':status:PENDING', seq, id)
local runner = redis.call('LPOP', p .. ':idle')
if runner then
  redis.call('RPUSH', p .. ':owned:' .. runner, id)
  local claimed = mark(p, id, runner, now)
  redis.call('XADD', p .. ':inbox:' .. runner, 'MAXLEN', '~', 64, '*', unpack(claimed))
else
  redis.call('RPUSH', p .. ':queue', id)
end
return 1
"""

#: ARGV: prefix, runner, now -> 1 when the runner is now registered idle; 0 when
#: work is waiting after all (claim it instead)
REGISTER_IDLE = """
local p, runner, now = ARGV[1], ARGV[2], ARGV[3]
if redis.call('LLEN', p .. ':queue') > 0 then return 0 end
if #redis.call('ZRANGEBYSCORE', p .. ':delayed', '-inf', now, 'LIMIT', 0, 1) > 0 then
  return 0
end
redis.call('LREM', p .. ':idle', 0, runner)
redis.call('RPUSH', p .. ':idle', runner)
return 1
"""

#: An owner-only change. ARGV: prefix, id, runner, new status, allowed old statuses
#: (comma-separated), release ('1': leave the owned list), error JSON to append to the
#: history (or ''), delay-until (or ''), count of fields to set, field, value, ...,
#: count of fields to delete, field, ... -> 1, or 0 when refused
CHANGE = """
local p, id, runner, new = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = p .. ':inv:' .. id
local status = redis.call('HGET', key, 'status')
if not status or redis.call('HGET', key, 'owner') ~= runner then return 0 end
if not string.find(',' .. ARGV[5] .. ',', ',' .. status .. ',', 1, true) then return 0 end
local i = 10
for _ = 1, tonumber(ARGV[9]) do redis.call('HSET', key, ARGV[i], ARGV[i + 1]); i = i + 2 end
local deletions = tonumber(ARGV[i]); i = i + 1
for _ = 1, deletions do redis.call('HDEL', key, ARGV[i]); i = i + 1 end
redis.call('HSET', key, 'status', new)
if ARGV[7] ~= '' then
  local history = cjson.decode(redis.call('HGET', key, 'history') or '[]')
  table.insert(history, cjson.decode(ARGV[7]))
  redis.call('HSET', key, 'history', cjson.encode(history))
end
local seq = redis.call('HGET', key, 'seq')
redis.call('ZREM', p .. ':status:' .. status, id)
redis.call('ZADD', p .. ':status:' .. new, seq, id)
if ARGV[6] == '1' then redis.call('LREM', p .. ':owned:' .. runner, 0, id) end
if ARGV[8] ~= '' then redis.call('ZADD', p .. ':delayed', ARGV[8], id) end
return 1
"""

#: ARGV: prefix, id -> 1 when a FAILED invocation went back to the queue, else 0
REQUEUE = """
local p, id = ARGV[1], ARGV[2]
local key = p .. ':inv:' .. id
if redis.call('HGET', key, 'status') ~= 'FAILED' then return 0 end
redis.call('HSET', key, 'status', 'PENDING', 'attempts', 0)
redis.call('HDEL', key, 'owner', 'started_at', 'finished_at', 'not_before')
local seq = redis.call('HGET', key, 'seq')
redis.call('ZREM', p .. ':status:FAILED', id)
redis.call('ZADD', p .. ':status:PENDING', seq, id)
redis.call('RPUSH', p .. ':queue', id)
return 1
"""
