//! Rate limits shared by every instance, kept in Redis.
//!
//! Admission is one server-side script on Redis's clock: it checks every scope's requests,
//! tokens and slots and, only if all have room, takes them — so a call refused by one limit
//! consumes nothing from the others. The windows are the same two-window weighted minute as
//! the embedded limiter. A slot is a lease (a sorted-set member scored by its expiry) that
//! this instance renews while the call runs; if the instance dies, the lease lapses and the
//! slot frees itself within `redis_lease_seconds`.
//!
//! Budgets ride in the same admission. Each budget scope's period spend is a counter in Redis
//! (`<prefix>:b:<charge>`: field `s` the spend, field `h` what strict reservations hold, both
//! integer nano-USD) that every instance's settlements add to. Strict reservations are leases
//! too (`<prefix>:bres:<charge>`, members `<lease>|<nano-USD>` scored by expiry), so a dead
//! instance's holds lapse with its slots; `h` is their running sum, corrected as they lapse. A
//! counter Redis does not have (first use, an idle hour, or a Redis that lost its data) is
//! rebuilt from the database's stored spend before the call is judged.
//!
//! A settlement Redis did not take (unreachable, or the counter was missing) and the spend of
//! calls admitted on local counters while Redis was away are not added later — an increment
//! replayed onto a counter rebuilt meanwhile would count twice. Instead those counters are
//! deleted, once this instance's ledger has stored the records, and rebuilt from the database.
//! What a rebuild cannot see is spend other instances settled but have not yet stored (their
//! ledgers store within milliseconds). Amounts are exact while they stay below 2^53 nano-USD
//! (9 million USD) per counter: Lua's numbers are doubles.

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
-- Budgets: ARGV from b on: count, mode (s strict, o optimistic), estimate, counter ttl ms,
-- then pairs (charge, max; -1 for a scope with only a soft budget). A counter Redis lacks must be loaded before anything is judged.
local b = 6 + n * 4
local m, mode, estimate, ttl = tonumber(ARGV[b]), ARGV[b + 1], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
local missing, read = {2}, {}
for j = 0, m - 1 do
  read[j] = redis.call('HMGET', prefix .. ':b:' .. ARGV[b + 4 + j * 2], 's', 'h')
  if not read[j][1] then table.insert(missing, j) end
end
if #missing > 1 then return missing end
local budgets = {}
for j = 0, m - 1 do
  local id, max = ARGV[b + 4 + j * 2], tonumber(ARGV[b + 5 + j * 2])
  local spent, held = tonumber(read[j][1]), tonumber(read[j][2] or 0)
  if held > 0 then
    -- Reservations whose lease lapsed give their amount back; none left, nothing held.
    local counter, resv = prefix .. ':b:' .. id, prefix .. ':bres:' .. id
    local lapsed = 0
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', resv, '-inf', now)) do
      lapsed = lapsed + (tonumber(string.match(member, '|(%d+)$')) or 0)
    end
    if lapsed > 0 then
      redis.call('ZREMRANGEBYSCORE', resv, '-inf', now)
      held = redis.call('HINCRBY', counter, 'h', -lapsed)
    end
    if held > 0 and redis.call('EXISTS', resv) == 0 then
      redis.call('HSET', counter, 'h', 0)
      held = 0
    end
  end
  held = math.max(held, 0)
  -- A maximum below zero: a soft budget only, counted but never refusing.
  if max >= 0 then
    local fits
    if mode == 's' then fits = spent + held + estimate <= max else fits = spent < max end
    if not fits then return {3, j, spent, held} end
  end
  table.insert(budgets, spent)
  table.insert(budgets, held)
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
for j = 0, m - 1 do
  local id = ARGV[b + 4 + j * 2]
  if mode == 's' and tonumber(ARGV[b + 5 + j * 2]) >= 0 then
    local resv = prefix .. ':bres:' .. id
    redis.call('ZADD', resv, now + lease_ms, lease .. '|' .. ARGV[b + 2])
    redis.call('PEXPIRE', resv, lease_ms * 2)
    redis.call('HINCRBY', prefix .. ':b:' .. id, 'h', ARGV[b + 2])
  end
  redis.call('PEXPIRE', prefix .. ':b:' .. id, ttl)
end
local out = {0, minute, rl, rleft, tl, tleft}
for _, v in ipairs(budgets) do table.insert(out, v) end
return out
"#;

/// Corrects tokens in the minute they were charged, takes back the request if cancelled, frees
/// the slots, and settles the budgets: each held reservation removed (and its amount taken off
/// the counter's held sum), the cost added to every counter. Returns the indexes of counters
/// that were missing (their spend is then only in the database). ARGV: prefix, lease, minute,
/// token delta, request delta, n, n pairs (scope id, holds a slot), cost, k, then k pairs
/// (charge, reservation member or '').
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
local b = 7 + n * 2
local cost, k, missing = ARGV[b], tonumber(ARGV[b + 1]), {}
for j = 0, k - 1 do
  local id, member = ARGV[b + 2 + j * 2], ARGV[b + 3 + j * 2]
  local counter = prefix .. ':b:' .. id
  local present = redis.call('EXISTS', counter) == 1
  if member ~= '' and redis.call('ZREM', prefix .. ':bres:' .. id, member) == 1 and present then
    redis.call('HINCRBY', counter, 'h', -(tonumber(string.match(member, '|(%d+)$')) or 0))
  end
  if cost ~= '0' then
    if present then redis.call('HINCRBY', counter, 's', cost) else table.insert(missing, j) end
  end
end
return missing
"#;

/// Extends leases still held. ARGV: prefix, lease ms, re-add ('1' after an outage: a lease
/// that lapsed meanwhile is put back, and a reservation's amount with it), then pairs (sorted
/// set, member).
const RENEW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix, lease_ms, readd = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
for i = 4, #ARGV, 2 do
  local set, member = prefix .. ':' .. ARGV[i], ARGV[i + 1]
  if readd then
    local added = redis.call('ZADD', set, now + lease_ms, member)
    local charge = string.match(ARGV[i], '^bres:(.*)$')
    if added == 1 and charge and redis.call('EXISTS', prefix .. ':b:' .. charge) == 1 then
      redis.call('HINCRBY', prefix .. ':b:' .. charge, 'h', tonumber(string.match(member, '|(%d+)$')) or 0)
    end
  else
    redis.call('ZADD', set, 'XX', now + lease_ms, member)
  end
  redis.call('PEXPIRE', set, lease_ms * 2)
end
return 0
"#;

/// Creates budget counters Redis lacks with the spend the database holds, and the held sum
/// of the reservations still live. ARGV: prefix, counter ttl ms, then pairs (charge, nano-USD).
const LOAD: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 3, #ARGV, 2 do
  local counter, resv = ARGV[1] .. ':b:' .. ARGV[i], ARGV[1] .. ':bres:' .. ARGV[i]
  if redis.call('HSETNX', counter, 's', ARGV[i + 1]) == 1 then
    redis.call('ZREMRANGEBYSCORE', resv, '-inf', now)
    local held = 0
    for _, member in ipairs(redis.call('ZRANGE', resv, 0, -1)) do
      held = held + (tonumber(string.match(member, '|(%d+)$')) or 0)
    end
    redis.call('HSET', counter, 'h', held)
    redis.call('PEXPIRE', counter, ARGV[2])
  end
end
return 0
"#;

/// Each budget counter's spend and live reservations, or -1 where Redis lacks the counter.
/// ARGV: prefix, then charges.
const BUDGETS: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 2, #ARGV do
  local spent = redis.call('HGET', ARGV[1] .. ':b:' .. ARGV[i], 's')
  local held = 0
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', ARGV[1] .. ':bres:' .. ARGV[i], now, '+inf')) do
    held = held + (tonumber(string.match(member, '|(%d+)$')) or 0)
  end
  table.insert(out, tonumber(spent or -1))
  table.insert(out, held)
end
return out
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

/// How long a budget counter Redis holds outlives its last admission.
const COUNTER_TTL: Duration = Duration::from_secs(3600);
/// The budgets one admission is judged against.
#[derive(Debug, Default)]
pub struct BudgetAsk {
    /// Counters judged, with their maximum (nano-USD; -1 where only a soft budget is set:
    /// read, never refusing, nothing reserved).
    pub judged: Vec<(String, i64)>,
    /// Every counter the call's cost lands on (the judged ones and those that only record).
    pub charged: Vec<String>,
    /// The call's worst case (nano-USD), reserved in strict mode.
    pub estimate: i64,
    pub strict: bool,
}

/// What a shared admission holds.
#[derive(Debug)]
pub struct Hold {
    lease: String,
    minute: i64,
    tokens: u64,
    /// (scope id, holds a slot)
    scopes: Vec<(String, bool)>,
    /// (counter, its reservation's member if one is held)
    budgets: Vec<(String, Option<String>)>,
}

impl Hold {
    /// A hold of nothing but where a cost recorded after the fact lands.
    pub fn charges(budgets: Vec<String>) -> Self {
        Self {
            lease: uuid::Uuid::new_v4().simple().to_string(),
            minute: 0,
            tokens: 0,
            scopes: Vec::new(),
            budgets: budgets.into_iter().map(|c| (c, None)).collect(),
        }
    }
}

/// The answer of one admission.
pub enum Admission {
    /// The hold; the most constraining (limit, remaining) for requests and for tokens; each
    /// judged budget's (spent, held by others) before this call.
    Admitted(Hold, Option<(u64, u64)>, Option<(u64, u64)>, Vec<(i64, i64)>),
    /// The index of the refusing scope, the limit's kind (`r`, `t`, `p`), the limit, the use,
    /// and the milliseconds until the window resets.
    Refused { scope: usize, kind: String, limit: u64, used: u64, reset_ms: u64 },
    /// The judged budget at `index` has no room: its spend and what calls in flight hold.
    OverBudget { index: usize, spent: i64, held: i64 },
    /// These judged budgets' counters must be loaded from the database first.
    Missing(Vec<usize>),
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
    scripts: [redis::Script; 6],
    /// Leases this instance holds: lease → (sorted set, member) pairs to renew.
    leases: Mutex<HashMap<String, Vec<(String, String)>>>,
    /// Counters whose spend Redis missed → the ledger sequence number of the last record
    /// concerned; deleted (to be rebuilt from the database) once that record is stored.
    dirty: Mutex<HashMap<String, u64>>,
    /// The ledger's stored-through sequence number.
    stored: Arc<AtomicU64>,
    /// Bumped whenever Redis goes away or comes back (local counters are then stale).
    transitions: AtomicU64,
    /// Whether the renewal loop saw Redis away (its next renewal puts lapsed leases back).
    renew_after_outage: AtomicBool,
    /// Whether the last call failed (so a failure is logged once per outage).
    down: AtomicBool,
    /// Instances sharing the limits, as last seen (subscribers of the invalidation channel).
    instances: AtomicU64,
}

impl SharedRates {
    /// `stored` is the ledger's stored-through sequence number ([`crate::ledger::Ledger::stored_through`]).
    pub fn new(
        url: &str,
        prefix: &str,
        lease: Duration,
        timeout: Duration,
        stored: Arc<AtomicU64>,
    ) -> Result<Arc<Self>, redis::RedisError> {
        let shared = Arc::new(Self {
            client: redis::Client::open(url)?,
            conn: Mutex::new(None),
            next_connect: Mutex::new(None),
            prefix: prefix.to_owned(),
            channel: format!("{prefix}:invalidate"),
            lease,
            timeout,
            scripts: [ADMIT, RELEASE, RENEW, STATUS, LOAD, BUDGETS].map(redis::Script::new),
            leases: Mutex::new(HashMap::new()),
            dirty: Mutex::new(HashMap::new()),
            stored,
            transitions: AtomicU64::new(0),
            renew_after_outage: AtomicBool::new(false),
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
                shared.heal().await;
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
            self.transitions.fetch_add(1, Ordering::Relaxed);
            self.renew_after_outage.store(true, Ordering::Relaxed);
            tracing::error!(alert = "redis_unavailable", %message, "Redis is unavailable for shared rate limits and budgets");
        }
        Unreachable(message)
    }

    fn recovered(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            self.transitions.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                alert = "redis_recovered",
                "Redis is reachable again; shared rate limits and budgets resume"
            );
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

    /// Admits a call of `tokens` estimated tokens against every scope and every budget, all
    /// or nothing.
    pub async fn admit(
        &self,
        scopes: &[RateScope],
        tokens: u64,
        budgets: &BudgetAsk,
    ) -> Result<Admission, Unreachable> {
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
        args.extend([
            budgets.judged.len().to_string(),
            if budgets.strict { "s" } else { "o" }.to_owned(),
            budgets.estimate.to_string(),
            COUNTER_TTL.as_millis().to_string(),
        ]);
        for (charge, max) in &budgets.judged {
            args.extend([charge.clone(), max.to_string()]);
        }
        let reply: Vec<redis::Value> = self.run(0, &args).await?;
        let int = |i: usize| match reply.get(i) {
            Some(redis::Value::Int(n)) => Ok(*n),
            _ => Err(Unreachable("Redis answered a rate-limit script unexpectedly".into())),
        };
        let index = |i: usize| int(i).map(|n| usize::try_from(n).unwrap_or(0));
        match int(0)? {
            0 => {}
            2 => return (1..reply.len()).map(index).collect::<Result<_, _>>().map(Admission::Missing),
            3 => return Ok(Admission::OverBudget { index: index(1)?, spent: int(2)?, held: int(3)? }),
            _ => {
                let kind = match reply.get(2) {
                    Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(redis::Value::SimpleString(s)) => s.clone(),
                    _ => String::new(),
                };
                let unsigned = |i| int(i).map(|n| u64::try_from(n).unwrap_or(0));
                return Ok(Admission::Refused {
                    scope: index(1)?,
                    kind,
                    limit: unsigned(3)?,
                    used: unsigned(4)?,
                    reset_ms: unsigned(5)?,
                });
            }
        }
        let pair = |i: usize| -> Result<Option<(u64, u64)>, Unreachable> {
            let (limit, left) = (int(i)?, int(i + 1)?);
            Ok(u64::try_from(limit).ok().zip(u64::try_from(left).ok()))
        };
        let (minute, requests, tokens_left) = (int(1)?, pair(2)?, pair(4)?);
        let states =
            (0..budgets.judged.len()).map(|j| Ok((int(6 + j * 2)?, int(7 + j * 2)?))).collect::<Result<_, _>>()?;
        // Only a fully read admission is renewed (an unreadable one lapses with its lease).
        let held: Vec<(String, bool)> = scopes.iter().map(|s| (s.id.clone(), s.parallel.is_some())).collect();
        let member = format!("{lease}|{}", budgets.estimate);
        let judged: std::collections::HashSet<&str> =
            budgets.judged.iter().filter(|(_, max)| *max >= 0).map(|(c, _)| c.as_str()).collect();
        let held_budgets: Vec<(String, Option<String>)> = budgets
            .charged
            .iter()
            .map(|c| (c.clone(), (budgets.strict && judged.contains(c.as_str())).then(|| member.clone())))
            .collect();
        let renew: Vec<(String, String)> = held
            .iter()
            .filter(|(_, slot)| *slot)
            .map(|(id, _)| (format!("slots:{id}"), lease.clone()))
            .chain(held_budgets.iter().filter_map(|(c, m)| m.as_ref().map(|m| (format!("bres:{c}"), m.clone()))))
            .collect();
        if !renew.is_empty()
            && let Ok(mut leases) = self.leases.lock()
        {
            leases.insert(lease.clone(), renew);
        }
        let hold = Hold { lease, minute, tokens, scopes: held, budgets: held_budgets };
        Ok(Admission::Admitted(hold, requests, tokens_left, states))
    }

    /// Settles (`actual` tokens, `cost` nano-USD, recorded as ledger record `seq`) or cancels
    /// (`None`) an admission, in the background. Counters that miss the cost (Redis away, or
    /// the counter gone) are rebuilt once the record is stored.
    pub fn release(self: &Arc<Self>, hold: Hold, actual: Option<u64>, cost: i64, seq: u64) {
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
        args.extend([cost.to_string(), hold.budgets.len().to_string()]);
        let counters: Vec<String> = hold.budgets.iter().map(|(c, _)| c.clone()).collect();
        for (charge, member) in hold.budgets {
            args.extend([charge, member.unwrap_or_default()]);
        }
        let me = self.clone();
        tasks::spawn("rate-release", async move {
            // A lost release of slots and tokens costs little: leases lapse and the estimate
            // stands. Lost spend would undercount a budget: its counters are rebuilt instead.
            match me.run::<Vec<usize>>(1, &args).await {
                Ok(missing) if cost != 0 => {
                    me.mark_dirty(missing.into_iter().filter_map(|i| counters.get(i).cloned()), seq);
                }
                Ok(_) => {}
                Err(_) if cost != 0 => me.mark_dirty(counters.into_iter(), seq),
                Err(_) => {}
            }
        });
    }

    /// These counters missed spend recorded as ledger record `seq` (or earlier).
    pub fn mark_dirty(&self, counters: impl Iterator<Item = String>, seq: u64) {
        if let Ok(mut dirty) = self.dirty.lock() {
            for c in counters {
                let at = dirty.entry(c).or_insert(seq);
                *at = (*at).max(seq);
            }
        }
    }

    /// How many times Redis went away or came back so far.
    pub fn transitions(&self) -> u64 {
        self.transitions.load(Ordering::Relaxed)
    }

    /// Deletes the counters that missed spend whose records are now stored, so the next
    /// admission rebuilds them from the database.
    async fn heal(&self) {
        if self.is_down() {
            return;
        }
        let stored = self.stored.load(Ordering::Acquire);
        let ready: Vec<String> = match self.dirty.lock() {
            Ok(d) => d.iter().filter(|(_, seq)| **seq <= stored).map(|(c, _)| c.clone()).collect(),
            Err(_) => return,
        };
        if ready.is_empty() {
            return;
        }
        let Ok(mut conn) = self.connection().await else { return };
        let mut cmd = redis::cmd("DEL");
        for c in &ready {
            cmd.arg(format!("{}:b:{c}", self.prefix));
        }
        if let Ok(Ok(_)) = tokio::time::timeout(self.timeout, cmd.query_async::<i64>(&mut conn)).await {
            tracing::info!(counters = ready.len(), "budget counters that missed spend are rebuilt from the database");
            if let Ok(mut dirty) = self.dirty.lock() {
                for c in &ready {
                    if dirty.get(c).is_some_and(|seq| *seq <= stored) {
                        dirty.remove(c);
                    }
                }
            }
        }
    }

    /// Creates the counters Redis lacks with the spend the database holds.
    pub async fn load(&self, counters: &[(String, i64)]) -> Result<(), Unreachable> {
        let mut args = vec![self.prefix.clone(), COUNTER_TTL.as_millis().to_string()];
        for (charge, spent) in counters {
            args.extend([charge.clone(), spent.to_string()]);
        }
        self.run::<i64>(4, &args).await.map(|_| ())
    }

    /// Each counter's (spend, held by calls in flight), None where Redis lacks it.
    pub async fn budgets(&self, charges: &[String]) -> Result<Vec<Option<(i64, i64)>>, Unreachable> {
        let mut args = vec![self.prefix.clone()];
        args.extend(charges.iter().cloned());
        let v: Vec<i64> = self.run(5, &args).await?;
        Ok((0..charges.len())
            .map(|i| {
                let spent = v.get(i * 2).copied().unwrap_or(-1);
                (spent >= 0).then(|| (spent, v.get(i * 2 + 1).copied().unwrap_or(0)))
            })
            .collect())
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
            Ok(l) => l.values().flatten().cloned().collect(),
            Err(_) => return,
        };
        if !held.is_empty() {
            // After an outage, leases that lapsed meanwhile are put back: their calls still run.
            let readd = self.renew_after_outage.swap(false, Ordering::Relaxed);
            let mut args =
                vec![self.prefix.clone(), self.lease.as_millis().to_string(), if readd { "1" } else { "0" }.to_owned()];
            for (set, member) in held {
                args.extend([set, member]);
            }
            if self.run::<i64>(2, &args).await.is_err() && readd {
                self.renew_after_outage.store(true, Ordering::Relaxed);
            }
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
