//! Hostname index: exact names, then wildcard suffixes from longest to shortest, then the
//! catch-all. Lookups hash the request host and its suffixes; they allocate nothing.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use foldhash::fast::RandomState;

/// A hostname as Gateway API writes it: `example.com` or `*.example.com` (lowercase).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum HostPattern {
    Exact(Arc<str>),
    /// `*.example.com`, stored as the suffix `.example.com`.
    Wildcard(Arc<str>),
}

impl HostPattern {
    /// Parse `example.com` or `*.example.com`; lowercases. Returns `None` for an empty string.
    pub fn parse(s: &str) -> Option<HostPattern> {
        let s = s.trim().to_ascii_lowercase();
        if s.is_empty() {
            return None;
        }
        Some(match s.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') => HostPattern::Wildcard(suffix.into()),
            _ => HostPattern::Exact(s.into()),
        })
    }

    /// Whether a (lowercase) host matches: a wildcard matches one or more labels before its
    /// suffix, never the bare suffix.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => **h == *host,
            HostPattern::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(&**suffix),
        }
    }

    /// Characters that are not part of a wildcard, and all characters, as the spec ranks
    /// hostnames ("largest number of characters in a matching non-wildcard hostname", then
    /// "characters in a matching hostname").
    pub fn specificity(&self) -> (usize, usize) {
        match self {
            HostPattern::Exact(h) => (h.len(), h.len()),
            HostPattern::Wildcard(s) => (0, s.len() + 1),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*{s}"),
        }
    }
}

/// Values indexed by hostname pattern. Each bucket keeps the order its values were inserted
/// in (callers insert in precedence order).
///
/// Keys share the patterns' `Arc<str>`s, and the maps use foldhash: with 10,000 hostnames,
/// building the index was a quarter of translation with SipHash and a copied key per host,
/// and the lookup on every request hashes the Host header. (foldhash's per-map random seed
/// keeps request-chosen hosts from forcing collisions.)
#[derive(Debug)]
pub struct HostIndex<T> {
    exact: HashMap<Arc<str>, Box<[T]>, RandomState>,
    /// Keyed by suffix including the leading dot (`.example.com`).
    wildcard: HashMap<Arc<str>, Box<[T]>, RandomState>,
    any: Box<[T]>,
    /// Longest wildcard suffix, in dots, to bound the suffix walk.
    max_wildcard_labels: usize,
}

impl<T> Default for HostIndex<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::default(),
            wildcard: HashMap::default(),
            any: Box::new([]),
            max_wildcard_labels: 0,
        }
    }
}

impl<T> HostIndex<T> {
    /// Build from `(pattern, value)` pairs; `None` means "any host". Values keep their
    /// relative order within a bucket, so pass them sorted by precedence.
    pub fn build(items: impl IntoIterator<Item = (Option<HostPattern>, T)>) -> Self {
        let mut buckets: HashMap<Option<HostPattern>, Vec<T>, RandomState> = HashMap::default();
        // First appearance order of the patterns does not matter: buckets are separate.
        for (pattern, value) in items {
            buckets.entry(pattern).or_default().push(value);
        }
        Self::from_buckets(buckets)
    }

    /// Build from buckets that are already grouped by pattern, each in precedence order.
    /// A pattern that comes twice keeps the values of both, the earlier bucket's first.
    pub fn from_buckets(
        buckets: impl IntoIterator<Item = (Option<HostPattern>, impl Into<Vec<T>>)>,
    ) -> Self {
        let buckets = buckets.into_iter();
        let mut exact: HashMap<Arc<str>, Box<[T]>, RandomState> =
            HashMap::with_capacity_and_hasher(buckets.size_hint().0, RandomState::default());
        let mut wildcard: HashMap<Arc<str>, Box<[T]>, RandomState> = HashMap::default();
        let mut any: Vec<T> = Vec::new();
        let mut max_wildcard_labels = 0;
        fn add<T>(
            map: &mut HashMap<Arc<str>, Box<[T]>, RandomState>,
            key: Arc<str>,
            values: Vec<T>,
        ) {
            match map.entry(key) {
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    let mut joined = std::mem::take(o.get_mut()).into_vec();
                    joined.extend(values);
                    *o.get_mut() = joined.into();
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(values.into());
                }
            }
        }
        for (pattern, values) in buckets {
            let values = values.into();
            match pattern {
                Some(HostPattern::Exact(h)) => add(&mut exact, h, values),
                Some(HostPattern::Wildcard(s)) => {
                    max_wildcard_labels = max_wildcard_labels.max(s.matches('.').count());
                    add(&mut wildcard, s, values);
                }
                None => any.extend(values),
            }
        }
        Self {
            exact,
            wildcard,
            any: any.into(),
            max_wildcard_labels,
        }
    }

    /// Values whose pattern matches `host` (lowercase, no port), most specific pattern first:
    /// the exact bucket, then each matching wildcard suffix from longest to shortest, then the
    /// catch-all bucket.
    pub fn candidates<'a, 'h>(
        &'a self,
        host: &'h str,
    ) -> impl Iterator<Item = &'a T> + use<'a, 'h, T> {
        let exact = self.exact.get(host).map(|b| &b[..]).unwrap_or(&[]);
        let wildcards = self.wildcard_buckets(host).flat_map(|b| b.iter());
        exact.iter().chain(wildcards).chain(self.any.iter())
    }

    fn wildcard_buckets<'a, 'h>(
        &'a self,
        host: &'h str,
    ) -> impl Iterator<Item = &'a [T]> + use<'a, 'h, T> {
        // Suffixes starting at each '.', left to right = longest first. Skip suffixes with
        // more labels than any wildcard key has.
        // No wildcard keys (the common case for route indexes): scan nothing.
        let scanned = if self.wildcard.is_empty() { "" } else { host };
        let skip = scanned
            .matches('.')
            .count()
            .saturating_sub(self.max_wildcard_labels);
        scanned
            .match_indices('.')
            .skip(skip)
            .filter_map(move |(i, _)| {
                // A wildcard never matches the bare suffix: there must be a label before it.
                if i == 0 {
                    return None;
                }
                self.wildcard.get(&host[i..]).map(|b| &b[..])
            })
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        self.exact.values().map(|b| b.len()).sum::<usize>()
            + self.wildcard.values().map(|b| b.len()).sum::<usize>()
            + self.any.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every value, in no particular order across buckets.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .flat_map(|b| b.iter())
            .chain(self.any.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx() -> HostIndex<&'static str> {
        HostIndex::build([
            (HostPattern::parse("foo.example.com"), "exact"),
            (HostPattern::parse("*.example.com"), "wild"),
            (HostPattern::parse("*.foo.example.com"), "wild-foo"),
            (None, "any"),
        ])
    }

    #[test]
    fn buckets_give_the_same_index_as_pairs_and_a_repeated_pattern_keeps_both() {
        let i = HostIndex::from_buckets([
            (
                HostPattern::parse("foo.example.com"),
                vec!["exact", "exact-2"],
            ),
            (HostPattern::parse("*.example.com"), vec!["wild"]),
            (None, vec!["any"]),
            (HostPattern::parse("foo.example.com"), vec!["exact-3"]),
        ]);
        let got: Vec<_> = i.candidates("foo.example.com").copied().collect();
        assert_eq!(got, ["exact", "exact-2", "exact-3", "wild", "any"]);
        let got: Vec<_> = i.candidates("a.example.com").copied().collect();
        assert_eq!(got, ["wild", "any"]);
        assert_eq!(i.len(), 5);
    }

    #[test]
    fn parse_patterns() {
        assert_eq!(
            HostPattern::parse("*.Example.com"),
            Some(HostPattern::Wildcard(".example.com".into()))
        );
        assert_eq!(
            HostPattern::parse("a.b"),
            Some(HostPattern::Exact("a.b".into()))
        );
        assert_eq!(HostPattern::parse(""), None);
    }

    #[test]
    fn exact_then_wildcards_longest_first_then_any() {
        let i = idx();
        let got: Vec<_> = i.candidates("foo.example.com").copied().collect();
        assert_eq!(got, ["exact", "wild", "any"]);
        let got: Vec<_> = i.candidates("a.foo.example.com").copied().collect();
        assert_eq!(got, ["wild-foo", "wild", "any"]);
        let got: Vec<_> = i.candidates("example.com").copied().collect();
        assert_eq!(got, ["any"]);
        let got: Vec<_> = i.candidates("other.org").copied().collect();
        assert_eq!(got, ["any"]);
    }

    #[test]
    fn wildcard_needs_a_label() {
        let p = HostPattern::parse("*.example.com").unwrap();
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches(".example.com"));
        let i = idx();
        assert_eq!(
            i.candidates(".example.com").copied().collect::<Vec<_>>(),
            ["any"]
        );
    }

    #[test]
    fn specificity_orders_exact_before_wildcard() {
        let e = HostPattern::parse("a.example.com").unwrap().specificity();
        let w = HostPattern::parse("*.example.com").unwrap().specificity();
        assert!(e > w);
    }
}
