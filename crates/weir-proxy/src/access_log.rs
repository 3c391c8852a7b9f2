//! The access log: one JSON line per request on stdout (the process's own logs go to
//! stderr), written when the response body has been sent (or the client went away), so
//! the line has the bytes sent and the whole duration.
//!
//! Lines are formatted on the request's thread and handed to one writer thread over a
//! bounded queue: a slow stdout (a full pipe, a stalled log collector) never blocks a
//! request; lines that do not fit are dropped and counted (`weir_access_log_dropped_total`).
//! No request or response header is logged except `x-request-id`, so credentials
//! (Authorization, Cookie, Set-Cookie, API keys in headers) never reach the log; the path is
//! logged without its query string (where tokens are often passed).
//!
//! Fields, stable (a name is never changed, new ones may be added): `time` (RFC 3339, UTC,
//! milliseconds; when the request arrived), `request_id`, `client` (address:port), `method`,
//! `host`, `path`, `protocol`, `status`, `bytes_in` (request body bytes read), `bytes_out`
//! (response body bytes sent), `duration_ms` (arrival to the end of the response body),
//! `upstream_ms` (arrival to the response headers; absent for local answers), `upstream`
//! (backend name), `upstream_endpoint` (address:port), `gateway`, `route`, `flags` (why
//! Weir answered itself: the error reason of `weir_request_errors_total`, `local` for a
//! redirect or CORS preflight, `fault_abort` / `fault_delay` for a BackendTrafficPolicy fault,
//! `client_gone` when the client left before the body ended),
//! `trace_id` (32 hex digits; only with tracing on, `--otlp-endpoint`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, Version};
use hyper::body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use prometheus::IntCounter;

use crate::body::{BoxError, ProxyBody};

/// Lines waiting for the writer; beyond this they are dropped (and counted).
const QUEUE: usize = 16 * 1024;

/// The access log of one proxy: where lines go and which requests are logged.
pub(crate) struct AccessLog {
    tx: SyncSender<String>,
    /// Requests whose roll is below this are logged (`u64::MAX`: all).
    threshold: u64,
    dropped: IntCounter,
}

impl AccessLog {
    /// Start the writer thread, logging a `sample` fraction of requests (0 < sample ≤ 1) to
    /// stdout.
    pub(crate) fn start(sample: f64, dropped: IntCounter) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("weir-access-log".into())
            .spawn(move || write_lines(rx, std::io::stdout()))?;
        Ok(Self {
            tx,
            threshold: threshold(sample),
            dropped,
        })
    }

    /// Whether this request is logged (always, unless sampling).
    pub(crate) fn sampled(&self) -> bool {
        self.threshold == u64::MAX || rand::random::<u64>() < self.threshold
    }

    fn send(&self, line: String) {
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

/// The roll below which a request is logged, for a fraction in (0, 1].
fn threshold(sample: f64) -> u64 {
    if sample >= 1.0 {
        u64::MAX
    } else {
        // Saturating float-to-int conversion; sample is validated to be in (0, 1].
        (sample.max(0.0) * u64::MAX as f64) as u64
    }
}

/// The writer thread: a line at a time, flushed whenever the queue is empty.
fn write_lines(rx: Receiver<String>, out: impl std::io::Write) {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = rx.recv() {
        if out.write_all(line.as_bytes()).is_err() {
            return;
        }
        while let Ok(line) = rx.try_recv() {
            if out.write_all(line.as_bytes()).is_err() {
                return;
            }
        }
        if out.flush().is_err() {
            return;
        }
    }
}

/// What the line says about one request, gathered as it goes.
pub(crate) struct Entry {
    pub(crate) time: SystemTime,
    pub(crate) started: Instant,
    pub(crate) client: SocketAddr,
    pub(crate) request_id: Option<HeaderValue>,
    pub(crate) method: Method,
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) version: Version,
    pub(crate) status: u16,
    pub(crate) bytes_in: Option<Arc<AtomicU64>>,
    pub(crate) upstream_ms: Option<Duration>,
    pub(crate) upstream: Option<Arc<str>>,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) gateway: Option<Arc<str>>,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) flags: &'static str,
    /// The request's trace (tracing on), as 32 hex digits in the line.
    pub(crate) trace_id: Option<opentelemetry::trace::TraceId>,
}

/// The upstream endpoint a response came from (a response extension, set only when the
/// access log is on).
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpstreamEndpoint(pub(crate) SocketAddr);

impl Entry {
    /// The JSON line (with its newline). Written by hand, without `core::fmt`: formatting
    /// floats and addresses through it cost about 8,000 instructions a line (callgrind),
    /// more than the rest of the request.
    pub(crate) fn line(&self, bytes_out: u64, duration: Duration, flags: &str) -> String {
        let mut s = String::with_capacity(384);
        s.push_str("{\"time\":\"");
        rfc3339_millis(&mut s, self.time);
        s.push('"');
        if let Some(id) = &self.request_id {
            s.push_str(",\"request_id\":");
            json_str(&mut s, &String::from_utf8_lossy(id.as_bytes()));
        }
        s.push_str(",\"client\":\"");
        push_addr(&mut s, self.client);
        s.push_str("\",\"method\":");
        json_str(&mut s, self.method.as_str());
        s.push_str(",\"host\":");
        json_str(&mut s, &self.host);
        s.push_str(",\"path\":");
        json_str(&mut s, &self.path);
        s.push_str(",\"protocol\":\"");
        s.push_str(match self.version {
            Version::HTTP_09 => "HTTP/0.9",
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_11 => "HTTP/1.1",
            Version::HTTP_2 => "HTTP/2.0",
            Version::HTTP_3 => "HTTP/3.0",
            _ => "HTTP",
        });
        s.push_str("\",\"status\":");
        push_u64(&mut s, u64::from(self.status));
        let bytes_in = self
            .bytes_in
            .as_ref()
            .map_or(0, |b| b.load(Ordering::Relaxed));
        s.push_str(",\"bytes_in\":");
        push_u64(&mut s, bytes_in);
        s.push_str(",\"bytes_out\":");
        push_u64(&mut s, bytes_out);
        s.push_str(",\"duration_ms\":");
        push_millis(&mut s, duration);
        if let Some(t) = self.upstream_ms {
            s.push_str(",\"upstream_ms\":");
            push_millis(&mut s, t);
        }
        for (name, value) in [
            (",\"upstream\":", &self.upstream),
            (",\"gateway\":", &self.gateway),
            (",\"route\":", &self.route),
        ] {
            if let Some(v) = value {
                s.push_str(name);
                json_str(&mut s, v);
            }
        }
        if let Some(id) = self.trace_id {
            s.push_str(",\"trace_id\":\"");
            crate::trace::push_trace_id(&mut s, id);
            s.push('"');
        }
        if let Some(e) = self.endpoint {
            s.push_str(",\"upstream_endpoint\":\"");
            push_addr(&mut s, e);
            s.push('"');
        }
        if !flags.is_empty() {
            s.push_str(",\"flags\":");
            json_str(&mut s, flags);
        }
        s.push_str("}\n");
        s
    }
}

/// `n` in decimal.
fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits: always UTF-8.
    out.push_str(std::str::from_utf8(&digits[i..]).unwrap_or_default());
}

/// `n` in decimal, zero-padded to `width` digits.
fn push_padded(out: &mut String, n: u64, width: usize) {
    let mut len = 1;
    let mut m = n / 10;
    while m > 0 {
        len += 1;
        m /= 10;
    }
    for _ in len..width {
        out.push('0');
    }
    push_u64(out, n);
}

/// A duration in milliseconds with three decimals (microsecond resolution).
fn push_millis(out: &mut String, d: Duration) {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    push_u64(out, micros / 1000);
    out.push('.');
    push_padded(out, micros % 1000, 3);
}

/// `address:port` (IPv6 in brackets).
pub(crate) fn push_addr(out: &mut String, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_u64(out, u64::from(*octet));
            }
        }
        SocketAddr::V6(v6) => {
            let _ = write!(out, "[{}]", v6.ip());
        }
    }
    out.push(':');
    push_u64(out, u64::from(addr.port()));
}

/// `value` as a JSON string literal.
fn json_str(out: &mut String, value: &str) {
    out.push('"');
    if !value.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(value);
        out.push('"');
        return;
    }
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `time` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn rfc3339_millis(out: &mut String, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    push_padded(out, year, 4);
    out.push('-');
    push_padded(out, month, 2);
    out.push('-');
    push_padded(out, day, 2);
    out.push('T');
    push_padded(out, rem / 3600, 2);
    out.push(':');
    push_padded(out, rem % 3600 / 60, 2);
    out.push(':');
    push_padded(out, rem % 60, 2);
    out.push('.');
    push_padded(out, u64::from(since.subsec_millis()), 3);
    out.push('Z');
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

pin_project! {
    /// The response body, counting what is sent; writes the line when it ends, fails, or is
    /// dropped before its end (the client went away).
    pub(crate) struct Logged {
        #[pin]
        inner: ProxyBody,
        entry: Option<Box<Entry>>,
        log: Arc<crate::Shared>,
        bytes: u64,
    }

    impl PinnedDrop for Logged {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(entry) = this.entry.take() {
                // hyper drops a body it has seen the end of (`is_end_stream`) without polling
                // it to `None`: that is a complete response, not a client that left.
                let gone = if this.inner.is_end_stream() { "" } else { "client_gone" };
                emit(this.log, &entry, *this.bytes, gone);
            }
        }
    }
}

impl Logged {
    pub(crate) fn new(inner: ProxyBody, entry: Box<Entry>, log: Arc<crate::Shared>) -> Self {
        Self {
            inner,
            entry: Some(entry),
            log,
            bytes: 0,
        }
    }
}

fn emit(shared: &crate::Shared, entry: &Entry, bytes: u64, gone: &'static str) {
    if let Some(log) = &shared.access_log {
        let flags = if entry.flags.is_empty() {
            gone
        } else {
            entry.flags
        };
        log.send(entry.line(bytes, entry.started.elapsed(), flags));
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    if let Some(entry) = this.entry.take() {
                        emit(this.log, &entry, *this.bytes, "");
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(entry) = this.entry.take() {
                    emit(this.log, &entry, *this.bytes, "");
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(entry) = this.entry.take() {
                    emit(this.log, &entry, *this.bytes, "upstream_body_error");
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_escapes() {
        let mut s = String::new();
        rfc3339_millis(
            &mut s,
            UNIX_EPOCH + Duration::from_millis(1_765_065_600_123),
        );
        assert_eq!(s, "2025-12-07T00:00:00.123Z");
        let mut s = String::new();
        rfc3339_millis(&mut s, UNIX_EPOCH + Duration::from_secs(951_782_400));
        assert_eq!(s, "2000-02-29T00:00:00.000Z");
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\n\u{1}é");
        assert_eq!(s, r#""a\"b\\c\n\u0001é""#);
    }

    #[test]
    fn numbers_addresses_and_a_whole_line() {
        let mut s = String::new();
        push_millis(&mut s, Duration::from_micros(1_500));
        s.push(' ');
        push_millis(&mut s, Duration::from_micros(12));
        s.push(' ');
        push_addr(
            &mut s,
            "10.0.0.255:8080"
                .parse()
                .unwrap_or(SocketAddr::from(([0; 4], 0))),
        );
        s.push(' ');
        push_addr(
            &mut s,
            "[::1]:443".parse().unwrap_or(SocketAddr::from(([0; 4], 0))),
        );
        s.push(' ');
        push_u64(&mut s, 0);
        s.push(' ');
        push_u64(&mut s, u64::MAX);
        assert_eq!(
            s,
            "1.500 0.012 10.0.0.255:8080 [::1]:443 0 18446744073709551615"
        );

        let entry = Entry {
            time: UNIX_EPOCH + Duration::from_millis(1_765_065_600_123),
            started: Instant::now(),
            client: SocketAddr::from(([127, 0, 0, 1], 5000)),
            request_id: Some(HeaderValue::from_static("id-\"1\"")),
            method: Method::POST,
            host: "h.example".into(),
            path: "/a/b".into(),
            version: Version::HTTP_2,
            status: 201,
            bytes_in: Some(Arc::new(AtomicU64::new(7))),
            upstream_ms: Some(Duration::from_micros(2_000)),
            upstream: Some("ns/svc:80".into()),
            endpoint: Some(SocketAddr::from(([10, 1, 2, 3], 8080))),
            gateway: Some("ns/gw".into()),
            route: None,
            flags: "",
            trace_id: None,
        };
        assert_eq!(
            entry.line(42, Duration::from_micros(3_250), ""),
            concat!(
                r#"{"time":"2025-12-07T00:00:00.123Z","request_id":"id-\"1\"","client":"127.0.0.1:5000","#,
                r#""method":"POST","host":"h.example","path":"/a/b","protocol":"HTTP/2.0","status":201,"#,
                r#""bytes_in":7,"bytes_out":42,"duration_ms":3.250,"upstream_ms":2.000,"#,
                r#""upstream":"ns/svc:80","gateway":"ns/gw","upstream_endpoint":"10.1.2.3:8080"}"#,
                "\n"
            )
        );
    }

    #[test]
    fn sampling_thresholds() {
        assert_eq!(threshold(1.0), u64::MAX);
        assert_eq!(threshold(0.5), u64::MAX / 2 + 1);
        assert_eq!(threshold(0.0), 0);
    }
}
