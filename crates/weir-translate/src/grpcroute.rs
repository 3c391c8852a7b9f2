//! GRPCRoute → route entry templates, served like HTTPRoutes: a gRPC call is an HTTP/2 POST
//! to `/<package.Service>/<Method>`, so a method match compiles to a path match (exact for
//! service and method, an anchored regular expression otherwise) and header matches compile
//! as for HTTPRoutes. Attachment (parentRefs, allowedRoutes, hostnames) is shared with
//! HTTPRoute ([`crate::route::attach_parents`]).
//!
//! Precedence (GRPCRouteRule.matches): "Precedence MUST be given to the rule with the largest
//! number of: characters in a matching non-wildcard hostname; characters in a matching
//! hostname; characters in a matching service; characters in a matching method; header
//! matches. If ties still exist across multiple Routes, matching precedence MUST be determined
//! in order of the following criteria, continuing on ties: the oldest Route based on creation
//! timestamp; the Route appearing first in alphabetical order by "{namespace}/{name}". If ties
//! still exist within the Route that has been given precedence, matching precedence MUST be
//! granted to the first matching rule meeting the above criteria."
//! In [`RouteRank`] terms: every gRPC entry has the same path kind, `path_len` is
//! (service characters, method characters) packed so that more service characters always win
//! and method characters break ties ([`grpc_path_len`]), and `headers` counts header matches.
//! gRPC and HTTP entries never compete for one host: a listener accepts only one of an
//! HTTPRoute and a GRPCRoute whose hostnames intersect (see [`crate::route`]).
//!
//! Backends always speak HTTP/2 with prior knowledge (h2c): gRPC has no HTTP/1.1 form, so a
//! Service port without `appProtocol: kubernetes.io/h2c` is still spoken to over h2c.

use std::sync::Arc;

use http::HeaderName;
use weir_snapshot::{
    AppProtocol, Backend, BackendTarget, HeaderMatch, PathMatch, RequestMatch, RouteAction,
    RouteRank, RouteRef, StringMatch, Timeouts, Upstream,
};
use weir_store::gw::grpcroutes::{
    GrpcRouteRules, GrpcRouteRulesMatches, GrpcRouteRulesMatchesHeadersType as HeaderType,
    GrpcRouteRulesMatchesMethod, GrpcRouteRulesMatchesMethodType as MethodType,
    GrpcRouteUseDefaultGateways,
};
use weir_store::gw::httproutes::HttpRouteRulesFilters;
use weir_store::{GrpcRoute, ObjectKey, Store};

use crate::backend::{BackendRefSpec, Upstreams};
use crate::compile::{CompiledRoute, EntryTemplate};
use crate::error::TranslateError;
use crate::filter;
use crate::meta::created;
use crate::model::ParentRefSpec;
use crate::pattern;

pub const KIND: &str = "GRPCRoute";

/// Longest service or method name the API allows (maxLength 1024), so that packing
/// (service, method) characters into one number keeps service characters first.
const NAME_LIMIT: usize = 1024;

/// The parentRefs of a GRPCRoute, in the shape attachment takes.
pub fn parent_refs(route: &GrpcRoute) -> Vec<ParentRefSpec<'_>> {
    route
        .spec
        .parent_refs
        .iter()
        .flatten()
        .map(ParentRefSpec::from)
        .collect()
}

/// Compile one GRPCRoute independently of the listeners it attaches to.
pub fn compile_route(
    store: &Store,
    route: &GrpcRoute,
    upstreams: &mut Upstreams,
    regexes: &mut pattern::Budget,
) -> CompiledRoute {
    let key = ObjectKey::of(&route.metadata);
    let label: Arc<str> = key.to_string().into();
    let created = created(&route.metadata);
    let version = crate::meta::version(KIND, &key, &route.metadata, &route.spec);
    let hostnames = route
        .spec
        .hostnames
        .iter()
        .flatten()
        .filter_map(|h| weir_snapshot::HostPattern::parse(h))
        .collect();
    let mut out = CompiledRoute {
        key: key.clone(),
        hostnames,
        invalid: None,
        unresolved: None,
        invalid_rules: Vec::new(),
        rule_count: 0,
        entries: Vec::new(),
    };
    let default_rules = [GrpcRouteRules::default()];
    let rules = match route.spec.rules.as_deref() {
        Some(r) if !r.is_empty() => r,
        _ => &default_rules[..],
    };
    out.rule_count = rules.len();
    if let Some(GrpcRouteUseDefaultGateways::All) = route.spec.use_default_gateways {
        out.invalid = Some(TranslateError::UnsupportedRouteField {
            field: "useDefaultGateways",
            value: "All".into(),
        });
        return out;
    }
    // A route not served gives back what its regular expressions were charged.
    let mark = regexes.mark();
    for (rule_index, rule) in rules.iter().enumerate() {
        let ctx = RuleCtx {
            store,
            key: &key,
            label: &label,
            version,
            created,
            rule_index,
        };
        if let Err(e) = compile_rule(&ctx, rule, upstreams, regexes, &mut out) {
            out.invalid = Some(e);
            out.entries.clear();
            regexes.reset(mark);
            return out;
        }
    }
    if out.invalid_rules.len() == out.rule_count {
        out.invalid = out.invalid_rules.first().cloned();
        out.entries.clear();
        regexes.reset(mark);
    }
    out
}

struct RuleCtx<'a> {
    store: &'a Store,
    key: &'a ObjectKey,
    label: &'a Arc<str>,
    version: u64,
    created: (i64, u32),
    rule_index: usize,
}

fn compile_rule(
    ctx: &RuleCtx<'_>,
    rule: &GrpcRouteRules,
    upstreams: &mut Upstreams,
    regexes: &mut pattern::Budget,
    out: &mut CompiledRoute,
) -> Result<(), TranslateError> {
    let route_ref = RouteRef {
        kind: KIND,
        route: ctx.label.clone(),
        rule: ctx.rule_index,
        rule_name: rule.name.as_deref().map(Arc::from),
        version: ctx.version,
    };
    let default_match = [GrpcRouteRulesMatches::default()];
    let matches = match rule.matches.as_deref() {
        Some(m) if !m.is_empty() => m,
        _ => &default_match[..],
    };
    // The action is the same for every match of the rule.
    let session = rule
        .session_persistence
        .as_ref()
        .map(|s| crate::session::Spec::grpc(s).compile(ctx.label, ctx.rule_index))
        .transpose()?;
    let policy = crate::rule_policy::rule_policy(
        ctx.label,
        ctx.rule_index,
        None,
        session.map(crate::session::Compiled::whole),
    );
    let compiled = compile_action(ctx, rule, upstreams, out);
    let action = match compiled {
        Ok((filters, backends)) => RouteAction {
            route: route_ref,
            total_weight: backends.iter().map(|b| u64::from(b.weight)).sum(),
            filters: filters.into(),
            backends: backends.into(),
            timeouts: Timeouts::default(),
            policy,
            ext_auth: None,
            security: None,
            ext_proc: None,
        },
        Err(e @ TranslateError::UnsupportedFilter { .. }) => {
            out.invalid_rules.push(e);
            RouteAction {
                route: route_ref,
                filters: Arc::new([]),
                backends: Arc::new([]),
                total_weight: 0,
                timeouts: Timeouts::default(),
                policy: None,
                ext_auth: None,
                security: None,
                ext_proc: None,
            }
        }
        Err(e) => return Err(e),
    };
    let action = Arc::new(action);
    for (match_index, m) in matches.iter().enumerate() {
        let (matcher, service_len, method_len) = compile_match(m, ctx.rule_index, regexes)?;
        let rank = RouteRank {
            hostname: (0, 0),
            path_kind: 0,
            path_len: grpc_path_len(service_len, method_len),
            has_method: false,
            headers: matcher.headers.len(),
            query_params: 0,
            created: ctx.created,
            route: ctx.label.clone(),
            rule: ctx.rule_index,
            match_index,
        };
        out.entries.push(EntryTemplate {
            rank,
            matcher,
            action: action.clone(),
        });
    }
    Ok(())
}

/// (service characters, method characters) as one "path length" for [`RouteRank`]: larger
/// wins, service characters first.
pub fn grpc_path_len(service_len: usize, method_len: usize) -> usize {
    service_len.min(NAME_LIMIT) * (NAME_LIMIT + 1) + method_len.min(NAME_LIMIT)
}

type Action = (Vec<weir_snapshot::Filter>, Vec<Backend>);

/// GRPCRoute filters have the JSON shape of HTTPRoute filters of the same type (a subset of
/// them), so they convert and compile with the HTTPRoute filter compiler.
fn as_http_filter<T: serde::Serialize>(
    f: &T,
    rule: usize,
) -> Result<HttpRouteRulesFilters, TranslateError> {
    serde_json::to_value(f)
        .and_then(serde_json::from_value)
        .map_err(|e| TranslateError::InvalidFilter {
            rule,
            detail: e.to_string(),
        })
}

fn compile_action(
    ctx: &RuleCtx<'_>,
    rule: &GrpcRouteRules,
    upstreams: &mut Upstreams,
    out: &mut CompiledRoute,
) -> Result<Action, TranslateError> {
    let ri = ctx.rule_index;
    let rule_filters = rule
        .filters
        .iter()
        .flatten()
        .map(|f| as_http_filter(f, ri))
        .collect::<Result<Vec<_>, _>>()?;
    let filters = filter::compile(&rule_filters, ri, None, None)?;
    let mut backends = Vec::new();
    for b in rule.backend_refs.iter().flatten() {
        let bf = b
            .filters
            .iter()
            .flatten()
            .map(|f| as_http_filter(f, ri))
            .collect::<Result<Vec<_>, _>>()?;
        let backend_filters = filter::compile(&bf, ri, None, None)?;
        let spec = BackendRefSpec {
            group: b.group.as_deref(),
            kind: b.kind.as_deref(),
            name: &b.name,
            namespace: b.namespace.as_deref(),
            port: b.port,
        };
        let target = match upstreams.resolve(ctx.store, KIND, &ctx.key.namespace, &spec) {
            Ok(u) => BackendTarget::Upstream(over_h2c(u)),
            Err(e) => {
                let why: Arc<str> = e.to_string().into();
                out.unresolved.get_or_insert(e);
                BackendTarget::Invalid(why)
            }
        };
        backends.push(Backend {
            weight: u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0),
            target,
            filters: backend_filters.into(),
        });
    }
    Ok((filters, backends))
}

/// The upstream as gRPC needs it: HTTP/2 with prior knowledge.
fn over_h2c(u: Arc<Upstream>) -> Arc<Upstream> {
    if u.protocol == AppProtocol::H2c {
        return u;
    }
    Arc::new(
        Upstream::new(u.name.clone(), AppProtocol::H2c, u.endpoints.to_vec())
            .with_zones(u.zones.to_vec())
            // A BackendTLSPolicy's TLS (h2 by ALPN): never cleartext instead.
            .with_tls(u.tls.clone()),
    )
}

/// The matcher and the (service, method) characters it ranks by.
fn compile_match(
    m: &GrpcRouteRulesMatches,
    rule: usize,
    regexes: &mut pattern::Budget,
) -> Result<(RequestMatch, usize, usize), TranslateError> {
    let invalid = |detail: String| TranslateError::InvalidMatch { rule, detail };
    let (path, service_len, method_len) = match &m.method {
        None => (PathMatch::Prefix("/".into()), 0, 0),
        Some(method) => method_path(method, regexes).map_err(invalid)?,
    };
    let mut headers: Vec<HeaderMatch> = Vec::new();
    for h in m.headers.iter().flatten() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| invalid(format!("{:?} is not a valid header name", h.name)))?;
        if headers.iter().any(|x| x.name == name) {
            continue; // Only the first entry for a name counts (GRPCHeaderMatch).
        }
        let value = match h.r#type.as_ref().unwrap_or(&HeaderType::Exact) {
            HeaderType::Exact => StringMatch::Exact(h.value.as_str().into()),
            HeaderType::RegularExpression => {
                StringMatch::Regex(regexes.anchored(&h.value).map_err(invalid)?)
            }
        };
        headers.push(HeaderMatch { name, value });
    }
    Ok((
        RequestMatch {
            path,
            method: None,
            headers: headers.into(),
            query_params: Arc::new([]),
        },
        service_len,
        method_len,
    ))
}

/// GRPCMethodMatch → a path match on `/<service>/<method>`. An omitted or empty service or
/// method matches any ("If left empty or omitted, will match all services" / "any method").
/// Exact values must be valid gRPC names (the CRD's validation rules); regular expressions
/// must compile. At least one of service and method must be given.
fn method_path(
    m: &GrpcRouteRulesMatchesMethod,
    regexes: &mut pattern::Budget,
) -> Result<(PathMatch, usize, usize), String> {
    let service = m.service.as_deref().filter(|s| !s.is_empty());
    let method = m.method.as_deref().filter(|s| !s.is_empty());
    if service.is_none() && method.is_none() {
        return Err("a method match needs a service or a method".into());
    }
    let service_len = service.map_or(0, str::len);
    let method_len = method.map_or(0, str::len);
    let any = "[^/]+";
    let path = match m.r#type.as_ref().unwrap_or(&MethodType::Exact) {
        MethodType::Exact => {
            if let Some(s) = service {
                if !valid_service(s) {
                    return Err(format!("service {s:?} is not a valid gRPC service name"));
                }
            }
            if let Some(x) = method {
                if !valid_method(x) {
                    return Err(format!("method {x:?} is not a valid gRPC method name"));
                }
            }
            match (service, method) {
                (Some(s), Some(x)) => PathMatch::Exact(format!("/{s}/{x}").into()),
                (Some(s), None) => {
                    PathMatch::Regex(regexes.anchored(&format!("/{}/{any}", regex::escape(s)))?)
                }
                (None, Some(x)) => {
                    PathMatch::Regex(regexes.anchored(&format!("/{any}/{}", regex::escape(x)))?)
                }
                (None, None) => PathMatch::Prefix("/".into()),
            }
        }
        MethodType::RegularExpression => {
            let part = |re: Option<&str>| -> Result<String, String> {
                match re {
                    None => Ok(any.to_string()),
                    Some(re) => {
                        // Each part must be a valid expression on its own.
                        pattern::check(re)?;
                        Ok(format!("(?:{re})"))
                    }
                }
            };
            let path = format!("/{}/{}", part(service)?, part(method)?);
            PathMatch::Regex(regexes.anchored(&path)?)
        }
    };
    Ok((path, service_len, method_len))
}

/// `^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$`
fn valid_service(s: &str) -> bool {
    let s = s.strip_prefix('.').unwrap_or(s);
    !s.is_empty() && s.split('.').all(valid_ident)
}

/// `^[A-Za-z_][A-Za-z_0-9]*$`
fn valid_method(s: &str) -> bool {
    valid_ident(s)
}

fn valid_ident(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
