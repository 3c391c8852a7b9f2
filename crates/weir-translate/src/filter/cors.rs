//! `CORS` filter → snapshot [`Cors`]: origins parsed, header values joined once.

use http::HeaderValue;
use weir_snapshot::{Cors, CorsList, OriginPattern};
use weir_store::gw::httproutes::HttpRouteRulesFiltersCors;

/// Compile a CORS filter; the error says which value is unusable.
pub fn compile(c: &HttpRouteRulesFiltersCors) -> Result<Cors, String> {
    let allow_origins = c
        .allow_origins
        .iter()
        .flatten()
        .map(|o| {
            OriginPattern::parse(o).ok_or_else(|| {
                format!("CORS allowOrigins {o:?} is not \"*\" or http(s)://host[:port]")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let max_age = c
        .max_age
        .map(|s| {
            u32::try_from(s)
                .map(HeaderValue::from)
                .map_err(|_| format!("CORS maxAge {s} is negative"))
        })
        .transpose()?;
    Ok(Cors {
        allow_origins: allow_origins.into(),
        allow_methods: list("allowMethods", c.allow_methods.as_deref())?,
        allow_headers: list("allowHeaders", c.allow_headers.as_deref())?,
        expose_headers: list("exposeHeaders", c.expose_headers.as_deref())?,
        max_age,
        allow_credentials: c.allow_credentials.unwrap_or(false),
    })
}

pub(crate) fn list(field: &str, values: Option<&[String]>) -> Result<CorsList, String> {
    let values = values.unwrap_or(&[]);
    if values.is_empty() {
        return Ok(CorsList::Unset);
    }
    if values.iter().any(|v| v == "*") {
        if values.len() > 1 {
            return Err(format!(
                "CORS {field} cannot contain '*' alongside other values"
            ));
        }
        return Ok(CorsList::Any);
    }
    HeaderValue::from_str(&values.join(", "))
        .map(CorsList::List)
        .map_err(|_| format!("CORS {field} {values:?} is not a valid header value"))
}
