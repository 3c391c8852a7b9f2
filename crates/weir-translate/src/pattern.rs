//! The regular expressions of route matches (HTTPRoute path, header and query matches;
//! GRPCRoute method and header matches), bounded one by one and together.
//!
//! Any client of the API server that may write a route may make Weir compile a regular
//! expression, and the `regex` crate's default bound (10 MiB of compiled program, plus 2 MiB
//! of lazy DFA cache per thread matching) lets one pattern cost about 11 MiB: a handful push
//! a replica past the chart's 128 MiB limit. So:
//!
//! - **Each pattern** is compiled with [`PATTERN_SIZE_LIMIT`] (the `regex` crate's
//!   `size_limit`, the compiled program's heap size) and [`PATTERN_DFA_LIMIT`]
//!   (`dfa_size_limit`, each lazy DFA cache). Envoy's RE2 default `max_program_size` is 100
//!   instructions; measured with `regex` 1.13, programs of about 100 RE2 instructions of
//!   ASCII (a 95-character literal, `[a-z]{100}`) take 3–8 KiB here. Unicode classes take
//!   far more in `regex` than in RE2, whose `\w`, `\d` and `\s` are ASCII: `^(?:\w+)$` takes
//!   49 KiB, `Bearer \w+\.\w+\.\w+` 147 KiB. 256 KiB admits every program Envoy admits by
//!   default with room for a few Unicode classes, and is 40 times below the old bound
//!   (`\w{50}`, 2.4 MiB, is refused).
//! - **Together**, the patterns of one translation are charged against [`SNAPSHOT_BUDGET`],
//!   in the order routes attach (oldest first), so the newest route over the budget is the
//!   one refused and the same store always gives the same outcome. A pattern is charged
//!   about what it costs resident once it has been used: twice its compiled size (the
//!   `regex-automata` meta regex's `memory_usage`, which `regex` does not expose, so each
//!   pattern is compiled a second time to measure it) plus [`PATTERN_OVERHEAD`] (measured:
//!   500 copies each of four patterns, RSS after matching within ±30 % of the charge).
//!
//! A route with a pattern over either bound is not accepted (reason `UnsupportedValue`, the
//! reason the Gateway API gives for a field value an implementation does not support); its
//! patterns are not charged, and every other route keeps serving.

use regex::{Regex, RegexBuilder};
use regex_automata::meta;

/// Heap size of one compiled pattern (`regex`'s `size_limit`).
pub(crate) const PATTERN_SIZE_LIMIT: usize = 256 * 1024;
/// Capacity of each lazy DFA cache of one pattern (`regex`'s `dfa_size_limit`); a smaller
/// cache makes the matcher fall back to slower engines, never to more memory.
pub(crate) const PATTERN_DFA_LIMIT: usize = 256 * 1024;
/// What the patterns of one translation may cost together: a quarter of the chart's
/// memory limit.
pub(crate) const SNAPSHOT_BUDGET: usize = 32 * 1024 * 1024;
/// Charged per pattern besides its compiled size: the matcher's pool and first caches.
pub(crate) const PATTERN_OVERHEAD: usize = 16 * 1024;

/// What the patterns compiled so far in one translation cost.
#[derive(Debug)]
pub(crate) struct Budget {
    used: usize,
    limit: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self::with_limit(SNAPSHOT_BUDGET)
    }
}

impl Budget {
    pub(crate) fn with_limit(limit: usize) -> Self {
        Self { used: 0, limit }
    }

    /// A point to [`Self::reset`] to: a route that is not accepted gives back what its
    /// patterns were charged.
    pub(crate) fn mark(&self) -> usize {
        self.used
    }

    pub(crate) fn reset(&mut self, mark: usize) {
        self.used = mark.min(self.used);
    }

    /// `re` anchored at both ends (`^(?:re)$`: Gateway API matches are full matches),
    /// compiled within the bounds and charged.
    pub(crate) fn anchored(&mut self, re: &str) -> Result<Regex, String> {
        let pattern = format!("^(?:{re})$");
        let regex = build(&pattern).map_err(|e| describe(re, &e))?;
        let cost = cost(&pattern);
        if self.used.saturating_add(cost) > self.limit {
            return Err(format!(
                "regular expression {re:?} does not fit: the regular expressions of the routes \
                 attached before this one already use {} KiB of the {} KiB all may use together \
                 (this one needs {} KiB); remove or simplify regular expressions, or use \
                 Exact and PathPrefix matches",
                self.used / 1024,
                self.limit / 1024,
                cost.div_ceil(1024),
            ));
        }
        self.used += cost;
        Ok(regex)
    }
}

/// Whether `re` compiles on its own within the per-pattern bounds (a part of a larger
/// pattern; not charged).
pub(crate) fn check(re: &str) -> Result<(), String> {
    build(re).map(drop).map_err(|e| describe(re, &e))
}

fn build(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_DFA_LIMIT)
        .build()
}

fn describe(re: &str, err: &regex::Error) -> String {
    match err {
        regex::Error::CompiledTooBig(_) => format!(
            "regular expression {re:?} is too large: compiled it exceeds {} KiB (each \
             regular expression may use that much); simplify it. Unicode classes are large: \
             \\w, \\d and \\s match every script's letters and digits; [0-9A-Za-z_], [0-9] \
             and [ \\t] are far smaller",
            PATTERN_SIZE_LIMIT / 1024
        ),
        err => format!("invalid regular expression {re:?}: {err}"),
    }
}

/// What a compiled pattern costs resident (see the module docs).
fn cost(pattern: &str) -> usize {
    let config = meta::Regex::config()
        .nfa_size_limit(Some(PATTERN_SIZE_LIMIT))
        .hybrid_cache_capacity(PATTERN_DFA_LIMIT);
    let compiled = meta::Regex::builder()
        .configure(config)
        .build(pattern)
        .map(|r| r.memory_usage())
        // (It compiled with `regex` under the same bound; should it not here, charge the
        // most a pattern may use.)
        .unwrap_or(PATTERN_SIZE_LIMIT);
    compiled.saturating_mul(2).saturating_add(PATTERN_OVERHEAD)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn small_patterns_compile_and_large_ones_are_refused() {
        let mut budget = Budget::default();
        for re in [
            "/v[0-9]+/.*",
            r"\w+",
            r"Bearer \w+\.\w+\.\w+",
            "(?i)mozilla.*",
            &"a".repeat(95),
            "[a-z]{100}",
        ] {
            budget.anchored(re).unwrap();
        }
        // Under the old 10 MiB bound this compiled to 2.4 MiB.
        let err = budget.anchored(r"\w{50}").unwrap_err();
        assert!(err.contains("too large"), "{err}");
        assert!(check(r"\w{50}").is_err());
        let err = budget.anchored("(").unwrap_err();
        assert!(err.starts_with("invalid regular expression"), "{err}");
    }

    #[test]
    fn the_budget_refuses_what_does_not_fit_and_gives_back_on_reset() {
        let one = cost(r"^(?:\w+)$");
        assert!(one > 64 * 1024 && one < 256 * 1024, "{one}");
        let mut budget = Budget::with_limit(one * 3);
        let mark = budget.mark();
        for _ in 0..3 {
            budget.anchored(r"\w+").unwrap();
        }
        let err = budget.anchored(r"\w+").unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
        budget.reset(mark);
        budget.anchored(r"\w+").unwrap();
    }
}
