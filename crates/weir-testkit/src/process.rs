//! Real processes: `weir` and `weir-echo`, killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Directory holding the workspace's built binaries (target/debug), found from the test
/// executable's own path (target/debug/deps/<test>).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let dir = if deps.ends_with("deps") {
        deps.parent().unwrap()
    } else {
        deps
    };
    dir.to_path_buf()
}

/// Path of a workspace binary; panics with what to do when it has not been built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --bins` first (make test and make e2e do)",
        path.display()
    );
    path
}

/// A child process that is killed on drop; its stderr lines are kept for assertions.
pub struct Proc {
    pub child: Child,
    pub stderr: Arc<Mutex<Vec<String>>>,
    pub stdout: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        if let Some(err) = child.stderr.take() {
            let sink = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        if let Some(out) = child.stdout.take() {
            let sink = stdout.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        Proc {
            child,
            stderr,
            stdout,
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Wait for a stdout line starting with `prefix`; returns the rest of the line.
    pub fn wait_stdout(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.strip_prefix(prefix))
            {
                return line.trim().to_string();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no stdout line starting with {prefix:?} within {timeout:?}; stderr:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Send SIGTERM and wait for the exit status (bounded).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `weir-echo` on 127.0.0.1 with an ephemeral HTTP port.
pub struct Echo {
    pub proc: Proc,
    pub addr: SocketAddr,
}

/// Start `weir-echo` as pod `pod` in `namespace`.
pub fn echo(pod: &str, namespace: &str) -> Echo {
    echo_at(pod, namespace, SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Start `weir-echo` as pod `pod` in `namespace` on `addr` (port 0: an ephemeral one), e.g.
/// again on the address of one that was stopped.
pub fn echo_at(pod: &str, namespace: &str, addr: SocketAddr) -> Echo {
    let mut cmd = Command::new(bin("weir-echo"));
    let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
    cmd.args(["--bind", &ip, "--http-port", &port, "--no-h2c"])
        .env("POD_NAME", pod)
        .env("NAMESPACE", namespace);
    let proc = Proc::spawn(cmd);
    let addr = proc.wait_stdout("listening http ", Duration::from_secs(10));
    Echo {
        addr: addr.parse().unwrap(),
        proc,
    }
}

/// A running `weir run --config-dir DIR`.
pub struct Weir {
    pub proc: Proc,
    pub admin: SocketAddr,
    pub offset: u16,
    pub dir: PathBuf,
}

impl Weir {
    /// Address where a listener configured on `port` is served.
    pub fn listener(&self, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port + self.offset))
    }
}

/// Start weir in file mode on `dir`, with listeners offset so that `ports` land on free ports.
pub fn weir(dir: &Path, ports: &[u16], extra: &[&str]) -> Weir {
    weir_with_limit(dir, ports, extra, None)
}

/// [`weir`], with its address space limited to `limit_kib` (`ulimit -v`) when given: a test
/// that provokes memory growth fails by an allocation error in weir instead of taking the
/// machine's memory.
pub fn weir_with_limit(dir: &Path, ports: &[u16], extra: &[&str], limit_kib: Option<u64>) -> Weir {
    let offset = crate::free_offset(ports);
    let admin = SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
    let mut cmd = match limit_kib {
        None => Command::new(bin("weir")),
        Some(kib) => {
            // (exec: the pid is weir's.)
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
                .arg(bin("weir"));
            sh
        }
    };
    cmd.arg("run")
        .arg("--config-dir")
        .arg(dir)
        .args([
            "--bind",
            "127.0.0.1",
            "--listener-port-offset",
            &offset.to_string(),
        ])
        .args(["--admin-addr", &admin.to_string()]);
    if !extra.contains(&"--log-level") {
        cmd.args(["--log-level", "info,weir=debug"]);
    }
    cmd.args(extra);
    Weir {
        proc: Proc::spawn(cmd),
        admin,
        offset,
        dir: dir.to_path_buf(),
    }
}
