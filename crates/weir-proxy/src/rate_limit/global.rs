//! Global rate limits: counted in Redis straight from Weir (no separate rate-limit
//! service), one round trip per request: one server-side Lua script (`EVALSHA`) checks and
//! counts every global rule the request meets, atomically, on a connection the request
//! takes from a small pool and writes and reads in its own task ([`pool`]: why not the
//! redis crate's multiplexed connection, how many connections, reconnecting); the reply is
//! read by [`reply`].
//!
//! **Algorithm: sliding window counter.** Each rule and client key has a counter per fixed
//! window of `unit` (keys `…:<window number>`, expiring after two windows); a request is
//! admitted while `previous × (time left of the current window / unit) + current` stays
//! below `requests`. Chosen over GCRA (a token bucket in one key) because "N per unit" then
//! means about N in *any* window of that length: a token bucket admits its whole burst and
//! then the refill, up to 2 N in one unit, and over a measured interval `T` it admits
//! `N × T / unit + N`, where the sliding window admits `N × T / unit`. The estimate assumes
//! the previous window's requests were spread evenly; Cloudflare measured 0.003 % of
//! decisions wrong with it. Time is Redis's (`TIME`), so replicas' clocks do not matter.
//! A request that is refused is not counted; one that several rules select is counted in
//! all of them only when all admit it.
//!
//! **Failure**: Redis unreachable, or slower than the timeout (`--rate-limit-timeout`,
//! default 20 ms as Envoy Gateway's): the request passes (fail open, Envoy Gateway's
//! default) or gets 500 (`--rate-limit-fail-closed`, Envoy Gateway's `failClosed`). Each
//! failure is counted (`weir_rate_limit_redis_errors_total`).

use std::time::Duration;

use std::sync::Arc;

use weir_snapshot::rate_limit::Client;
use weir_snapshot::{RateLimit, RateLimitRule};

use super::Decision;
use crate::log_limit::LogLimit;

/// Where global rate limits count, and what happens when it does not answer.
#[derive(Debug, Clone)]
pub struct GlobalConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS).
    pub url: String,
    pub timeout: Duration,
    /// Refuse (500) when Redis does not answer, instead of letting the request pass.
    pub fail_closed: bool,
    /// `--rate-limit-redis-ca`: the CA certificates (PEM) a `rediss://` server's
    /// certificate is verified with instead of the public roots (Mozilla's, built in).
    pub ca_pem: Option<Vec<u8>>,
}

/// KEYS: one counter prefix per rule. (The previous window's weighted count is floored: a
/// fraction of a request left over from it does not refuse a whole one, else each window
/// admits one request less than `requests` at a steady rate.) ARGV: requests and unit (ms) per rule. Returns, per
/// rule, {admitted (1/0), remaining, ms until the window ends, ms until a refused request
/// may pass}; counts the request in every rule only when all admit it.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local all = true
local keys = {}
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i - 1])
  local unit = tonumber(ARGV[2 * i])
  local w = math.floor(now / unit)
  local elapsed = now - w * unit
  local cur_key = KEYS[i] .. ':' .. w
  local prev = tonumber(redis.call('GET', KEYS[i] .. ':' .. (w - 1)) or '0')
  local cur = tonumber(redis.call('GET', cur_key) or '0')
  local used = math.floor(prev * (unit - elapsed) / unit) + cur
  local reset = unit - elapsed
  if used + 1 > limit then
    all = false
    local wait = reset
    if prev > 0 and cur < limit then
      wait = math.max(1, math.ceil(unit - (limit - 1 - cur) * unit / prev) - elapsed)
    end
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = reset
    out[#out + 1] = wait
  else
    keys[#keys + 1] = cur_key
    keys[#keys + 1] = unit
    out[#out + 1] = 1
    out[#out + 1] = math.floor(limit - used - 1)
    out[#out + 1] = reset
    out[#out + 1] = 0
  end
end
if all then
  for i = 1, #keys, 2 do
    if redis.call('INCR', keys[i]) == 1 then
      redis.call('PEXPIRE', keys[i], keys[i + 1] * 2)
    end
  end
end
return out
";

/// Room for one key (the usual: one rule) without reallocation: the prefix (`weir:rl:{` 16 hex `:` 16 hex `}:`, 44
/// bytes) and a suffix up to [`MAX_SUFFIX`] plus one hashed part.
const KEY_CAPACITY: usize = 44 + MAX_SUFFIX + 40;
/// A `Distinct` value written as is up to this many bytes of [`SAFE`] characters (a user id,
/// an API key, a tenant name); longer or other bytes are hashed.
const MAX_RAW: usize = 64;
/// A part of other bytes up to this long is written in hex: a client address (4 or 16
/// octets), which `select` gives as octets.
const MAX_HEX: usize = 16;
/// When the encoded parts grow past this (many values of a `Distinct` header), the whole
/// suffix is replaced by its hash, so a key stays bounded whatever a client sends.
const MAX_SUFFIX: usize = 160;

/// The bytes a part may have to be written as is: none of the encoding's markers (`%`, `#`,
/// `!`, `,`, `/`), no `{}` (Redis Cluster hash tags), no `:` (the script's window separator),
/// nothing a `redis-cli` user must quote.
const SAFE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'=' | b'@');
        i += 1;
    }
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Builds one rule's counter key, `weir:rl:{SCOPE:RULE}:` and the request's `Distinct`
/// parts, into a reused buffer (no `format!`, no digest per request). Each part is written
///
/// - as is, then `,`, when it is 0 to [`MAX_RAW`] bytes of [`SAFE`] characters;
/// - `%` and its hex, then `,`, when it is other bytes up to [`MAX_HEX`] (an address);
/// - `#` and the hex of its 128-bit XXH3 hash, then `,`, when longer or odd;
/// - and the end of one `Distinct` header's values (`select`'s `\0` part) as `/`.
///
/// The markers are not [`SAFE`], so two different sequences of parts give two different
/// keys (except for a 128-bit hash collision of a long part), and only a long or odd value
/// costs a hash. **Why XXH3-128**: two replicas (and two versions of Weir in a rolling
/// upgrade) must compute the same key for the same client, so the hash must be a fixed,
/// specified function, not a per-process keyed one (std's `RandomState`) nor one whose
/// output may change between crate versions (foldhash, ahash): XXH3's output is frozen
/// since xxHash 0.8.0, with published test vectors. It is not a cryptographic hash, and
/// need not be: a `Distinct` value is what the client sends, so a client that wants to
/// count against another's counter can send that value; a collision gains it nothing it
/// does not have. (SHA-256, as before, cost ~2,300 instructions per request for this.)
struct KeyBuilder<'a> {
    key: &'a mut Vec<u8>,
    /// Where this key begins (keys of several rules follow each other in one buffer).
    begin: usize,
    /// Where the suffix (the parts) begins.
    start: usize,
}

impl<'a> KeyBuilder<'a> {
    /// Start a key at the end of `key`.
    fn new(key: &'a mut Vec<u8>, scope: u64, rule: u64) -> KeyBuilder<'a> {
        let begin = key.len();
        key.extend_from_slice(b"weir:rl:{");
        push_hex_u64(key, scope);
        key.push(b':');
        push_hex_u64(key, rule);
        key.extend_from_slice(b"}:");
        let start = key.len();
        KeyBuilder { key, begin, start }
    }

    /// The rule does not select the request: take the key back out.
    fn abandon(self) {
        self.key.truncate(self.begin);
    }

    fn part(&mut self, part: &[u8]) {
        if part == b"\0" {
            self.key.push(b'/');
        } else if part.len() <= MAX_RAW && part.iter().all(|&b| SAFE[usize::from(b)]) {
            self.key.extend_from_slice(part);
            self.key.push(b',');
        } else if part.len() <= MAX_HEX {
            self.key.push(b'%');
            push_hex(self.key, part);
            self.key.push(b',');
        } else {
            self.key.push(b'#');
            push_hex(self.key, &xxhash_rust::xxh3::xxh3_128(part).to_be_bytes());
            self.key.push(b',');
        }
    }

    /// Bound the key: a suffix past [`MAX_SUFFIX`] becomes `!` and its hash.
    fn finish(self) {
        if self.key.len() - self.start > MAX_SUFFIX {
            let hash = xxhash_rust::xxh3::xxh3_128(&self.key[self.start..]);
            self.key.truncate(self.start);
            self.key.push(b'!');
            push_hex(self.key, &hash.to_be_bytes());
        }
    }
}

fn push_hex_u64(out: &mut Vec<u8>, v: u64) {
    push_hex(out, &v.to_be_bytes());
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

/// The global engine: the connection pool, the script's hash, the failure policy.
pub(crate) struct GlobalLimits {
    pool: Arc<pool::Pool>,
    /// The script's SHA-1 (`EVALSHA`; `EVAL` with the text once Redis does not have it).
    sha: String,
    timeout: Duration,
    pub(crate) fail_closed: bool,
}

/// Why Redis gave no decision.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisFailure {
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis unreachable: {0}")]
    Unreachable(Arc<str>),
    #[error("redis connection lost: {0}")]
    Broken(String),
    #[error("redis refused the script: {0}")]
    Server(String),
    #[error("redis answered {0} values for {1} rules")]
    Shape(usize, usize),
}

impl GlobalLimits {
    /// Set up the pool (lazily: Redis need not be up yet; the first request connects).
    pub(crate) fn new(config: &GlobalConfig) -> Result<GlobalLimits, String> {
        let pool = pool::Pool::new(&config.url, config.ca_pem.as_deref(), config.timeout)
            .map_err(|e| format!("--rate-limit-redis: {e}"))?;
        Ok(GlobalLimits {
            pool: Arc::new(pool),
            sha: redis::Script::new(SCRIPT).get_hash().to_string(),
            timeout: config.timeout,
            fail_closed: config.fail_closed,
        })
    }

    /// Count the request against every global rule it meets: `Ok(None)` when none selects
    /// it, `Err` when Redis gave no answer in time.
    pub(crate) async fn check(
        &self,
        rl: &RateLimit,
        client: &Client<'_>,
    ) -> Result<Option<Decision>, RedisFailure> {
        // The selected rules and where each one's key ends in `keys`.
        let mut selected: Vec<(&RateLimitRule, usize)> = Vec::new();
        let mut keys = Vec::with_capacity(KEY_CAPACITY);
        for rule in rl.global.iter() {
            let scope = if rule.shared { 0 } else { rl.scope };
            let mut k = KeyBuilder::new(&mut keys, scope, rule.id);
            if !rule.select(client, &mut |part| k.part(part)) {
                k.abandon();
                continue;
            }
            k.finish();
            selected.push((rule, keys.len()));
        }
        if selected.is_empty() {
            return Ok(None);
        }
        let mut lease = tokio::time::timeout(self.timeout, self.eval(&selected, &keys))
            .await
            .map_err(|_| RedisFailure::Timeout(self.timeout))??;
        let Some(conn) = lease.conn() else {
            return Err(RedisFailure::Broken("no connection".into()));
        };
        if conn.ints.len() != selected.len() * 4 {
            return Err(RedisFailure::Shape(conn.ints.len(), selected.len()));
        }
        let mut shown: Option<Decision> = None;
        for ((rule, _), r) in selected.iter().zip(conn.ints.chunks_exact(4)) {
            let ms = |v: i64| u64::try_from(v.max(0)).unwrap_or(0).div_ceil(1000);
            let d = Decision {
                allowed: r[0] == 1,
                limit: rule.limit.requests,
                remaining: u32::try_from(r[1].max(0)).unwrap_or(u32::MAX),
                reset: ms(r[2]),
                retry_after: ms(r[3]),
                window: rule.limit.window_secs(),
                global: true,
                limit_value: None,
            };
            shown = Some(match shown {
                None => d,
                Some(s) => s.tighter(d),
            });
        }
        lease.give_back();
        Ok(shown)
    }

    /// One script call on a pooled connection: the lease comes back holding the reply's
    /// integers. A reused connection found dead (Redis restarted) is retried once on a new
    /// one; a script Redis does not have (a new Redis) is sent whole (`EVAL`) once.
    async fn eval(
        &self,
        selected: &[(&RateLimitRule, usize)],
        keys: &[u8],
    ) -> Result<pool::Lease, RedisFailure> {
        let mut retried = false;
        loop {
            let mut lease = self.pool.take().await?;
            let Some(conn) = lease.conn() else {
                return Err(RedisFailure::Broken("no connection".into()));
            };
            let mut whole = false;
            let broken = loop {
                let (verb, script) = if whole {
                    ("EVAL", SCRIPT)
                } else {
                    ("EVALSHA", self.sha.as_str())
                };
                pack(&mut conn.cmd, verb, script, selected, keys);
                match conn.exchange().await {
                    Ok(pool::Answer::Ints) => return Ok(lease),
                    Ok(pool::Answer::Error(e)) if !whole && e.starts_with("NOSCRIPT") => {
                        whole = true;
                    }
                    Ok(pool::Answer::Error(e)) => {
                        lease.give_back();
                        return Err(RedisFailure::Server(e));
                    }
                    Err(broken) => break broken,
                }
            };
            if retried || !lease.retry_after(&broken) {
                return Err(RedisFailure::Broken(broken.to_string()));
            }
            retried = true;
        }
    }

    /// Log a failure (a few a minute) before the caller fails open or closed.
    pub(crate) fn log_failure(&self, err: &RedisFailure) {
        static FAILED: LogLimit = LogLimit::new(5, Duration::from_secs(60));
        if let Some(suppressed) = FAILED.admit() {
            tracing::warn!(
                error = %err,
                fail_closed = self.fail_closed,
                suppressed,
                "global rate limit: no answer from redis; requests {}",
                if self.fail_closed { "are refused (500)" } else { "pass uncounted" }
            );
        }
    }
}

/// `EVALSHA sha N key… (requests unit_ms)…` (or `EVAL script …`) into `cmd`, reusing its
/// buffers.
fn pack(
    cmd: &mut redis::Cmd,
    verb: &str,
    script: &str,
    selected: &[(&RateLimitRule, usize)],
    keys: &[u8],
) {
    cmd.clear();
    cmd.arg(verb).arg(script).arg(selected.len());
    let mut from = 0;
    for (_, end) in selected {
        cmd.arg(keys.get(from..*end).unwrap_or_default());
        from = *end;
    }
    for (rule, _) in selected {
        let unit_ms = u64::try_from(rule.limit.unit.as_millis()).unwrap_or(u64::MAX);
        cmd.arg(rule.limit.requests).arg(unit_ms);
    }
}

/// What phase 3's global step decided.
pub(crate) enum Step {
    /// Go on; the decision's headers (if a rule selected the request) go on the response.
    Pass(Option<Decision>),
    /// Over the limit (429, with the decision its headers show), or Redis gave no answer
    /// and the limit fails closed (500).
    Answer(http::Response<crate::body::ProxyBody>, Option<Decision>),
}

/// Phase 3: the route's global rate limit for a request from `address`.
pub(crate) async fn step(
    shared: &crate::Shared,
    route: &str,
    rl: &RateLimit,
    parts: &http::request::Parts,
    address: std::net::IpAddr,
) -> Step {
    let Some(engine) = shared
        .global_limits
        .as_ref()
        .filter(|_| !rl.global.is_empty())
    else {
        return Step::Pass(None);
    };
    let client = Client {
        method: &parts.method,
        path: parts.uri.path(),
        headers: &parts.headers,
        address,
    };
    let metrics = &shared.metrics;
    match engine.check(rl, &client).await {
        Ok(Some(d)) if !d.allowed => {
            let err = crate::error::ProxyError::RateLimited;
            metrics.record_rate_limited(route, "global");
            metrics.record_error(err.classify().label);
            Step::Answer(super::refusal(&err, Some(&d)), Some(d))
        }
        Ok(d) => Step::Pass(d),
        Err(e) => {
            engine.log_failure(&e);
            if engine.fail_closed {
                let err = crate::error::ProxyError::RateLimitUnavailable;
                metrics.record_rate_limit_redis_error("refused");
                metrics.record_error(err.classify().label);
                Step::Answer(super::refusal(&err, None), None)
            } else {
                metrics.record_rate_limit_redis_error("passed");
                Step::Pass(None)
            }
        }
    }
}

mod pool;
mod reply;

#[cfg(test)]
mod tests;
