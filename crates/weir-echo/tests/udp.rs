//! The UDP modes of the real binary: the conformance UDP echo JSON, and the DNS stand-in.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start weir-echo with `args` (and a UDP port of 0); the address it printed.
fn start(args: &[&str], envs: &[(&str, &str)]) -> (Running, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir-echo"));
    for var in [
        "UDP_ECHO_SERVER",
        "UDP_PORT",
        "TCP_ECHO_SERVER",
        "POD_NAME",
        "NAMESPACE",
        "SERVICE_NAME",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .args(["--bind", "127.0.0.1", "--udp-port", "0"])
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn weir-echo");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening udp ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .parse()
        .unwrap();
    (Running(child), addr)
}

fn exchange(to: SocketAddr, data: &[u8]) -> Vec<u8> {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.connect(to).unwrap();
    c.send(data).unwrap();
    let mut buf = vec![0u8; 65_535];
    let n = c.recv(&mut buf).expect("an answer");
    buf.truncate(n);
    buf
}

#[test]
fn udp_echo_answers_each_datagram_with_the_pod_context() {
    let (_p, addr) = start(
        &[],
        &[
            ("UDP_ECHO_SERVER", "true"),
            ("POD_NAME", "udp-backend-v1-abc-123"),
            ("NAMESPACE", "gateway-conformance-infra"),
            ("SERVICE_NAME", "udp-backend-v1"),
        ],
    );
    for probe in [
        "gateway-api-conformance-udp-echo",
        "gateway-api-conformance-udp-weight\n",
    ] {
        let answer: serde_json::Value =
            serde_json::from_slice(&exchange(addr, probe.as_bytes())).unwrap();
        assert_eq!(answer["request"], probe);
        assert_eq!(answer["pod"], "udp-backend-v1-abc-123");
        assert_eq!(answer["namespace"], "gateway-conformance-infra");
        assert_eq!(answer["service"], "udp-backend-v1");
    }
}

#[test]
fn dns_whoami_answers_an_a_query_with_the_senders_address() {
    let (_p, addr) = start(&["--dns-whoami"], &[]);
    let mut q = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["foo", "bar", "com"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let r = exchange(addr, &q);
    assert_eq!(&r[..2], &[0xab, 0xcd]);
    assert_eq!(&r[4..8], &[0, 1, 0, 1]);
    assert_eq!(&r[r.len() - 4..], &[127, 0, 0, 1]);
}
