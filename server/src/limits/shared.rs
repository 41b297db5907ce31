//! Rate limits shared by every instance, kept in Redis.
//!
//! Admission is one server-side script on Redis's clock: it checks every scope's requests,
//! tokens and slots and, only if all have room, takes them — so a call refused by one limit
//! consumes nothing from the others. The windows are the same two-window weighted minute as
//! the embedded limiter. A slot is a lease (a sorted-set member scored by its expiry) that
//! this instance renews while the call runs; if the instance dies, the lease lapses and the
//! slot frees itself within `redis_lease_seconds`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::rates::RateScope;
use crate::tasks;

const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minute = math.floor(now / 60000)
local elapsed = (now - minute * 60000) / 60000
local prefix, tokens, lease, lease_ms, n = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local reset = (minute + 1) * 60000 - now
local function load(prev, cur) return math.ceil(prev * (1 - elapsed)) + cur end
-- The most constraining request and token limits, for response headers.
local br, rl, rleft, bt, tl, tleft = 2, -1, -1, 2, -1, -1
for i = 0, n - 1 do
  local id, rpm, tpm, par = ARGV[6 + i * 4], tonumber(ARGV[7 + i * 4]), tonumber(ARGV[8 + i * 4]), tonumber(ARGV[9 + i * 4])
  if rpm >= 0 or tpm >= 0 then
    local c = redis.call('HMGET', prefix .. ':rl:' .. id .. ':' .. minute, 'r', 't')
    local p = redis.call('HMGET', prefix .. ':rl:' .. id .. ':' .. (minute - 1), 'r', 't')
    if rpm >= 0 then
      local used = load(tonumber(p[1] or 0), tonumber(c[1] or 0))
      if used + 1 > rpm then return {1, i, 'r', rpm, used, reset} end
      local left = rpm - used - 1
      if left / math.max(rpm, 1) < br then br, rl, rleft = left / math.max(rpm, 1), rpm, left end
    end
    if tpm >= 0 then
      local used = load(tonumber(p[2] or 0), tonumber(c[2] or 0))
      if used + tokens > tpm then return {1, i, 't', tpm, used, reset} end
      local left = tpm - used - tokens
      if left / math.max(tpm, 1) < bt then bt, tl, tleft = left / math.max(tpm, 1), tpm, left end
    end
  end
  if par >= 0 then
    local slots = prefix .. ':slots:' .. id
    redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
    local used = redis.call('ZCARD', slots)
    if used + 1 > par then return {1, i, 'p', par, used, 1000} end
  end
end
for i = 0, n - 1 do
  local id, rpm, tpm, par = ARGV[6 + i * 4], tonumber(ARGV[7 + i * 4]), tonumber(ARGV[8 + i * 4]), tonumber(ARGV[9 + i * 4])
  if rpm >= 0 or tpm >= 0 then
    local cur = prefix .. ':rl:' .. id .. ':' .. minute
    redis.call('HINCRBY', cur, 'r', 1)
    redis.call('HINCRBY', cur, 't', tokens)
    redis.call('PEXPIRE', cur, 150000)
  end
  if par >= 0 then
    local slots = prefix .. ':slots:' .. id
    redis.call('ZADD', slots, now + lease_ms, lease)
    redis.call('PEXPIRE', slots, lease_ms * 2)
  end
end
return {0, minute, rl, rleft, tl, tleft}
"#;

/// Corrects tokens in the minute they were charged, takes back the request if cancelled, and
/// frees the slots. ARGV: prefix, lease, minute, token delta, request delta, n, then n pairs
/// (scope id, holds a slot).
const RELEASE: &str = r#"
local prefix, lease, minute, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[6])
for i = 0, n - 1 do
  local id, slot = ARGV[7 + i * 2], ARGV[8 + i * 2]
  local cur = prefix .. ':rl:' .. id .. ':' .. minute
  if redis.call('EXISTS', cur) == 1 then
    if ARGV[4] ~= '0' then redis.call('HINCRBY', cur, 't', ARGV[4]) end
    if ARGV[5] ~= '0' then redis.call('HINCRBY', cur, 'r', ARGV[5]) end
  end
  if slot == '1' then redis.call('ZREM', prefix .. ':slots:' .. id, lease) end
end
return 0
"#;

/// Extends leases still held. ARGV: prefix, lease ms, then pairs (scope id, lease).
const RENEW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix, lease_ms = ARGV[1], tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  local slots = prefix .. ':slots:' .. ARGV[i]
  redis.call('ZADD', slots, 'XX', now + lease_ms, ARGV[i + 1])
  redis.call('PEXPIRE', slots, lease_ms * 2)
end
return 0
"#;

/// Each scope's weighted requests and tokens this minute and its live slots.
const STATUS: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minute = math.floor(now / 60000)
local elapsed = (now - minute * 60000) / 60000
local prefix, out = ARGV[1], {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local c = redis.call('HMGET', prefix .. ':rl:' .. id .. ':' .. minute, 'r', 't')
  local p = redis.call('HMGET', prefix .. ':rl:' .. id .. ':' .. (minute - 1), 'r', 't')
  table.insert(out, math.ceil(tonumber(p[1] or 0) * (1 - elapsed)) + tonumber(c[1] or 0))
  table.insert(out, math.ceil(tonumber(p[2] or 0) * (1 - elapsed)) + tonumber(c[2] or 0))
  table.insert(out, redis.call('ZCOUNT', prefix .. ':slots:' .. id, now, '+inf'))
end
return out
"#;

/// What a shared admission holds.
#[derive(Debug)]
pub struct Hold {
    lease: String,
    minute: i64,
    tokens: u64,
    /// (scope id, holds a slot)
    scopes: Vec<(String, bool)>,
}

/// The answer of one admission.
pub enum Admission {
    /// The hold, and the most constraining (limit, remaining) for requests and for tokens.
    Admitted(Hold, Option<(u64, u64)>, Option<(u64, u64)>),
    /// The index of the refusing scope, the limit's kind (`r`, `t`, `p`), the limit, the use,
    /// and the milliseconds until the window resets.
    Refused { scope: usize, kind: String, limit: u64, used: u64, reset_ms: u64 },
}

/// Redis could not be asked (unreachable, timed out, or answered nonsense).
#[derive(Debug)]
pub struct Unreachable(pub String);

pub struct SharedRates {
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    /// Don't retry connecting more often than this after a failure.
    next_connect: Mutex<Option<Instant>>,
    prefix: String,
    channel: String,
    lease: Duration,
    timeout: Duration,
    scripts: [redis::Script; 4],
    /// Leases this instance holds: lease → scope ids with a slot.
    leases: Mutex<HashMap<String, Vec<String>>>,
    /// Whether the last call failed (so a failure is logged once per outage).
    down: AtomicBool,
    /// Instances sharing the limits, as last seen (subscribers of the invalidation channel).
    instances: AtomicU64,
}

impl SharedRates {
    pub fn new(url: &str, prefix: &str, lease: Duration, timeout: Duration) -> Result<Arc<Self>, redis::RedisError> {
        let shared = Arc::new(Self {
            client: redis::Client::open(url)?,
            conn: Mutex::new(None),
            next_connect: Mutex::new(None),
            prefix: prefix.to_owned(),
            channel: format!("{prefix}:invalidate"),
            lease,
            timeout,
            scripts: [ADMIT, RELEASE, RENEW, STATUS].map(redis::Script::new),
            leases: Mutex::new(HashMap::new()),
            down: AtomicBool::new(false),
            instances: AtomicU64::new(1),
        });
        let weak = Arc::downgrade(&shared);
        tasks::spawn("rate-lease-renewal", async move {
            let every = (lease / 3).max(Duration::from_millis(200));
            loop {
                tokio::time::sleep(every).await;
                let Some(shared) = weak.upgrade() else { return };
                shared.renew().await;
            }
        });
        Ok(shared)
    }

    /// How many instances share each limit (at least one).
    pub fn instances(&self) -> u64 {
        self.instances.load(Ordering::Relaxed).max(1)
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    async fn connection(&self) -> Result<MultiplexedConnection, Unreachable> {
        if let Some(c) = self.conn.lock().ok().and_then(|c| c.clone()) {
            return Ok(c);
        }
        if let Some(at) = self.next_connect.lock().ok().and_then(|n| *n)
            && Instant::now() < at
        {
            return Err(Unreachable("Redis is unreachable (retrying shortly)".into()));
        }
        match tokio::time::timeout(self.timeout, self.client.get_multiplexed_async_connection()).await {
            Ok(Ok(c)) => {
                if let Ok(mut slot) = self.conn.lock() {
                    *slot = Some(c.clone());
                }
                Ok(c)
            }
            Ok(Err(e)) => Err(self.failed(format!("cannot connect to Redis ({:?})", e.kind()))),
            Err(_) => Err(self.failed("connecting to Redis timed out".into())),
        }
    }

    fn failed(&self, message: String) -> Unreachable {
        if let Ok(mut c) = self.conn.lock() {
            *c = None;
        }
        if let Ok(mut n) = self.next_connect.lock() {
            *n = Some(Instant::now() + Duration::from_millis(500));
        }
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::error!(alert = "redis_unavailable", %message, "Redis is unavailable for shared rate limits");
        }
        Unreachable(message)
    }

    fn recovered(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::warn!(alert = "redis_recovered", "Redis is reachable again; shared rate limits resume");
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, script: usize, args: &[String]) -> Result<T, Unreachable> {
        let mut conn = self.connection().await?;
        let mut inv = self.scripts[script].prepare_invoke();
        for a in args {
            inv.arg(a);
        }
        match tokio::time::timeout(self.timeout, inv.invoke_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => {
                self.recovered();
                Ok(v)
            }
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                Err(self.failed(format!("Redis connection failed ({:?})", e.kind())))
            }
            // An error reply is not an outage: the connection stays, nothing is alerted.
            Ok(Err(e)) => {
                let message =
                    format!("Redis refused a rate-limit script ({:?}: {})", e.kind(), e.detail().unwrap_or(""));
                tracing::warn!(%message, "rate-limit script failed");
                Err(Unreachable(message))
            }
            Err(_) => Err(self.failed(format!("Redis did not answer within {:?}", self.timeout))),
        }
    }

    /// Admits a call of `tokens` estimated tokens against every scope, all or nothing.
    pub async fn admit(&self, scopes: &[RateScope], tokens: u64) -> Result<Admission, Unreachable> {
        let lease = uuid::Uuid::new_v4().simple().to_string();
        let mut args = vec![
            self.prefix.clone(),
            tokens.to_string(),
            lease.clone(),
            self.lease.as_millis().to_string(),
            scopes.len().to_string(),
        ];
        let opt = |v: Option<u64>| v.map_or_else(|| "-1".to_owned(), |v| v.to_string());
        for s in scopes {
            args.extend([s.id.clone(), opt(s.rpm), opt(s.tpm), opt(s.parallel)]);
        }
        let reply: Vec<redis::Value> = self.run(0, &args).await?;
        let int = |i: usize| match reply.get(i) {
            Some(redis::Value::Int(n)) => Ok(*n),
            _ => Err(Unreachable("Redis answered a rate-limit script unexpectedly".into())),
        };
        if int(0)? == 0 {
            let pair = |i: usize| -> Result<Option<(u64, u64)>, Unreachable> {
                let (limit, left) = (int(i)?, int(i + 1)?);
                Ok(u64::try_from(limit).ok().zip(u64::try_from(left).ok()))
            };
            let (minute, requests, tokens_left) = (int(1)?, pair(2)?, pair(4)?);
            // Only a fully read admission is renewed (an unreadable one lapses with its lease).
            let held: Vec<(String, bool)> = scopes.iter().map(|s| (s.id.clone(), s.parallel.is_some())).collect();
            let slots: Vec<String> = held.iter().filter(|(_, slot)| *slot).map(|(id, _)| id.clone()).collect();
            if !slots.is_empty()
                && let Ok(mut leases) = self.leases.lock()
            {
                leases.insert(lease.clone(), slots);
            }
            let hold = Hold { lease, minute, tokens, scopes: held };
            return Ok(Admission::Admitted(hold, requests, tokens_left));
        }
        let kind = match reply.get(2) {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(redis::Value::SimpleString(s)) => s.clone(),
            _ => String::new(),
        };
        let unsigned = |i| int(i).map(|n| u64::try_from(n).unwrap_or(0));
        Ok(Admission::Refused {
            scope: usize::try_from(int(1)?).unwrap_or(0),
            kind,
            limit: unsigned(3)?,
            used: unsigned(4)?,
            reset_ms: unsigned(5)?,
        })
    }

    /// Settles (`actual` tokens) or cancels (`None`) an admission, in the background.
    pub fn release(self: &Arc<Self>, hold: Hold, actual: Option<u64>) {
        if let Ok(mut leases) = self.leases.lock() {
            leases.remove(&hold.lease);
        }
        let clamp = |v: i128| i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX });
        let (dt, dr) = match actual {
            Some(actual) => (clamp(i128::from(actual) - i128::from(hold.tokens)), 0),
            None => (clamp(-i128::from(hold.tokens)), -1),
        };
        let mut args = vec![self.prefix.clone(), hold.lease, hold.minute.to_string(), dt.to_string(), dr.to_string()];
        args.push(hold.scopes.len().to_string());
        for (id, slot) in hold.scopes {
            args.extend([id, if slot { "1" } else { "0" }.to_owned()]);
        }
        let me = self.clone();
        tasks::spawn("rate-release", async move {
            // A lost release costs little: the slot's lease lapses and the estimate stands.
            let _ = me.run::<i64>(1, &args).await;
        });
    }

    /// Each scope's weighted requests and tokens this minute and its live slots.
    pub async fn status(&self, scopes: &[RateScope]) -> Result<Vec<(u64, u64, u64)>, Unreachable> {
        let mut args = vec![self.prefix.clone()];
        args.extend(scopes.iter().map(|s| s.id.clone()));
        let v: Vec<i64> = self.run(3, &args).await?;
        let n = |i: usize| v.get(i).map_or(0, |x| u64::try_from(*x).unwrap_or(0));
        Ok((0..scopes.len()).map(|i| (n(i * 3), n(i * 3 + 1), n(i * 3 + 2))).collect())
    }

    async fn renew(&self) {
        let held: Vec<(String, String)> = match self.leases.lock() {
            Ok(l) => l.iter().flat_map(|(lease, ids)| ids.iter().map(|id| (id.clone(), lease.clone()))).collect(),
            Err(_) => return,
        };
        if !held.is_empty() {
            let mut args = vec![self.prefix.clone(), self.lease.as_millis().to_string()];
            for (id, lease) in held {
                args.extend([id, lease]);
            }
            let _ = self.run::<i64>(2, &args).await;
        }
        // How many instances share the limits: each one subscribes to the invalidation channel.
        if let Ok(mut conn) = self.connection().await {
            let mut cmd = redis::cmd("PUBSUB");
            cmd.arg("NUMSUB").arg(&self.channel);
            let numsub = cmd.query_async::<(String, u64)>(&mut conn);
            match tokio::time::timeout(self.timeout, numsub).await {
                Ok(Ok((_, n))) => {
                    self.instances.store(n.max(1), Ordering::Relaxed);
                    self.recovered();
                }
                Ok(Err(e)) => {
                    self.failed(format!("Redis refused PUBSUB NUMSUB ({:?})", e.kind()));
                }
                Err(_) => {
                    self.failed(format!("Redis did not answer within {:?}", self.timeout));
                }
            }
        }
    }
}
