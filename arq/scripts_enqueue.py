"""Lua scripts of the clients: enqueue (one job, many jobs), abort requests, and a guarded delete.

Split from arq.scripts (the worker's); the same rules hold: compatible with the published arq on the very same keys.
"""

from __future__ import annotations

# Waking idle workers: an enqueue pushes a token on the queue's wake list (`arq:wake:<queue>`), on which idle workers
# of ours block (BLPOP). Each token wakes exactly one worker, so one job wakes one worker, not every idle one (a herd
# of claims). The list is capped and expires; a claim that finds no more due jobs deletes it (stale tokens).
WAKE = """
local function wake(key, n)
  for _ = 1, math.min(n, 100) do
    redis.call('RPUSH', key, '1')
  end
  redis.call('LTRIM', key, -1000, -1)
  redis.call('PEXPIRE', key, 60000)
end
"""


# KEYS: job key, result key, queue. ARGV: expires ms, payload, score, job id, wake list.
# Returns 1 when enqueued, 0 when a job or result with this id already exists (arq's uniqueness rule).
ENQUEUE = (
    WAKE
    + """
if redis.call('EXISTS', KEYS[1], KEYS[2]) ~= 0 then
  return 0
end
redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
wake(ARGV[5], 1)
return 1
"""
)


# Enqueue many jobs in one round trip, each exactly as ENQUEUE does (uniqueness per id: no job and no result with it),
# and wake as many idle workers of each queue as it got jobs. ARGV: job prefix, result prefix, wake list prefix, then
# runs of jobs that share their options (a bulk call's jobs mostly share them all): fresh (1 if the ids are fresh
# random ones that need no uniqueness check), expires ms, score, queue, count, then `count` pairs of id and payload.
# (Redis hands the arguments to Lua as strings at no cost: packing the jobs in one string cost Lua more to take apart
# than the PSETEX itself.)
# Returns per job 1 (enqueued) or 0 (the id was taken, also by an earlier job of the same call).
ENQUEUE_MANY = (
    WAKE
    + """
local job_p, result_p = ARGV[1], ARGV[2]
local out, n, added, counts = {}, 0, {}, {}
local i, last = 4, #ARGV
while i <= last do
  local fresh, expires, score, queue = ARGV[i] == '1', ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local first = i + 5
  i = first + 2 * tonumber(ARGV[i + 4])
  local entries = added[queue]
  if not entries then
    entries = {}
    added[queue], counts[queue] = entries, 0
  end
  local c = counts[queue]
  for j = first, i - 1, 2 do
    local id = ARGV[j]
    local job_key = job_p .. id
    n = n + 1
    if not fresh and redis.call('EXISTS', job_key, result_p .. id) ~= 0 then
      out[n] = 0
    else
      redis.call('PSETEX', job_key, expires, ARGV[j + 1])
      entries[c + 1], entries[c + 2] = score, id
      c = c + 2
      out[n] = 1
    end
  end
  counts[queue] = c
end
-- one ZADD per queue (in slices: unpack has a limit), then the wake tokens
for queue, entries in pairs(added) do
  for start = 1, #entries, 2000 do
    redis.call('ZADD', queue, unpack(entries, start, math.min(start + 1999, #entries)))
  end
  wake(ARGV[3] .. queue, #entries / 2)
end
return out
"""
)


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


# Delete a key only if it still holds the value we wrote (so one worker's exit leaves another's health line).
# KEYS: key. ARGV: expected value.
DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
