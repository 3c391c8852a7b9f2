//! BackendTrafficPolicy `compression[]` (Envoy Gateway's shape) compiled onto
//! [`weir_snapshot::Compression`]: `type` (`Gzip`, `Brotli`, `Zstd`), the level of its
//! settings block (`gzip.compressionLevel`, `brotli.quality`, `zstd.compressionLevel`; the
//! other tuning fields are refused by name), `minContentLength`, and Weir's `contentTypes`.

use std::sync::Arc;

use weir_snapshot::compression::DEFAULT_MIN_CONTENT_LENGTH;
use weir_snapshot::{Coding, Compression, Compressor};
use weir_store::policies::{self as api, IntOrString};

use super::{invalid, Unsupported};
use crate::policy::attach::NotAccepted;

/// The paths of the fields of `compression[]` Weir does not implement.
pub(super) fn unsupported_fields(
    list: &[api::Compression],
    add: &mut dyn FnMut(&str, &Unsupported),
) {
    for (i, c) in list.iter().enumerate() {
        let at = format!("spec.compression[{i}]");
        add(&at, &c.unsupported);
        if let Some(g) = &c.gzip {
            add(&format!("{at}.gzip"), &g.unsupported);
        }
        if let Some(b) = &c.brotli {
            add(&format!("{at}.brotli"), &b.unsupported);
        }
        if let Some(z) = &c.zstd {
            add(&format!("{at}.zstd"), &z.unsupported);
        }
    }
}

/// A byte count field: an integer or a quantity (`1Ki`, `2Mi`), within `min..=max`.
pub(super) fn bytes(field: &str, v: &IntOrString, min: u64, max: u64) -> Result<u64, NotAccepted> {
    let (n, shown) = match v {
        IntOrString::Int(n) => (u64::try_from(*n).ok(), n.to_string()),
        IntOrString::String(s) => (crate::policy::client::quantity(s), format!("{s:?}")),
    };
    n.filter(|n| (min..=max).contains(n)).ok_or_else(|| {
        invalid(format!(
            "{field} {shown}: must be a byte count or quantity (like 1Ki or 1Mi) of {min} to \
             {max} bytes"
        ))
    })
}

/// `compression`.
pub(super) fn compile(list: &[api::Compression]) -> Result<Compression, NotAccepted> {
    if list.is_empty() {
        return Err(invalid("spec.compression: list at least one type"));
    }
    let mut compressors: Vec<Compressor> = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let at = format!("spec.compression[{i}]");
        let name = c
            .type_
            .as_deref()
            .ok_or_else(|| invalid(format!("{at}.type: required (Gzip, Brotli or Zstd)")))?;
        let coding = Coding::parse(name)
            .ok_or_else(|| invalid(format!("{at}.type {name:?}: must be Gzip, Brotli or Zstd")))?;
        if compressors.iter().any(|other| other.coding == coding) {
            return Err(invalid(format!("{at}.type: {name} is listed twice")));
        }
        let settings = [
            ("gzip", c.gzip.is_some(), Coding::Gzip),
            ("brotli", c.brotli.is_some(), Coding::Brotli),
            ("zstd", c.zstd.is_some(), Coding::Zstd),
        ];
        for (field, set, of) in settings {
            if set && of != coding {
                return Err(invalid(format!(
                    "{at}.{field}: only allowed when the type is {of:?}"
                )));
            }
        }
        let level = |field: &str, v: Option<i64>, min: u32, max: u32| match v {
            None => Ok(None),
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| (min..=max).contains(n))
                .map(Some)
                .ok_or_else(|| invalid(format!("{at}.{field} {n}: must be {min} to {max}"))),
        };
        let level = match coding {
            Coding::Gzip => level(
                "gzip.compressionLevel",
                c.gzip.as_ref().and_then(|g| g.compression_level),
                1,
                9,
            )?,
            Coding::Brotli => level(
                "brotli.quality",
                c.brotli.as_ref().and_then(|b| b.quality),
                0,
                11,
            )?,
            Coding::Zstd => level(
                "zstd.compressionLevel",
                c.zstd.as_ref().and_then(|z| z.compression_level),
                1,
                22,
            )?,
        };
        let min_content_length = match &c.min_content_length {
            None => DEFAULT_MIN_CONTENT_LENGTH,
            // Envoy's minimum is 30 bytes; no upper bound beyond a sane 1 GiB.
            Some(v) => bytes(&format!("{at}.minContentLength"), v, 30, 1 << 30)?,
        };
        let content_types = match &c.content_types {
            None => None,
            Some(types) => {
                if types.is_empty() {
                    return Err(invalid(format!(
                        "{at}.contentTypes: list at least one media type, or leave it out for \
                         the default list"
                    )));
                }
                let mut out: Vec<Arc<str>> = Vec::with_capacity(types.len());
                for t in types {
                    let lower = t.trim().to_ascii_lowercase();
                    let valid = lower.split_once('/').is_some_and(|(kind, sub)| {
                        !kind.is_empty()
                            && kind != "*"
                            && !sub.is_empty()
                            && !lower.contains([';', ' ', ','])
                            && (sub == "*" || !sub.contains('*'))
                    });
                    if !valid {
                        return Err(invalid(format!(
                            "{at}.contentTypes: {t:?} is not a media type (type/subtype or \
                             type/*, no parameters)"
                        )));
                    }
                    out.push(lower.into());
                }
                Some(out.into())
            }
        };
        compressors.push(Compressor {
            coding,
            level,
            min_content_length,
            content_types,
        });
    }
    Ok(Compression {
        compressors: compressors.into(),
    })
}
