//! BackendTrafficPolicy `compression`: which codings Weir may compress a route's responses
//! with, in the policy's order of preference, and when. Compiled by translation onto
//! [`crate::BackendPolicy::compression`]; the engine is the proxy's `compress.rs`.

use std::sync::Arc;

/// A content coding Weir can produce (`compression[].type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    Gzip,
    Brotli,
    Zstd,
}

impl Coding {
    /// The coding's token in `Accept-Encoding` and `Content-Encoding` (RFC 9110 §8.4.1).
    pub fn token(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }

    /// Envoy Gateway's name for it (`type`).
    pub fn parse(name: &str) -> Option<Coding> {
        Some(match name {
            "Gzip" => Coding::Gzip,
            "Brotli" => Coding::Brotli,
            "Zstd" => Coding::Zstd,
            _ => return None,
        })
    }
}

/// One `compression[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressor {
    pub coding: Coding,
    /// `gzip.compressionLevel` (1–9), `brotli.quality` (0–11), `zstd.compressionLevel`
    /// (1–22); `None`: the coding's default (Envoy's: gzip 6, brotli 3, zstd 3).
    pub level: Option<u32>,
    /// `minContentLength`: a response whose `Content-Length` is below this is sent as it
    /// is (default 30, Envoy's).
    pub min_content_length: u64,
    /// `contentTypes` (Weir's): the media types compressed, `type/subtype` or `type/*`;
    /// `None`: [`DEFAULT_CONTENT_TYPES`] and any `+json` / `+xml` type.
    pub content_types: Option<Arc<[Arc<str>]>>,
}

/// `compression`: the codings in the policy's order (the first wins a tie of the client's
/// q-values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    pub compressors: Arc<[Compressor]>,
}

/// `minContentLength`'s default (Envoy's minimum too).
pub const DEFAULT_MIN_CONTENT_LENGTH: u64 = 30;

/// The media types compressed without `contentTypes` (besides `text/*` and any `+json` or
/// `+xml` suffix): text formats that shrink, never images, video, archives or fonts that
/// are compressed already.
pub const DEFAULT_CONTENT_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/xml",
    "application/xhtml+xml",
    "application/x-ndjson",
    "application/wasm",
    "application/x-www-form-urlencoded",
    "image/svg+xml",
    "image/x-icon",
    "image/vnd.microsoft.icon",
    "image/bmp",
    "font/ttf",
    "font/otf",
    "application/vnd.ms-fontobject",
];

impl Compressor {
    /// Whether a response with this `Content-Type` (parameters allowed, any case) is
    /// compressed.
    pub fn compresses(&self, content_type: &str) -> bool {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let Some((kind, _)) = media.split_once('/') else {
            return false;
        };
        let listed = |pattern: &str| {
            pattern == media
                || pattern
                    .strip_suffix("/*")
                    .is_some_and(|prefix| prefix == kind)
        };
        match &self.content_types {
            Some(types) => types.iter().any(|t| listed(t)),
            None => {
                DEFAULT_CONTENT_TYPES.iter().any(|t| listed(t))
                    || media.ends_with("+json")
                    || media.ends_with("+xml")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(types: Option<&[&str]>) -> Compressor {
        Compressor {
            coding: Coding::Gzip,
            level: None,
            min_content_length: DEFAULT_MIN_CONTENT_LENGTH,
            content_types: types.map(|t| t.iter().map(|s| Arc::from(*s)).collect()),
        }
    }

    #[test]
    fn the_default_list_takes_text_and_structured_suffixes_not_images() {
        let d = c(None);
        for yes in [
            "text/html",
            "text/html; charset=utf-8",
            "TEXT/Plain",
            "text/event-stream",
            "application/json",
            "application/problem+json",
            "application/atom+xml",
            "image/svg+xml",
            "application/javascript;charset=utf-8",
        ] {
            assert!(d.compresses(yes), "{yes}");
        }
        for no in [
            "image/png",
            "image/jpeg",
            "application/octet-stream",
            "application/zip",
            "video/mp4",
            "",
            "garbage",
            "application/grpc",
        ] {
            assert!(!d.compresses(no), "{no}");
        }
    }

    #[test]
    fn a_configured_list_replaces_the_default() {
        let only = c(Some(&["application/json", "image/*"]));
        assert!(only.compresses("application/json"));
        assert!(only.compresses("image/png"));
        assert!(!only.compresses("text/html"));
        assert!(!only.compresses("application/problem+json"));
    }
}
