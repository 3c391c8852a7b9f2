//! HTTPRoute filters (on rules and on backendRefs) → snapshot [`Filter`]s.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};
use weir_snapshot::{
    Filter, HeaderModifier, Mirror, MirrorSample, PathModifier, Redirect, RedirectScheme, Upstream,
    UrlRewrite,
};
use weir_store::gw::httproutes::{
    HttpRouteRulesBackendRefsFilters, HttpRouteRulesFilters, HttpRouteRulesFiltersRequestMirror,
    HttpRouteRulesFiltersRequestRedirectPathType as RedirectPathType,
    HttpRouteRulesFiltersRequestRedirectScheme as Scheme, HttpRouteRulesFiltersType as Type,
    HttpRouteRulesFiltersUrlRewritePathType as RewritePathType,
};

pub(crate) mod cors;

use crate::backend::BackendRefSpec;
use crate::error::TranslateError;

/// Resolves a RequestMirror's backendRef. `None` when it does not resolve: the resolver has
/// recorded why (the route's ResolvedRefs condition) and the mirror is left out, as
/// `HTTPRequestMirrorFilter.backendRef` asks.
pub type MirrorResolver<'a> = dyn FnMut(&BackendRefSpec<'_>) -> Option<Arc<Upstream>> + 'a;

/// Backend filters have the same shape as rule filters; convert so one function compiles both.
pub fn from_backend_filter(
    f: &HttpRouteRulesBackendRefsFilters,
    rule: usize,
) -> Result<HttpRouteRulesFilters, TranslateError> {
    serde_json::to_value(f)
        .and_then(serde_json::from_value)
        .map_err(|e| TranslateError::InvalidFilter {
            rule,
            detail: e.to_string(),
        })
}

/// Compile a request or response header modifier: the generated types differ per filter
/// kind but share the `set` / `add` / `remove` shape.
macro_rules! modifier {
    ($m:expr) => {
        header_modifier(
            $m.set
                .iter()
                .flatten()
                .map(|h| (h.name.as_str(), h.value.as_str())),
            $m.add
                .iter()
                .flatten()
                .map(|h| (h.name.as_str(), h.value.as_str())),
            $m.remove.as_deref(),
        )
    };
}

/// Compile a list of filters. `matched_prefix` is the path prefix of the match the entry is
/// compiled for (`None` when the match is a regular expression, where ReplacePrefixMatch has
/// no meaning).
/// RequestMirror backendRefs resolve with `mirrors`; without one, RequestMirror is
/// unsupported.
pub fn compile(
    filters: &[HttpRouteRulesFilters],
    rule: usize,
    matched_prefix: Option<&str>,
    mut mirrors: Option<&mut MirrorResolver<'_>>,
) -> Result<Vec<Filter>, TranslateError> {
    let invalid = |detail: String| TranslateError::InvalidFilter { rule, detail };
    let unsupported = |filter: &str| TranslateError::UnsupportedFilter {
        rule,
        filter: filter.to_string(),
    };
    let mut out = Vec::with_capacity(filters.len());
    for f in filters {
        let compiled = match f.r#type {
            Type::RequestHeaderModifier => {
                let m = f.request_header_modifier.as_ref().ok_or_else(|| {
                    invalid("RequestHeaderModifier without requestHeaderModifier".into())
                })?;
                Filter::RequestHeader(modifier!(m).map_err(invalid)?)
            }
            Type::ResponseHeaderModifier => {
                let m = f.response_header_modifier.as_ref().ok_or_else(|| {
                    invalid("ResponseHeaderModifier without responseHeaderModifier".into())
                })?;
                Filter::ResponseHeader(modifier!(m).map_err(invalid)?)
            }
            Type::RequestRedirect => {
                let r = f
                    .request_redirect
                    .as_ref()
                    .ok_or_else(|| invalid("RequestRedirect without requestRedirect".into()))?;
                let status = match r.status_code.unwrap_or(302) {
                    c @ (301 | 302 | 303 | 307 | 308) => {
                        StatusCode::from_u16(c as u16).map_err(|e| invalid(e.to_string()))?
                    }
                    other => {
                        return Err(invalid(format!(
                            "redirect statusCode {other} is not one of 301, 302, 303, 307, 308"
                        )))
                    }
                };
                let port =
                    r.port
                        .map(|p| {
                            u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                                invalid(format!("redirect port {p} is outside 1-65535"))
                            })
                        })
                        .transpose()?;
                let path = match &r.path {
                    None => None,
                    Some(p) => Some(
                        path_modifier(
                            p.r#type == RedirectPathType::ReplacePrefixMatch,
                            p.replace_full_path.as_deref(),
                            p.replace_prefix_match.as_deref(),
                            matched_prefix,
                        )
                        .map_err(invalid)?,
                    ),
                };
                Filter::Redirect(Redirect {
                    scheme: r.scheme.as_ref().map(|s| match s {
                        Scheme::Http => RedirectScheme::Http,
                        Scheme::Https => RedirectScheme::Https,
                    }),
                    hostname: r.hostname.as_deref().map(Arc::from),
                    path,
                    port,
                    status,
                })
            }
            Type::UrlRewrite => {
                let r = f
                    .url_rewrite
                    .as_ref()
                    .ok_or_else(|| invalid("URLRewrite without urlRewrite".into()))?;
                let hostname = r
                    .hostname
                    .as_deref()
                    .map(|h| {
                        HeaderValue::from_str(h).map_err(|_| {
                            invalid(format!("rewrite hostname {h:?} is not a valid Host"))
                        })
                    })
                    .transpose()?;
                let path = match &r.path {
                    None => None,
                    Some(p) => Some(
                        path_modifier(
                            p.r#type == RewritePathType::ReplacePrefixMatch,
                            p.replace_full_path.as_deref(),
                            p.replace_prefix_match.as_deref(),
                            matched_prefix,
                        )
                        .map_err(invalid)?,
                    ),
                };
                Filter::UrlRewrite(UrlRewrite { hostname, path })
            }
            Type::RequestMirror => {
                let m = f
                    .request_mirror
                    .as_ref()
                    .ok_or_else(|| invalid("RequestMirror without requestMirror".into()))?;
                let Some(resolve) = mirrors.as_deref_mut() else {
                    return Err(unsupported("RequestMirror"));
                };
                let sample = mirror_sample(m).map_err(invalid)?;
                let r = &m.backend_ref;
                let spec = BackendRefSpec {
                    group: r.group.as_deref(),
                    kind: r.kind.as_deref(),
                    name: &r.name,
                    namespace: r.namespace.as_deref(),
                    port: r.port,
                };
                match resolve(&spec) {
                    Some(upstream) => Filter::Mirror(Mirror { upstream, sample }),
                    None => continue,
                }
            }
            Type::Cors => {
                let c = f
                    .cors
                    .as_ref()
                    .ok_or_else(|| invalid("CORS without cors".into()))?;
                Filter::Cors(cors::compile(c).map_err(invalid)?)
            }
            Type::ExtensionRef => return Err(unsupported("ExtensionRef")),
            Type::ExternalAuth => return Err(unsupported("ExternalAuth")),
        };
        out.push(compiled);
    }
    let redirects = out.iter().any(|f| matches!(f, Filter::Redirect(_)));
    let rewrites = out.iter().any(|f| matches!(f, Filter::UrlRewrite(_)));
    if redirects && rewrites {
        return Err(invalid(
            "RequestRedirect and URLRewrite cannot be combined".into(),
        ));
    }
    Ok(out)
}

/// `percent` or `fraction` (denominator 100 by default); neither is every request.
fn mirror_sample(m: &HttpRouteRulesFiltersRequestMirror) -> Result<MirrorSample, String> {
    let (num, den) = match (m.percent, &m.fraction) {
        (Some(_), Some(_)) => return Err("RequestMirror sets both percent and fraction".into()),
        (Some(p), None) => (i64::from(p), 100),
        (None, Some(f)) => (
            i64::from(f.numerator),
            i64::from(f.denominator.unwrap_or(100)),
        ),
        (None, None) => return Ok(MirrorSample::all()),
    };
    u64::try_from(num)
        .ok()
        .zip(u64::try_from(den).ok())
        .and_then(|(n, d)| MirrorSample::new(n, d))
        .ok_or_else(|| {
            format!("RequestMirror fraction {num}/{den} is not between 0 and 1 (denominator > 0)")
        })
}

fn header_modifier<'a>(
    set: impl Iterator<Item = (&'a str, &'a str)>,
    add: impl Iterator<Item = (&'a str, &'a str)>,
    remove: Option<&[String]>,
) -> Result<HeaderModifier, String> {
    let pair = |(n, v): (&str, &str)| -> Result<(HeaderName, HeaderValue), String> {
        let name = HeaderName::from_bytes(n.as_bytes())
            .map_err(|_| format!("{n:?} is not a valid header name"))?;
        let value =
            HeaderValue::from_str(v).map_err(|_| format!("{v:?} is not a valid header value"))?;
        Ok((name, value))
    };
    let set = set.map(pair).collect::<Result<Vec<_>, _>>()?;
    let add = add.map(pair).collect::<Result<Vec<_>, _>>()?;
    let remove = remove
        .unwrap_or(&[])
        .iter()
        .map(|n| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| format!("{n:?} is not a valid header name"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HeaderModifier {
        set: set.into(),
        add: add.into(),
        remove: remove.into(),
    })
}

fn path_modifier(
    prefix: bool,
    full: Option<&str>,
    replacement: Option<&str>,
    matched_prefix: Option<&str>,
) -> Result<PathModifier, String> {
    if prefix {
        let replacement = replacement.ok_or("ReplacePrefixMatch without replacePrefixMatch")?;
        let matched_prefix =
            matched_prefix.ok_or("ReplacePrefixMatch needs a PathPrefix (or Exact) path match")?;
        Ok(PathModifier::ReplacePrefixMatch {
            matched_prefix: matched_prefix.into(),
            replacement: replacement.into(),
        })
    } else {
        let full = full.ok_or("ReplaceFullPath without replaceFullPath")?;
        Ok(PathModifier::ReplaceFullPath(full.into()))
    }
}
