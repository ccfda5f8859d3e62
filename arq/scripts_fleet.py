"""Lua scripts of a supervisor: renewing its children's leases and giving a dead child's jobs back.

Split from arq.scripts (the worker's); a poison job is failed through arq.scripts.SETTLE, the worker's finish path.
"""

from __future__ import annotations

from .scripts_enqueue import WAKE

# Renew other workers' leases: a supervisor keeps its children's jobs leased while the children live, so a child's
# stalled event loop cannot let a lease lapse, and the lease can be short (a lost host's jobs come back soon).
# ARGV: lease ms, in-progress prefix, then pairs of job id and the prefix of its holder's tokens (`<worker id>:`).
# Only a lease still held by that worker is renewed. Returns how many were.
RENEW_FOR = """
local renewed = 0
for i = 3, #ARGV, 2 do
  local key, owner = ARGV[2] .. ARGV[i], ARGV[i + 1]
  local holder = redis.call('GET', key)
  if holder and string.sub(holder, 1, #owner) == owner then
    redis.call('PEXPIRE', key, ARGV[1])
    renewed = renewed + 1
  end
end
return renewed
"""


# Give a dead worker's jobs back at once (the supervisor runs this when a child dies). A job is released only while
# it is queued and its in-progress key holds a token of the dead worker (`<worker id>:`): once its lease lapsed the
# key may be another worker's. Counting the death (when there is evidence against the job) may make it poison; the
# caller then fails it through SETTLE with the token returned. Besides the ids the parent knew of, the head of the
# queue is searched for leases of the dead worker (a worker that died between a claim and telling its parent).
# KEYS: queue. ARGV: worker prefix, count this death (1/0), max deaths, deaths ttl ms, wake list,
#   in-progress prefix, deaths prefix, job prefix, retry prefix, scan limit, now ms, then job ids.
# Returns one {id, code, deaths, payload, try, token} per job held: code 1 released, 2 to be failed by the caller.
RELEASE = (
    WAKE
    + """
local queue, owner = KEYS[1], ARGV[1]
local count, max_deaths, deaths_ttl, nudge = ARGV[2] == '1', tonumber(ARGV[3]), ARGV[4], ARGV[5]
local ip_p, deaths_p, job_p, retry_p, limit = ARGV[6], ARGV[7], ARGV[8], ARGV[9], tonumber(ARGV[10])
local out, seen = {}, {}
local function held(id)
  local token = redis.call('GET', ip_p .. id)
  if token and string.sub(token, 1, #owner) == owner and redis.call('ZSCORE', queue, id) then
    return token
  end
  return nil
end
local function release(id, token, count_it)
  local deaths = tonumber(redis.call('GET', deaths_p .. id) or '0')
  if count_it then
    deaths = redis.call('INCR', deaths_p .. id)
    redis.call('PEXPIRE', deaths_p .. id, deaths_ttl)
  end
  if deaths >= max_deaths then
    out[#out + 1] = {id, 2, deaths, redis.call('GET', job_p .. id) or false, redis.call('GET', retry_p .. id) or false,
      token}
  else
    redis.call('DEL', ip_p .. id)
    out[#out + 1] = {id, 1, deaths, false, false, token}
  end
end
for i = 12, #ARGV do
  local id = ARGV[i]
  seen[id] = true
  local token = held(id)
  if token then
    release(id, token, count)
  end
end
local head = {}
if limit > 0 then
  head = redis.call('ZRANGEBYSCORE', queue, '-inf', ARGV[11], 'LIMIT', 0, limit)
end
for _, id in ipairs(head) do
  if not seen[id] then
    local token = held(id)
    if token then
      release(id, token, false)
    end
  end
end
if #out > 0 then
  wake(nudge, #out)
end
return out
"""
)
