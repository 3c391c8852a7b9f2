//! A real Redis for tests: `redis-server` (Debian's package; `.ci/run` installs it) on a free
//! loopback port, nothing saved to disk, killed when dropped. Stop it and start it again on
//! the same port to test what happens while Redis is away.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::Proc;

/// A running `redis-server` on 127.0.0.1.
pub struct Redis {
    pub proc: Proc,
    pub port: u16,
    /// `requirepass`, when started with one.
    pub password: Option<String>,
}

impl Redis {
    /// Start one on a free port.
    pub fn start() -> Redis {
        Self::start_on(crate::free_port(), None)
    }

    /// Start one on `port` (again on the port of one that was stopped), with `requirepass`
    /// when `password` is given. Returns once it answers PING.
    pub fn start_on(port: u16, password: Option<&str>) -> Redis {
        let mut cmd = Command::new(server());
        let port_s = port.to_string();
        cmd.args([
            "--port",
            &port_s,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ]);
        if let Some(p) = password {
            cmd.args(["--requirepass", p]);
        }
        let redis = Redis {
            proc: Proc::spawn(cmd),
            port,
            password: password.map(str::to_string),
        };
        redis.wait_ready(Duration::from_secs(10));
        redis
    }

    /// Start one that speaks only TLS, on a free port, with the server certificate
    /// `cert_pem` / `key_pem` (files written to `dir`; `ca_pem` is what it would verify
    /// client certificates with, which it does not ask for). Returns once the port accepts
    /// connections. [`Redis::command`] does not speak TLS.
    pub fn start_tls(dir: &std::path::Path, cert_pem: &str, key_pem: &str, ca_pem: &str) -> Redis {
        let port = crate::free_port();
        let files = [
            ("redis.crt", cert_pem),
            ("redis.key", key_pem),
            ("ca.crt", ca_pem),
        ];
        for (name, pem) in files {
            std::fs::write(dir.join(name), pem).unwrap();
        }
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let mut cmd = Command::new(server());
        cmd.args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--tls-auth-clients", "no"])
            .args(["--tls-cert-file", &path("redis.crt")])
            .args(["--tls-key-file", &path("redis.key")])
            .args(["--tls-ca-cert-file", &path("ca.crt")]);
        let redis = Redis {
            proc: Proc::spawn(cmd),
            port,
            password: None,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&redis.addr(), Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server (TLS) on port {port} did not listen: {}",
                redis.proc.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    /// `redis://[:password@]127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kill it (its data goes with it) and wait until the port refuses connections.
    pub fn stop(mut self) -> u16 {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect_timeout(&self.addr(), Duration::from_millis(100)).is_ok() {
            assert!(Instant::now() < deadline, "redis still listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.port
    }

    /// Send one inline command and return the raw reply (e.g. `DBSIZE` → `:3\r\n`).
    pub fn command(&self, line: &str) -> String {
        let mut s = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect to redis: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        if let Some(p) = &self.password {
            s.write_all(format!("AUTH {p}\r\n").as_bytes()).unwrap();
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).unwrap();
        }
        s.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(mut s) = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200))
            {
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 64];
                // Without a password: +PONG; with one: -NOAUTH (it is serving).
                if s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| n > 0) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer within {timeout:?}: {}",
                self.port,
                self.proc.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `redis-server` (PATH or /usr/bin).
fn server() -> &'static str {
    if std::path::Path::new("/usr/bin/redis-server").exists() {
        "/usr/bin/redis-server"
    } else {
        "redis-server"
    }
}
