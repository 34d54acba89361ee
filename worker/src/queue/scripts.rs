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

/// KEYS: stream. ARGV: group, entry id. Success: acknowledge and drop the entry.
pub const ACK: &str = r#"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('XDEL', KEYS[1], ARGV[2])
"#;

/// KEYS: stream, delayed set. ARGV: group, entry id, due (ms), job JSON.
pub const DELAY: &str = r#"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
"#;

/// KEYS: stream, dlq. ARGV: group, entry id, job JSON, error, failed_at (unix s).
pub const DEAD_LETTER: &str = r#"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return redis.call('XADD', KEYS[2], '*', 'job', ARGV[3], 'error', ARGV[4], 'failed_at', ARGV[5])
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
