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
    /// Buckets are `Vec`s, not boxed slices: built one value at a time without a second
    /// pass, and most hold one value, allocated at its size.
    exact: HashMap<Arc<str>, Vec<T>, RandomState>,
    /// Keyed by suffix including the leading dot (`.example.com`).
    wildcard: HashMap<Arc<str>, Vec<T>, RandomState>,
    any: Vec<T>,
    /// Longest wildcard suffix, in dots, to bound the suffix walk.
    max_wildcard_labels: usize,
}

impl<T> Default for HostIndex<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::default(),
            wildcard: HashMap::default(),
            any: Vec::new(),
            max_wildcard_labels: 0,
        }
    }
}

impl<T> HostIndex<T> {
    /// Build from `(pattern, value)` pairs; `None` means "any host". Values keep their
    /// relative order within a bucket, so pass them sorted by precedence.
    pub fn build(items: impl IntoIterator<Item = (Option<HostPattern>, T)>) -> Self {
        let items = items.into_iter();
        let mut index = Self {
            exact: HashMap::with_capacity_and_hasher(items.size_hint().0, RandomState::default()),
            ..Self::default()
        };
        for (pattern, value) in items {
            index.bucket(pattern).push(value);
        }
        index
    }

    /// [`Self::build`], then each bucket sorted (stably) by `precedence`: pairs can come in
    /// any order. With 10,000 hostnames this is one hash and one allocation per host, where
    /// grouping first through another map, or sorting all pairs by pattern, cost several.
    pub fn build_sorted_by(
        items: impl IntoIterator<Item = (Option<HostPattern>, T)>,
        precedence: impl Fn(&T, &T) -> std::cmp::Ordering,
    ) -> Self {
        let mut index = Self::build(items);
        let buckets = index
            .exact
            .values_mut()
            .chain(index.wildcard.values_mut())
            .chain(std::iter::once(&mut index.any));
        for bucket in buckets.filter(|b| b.len() > 1) {
            bucket.sort_by(&precedence);
            bucket.shrink_to_fit();
        }
        index
    }

    /// Build from buckets that are already grouped by pattern, each in precedence order.
    /// A pattern that comes twice keeps the values of both, the earlier bucket's first.
    pub fn from_buckets(
        buckets: impl IntoIterator<Item = (Option<HostPattern>, impl Into<Vec<T>>)>,
    ) -> Self {
        let mut index = Self::default();
        for (pattern, values) in buckets {
            let values = values.into();
            let bucket = index.bucket(pattern);
            if bucket.is_empty() {
                *bucket = values;
            } else {
                bucket.extend(values);
            }
        }
        index
    }

    /// The bucket of `pattern`, created empty (with room for one value) if new.
    fn bucket(&mut self, pattern: Option<HostPattern>) -> &mut Vec<T> {
        match pattern {
            Some(HostPattern::Exact(h)) => {
                self.exact.entry(h).or_insert_with(|| Vec::with_capacity(1))
            }
            Some(HostPattern::Wildcard(s)) => {
                self.max_wildcard_labels = self.max_wildcard_labels.max(s.matches('.').count());
                self.wildcard
                    .entry(s)
                    .or_insert_with(|| Vec::with_capacity(1))
            }
            None => &mut self.any,
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
    fn sorted_build_orders_each_bucket_by_precedence() {
        let i = HostIndex::build_sorted_by(
            [
                (HostPattern::parse("foo.example.com"), 3),
                (None, 9),
                (HostPattern::parse("*.example.com"), 5),
                (HostPattern::parse("foo.example.com"), 1),
                (None, 7),
                (HostPattern::parse("foo.example.com"), 2),
            ],
            |a: &i32, b: &i32| a.cmp(b),
        );
        let got: Vec<_> = i.candidates("foo.example.com").copied().collect();
        assert_eq!(got, [1, 2, 3, 5, 7, 9]);
        assert_eq!(i.len(), 6);
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
