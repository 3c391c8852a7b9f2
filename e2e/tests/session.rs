//! HTTPRoute `rules[].sessionPersistence` (Gateway API, experimental channel) as users
//! write it: a config directory on a running weir, three weir-echo pods behind one
//! Service, sessions by cookie and by header, expiry, a forged value, and the session's
//! endpoint going away.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use weir_e2e::{service_yaml, wait_ready, WAIT};
use weir_testkit::assert_eventually;
use weir_testkit::client::{http1, Reply, Req};
use weir_testkit::process::{echo_at, weir, Echo};

const ROUTE: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: sticky, namespace: default}
spec:
  parentRefs: [{name: weir}]
  hostnames: [sticky.ingress.top]
  rules:
  - matches: [{path: {type: PathPrefix, value: /cookie}}]
    sessionPersistence: {sessionName: sid, absoluteTimeout: 1h, cookieConfig: {lifetimeType: Permanent}}
    backendRefs: [{name: pods, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /header}}]
    sessionPersistence: {sessionName: x-session, type: Header}
    backendRefs: [{name: pods, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /short}}]
    sessionPersistence: {absoluteTimeout: 2s}
    backendRefs: [{name: pods, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /plain}}]
    backendRefs: [{name: pods, port: 80}]
";

/// Three echo pods on 127.0.0.1-3, one port number (an EndpointSlice has one port list).
fn pods() -> (u16, Vec<Echo>) {
    for _ in 0..20 {
        let first = echo_at("pod-1", "default", SocketAddr::from(([127, 0, 0, 1], 0)));
        let port = first.addr.port();
        let rest: Vec<_> = (2..=3)
            .map(|i| {
                std::panic::catch_unwind(|| {
                    echo_at(
                        &format!("pod-{i}"),
                        "default",
                        SocketAddr::from(([127, 0, 0, i], port)),
                    )
                })
            })
            .collect();
        if rest.iter().all(Result::is_ok) {
            let mut all = vec![first];
            all.extend(rest.into_iter().map(Result::unwrap));
            return (port, all);
        }
    }
    panic!("no port free on 127.0.0.1-3");
}

fn write_backends(dir: &Path, port: u16, pods: &[&Echo]) {
    let addrs: Vec<SocketAddr> = pods.iter().map(|p| p.addr).collect();
    std::fs::write(
        dir.join("backends.yaml"),
        service_yaml("default", "pods", 80, &addrs).replace("pods-local", "pods-slice"),
    )
    .unwrap();
    let _ = port;
}

async fn get(http: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Req::get("sticky.ingress.top", path);
    for (n, v) in headers {
        req = req.header(n, v);
    }
    http1(http, &req).await.unwrap()
}

fn pod(r: &Reply) -> String {
    r.json()["pod"].as_str().unwrap_or_default().to_string()
}

/// `name=value` of the response's Set-Cookie, and the whole header.
fn set_cookie(r: &Reply) -> Option<(String, String)> {
    let whole = r.header("set-cookie")?.to_string();
    let pair = whole.split(';').next()?.trim().to_string();
    Some((pair, whole))
}

#[tokio::test]
async fn sessions_stick_by_cookie_and_header_and_end_as_the_spec_says() {
    let (port, pods) = pods();
    let dir = tempfile::tempdir().unwrap();
    let gateway = std::fs::read_to_string(weir_e2e::example_dir().join("gateway.yaml")).unwrap();
    std::fs::write(
        dir.path().join("gateway.yaml"),
        gateway.split("    - name: https").next().unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("route.yaml"), ROUTE).unwrap();
    write_backends(dir.path(), port, &pods.iter().collect::<Vec<_>>());
    let weir = weir(dir.path(), &[80], &["--access-log", "off"]);
    wait_ready(&weir).await;
    let http = weir.listener(80);
    assert_eventually("the route served", WAIT, || async {
        let r = get(http, "/plain", &[]).await;
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("status {}", r.status))
        }
    })
    .await;

    // Without a session the rule spreads requests (round robin over three pods).
    let spread: BTreeSet<String> = futures_pods(http, "/cookie", &[], 9).await;
    assert!(
        spread.len() >= 2,
        "no session: requests spread, got {spread:?}"
    );

    // Cookie: the first answer starts a session; the cookie keeps every request on its pod.
    let first = get(http, "/cookie/x", &[]).await;
    let (cookie, whole) = set_cookie(&first).expect("a session cookie");
    assert!(cookie.starts_with("sid="), "{whole}");
    assert!(
        whole.contains("Path=/cookie") && whole.contains("HttpOnly"),
        "{whole}"
    );
    assert!(
        whole.contains("Max-Age=3600"),
        "Permanent: Max-Age is absoluteTimeout: {whole}"
    );
    assert!(
        !whole.contains("127.0.0."),
        "the endpoint is not readable: {whole}"
    );
    let home = pod(&first);
    for _ in 0..30 {
        let r = get(http, "/cookie/x", &[("cookie", &format!("a=b; {cookie}"))]).await;
        assert_eq!(pod(&r), home, "the session's pod");
        assert!(
            set_cookie(&r).is_none(),
            "an alive session is not re-issued"
        );
    }
    // The cookie of one rule means nothing to another (here: no session at all there).
    let plain: BTreeSet<String> =
        futures_pods(http, "/plain", &[("cookie", cookie.as_str())], 9).await;
    assert!(plain.len() >= 2, "{plain:?}");

    // A forged or altered value is ignored: routed normally, a new session issued.
    let mid = cookie.len() / 2 + 2;
    let swap = if &cookie[mid..=mid] == "A" { "B" } else { "A" };
    let forged = format!("{}{swap}{}", &cookie[..mid], &cookie[mid + 1..]);
    assert_ne!(forged, cookie);
    let r = get(http, "/cookie/x", &[("cookie", forged.as_str())]).await;
    assert_eq!(r.status, 200);
    assert!(set_cookie(&r).is_some(), "a new session for a forged value");
    let r = get(http, "/cookie/x", &[("cookie", "sid=127.0.0.2:1")]).await;
    assert!(set_cookie(&r).is_some());

    // Header: the session travels in x-session both ways.
    let first = get(http, "/header", &[]).await;
    let value = first
        .header("x-session")
        .expect("a session header")
        .to_string();
    assert!(set_cookie(&first).is_none());
    let header_home = pod(&first);
    for _ in 0..20 {
        let r = get(http, "/header", &[("x-session", value.as_str())]).await;
        assert_eq!(pod(&r), header_home);
    }

    // A session cookie (no Max-Age) that the gateway ends after absoluteTimeout.
    let first = get(http, "/short", &[]).await;
    let (short, whole) = set_cookie(&first).expect("a session cookie");
    assert!(
        short.starts_with("weir-session-"),
        "a generated name: {whole}"
    );
    assert!(
        !whole.contains("Max-Age") && !whole.contains("Expires"),
        "{whole}"
    );
    let r = get(http, "/short", &[("cookie", short.as_str())]).await;
    assert!(set_cookie(&r).is_none(), "still alive");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let r = get(http, "/short", &[("cookie", short.as_str())]).await;
    assert!(set_cookie(&r).is_some(), "expired: a new session");

    // The session's pod leaves the Service: routed to another pod, and a new session.
    let others: Vec<&Echo> = pods
        .iter()
        .filter(|p| {
            format!(
                "pod-{}",
                p.addr.ip().to_string().rsplit('.').next().unwrap()
            ) != home
        })
        .collect();
    assert_eq!(others.len(), 2);
    write_backends(dir.path(), port, &others);
    assert_eventually("the session moves off the gone pod", WAIT, || async {
        let r = get(http, "/cookie/x", &[("cookie", cookie.as_str())]).await;
        if r.status == 200 && pod(&r) != home && set_cookie(&r).is_some() {
            Ok(())
        } else {
            Err(format!("status {} pod {}", r.status, pod(&r)))
        }
    })
    .await;
}

/// The pods that answer `n` requests to `path`.
async fn futures_pods(
    http: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> BTreeSet<String> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let r = get(http, path, headers).await;
        *seen.entry(pod(&r)).or_insert(0) += 1;
    }
    seen.into_keys().collect()
}
