"""The Lua script that records a batch's outcomes in Redis, atomically and idempotently.

One call records many outcomes of one batch, in order, exactly as if each were recorded alone:
one EVALSHA (one command to parse, one Lua invocation, one reply) per batch and call, not one
per outcome, which is most of what an outcome used to cost Redis and the client. Within a call,
a step's counts are read once, kept in Lua and written back once at the end, so an outcome
costs two commands (SISMEMBER, HSETNX) instead of four.

KEYS: meta, graph, pipeline_state, essays. ARGV: ttl seconds, the outcomes key prefix, the
expected key prefix (``keys.BatchKeys``), then a triple per outcome: step, outcome
(``succeeded``|``failed``), essay. The other keys of the batch (outcomes and expected sets per
step) are derived from the prefixes; they share the batch's hash tag, so they live in the same
cluster slot.

The reply is one string: one line per outcome, in order (one bulk string is much cheaper for
the client to parse than an array). Each line is space-separated words (step names hold no
spaces), the verdict first:

- ``nobatch``: the batch marker is missing (never registered, or Redis lost it)
- ``unknown_step``: the batch's graph has no such step
- ``not_expected``: the step is not ready, or the essay is not in its expected set
- ``conflict <previous>``: the essay already has the other outcome
- ``duplicate <succeeded> <failed> <total>``: the same outcome again; nothing changed
- ``recorded <succeeded> <failed> <total> <completed> [<cascaded>...]``: counted; ``completed``
  is 1 when this outcome made the step complete, then come the dependants whose expected essays
  this fixed and that expect none (complete at once)

When a step completes, each dependant whose dependencies are now all satisfied gets its expected
set: the essays that succeeded in every dependency. Every key the script creates gets the TTL (the
outcomes hash with its step's first outcome); when the marker's remaining TTL falls under half,
every key of the batch gets the full TTL again (checked once per call that recorded anything).
The marker is only ever extended together with all other keys, so it never outlives them.
"""

from __future__ import annotations

import hashlib

RECORD_OUTCOMES = r"""
local meta, graph, state, essays = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ttl = tonumber(ARGV[1])
local outcomes_prefix, expected_prefix = ARGV[2], ARGV[3]
local count = (#ARGV - 3) / 3
local replies = {}

if redis.call('EXISTS', meta) == 0 then
  for i = 1, count do replies[i] = 'nobatch' end
  return table.concat(replies, '\n')
end

local specs = {}  -- step -> decoded graph entry, or false when the graph has no such step
local function spec(name)
  local known = specs[name]
  if known == nil then
    local raw = redis.call('HGET', graph, name)
    known = raw and cjson.decode(raw) or false
    specs[name] = known
  end
  return known
end

-- Counts are read once per step and call, kept here as {succeeded, failed, total} while the
-- call changes them, and written back once at the end (``dirty``): two commands an outcome fewer.
local cache, dirty = {}, {}
local function cached(name)
  local c = cache[name]
  if c == nil then
    local v = redis.call('HMGET', state, name, name .. ':failed', name .. ':total')
    c = {tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3])}
    cache[name] = c
  end
  return c
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
  local c = cached(name)
  local s, f, t = c[1], c[2], c[3]
  return t ~= nil and t > 0 and s + f == t and s / t >= spec(name).r
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
  cache[name] = {0, 0, #members}
  return #members
end

local function record(step, outcome, essay)
  local definition = spec(step)
  if not definition then return 'unknown_step' end
  local c = cached(step)
  local total = c[3]
  if not total then return 'not_expected' end
  local expected = essays
  if #definition.d > 0 then expected = expected_prefix .. step end
  if redis.call('SISMEMBER', expected, essay) == 0 then return 'not_expected' end

  local outcomes = outcomes_prefix .. step
  if redis.call('HSETNX', outcomes, essay, outcome) == 0 then
    local previous = redis.call('HGET', outcomes, essay)
    if previous ~= outcome then return 'conflict ' .. previous end
    return table.concat({'duplicate', c[1], c[2], total}, ' ')
  end
  if outcome == 'succeeded' then c[1] = c[1] + 1 else c[2] = c[2] + 1 end
  dirty[step] = true
  local s, f = c[1], c[2]
  -- The step's first outcome created the outcomes hash: give it the batch's TTL.
  if s + f == 1 then redis.call('EXPIRE', outcomes, ttl) end
  local reply = {'recorded', s, f, total, 0}
  if s + f == total then
    reply[5] = 1
    for _, dependant in ipairs(definition.n) do
      if redis.call('HEXISTS', state, dependant .. ':total') == 0 then
        local deps = spec(dependant).d
        local ready = true
        for _, dep in ipairs(deps) do
          if not satisfied(dep) then
            ready = false
            break
          end
        end
        if ready and materialize(dependant, deps) == 0 then
          reply[#reply + 1] = dependant
        end
      end
    end
  end
  return table.concat(reply, ' ')
end

local recorded = false
for i = 1, count do
  local at = 3 + (i - 1) * 3
  local reply = record(ARGV[at + 1], ARGV[at + 2], ARGV[at + 3])
  if not recorded and string.sub(reply, 1, 8) == 'recorded' then recorded = true end
  replies[i] = reply
end
for name in pairs(dirty) do
  local c = cache[name]
  redis.call('HSET', state, name, c[1], name .. ':failed', c[2])
end
if recorded then refresh_ttl() end
return table.concat(replies, '\n')
"""

RECORD_OUTCOMES_SHA = hashlib.sha1(RECORD_OUTCOMES.encode()).hexdigest()
