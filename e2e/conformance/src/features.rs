//! GatewayClass `status.supportedFeatures` against the replay.
//!
//! The suite decides which tests to run from the features an implementation claims, so the
//! claim must be exactly what passes: [`weir_translate::SUPPORTED_FEATURES`] (the list our
//! GatewayClasses report) must equal the set of features that at least one replayed test
//! declares and all of whose replayed tests passed. Tests not replayed (`skip`) decide
//! nothing; those whose features are all claimed are listed as a warning, since the official
//! suite would run them.
//!
//! With `--only` the run covers some tests only, so only the soundness half is checked: no
//! claimed feature may have a failing replayed test.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use weir_translate::SUPPORTED_FEATURES;

use crate::report::{Outcome, Row};

/// One feature's replay results.
#[derive(Debug, Default, Clone)]
pub struct FeatureResult {
    pub passed: Vec<String>,
    pub failed: Vec<String>,
    /// Tests declaring it that the replay does not run yet.
    pub not_run: Vec<String>,
}

impl FeatureResult {
    /// Declared by a replayed test, and every replayed test that declares it passed.
    pub fn passing(&self) -> bool {
        !self.passed.is_empty() && self.failed.is_empty()
    }
}

pub struct FeatureCheck {
    pub by_feature: BTreeMap<String, FeatureResult>,
    /// Tests not replayed whose features are all claimed: the official suite runs them.
    pub unreplayed_but_selected: Vec<String>,
    /// Whether every test of tests.yaml was considered (no `--only`).
    pub complete: bool,
}

impl FeatureCheck {
    pub fn new(rows: &[Row<'_>], complete: bool) -> Self {
        let mut by_feature: BTreeMap<String, FeatureResult> = BTreeMap::new();
        let mut unreplayed_but_selected = Vec::new();
        for r in rows {
            let selected = r
                .spec
                .features
                .iter()
                .all(|f| SUPPORTED_FEATURES.contains(&f.as_str()));
            if selected && matches!(r.outcome, Outcome::Skip(_)) {
                unreplayed_but_selected.push(r.spec.name.clone());
            }
            for f in &r.spec.features {
                let entry = by_feature.entry(f.clone()).or_default();
                let name = r.spec.name.clone();
                match r.outcome {
                    Outcome::Pass => entry.passed.push(name),
                    Outcome::Fail(_) => entry.failed.push(name),
                    Outcome::Skip(_) => entry.not_run.push(name),
                    // Skipped by the suite's own logic under this claim: decides nothing.
                    Outcome::SuiteSkip(_) => {}
                }
            }
        }
        Self {
            by_feature,
            unreplayed_but_selected,
            complete,
        }
    }

    fn result(&self, feature: &str) -> FeatureResult {
        self.by_feature.get(feature).cloned().unwrap_or_default()
    }

    /// Claimed features that do not pass (with why), and passing features not claimed.
    pub fn mismatches(&self) -> (Vec<String>, Vec<String>) {
        let claimed: BTreeSet<&str> = SUPPORTED_FEATURES.iter().copied().collect();
        let mut claimed_not_passing = Vec::new();
        for f in &claimed {
            let r = self.result(f);
            if !r.failed.is_empty() {
                claimed_not_passing.push(format!("{f} (failed: {})", r.failed.join(", ")));
            } else if self.complete && r.passed.is_empty() {
                claimed_not_passing.push(format!(
                    "{f} (no replayed test; {} not replayed yet)",
                    r.not_run.len()
                ));
            }
        }
        let passing_not_claimed = if self.complete {
            self.by_feature
                .iter()
                .filter(|(f, r)| r.passing() && !claimed.contains(f.as_str()))
                .map(|(f, _)| f.clone())
                .collect()
        } else {
            Vec::new()
        };
        (claimed_not_passing, passing_not_claimed)
    }

    pub fn ok(&self) -> bool {
        let (a, b) = self.mismatches();
        a.is_empty() && b.is_empty()
    }

    /// Why the run fails, for stderr; `None` when the claim matches the replay.
    pub fn failure(&self) -> Option<String> {
        let (claimed_not_passing, passing_not_claimed) = self.mismatches();
        if claimed_not_passing.is_empty() && passing_not_claimed.is_empty() {
            return None;
        }
        let mut out = String::from(
            "weir_translate::SUPPORTED_FEATURES (crates/weir-translate/src/lib.rs, reported in \
             GatewayClass status.supportedFeatures) differs from the features whose replayed \
             tests all pass:",
        );
        if !claimed_not_passing.is_empty() {
            let _ = write!(
                out,
                "\n  claimed but not passing: {}",
                claimed_not_passing.join("; ")
            );
        }
        if !passing_not_claimed.is_empty() {
            let _ = write!(
                out,
                "\n  passing but not claimed: {}",
                passing_not_claimed.join(", ")
            );
        }
        out.push_str(
            "\n  fix the failing tests or remove those features from SUPPORTED_FEATURES; add the \
             passing ones to it",
        );
        Some(out)
    }

    fn verdict(&self) -> String {
        match (self.ok(), self.complete) {
            (true, true) => "ok: exactly the features whose replayed tests all pass".into(),
            (true, false) => {
                "ok so far: no claimed feature fails (partial run, --only: completeness not checked)"
                    .into()
            }
            (false, _) => "MISMATCH".into(),
        }
    }

    /// The check, for the terminal.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "GatewayClass supportedFeatures ({} claimed): {}",
            SUPPORTED_FEATURES.len(),
            self.verdict()
        );
        if let Some(why) = self.failure() {
            let _ = writeln!(out, "  {}", why.replace('\n', "\n  "));
        }
        if let Some(warning) = self.warning() {
            let _ = writeln!(out, "  warning: {warning}");
        }
        out
    }

    /// Tests the official suite would run for this claim that the replay does not run yet.
    fn warning(&self) -> Option<String> {
        (!self.unreplayed_but_selected.is_empty()).then(|| {
            format!(
                "tests whose features are all claimed, so the official suite runs them, are not \
                 replayed yet: {}",
                self.unreplayed_but_selected.join(", ")
            )
        })
    }

    /// The check, for docs/CONFORMANCE.md.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "## GatewayClass `status.supportedFeatures`\n\n\
             Weir's GatewayClasses report these {} features (`weir_translate::SUPPORTED_FEATURES`); \
             the replay checks that they are exactly the features all of whose replayed tests \
             pass: **{}**.\n",
            SUPPORTED_FEATURES.len(),
            self.verdict()
        );
        if let Some(why) = self.failure() {
            let _ = writeln!(out, "```\n{why}\n```\n");
        }
        if let Some(warning) = self.warning() {
            let _ = writeln!(out, "Warning: {warning}.\n");
        }
        out.push_str("| feature | claimed | replayed tests passed | not run yet |\n");
        out.push_str("| --- | --- | --- | --- |\n");
        let mut features: BTreeSet<&str> = self.by_feature.keys().map(String::as_str).collect();
        features.extend(SUPPORTED_FEATURES.iter().copied());
        for f in features {
            let r = self.result(f);
            let claimed = if SUPPORTED_FEATURES.contains(&f) {
                "yes"
            } else {
                "no"
            };
            let run = r.passed.len() + r.failed.len();
            let _ = writeln!(
                out,
                "| {f} | {claimed} | {}/{run} | {} |",
                r.passed.len(),
                r.not_run.len()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Profile, TestSpec};

    fn spec(name: &str, features: &[&str]) -> TestSpec {
        TestSpec {
            name: name.into(),
            go: String::new(),
            manifests: Vec::new(),
            profile: Profile::Extended,
            features: features.iter().map(|f| f.to_string()).collect(),
            feature: None,
            skip: None,
            suite_skips_when_claimed: None,
            claimed: true,
            steps: Vec::new(),
        }
    }

    /// One passing test per claimed feature.
    fn all_claimed() -> Vec<TestSpec> {
        SUPPORTED_FEATURES
            .iter()
            .map(|f| spec(&format!("T{f}"), &[f]))
            .collect()
    }

    fn rows<'a>(specs: &'a [TestSpec], outcome: impl Fn(&TestSpec) -> Outcome) -> Vec<Row<'a>> {
        specs
            .iter()
            .map(|s| Row {
                spec: s,
                outcome: outcome(s),
                seconds: 0.0,
            })
            .collect()
    }

    #[test]
    fn the_claim_matches_when_exactly_the_claimed_features_pass() {
        let mut specs = all_claimed();
        specs.push(spec(
            "Mirror",
            &["Gateway", "HTTPRoute", "HTTPRouteDestinationPortMatching"],
        ));
        let rows = rows(&specs, |s| {
            if s.name == "Mirror" {
                Outcome::Skip("not yet".into())
            } else {
                Outcome::Pass
            }
        });
        let check = FeatureCheck::new(&rows, true);
        assert!(check.ok(), "{:?}", check.failure());
        // The feature is not claimed, so the suite would not run that test: no warning.
        assert!(check.unreplayed_but_selected.is_empty());
    }

    #[test]
    fn skipped_tests_of_claimed_features_only_warn() {
        let mut specs = all_claimed();
        specs.push(spec("PortAndScheme", &["Gateway", "HTTPRoutePortRedirect"]));
        let rows = rows(&specs, |s| {
            if s.name == "PortAndScheme" {
                Outcome::Skip("not yet".into())
            } else {
                Outcome::Pass
            }
        });
        let check = FeatureCheck::new(&rows, true);
        assert!(check.ok(), "{:?}", check.failure());
        assert_eq!(check.unreplayed_but_selected, ["PortAndScheme"]);
    }

    #[test]
    fn a_failing_test_of_a_claimed_feature_is_a_mismatch() {
        let specs = all_claimed();
        let rows = rows(&specs, |s| {
            if s.features == ["HTTPRouteHostRewrite"] {
                Outcome::Fail("boom".into())
            } else {
                Outcome::Pass
            }
        });
        let check = FeatureCheck::new(&rows, false);
        let failure = check.failure().expect("mismatch");
        assert!(failure.contains("HTTPRouteHostRewrite (failed: THTTPRouteHostRewrite)"));
    }

    #[test]
    fn a_passing_unclaimed_feature_and_an_untested_claim_are_mismatches() {
        let mut specs = all_claimed();
        specs.retain(|s| s.features != ["GatewayPort8080"]);
        specs.push(spec(
            "Iso",
            &["Gateway", "HTTPRouteDestinationPortMatching"],
        ));
        let rows = rows(&specs, |_| Outcome::Pass);
        let (claimed_not_passing, passing_not_claimed) =
            FeatureCheck::new(&rows, true).mismatches();
        assert_eq!(
            claimed_not_passing,
            ["GatewayPort8080 (no replayed test; 0 not replayed yet)"]
        );
        assert_eq!(passing_not_claimed, ["HTTPRouteDestinationPortMatching"]);
        // A partial run cannot tell either.
        assert!(FeatureCheck::new(&rows, false).ok());
    }
}
