//! Lua scripts: each queue transition is one atomic step, so a crash between "ack" and "requeue"
//! (or between "enqueue" and "mark for coalescing") cannot happen.

/// KEYS: stream, topics set, marker_1..marker_n. ARGV: topic, marker ttl (s), then per marker
/// job id and job JSON. Returns, per marker, `{coalesced (0|1), job id}`: while a marker exists the
/// entity already has a queued, unstarted job and the event is absorbed into it.
pub const ENQUEUE: &str = r#"
local out = {}
redis.call('SADD', KEYS[2], ARGV[1])
for i = 3, #KEYS do
  local id = ARGV[2 * (i - 2) + 1]
  local job = ARGV[2 * (i - 2) + 2]
  local existing = redis.call('GET', KEYS[i])
  if existing then
    out[#out + 1] = {1, existing}
  else
    redis.call('XADD', KEYS[1], '*', 'job', job)
    redis.call('SET', KEYS[i], id, 'EX', ARGV[2])
    out[#out + 1] = {0, id}
  end
end
return out
"#;

/// KEYS: marker. ARGV: job id. The job has started: later events must queue a new job.
pub const UNMARK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// The outcome scripts below start with this check: ARGV[1] group, ARGV[2] entry id, ARGV[3] the
/// consumer recording the outcome. Only the entry's current owner may record one; a consumer whose
/// job was reclaimed by another (it looked dead) gets 0 and leaves the entry to the new owner.
macro_rules! owner_check {
    () => {
        r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
"#
    };
}

/// KEYS: stream. ARGV: group, entry id, consumer. Heartbeat: resets the idle time of an entry this
/// consumer still owns (`XCLAIM` min-idle 0 would take it from whoever reclaimed it). 1 = still
/// ours, 0 = lost.
pub const HEARTBEAT: &str = concat!(
    owner_check!(),
    r#"
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"#
);

/// KEYS: stream. ARGV: group, entry id, consumer. Success: acknowledge and drop the entry.
pub const ACK: &str = concat!(
    owner_check!(),
    r#"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"#
);

/// KEYS: stream, delayed set. ARGV: group, entry id, consumer, due (ms), job JSON.
pub const DELAY: &str = concat!(
    owner_check!(),
    r#"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
return 1
"#
);

/// KEYS: stream, dlq. ARGV: group, entry id, consumer, job JSON, error, failed_at (unix s),
/// dlq max entries (0 = unbounded; approximate, the retention pass trims exactly).
pub const DEAD_LETTER: &str = concat!(
    owner_check!(),
    r#"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if tonumber(ARGV[7]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'job', ARGV[4], 'error', ARGV[5], 'failed_at', ARGV[6])
else
  redis.call('XADD', KEYS[2], '*', 'job', ARGV[4], 'error', ARGV[5], 'failed_at', ARGV[6])
end
return 1
"#
);

/// KEYS: stream. ARGV: now (ms), max age of acked entries (ms, 0 = off), max length (0 = off).
/// Trims acked entries only: everything before the first entry some group has not acked (its
/// oldest pending entry, or the first one after its last-delivered id). Within that, entries
/// older than the max age go, and the oldest ones while the stream is longer than the max length.
/// A stream without a group was never read: nothing in it is acked. Returns the entries removed.
pub const TRIM_ACKED: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a_ms, a_seq, b_ms, b_seq)
  return a_ms < b_ms or (a_ms == b_ms and a_seq < b_seq)
end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local b_ms, b_seq
for _, g in ipairs(groups) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  local ms, seq = parse(f['last-delivered-id'])
  seq = seq + 1
  local p = redis.call('XPENDING', KEYS[1], f['name'])
  if p[1] > 0 then
    local p_ms, p_seq = parse(p[2])
    if less(p_ms, p_seq, ms, seq) then ms, seq = p_ms, p_seq end
  end
  if b_ms == nil or less(ms, seq, b_ms, b_seq) then b_ms, b_seq = ms, seq end
end
local c_ms, c_seq = 0, 0
if tonumber(ARGV[2]) > 0 then c_ms = tonumber(ARGV[1]) - tonumber(ARGV[2]) end
local max_len = tonumber(ARGV[3])
if max_len > 0 then
  local excess = redis.call('XLEN', KEYS[1]) - max_len
  if excess > 0 then
    local r = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', math.min(excess, 10000))
    local l_ms, l_seq = parse(r[#r][1])
    l_seq = l_seq + 1
    if less(c_ms, c_seq, l_ms, l_seq) then c_ms, c_seq = l_ms, l_seq end
  end
end
if less(b_ms, b_seq, c_ms, c_seq) then c_ms, c_seq = b_ms, b_seq end
if c_ms <= 0 and c_seq == 0 then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-%d', c_ms, c_seq))
"#;

/// KEYS: stream. ARGV: group, max idle (ms), the calling consumer (never deleted). Deletes the
/// group's consumers that own no pending entry and were idle longer than the max: one name is
/// left behind per process start otherwise. Check and delete are one step, so a consumer that
/// just took an entry is never deleted with it (that would orphan the entry). Returns the names.
pub const DELETE_IDLE_CONSUMERS: &str = r#"
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if type(consumers) ~= 'table' or consumers.err then return {} end
local deleted = {}
for _, c in ipairs(consumers) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['pending'] == 0 and f['idle'] > tonumber(ARGV[2]) and f['name'] ~= ARGV[3] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    deleted[#deleted + 1] = f['name']
  end
end
return deleted
"#;

/// KEYS: delayed set, topics set. ARGV: now (ms), limit, stream key prefix.
/// Moves due jobs back to their topic's stream; returns how many moved.
pub const PROMOTE: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local ok, job = pcall(cjson.decode, member)
  local topic = (ok and type(job) == 'table' and type(job.topic) == 'string') and job.topic or 'invalid'
  redis.call('SADD', KEYS[2], topic)
  redis.call('XADD', ARGV[3] .. topic, '*', 'job', member)
  redis.call('ZREM', KEYS[1], member)
end
return #due
"#;

/// KEYS: dlq, stream, topics set. ARGV: dlq entry id, job JSON (attempts reset), topic.
pub const REPLAY: &str = r#"
if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('SADD', KEYS[3], ARGV[3])
  return redis.call('XADD', KEYS[2], '*', 'job', ARGV[2])
end
return false
"#;

/// KEYS: lock. ARGV: owner token. Release only what we own.
pub const RELEASE_LOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;
