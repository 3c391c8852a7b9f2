//! Request path normalisation: the path routes are matched against, and the path the
//! backend gets, are the same normalised path (docs/SECURITY.md, "Route boundaries"). The
//! proxy normalises request paths and the paths filters produce; translation normalises
//! Exact and PathPrefix values the same way, so a value and a request spelling the same
//! path differently still match.
//!
//! 1. Percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`, RFC 3986 §2.3) are
//!    decoded; every other escape is kept as sent (its case too).
//! 2. `%2F` and `%5C` (an encoded slash or backslash), a raw backslash, and a `%` not followed
//!    by two hex digits are refused ([`PathError`], 400): a backend that decodes them could
//!    see other path segments than the ones Weir matched (Envoy's
//!    `path_with_escaped_slashes_action: REJECT_REQUEST`; nginx refuses a bad escape too).
//!    So is a dot-segment with parameters (`..;x`), which servlet containers resolve.
//! 3. Empty segments are merged (`//` → `/`, nginx's `merge_slashes on`): else `//admin`
//!    would miss an `Exact /admin` route and fall to a `/` route whose backend merges the
//!    slashes and serves `/admin`.
//! 4. Dot-segments are removed (RFC 3986 §5.2.4); `..` above the root stays at the root.
//!
//! A path that needs none of this costs one scan and no allocation ([`normalize`] returns it
//! borrowed). Targets that are not a path (`*`, CONNECT's authority) are left alone.

use std::borrow::Cow;

/// Why a request path is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%2F` or `%5C`: a slash or backslash hidden from matching.
    EncodedSlash,
    /// A raw `\`, which some servers treat as `/`.
    Backslash,
    /// A dot-segment with path parameters (`..;x`): Tomcat and other servlet containers drop
    /// the parameters and resolve the `..`, after Weir matched the segment as a name.
    DotSegmentParameters,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathError::BadEscape => "a '%' in the path is not followed by two hex digits",
            PathError::EncodedSlash => "the path has an encoded slash or backslash (%2F, %5C)",
            PathError::Backslash => "the path has a backslash",
            PathError::DotSegmentParameters => "the path has a dot-segment with parameters (..;)",
        })
    }
}

/// The normalised form of `path` (the path without the query string): borrowed when it is
/// already normal.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') || is_normal(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let normal = normalize_slow(path)?;
    if normal == path {
        // E.g. `/.well-known`: looked like a dot-segment to the scan.
        return Ok(Cow::Borrowed(path));
    }
    Ok(Cow::Owned(normal))
}

/// The scan: no escape, no backslash, no empty segment and nothing that may be a
/// dot-segment (a segment starting with `.`; `/.well-known` takes the slow path and comes
/// back unchanged).
fn is_normal(bytes: &[u8]) -> bool {
    let mut previous = 0u8;
    for &b in bytes {
        match b {
            b'%' | b'\\' => return false,
            b'/' | b'.' if previous == b'/' => return false,
            _ => {}
        }
        previous = b;
    }
    true
}

/// `uri` with its path replaced by `path` (its scheme, authority and query kept). The error
/// is the text that did not parse.
pub fn with_path(uri: &http::Uri, mut path: String) -> Result<http::Uri, String> {
    if let Some(query) = uri.query() {
        path.push('?');
        path.push_str(query);
    }
    let path_and_query =
        http::uri::PathAndQuery::try_from(path.as_str()).map_err(|_| path.clone())?;
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    http::Uri::from_parts(parts).map_err(|err| err.to_string())
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decode unreserved escapes, refuse the others listed in [`PathError`].
fn decode_unreserved(path: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        match b {
            b'%' => {
                let hi = path.get(i + 1).copied().and_then(hex_value);
                let lo = path.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadEscape);
                };
                let value = (hi << 4) | lo;
                if value == b'/' || value == b'\\' {
                    return Err(PathError::EncodedSlash);
                }
                if is_unreserved(value) {
                    out.push(value);
                } else {
                    // Kept exactly as sent.
                    out.extend_from_slice(&path[i..i + 3]);
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn normalize_slow(path: &str) -> Result<String, PathError> {
    let decoded = decode_unreserved(path.as_bytes())?;
    let mut out: Vec<u8> = Vec::with_capacity(decoded.len());
    out.push(b'/');
    // Where each kept segment starts in `out`, for `..` to go back.
    let mut starts: Vec<usize> = Vec::new();
    let mut trailing_slash = false;
    // `decoded` starts with '/' (checked by the caller; decoding keeps the first byte).
    let rest = decoded.get(1..).unwrap_or_default();
    for segment in rest.split(|&b| b == b'/') {
        // Each kept segment is written followed by '/'; the last '/' goes at the end unless
        // the path ended with a slash or a dot-segment (RFC 3986 §5.2.4 keeps it then).
        trailing_slash = true;
        match segment {
            b"" | b"." => {}
            _ if segment.starts_with(b"..;") || segment.starts_with(b".;") => {
                return Err(PathError::DotSegmentParameters);
            }
            b".." => {
                if let Some(start) = starts.pop() {
                    out.truncate(start);
                }
            }
            _ => {
                starts.push(out.len());
                out.extend_from_slice(segment);
                out.push(b'/');
                trailing_slash = false;
            }
        }
    }
    if !trailing_slash && out.len() > 1 {
        out.pop();
    }
    // Only ASCII was decoded and only whole segments were dropped: still UTF-8.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(path: &str) -> Result<String, PathError> {
        normalize(path).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/public/x.y",
            "/a.b/c..d/",
            "*",
            "",
            "/caf\u{e9}",
        ] {
            assert!(
                matches!(normalize(p), Ok(Cow::Borrowed(q)) if q == p),
                "{p:?}"
            );
        }
        // Takes the slow path (looks like a dot-segment) but stays borrowed.
        assert!(matches!(normalize("/.well-known/x"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize("/a/%20b"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn dot_segments_are_removed() {
        // RFC 3986 §5.2.4 and §5.4 examples, as paths.
        assert_eq!(n("/a/b/c/./../../g").unwrap(), "/a/g");
        assert_eq!(n("/public/../admin").unwrap(), "/admin");
        assert_eq!(n("/public/./x").unwrap(), "/public/x");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(n("/..").unwrap(), "/");
        assert_eq!(n("/../../x").unwrap(), "/x");
        assert_eq!(n("/.").unwrap(), "/");
        assert_eq!(n("/a/..b/c").unwrap(), "/a/..b/c");
        assert_eq!(n("/a/.../c").unwrap(), "/a/.../c");
    }

    #[test]
    fn encoded_unreserved_characters_are_decoded_first() {
        assert_eq!(n("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(n("/public/%2E./admin").unwrap(), "/admin");
        assert_eq!(n("/%41%7a%30%2D%5f%7E").unwrap(), "/Az0-_~");
        // Reserved and other characters stay encoded, as sent.
        assert_eq!(n("/a%20b/%3f/%c3%a9/x/..").unwrap(), "/a%20b/%3f/%c3%a9/");
        assert_eq!(n("/%25%32%65").unwrap(), "/%252e");
    }

    #[test]
    fn slashes_are_merged() {
        assert_eq!(n("//admin").unwrap(), "/admin");
        assert_eq!(n("/a//b///c//").unwrap(), "/a/b/c/");
        assert_eq!(n("//").unwrap(), "/");
        assert_eq!(n("/public//../admin").unwrap(), "/admin");
    }

    #[test]
    fn encoded_slashes_backslashes_and_bad_escapes_are_refused() {
        assert_eq!(n("/public%2F..%2Fadmin"), Err(PathError::EncodedSlash));
        assert_eq!(n("/a%2fb"), Err(PathError::EncodedSlash));
        assert_eq!(n("/a%5cb"), Err(PathError::EncodedSlash));
        assert_eq!(n("/a%5Cb"), Err(PathError::EncodedSlash));
        assert_eq!(n("/public\\..\\admin"), Err(PathError::Backslash));
        assert_eq!(n("/a%"), Err(PathError::BadEscape));
        assert_eq!(n("/a%2"), Err(PathError::BadEscape));
        assert_eq!(n("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(n("/a%%2e"), Err(PathError::BadEscape));
        assert_eq!(n("/public/..;/admin"), Err(PathError::DotSegmentParameters));
        assert_eq!(
            n("/public/%2e%2e;x=1/admin"),
            Err(PathError::DotSegmentParameters)
        );
        assert_eq!(n("/public/.;/x"), Err(PathError::DotSegmentParameters));
        // Parameters on a name are the backend's business.
        assert_eq!(
            n("/a;v=1/..;b").map(|_| ()),
            Err(PathError::DotSegmentParameters)
        );
        assert!(matches!(normalize("/a;v=1/b"), Ok(Cow::Borrowed(_))));
        assert_eq!(n("/a/...;x").unwrap(), "/a/...;x");
    }

    /// Every path of up to 6 bytes after the leading `/` over the bytes that matter: no
    /// panic, and a result is normal (a fixed point, no empty or dot-segment, no escape of
    /// an unreserved character, never longer).
    #[test]
    fn exhaustive_short_paths_normalise_to_fixed_points() {
        const ALPHABET: &[u8] = b"/.%2eFa;\\";
        let mut path = Vec::with_capacity(8);
        let mut checked = 0usize;
        for len in 0..=6u32 {
            let total = ALPHABET.len().pow(len);
            for mut code in 0..total {
                path.clear();
                path.push(b'/');
                for _ in 0..len {
                    path.push(ALPHABET[code % ALPHABET.len()]);
                    code /= ALPHABET.len();
                }
                let Ok(input) = std::str::from_utf8(&path) else {
                    continue;
                };
                checked += 1;
                let Ok(out) = normalize(input) else { continue };
                assert!(out.starts_with('/'), "{input:?} → {out:?}");
                assert!(out.len() <= input.len(), "{input:?} → {out:?}");
                assert!(!out.contains("//"), "{input:?} → {out:?}");
                assert!(
                    !out.split('/').any(|s| s == "." || s == ".."),
                    "{input:?} → {out:?}"
                );
                assert!(
                    !out.to_ascii_lowercase().contains("%2e"),
                    "{input:?} → {out:?}"
                );
                assert_eq!(normalize(&out).as_deref(), Ok(&*out), "{input:?}");
            }
        }
        assert!(checked > 500_000, "{checked}");
    }

    /// The result is a fixed point, keeps non-ASCII text whole, and never grows.
    #[test]
    fn normalising_twice_changes_nothing() {
        for p in [
            "/a/./b/../../c/",
            "//x/%2e%2E/y",
            "/%c3%a9/./\u{e9}/..",
            "/a/b/c/./../../g",
            "/..//../.",
        ] {
            let once = n(p).unwrap();
            assert!(once.len() <= p.len(), "{p:?} → {once:?}");
            assert_eq!(n(&once).unwrap(), once, "{p:?}");
        }
    }
}
