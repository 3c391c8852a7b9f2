//! A request's head kept to send it again: by a policy's retries (`retry.rs`) and by the
//! attempt loop when a pooled connection turned out closed after the request went out
//! (`attempt.rs`). One mechanism for both.

use bytes::Bytes;
use http::Request;

use super::body::UpstreamBody;

/// A request's head kept to send it again: its header fields in one buffer (one allocation,
/// one copy of their bytes and one free, where a `HeaderMap` clone allocates per part of the
/// map and counts a reference per value, then undoes all of it), rebuilt only for a retry.
pub(super) struct Replay {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    /// Per field: name length (u16 LE), value length (u32 LE), sensitive (u8), name, value.
    fields: Bytes,
    count: usize,
}

impl Replay {
    pub(super) fn of(req: &Request<UpstreamBody>) -> Self {
        let headers = req.headers();
        let size: usize = headers
            .iter()
            .map(|(n, v)| 7 + n.as_str().len() + v.len())
            .sum();
        let mut fields = Vec::with_capacity(size);
        for (name, value) in headers {
            let name = name.as_str().as_bytes();
            // Names and values are far below these bounds (hyper's head limit); a field
            // that would not fit is dropped rather than cut.
            let (Ok(n), Ok(v)) = (u16::try_from(name.len()), u32::try_from(value.len())) else {
                continue;
            };
            fields.extend_from_slice(&n.to_le_bytes());
            fields.extend_from_slice(&v.to_le_bytes());
            fields.push(u8::from(value.is_sensitive()));
            fields.extend_from_slice(name);
            fields.extend_from_slice(value.as_bytes());
        }
        Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            fields: Bytes::from(fields),
            count: headers.len(),
        }
    }

    /// The request again, without a body.
    pub(super) fn request(&self) -> Request<UpstreamBody> {
        let mut req = Request::new(UpstreamBody::empty());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        let headers = req.headers_mut();
        headers.reserve(self.count);
        let b = &self.fields;
        let mut at = 0;
        while let Some(head) = b.get(at..at + 7) {
            let n = usize::from(u16::from_le_bytes([head[0], head[1]]));
            let v = u32::from_le_bytes([head[2], head[3], head[4], head[5]]);
            let sensitive = head[6] != 0;
            let name_at = at + 7;
            let value_at = name_at + n;
            let Some(end) = usize::try_from(v)
                .ok()
                .and_then(|v| value_at.checked_add(v))
                .filter(|&end| end <= b.len())
            else {
                break;
            };
            // Both came from a valid header map: they parse again.
            if let (Ok(name), Ok(mut value)) = (
                http::HeaderName::from_bytes(&b[name_at..value_at]),
                http::HeaderValue::from_maybe_shared(b.slice(value_at..end)),
            ) {
                value.set_sensitive(sensitive);
                headers.append(name, value);
            }
            at = end;
        }
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_head_is_the_request_again() {
        let mut req = Request::new(UpstreamBody::empty());
        *req.method_mut() = http::Method::PUT;
        *req.uri_mut() = "/a/b?c=d".parse().unwrap();
        let h = req.headers_mut();
        h.insert("host", http::HeaderValue::from_static("example.com"));
        h.append("x-multi", http::HeaderValue::from_static("one"));
        h.append("x-multi", http::HeaderValue::from_static("two"));
        h.insert("x-empty", http::HeaderValue::from_static(""));
        let mut secret = http::HeaderValue::from_static("Bearer t");
        secret.set_sensitive(true);
        h.insert(http::header::AUTHORIZATION, secret);
        let copy = Replay::of(&req);
        // The original goes on (and is changed, as an attempt changes it); the copy holds.
        req.headers_mut().clear();
        for _ in 0..2 {
            let again = copy.request();
            assert_eq!(again.method(), http::Method::PUT);
            assert_eq!(again.uri(), "/a/b?c=d");
            let h = again.headers();
            assert_eq!(h.len(), 5);
            assert_eq!(h["host"], "example.com");
            let multi: Vec<_> = h.get_all("x-multi").iter().collect();
            assert_eq!(multi, ["one", "two"]);
            assert_eq!(h["x-empty"], "");
            assert_eq!(h[http::header::AUTHORIZATION], "Bearer t");
            assert!(h[http::header::AUTHORIZATION].is_sensitive());
            assert!(!h["host"].is_sensitive());
        }
    }
}
