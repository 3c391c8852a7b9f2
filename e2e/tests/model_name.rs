//! Body-Based Routing (a ClientTrafficPolicy's `bodyBasedRouting`): the `model` of a JSON
//! request body becomes `X-Gateway-Model-Name` before routes are matched, so one Gateway
//! sends each model to its own backend. Real weir, real echo backends, real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::net::SocketAddr;
use std::path::Path;

use weir_e2e::{service_yaml, wait_ready, WAIT};
use weir_testkit::assert_eventually;
use weir_testkit::client::{http1, Req};
use weir_testkit::process::{echo, weir};

const ROUTES: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: models, namespace: default}
spec:
  parentRefs: [{name: weir}]
  hostnames: [ai.ingress.top]
  rules:
    - matches: [{headers: [{name: X-Gateway-Model-Name, value: llama-3}]}]
      backendRefs: [{name: llama, port: 8000}]
    - matches: [{headers: [{name: X-Gateway-Model-Name, value: qwen-2}]}]
      backendRefs: [{name: qwen, port: 8000}]
";

fn write_policy(dir: &Path) {
    std::fs::write(
        dir.join("policy.yaml"),
        "apiVersion: gateway.weir.dev/v1alpha1
kind: ClientTrafficPolicy
metadata: {name: models, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: weir}]
  bodyBasedRouting: {maxBodySize: 1Ki}
",
    )
    .unwrap();
}

/// POST `body` as `content_type` (plus `extra` headers): (status, pod, the model header and
/// Content-Length the backend saw).
async fn post(
    http: SocketAddr,
    content_type: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> (u16, String, String, String) {
    let mut req = Req {
        method: "POST",
        body: body.as_bytes(),
        ..Req::get("ai.ingress.top", "/v1/chat/completions")
    }
    .header("content-type", content_type);
    for (k, v) in extra {
        req = req.header(k, v);
    }
    let r = http1(http, &req).await.unwrap();
    let j = if r.status.as_u16() == 200 {
        r.json()
    } else {
        serde_json::Value::Null
    };
    let one = |name: &str| j["headers"][name][0].as_str().unwrap_or("").to_string();
    (
        r.status.as_u16(),
        j["pod"].as_str().unwrap_or("").to_string(),
        one("X-Gateway-Model-Name"),
        one("Content-Length"),
    )
}

fn chat(model: &str) -> String {
    format!(r#"{{"model": "{model}", "messages": [{{"role": "user", "content": "hello"}}]}}"#)
}

#[tokio::test]
async fn the_model_in_the_body_picks_the_backend() {
    let llama = echo("llama-0", "default");
    let qwen = echo("qwen-0", "default");
    let dir = weir_e2e::http_quickstart_dir(llama.addr.port());
    std::fs::remove_file(dir.path().join("routes.yaml")).unwrap();
    std::fs::write(dir.path().join("models.yaml"), ROUTES).unwrap();
    std::fs::write(
        dir.path().join("services.yaml"),
        format!(
            "{}---\n{}",
            service_yaml("default", "llama", 8000, &[llama.addr]),
            service_yaml("default", "qwen", 8000, &[qwen.addr])
        ),
    )
    .unwrap();
    let weir = weir(dir.path(), &[80], &["--access-log", "off"]);
    wait_ready(&weir).await;
    let http = weir.listener(80);

    // Without the setting nothing reads the body: no route matches.
    assert_eventually("the route served", WAIT, || async {
        match post(
            http,
            "application/json",
            &chat("llama-3"),
            &[("X-Gateway-Model-Name", "qwen-2")],
        )
        .await
        {
            (200, pod, ..) if pod == "qwen-0" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(
        post(http, "application/json", &chat("llama-3"), &[])
            .await
            .0,
        404
    );

    write_policy(dir.path());
    assert_eventually("the policy applied", WAIT, || async {
        match post(http, "application/json", &chat("llama-3"), &[]).await {
            (200, pod, ..) if pod == "llama-0" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Each model to its backend; the body arrives whole, with its exact length.
    let body = chat("qwen-2");
    let (status, pod, header, length) =
        post(http, "application/json; charset=utf-8", &body, &[]).await;
    assert_eq!(
        (status, pod.as_str(), header.as_str()),
        (200, "qwen-0", "qwen-2")
    );
    assert_eq!(length, body.len().to_string());
    // The body decides, not a header the client sent.
    let got = post(
        http,
        "application/json",
        &chat("llama-3"),
        &[("X-Gateway-Model-Name", "qwen-2")],
    )
    .await;
    assert_eq!((got.0, got.1.as_str()), (200, "llama-0"));
    // No model, not JSON, or not declared JSON: no header (no route here), not an error.
    assert_eq!(
        post(http, "application/json", r#"{"prompt": "hi"}"#, &[])
            .await
            .0,
        404
    );
    assert_eq!(
        post(http, "application/json", "model=llama-3", &[]).await.0,
        404
    );
    assert_eq!(post(http, "text/plain", &chat("llama-3"), &[]).await.0, 404);
    // Over maxBodySize (1 KiB): 413, the body is not routed unread.
    let big = format!(
        r#"{{"model": "llama-3", "prompt": "{}"}}"#,
        "x".repeat(2048)
    );
    assert_eq!(post(http, "application/json", &big, &[]).await.0, 413);
}
