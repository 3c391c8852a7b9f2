//! Test harness: runs the real `weir-echo` binary on port 0 and talks to it over sockets.
#![allow(dead_code)]
// each test binary uses a different part of this module
// Test-only helpers: a failed expectation should panic the test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// How long to wait for output from the binary before failing.
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `weir-echo` process; killed on drop if still alive.
pub struct EchoProcess {
    child: Child,
    pub http: SocketAddr,
    pub h2c: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    stderr: Receiver<String>,
}

/// Sends every line of `reader` to the returned channel, from a background thread.
fn lines_of(reader: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl EchoProcess {
    /// Starts the binary bound to 127.0.0.1 with every port 0, plus `args` and `envs`,
    /// and waits until it reported `listeners` listening lines on stdout.
    pub fn start(args: &[&str], envs: &[(&str, &str)], listeners: usize) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir-echo"));
        for var in [
            "HTTP_PORT",
            "H2C_PORT",
            "HTTPS_PORT",
            "NAMESPACE",
            "POD_NAME",
            "SERVICE_NAME",
            "INGRESS_NAME",
            "TLS_SERVER_CERT",
            "TLS_SERVER_PRIVKEY",
            "TLS_CLIENT_CACERTS",
        ] {
            cmd.env_remove(var);
        }
        cmd.args(["--bind", "127.0.0.1", "--http-port", "0", "--h2c-port", "0"])
            .args(["--https-port", "0"])
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn weir-echo");
        let stdout = lines_of(child.stdout.take().expect("stdout"));
        let stderr = lines_of(child.stderr.take().expect("stderr"));

        let (mut http, mut h2c, mut https) = (None, None, None);
        for _ in 0..listeners {
            let line = stdout
                .recv_timeout(OUTPUT_TIMEOUT)
                .unwrap_or_else(|_| panic!("no listening line; stderr: {:?}", drain(&stderr)));
            let mut words = line.split(' ');
            assert_eq!(words.next(), Some("listening"), "unexpected line {line:?}");
            let kind = words.next().expect("listener kind");
            let addr: SocketAddr = words.next().expect("address").parse().expect("addr");
            assert_eq!(words.next(), None, "unexpected line {line:?}");
            assert_eq!(addr.ip().to_string(), "127.0.0.1");
            assert_ne!(addr.port(), 0, "the real port must be printed");
            let slot = match kind {
                "http" => &mut http,
                "h2c" => &mut h2c,
                "https" => &mut https,
                other => panic!("unknown listener kind {other:?}"),
            };
            assert!(slot.replace(addr).is_none(), "{kind} listed twice");
        }
        EchoProcess {
            child,
            http: http.expect("an http listener"),
            h2c,
            https,
            stderr,
        }
    }

    /// Waits for a stderr line containing `needle` and returns it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + OUTPUT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no stderr line containing {needle:?}"),
            }
        }
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill failed");
        self.child.wait().expect("wait for weir-echo")
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn drain(rx: &Receiver<String>) -> Vec<String> {
    rx.try_iter().collect()
}

/// A collected response.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }
}

async fn collect(resp: Response<hyper::body::Incoming>) -> Answer {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("read body").to_bytes();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8(body.to_vec()).expect("utf-8 body"),
    }
}

/// A GET request with the given target and headers (add `host` yourself for HTTP/1).
pub fn get(uri: &str, headers: &[(&str, &str)]) -> Request<Empty<Bytes>> {
    let mut req = Request::builder().uri(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Empty::new()).expect("request")
}

/// Sends one HTTP/1.1 request over `io`.
pub async fn http1_over<I>(io: I, req: Request<Empty<Bytes>>) -> hyper::Result<Answer>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    Ok(collect(resp).await)
}

/// Sends one HTTP/1.1 request to `addr` on a new connection.
pub async fn http1(addr: SocketAddr, req: Request<Empty<Bytes>>) -> Answer {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    http1_over(tcp, req).await.expect("HTTP/1.1 exchange")
}

/// Sends one HTTP/2 prior-knowledge (h2c) request to `addr` on a new connection.
pub async fn h2c(addr: SocketAddr, req: Request<Empty<Bytes>>) -> Answer {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.expect("h2 request");
    collect(resp).await
}
