"""Lua scripts: each does in one round trip what arq does in several, on the very same keys.

They stay compatible with the published arq: its WATCH-based claim and enqueue abort when one of these scripts
has written the key they watch, and these scripts skip keys that arq has set. Keys are built inside the scripts
from prefixes passed as arguments (fine on a single Redis or Sentinel; arq's layout was never Cluster-safe).
"""

from __future__ import annotations

# KEYS: job key, result key, queue. ARGV: expires ms, payload, score, job id, nudge channel.
# Returns 1 when enqueued, 0 when a job or result with this id already exists (arq's uniqueness rule).
ENQUEUE = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) ~= 0 then
  return 0
end
redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[3])
return 1
"""

# Claim up to `want` due jobs for this worker and start them: take the in-progress key as a lease (SET PX, on ids
# whose key an MGET found absent), read the payload and bump the try counter exactly as arq's start transaction does.
# The ids claimed are recorded under the claim's token for one lease: if the reply is lost (a cut connection), the
# worker sends the same token again with `recover` set and gets those jobs back, instead of leaving them leased to
# no one with a try used up.
# KEYS: queue. ARGV: now ms, lease ms, want, read limit, retry ttl s, check abort (1/0),
#   job prefix, in-progress prefix, retry prefix, abort set, claim record key, recover (1/0).
# Returns {queued count, next future score or false, then per claimed job: id, payload or false, try, score,
#   1 if an abort had been requested before it started}.
CLAIM = """
local queue = KEYS[1]
local now, lease, want, limit = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local retry_ttl, check_abort = ARGV[5], ARGV[6] == '1'
local job_p, ip_p, retry_p, abort_key, record_key = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local out = {redis.call('ZCARD', queue), false}
local nxt = redis.call('ZRANGEBYSCORE', queue, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
if #nxt > 0 then
  out[2] = nxt[2]
end
if ARGV[12] == '1' then
  local recorded = redis.call('LRANGE', record_key, 0, -1)
  if #recorded > 0 then
    for _, id in ipairs(recorded) do
      local score = redis.call('ZSCORE', queue, id)
      if score then
        redis.call('PEXPIRE', ip_p .. id, lease)
        out[#out + 1] = id
        out[#out + 1] = redis.call('GET', job_p .. id)
        out[#out + 1] = tonumber(redis.call('GET', retry_p .. id) or '1')
        out[#out + 1] = score
        out[#out + 1] = 0
      end
    end
    redis.call('DEL', record_key)
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
      redis.call('SET', ip_p .. id, '1', 'PX', lease)
      local payload = redis.call('GET', job_p .. id)
      local try = redis.call('INCR', retry_p .. id)
      redis.call('EXPIRE', retry_p .. id, retry_ttl)
      local aborted = 0
      if check_abort then
        aborted = redis.call('ZREM', abort_key, id)
      end
      out[#out + 1] = id
      out[#out + 1] = payload
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
if claimed > 0 then
  redis.call('RPUSH', record_key, unpack(ids))
  redis.call('PEXPIRE', record_key, lease)
end
return out
"""

# Settle a batch of jobs in one round trip: finish (result stored, keys removed) or re-queue.
# KEYS: queue. ARGV: job prefix, in-progress prefix, retry prefix, result prefix, abort set, done channel prefix,
#   settled-marker prefix, then 7 fields per job: id, op, tombstone ms, result payload, result px, score increment,
#   nonce.
#   op: 'f' finish, 'r' re-queue, 'g' re-queue and give back the try (a shutdown cancelled it, the job did not fail).
#   tombstone ms: '0' deletes the in-progress key, otherwise it is kept that long (cron jobs).
#   result payload: '' stores no result. result px: '0' keeps the result forever.
#   nonce: a re-queue is applied once per nonce, so sending it again after a lost reply cannot delete the lease of
#   a worker that claimed the job in between. A finish is safe to repeat: its job is gone, no one can claim it.
SETTLE = """
local queue = KEYS[1]
local job_p, ip_p, retry_p, result_p, abort_key, done_p = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local settled_p = ARGV[7]
for i = 8, #ARGV, 7 do
  local id, op, tomb, payload, px, incr = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local nonce = ARGV[i + 6]
  if op == 'f' then
    if tomb == '0' then
      redis.call('DEL', ip_p .. id, job_p .. id, retry_p .. id)
    else
      redis.call('PEXPIRE', ip_p .. id, tomb)
      redis.call('DEL', job_p .. id, retry_p .. id)
    end
    if payload ~= '' then
      if px == '0' then
        redis.call('SET', result_p .. id, payload)
      else
        redis.call('SET', result_p .. id, payload, 'PX', px)
      end
    end
    redis.call('ZREM', queue, id)
    redis.call('ZREM', abort_key, id)
    redis.call('PUBLISH', done_p .. id, '1')
  elseif redis.call('SET', settled_p .. nonce, '1', 'PX', 60000, 'NX') then
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
return 1
"""

# Keep this worker's leases alive. KEYS: queue. ARGV: lease ms, in-progress prefix, then job ids.
# A lease that lapsed (a long loop stall, a Redis outage) is taken again when the job is still queued; another
# worker may have run it meanwhile (at-least-once). Returns how many leases had lapsed.
REFRESH_LEASES = """
local lapsed = 0
for i = 3, #ARGV do
  local key = ARGV[2] .. ARGV[i]
  if redis.call('PEXPIRE', key, ARGV[1]) == 0 and redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('SET', key, '1', 'PX', ARGV[1])
    lapsed = lapsed + 1
  end
end
return lapsed
"""

# Ask for an abort, as arq does: a deferred job is made due now (score 1) so a worker sees the request soon.
# KEYS: queue, abort set. ARGV: job id, now ms.
REQUEST_ABORT = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) > tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], 1, ARGV[1])
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
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

# Delete a key only if it still holds the value we wrote (so one worker's exit leaves another's health line).
# KEYS: key. ARGV: expected value.
DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
