//! Traffic expectations: requests over real sockets to the Gateway's reported address,
//! compared as conformance/utils/http/http.go compares them.

use super::*;

/// The configured port a case targets, the Gateway's address (from its status, as the suite
/// takes it) and the socket serving that port there.
pub(super) async fn target(
    env: &Env<'_>,
    gateway: &str,
    port: Option<u16>,
    https: bool,
) -> Result<(u16, IpAddr, SocketAddr), String> {
    let (ns, name) = split_name(gateway);
    let key = format!("{ns}/{name}");
    let gateways = env.dir.borrow().gateways();
    let listeners = gateways
        .get(&key)
        .ok_or_else(|| format!("Gateway {key} is neither a base Gateway nor one of this test's"))?;
    let want = if https { "HTTPS" } else { "HTTP" };
    let port = match port {
        Some(p) => p,
        None => listeners
            .iter()
            .find(|(_, proto)| proto == want)
            .map(|(p, _)| *p)
            .ok_or_else(|| format!("Gateway {key} has no {want} listener"))?,
    };
    let ip = gateway_address(env, gateway).await?;
    Ok((
        port,
        ip,
        SocketAddr::new(ip, env.weir.listener(port).port()),
    ))
}

/// `CalculateHost`: the Gateway address, without the port when it is the scheme's default.
pub(super) fn default_host(ip: IpAddr, port: u16, https: bool) -> String {
    if (!https && port == 80) || (https && port == 443) {
        ip.to_string()
    } else {
        SocketAddr::new(ip, port).to_string()
    }
}

pub(super) struct Prepared {
    addr: SocketAddr,
    https: bool,
    h2c: bool,
    server_name: String,
    host: String,
    method: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    client_cert: Option<ClientCert>,
}

pub(super) async fn prepare(env: &Env<'_>, case: &HttpCase) -> Result<Prepared, String> {
    let https = case.scheme.as_deref() == Some("https");
    let (port, ip, addr) = target(env, &case.gateway, case.port, https).await?;
    let host = case
        .host
        .clone()
        .unwrap_or_else(|| default_host(ip, port, https));
    let mut headers: Vec<(String, String)> = case
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let set: Vec<String> = case
        .backend_set_headers
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    headers.push(("X-Echo-Set-Header".into(), set.join(",")));
    Ok(Prepared {
        addr,
        https,
        h2c: case.protocol.as_deref() == Some("h2c"),
        server_name: case
            .server_name
            .clone()
            .unwrap_or_else(|| host.split(':').next().unwrap_or_default().to_string()),
        host,
        method: case.method.clone().unwrap_or_else(|| "GET".into()),
        headers,
        body: case.body.clone().unwrap_or_default().into_bytes(),
        client_cert: match &case.client_cert {
            None => None,
            Some(name) => {
                let leaf =
                    env.cluster.client_certs.get(name).ok_or_else(|| {
                        format!("no generated client certificate Secret {name:?}")
                    })?;
                Some(ClientCert::new(&leaf.cert_pem, &leaf.key_pem))
            }
        },
    })
}

/// `tls.MakeTLSRequestAndExpectFailureResponse`: one request, which must not be answered.
pub(super) async fn tls_failure(env: &Env<'_>, case: &HttpCase) -> Result<(), String> {
    let p = prepare(env, case).await?;
    if !p.https {
        return Err("tls_failure needs scheme https".into());
    }
    match send(env, &p, &case.path, REQUEST_TIMEOUT).await {
        Ok(reply) => Err(format!(
            "https {} (host {}, SNI {}): answered {} but the request should fail",
            case.path, p.host, p.server_name, reply.status
        )),
        Err(_) => match &p.client_cert {
            Some(c) if !c.was_asked() => Err(format!(
                "https {} (SNI {}): failed, but the Gateway never asked for the client certificate",
                case.path, p.server_name
            )),
            _ => Ok(()),
        },
    }
}

pub(super) async fn send(
    env: &Env<'_>,
    p: &Prepared,
    path: &str,
    timeout: Duration,
) -> Result<Reply, String> {
    let req = Req {
        method: &p.method,
        host: &p.host,
        path,
        headers: p
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        body: &p.body,
    };
    let fut = async {
        if p.https {
            https_with(
                p.addr,
                &p.server_name,
                env.ca_pem,
                p.client_cert.as_ref(),
                &req,
            )
            .await
        } else if p.h2c {
            h2c(p.addr, &req).await
        } else {
            http1(p.addr, &req).await
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// A value never given before in this process (nor, with the clock, by an earlier one).
fn fresh_uuid() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{t:x}-{}-{n}", std::process::id())
}

/// `MakeRequestAndExpectEventuallyConsistentResponse`: the expectation must hold for
/// `CONSECUTIVE` requests in a row within the step timeout.
pub(super) async fn consistent(env: &Env<'_>, case: &HttpCase) -> Result<(), String> {
    let p = prepare(env, case).await?;
    let timeout = case
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(REQUEST_TIMEOUT);
    let deadline = Instant::now() + STEP_TIMEOUT + timeout;
    let mut successes = 0;
    let mut fresh;
    loop {
        let case = if case.fresh_uuid {
            fresh = case.clone();
            let sep = if case.path.contains('?') { '&' } else { '?' };
            fresh.path = format!("{}{sep}uuid={}", case.path, fresh_uuid());
            &fresh
        } else {
            case
        };
        let outcome = match send(env, &p, &case.path, timeout).await {
            Ok(reply) if case.fails => match reply.status.as_u16() {
                200..=299 => Err(format!(
                    "expected the request to fail, got {}",
                    reply.status.as_u16()
                )),
                _ => Ok(()),
            },
            Err(_) if case.fails => Ok(()),
            Ok(reply) => compare(case, &p, &reply).and_then(|()| backend_tls(env, case, &reply)),
            Err(e) if case.status == Some(504) && e.starts_with("no answer") => Ok(()),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                successes += 1;
                if successes >= CONSECUTIVE {
                    return Ok(());
                }
                continue;
            }
            Err(e) => {
                successes = 0;
                if Instant::now() >= deadline {
                    return Err(format!(
                        "{} {}{} (host {}): {e}",
                        p.method,
                        if p.https { "https " } else { "" },
                        case.path,
                        p.host
                    ));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(super) fn header_values(map: &Value, name: &str) -> Option<String> {
    let obj = map.as_object()?;
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
}

pub(super) fn response_header(reply: &Reply, name: &str) -> Option<String> {
    let values: Vec<&str> = reply
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// What the backend saw of its TLS connection from the Gateway (`tls` of the echo JSON):
/// the server name, and the Gateway's client certificate.
pub(super) fn backend_tls(env: &Env<'_>, case: &HttpCase, reply: &Reply) -> Result<(), String> {
    if case.backend_sni.is_none() && case.backend_client_cert.is_none() {
        return Ok(());
    }
    let echo: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| format!("backend answer is not echo JSON ({e}): {}", reply.text()))?;
    let tls = &echo["tls"];
    if tls.is_null() {
        return Err("the backend was not reached over TLS".into());
    }
    if let Some(want) = &case.backend_sni {
        if tls["serverName"] != want.as_str() {
            return Err(format!(
                "expected the backend to see SNI {want}, got {}",
                tls["serverName"]
            ));
        }
    }
    if let Some(secret) = &case.backend_client_cert {
        let (ns, name) = crate::spec::split_name(secret);
        let want = env
            .cluster
            .certificate_pem(&ns, &name)
            .ok_or_else(|| format!("no generated certificate {ns}/{name}"))?;
        let got = tls["peerCertificates"][0].as_str().unwrap_or_default();
        // PEM line wrapping may differ; the certificate is the same when the text without
        // whitespace is.
        let squash = |pem: &str| pem.split_whitespace().collect::<String>();
        if squash(got) != squash(want) {
            return Err(format!(
                "expected the backend to see client certificate {ns}/{name}, got {:?}",
                tls["peerCertificates"]
            ));
        }
    }
    Ok(())
}

/// `CompareRequest` of conformance/utils/http/http.go.
pub(super) fn compare(case: &HttpCase, p: &Prepared, reply: &Reply) -> Result<(), String> {
    let got_status = reply.status.as_u16();
    let want_status = match case.statuses.as_slice() {
        [] => case.status.unwrap_or(200),
        allowed if allowed.contains(&got_status) => got_status,
        allowed => {
            return Err(format!(
                "expected status code to be one of {allowed:?}, got {got_status}"
            ))
        }
    };
    if reply.status.as_u16() != want_status {
        return Err(format!(
            "expected status code to be {want_status}, got {}",
            reply.status.as_u16()
        ));
    }
    if want_status == 200 {
        let echo: Value = serde_json::from_slice(&reply.body)
            .map_err(|e| format!("backend answer is not echo JSON ({e}): {}", reply.text()))?;
        let exp = case.expected_request.clone().unwrap_or_default();
        let default_request = case.expected_request.is_none();
        let want_host = if default_request {
            case.host.clone()
        } else {
            exp.host.clone()
        };
        if let Some(h) = want_host.filter(|h| !h.is_empty()) {
            if echo["host"] != h.as_str() {
                return Err(format!("expected host to be {h}, got {}", echo["host"]));
            }
        }
        let want_path = exp.path.clone().unwrap_or_else(|| case.path.clone());
        if echo["path"] != want_path.as_str() {
            return Err(format!(
                "expected path to be {want_path}, got {}",
                echo["path"]
            ));
        }
        let want_method = if default_request {
            p.method.clone()
        } else {
            exp.method.clone().unwrap_or_else(|| "GET".into())
        };
        if echo["method"] != want_method.as_str() {
            return Err(format!(
                "expected method to be {want_method}, got {}",
                echo["method"]
            ));
        }
        // The Go suite compares the namespace even when a case leaves it empty; the few
        // cases that do (timeouts) would fail against any real backend, so only given
        // namespaces are compared.
        if let Some(want_ns) = case
            .namespace
            .as_deref()
            .filter(|ns| echo["namespace"] != *ns)
        {
            return Err(format!(
                "expected namespace to be {want_ns}, got {}",
                echo["namespace"]
            ));
        }
        let want_headers = if default_request {
            (!case.headers.is_empty()).then(|| case.headers.clone())
        } else {
            exp.headers.clone()
        };
        for (name, want) in want_headers.iter().flatten() {
            match header_values(&echo["headers"], name) {
                None => {
                    return Err(format!(
                        "expected {name} header to be set, actual headers: {}",
                        echo["headers"]
                    ))
                }
                Some(got) if got != *want => {
                    return Err(format!(
                        "expected {name} header to be set to {want}, got {got}"
                    ))
                }
                Some(_) => {}
            }
        }
        for (name, want) in &case.response_headers {
            match response_header(reply, name) {
                None => return Err(format!("expected response header {name} to be set")),
                Some(got) if got != *want => {
                    return Err(format!(
                        "expected response header {name} to be {want}, got {got}"
                    ))
                }
                Some(_) => {}
            }
        }
        for name in &case.absent_response_headers {
            if let Some(v) = response_header(reply, name) {
                return Err(format!(
                    "expected response header {name} to not be set, got {v}"
                ));
            }
        }
        for name in &exp.absent_headers {
            if let Some(v) = header_values(&echo["headers"], name) {
                return Err(format!("expected {name} header to not be set, got {v}"));
            }
        }
        let backend = case.backend.clone().unwrap_or_default();
        let pod = echo["pod"].as_str().unwrap_or_default();
        if !pod.starts_with(&backend) {
            return Err(format!(
                "expected pod name to start with {backend}, got {pod}"
            ));
        }
    } else if matches!(want_status, 300..=399) {
        let Some(want) = &case.redirect else {
            return Ok(());
        };
        let location = response_header(reply, "location")
            .ok_or_else(|| "redirect without a Location header".to_string())?;
        let uri: http::Uri = location
            .parse()
            .map_err(|e| format!("Location {location:?} is not a URI: {e}"))?;
        let got_scheme = uri.scheme_str().unwrap_or_default().to_string();
        let got_host = uri.host().unwrap_or_default().to_string();
        let got_port = uri.port_u16().map(|p| p.to_string()).unwrap_or_default();
        let got_path = uri.path().to_string();
        let want_host = want.host.clone().unwrap_or_else(|| got_host.clone());
        if want_host != got_host {
            return Err(format!(
                "expected redirected hostname to be {want_host:?}, got {got_host:?} (Location {location})"
            ));
        }
        match want.port.as_deref() {
            None | Some("") => {
                let s = got_scheme.to_ascii_lowercase();
                if s == "http" && !(got_port == "80" || got_port.is_empty()) {
                    return Err(format!(
                        "for http scheme, expected redirected port to be 80 or not set, got {got_port:?} (Location {location})"
                    ));
                }
                if s == "https" && !(got_port == "443" || got_port.is_empty()) {
                    return Err(format!(
                        "for https scheme, expected redirected port to be 443 or not set, got {got_port:?} (Location {location})"
                    ));
                }
            }
            Some(port) if port != got_port => {
                return Err(format!(
                "expected redirected port to be {port:?}, got {got_port:?} (Location {location})"
            ))
            }
            Some(_) => {}
        }
        let want_scheme = want
            .scheme
            .clone()
            .unwrap_or_else(|| if p.https { "https" } else { "http" }.into());
        if want_scheme != got_scheme {
            return Err(format!(
                "expected redirected scheme to be {want_scheme:?}, got {got_scheme:?} (Location {location})"
            ));
        }
        let want_path = want
            .path
            .clone()
            .unwrap_or_else(|| case.path.split('?').next().unwrap_or_default().to_string());
        if want_path != got_path {
            return Err(format!(
                "expected redirected path to be {want_path:?}, got {got_path:?} (Location {location})"
            ));
        }
    }
    Ok(())
}

/// `testDistribution` of httproute-weight.go: 500 requests, ten at a time; each backend's
/// share within 5 percentage points of its weight, and only the weighted backends answer.
pub(super) async fn distribution(
    env: &Env<'_>,
    gateway: &str,
    host: Option<&str>,
    path: &str,
    weights: &BTreeMap<String, f64>,
) -> Result<(), String> {
    const TOTAL: usize = 500;
    const TOLERANCE: f64 = 0.05;
    let case = HttpCase {
        gateway: gateway.to_string(),
        host: host.map(str::to_string),
        path: path.to_string(),
        ..HttpCase::default()
    };
    // The suite first waits for the route to answer consistently.
    consistent(env, &case).await?;
    let p = prepare(env, &case).await?;
    let mut last = String::new();
    for _attempt in 0..10 {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut error = None;
        for _batch in 0..TOTAL / 10 {
            let mut batch = Vec::new();
            for _ in 0..10 {
                batch.push(send(env, &p, path, REQUEST_TIMEOUT));
            }
            for reply in join_all(batch.into_iter().map(Box::pin).collect()).await {
                match reply {
                    Ok(r) if r.status == 200 => {
                        let pod = serde_json::from_slice::<Value>(&r.body)
                            .ok()
                            .and_then(|v| v["pod"].as_str().map(str::to_string))
                            .unwrap_or_default();
                        match weights.keys().find(|b| pod.starts_with(b.as_str())) {
                            Some(b) => *seen.entry(b.clone()).or_default() += 1,
                            None => error = Some(format!("unexpected pod {pod:?}")),
                        }
                    }
                    Ok(r) => error = Some(format!("status {}", r.status)),
                    Err(e) => error = Some(e),
                }
            }
        }
        if let Some(e) = error {
            last = e;
            continue;
        }
        let mut errs = Vec::new();
        for (backend, want) in weights {
            let got = *seen.get(backend).unwrap_or(&0) as f64 / TOTAL as f64;
            if (got - want).abs() > TOLERANCE {
                errs.push(format!("{backend}: {got:.3} not within {want}±{TOLERANCE}"));
            }
        }
        if errs.is_empty() {
            return Ok(());
        }
        last = errs.join("; ");
    }
    Err(format!("weighted distribution failed 10 times: {last}"))
}

/// A minimal `join_all`: polls every future on each wake.
pub(super) async fn join_all<T, F: std::future::Future<Output = T> + Unpin>(
    mut futs: Vec<F>,
) -> Vec<T> {
    use std::task::Poll;
    let mut results: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if results[i].is_some() {
                continue;
            }
            match std::pin::Pin::new(f).poll(cx) {
                Poll::Ready(v) => results[i] = Some(v),
                Poll::Pending => pending = true,
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(results.iter_mut().filter_map(Option::take).collect())
        }
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code
mod tests {
    use super::*;

    fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        Reply {
            status: http::StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: body.to_string().into(),
            alpn: None,
        }
    }

    fn prepared() -> Prepared {
        Prepared {
            addr: "127.0.0.1:1".parse().unwrap(),
            https: false,
            h2c: false,
            server_name: String::new(),
            host: "127.0.0.1".into(),
            method: "GET".into(),
            headers: Vec::new(),
            body: Vec::new(),
            client_cert: None,
        }
    }

    #[test]
    fn default_host_drops_the_scheme_port() {
        let ip: IpAddr = "127.0.0.10".parse().unwrap();
        assert_eq!(default_host(ip, 80, false), "127.0.0.10");
        assert_eq!(default_host(ip, 443, true), "127.0.0.10");
        assert_eq!(default_host(ip, 8080, false), "127.0.0.10:8080");
    }

    #[test]
    fn backend_prefix_namespace_and_headers_are_compared() {
        let case = HttpCase {
            path: "/".into(),
            backend: Some("infra-backend-v1".into()),
            namespace: Some("ns".into()),
            headers: [("Version".to_string(), "one".to_string())].into(),
            ..HttpCase::default()
        };
        let good = r#"{"path":"/","host":"127.0.0.1","method":"GET","namespace":"ns","pod":"infra-backend-v1-abc-x","headers":{"Version":["one"]}}"#;
        assert_eq!(compare(&case, &prepared(), &reply(200, &[], good)), Ok(()));
        let other_pod = good.replace("infra-backend-v1", "infra-backend-v2");
        assert!(compare(&case, &prepared(), &reply(200, &[], &other_pod)).is_err());
        let no_header = good.replace(r#""Version":["one"]"#, "");
        assert!(compare(&case, &prepared(), &reply(200, &[], &no_header)).is_err());
        assert!(compare(&case, &prepared(), &reply(404, &[], "")).is_err());
    }

    #[test]
    fn redirect_defaults_follow_the_suite() {
        let case = HttpCase {
            path: "/port".into(),
            status: Some(302),
            redirect: Some(crate::spec::Redirect {
                port: Some("8083".into()),
                ..Default::default()
            }),
            ..HttpCase::default()
        };
        let ok = reply(302, &[("location", "http://127.0.0.1:8083/port")], "");
        assert_eq!(compare(&case, &prepared(), &ok), Ok(()));
        let wrong = reply(302, &[("location", "http://127.0.0.1:8080/port")], "");
        assert!(compare(&case, &prepared(), &wrong).is_err());
        // No expected port: http may only redirect to 80 or no port.
        let case = HttpCase {
            redirect: Some(crate::spec::Redirect {
                scheme: Some("http".into()),
                ..Default::default()
            }),
            ..case
        };
        let implicit = reply(302, &[("location", "http://127.0.0.1/port")], "");
        assert_eq!(compare(&case, &prepared(), &implicit), Ok(()));
        assert!(compare(&case, &prepared(), &wrong).is_err());
    }
}
