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
 * - `{prefix}|executions` (sorted set): the execution ids, scored by the time of their last save (epoch ms)
 * - `{prefix}|s|{token}` (string): a large document on its way in (staging)
 * - `{prefix}|migration` (string): where an unfinished migration from the 0.1.0 layout stands (expires)
 *
 * Why two stores never share a key: `|` is reserved. Prefixes are
 * `[A-Za-z0-9_:.-]{0,64}` and ids (checkpoint and execution ids, staging
 * tokens, which are UUIDs) are `[A-Za-z0-9._:-]`: none holds a `|`. A key of
 * the store with prefix `p` is `K + p + "|" + rest`, where `K` is the client's
 * ioredis `keyPrefix` (the same for both stores, usually empty). `p` holds no
 * `|`, so `p` is exactly the text between `K` and the first `|` that follows
 * it: a key names its prefix, so two different prefixes — nested (`p:` and
 * `p:checkpoint:`) or not — never build the same key. Within one prefix, the
 * text between the first and the second `|` (or the end) names the type (`c`,
 * `x`, `s`, `executions`, `migration`) and the rest is one id, which holds no
 * `|`: a key has one meaning. Keys of the 0.1.0 layout hold no `|` after `K`,
 * so they are never keys of this layout either.
 *
 * The 0.1.0 layout (`{prefix}checkpoint:{id}`, `{prefix}execution:{e}:checkpoints`,
 * `{prefix}executions`, `{prefix}staging:{uuid}`) was ambiguous when prefixes
 * nest: `MIGRATE` moves it to this one, trusting no old key it did not check.
 *
 * @internal
 */
import { createHash } from "node:crypto"

/**
 * The keys of a store with `prefix`, as the client names them (ioredis adds its
 * own `keyPrefix` in front). Must agree with the Lua `PRELUDE`.
 */
export const keysOf = (prefix: string) => ({
  checkpoint: (id: string) => `${prefix}|c|${id}`,
  execution: (executionId: string) => `${prefix}|x|${executionId}`,
  executions: `${prefix}|executions`,
  staging: (token: string) => `${prefix}|s|${token}`
})

/**
 * How many executions one `listExecutions` page handles: the size of each
 * `ZSCAN … COUNT` of the executions set and the most ids one call of the page
 * script reads.
 */
export const LIST_PAGE = 128

/**
 * A page script stops early (and the client sends the rest again) once the
 * documents it read add up to this many bytes, so a page of large states stays
 * a short call too.
 */
export const LIST_PAGE_BYTES = 512 * 1024

/**
 * How much one call of the migration script does at most: executions plus old
 * checkpoints looked at (each touches at most 4 keys, and a few more commands
 * on the two new indexes).
 */
export const MIGRATE_BATCH = 128

/**
 * Shared by every script: `ARGV[1]` is the full key prefix (the client's
 * `keyPrefix` + the store's prefix), from which keys named by an index member
 * are built.
 */
const PRELUDE = `
local P = ARGV[1]
-- The key space (see keysOf): every key is P .. '|' .. type .. …; ids never hold a '|'.
local K = P .. '|'
local function ckey(id) return K .. 'c|' .. id end
local function xkey(e) return K .. 'x|' .. e end
local function skey(token) return K .. 's|' .. token end
local ekey = K .. 'executions'
local mkey = K .. 'migration'
local CHUNK = 512

-- true when s is a checkpoint or execution id as the store writes them.
local function isId(s)
  return #s <= 128 and string.match(s, '^[A-Za-z0-9_:%-][A-Za-z0-9_:%.%-]*$') ~= nil
end

-- Sets the expiry of the index keys after a save: ttl > 0 sets it on the
-- execution's set and lets the executions set live at least as long; 0 makes
-- both persistent, so an index never expires before a checkpoint it lists.
local function expire(x, ttl, freshE)
  if ttl > 0 then
    redis.call('PEXPIRE', x, ttl)
    local left = redis.call('PTTL', ekey)
    if freshE or (left >= 0 and left < ttl) then redis.call('PEXPIRE', ekey, ttl) end
  else
    redis.call('PERSIST', x)
    redis.call('PERSIST', ekey)
  end
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

/**
 * Shared by the two save scripts, after {@link PRELUDE}: the expectation check
 * of a conditional save, and the words for a staged document that is missing.
 *
 * A document argument `'*' .. token` stands for the staging key
 * `skey(token)`, which the same pipeline `SET` to the document just before the
 * script (a JSON document never starts with `*`). The scripts check it inline,
 * so that a save without staging or expectation pays for no more than a byte
 * comparison.
 */
const SAVE_PRELUDE = `${PRELUDE}
-- The newest version of the execution set x, as \`latest\` sees it: the
-- highest score whose checkpoint key exists (0: none). Members whose
-- checkpoint vanished are removed on the way, as every read does.
local function newest(x)
  while true do
    local top = redis.call('ZREVRANGE', x, 0, 0, 'WITHSCORES')
    if #top == 0 then return 0 end
    if redis.call('EXISTS', ckey(top[1])) == 1 then return tonumber(top[2]) end
    redis.call('ZREM', x, top[1])
  end
end

local STAGING_LOST = 'ERR effect-checkpoint: a staged document is missing (its staging key expired or was removed); nothing was written'
`

/**
 * KEYS: checkpoint, execution set, executions[, the expectation's execution set].
 * ARGV: P, id, executionId, version, document (or '*' .. staging token), ttl ms, now ms[, expected latest version].
 * → 1 saved; 0 conflict; -1 - actual: the expectation failed, the newest version is actual.
 * Whenever it does not save, it removes the staging key too.
 */
const SAVE = `${SAVE_PRELUDE}
local id, e, v, doc, ttl, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]
local s = string.byte(doc, 1) == 42 and skey(string.sub(doc, 2))
local refused, free
if KEYS[4] then
  local actual = newest(KEYS[4])
  if actual ~= tonumber(ARGV[8]) then refused = -1 - actual end
  -- newest() leaves no member above actual: a higher version of that execution is free.
  free = KEYS[4] == KEYS[2] and tonumber(v) > actual
end
if not refused and (redis.call('EXISTS', KEYS[1]) == 1 or (not free and taken(KEYS[2], v))) then refused = 0 end
if refused then
  if s then redis.call('DEL', s) end
  return refused
end
if s and redis.call('EXISTS', s) == 0 then return redis.error_reply(STAGING_LOST) end
local freshE = ttl > 0 and redis.call('EXISTS', KEYS[3]) == 0
redis.call('ZADD', KEYS[3], now, e)
redis.call('ZADD', KEYS[2], v, id)
if s then
  redis.call('RENAME', s, KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) else redis.call('PERSIST', KEYS[1]) end
elseif ttl > 0 then
  redis.call('SET', KEYS[1], doc, 'PX', ttl)
else
  redis.call('SET', KEYS[1], doc)
end
expire(KEYS[2], ttl, freshE)
return 1
`

/**
 * KEYS: executions[, the expectation's execution set]. ARGV: P, ttl ms, now ms[, expected latest version],
 * then (id, executionId, version, document or '*' .. staging token) per checkpoint.
 * → 0 saved; i > 0: the i-th checkpoint conflicts; -1 - actual: the expectation failed, the newest
 * version is actual. Whenever it does not save, it writes nothing and removes the batch's staging keys.
 */
const SAVE_MANY = `${SAVE_PRELUDE}
local ttl, now = tonumber(ARGV[2]), ARGV[3]
local h = 3
if KEYS[2] then h = 4 end
local n = (#ARGV - h) / 4
local refused, lost, above
if KEYS[2] then
  local actual = newest(KEYS[2])
  if actual ~= tonumber(ARGV[4]) then refused = -1 - actual end
  -- newest() leaves no member above actual: a higher version of that execution is free.
  above = actual
end
if not refused then
  for i = 0, n - 1 do
    local at = h + 1 + 4 * i
    local x, v = xkey(ARGV[at + 1]), ARGV[at + 2]
    local free = above and x == KEYS[2] and tonumber(v) > above
    if redis.call('EXISTS', ckey(ARGV[at])) == 1 or (not free and taken(x, v)) then
      refused = i + 1
      break
    end
    local doc = ARGV[at + 3]
    if string.byte(doc, 1) == 42 and redis.call('EXISTS', skey(string.sub(doc, 2))) == 0 then
      refused, lost = 0, true
      break
    end
  end
end
if refused then
  for i = 0, n - 1 do
    local doc = ARGV[h + 4 + 4 * i]
    if string.byte(doc, 1) == 42 then redis.call('DEL', skey(string.sub(doc, 2))) end
  end
  if lost then return redis.error_reply(STAGING_LOST) end
  return refused
end
local freshE = ttl > 0 and redis.call('EXISTS', KEYS[1]) == 0
for i = 0, n - 1 do
  local at = h + 1 + 4 * i
  local id, e, v, doc = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local x = xkey(e)
  local k = ckey(id)
  redis.call('ZADD', KEYS[1], now, e)
  redis.call('ZADD', x, v, id)
  if string.byte(doc, 1) == 42 then
    redis.call('RENAME', skey(string.sub(doc, 2)), k)
    if ttl > 0 then redis.call('PEXPIRE', k, ttl) else redis.call('PERSIST', k) end
  elseif ttl > 0 then
    redis.call('SET', k, doc, 'PX', ttl)
  else
    redis.call('SET', k, doc)
  end
  expire(x, ttl, freshE)
  freshE = false
end
return 0
`

/**
 * KEYS: execution set. ARGV: P, '1' = newest first, exclusive bound, limit (-1 = all).
 * → flat {id, version, document} triples of live checkpoints in order.
 */
const READ = `${PRELUDE}
local x, rev, bound, limit = KEYS[1], ARGV[2] == '1', ARGV[3], tonumber(ARGV[4])
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
 * One page of `listExecutions`: the client walks the executions set with
 * `ZSCAN` and hands each page of ids (at most {@link LIST_PAGE}) to this script.
 * KEYS: executions. ARGV: P, byte budget, then execution ids.
 * → {n, then (executionId, id, version, document) per execution with a live
 * checkpoint}: the script handled the first n ids (it stops early once the
 * documents it read exceed the byte budget; the caller sends the rest again).
 * Handled ids without a live checkpoint are removed from the executions set.
 */
const LIST_PAGE_SCRIPT = `${PRELUDE}
local limit = tonumber(ARGV[2])
local out, bytes, n = {0}, 0, 0
for i = 3, #ARGV do
  if bytes >= limit then break end
  local e = ARGV[i]
  n = n + 1
  local got = false
  if isId(e) then
    local x = xkey(e)
    local hi = '+inf'
    while true do
      local page = redis.call('ZREVRANGEBYSCORE', x, hi, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
      if #page == 0 then break end
      local one = {}
      if collect(x, page, one) > 0 then
        out[#out + 1] = e
        out[#out + 1] = one[1]
        out[#out + 1] = one[2]
        out[#out + 1] = one[3]
        if one[3] then bytes = bytes + #one[3] end
        got = true
        break
      end
      hi = '(' .. page[2]
    end
  end
  if not got then redis.call('ZREM', KEYS[1], e) end
end
out[1] = n
return out
`

/**
 * KEYS: checkpoint. ARGV: P, id. Finds the execution from the document (our
 * encoding puts it first; anything else is parsed), removes the key and its
 * index entry. → 1 removed, 0 there was none.
 */
const DELETE = `${PRELUDE}
local k = KEYS[1]
local t = redis.call('TYPE', k).ok
if t == 'none' then return 0 end
local e
if t == 'string' then
  e = string.match(redis.call('GETRANGE', k, 0, 511), '^{"id":"[^"]*","executionId":"([^"]+)"')
  if not e then
    local ok, doc = pcall(cjson.decode, redis.call('GET', k))
    if ok and type(doc) == 'table' and type(doc.executionId) == 'string' then e = doc.executionId end
  end
end
redis.call('DEL', k)
if e and isId(e) then
  local x = xkey(e)
  redis.call('ZREM', x, ARGV[2])
  if redis.call('EXISTS', x) == 0 then redis.call('ZREM', ekey, e) end
end
return 1
`

/** KEYS: execution set, executions. ARGV: P, executionId. → how many checkpoint keys were removed. */
const CLEAR = `${PRELUDE}
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local n = 0
for i = 1, #members, CHUNK do
  local keys = {}
  for j = i, math.min(i + CHUNK - 1, #members) do keys[#keys + 1] = ckey(members[j]) end
  n = n + redis.call('DEL', unpack(keys))
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return n
`

/** KEYS: execution set, executions. ARGV: P, executionId, keep. → how many live checkpoints were removed. */
const PRUNE = `${PRELUDE}
local x, keep = KEYS[1], tonumber(ARGV[3])
if redis.call('ZCARD', x) <= keep then return 0 end
local live, removed = 0, 0
for _, m in ipairs(redis.call('ZREVRANGE', x, 0, -1)) do
  local k = ckey(m)
  if redis.call('EXISTS', k) == 1 then
    live = live + 1
    if live > keep then
      redis.call('DEL', k)
      redis.call('ZREM', x, m)
      removed = removed + 1
    end
  else
    redis.call('ZREM', x, m)
  end
end
if redis.call('EXISTS', x) == 0 then redis.call('ZREM', KEYS[2], ARGV[2]) end
return removed
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
 * goes with it), indexed at its old version in the new execution set, its
 * execution added to the new executions set at its old last-save time (the
 * later one if it is there already), and the two new indexes made to live at
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
 * at the front of its old index stay behind) is kept in `mkey`, which expires:
 * losing it only means looking at those members again.
 */
const MIGRATE = `${PRELUDE}
local budget = tonumber(ARGV[2])
local oldE = P .. 'executions'
local function oldX(e) return P .. 'execution:' .. e .. ':checkpoints' end
local function oldC(id) return P .. 'checkpoint:' .. id end
local function typeOf(k) return redis.call('TYPE', k).ok end

if typeOf(oldE) ~= 'zset' then
  if redis.call('EXISTS', mkey) == 1 then redis.call('DEL', mkey) end
  return 0
end

-- Lets k live at least as long as an old key whose PTTL was ttl (-1: forever); fresh: k was just made.
local function outlive(k, ttl, fresh)
  if ttl < 0 then
    redis.call('PERSIST', k)
  else
    local left = redis.call('PTTL', k)
    if fresh or (left >= 0 and left < ttl) then redis.call('PEXPIRE', k, ttl) end
  end
end

-- true when the string at k says it is checkpoint id of execution e (our encoding puts both first).
local function claims(k, id, e)
  local a, b = string.match(redis.call('GETRANGE', k, 0, 399), '^{"id":"([^"]*)","executionId":"([^"]*)"')
  if not a then
    local ok, doc = pcall(cjson.decode, redis.call('GET', k))
    if not (ok and type(doc) == 'table') then return false end
    a, b = doc.id, doc.executionId
  end
  return a == id and b == e
end

local ettl = redis.call('PTTL', oldE)

-- Moves old checkpoint m (version v) of execution e (last saved at) if it is ours and its place is free.
local function move(e, m, v, at, xttl)
  if not isId(m) then return false end
  local from = oldC(m)
  if typeOf(from) ~= 'string' or not claims(from, m, e) then return false end
  local to, x = ckey(m), xkey(e)
  local tx = typeOf(x)
  if (tx ~= 'zset' and tx ~= 'none') or redis.call('EXISTS', to) == 1 or (tx == 'zset' and taken(x, v)) then return false end
  redis.call('RENAME', from, to)
  redis.call('ZADD', x, v, m)
  outlive(x, xttl, tx == 'none')
  local freshE = redis.call('EXISTS', ekey) == 0
  local score = redis.call('ZSCORE', ekey, e)
  if not score or tonumber(score) < tonumber(at) then redis.call('ZADD', ekey, at, e) end
  outlive(ekey, ettl, freshE)
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
 * A Lua script and its SHA-1, for `EVALSHA`.
 */
export interface Script {
  readonly lua: string
  readonly sha: string
}

const script = (lua: string): Script => ({ lua, sha: createHash("sha1").update(lua).digest("hex") })

/** Every script of the store (loaded into the server's script cache when a store is built). */
export const SCRIPTS = {
  save: script(SAVE),
  saveMany: script(SAVE_MANY),
  read: script(READ),
  listPage: script(LIST_PAGE_SCRIPT),
  delete: script(DELETE),
  clear: script(CLEAR),
  prune: script(PRUNE),
  migrate: script(MIGRATE)
} as const
