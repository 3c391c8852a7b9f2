//! Connections to Redis owned by the requests: a request takes an idle connection (or has
//! one made), writes its command, reads the reply in its own task and gives the connection
//! back. No driver task, no channel, no second task polled per request (what the redis
//! crate's multiplexed `ConnectionManager` costs: ~6,000 instructions and, on a
//! multi-thread runtime, a cross-thread wake-up each way).
//!
//! - **Size**: at most [`POOL_SIZE`] connections, made on demand (a quiet Weir keeps one).
//!   A connection carries one request at a time, so the number in use is the number of
//!   Redis round trips in flight: by Little's law, requests per second × round trip. One
//!   Weir process serves up to ~100k requests/s, and a loopback `EVALSHA` takes 25–55 µs:
//!   ~5 in flight; 64 leave room for a Redis 10× slower (remote, TLS, busy) at that rate.
//!   A request that finds all 64 busy waits for one to come back, within its timeout.
//! - **Connecting** runs in a task of its own (so a request's short timeout does not
//!   abandon a TLS handshake half done; the connection then serves the next request), at
//!   most [`MAX_CONNECTING`] at once, within `max(timeout, 1 s)`. After a failure the next
//!   attempt waits 10 ms, doubling to 500 ms; meanwhile requests fail at once (fail open or
//!   closed) instead of each waiting out the timeout.
//! - **A broken connection is dropped**, never given back: an I/O error, a malformed
//!   reply, a timeout mid-exchange (the request's future is dropped with the lease). After
//!   a Redis restart every idle connection is dead: the first request to find one so (no
//!   reply byte on a reused connection) drops them all and retries once on a new one.
//! - The URL is the redis crate's (`redis://[user:password@]host:port[/db]`, `rediss://`,
//!   `redis+unix://`): `AUTH` and `SELECT` are sent on each new connection, packed by the
//!   redis crate; `rediss://` is TLS (rustls) verified with `--rate-limit-redis-ca` or the
//!   public roots.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::Notify;

use super::reply::{self, Reply};
use super::RedisFailure;
use crate::outbound::{client_tls, connect_tcp};

/// The most connections one Weir process keeps to Redis (see the module's notes).
pub(super) const POOL_SIZE: usize = 64;
/// The most connections being made at once.
const MAX_CONNECTING: usize = 4;
const MIN_DELAY: Duration = Duration::from_millis(10);
const MAX_DELAY: Duration = Duration::from_millis(500);
/// A reply longer than this is not one of ours.
const MAX_REPLY: usize = 64 * 1024;

/// A byte stream to Redis: TCP, TLS over TCP, or a Unix socket.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One connection and its buffers, reused from request to request.
pub(super) struct Conn {
    io: Box<dyn Io>,
    /// The command being sent (cleared and refilled: no allocation once warm).
    pub(super) cmd: redis::Cmd,
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    /// The integers of the last array reply.
    pub(super) ints: Vec<i64>,
    /// It served a request before (it may have died idle).
    reused: bool,
}

/// What one exchange got back.
pub(super) enum Answer {
    /// An array of integers, in `Conn::ints`.
    Ints,
    /// Redis refused the command (`-…`); the connection stays usable.
    Error(String),
}

impl Conn {
    fn new(io: Box<dyn Io>) -> Conn {
        Conn {
            io,
            cmd: redis::Cmd::with_capacity(8, 256),
            wbuf: Vec::with_capacity(256),
            rbuf: Vec::with_capacity(256),
            ints: Vec::with_capacity(8),
            reused: false,
        }
    }

    /// Send `self.cmd` and read one reply: `Err` leaves the connection unusable.
    pub(super) async fn exchange(&mut self) -> Result<Answer, Broken> {
        self.wbuf.clear();
        self.cmd.write_packed_command(&mut self.wbuf);
        self.io
            .write_all(&self.wbuf)
            .await
            .map_err(|e| Broken::io(e, true))?;
        self.read_reply().await
    }

    async fn read_reply(&mut self) -> Result<Answer, Broken> {
        self.rbuf.clear();
        let (got, used) = self.read_one(MAX_REPLY).await?;
        if used != self.rbuf.len() {
            return Err(Broken::Protocol("more bytes than one reply".into()));
        }
        match got {
            Got::Ints => Ok(Answer::Ints),
            Got::Error(text) => Ok(Answer::Error(text)),
            Got::Status => Err(Broken::Protocol("a status instead of an array".into())),
        }
    }

    /// Send the connection's greeting (`AUTH`, `SELECT`) and check each answer is a status.
    async fn greet(&mut self, hello: &[u8], replies: usize) -> Result<(), String> {
        if replies == 0 {
            return Ok(());
        }
        self.io
            .write_all(hello)
            .await
            .map_err(|e| format!("sending AUTH/SELECT: {e}"))?;
        self.rbuf.clear();
        for _ in 0..replies {
            let (got, used) = self
                .read_one(reply::MAX_LINE + 2)
                .await
                .map_err(|e| match e {
                    Broken::Io { error, .. } => format!("reading AUTH/SELECT's answer: {error}"),
                    Broken::Closed { .. } => {
                        "redis closed the connection during AUTH/SELECT".into()
                    }
                    Broken::Protocol(p) => p,
                })?;
            match got {
                Got::Status => {
                    self.rbuf.drain(..used);
                }
                Got::Error(text) => return Err(format!("redis refused: {text}")),
                Got::Ints => return Err("unexpected reply to AUTH/SELECT".into()),
            }
        }
        if !self.rbuf.is_empty() {
            return Err("more bytes than the AUTH/SELECT answers".into());
        }
        Ok(())
    }

    /// Read until `rbuf` starts with a whole reply (`rbuf` holding at most `max` bytes
    /// before it does): the reply and how many bytes it took.
    async fn read_one(&mut self, max: usize) -> Result<(Got, usize), Broken> {
        loop {
            if !self.rbuf.is_empty() {
                match reply::parse(&self.rbuf, &mut self.ints) {
                    Ok(None) => {}
                    Ok(Some((r, used))) => {
                        let got = match r {
                            Reply::Ints => Got::Ints,
                            Reply::Status(_) => Got::Status,
                            Reply::Error(text) => {
                                Got::Error(String::from_utf8_lossy(text).into_owned())
                            }
                        };
                        return Ok((got, used));
                    }
                    Err(e) => return Err(Broken::Protocol(e.to_string())),
                }
            }
            if self.rbuf.len() > max {
                return Err(Broken::Protocol("a reply too long".into()));
            }
            let before = self.rbuf.is_empty();
            let n = self
                .io
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|e| Broken::io(e, before))?;
            if n == 0 {
                return Err(Broken::Closed {
                    before_reply: before,
                });
            }
        }
    }
}

/// A whole reply, out of the read buffer (the integers of `Ints` are in `Conn::ints`).
enum Got {
    Ints,
    Status,
    Error(String),
}

/// Why a connection is dropped.
#[derive(Debug)]
pub(super) enum Broken {
    Io {
        error: std::io::Error,
        /// Nothing of a reply had arrived (the peer may have closed the connection idle).
        before_reply: bool,
    },
    Closed {
        before_reply: bool,
    },
    Protocol(String),
}

impl Broken {
    fn io(error: std::io::Error, before_reply: bool) -> Broken {
        Broken::Io {
            error,
            before_reply,
        }
    }

    fn before_reply(&self) -> bool {
        match self {
            Broken::Io { before_reply, .. } | Broken::Closed { before_reply } => *before_reply,
            Broken::Protocol(_) => false,
        }
    }
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Broken::Io { error, .. } => write!(f, "{error}"),
            Broken::Closed { .. } => f.write_str("redis closed the connection"),
            Broken::Protocol(p) => f.write_str(p),
        }
    }
}

/// Where and how to connect.
enum Addr {
    Tcp {
        host: String,
        port: u16,
        tls: Option<(
            tokio_rustls::TlsConnector,
            rustls::pki_types::ServerName<'static>,
        )>,
    },
    Unix(PathBuf),
}

#[derive(Default)]
struct State {
    idle: Vec<Conn>,
    /// Idle, in use and being made.
    open: usize,
    connecting: usize,
    /// After a failed connect: no new attempt before this.
    retry_at: Option<Instant>,
    delay: Duration,
    /// Counts failed connects, so a waiter sees one happened while it waited.
    failures: u64,
    last_error: Option<Arc<str>>,
}

pub(super) struct Pool {
    addr: Addr,
    /// `AUTH` and `SELECT`, packed, and how many replies they get.
    hello: Vec<u8>,
    hello_replies: usize,
    connect_timeout: Duration,
    state: Mutex<State>,
    /// A connection came back or was made, or a connect failed.
    changed: Notify,
}

impl Pool {
    /// The pool for `url` (parsed by the redis crate); nothing is connected yet.
    pub(super) fn new(url: &str, ca_pem: Option<&[u8]>, timeout: Duration) -> Result<Pool, String> {
        use redis::IntoConnectionInfo as _;
        let info = url.into_connection_info().map_err(|e| e.to_string())?;
        let addr = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => Addr::Tcp {
                host: host.clone(),
                port: *port,
                tls: None,
            },
            redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => {
                if *insecure {
                    return Err(
                        "rediss://…#insecure (no certificate check) is not supported; \
                                give the server's CA with --rate-limit-redis-ca"
                            .into(),
                    );
                }
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| format!("{host}: {e}"))?;
                Addr::Tcp {
                    host: host.clone(),
                    port: *port,
                    tls: Some((tokio_rustls::TlsConnector::from(tls_config(ca_pem)?), name)),
                }
            }
            redis::ConnectionAddr::Unix(path) => Addr::Unix(path.clone()),
            other => return Err(format!("unsupported address {other:?}")),
        };
        let settings = info.redis_settings();
        let mut hello = Vec::new();
        let mut hello_replies = 0;
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            auth.arg(password).write_packed_command(&mut hello);
            hello_replies += 1;
        }
        if settings.db() != 0 {
            redis::cmd("SELECT")
                .arg(settings.db())
                .write_packed_command(&mut hello);
            hello_replies += 1;
        }
        Ok(Pool {
            addr,
            hello,
            hello_replies,
            connect_timeout: timeout.max(Duration::from_secs(1)),
            state: Mutex::new(State {
                delay: MIN_DELAY,
                ..State::default()
            }),
            changed: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection for one exchange: an idle one, else one made (waiting for it, or for
    /// one to come back, within the caller's timeout).
    pub(super) async fn take(self: &Arc<Self>) -> Result<Lease, RedisFailure> {
        loop {
            let changed = self.changed.notified();
            let failures = {
                let mut s = self.state();
                if let Some(mut conn) = s.idle.pop() {
                    conn.reused = true;
                    return Ok(Lease {
                        conn: Some(conn),
                        pool: self.clone(),
                    });
                }
                let now = Instant::now();
                let may_retry = s.retry_at.is_none_or(|at| now >= at);
                if may_retry && s.connecting < MAX_CONNECTING && s.open < POOL_SIZE {
                    s.open += 1;
                    s.connecting += 1;
                    let pool = self.clone();
                    tokio::spawn(async move { pool.connect_one().await });
                } else if !may_retry && s.connecting == 0 {
                    return Err(RedisFailure::Unreachable(
                        s.last_error
                            .clone()
                            .unwrap_or_else(|| "not connected".into()),
                    ));
                }
                s.failures
            };
            changed.await;
            let s = self.state();
            if s.failures != failures && s.idle.is_empty() {
                return Err(RedisFailure::Unreachable(
                    s.last_error
                        .clone()
                        .unwrap_or_else(|| "not connected".into()),
                ));
            }
        }
    }

    /// Make one connection into the idle list (run in a task of its own).
    async fn connect_one(self: Arc<Self>) {
        let made = match tokio::time::timeout(self.connect_timeout, self.connect()).await {
            Ok(made) => made,
            Err(_) => Err(format!("connecting took over {:?}", self.connect_timeout)),
        };
        {
            let mut s = self.state();
            s.connecting -= 1;
            match made {
                Ok(conn) => {
                    s.idle.push(conn);
                    s.retry_at = None;
                    s.delay = MIN_DELAY;
                }
                Err(e) => {
                    s.open -= 1;
                    s.failures += 1;
                    s.last_error = Some(e.into());
                    s.retry_at = Some(Instant::now() + s.delay);
                    s.delay = (s.delay * 2).min(MAX_DELAY);
                }
            }
        }
        self.changed.notify_waiters();
    }

    async fn connect(&self) -> Result<Conn, String> {
        let io: Box<dyn Io> = match &self.addr {
            Addr::Tcp { host, port, tls } => {
                // The limit `connect_one` also puts on the whole connect (TLS, AUTH/SELECT).
                let tcp = connect_tcp((host.as_str(), *port), self.connect_timeout)
                    .await
                    .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
                match tls {
                    Some((connector, name)) => Box::new(
                        connector
                            .connect(name.clone(), tcp)
                            .await
                            .map_err(|e| format!("TLS with {host}:{port}: {e}"))?,
                    ),
                    None => Box::new(tcp),
                }
            }
            Addr::Unix(path) => Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| format!("connecting to {}: {e}", path.display()))?,
            ),
        };
        let mut conn = Conn::new(io);
        conn.greet(&self.hello, self.hello_replies).await?;
        Ok(conn)
    }

    /// Drop every idle connection (Redis restarted: they are all dead).
    fn drop_idle(&self) {
        let dead = {
            let mut s = self.state();
            let dead = std::mem::take(&mut s.idle);
            s.open -= dead.len();
            dead
        };
        drop(dead);
    }
}

/// A connection taken from the pool: given back with [`Lease::give_back`], dropped (and
/// closed) otherwise — on an error, or when the request's future is dropped mid-exchange.
pub(super) struct Lease {
    conn: Option<Conn>,
    pool: Arc<Pool>,
}

impl Lease {
    pub(super) fn conn(&mut self) -> Option<&mut Conn> {
        self.conn.as_mut()
    }

    pub(super) fn give_back(mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.state().idle.push(conn);
            self.pool.changed.notify_waiters();
        }
    }

    /// After `err` on this connection: whether the request should try once more on a new
    /// one (a reused connection that died idle, e.g. Redis restarted); then the other idle
    /// ones are dropped too.
    pub(super) fn retry_after(&self, err: &Broken) -> bool {
        let stale = err.before_reply() && self.conn.as_ref().is_some_and(|c| c.reused);
        if stale {
            self.pool.drop_idle();
        }
        stale
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.conn.take().is_some() {
            self.pool.state().open -= 1;
        }
    }
}

/// rustls for `rediss://`: the given CA certificates instead of the public roots, else the
/// public roots (Mozilla's, built in).
fn tls_config(ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    match ca_pem {
        None => client_tls(provider, true, &[]),
        Some(pem) => crate::security::parse_pem_certs(pem)
            .and_then(|ca| client_tls(provider, false, &ca))
            .map_err(|e| format!("--rate-limit-redis-ca: {e}")),
    }
}
