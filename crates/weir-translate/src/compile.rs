//! One HTTPRoute → route entry templates: every (rule, match) compiled to a matcher, a
//! precedence rank (without the hostname part, which depends on the listener) and an action.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method};
use weir_snapshot::{
    Backend, BackendTarget, HeaderMatch, HostPattern, MethodMatch, PathMatch, QueryMatch,
    RequestMatch, RouteAction, RouteEntry, RouteRank, RouteRef, StringMatch, Timeouts,
};
use weir_store::gw::httproutes::{
    HttpRouteRules, HttpRouteRulesFilters, HttpRouteRulesFiltersType as FilterType,
    HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType as HeaderType,
    HttpRouteRulesMatchesMethod as M, HttpRouteRulesMatchesPathType as PathType,
    HttpRouteRulesMatchesQueryParamsType as QueryType, HttpRouteUseDefaultGateways,
};
use weir_store::{HttpRoute, ObjectKey, Store};

use crate::backend::{BackendRefSpec, Upstreams};
use crate::error::TranslateError;
use crate::filter;
use crate::meta::created;
use crate::pattern;

/// A route compiled independently of the listeners it attaches to.
pub struct CompiledRoute {
    pub key: ObjectKey,
    /// Route hostnames (parsed); empty means "any".
    pub hostnames: Vec<HostPattern>,
    /// The route cannot be served (what the API server's validation would have rejected).
    pub invalid: Option<TranslateError>,
    /// The first backendRef that did not resolve (ResolvedRefs=False).
    pub unresolved: Option<TranslateError>,
    /// Rules answering 500 because of unsupported filters, with why.
    pub invalid_rules: Vec<TranslateError>,
    pub rule_count: usize,
    pub entries: Vec<EntryTemplate>,
}

/// A (rule, match) entry before it is placed on a listener host.
pub struct EntryTemplate {
    pub rank: RouteRank,
    pub matcher: RequestMatch,
    pub action: Arc<RouteAction>,
}

impl EntryTemplate {
    /// The entry as served under one effective host pattern.
    pub fn place(&self, host: Option<&HostPattern>) -> RouteEntry {
        let mut rank = self.rank.clone();
        rank.hostname = host.map(HostPattern::specificity).unwrap_or((0, 0));
        RouteEntry {
            rank,
            matcher: self.matcher.clone(),
            action: self.action.clone(),
        }
    }
}

/// Whether compiling `route` compiles regular expressions (charged to the translation's
/// [`pattern::Budget`], so its outcome depends on the routes before it: never replayed).
pub fn uses_regex(route: &HttpRoute) -> bool {
    let matches = || {
        route
            .spec
            .rules
            .iter()
            .flatten()
            .flat_map(|r| r.matches.iter().flatten())
    };
    matches().any(|m| {
        m.path.as_ref().and_then(|p| p.r#type.as_ref()) == Some(&PathType::RegularExpression)
            || m.headers
                .iter()
                .flatten()
                .any(|h| h.r#type.as_ref() == Some(&HeaderType::RegularExpression))
            || m.query_params
                .iter()
                .flatten()
                .any(|q| q.r#type.as_ref() == Some(&QueryType::RegularExpression))
    })
}

pub fn compile_route(
    store: &Store,
    route: &HttpRoute,
    upstreams: &mut Upstreams,
    regexes: &mut pattern::Budget,
) -> CompiledRoute {
    let key = ObjectKey::of(&route.metadata);
    let label: Arc<str> = key.to_string().into();
    let created = created(&route.metadata);
    let version = crate::meta::version("HTTPRoute", &key, &route.metadata, &route.spec);
    let hostnames = route
        .spec
        .hostnames
        .iter()
        .flatten()
        .filter_map(|h| HostPattern::parse(h))
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
    let default_rules = [HttpRouteRules::default()];
    let rules = match route.spec.rules.as_deref() {
        Some(r) if !r.is_empty() => r,
        _ => &default_rules[..],
    };
    out.rule_count = rules.len();
    if let Some(HttpRouteUseDefaultGateways::All) = route.spec.use_default_gateways {
        out.invalid = Some(TranslateError::UnsupportedRouteField {
            field: "useDefaultGateways",
            value: "All".into(),
        });
        return out;
    }
    // A route not served gives back what its regular expressions were charged.
    let mark = regexes.mark();
    for (rule_index, rule) in rules.iter().enumerate() {
        if let Err(e) = compile_rule(
            store, &key, &label, version, created, rule_index, rule, upstreams, regexes, &mut out,
        ) {
            out.invalid = Some(e);
            out.entries.clear();
            regexes.reset(mark);
            return out;
        }
    }
    // Every rule unusable: the whole route is invalid (HTTPRouteRule.filters).
    if out.invalid_rules.len() == out.rule_count {
        out.invalid = out.invalid_rules.first().cloned();
        out.entries.clear();
        regexes.reset(mark);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn compile_rule(
    store: &Store,
    key: &ObjectKey,
    label: &Arc<str>,
    version: u64,
    created: (i64, u32),
    rule_index: usize,
    rule: &HttpRouteRules,
    upstreams: &mut Upstreams,
    regexes: &mut pattern::Budget,
    out: &mut CompiledRoute,
) -> Result<(), TranslateError> {
    let route_ref = RouteRef {
        kind: "HTTPRoute",
        route: label.clone(),
        rule: rule_index,
        rule_name: rule.name.as_deref().map(Arc::from),
        version,
    };
    let timeouts = timeouts(rule, rule_index)?;
    let retry = crate::rule_policy::retry(rule_index, rule.retry.as_ref())?;
    let session = rule
        .session_persistence
        .as_ref()
        .map(|s| crate::session::Spec::http(s).compile(label, rule_index))
        .transpose()?;
    let default_match = [HttpRouteRulesMatches::default()];
    let matches = match rule.matches.as_deref() {
        Some(m) if !m.is_empty() => m,
        _ => &default_match[..],
    };
    let mut rule_unsupported = None;
    for (match_index, m) in matches.iter().enumerate() {
        let (matcher, matched_prefix) = compile_match(m, rule_index, regexes)?;
        let rank = RouteRank {
            hostname: (0, 0),
            path_kind: matcher.path.rank_kind(),
            path_len: matcher.path.len(),
            has_method: matcher.method.is_some(),
            headers: matcher.headers.len(),
            query_params: matcher.query_params.len(),
            created,
            route: label.clone(),
            rule: rule_index,
            match_index,
        };
        let policy = crate::rule_policy::rule_policy(
            label,
            rule_index,
            retry.clone(),
            session.as_ref().map(|s| s.for_match(m)),
        );
        let compiled = compile_action(
            store,
            key,
            rule,
            rule_index,
            matched_prefix.as_deref(),
            upstreams,
            out,
        );
        let action = match compiled {
            Ok((filters, backends, ext_auth)) => {
                let total_weight = backends.iter().map(|b| u64::from(b.weight)).sum();
                RouteAction {
                    route: route_ref.clone(),
                    filters: filters.into(),
                    backends: backends.into(),
                    total_weight,
                    timeouts,
                    policy,
                    ext_auth,
                    security: None,
                    ext_proc: None,
                }
            }
            Err(e @ TranslateError::UnsupportedFilter { .. }) => {
                rule_unsupported.get_or_insert(e);
                RouteAction {
                    route: route_ref.clone(),
                    filters: Arc::new([]),
                    backends: Arc::new([]),
                    total_weight: 0,
                    timeouts,
                    policy: None,
                    ext_auth: None,
                    security: None,
                    ext_proc: None,
                }
            }
            Err(e) => return Err(e),
        };
        out.entries.push(EntryTemplate {
            rank,
            matcher,
            action: Arc::new(action),
        });
    }
    if let Some(e) = rule_unsupported {
        out.invalid_rules.push(e);
    }
    Ok(())
}

type Action = (
    Vec<weir_snapshot::Filter>,
    Vec<Backend>,
    Option<Arc<weir_snapshot::ExtAuth>>,
);

fn compile_action(
    store: &Store,
    key: &ObjectKey,
    rule: &HttpRouteRules,
    rule_index: usize,
    matched_prefix: Option<&str>,
    upstreams: &mut Upstreams,
    out: &mut CompiledRoute,
) -> Result<Action, TranslateError> {
    // RequestMirror backendRefs resolve like the rule's: an unresolved one is the route's
    // ResolvedRefs=False (first error wins) and mirrors nothing.
    let mut mirror = |spec: &BackendRefSpec<'_>| match upstreams.resolve(
        store,
        "HTTPRoute",
        &key.namespace,
        spec,
    ) {
        Ok(u) => Some(u),
        Err(e) => {
            out.unresolved.get_or_insert(e);
            None
        }
    };
    // The ExternalAuth filter becomes the action's `ext_auth` (checked in phase 3, after
    // the rule's other request filters), not a step of the filter list.
    let rule_filters = rule.filters.as_deref().unwrap_or(&[]);
    let mut ext_auth = None;
    let others: Vec<HttpRouteRulesFilters>;
    let rule_filters = if rule_filters
        .iter()
        .any(|f| f.r#type == FilterType::ExternalAuth)
    {
        let mut auths = rule_filters
            .iter()
            .filter(|f| f.r#type == FilterType::ExternalAuth);
        let (Some(f), None) = (auths.next(), auths.next()) else {
            return Err(TranslateError::UnsupportedFilter {
                rule: rule_index,
                filter: "ExternalAuth (more than one in a rule)".into(),
            });
        };
        let invalid = |detail: String| TranslateError::InvalidFilter {
            rule: rule_index,
            detail,
        };
        let spec = f
            .external_auth
            .as_ref()
            .ok_or_else(|| invalid("ExternalAuth without externalAuth".into()))?;
        let config = crate::ext_auth::ExtAuthConfig::from_filter(spec);
        let service = match mirror_target(&mut mirror, &crate::ext_auth::filter_backend_ref(spec)) {
            Ok(u) => BackendTarget::Upstream(u),
            Err(why) => BackendTarget::Invalid(why),
        };
        let compiled = crate::ext_auth::compile_ext_auth(&config, service)
            .map_err(|e| invalid(format!("ExternalAuth: {e}")))?;
        ext_auth = Some(Arc::new(compiled));
        others = rule_filters
            .iter()
            .filter(|f| f.r#type != FilterType::ExternalAuth)
            .cloned()
            .collect();
        &others[..]
    } else {
        rule_filters
    };
    let filters = filter::compile(rule_filters, rule_index, matched_prefix, Some(&mut mirror))?;
    let mut backend_filter_lists = Vec::new();
    for b in rule.backend_refs.iter().flatten() {
        let bf = b
            .filters
            .iter()
            .flatten()
            .map(|f| filter::from_backend_filter(f, rule_index))
            .collect::<Result<Vec<_>, _>>()?;
        backend_filter_lists.push(filter::compile(
            &bf,
            rule_index,
            matched_prefix,
            Some(&mut mirror),
        )?);
    }
    let mut backends = Vec::new();
    for (b, backend_filters) in rule.backend_refs.iter().flatten().zip(backend_filter_lists) {
        let spec = BackendRefSpec {
            group: b.group.as_deref(),
            kind: b.kind.as_deref(),
            name: &b.name,
            namespace: b.namespace.as_deref(),
            port: b.port,
        };
        let target = match upstreams.resolve(store, "HTTPRoute", &key.namespace, &spec) {
            Ok(u) => {
                // An InferencePool whose picker does not resolve: the route's ResolvedRefs
                // is False (BackendNotFound); the backend stays, and answers 500.
                if let Some(pool) = &u.inference {
                    if let weir_snapshot::PickerState::Unresolved(why) = &pool.picker {
                        out.unresolved
                            .get_or_insert(TranslateError::InferencePickerNotFound {
                                pool: pool.key(),
                                detail: why.to_string(),
                            });
                    }
                }
                BackendTarget::Upstream(u)
            }
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
    Ok((filters, backends, ext_auth))
}

/// Resolve a backendRef with the rule's resolver (which records an unresolved one as the
/// route's ResolvedRefs=False): the upstream, or why not.
fn mirror_target(
    resolve: &mut filter::MirrorResolver<'_>,
    spec: &BackendRefSpec<'_>,
) -> Result<Arc<weir_snapshot::Upstream>, Arc<str>> {
    resolve(spec).ok_or_else(|| {
        Arc::from(format!(
            "ExternalAuth backendRef {}/{} does not resolve",
            spec.namespace.unwrap_or("(route namespace)"),
            spec.name
        ))
    })
}

/// The matcher, and the prefix ReplacePrefixMatch filters replace (`None` for regex paths).
fn compile_match(
    m: &HttpRouteRulesMatches,
    rule: usize,
    regexes: &mut pattern::Budget,
) -> Result<(RequestMatch, Option<String>), TranslateError> {
    let invalid = |detail: String| TranslateError::InvalidMatch { rule, detail };
    let kind = m
        .path
        .as_ref()
        .and_then(|p| p.r#type.clone())
        .unwrap_or(PathType::PathPrefix);
    let value = m
        .path
        .as_ref()
        .and_then(|p| p.value.clone())
        .unwrap_or_else(|| "/".into());
    let (path, prefix) = match kind {
        PathType::Exact | PathType::PathPrefix if !value.starts_with('/') => {
            return Err(invalid(format!("path {value:?} must start with '/'")));
        }
        PathType::Exact => {
            let value = normalized_path(value);
            (PathMatch::Exact(value.as_str().into()), Some(value))
        }
        PathType::PathPrefix => {
            let value = normalized_path(value);
            (PathMatch::prefix(&value), Some(value))
        }
        PathType::RegularExpression => (
            PathMatch::Regex(regexes.anchored(&value).map_err(invalid)?),
            None,
        ),
    };
    let mut headers: Vec<HeaderMatch> = Vec::new();
    for h in m.headers.iter().flatten() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| invalid(format!("{:?} is not a valid header name", h.name)))?;
        if headers.iter().any(|x| x.name == name) {
            continue; // Only the first entry for a name counts (HTTPHeaderMatch).
        }
        let value = match h.r#type.as_ref().unwrap_or(&HeaderType::Exact) {
            HeaderType::Exact => StringMatch::Exact(h.value.as_str().into()),
            HeaderType::RegularExpression => {
                StringMatch::Regex(regexes.anchored(&h.value).map_err(invalid)?)
            }
        };
        headers.push(HeaderMatch { name, value });
    }
    let mut query_params: Vec<QueryMatch> = Vec::new();
    for q in m.query_params.iter().flatten() {
        if q.name.is_empty() {
            return Err(invalid("query parameter name is empty".into()));
        }
        if query_params.iter().any(|x| *x.name == *q.name) {
            continue;
        }
        let value = match q.r#type.as_ref().unwrap_or(&QueryType::Exact) {
            QueryType::Exact => StringMatch::Exact(q.value.as_str().into()),
            QueryType::RegularExpression => {
                StringMatch::Regex(regexes.anchored(&q.value).map_err(invalid)?)
            }
        };
        query_params.push(QueryMatch {
            name: q.name.as_str().into(),
            value,
        });
    }
    let method = m.method.as_ref().map(|m| {
        MethodMatch(match m {
            M::Get => Method::GET,
            M::Head => Method::HEAD,
            M::Post => Method::POST,
            M::Put => Method::PUT,
            M::Delete => Method::DELETE,
            M::Connect => Method::CONNECT,
            M::Options => Method::OPTIONS,
            M::Trace => Method::TRACE,
            M::Patch => Method::PATCH,
        })
    });
    Ok((
        RequestMatch {
            path,
            method,
            headers: headers.into(),
            query_params: query_params.into(),
        },
        prefix,
    ))
}

fn timeouts(rule: &HttpRouteRules, rule_index: usize) -> Result<Timeouts, TranslateError> {
    let Some(t) = &rule.timeouts else {
        return Ok(Timeouts::default());
    };
    let parse = |s: Option<&str>| -> Result<Option<Duration>, TranslateError> {
        let Some(s) = s else { return Ok(None) };
        let d: gateway_api::Duration =
            s.parse()
                .map_err(|e: String| TranslateError::InvalidTimeout {
                    rule: rule_index,
                    detail: format!("{s:?}: {e}"),
                })?;
        Ok((!d.is_zero()).then(|| Duration::new(d.as_secs(), d.subsec_nanos())))
    };
    Ok(Timeouts {
        request: parse(t.request.as_deref())?,
        backend_request: parse(t.backend_request.as_deref())?,
    })
}

/// An Exact or PathPrefix value as the proxy normalises request paths
/// (`weir_snapshot::path`): `/%61pi` is `/api`, `/a/./b` is `/a/b`, so the value matches the
/// requests that spell it. A value normalisation refuses (an encoded slash) is kept: no
/// request with one gets that far.
fn normalized_path(value: String) -> String {
    match weir_snapshot::path::normalize(&value) {
        Ok(std::borrow::Cow::Owned(normal)) => normal,
        _ => value,
    }
}
