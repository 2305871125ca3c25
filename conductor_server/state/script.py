"""The Lua script that records one outcome in Redis, atomically and idempotently.

KEYS: meta, graph, pipeline_state, essays, outcomes:<step>, expected set of the step (the essays
set for a root step). ARGV: step, outcome (``succeeded``|``failed``), ttl seconds, the outcomes
key prefix, the expected key prefix (``keys.BatchKeys``), essay. (The essay comes last so the
caller can pack every command of one step from one template.)

The reply is one string of space-separated words (step names hold no spaces), the verdict first;
one bulk string is much cheaper for the client to parse than an array:

- ``nobatch``: the batch marker is missing (never registered, or Redis lost it)
- ``unknown_step``: the batch's graph has no such step
- ``not_expected``: the step is not ready, or the essay is not in its expected set
- ``conflict <previous>``: the essay already has the other outcome
- ``duplicate <succeeded> <failed> <total>``: the same outcome again; nothing changed
- ``recorded <succeeded> <failed> <total> <completed> [<cascaded>...]``: counted; ``completed``
  is 1 when this outcome made the step complete, then come the dependants whose expected essays
  this fixed and that expect none (complete at once)

Keys of other steps are derived from the prefixes (the record of a completion must reach its
dependants); they share the batch's hash tag, so they live in the same cluster slot.

When a step completes, each dependant whose dependencies are now all satisfied gets its expected
set: the essays that succeeded in every dependency. Every key the script creates gets the TTL (the
outcomes hash with its step's first outcome); when the marker's remaining TTL falls under half,
every key of the batch gets the full TTL again. The marker is only ever extended together with all
other keys, so it never outlives them.
"""

from __future__ import annotations

import hashlib

RECORD_OUTCOME = r"""
local meta, graph, state, essays = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local outcomes, expected = KEYS[5], KEYS[6]
local step, outcome, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local outcomes_prefix, expected_prefix, essay = ARGV[4], ARGV[5], ARGV[6]

if redis.call('EXISTS', meta) == 0 then return 'nobatch' end

local function counts(name)
  local v = redis.call('HMGET', state, name, name .. ':failed', name .. ':total')
  return tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3])
end

local function refresh_ttl()
  if redis.call('TTL', meta) >= ttl / 2 then return end
  for _, key in ipairs({meta, graph, state, essays}) do redis.call('EXPIRE', key, ttl) end
  for _, name in ipairs(redis.call('HKEYS', graph)) do
    redis.call('EXPIRE', outcomes_prefix .. name, ttl)
    redis.call('EXPIRE', expected_prefix .. name, ttl)
  end
end

local function satisfied(name)
  local s, f, t = counts(name)
  local spec = cjson.decode(redis.call('HGET', graph, name))
  return t ~= nil and t > 0 and s + f == t and s / t >= spec.r
end

-- Fix the expected set of a ready dependant; return its size.
local function materialize(name, deps)
  local members = {}
  local first = redis.call('HGETALL', outcomes_prefix .. deps[1])
  for i = 1, #first, 2 do
    if first[i + 1] == 'succeeded' then
      local all = true
      for j = 2, #deps do
        if redis.call('HGET', outcomes_prefix .. deps[j], first[i]) ~= 'succeeded' then
          all = false
          break
        end
      end
      if all then members[#members + 1] = first[i] end
    end
  end
  local key = expected_prefix .. name
  redis.call('DEL', key)
  for i = 1, #members, 1000 do
    redis.call('SADD', key, unpack(members, i, math.min(i + 999, #members)))
  end
  if #members > 0 then redis.call('EXPIRE', key, ttl) end
  redis.call('HSET', state, name, 0, name .. ':failed', 0, name .. ':total', #members)
  return #members
end

local known = redis.call('HMGET', state, step, step .. ':failed', step .. ':total')
local total = tonumber(known[3])
if not total then
  if redis.call('HEXISTS', graph, step) == 0 then return 'unknown_step' end
  return 'not_expected'
end
if redis.call('SISMEMBER', expected, essay) == 0 then return 'not_expected' end

local s, f = tonumber(known[1]) or 0, tonumber(known[2]) or 0
if redis.call('HSETNX', outcomes, essay, outcome) == 0 then
  local previous = redis.call('HGET', outcomes, essay)
  if previous ~= outcome then return 'conflict ' .. previous end
  return table.concat({'duplicate', s, f, total}, ' ')
end
if outcome == 'succeeded' then
  s = redis.call('HINCRBY', state, step, 1)
else
  f = redis.call('HINCRBY', state, step .. ':failed', 1)
end
-- The step's first outcome created the outcomes hash: give it the batch's TTL.
if s + f == 1 then redis.call('EXPIRE', outcomes, ttl) end
local reply = {'recorded', s, f, total, 0}
if s + f == total then
  reply[5] = 1
  local spec = cjson.decode(redis.call('HGET', graph, step))
  for _, dependant in ipairs(spec.n) do
    if redis.call('HEXISTS', state, dependant .. ':total') == 0 then
      local dspec = cjson.decode(redis.call('HGET', graph, dependant))
      local ready = true
      for _, dep in ipairs(dspec.d) do
        if not satisfied(dep) then
          ready = false
          break
        end
      end
      if ready and materialize(dependant, dspec.d) == 0 then
        reply[#reply + 1] = dependant
      end
    end
  end
end
refresh_ttl()
return table.concat(reply, ' ')
"""

RECORD_OUTCOME_SHA = hashlib.sha1(RECORD_OUTCOME.encode()).hexdigest()
