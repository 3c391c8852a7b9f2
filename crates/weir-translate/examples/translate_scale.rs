//! Translate a store shaped like the benchmark's (bench/run.py `weir_config`): one Gateway
//! with an HTTP and an HTTPS listener, one Service with one EndpointSlice, and N HTTPRoutes
//! with distinct hostnames and path prefixes. Prints the time per translation: the first one
//! from scratch, as at start-up; then, as after a route file changed, each with one route
//! replaced by a new version, handing on the previous translation's memo and preserving
//! transition times, as `weir run` does. With `--no-memo` every translation starts from
//! scratch. Under `valgrind --tool=callgrind` use `--iterations 1` (or 2, and subtract) for
//! instruction counts.
//!
//!     cargo run --release -p weir-translate --example translate_scale -- [routes] [iterations] [--no-memo]

// A developer harness on generated input: failing loudly is what it should do.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use weir_store::{Kind, Object, Store, Time};
use weir_translate::{preserve_transition_times, translate_with, Input, Memo};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let no_memo = args.iter().any(|a| a == "--no-memo");
    let mut numbers = args.iter().filter_map(|a| a.parse::<usize>().ok());
    let routes = numbers.next().unwrap_or(10_000);
    let iterations = numbers.next().unwrap_or(5);
    let mut store = bench_store(routes);
    let addresses = vec![("IPAddress".to_string(), "127.0.0.1".to_string())];
    let usable = |_: std::net::IpAddr| true;
    let mut previous = Vec::new();
    let mut memo = Memo::default();
    for i in 0..iterations {
        if i > 0 {
            // A new version of one route, as a file source makes when its file changes.
            let key = store.http_routes.keys().nth(i % routes.max(1)).cloned();
            if let Some(key) = key {
                let route = store.http_routes[&key].as_ref().clone();
                store.http_routes.insert(key, Arc::new(route));
            }
        }
        let started = Instant::now();
        let out = translate_with(
            &Input {
                store: &store,
                controller_name: "weir.dev/gateway-controller",
                now: Time(k8s_openapi::jiff::Timestamp::now()),
                gateway_addresses: &addresses,
                address_usable: &usable,
                addressing: &weir_translate::Addressing::Shared,
                rate_limit_redis: false,
            },
            if no_memo {
                Memo::default()
            } else {
                std::mem::take(&mut memo)
            },
        );
        let mut statuses = out.statuses;
        preserve_transition_times(&previous, &mut statuses);
        let elapsed = started.elapsed();
        println!(
            "{routes} routes, translation {i}: {:.1} ms ({} statuses, {} sockets)",
            elapsed.as_secs_f64() * 1000.0,
            statuses.len(),
            out.snapshot.sockets.len()
        );
        memo = out.memo;
        previous = statuses;
    }
}

fn bench_store(routes: usize) -> Store {
    let cert =
        rcgen::generate_simple_self_signed(vec!["*.bench.test".to_string()]).expect("certificate");
    let b64 = |bytes: &[u8]| {
        use std::fmt::Write;
        // Secrets hold base64 in YAML; encode by hand to need no extra crate.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b))
                << (8 * (3 - chunk.len()));
            for i in 0..4 {
                if i <= chunk.len() {
                    let _ = out.write_char(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    };
    let mut yaml = format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: weir, generation: 1}}
spec: {{controllerName: weir.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: bench, namespace: default, generation: 1, creationTimestamp: "2026-01-01T00:00:00Z"}}
spec:
  gatewayClassName: weir
  listeners:
    - name: http
      protocol: HTTP
      port: 80
      allowedRoutes: {{namespaces: {{from: All}}}}
    - name: https
      protocol: HTTPS
      port: 443
      tls:
        mode: Terminate
        certificateRefs: [{{kind: Secret, name: bench-tls}}]
      allowedRoutes: {{namespaces: {{from: All}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: bench-tls, namespace: default}}
type: kubernetes.io/tls
data:
  tls.crt: {}
  tls.key: {}
---
apiVersion: v1
kind: Service
metadata: {{name: backend, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: 19000}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: backend-local
  namespace: default
  labels: {{kubernetes.io/service-name: backend}}
addressType: IPv4
ports: [{{name: http, port: 19000, protocol: TCP}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
"#,
        b64(cert.cert.pem().as_bytes()),
        b64(cert.signing_key.serialize_pem().as_bytes()),
    );
    for i in 0..routes {
        yaml.push_str(&format!(
            r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: r-{i}
  namespace: default
  generation: 1
  creationTimestamp: "2026-01-01T00:00:{:02}Z"
spec:
  parentRefs: [{{name: bench}}]
  hostnames: ["app-{i}.bench.test"]
  rules:
    - matches: [{{path: {{type: PathPrefix, value: /svc-{i}}}}}]
      backendRefs: [{{name: backend, port: 80}}]
"#,
            i % 60
        ));
    }
    let mut store = Store::default();
    for doc in serde_norway::Deserializer::from_str(&yaml) {
        let value = serde_norway::Value::deserialize(doc).expect("yaml document");
        let api_version = value["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        let kind = Kind::from_type(&api_version, &kind).expect("known kind");
        let json = serde_json::to_value(&value).expect("yaml as json");
        let object = Object::from_value(kind, json).expect("typed object");
        store.apply(object);
    }
    store
}
