use super::*;

use std::sync::Arc;

use http::{HeaderName, Request, StatusCode};
use weir_snapshot::PathModifier;

fn base(scheme: RedirectScheme, port: u16) -> RedirectBase<'static> {
    RedirectBase {
        host: "example.com",
        scheme,
        port,
    }
}

fn redirect() -> Redirect {
    Redirect {
        scheme: None,
        hostname: None,
        path: None,
        port: None,
        status: StatusCode::FOUND,
    }
}

fn location(r: &Redirect, uri: &str, b: &RedirectBase<'_>) -> String {
    let uri: Uri = uri.parse().unwrap();
    redirect_location(r, &uri, b)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn redirect_defaults_keep_request_and_listener_port() {
    let r = redirect();
    assert_eq!(
        location(&r, "/a?x=1", &base(RedirectScheme::Http, 8080)),
        "http://example.com:8080/a?x=1"
    );
    assert_eq!(
        location(&r, "/a", &base(RedirectScheme::Http, 80)),
        "http://example.com/a"
    );
    assert_eq!(
        location(&r, "/a", &base(RedirectScheme::Https, 443)),
        "https://example.com/a"
    );
}

#[test]
fn redirect_scheme_uses_its_well_known_port_unless_port_given() {
    let mut r = redirect();
    r.scheme = Some(RedirectScheme::Https);
    assert_eq!(
        location(&r, "/a", &base(RedirectScheme::Http, 8080)),
        "https://example.com/a"
    );
    r.port = Some(8443);
    assert_eq!(
        location(&r, "/a", &base(RedirectScheme::Http, 8080)),
        "https://example.com:8443/a"
    );
    r.scheme = Some(RedirectScheme::Http);
    r.port = Some(443);
    assert_eq!(
        location(&r, "/a", &base(RedirectScheme::Https, 8443)),
        "http://example.com:443/a"
    );
}

#[test]
fn redirect_hostname_and_prefix_path() {
    let mut r = redirect();
    r.hostname = Some("other.example".into());
    r.path = Some(PathModifier::ReplacePrefixMatch {
        matched_prefix: "/old".into(),
        replacement: "/new".into(),
    });
    assert_eq!(
        location(&r, "/old/x?q", &base(RedirectScheme::Http, 80)),
        "http://other.example/new/x?q"
    );
}

#[test]
fn header_modifier_sets_adds_then_removes() {
    let m = HeaderModifier {
        set: Arc::new([(
            HeaderName::from_static("x-set"),
            HeaderValue::from_static("s"),
        )]),
        add: Arc::new([(
            HeaderName::from_static("x-add"),
            HeaderValue::from_static("b"),
        )]),
        remove: Arc::new([HeaderName::from_static("x-gone")]),
    };
    let mut h = HeaderMap::new();
    h.insert("x-set", HeaderValue::from_static("old"));
    h.insert("x-add", HeaderValue::from_static("a"));
    h.insert("x-gone", HeaderValue::from_static("1"));
    modify_headers(&m, &mut h);
    assert_eq!(h.get("x-set").unwrap(), "s");
    let added: Vec<_> = h.get_all("x-add").iter().collect();
    assert_eq!(added, ["a", "b"]);
    assert!(!h.contains_key("x-gone"));
}

#[test]
fn url_rewrite_replaces_host_and_path_keeps_query() {
    let (mut parts, ()) = Request::builder()
        .uri("/api/v1/x?y=2")
        .header(HOST, "orig.example")
        .body(())
        .unwrap()
        .into_parts();
    let rw = UrlRewrite {
        hostname: Some(HeaderValue::from_static("new.example")),
        path: Some(PathModifier::ReplacePrefixMatch {
            matched_prefix: "/api".into(),
            replacement: "/".into(),
        }),
    };
    let filters = [Filter::UrlRewrite(rw)];
    let answer = apply_request(&filters, &mut parts, &base(RedirectScheme::Http, 80)).unwrap();
    assert!(answer.is_none());
    assert_eq!(parts.headers.get(HOST).unwrap(), "new.example");
    assert_eq!(parts.uri, "/v1/x?y=2");
}
