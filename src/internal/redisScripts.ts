/**
 * The Redis store's key space and its Lua scripts.
 *
 * ## Keys
 *
 * Every key of a store is `{prefix}|{type}…`, built in one place on each side:
 * {@link keysOf} in TypeScript, the `PRELUDE` below in Lua.
 *
 * - `{prefix}|c|{id}` (string): the checkpoint as one JSON document
 * - `{prefix}|x|{executionId}` (sorted set): the ids of the execution's checkpoints, scored by version
 * - `{prefix}|r|{executionId}` (hash): the execution record (see `RECORD_FIELDS`)
 * - `{prefix}|w|{checkpointId}` (hash): the task writes of a checkpoint, field `{taskId}|{key}` → `{seq}:{json}`, and `#` the last seq
 * - `{prefix}|b|{executionId}` (hash): the execution's large values, content hash → JSON
 * - `{prefix}|bc|{executionId}` (hash): content hash → how many checkpoints reference it
 * - `{prefix}|br|{executionId}` (hash): checkpoint id → the hashes it references (space separated)
 * - `{prefix}|executions` (sorted set): execution ids scored by their record's `updatedAt` (epoch ms)
 * - `{prefix}|i|{status}` (sorted set): the same, one set per status
 * - `{prefix}|due` (sorted set): executions a claim may take (pending, sleeping, running), scored by when they are due
 * - `{prefix}|s|{token}` (string): a large document on its way in (staging)
 * - `{prefix}|migration` (string): where an unfinished migration from the 0.1.0 layout stands (expires)
 *
 * Why two stores never share a key: `|` is reserved. Prefixes are
 * `[A-Za-z0-9_:.-]{0,64}` and ids (checkpoint and execution ids, task ids,
 * write keys, staging tokens, statuses) are `[A-Za-z0-9._:-]`: none holds a
 * `|`. A key of the store with prefix `p` is `K + p + "|" + rest`, where `K`
 * is the client's ioredis `keyPrefix` (the same for both stores, usually
 * empty). `p` holds no `|`, so `p` is exactly the text between `K` and the
 * first `|` that follows it: a key names its prefix, so two different
 * prefixes — nested (`p:` and `p:checkpoint:`) or not — never build the same
 * key. Within one prefix, the text between the first and the second `|` (or
 * the end) names the type and the rest is one id, which holds no `|`: a key
 * has one meaning. Keys of the 0.1.0 layout hold no `|` after `K`, so they are
 * never keys of this layout either.
 *
 * Index members whose record expired (ttl) are removed by the scripts that
 * meet them (listExecutions, claim, sweep).
 *
 * @internal
 */

/**
 * The keys of a store with `prefix`, as the client names them (ioredis adds its
 * own `keyPrefix` in front). Must agree with the Lua `PRELUDE`.
 */
export const keysOf = (prefix: string) => ({
  checkpoint: (id: string) => `${prefix}|c|${id}`,
  execution: (executionId: string) => `${prefix}|x|${executionId}`,
  record: (executionId: string) => `${prefix}|r|${executionId}`,
  writes: (checkpointId: string) => `${prefix}|w|${checkpointId}`,
  blobs: (executionId: string) => `${prefix}|b|${executionId}`,
  executions: `${prefix}|executions`,
  staging: (token: string) => `${prefix}|s|${token}`
})

/** The fields of a record hash, in the order the scripts return them. */
export const RECORD_FIELDS = ["v", "id", "at", "st", "wake", "ft", "fm", "n", "lo", "lx"] as const

/**
 * How much one call of the migration script does at most: executions plus old
 * checkpoints looked at.
 */
export const MIGRATE_BATCH = 128

/** How many executions one call of the sweep script looks at. */
export const SWEEP_BATCH = 100

/**
 * Shared by every script: `ARGV[1]` is the full key prefix (the client's
 * `keyPrefix` + the store's prefix), from which every key is built.
 */
const PRELUDE = `
if redis.replicate_commands then pcall(redis.replicate_commands) end
local P = ARGV[1]
-- The key space (see keysOf): every key is P .. '|' .. type .. …; ids never hold a '|'.
local K = P .. '|'
local function ckey(id) return K .. 'c|' .. id end
local function xkey(e) return K .. 'x|' .. e end
local function rkey(e) return K .. 'r|' .. e end
local function wkey(id) return K .. 'w|' .. id end
local function bkey(e) return K .. 'b|' .. e end
local function bckey(e) return K .. 'bc|' .. e end
local function brkey(e) return K .. 'br|' .. e end
local function ikey(st) return K .. 'i|' .. st end
local function skey(token) return K .. 's|' .. token end
local ekey = K .. 'executions'
local dkey = K .. 'due'
local mkey = K .. 'migration'
local STATUSES = {'pending', 'running', 'interrupted', 'sleeping', 'done', 'failed'}
local F = {'v', 'id', 'at', 'st', 'wake', 'ft', 'fm', 'n', 'lo', 'lx'}
local CHUNK = 512

local function fmt(n) return string.format('%.0f', n) end

-- The server's time in epoch ms: leases are measured on one clock for every host.
local function nowMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- true when s is a checkpoint or execution id as the store writes them.
local function isId(s)
  return #s <= 128 and string.match(s, '^[A-Za-z0-9_:%-][A-Za-z0-9_:%.%-]*$') ~= nil
end

-- Byte order (Lua's < on strings follows the server's locale).
local function less(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- ttl > 0: k lives at least ttl ms more; 0: k never expires.
local function outlive(k, ttl)
  if ttl > 0 then
    local left = redis.call('PTTL', k)
    if left == -1 or left >= 0 and left < ttl then redis.call('PEXPIRE', k, ttl) end
  else
    redis.call('PERSIST', k)
  end
end

-- ttl > 0: k expires ttl ms from now; 0: never.
local function expireIn(k, ttl)
  if ttl > 0 then redis.call('PEXPIRE', k, ttl) else redis.call('PERSIST', k) end
end

local function index(k, score, e, ttl)
  redis.call('ZADD', k, score, e)
  outlive(k, ttl)
end

-- Removes e from every index.
local function unindex(e)
  redis.call('ZREM', ekey, e)
  redis.call('ZREM', dkey, e)
  for _, st in ipairs(STATUSES) do redis.call('ZREM', ikey(st), e) end
end

-- Puts the indexes of e in line with its record; old: the status before the change (or false).
local function reindex(e, old, ttl, tnow)
  local f = redis.call('HMGET', rkey(e), 'st', 'at', 'wake', 'lx')
  local st, at = f[1], tonumber(f[2])
  if not st or not at then
    unindex(e)
    return
  end
  if old and old ~= st then redis.call('ZREM', ikey(old), e) end
  index(ekey, fmt(at), e, ttl)
  index(ikey(st), fmt(at), e, ttl)
  if st == 'pending' or st == 'running' or st == 'sleeping' then
    local due = math.min(at, tnow)
    if st == 'sleeping' and f[3] then due = tonumber(f[3]) or due end
    local lx = tonumber(f[4])
    if lx and lx > due then due = lx end
    index(dkey, fmt(due), e, ttl)
  else
    redis.call('ZREM', dkey, e)
  end
end

-- A record patch: 8 arguments from ARGV[at] (status or '', wake '~' | '-' | ms,
-- failure '~' | '-' | '=', tag, message, lease '~' | '-' | '=', owner, ttl ms).
local function readPatch(at)
  return {
    st = ARGV[at], wake = ARGV[at + 1], fm = ARGV[at + 2], ft = ARGV[at + 3], fmsg = ARGV[at + 4],
    lm = ARGV[at + 5], lo = ARGV[at + 6], lt = ARGV[at + 7]
  }
end

-- The wakeAt, failure and lease fields of a patch.
local function applyFields(rk, p, tnow)
  if p.wake == '-' then redis.call('HDEL', rk, 'wake') elseif p.wake ~= '~' then redis.call('HSET', rk, 'wake', p.wake) end
  if p.fm == '-' then redis.call('HDEL', rk, 'ft', 'fm') elseif p.fm == '=' then redis.call('HSET', rk, 'ft', p.ft, 'fm', p.fmsg) end
  if p.lm == '-' then
    redis.call('HDEL', rk, 'lo', 'lx')
  elseif p.lm == '=' then
    redis.call('HSET', rk, 'lo', p.lo, 'lx', fmt(tnow + tonumber(p.lt)))
  end
end

-- updateExecution's changes: the status and its time, then the other fields.
local function patchRecord(rk, p, now, tnow)
  if p.st ~= '' then redis.call('HSET', rk, 'st', p.st) end
  if p.st ~= '' or p.wake ~= '~' or p.fm ~= '~' then redis.call('HSET', rk, 'at', now) end
  applyFields(rk, p, tnow)
end

-- The holder of a lease that refuses owner's write (nil: it may write); holds: the owner must hold it.
local function fenced(rk, owner, holds, tnow)
  if owner == '' then return nil end
  local l = redis.call('HMGET', rk, 'lo', 'lx')
  if holds then
    if l[1] == owner then return nil end
    return l[1] or ''
  end
  if not l[1] or l[1] == owner or (tonumber(l[2]) or 0) <= tnow then return nil end
  return l[1]
end

-- The record as the scripts return it: e, then the fields of F.
local function recordOf(e, out)
  local r = redis.call('HMGET', rkey(e), unpack(F))
  out[#out + 1] = e
  for i = 1, #F do out[#out + 1] = r[i] end
  return out
end

-- true when version v of the execution set x is held by a live checkpoint;
-- members whose checkpoint vanished (expired) are removed, freeing the slot.
local function taken(x, v)
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', x, v, v)) do
    if redis.call('EXISTS', ckey(m)) == 1 then return true end
    redis.call('ZREM', x, m)
  end
  return false
end

-- Removes checkpoint id of execution e (already out of its index): document, writes, blob references.
local function dropCheckpoint(e, id)
  redis.call('DEL', ckey(id), wkey(id))
  local refs = redis.call('HGET', brkey(e), id)
  if refs then
    redis.call('HDEL', brkey(e), id)
    for h in string.gmatch(refs, '%S+') do
      if redis.call('HINCRBY', bckey(e), h, -1) <= 0 then
        redis.call('HDEL', bckey(e), h)
        redis.call('HDEL', bkey(e), h)
      end
    end
  end
end

-- Removes every key of execution e and its index entries. → how many checkpoint keys went.
local function clearExecution(e)
  local x = xkey(e)
  local members = redis.call('ZRANGE', x, 0, -1)
  local n = 0
  for i = 1, #members, CHUNK do
    local keys = {}
    for j = i, math.min(i + CHUNK - 1, #members) do
      keys[#keys + 1] = ckey(members[j])
      keys[#keys + 1] = wkey(members[j])
    end
    n = n + redis.call('DEL', unpack(keys))
  end
  redis.call('DEL', x, rkey(e), bkey(e), bckey(e), brkey(e))
  unindex(e)
  return n
end

-- The newest live member of x and its version (members whose checkpoint vanished are removed).
local function newestLive(x)
  while true do
    local top = redis.call('ZREVRANGE', x, 0, 0, 'WITHSCORES')
    if #top == 0 then return nil end
    if redis.call('EXISTS', ckey(top[1])) == 1 then return top[1], tonumber(top[2]) end
    redis.call('ZREM', x, top[1])
  end
end

-- After checkpoints of e went: the record follows the newest one left; none left, the execution goes.
local function follow(e)
  local id, v = newestLive(xkey(e))
  if not id then
    clearExecution(e)
    return
  end
  local rk = rkey(e)
  local current = redis.call('HGET', rk, 'v')
  if current and tonumber(current) ~= v then redis.call('HSET', rk, 'v', fmt(v), 'id', id) end
end

-- The execution id a stored document says it belongs to (our encoding puts it second), or nil.
local function executionOf(k)
  local e = string.match(redis.call('GETRANGE', k, 0, 511), '^{"id":"[^"]*","executionId":"([^"]+)"')
  if not e then
    local ok, doc = pcall(cjson.decode, redis.call('GET', k))
    if ok and type(doc) == 'table' and type(doc.executionId) == 'string' then e = doc.executionId end
  end
  if e and isId(e) then return e end
  return nil
end

-- Appends {id, version, document} for every live member of a WITHSCORES page
-- to out (document = false for a key that is not a string); removes the
-- members whose checkpoint vanished from x. Returns how many were appended
-- and whether any had vanished.
local function collect(x, page, out)
  local found, gone = 0, false
  local i = 1
  while i <= #page do
    local keys, members, scores = {}, {}, {}
    while i <= #page and #keys < CHUNK do
      members[#members + 1] = page[i]
      scores[#scores + 1] = page[i + 1]
      keys[#keys + 1] = ckey(page[i])
      i = i + 2
    end
    local docs = redis.call('MGET', unpack(keys))
    for k = 1, #keys do
      local doc = docs[k]
      if not doc and redis.call('EXISTS', keys[k]) == 0 then
        redis.call('ZREM', x, members[k])
        gone = true
      else
        out[#out + 1] = members[k]
        out[#out + 1] = scores[k]
        out[#out + 1] = doc
        found = found + 1
      end
    end
  end
  return found, gone
end
`

const STAGING_LOST =
  "ERR effect-checkpoint: a staged document is missing (its staging key expired or was removed); nothing was written"

/**
 * Saves a batch. ARGV: P, ttl ms, now ms, owner or '', expected execution or
 * '', expected version, expected id or '', the patch (8, see readPatch), the
 * number of blobs, then (executionId, hash, json) per blob, then (id,
 * executionId, version, document or '*' .. staging token, timestamp ms,
 * derived status, refs) per checkpoint.
 * → {0} saved; {1, i} the i-th id is taken; {2, i} its version is taken; {3,
 * actual} the expectation failed; {4, e, holder} another owner's lease; {5, e,
 * hashes…} blobs missing. Whenever it does not save, it writes nothing and
 * removes the batch's staging keys.
 */
const SAVE = `${PRELUDE}
local tnow = nowMs()
local ttl, now, owner = tonumber(ARGV[2]), ARGV[3], ARGV[4]
local p = readPatch(8)
local nb = tonumber(ARGV[16])
local cs = 17 + 3 * nb
local n = (#ARGV - cs + 1) / 7
local newest, order = {}, {}
for i = 0, n - 1 do
  local a = cs + 7 * i
  local e, v = ARGV[a + 1], tonumber(ARGV[a + 2])
  if not newest[e] then
    order[#order + 1] = e
    newest[e] = a
  elseif tonumber(ARGV[newest[e] + 2]) < v then
    newest[e] = a
  end
end
local function refuse(reply)
  for i = 0, n - 1 do
    local doc = ARGV[cs + 7 * i + 3]
    if string.byte(doc, 1) == 42 then redis.call('DEL', skey(string.sub(doc, 2))) end
  end
  return reply
end
if owner ~= '' then
  for _, e in ipairs(order) do
    local holder = fenced(rkey(e), owner, false, tnow)
    if holder then return refuse({4, e, holder}) end
  end
end
if ARGV[5] ~= '' then
  local r = redis.call('HMGET', rkey(ARGV[5]), 'v', 'id')
  local actual = tonumber(r[1]) or 0
  local met
  if not r[1] then met = tonumber(ARGV[6]) == 0
  else met = actual == tonumber(ARGV[6]) and (ARGV[7] == '' or r[2] == ARGV[7]) end
  if not met then return refuse({3, actual}) end
end
for i = 0, n - 1 do
  local a = cs + 7 * i
  if redis.call('EXISTS', ckey(ARGV[a])) == 1 then return refuse({1, i + 1}) end
  if taken(xkey(ARGV[a + 1]), ARGV[a + 2]) then return refuse({2, i + 1}) end
end
local sent = {}
for j = 0, nb - 1 do sent[ARGV[17 + 3 * j] .. ' ' .. ARGV[18 + 3 * j]] = true end
for i = 0, n - 1 do
  local a = cs + 7 * i
  local e, refs = ARGV[a + 1], ARGV[a + 6]
  if refs ~= '' then
    local missing = {}
    for h in string.gmatch(refs, '%S+') do
      if not sent[e .. ' ' .. h] and redis.call('HEXISTS', bkey(e), h) == 0 then missing[#missing + 1] = h end
    end
    if #missing > 0 then
      local reply = {5, e}
      for _, h in ipairs(missing) do reply[#reply + 1] = h end
      return refuse(reply)
    end
  end
end
for i = 0, n - 1 do
  local doc = ARGV[cs + 7 * i + 3]
  if string.byte(doc, 1) == 42 and redis.call('EXISTS', skey(string.sub(doc, 2))) == 0 then
    refuse(nil)
    return redis.error_reply('${STAGING_LOST}')
  end
end
for j = 0, nb - 1 do
  redis.call('HSETNX', bkey(ARGV[17 + 3 * j]), ARGV[18 + 3 * j], ARGV[19 + 3 * j])
end
for i = 0, n - 1 do
  local a = cs + 7 * i
  local id, e, v, doc, refs = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 6]
  local k, x = ckey(id), xkey(e)
  if string.byte(doc, 1) == 42 then
    redis.call('RENAME', skey(string.sub(doc, 2)), k)
    expireIn(k, ttl)
  elseif ttl > 0 then
    redis.call('SET', k, doc, 'PX', ttl)
  else
    redis.call('SET', k, doc)
  end
  redis.call('ZADD', x, v, id)
  expireIn(x, ttl)
  if refs ~= '' then
    redis.call('HSET', brkey(e), id, refs)
    for h in string.gmatch(refs, '%S+') do redis.call('HINCRBY', bckey(e), h, 1) end
  end
end
for _, e in ipairs(order) do
  local a = newest[e]
  local id, v, ts, derived = ARGV[a], tonumber(ARGV[a + 2]), ARGV[a + 4], ARGV[a + 5]
  local rk = rkey(e)
  local old = redis.call('HMGET', rk, 'v', 'st')
  local st = derived
  if p.st ~= '' then st = p.st end
  if not old[1] then
    redis.call('DEL', rk)
    redis.call('HSET', rk, 'v', fmt(v), 'id', id, 'at', ts, 'st', st, 'n', '0')
  elseif tonumber(old[1]) < v then
    redis.call('HSET', rk, 'v', fmt(v), 'id', id, 'at', ts, 'st', st)
  elseif p.st ~= '' then
    redis.call('HSET', rk, 'st', p.st)
  end
  applyFields(rk, p, tnow)
  reindex(e, old[2], ttl, tnow)
  expireIn(rk, ttl)
  for _, bk in ipairs({bkey(e), bckey(e), brkey(e)}) do
    if redis.call('EXISTS', bk) == 1 then expireIn(bk, ttl) end
  end
end
return {0}
`

/**
 * KEYS: none. ARGV: P, executionId, '1' = newest first, exclusive bound, limit (-1 = all).
 * → flat {id, version, document} triples of live checkpoints in order.
 */
const READ = `${PRELUDE}
local x, rev, bound, limit = xkey(ARGV[2]), ARGV[3] == '1', ARGV[4], tonumber(ARGV[5])
local out, total = {}, 0
while true do
  local want = -1
  if limit >= 0 then want = limit - total end
  local page
  if rev then
    page = redis.call('ZREVRANGEBYSCORE', x, bound, '-inf', 'WITHSCORES', 'LIMIT', 0, want)
  else
    page = redis.call('ZRANGEBYSCORE', x, bound, '+inf', 'WITHSCORES', 'LIMIT', 0, want)
  end
  if #page == 0 then break end
  local found, gone = collect(x, page, out)
  total = total + found
  if not gone or limit < 0 or total >= limit then break end
  bound = '(' .. page[#page]
end
return out
`

/**
 * ARGV: P, id. Finds the execution from the document, removes the checkpoint
 * (document, writes, index entry, blob references); the record follows the
 * newest checkpoint left. → 1 removed, 0 there was none.
 */
const DELETE = `${PRELUDE}
local id = ARGV[2]
local k = ckey(id)
local t = redis.call('TYPE', k).ok
if t == 'none' then
  redis.call('DEL', wkey(id))
  return 0
end
local e
if t == 'string' then e = executionOf(k) end
if not e then
  redis.call('DEL', k, wkey(id))
  return 1
end
redis.call('ZREM', xkey(e), id)
dropCheckpoint(e, id)
follow(e)
return 1
`

/** ARGV: P, executionId. → how many checkpoint and write keys were removed. */
const CLEAR = `${PRELUDE}
return clearExecution(ARGV[2])
`

/** ARGV: P, executionId, keep. → how many live checkpoints were removed. */
const PRUNE = `${PRELUDE}
local e, keep = ARGV[2], tonumber(ARGV[3])
local x = xkey(e)
if redis.call('ZCARD', x) <= keep then return 0 end
local live, removed = 0, 0
for _, m in ipairs(redis.call('ZREVRANGE', x, 0, -1)) do
  if redis.call('EXISTS', ckey(m)) == 1 then
    live = live + 1
    if live > keep then
      redis.call('ZREM', x, m)
      dropCheckpoint(e, m)
      removed = removed + 1
    end
  else
    redis.call('ZREM', x, m)
  end
end
follow(e)
return removed
`

/**
 * ARGV: P, checkpointId, taskId, owner or '', '1' when a patch follows, the
 * patch (8), now ms, ttl ms, then (key, json) per write.
 * → {0} saved; {1} no such checkpoint; {2, executionId, version, key} the key
 * is taken; {4, executionId, holder} another owner's lease.
 */
const SAVE_WRITES = `${PRELUDE}
local tnow = nowMs()
local cp, task, owner, hasPatch = ARGV[2], ARGV[3], ARGV[4], ARGV[5] == '1'
local p = readPatch(6)
local now, ttl = ARGV[14], tonumber(ARGV[15])
local k = ckey(cp)
if redis.call('TYPE', k).ok ~= 'string' then return {1} end
local e = executionOf(k)
if not e then return {1} end
local rk = rkey(e)
local holder = fenced(rk, owner, false, tnow)
if holder then return {4, e, holder} end
local w = wkey(cp)
for i = 16, #ARGV, 2 do
  if redis.call('HEXISTS', w, task .. '|' .. ARGV[i]) == 1 then
    return {2, e, redis.call('ZSCORE', xkey(e), cp) or '0', ARGV[i]}
  end
end
if #ARGV >= 16 then
  local seq = redis.call('HINCRBY', w, '#', (#ARGV - 15) / 2) - (#ARGV - 15) / 2
  for i = 16, #ARGV, 2 do
    seq = seq + 1
    redis.call('HSET', w, task .. '|' .. ARGV[i], seq .. ':' .. ARGV[i + 1])
  end
  local left = redis.call('PTTL', k)
  if left > 0 then redis.call('PEXPIRE', w, left) else redis.call('PERSIST', w) end
end
if hasPatch and redis.call('EXISTS', rk) == 1 then
  local old = redis.call('HGET', rk, 'st')
  patchRecord(rk, p, now, tnow)
  reindex(e, old, ttl, tnow)
end
return {0}
`

/**
 * ARGV: P, executionId, owner or '', '1' = holds, expected version or '',
 * expected id or '', now ms, ttl ms, the patch (8).
 * → {0, record…}; {1} no record; {3, actual} the expectation failed; {4, holder} the lease.
 */
const UPDATE = `${PRELUDE}
local tnow = nowMs()
local e, owner, holds = ARGV[2], ARGV[3], ARGV[4] == '1'
local now, ttl = ARGV[7], tonumber(ARGV[8])
local p = readPatch(9)
local rk = rkey(e)
if redis.call('EXISTS', rk) == 0 then return {1} end
local holder = fenced(rk, owner, holds, tnow)
if holder then return {4, holder} end
if ARGV[5] ~= '' then
  local r = redis.call('HMGET', rk, 'v', 'id')
  local actual = tonumber(r[1]) or 0
  if actual ~= tonumber(ARGV[5]) or (ARGV[6] ~= '' and r[2] ~= ARGV[6]) then return {3, actual} end
end
local old = redis.call('HGET', rk, 'st')
patchRecord(rk, p, now, tnow)
reindex(e, old, ttl, tnow)
return recordOf(e, {0})
`

/**
 * ARGV: P, owner, lease ttl ms, limit, now ms, ttl ms.
 * → records (11 values each: executionId, then the fields) of the executions claimed.
 */
const CLAIM = `${PRELUDE}
local tnow = nowMs()
local owner, lt, limit, now, ttl = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local out, claimed = {}, 0
while claimed < limit do
  local candidates = redis.call('ZRANGEBYSCORE', dkey, '-inf', fmt(tnow), 'LIMIT', 0, limit - claimed)
  if #candidates == 0 then break end
  for _, e in ipairs(candidates) do
    local rk = rkey(e)
    local r = redis.call('HMGET', rk, 'st', 'wake', 'lo', 'lx')
    local st = r[1]
    local free = not r[3] or (tonumber(r[4]) or 0) <= tnow
    local due = free and (st == 'pending' or st == 'running' or (st == 'sleeping' and (not r[2] or (tonumber(r[2]) or 0) <= tnow)))
    if due then
      redis.call('HSET', rk, 'st', 'running', 'at', now, 'lo', owner, 'lx', fmt(tnow + lt))
      redis.call('HINCRBY', rk, 'n', 1)
      reindex(e, st, ttl, tnow)
      recordOf(e, out)
      claimed = claimed + 1
    elseif not st then
      unindex(e)
    else
      reindex(e, st, ttl, tnow)
    end
  end
end
return out
`

/**
 * One page of listExecutions. ARGV: P, limit, cursor updatedAt or '', cursor
 * executionId, updatedBefore or '', updatedAfter or '', then the statuses
 * (none: every execution).
 * → records (11 values each), newest first by (updatedAt, executionId).
 */
const LIST_EXECUTIONS = `${PRELUDE}
local limit = tonumber(ARGV[2])
local cAt, cE, before, after = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local sources = {}
if #ARGV < 7 then sources[1] = ekey else for i = 7, #ARGV do sources[#sources + 1] = ikey(ARGV[i]) end end

-- The rank (in descending order) of the first member of k after (at, e).
local function after_(k, at, e)
  local lo = redis.call('ZCOUNT', k, '(' .. at, '+inf')
  local hi = lo + redis.call('ZCOUNT', k, at, at)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local m = redis.call('ZREVRANGE', k, mid, mid)[1]
    if less(m, e) then hi = mid else lo = mid + 1 end
  end
  return lo
end

local found = {}
for _, k in ipairs(sources) do
  local start = 0
  if before ~= '' then start = redis.call('ZCOUNT', k, before, '+inf') end
  if cAt ~= '' then start = math.max(start, after_(k, cAt, cE)) end
  local got = 0
  while got < limit do
    local page = redis.call('ZREVRANGE', k, start, start + (limit - got) - 1, 'WITHSCORES')
    if #page == 0 then break end
    local kept, stop = 0, false
    for i = 1, #page, 2 do
      local e, score = page[i], tonumber(page[i + 1])
      if after ~= '' and score <= tonumber(after) then
        stop = true
        break
      end
      if redis.call('EXISTS', rkey(e)) == 1 then
        kept = kept + 1
        got = got + 1
        found[#found + 1] = {score, e}
      else
        unindex(e)
      end
    end
    if stop then break end
    start = start + kept
  end
end
table.sort(found, function(a, b)
  if a[1] ~= b[1] then return a[1] > b[1] end
  return less(b[2], a[2])
end)
local out = {}
for i = 1, math.min(limit, #found) do recordOf(found[i][2], out) end
return out
`

/**
 * One step of sweep. ARGV: P, before ms, '1' = force, batch, skip (how many
 * kept executions at the front to pass over).
 * → {removed, kept, 1 if there may be more}.
 */
const SWEEP = `${PRELUDE}
local tnow = nowMs()
local before, force, batch, skip = ARGV[2], ARGV[3] == '1', tonumber(ARGV[4]), tonumber(ARGV[5])
local candidates = redis.call('ZRANGEBYSCORE', ekey, '-inf', '(' .. before, 'LIMIT', skip, batch)
local removed, kept = 0, 0
for _, e in ipairs(candidates) do
  local r = redis.call('HMGET', rkey(e), 'st', 'lo', 'lx')
  if redis.call('EXISTS', rkey(e)) == 0 then
    clearExecution(e)
  elseif force or (r[1] ~= 'interrupted' and r[1] ~= 'sleeping' and (not r[2] or (tonumber(r[3]) or 0) <= tnow)) then
    clearExecution(e)
    removed = removed + 1
  else
    kept = kept + 1
  end
end
local more = 0
if #candidates == batch then more = 1 end
return {removed, kept, more}
`

/**
 * One bounded step of the migration from the 0.1.0 layout. ARGV: P, budget
 * (executions + old checkpoints looked at). → 1: there is more (call again);
 * 0: nothing (left) to migrate.
 *
 * It walks only the old indexes, oldest execution first: for each execution id
 * of the old `P .. 'executions'` sorted set, the members of its old
 * `P .. 'execution:' .. e .. ':checkpoints'` set. The old layout is ambiguous
 * (with nested prefixes a key of another store can look like ours), so it
 * trusts nothing it did not check: the executions index and an execution's
 * index only when they are sorted sets; a checkpoint only when its old key is a
 * string whose JSON says it is that id of that execution — no other store's
 * document says so. Such a checkpoint is RENAMEd into its new key (its expiry
 * goes with it) and indexed at its old version in the new execution set; the
 * execution's record follows its newest moved checkpoint (updatedAt: the old
 * last-save time; status `interrupted` when that checkpoint has nodes to run,
 * so no worker takes it by surprise, else `done`), and the new keys live at
 * least as long as the old ones (forever if an old one had no expiry).
 * Anything else is left where it is, untouched: a member whose document is
 * missing, foreign or corrupt, a checkpoint whose id or version is already
 * taken in the new layout. A moved member leaves its old index (an emptied
 * index disappears); an execution leaves the old executions set once its old
 * index is walked to the end, and the old executions set disappears with its
 * last one.
 *
 * Every step is atomic and leaves the data consistent, so an interrupted
 * migration resumes where it stopped, and two processes migrating at once
 * share the work. Where the walk of a long execution stands (how many members
 * at the front of its old index stay behind) is kept in \`mkey\`, which expires:
 * losing it only means looking at those members again.
 */
const MIGRATE = `${PRELUDE}
local budget = tonumber(ARGV[2])
local tnow = nowMs()
local oldE = P .. 'executions'
local function oldX(e) return P .. 'execution:' .. e .. ':checkpoints' end
local function oldC(id) return P .. 'checkpoint:' .. id end
local function typeOf(k) return redis.call('TYPE', k).ok end

if typeOf(oldE) ~= 'zset' then
  if redis.call('EXISTS', mkey) == 1 then redis.call('DEL', mkey) end
  return 0
end

-- Lets k live at least as long as an old key whose PTTL was ttl (-1: forever); fresh: k was just made.
local function outliveOld(k, ttl, fresh)
  if ttl < 0 then
    redis.call('PERSIST', k)
  else
    local left = redis.call('PTTL', k)
    if fresh or (left >= 0 and left < ttl) then redis.call('PEXPIRE', k, ttl) end
  end
end

-- The document at k if it says it is checkpoint id of execution e, else nil.
local function claims(k, id, e)
  local ok, doc = pcall(cjson.decode, redis.call('GET', k))
  if not (ok and type(doc) == 'table') then return nil end
  if doc.id == id and doc.executionId == e then return doc end
  return nil
end

local ettl = redis.call('PTTL', oldE)
local indexTtl = 0
if ettl > 0 then indexTtl = ettl end

-- Moves old checkpoint m (version v) of execution e (last saved at) if it is ours and its place is free.
local function move(e, m, v, at, xttl)
  if not isId(m) then return false end
  local from = oldC(m)
  if typeOf(from) ~= 'string' then return false end
  local doc = claims(from, m, e)
  if not doc then return false end
  local to, x, rk = ckey(m), xkey(e), rkey(e)
  local tx, tr = typeOf(x), typeOf(rk)
  if (tx ~= 'zset' and tx ~= 'none') or (tr ~= 'hash' and tr ~= 'none') or redis.call('EXISTS', to) == 1 or (tx == 'zset' and taken(x, v)) then
    return false
  end
  redis.call('RENAME', from, to)
  redis.call('ZADD', x, v, m)
  outliveOld(x, xttl, tx == 'none')
  local old = redis.call('HMGET', rk, 'v', 'st')
  if not old[1] or tonumber(old[1]) < tonumber(v) then
    local st = 'done'
    if type(doc.next) == 'table' and #doc.next > 0 then st = 'interrupted' end
    if not old[1] then redis.call('DEL', rk) end
    redis.call('HSET', rk, 'v', v, 'id', m, 'at', at, 'st', st)
    redis.call('HSETNX', rk, 'n', '0')
    outliveOld(rk, xttl, tr == 'none')
    reindex(e, old[2], indexTtl, tnow)
  end
  return true
end

local work = 0
while work < budget do
  local first = redis.call('ZRANGE', oldE, 0, 0, 'WITHSCORES')
  if #first == 0 then break end
  local e, at = first[1], first[2]
  work = work + 1
  -- How many members at the front of e's old index stay behind (a walk an earlier step began).
  local skip = 0
  if typeOf(mkey) == 'string' then
    local n, name = string.match(redis.call('GET', mkey), '^(%d+) (.*)$')
    if name == e then skip = tonumber(n) end
  end
  local more = false
  local x = oldX(e)
  if isId(e) and typeOf(x) == 'zset' then
    local xttl = redis.call('PTTL', x)
    local want = math.max(budget - work, 1)
    local members = redis.call('ZRANGE', x, skip, skip + want - 1, 'WITHSCORES')
    for i = 1, #members, 2 do
      work = work + 1
      if move(e, members[i], members[i + 1], at, xttl) then
        redis.call('ZREM', x, members[i])
      else
        skip = skip + 1
      end
    end
    more = #members == 2 * want
  end
  if more then
    redis.call('SET', mkey, skip .. ' ' .. e, 'PX', 3600000)
  else
    redis.call('ZREM', oldE, e)
    if redis.call('EXISTS', mkey) == 1 then redis.call('DEL', mkey) end
  end
end
if redis.call('EXISTS', oldE) == 1 then return 1 end
return 0
`

/**
 * Every script of the store, by the name its ioredis command gets
 * (`defineCommand`; ioredis sends `EVALSHA`, and `EVAL` when the server does
 * not know the script yet).
 */
export const SCRIPTS = {
  ecpSave: SAVE,
  ecpRead: READ,
  ecpDelete: DELETE,
  ecpClear: CLEAR,
  ecpPrune: PRUNE,
  ecpSaveWrites: SAVE_WRITES,
  ecpUpdate: UPDATE,
  ecpClaim: CLAIM,
  ecpListExecutions: LIST_EXECUTIONS,
  ecpSweep: SWEEP,
  ecpMigrate: MIGRATE
} as const

/** The name of a script's command. */
export type ScriptName = keyof typeof SCRIPTS
