//! SecurityPolicy `authorization` by request path (`operation.paths`, Weir's extension beside
//! Envoy Gateway's `methods`): HTTPRoute path matches against the normalised path the route
//! matched. (The rest of authorization: `security.rs`.)

use http::{Method, StatusCode};
use http_body_util::Full;
use weir_snapshot::{Authorization, Cidr, PathMatch};

use crate::security::{empty, get_with, rule, start};
use crate::support::*;

fn loopback() -> Vec<Cidr> {
    vec![Cidr::parse("127.0.0.0/8").unwrap()]
}

async fn status(addr: std::net::SocketAddr, method: Method, path: &str) -> StatusCode {
    let req = request("a.example", path)
        .method(method)
        .body(Full::default())
        .unwrap();
    send(addr, req).await.unwrap().status
}

#[tokio::test]
async fn a_rule_allows_by_path_prefix_and_regular_expression() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let mut public = rule("public", true);
    public.client_cidrs = loopback();
    public.paths = vec![
        PathMatch::prefix("/p/public"),
        PathMatch::Regex(regex::Regex::new("^(?:/p/v[0-9]+/items)$").unwrap()),
    ];
    let mut s = empty(31);
    s.authorization = Some(Authorization {
        default_allow: false,
        rules: vec![public],
    });
    let (_proxy, addr) = start(&up, s).await;

    for ok in [
        "/p/public",
        "/p/public/a/b",
        "/p/v2/items",
        "/p/x/../public/y",
    ] {
        assert_eq!(get_with(addr, ok, &[]).await.status, StatusCode::OK, "{ok}");
    }
    // By path elements, and the regex anchored at both ends: the default (Deny) decides.
    for no in [
        "/p/publicity",
        "/p/other",
        "/p/v2/items/x",
        "/p/vx/items",
        "/p",
    ] {
        assert_eq!(
            get_with(addr, no, &[]).await.status,
            StatusCode::FORBIDDEN,
            "{no}"
        );
    }
}

#[tokio::test]
async fn a_rule_denies_an_exact_path_however_it_is_spelled() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let mut admin = rule("no-admin", false);
    admin.client_cidrs = loopback();
    admin.paths = vec![PathMatch::Exact("/p/admin".into())];
    let mut s = empty(32);
    s.authorization = Some(Authorization {
        default_allow: true,
        rules: vec![admin],
    });
    let (_proxy, addr) = start(&up, s).await;

    // The path is matched as the route matched it: normalised first.
    for no in [
        "/p/admin",
        "/p//admin",
        "/p/public/../admin",
        "/p/./admin",
        "/p/%61dmin",
    ] {
        assert_eq!(
            get_with(addr, no, &[]).await.status,
            StatusCode::FORBIDDEN,
            "{no}"
        );
    }
    for ok in ["/p/admin/x", "/p/admins", "/p", "/p/public"] {
        assert_eq!(get_with(addr, ok, &[]).await.status, StatusCode::OK, "{ok}");
    }
}

#[tokio::test]
async fn a_rule_with_methods_and_paths_needs_both() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let mut upload = rule("upload", true);
    upload.client_cidrs = loopback();
    upload.methods = vec![Method::POST, Method::PUT];
    upload.paths = vec![PathMatch::prefix("/p/upload")];
    let mut s = empty(33);
    s.authorization = Some(Authorization {
        default_allow: false,
        rules: vec![upload],
    });
    let (_proxy, addr) = start(&up, s).await;

    assert_eq!(
        status(addr, Method::POST, "/p/upload").await,
        StatusCode::OK
    );
    assert_eq!(
        status(addr, Method::PUT, "/p/upload/a").await,
        StatusCode::OK
    );
    // The right path with another method, the right method on another path.
    assert_eq!(
        status(addr, Method::GET, "/p/upload").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(addr, Method::POST, "/p/other").await,
        StatusCode::FORBIDDEN
    );
}
