"""Lua scripts: each does in one round trip what arq does in several, on the very same keys.

They stay compatible with the published arq: its WATCH-based claim and enqueue abort when one of these scripts
has written the key they watch, and these scripts skip keys that arq has set. Keys are built inside the scripts
from prefixes passed as arguments (fine on a single Redis or Sentinel; arq's layout was never Cluster-safe).
"""

from __future__ import annotations

from .scripts_enqueue import DELETE_IF_EQUAL, ENQUEUE, ENQUEUE_MANY, REQUEST_ABORT, WAKE

# the supervisor's RELEASE and RENEW_FOR live in arq.scripts_fleet: a worker never loads them
__all__ = [
    'WAKE', 'ENQUEUE', 'ENQUEUE_MANY', 'REQUEST_ABORT', 'DELETE_IF_EQUAL', 'CLAIM', 'SETTLE', 'SETTLE_AND_CLAIM',
    'REFRESH_LEASES', 'POLL_ABORTS',
]  # fmt: skip

# Claim up to `want` due jobs for this worker and start them: take the in-progress key as a lease (SET PX, on ids
# whose key an MGET found absent), read the payload and bump the try counter exactly as arq's start transaction does.
# The lease's value is the claim's token (`<worker id>:<claim number>`): published arq only ever checks that key with
# EXISTS, and our settle, refresh and release act only while it still holds their token (fencing). The worker's one
# claim record (its last token and ids, kept for one lease) lets a worker whose claim reply was lost send the same
# token again with `recover` set and get those jobs back, instead of leaving them leased to no one.
# KEYS: queue. ARGV: now ms, lease ms, want, read limit, retry ttl s, check abort (1/0),
#   job prefix, in-progress prefix, retry prefix, abort set, claim record key, token, recover (1/0), wake list.
# Returns {queued count, next future score or false, then per claimed job: id, payload or false, try, score,
#   1 if an abort had been requested before it started}.
CLAIM = """
local queue = KEYS[1]
local now, lease, want, limit = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local retry_ttl, check_abort = ARGV[5], ARGV[6] == '1'
local job_p, ip_p, retry_p, abort_key, record_key = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local token = ARGV[12]
local out = {redis.call('ZCARD', queue), false}
local nxt = redis.call('ZRANGEBYSCORE', queue, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
if #nxt > 0 then
  out[2] = nxt[2]
end
if ARGV[13] == '1' then
  local recorded = redis.call('LRANGE', record_key, 0, -1)
  if recorded[1] == token then
    for i = 2, #recorded do
      local id = recorded[i]
      local score = redis.call('ZSCORE', queue, id)
      if score and redis.call('GET', ip_p .. id) == token then
        redis.call('PEXPIRE', ip_p .. id, lease)
        out[#out + 1] = id
        out[#out + 1] = redis.call('GET', job_p .. id)
        out[#out + 1] = tonumber(redis.call('GET', retry_p .. id) or '1')
        out[#out + 1] = score
        out[#out + 1] = 0
      end
    end
    return out
  end
end
local claimed, offset, ids = 0, 0, {}
-- due jobs are read in chunks a little larger than what we want, and one MGET tells which are leased already
-- (running jobs stay in the queue, at its head): a failed SET NX per leased job would cost a command each
local chunk = math.min(limit, math.max(want * 2, 16))
-- a bounded scan, so Redis is never blocked for long
while claimed < want and offset < limit * 10 do
  local batch = redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'WITHSCORES', 'LIMIT', offset, chunk)
  if #batch == 0 then
    break
  end
  local keys = {}
  for i = 1, #batch, 2 do
    keys[#keys + 1] = ip_p .. batch[i]
  end
  local leased = redis.call('MGET', unpack(keys))
  for i = 1, #batch, 2 do
    local id, score = batch[i], batch[i + 1]
    if not leased[(i + 1) / 2] and tonumber(score) ~= 0 then
      redis.call('SET', ip_p .. id, token, 'PX', lease)
      local try = redis.call('INCR', retry_p .. id)
      redis.call('EXPIRE', retry_p .. id, retry_ttl)
      local aborted = 0
      if check_abort then
        aborted = redis.call('ZREM', abort_key, id)
      end
      out[#out + 1] = id
      out[#out + 1] = false  -- the payload, read below for all the claimed jobs at once
      out[#out + 1] = try
      out[#out + 1] = score
      out[#out + 1] = aborted
      ids[#ids + 1] = id
      claimed = claimed + 1
      if claimed >= want then
        break
      end
    end
  end
  if #batch < chunk * 2 then
    break
  end
  offset = offset + chunk
end
if claimed < want then
  redis.call('DEL', ARGV[14])  -- no due job is left unclaimed: the wake tokens are stale
end
for start = 1, #ids, 1000 do
  local keys = {}
  for i = start, math.min(start + 999, #ids) do
    keys[#keys + 1] = job_p .. ids[i]
  end
  local payloads = redis.call('MGET', unpack(keys))
  for i = 1, #keys do
    out[2 + (start + i - 2) * 5 + 2] = payloads[i]
  end
end
if claimed > 0 then
  redis.call('DEL', record_key)
  redis.call('RPUSH', record_key, token, unpack(ids))
  redis.call('PEXPIRE', record_key, lease)
end
return out
"""


# Settle a batch of jobs in one round trip: finish (result stored, keys removed) or re-queue. The worker's settle and
# the supervisor's failing of a poison job both come here: one finish path.
# KEYS: queue. ARGV: job prefix, in-progress prefix, retry prefix, result prefix, abort set, done channel prefix,
#   deaths prefix, recent-outcomes key prefix, recent cap (0: no index), recent ttl ms, now ms,
#   then the jobs packed in one argument (each field a 4-byte big-endian length and its bytes; 7
#   arguments per job cost the client more to send than the settle costs Redis), 7 fields per job:
#   id, op, token, tombstone ms, result payload, result px, score increment.
#   op: 's' finish as a success, 'f' finish as a failure, 'r' re-queue, 'g' re-queue and give back the try (a
#   shutdown cancelled it, the job did not fail).
#   token: the lease's value when this worker claimed the job; nothing is done unless the in-progress key still holds
#   it (a worker whose lease lapsed and whose job another worker claimed since cannot undo that newer run). This also
#   makes a settle safe to send again after a lost reply: the first one removed or replaced the key.
#   tombstone ms: '0' deletes the in-progress key, otherwise it is kept that long (cron jobs).
#   result payload: '' stores no result. result px: '0' keeps the result forever (arq sent the invalid `PX 0`).
# Returns, for each job whose lease was lost (its settlement dropped), its id and why ('o', 'q' or 'g', below).
# Under maxmemory (noeviction) the script still runs: its first write is a DEL, which Redis allows, and a script
# that began writing may finish; so running jobs record their outcome while a full Redis refuses new claims.
SETTLE = """
local queue = KEYS[1]
local job_p, ip_p, retry_p, result_p, abort_key, done_p = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local deaths_p, recent_p, recent_cap, recent_ttl, now = ARGV[7], ARGV[8], tonumber(ARGV[9]), ARGV[10], ARGV[11]
local blob, pos, jobs = ARGV[12], 1, {}
local function field()
  local size, start = struct.unpack('>I4', blob, pos)
  pos = start + size
  return string.sub(blob, start, pos - 1)
end
while pos <= #blob do
  local id, op, token, tomb, payload, px, incr = field(), field(), field(), field(), field(), field(), field()
  jobs[#jobs + 1] = {id, op, token, tomb, payload, px, incr}
end
-- a script that fails half way keeps what it wrote: refuse keys of the wrong type before writing anything
local shared = {queue}
for _, job in ipairs(jobs) do
  if job[2] == 's' or job[2] == 'f' then
    shared[2] = abort_key
    if recent_cap > 0 then
      shared[3], shared[4] = recent_p .. 'complete', recent_p .. 'failed'
    end
    break
  end
end
for _, key in ipairs(shared) do
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'none' and kind ~= 'zset' then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. kind .. ', not a sorted set')
  end
end
local lost, indexed, finished = {}, {}, {}
for _, job in ipairs(jobs) do
  local id, op, token, tomb, payload, px, incr = unpack(job)
  local holder = redis.call('GET', ip_p .. id)
  if holder ~= token then
    -- our outcome is dropped: 'o' another worker holds the job, 'q' nobody does and it waits to run again, 'g' it
    -- is settled already (by another worker's run, or by this very settle if it is sent again after a lost reply)
    lost[#lost + 1] = id
    if holder then
      lost[#lost + 1] = 'o'
    elseif redis.call('ZSCORE', queue, id) then
      lost[#lost + 1] = 'q'
    else
      lost[#lost + 1] = 'g'
    end
  elseif op == 's' or op == 'f' then
    if tomb == '0' then
      redis.call('DEL', ip_p .. id, job_p .. id, retry_p .. id, deaths_p .. id)
    else
      redis.call('PEXPIRE', ip_p .. id, tomb)
      redis.call('DEL', job_p .. id, retry_p .. id, deaths_p .. id)
    end
    if payload ~= '' then
      if px == '0' then
        redis.call('SET', result_p .. id, payload)
      else
        redis.call('SET', result_p .. id, payload, 'PX', px)
      end
    end
    finished[#finished + 1] = id
    redis.call('PUBLISH', done_p .. id, '1')
    if recent_cap > 0 then
      local index = recent_p .. (op == 's' and 'complete' or 'failed')
      local entries = indexed[index]
      if not entries then
        entries = {}
        indexed[index] = entries
      end
      entries[#entries + 1] = now
      entries[#entries + 1] = id
    end
  else
    if tomb == '0' then
      redis.call('DEL', ip_p .. id)
    else
      redis.call('PEXPIRE', ip_p .. id, tomb)
    end
    if incr ~= '0' then
      redis.call('ZINCRBY', queue, incr, id)
    end
    if op == 'g' and redis.call('EXISTS', retry_p .. id) == 1 then
      redis.call('DECR', retry_p .. id)
    end
  end
end
-- the finished jobs leave the queue (and the abort set, when it has members) in one command per slice
local has_aborts = #finished > 0 and redis.call('EXISTS', abort_key) == 1
for start = 1, #finished, 1000 do
  local slice = {unpack(finished, start, math.min(start + 999, #finished))}
  redis.call('ZREM', queue, unpack(slice))
  if has_aborts then
    redis.call('ZREM', abort_key, unpack(slice))
  end
end
-- indexed, capped and expiring once per batch, not once per job
for index, entries in pairs(indexed) do
  for start = 1, #entries, 2000 do
    redis.call('ZADD', index, unpack(entries, start, math.min(start + 1999, #entries)))
  end
  redis.call('ZREMRANGEBYRANK', index, 0, -recent_cap - 1)
  redis.call('PEXPIRE', index, recent_ttl)
end
return lost
"""


# Keep this worker's leases alive. KEYS: queue. ARGV: lease ms, in-progress prefix, then job id and token pairs.
# A lease that lapsed (a long loop stall, a Redis outage) is taken again when the job is still queued and nobody else
# holds it; another worker may have run it meanwhile (at-least-once). A lease another worker holds now is lost.
# Returns {how many leases had lapsed and were taken again, then the ids whose lease another worker holds}.
REFRESH_LEASES = """
local out = {0}
for i = 3, #ARGV, 2 do
  local key, token = ARGV[2] .. ARGV[i], ARGV[i + 1]
  local holder = redis.call('GET', key)
  if holder == token then
    redis.call('PEXPIRE', key, ARGV[1])
  elseif not holder then
    if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
      redis.call('SET', key, token, 'PX', ARGV[1])
      out[1] = out[1] + 1
    end
  else
    out[#out + 1] = ARGV[i]
  end
end
return out
"""


# The ids whose abort was requested, pruning stale requests (arq never prunes them, so an old request aborted a
# future job with the same id): older than max age and the job is neither pending anywhere nor running.
# KEYS: abort set. ARGV: now ms, max age ms, job prefix, in-progress prefix.
POLL_ABORTS = """
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local cutoff = tonumber(ARGV[1]) - tonumber(ARGV[2])
local out = {}
for i = 1, #entries, 2 do
  local id = entries[i]
  if tonumber(entries[i + 1]) < cutoff and redis.call('EXISTS', ARGV[3] .. id, ARGV[4] .. id) == 0 then
    redis.call('ZREM', KEYS[1], id)
  else
    out[#out + 1] = id
  end
end
return out
"""


def _as_function(name: str, script: str) -> str:
    """A script's body as a Lua function of (KEYS, ARGV), to run several in one call."""
    return f'local function {name}(KEYS, ARGV)\n{script}\nend\n'


# SETTLE, then CLAIM for the slots the settled jobs free, in one round trip (a busy worker's loop otherwise sends a
# claim after every settle). ARGV: how many of the arguments are SETTLE's, then SETTLE's, then CLAIM's.
# Returns {SETTLE's reply, CLAIM's reply, or false when Redis is full}; SETTLE's refusal (a key of the wrong type) is
# returned as the error. A full Redis (maxmemory, noeviction) refuses a script's first write that may grow memory, but
# lets a script that began writing finish: SETTLE's first write (a DEL) would let CLAIM's through, and jobs would start
# that cannot record their outcome. So the script asks first, with a growing write to a key that never exists
# (LPUSHX writes nothing then), and claims nothing when Redis refuses it.
SETTLE_AND_CLAIM = (
    _as_function('settle', SETTLE)
    + _as_function('claim', CLAIM)
    + """
local full = redis.pcall('LPUSHX', 'arq:never-created', '1')
full = type(full) == 'table' and full.err ~= nil
local n = tonumber(ARGV[1])
local settle_argv, claim_argv = {}, {}
for i = 2, n + 1 do
  settle_argv[#settle_argv + 1] = ARGV[i]
end
for i = n + 2, #ARGV do
  claim_argv[#claim_argv + 1] = ARGV[i]
end
local lost = settle(KEYS, settle_argv)
if lost.err then
  return lost
end
if full then
  return {lost, false}
end
return {lost, claim(KEYS, claim_argv)}
"""
)
