use super::*;
use crate::conn::client_ip_value;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn hop_by_hop_headers_are_removed_but_te_trailers_kept() {
    let mut h = headers(&[
        ("connection", "keep-alive, x-private, TE, host"),
        ("host", "h"),
        ("x-private", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("te", "trailers, deflate"),
        ("x-kept", "yes"),
        ("proxy-authorization", "Basic x"),
    ]);
    prepare_headers(&mut h, None);
    let mut names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
    names.sort();
    assert_eq!(names, ["host", "proxy-authorization", "te", "x-kept"]);
    assert_eq!(h.get(TE).unwrap(), "trailers");
}

#[test]
fn upgrade_keeps_connection_upgrade() {
    let mut h = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
    let protocol = h.get(UPGRADE).cloned();
    prepare_headers(&mut h, protocol.as_ref());
    assert_eq!(h.get(CONNECTION).unwrap(), "upgrade");
    assert_eq!(h.get(UPGRADE).unwrap(), "websocket");
}

#[test]
fn forwarded_for_appends_client_ip() {
    let mut h = headers(&[
        ("x-forwarded-for", "1.1.1.1"),
        ("x-forwarded-for", "2.2.2.2"),
    ]);
    forwarded_headers(&mut h, &client_ip_value("10.0.0.1".parse().unwrap()), true);
    assert_eq!(
        h.get(&X_FORWARDED_FOR).unwrap(),
        "1.1.1.1, 2.2.2.2, 10.0.0.1"
    );
    assert_eq!(h.get(&X_FORWARDED_PROTO).unwrap(), "https");
    let mut h = HeaderMap::new();
    forwarded_headers(
        &mut h,
        &client_ip_value("::ffff:10.0.0.2".parse().unwrap()),
        false,
    );
    assert_eq!(h.get(&X_FORWARDED_FOR).unwrap(), "10.0.0.2");
    assert_eq!(h.get(&X_FORWARDED_PROTO).unwrap(), "http");
}

#[test]
fn connection_keep_alive_alone_is_removed() {
    let mut h = headers(&[
        ("connection", "keep-alive"),
        ("content-length", "2"),
        ("server", "nginx"),
    ]);
    prepare_headers(&mut h, None);
    let mut names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
    names.sort();
    assert_eq!(names, ["content-length", "server"]);

    // A Connection header naming another header still removes that one.
    let mut h = headers(&[
        ("connection", "x-private"),
        ("x-private", "1"),
        ("x-kept", "1"),
    ]);
    prepare_headers(&mut h, None);
    let names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
    assert_eq!(names, ["x-kept"]);
}

#[test]
fn websocket_accept_matches_rfc_6455_example() {
    assert_eq!(
        websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}
