"""The Lua scripts that make each Redis status change atomic.

Keys are built inside the scripts from the prefix, declared as the script's
one key (KEYS[1]) and passed again as ARGV[1]. On a Redis Cluster the prefix is
a hash tag (``{name}``), so every key a script builds is in the slot of the key
it declared: the script runs on that slot's node, as Cluster requires. The ids
a script finds (in a queue, an idle list) are why the keys cannot all be
declared beforehand. Layout, for prefix ``p``:

``p:inv:<id>``       hash: the invocation's fields (absent field = None); ``watched``: a
                     caller once waited for its ending (see WATCH_ENDING)
``p:queue``          list: PENDING invocations that are due, oldest first
``p:delayed``        sorted set: PENDING retries, by ``not_before``
``p:owned:<runner>`` list: what a runner claimed and has not finished
``p:idle``           list: runners blocked waiting for work, first come first served
``p:inbox:<runner>`` stream: invocations handed straight to that idle runner
``p:wakeups``        counter: raised by every ``wakeup()``
``p:status:<S>``     sorted set of the PAUSED, and of the FAILED, by ``enqueued_at``
                     (counts, listings); the PENDING ones are ``p:queue`` and
                     ``p:delayed``, the SUCCESS ones ``p:ended`` less ``p:failed``,
                     the RUNNING ones in the owned lists of ``p:claimers``
``p:claimers``       set: runners that may own invocations (added by CLAIM, which
                     every runner's claiming starts with; removed by a reroute)
``p:ended``          sorted set: SUCCESS and FAILED invocations by ``finished_at`` (purge)
``p:failed``         sorted set: FAILED invocations by ``finished_at`` (recent failures, rates)
``p:runners``        sorted set: runner id by last heartbeat
``p:runner:<id>``    hash: the runner's record
``p:waiters:<id>``   set: tokens of callers blocked until the invocation ends
``p:wake:<token>``   list: ids that ended, pushed for the caller blocked on it (BLPOP)

The scripts share Lua functions (``mark``, ``take``, ``claim``, ``ahead``,
``change``, ``announce``), so the script that completes an invocation and
claims the next, and the one that hands work to idle runners, run the very
same rules as the scripts that do one of them. An enqueue is no script
(HSET, RPUSH, LLEN of ``p:idle``); ENQUEUE_AGAIN is its resend. With
``batch=N`` a claim takes up to N (``ahead``) and a completion script writes
several completions: the sorted sets, the queue and the owned list are then
written once for all of them.
"""

from __future__ import annotations

#: the hash of invocation ``key`` as a flat list, and where each field's value is in it
_READ = """
local function read(key)
  local fields = redis.call('HGETALL', key)
  local at = {}
  for i = 1, #fields, 2 do at[fields[i]] = i + 1 end
  return fields, at
end
"""

#: write the claim of the PENDING invocation read as ``fields`` for ``runner`` into its hash
#: and into ``fields`` (the reply is that reading with the claim's changes made)
_CLAIMED = """
local function claimed_as(key, fields, at, runner, now)
  local changes = {'status', 'RUNNING', 'owner', runner, 'started_at', now,
                   'attempts', tostring(tonumber(fields[at.attempts]) + 1)}
  redis.call('HSET', key, unpack(changes))
  for i = 1, #changes, 2 do
    local where = at[changes[i]]
    if where then
      fields[where] = changes[i + 1]
    else
      table.insert(fields, changes[i]); table.insert(fields, changes[i + 1])
    end
  end
  return fields
end
"""

#: take the PENDING invocation ``id``, already in ``runner``'s owned list, for ``runner``
#: -> its hash as a flat list, or false when it is not PENDING (and leaves the list).
#: The hash is read once, and the reply is that reading with the claim's changes made.
_MARK = _READ + _CLAIMED + """
local function mark(p, id, runner, now)
  local key = p .. ':inv:' .. id
  local fields, at = read(key)
  local status = at.status and fields[at.status]
  if status == 'RUNNING' and at.owner and fields[at.owner] == runner then
    return fields  -- ours already: a retry after a lost reply
  end
  if status ~= 'PENDING' then
    redis.call('LREM', p .. ':owned:' .. runner, 0, id)
    return false
  end
  return claimed_as(key, fields, at, runner, now)
end
"""

#: the oldest due invocation, moved into ``runner``'s owned list and claimed (``mark``)
#: -> its hash as a flat list, or nil when the queue is empty (stale entries dropped)
_TAKE = _MARK + """
local function take(p, runner, now)
  while true do
    local id = redis.call('LMOVE', p .. ':queue', p .. ':owned:' .. runner, 'LEFT', 'RIGHT')
    if not id then return nil end
    local fields = mark(p, id, runner, now)
    if fields then return fields end
  end
end
"""

#: the next invocations for ``runner`` -> a list of {inbox entry id or '', field, value,
#: ...}, empty when none is due: what an enqueue handed to its inbox after the entry
#: ``last``, else the oldest due one and, when it was never attempted and may be
#: attempted again, up to ``size`` in all (see ``ahead``). ``resent`` ('1' when this is a
#: retry after a dropped connection): what it already claimed for this runner is that
#: claim, whose reply was lost. ``last`` nil: the runner comes from a completion (the busy
#: path), so it was in no idle list (CLAIM takes it off before it claims) and nothing was
#: handed to its inbox, nor left in its owned list by a claim whose reply was lost:
#: neither is looked at, two commands a task fewer.
_CLAIM = _TAKE + """
local function ahead(p, runner, now, size, claimed)
  -- the queue's head, taken while never attempted and allowed another attempt: one
  -- LRANGE, LTRIM and RPUSH for all of them
  local ids = redis.call('LRANGE', p .. ':queue', 0, size - #claimed - 1)
  local taken, looked = {}, 0
  for _, id in ipairs(ids) do
    local key = p .. ':inv:' .. id
    local fields, at = read(key)
    if fields[at.status] == 'PENDING' then
      if fields[at.attempts] ~= '0' or tonumber(fields[at.max_attempts]) < 2 then break end
      table.insert(taken, id)
      local record = claimed_as(key, fields, at, runner, now)
      table.insert(record, 1, '')
      table.insert(claimed, record)
    end  -- else a stale entry, dropped as ``mark`` drops it
    looked = looked + 1
  end
  if looked > 0 then redis.call('LTRIM', p .. ':queue', looked, -1) end
  if #taken > 0 then redis.call('RPUSH', p .. ':owned:' .. runner, unpack(taken)) end
end

local function claim(p, runner, now, resent, last, size, retries)
  if last then
    local handed = redis.call('XRANGE', p .. ':inbox:' .. runner, '(' .. last, '+', 'COUNT', 1)
    if #handed > 0 then
      local entry = handed[1]
      local reply = {entry[1]}
      for _, v in ipairs(entry[2]) do table.insert(reply, v) end
      return {reply}
    end
  end
  if retries then
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. ':delayed', '-inf', now)) do
      redis.call('ZREM', p .. ':delayed', id)
      redis.call('RPUSH', p .. ':queue', id)
    end
  end
  local claimed = {}
  if last then
    for _, id in ipairs(redis.call('LRANGE', p .. ':owned:' .. runner, 0, -1)) do
      local status = redis.call('HGET', p .. ':inv:' .. id, 'status')
      -- PENDING here: left by an older claim; RUNNING on a resend: ours, its reply lost
      -- (all of them: a lost claim may have taken several)
      if status == 'PENDING' or (resent == '1' and status == 'RUNNING') then
        local fields = mark(p, id, runner, now)
        if fields then table.insert(fields, 1, ''); table.insert(claimed, fields) end
      end
    end
    if #claimed > 0 then return claimed end
  end
  local fields = take(p, runner, now)
  if not fields then return claimed end
  table.insert(fields, 1, ''); table.insert(claimed, fields)
  if size < 2 then return claimed end
  local first = claimed[1]
  for i = 2, #first, 2 do
    if first[i] == 'attempts' and first[i + 1] ~= '1' then return claimed end
    if first[i] == 'max_attempts' and tonumber(first[i + 1]) < 2 then return claimed end
  end
  ahead(p, runner, now, size, claimed)
  return claimed
end
"""

#: tell every caller blocked until invocation ``id`` ends (see WATCH_ENDING) that it has
_ANNOUNCE = """
local function announce(p, id)
  local key = p .. ':waiters:' .. id
  local waiters = redis.call('SMEMBERS', key)
  if #waiters == 0 then return end
  for _, token in ipairs(waiters) do
    local wake = p .. ':wake:' .. token
    redis.call('RPUSH', wake, id)
    redis.call('EXPIRE', wake, 60)
  end
  redis.call('DEL', key)
end
"""

#: An owner-only change, reading its arguments from ARGV[at] on: id, new status, allowed
#: old statuses (comma-separated), release ('1': leave the owned list), error JSON to
#: append to the history (or ''), delay-until (or ''), count of fields to set, field,
#: value, ..., count of fields to delete, field, ... -> 1, or 0 when refused
_CHANGE = _ANNOUNCE + """
local function change(p, runner, at)
  local id, new = ARGV[at], ARGV[at + 1]
  local key = p .. ':inv:' .. id
  local current = redis.call('HMGET', key, 'status', 'owner', 'enqueued_at', 'watched')
  local status = current[1]
  if not status or current[2] ~= runner then return 0 end
  if not string.find(',' .. ARGV[at + 2] .. ',', ',' .. status .. ',', 1, true) then
    return 0
  end
  local sets, i, finished = {'status', new}, at + 7, 0
  for _ = 1, tonumber(ARGV[at + 6]) do
    if ARGV[i] == 'finished_at' then finished = ARGV[i + 1] end
    table.insert(sets, ARGV[i]); table.insert(sets, ARGV[i + 1]); i = i + 2
  end
  redis.call('HSET', key, unpack(sets))
  local deletions = tonumber(ARGV[i])
  if deletions > 0 then redis.call('HDEL', key, unpack(ARGV, i + 1, i + deletions)) end
  if ARGV[at + 4] ~= '' then
    local history = cjson.decode(redis.call('HGET', key, 'history') or '[]')
    table.insert(history, cjson.decode(ARGV[at + 4]))
    redis.call('HSET', key, 'history', cjson.encode(history))
  end
  if status == 'PAUSED' then redis.call('ZREM', p .. ':status:PAUSED', id) end
  if new == 'PAUSED' or new == 'FAILED' then
    redis.call('ZADD', p .. ':status:' .. new, current[3], id)
  end
  if ARGV[at + 3] == '1' then redis.call('LREM', p .. ':owned:' .. runner, 0, id) end
  if ARGV[at + 5] ~= '' then redis.call('ZADD', p .. ':delayed', ARGV[at + 5], id) end
  if new == 'SUCCESS' or new == 'FAILED' then
    redis.call('ZADD', p .. ':ended', finished, id)
    if new == 'FAILED' then redis.call('ZADD', p .. ':failed', finished, id) end
    if current[4] then announce(p, id) end  -- someone registered to wait for it
  end
  return 1
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
    redis.call('SADD', p .. ':claimers', runner)
    return mark(p, id, runner, now)
  end
end
return nil
"""

#: One round trip for a claim, and for going idle when nothing is due. ARGV: prefix,
#: runner, now, resent, last inbox entry read (see ``claim``), the wake-up counter the
#: claim saw first ('' on its first try), wait ('1': it will block for work), size (the
#: most to claim) -> a list of the claimed invocations as ``claim`` gives them; or the
#: wake-up counter, the runner registered in ``p:idle`` only when it waits and the counter
#: is the one it saw first (an enqueue then hands it the next invocation through its
#: inbox). Inbox entries before ``last`` have been read, so they go first: they copy whole
#: records, payloads included, and only a runner that may register idle can be handed
#: more, so this script is the one place to trim and the busy path (COMPLETE_AND_CLAIM)
#: need not.
CLAIM = _CLAIM + """
local p, runner, now, resent, last, seen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if last ~= '0-0' then redis.call('XTRIM', p .. ':inbox:' .. runner, 'MINID', last) end
redis.call('LREM', p .. ':idle', 0, runner)
redis.call('SADD', p .. ':claimers', runner)
local claimed = claim(p, runner, now, resent, last, tonumber(ARGV[8]), true)
if #claimed > 0 then return claimed end
local wakeups = tonumber(redis.call('GET', p .. ':wakeups') or '0')
if ARGV[7] == '1' and (seen == '' or tonumber(seen) == wakeups) then
  redis.call('RPUSH', p .. ':idle', runner)
end
return wakeups
"""

#: An owner-only change (see ``change``). ARGV: prefix, runner, then change's arguments
CHANGE = _CHANGE + """
return change(ARGV[1], ARGV[2], 3)
"""

#: Successful invocations' completions, and the claim of the runner's next ones.
#: ARGV: prefix, runner, now, size (the most to claim; 0: none), retries ('1': the due
#: retries in ``p:delayed`` go to the queue first, as CLAIM always does; the busy path
#: asks for it a few times a second, a command a task fewer), the number of
#: completions, then per completion: id, result, started_at ('': as claimed),
#: finished_at -> {{1 or 0 per completion: written, or refused}, claimed...}, the claimed
#: ones as ``claim`` gives them; none when the last completion is refused. Each
#: completion is the owner-only change that ``change`` makes, with every sorted set and
#: the owned list written once for all of them. A resend after a lost reply needs no care
#: here: the completions it repeats are refused.
COMPLETE_AND_CLAIM = _ANNOUNCE + _CLAIM + """
local p, runner, now, size, retries, count = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]),
  ARGV[5] == '1', tonumber(ARGV[6])
local written, ids, ended = {}, {}, {}
for n = 0, count - 1 do
  local id, result, started, finished = ARGV[7 + 4 * n], ARGV[8 + 4 * n], ARGV[9 + 4 * n],
    ARGV[10 + 4 * n]
  local key = p .. ':inv:' .. id
  local current = redis.call('HMGET', key, 'status', 'owner', 'watched')
  if current[1] == 'RUNNING' and current[2] == runner then
    if started == '' then
      redis.call('HSET', key, 'status', 'SUCCESS', 'result', result, 'finished_at', finished)
    else
      redis.call('HSET', key, 'status', 'SUCCESS', 'result', result, 'finished_at', finished,
                 'started_at', started)
    end
    table.insert(ids, id)
    table.insert(ended, finished); table.insert(ended, id)
    if current[3] then announce(p, id) end  -- someone registered to wait for it
    table.insert(written, 1)
  else
    table.insert(written, 0)
  end
end
if #ids > 0 then
  local owned = p .. ':owned:' .. runner
  local head = #ids > 1 and redis.call('LRANGE', owned, 0, #ids - 1) or {}
  local in_order = #head == #ids
  for i = 1, #head do in_order = in_order and head[i] == ids[i] end
  if in_order then
    redis.call('LTRIM', owned, #ids, -1)  -- a batch's, completed in the order claimed
  else
    for _, id in ipairs(ids) do redis.call('LREM', owned, 0, id) end
  end
  redis.call('ZADD', p .. ':ended', unpack(ended))
end
if size == 0 or written[count] == 0 then return {written} end
local claimed = claim(p, runner, now, '0', nil, size, retries)
table.insert(claimed, 1, written)
return claimed
"""

#: Invocations a runner claimed ahead and will not start, back to the head of the queue
#: as never attempted. ARGV: prefix, runner, id... (in queue order) -> how many went back
GIVE_BACK = """
local p, runner = ARGV[1], ARGV[2]
local back = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local key = p .. ':inv:' .. id
  local current = redis.call('HMGET', key, 'status', 'owner', 'attempts')
  if current[1] == 'RUNNING' and current[2] == runner then
    redis.call('HSET', key, 'status', 'PENDING', 'attempts', math.max(tonumber(current[3]) - 1, 0))
    redis.call('HDEL', key, 'owner', 'started_at')
    redis.call('LREM', p .. ':owned:' .. runner, 0, id)
    table.insert(back, 1, id)  -- reversed: LPUSH puts the last one first
  end
end
if #back == 0 then return 0 end
redis.call('LPUSH', p .. ':queue', unpack(back))
return #back
"""

#: An enqueue sent again after a lost reply (the first send, HSET, RPUSH and LLEN
#: without a script, may have been carried out, or only its HSET). ARGV: prefix, id,
#: field, value, ... (the whole new hash) -> how many runners wait idle (see
#: HAND_OUT). A hash that exists is the first send's: it is left as it is (it may have
#: been claimed since), and only queued if it is PENDING and in neither the queue nor
#: ``p:delayed``, where the first send's RPUSH would have put it.
ENQUEUE_AGAIN = """
local p, id = ARGV[1], ARGV[2]
local key, queue = p .. ':inv:' .. id, p .. ':queue'
if redis.call('EXISTS', key) == 0 then
  redis.call('HSET', key, unpack(ARGV, 3))
  redis.call('RPUSH', queue, id)
elseif redis.call('HGET', key, 'status') == 'PENDING' and not redis.call('LPOS', queue, id)
    and not redis.call('ZSCORE', p .. ':delayed', id) then
  redis.call('RPUSH', queue, id)
end
return redis.call('LLEN', p .. ':idle')
"""

#: Hand the queue's oldest invocations to runners blocked idle, one each, first come first
#: served: each is claimed for its runner (``take``, as CLAIM would) and its whole record
#: added to that runner's inbox stream, where the runner blocks (XREAD): the worker starts
#: after one hop. Sent by an enqueue that saw idle runners, and by nothing else on the busy
#: path. A runner registers idle only when it found the queue empty (CLAIM), so when the
#: queue is empty again here it goes back to the head of the idle list. ARGV: prefix, now
#: -> how many were handed out.
HAND_OUT = _TAKE + """
local p, now = ARGV[1], ARGV[2]
local handed = 0
while true do
  local runner = redis.call('LPOP', p .. ':idle')
  if not runner then return handed end
  local fields = take(p, runner, now)
  if not fields then
    redis.call('LPUSH', p .. ':idle', runner)
    return handed
  end
  redis.call('XADD', p .. ':inbox:' .. runner, 'MAXLEN', '~', 64, '*', unpack(fields))
  handed = handed + 1
end
"""

#: Before a caller blocks until one of some invocations ends. ARGV: prefix, the caller's
#: token, seconds to keep the registration, id... -> 1 when one of them has ended already
#: (or is unknown); else 0, with the token added to each one's waiters, so the script
#: that ends one pushes its id to ``p:wake:<token>``. Looking and registering in one
#: script leaves no moment in which an ending could be missed.
WATCH_ENDING = """
local p, token, ttl = ARGV[1], ARGV[2], ARGV[3]
for i = 4, #ARGV do
  local status = redis.call('HGET', p .. ':inv:' .. ARGV[i], 'status')
  if not status or status == 'SUCCESS' or status == 'FAILED' then return 1 end
end
for i = 4, #ARGV do
  local key = p .. ':waiters:' .. ARGV[i]
  redis.call('SADD', key, token)
  redis.call('EXPIRE', key, ttl)
  -- the ending reads this with the status: only a watched one looks for waiters
  redis.call('HSET', p .. ':inv:' .. ARGV[i], 'watched', '1')
end
return 0
"""

#: After the wait. ARGV: prefix, the caller's token, id... -> 1
UNWATCH_ENDING = """
local p, token = ARGV[1], ARGV[2]
for i = 3, #ARGV do redis.call('SREM', p .. ':waiters:' .. ARGV[i], token) end
redis.call('DEL', p .. ':wake:' .. token)
return 1
"""

#: Announce endings written by a transaction (a reroute past max_attempts).
#: ARGV: prefix, id... -> 1
ANNOUNCE = _ANNOUNCE + """
for i = 2, #ARGV do announce(ARGV[1], ARGV[i]) end
return 1
"""

#: ARGV: prefix, id -> 1 when a FAILED invocation went back to the queue, else 0
REQUEUE = """
local p, id = ARGV[1], ARGV[2]
local key = p .. ':inv:' .. id
if redis.call('HGET', key, 'status') ~= 'FAILED' then return 0 end
redis.call('HSET', key, 'status', 'PENDING', 'attempts', 0)
redis.call('HDEL', key, 'owner', 'started_at', 'finished_at', 'not_before')
redis.call('ZREM', p .. ':status:FAILED', id)
redis.call('ZREM', p .. ':ended', id)
redis.call('ZREM', p .. ':failed', id)
redis.call('RPUSH', p .. ':queue', id)
return 1
"""

#: ARGV: prefix, record ttl, the heartbeat's age when sent (seconds, on the sender's clock),
#: then per runner 8 values: id, kind, pid, host, supervisor, slot, started_at, phase. The time
#: stored is the server's own at arrival, less that age: a heartbeat delayed on the way (a
#: link that stalled, a resend after an outage) counts from when it arrived, and every
#: host's heartbeats are judged by one clock, so host clocks need not agree.
HEARTBEAT = """
local p, ttl = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000 - tonumber(ARGV[3])
for i = 4, #ARGV, 8 do
  local id = ARGV[i]
  local key = p .. ':runner:' .. id
  redis.call('ZADD', p .. ':runners', now, id)
  redis.call('HSET', key, 'id', id, 'kind', ARGV[i + 1], 'pid', ARGV[i + 2], 'host', ARGV[i + 3],
             'supervisor', ARGV[i + 4], 'slot', ARGV[i + 5], 'started_at', ARGV[i + 6],
             'phase', ARGV[i + 7])
  redis.call('EXPIRE', key, ttl)
end
return 1
"""

#: ARGV: prefix, finished_before, limit -> how many finished invocations were deleted,
#: oldest first (see Backend.purge); an id whose invocation is not finished any more
#: only leaves ``p:ended``
PURGE = """
local p, before, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local purged = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. ':ended', '-inf', '(' .. before,
                               'LIMIT', 0, limit)) do
  local key = p .. ':inv:' .. id
  local status = redis.call('HGET', key, 'status')
  if status == 'SUCCESS' or status == 'FAILED' then
    redis.call('DEL', key)
    if status == 'FAILED' then redis.call('ZREM', p .. ':status:FAILED', id) end
    purged = purged + 1
  end
  redis.call('ZREM', p .. ':ended', id)
  redis.call('ZREM', p .. ':failed', id)
end
return purged
"""

#: the ids of the RUNNING invocations: those in the owned lists of ``p:claimers`` that
#: are RUNNING for that runner (a sorted set of them would cost every task two commands)
_RUNNING = """
local function running(p)
  local ids = {}
  for _, runner in ipairs(redis.call('SMEMBERS', p .. ':claimers')) do
    for _, id in ipairs(redis.call('LRANGE', p .. ':owned:' .. runner, 0, -1)) do
      local current = redis.call('HMGET', p .. ':inv:' .. id, 'status', 'owner')
      if current[1] == 'RUNNING' and current[2] == runner then table.insert(ids, id) end
    end
  end
  return ids
end
"""

#: ARGV: prefix -> the ids of the RUNNING invocations
RUNNING = _RUNNING + """
return running(ARGV[1])
"""

#: Every count at one moment. ARGV: prefix -> {queued, delayed retries, ended, failed
#: (``p:failed``), PAUSED, FAILED (``p:status:FAILED``), RUNNING}
COUNTS = _RUNNING + """
local p = ARGV[1]
return {redis.call('LLEN', p .. ':queue'), redis.call('ZCARD', p .. ':delayed'),
        redis.call('ZCARD', p .. ':ended'), redis.call('ZCARD', p .. ':failed'),
        redis.call('ZCARD', p .. ':status:PAUSED'), redis.call('ZCARD', p .. ':status:FAILED'),
        #running(p)}
"""
