//! Listener/route hostname intersection (HTTPRoute.hostnames): which hosts a route serves on a
//! listener, resolved once when the snapshot is built.

use weir_snapshot::HostPattern;

/// The more specific of two patterns if they intersect, per the HTTPRoute.hostnames rules:
/// equal names; an exact name matched by the other's wildcard; two wildcards where one's suffix
/// contains the other's.
pub fn intersect(listener: &HostPattern, route: &HostPattern) -> Option<HostPattern> {
    use HostPattern::{Exact, Wildcard};
    match (listener, route) {
        (Exact(l), Exact(r)) => (l == r).then(|| listener.clone()),
        (Exact(l), Wildcard(_)) => route.matches(l).then(|| listener.clone()),
        (Wildcard(_), Exact(r)) => listener.matches(r).then(|| route.clone()),
        (Wildcard(l), Wildcard(r)) => {
            if l.ends_with(&**r) {
                Some(listener.clone())
            } else if r.ends_with(&**l) {
                Some(route.clone())
            } else {
                None
            }
        }
    }
}

/// The effective host patterns of a route on a listener (`None` = any host), deduplicated and
/// sorted; empty when no route hostname intersects the listener's.
pub fn effective_hosts(
    listener: Option<&HostPattern>,
    route_hostnames: &[HostPattern],
) -> Vec<Option<HostPattern>> {
    let mut out: Vec<Option<HostPattern>> = match (listener, route_hostnames.is_empty()) {
        (None, true) => vec![None],
        (Some(l), true) => vec![Some(l.clone())],
        (None, false) => route_hostnames.iter().cloned().map(Some).collect(),
        (Some(l), false) => route_hostnames
            .iter()
            .filter_map(|r| intersect(l, r))
            .map(Some)
            .collect(),
    };
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap_or_else(|| panic!("bad pattern {s}"))
    }

    #[test]
    fn intersections_pick_the_more_specific() {
        assert_eq!(intersect(&p("a.com"), &p("a.com")), Some(p("a.com")));
        assert_eq!(intersect(&p("a.com"), &p("b.com")), None);
        assert_eq!(
            intersect(&p("foo.example.com"), &p("*.example.com")),
            Some(p("foo.example.com"))
        );
        assert_eq!(
            intersect(&p("*.example.com"), &p("a.b.example.com")),
            Some(p("a.b.example.com"))
        );
        assert_eq!(intersect(&p("*.example.com"), &p("example.com")), None);
        assert_eq!(
            intersect(&p("*.example.com"), &p("*.foo.example.com")),
            Some(p("*.foo.example.com"))
        );
        assert_eq!(
            intersect(&p("*.foo.example.com"), &p("*.example.com")),
            Some(p("*.foo.example.com"))
        );
        assert_eq!(intersect(&p("*.a.com"), &p("*.b.com")), None);
    }

    #[test]
    fn effective_hosts_cover_absent_sides() {
        assert_eq!(effective_hosts(None, &[]), vec![None]);
        assert_eq!(
            effective_hosts(Some(&p("a.com")), &[]),
            vec![Some(p("a.com"))]
        );
        assert_eq!(
            effective_hosts(None, &[p("b.com"), p("a.com")]),
            vec![Some(p("a.com")), Some(p("b.com"))]
        );
        assert!(effective_hosts(Some(&p("a.com")), &[p("b.com")]).is_empty());
    }
}
