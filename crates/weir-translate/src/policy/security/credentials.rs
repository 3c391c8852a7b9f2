//! `basicAuth` and `apiKeyAuth`: credentials read from Secrets. Error messages name the
//! Secret, the user or the client, never a hash or a key.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderName;
use weir_snapshot::{ApiKeyAuth, BasicAuth, KeySource, Redacted};
use weir_store::policies;
use weir_store::{ObjectKey, Store};

use super::{invalid, secret, secret_value};
use crate::policy::attach::NotAccepted;

/// The Secret key holding the users (as Envoy Gateway).
pub(crate) const HTPASSWD: &str = ".htpasswd";

pub(super) fn basic(
    store: &Store,
    policy: &ObjectKey,
    b: &policies::BasicAuth,
) -> Result<BasicAuth, NotAccepted> {
    let users_ref = b
        .users
        .as_ref()
        .ok_or_else(|| invalid("spec.basicAuth.users: a Secret is required"))?;
    let s = secret(store, policy, "spec.basicAuth.users", users_ref)?;
    let name = &users_ref.name;
    let raw = secret_value(s, HTPASSWD).ok_or_else(|| {
        invalid(format!(
            "spec.basicAuth.users: Secret {name} has no {HTPASSWD} key"
        ))
    })?;
    let text = String::from_utf8(raw).map_err(|_| {
        invalid(format!(
            "spec.basicAuth.users: {HTPASSWD} of Secret {name} is not UTF-8"
        ))
    })?;
    let users = parse_htpasswd(&text)
        .map_err(|e| invalid(format!("spec.basicAuth.users: Secret {name}: {e}")))?;
    Ok(BasicAuth {
        users: Redacted(users),
        forward_username_header: header(
            "spec.basicAuth.forwardUsernameHeader",
            b.forward_username_header.as_deref(),
        )?,
    })
}

/// `user:hash` lines (blank lines and `#` comments skipped); the hash must be one Weir
/// verifies: bcrypt (`$2y$`, `$2b$`, `$2a$`), `{SHA}` or `$apr1$`.
pub(crate) fn parse_htpasswd(text: &str) -> Result<HashMap<String, String>, String> {
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err(format!("line {} is not user:hash", n + 1));
        };
        if user.is_empty() {
            return Err(format!("line {}: empty user name", n + 1));
        }
        if !known_hash(hash) {
            return Err(format!(
                "user {user:?} (line {}): the hash is not bcrypt ($2y$, $2b$, $2a$), {{SHA}} \
                 or $apr1$ (htpasswd -B, -s or -m)",
                n + 1
            ));
        }
        if users.insert(user.to_string(), hash.to_string()).is_some() {
            return Err(format!("user {user:?} appears twice"));
        }
    }
    if users.is_empty() {
        return Err("no users".into());
    }
    Ok(users)
}

fn known_hash(hash: &str) -> bool {
    let bcrypt = ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) && hash.len() == 60;
    let sha = hash
        .strip_prefix("{SHA}")
        .is_some_and(|b64| b64.len() == 28);
    let apr1 = hash
        .strip_prefix("$apr1$")
        .and_then(|rest| rest.split_once('$'))
        .is_some_and(|(salt, h)| !salt.is_empty() && salt.len() <= 8 && h.len() == 22);
    bcrypt || sha || apr1
}

pub(super) fn api_key(
    store: &Store,
    policy: &ObjectKey,
    a: &policies::ApiKeyAuth,
) -> Result<ApiKeyAuth, NotAccepted> {
    let refs = a.credential_refs.as_deref().unwrap_or_default();
    if refs.is_empty() {
        return Err(invalid(
            "spec.apiKeyAuth.credentialRefs: at least one Secret is required",
        ));
    }
    let mut keys: Vec<(Vec<u8>, Arc<str>)> = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let field = format!("spec.apiKeyAuth.credentialRefs[{i}]");
        let s = secret(store, policy, &field, r)?;
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        for (client, v) in s.data.iter().flatten() {
            entries.push((client.clone(), v.0.clone()));
        }
        for (client, v) in s.string_data.iter().flatten() {
            entries.push((client.clone(), v.as_bytes().to_vec()));
        }
        for (client, key) in entries {
            if key.is_empty() {
                return Err(invalid(format!(
                    "{field}: Secret {}: client {client:?} has an empty key",
                    r.name
                )));
            }
            if keys.iter().any(|(k, _)| *k == key) {
                return Err(invalid(format!(
                    "{field}: Secret {}: client {client:?} has the key of another client",
                    r.name
                )));
            }
            keys.push((key, client.into()));
        }
    }
    if keys.is_empty() {
        return Err(invalid(
            "spec.apiKeyAuth.credentialRefs: the Secrets hold no keys",
        ));
    }
    let mut sources = Vec::new();
    for (i, e) in a.extract_from.iter().flatten().enumerate() {
        let field = format!("spec.apiKeyAuth.extractFrom[{i}]");
        for h in e.headers.iter().flatten() {
            let name = header(&format!("{field}.headers"), Some(h))?;
            sources.extend(name.map(|name| KeySource::Header {
                name,
                prefix: String::new(),
            }));
        }
        for p in e.params.iter().flatten() {
            sources.push(KeySource::Param(non_empty(&format!("{field}.params"), p)?));
        }
        for c in e.cookies.iter().flatten() {
            sources.push(KeySource::Cookie(non_empty(
                &format!("{field}.cookies"),
                c,
            )?));
        }
    }
    if sources.is_empty() {
        return Err(invalid(
            "spec.apiKeyAuth.extractFrom: name at least one header, param or cookie",
        ));
    }
    Ok(ApiKeyAuth {
        keys: Redacted(keys),
        sources,
        forward_client_id_header: header(
            "spec.apiKeyAuth.forwardClientIDHeader",
            a.forward_client_id_header.as_deref(),
        )?,
        sanitize: a.sanitize.unwrap_or(false),
    })
}

pub(super) fn non_empty(field: &str, v: &str) -> Result<String, NotAccepted> {
    if v.is_empty() {
        return Err(invalid(format!("{field}: an empty name")));
    }
    Ok(v.to_string())
}

/// An optional header name.
pub(super) fn header(field: &str, v: Option<&str>) -> Result<Option<HeaderName>, NotAccepted> {
    v.map(|v| {
        HeaderName::from_bytes(v.as_bytes())
            .map_err(|_| invalid(format!("{field} {v:?} is not a header name")))
    })
    .transpose()
}
