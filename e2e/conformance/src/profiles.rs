//! The conformance profiles as the Go suite defines them (v1.6.1
//! `conformance/utils/suite/profiles.go`, feature sets from `pkg/features`), and how it
//! classifies a test: a test belongs to every profile whose core and extended features
//! together hold all its features (`getConformanceProfilesForTest`), and within a profile it
//! is an extended test as soon as one of its features is not a core feature of that profile
//! (`isTestExtended`). A test may so count in several profiles (a Gateway-only test counts
//! in each).

use crate::spec::Profile;

/// `features.GatewayExtendedFeatures` (v1.5: ListenerSet is a Gateway extended feature).
const GATEWAY_EXTENDED: &[&str] = &[
    "GatewayPort8080",
    "GatewayStaticAddresses",
    "GatewayHTTPListenerIsolation",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "GatewayInfrastructurePropagation",
    "GatewayAddressEmpty",
    "ListenerSet",
    "GatewayBackendClientCertificate",
    "GatewayFrontendClientCertificateValidation",
    "GatewayFrontendClientCertificateValidationInsecureFallback",
];

/// One conformance profile.
pub struct ConformanceProfile {
    pub name: &'static str,
    core: &'static [&'static str],
    /// Extended features beyond [`GATEWAY_EXTENDED`], by exact name.
    extended: &'static [&'static str],
    /// Extended features by name prefix (the route kind's extended feature sets:
    /// `HTTPRouteExtendedFeatures` are the `HTTPRoute…` features, and so on).
    extended_prefixes: &'static [&'static str],
}

/// The Gateway profiles, in report order.
pub const PROFILES: &[ConformanceProfile] = &[
    ConformanceProfile {
        name: "GATEWAY-HTTP",
        core: &["Gateway", "ReferenceGrant", "HTTPRoute"],
        extended: &[],
        extended_prefixes: &["HTTPRoute", "BackendTLSPolicy"],
    },
    ConformanceProfile {
        name: "GATEWAY-GRPC",
        core: &["Gateway", "ReferenceGrant", "GRPCRoute"],
        extended: &[],
        extended_prefixes: &["GRPCRoute"],
    },
    ConformanceProfile {
        name: "GATEWAY-TLS",
        core: &["Gateway", "ReferenceGrant", "TLSRoute"],
        extended: &["TLSRouteModeTerminate", "TLSRouteModeMixed"],
        extended_prefixes: &[],
    },
    ConformanceProfile {
        name: "GATEWAY-TCP",
        // v1.6.1 profiles.go: ReferenceGrant is core here too (TCPRouteReferenceGrant).
        core: &["Gateway", "TCPRoute", "ReferenceGrant"],
        extended: &[],
        extended_prefixes: &[],
    },
    ConformanceProfile {
        name: "GATEWAY-UDP",
        // v1.6.1 profiles.go: Gateway, UDPRoute and ReferenceGrant core; the extended
        // features are the Gateway ones (`UDPRouteFeatures` holds UDPRoute alone).
        core: &["Gateway", "UDPRoute", "ReferenceGrant"],
        extended: &[],
        extended_prefixes: &[],
    },
];

impl ConformanceProfile {
    fn is_core(&self, f: &str) -> bool {
        self.core.contains(&f)
    }

    fn is_extended(&self, f: &str) -> bool {
        !self.is_core(f)
            && (GATEWAY_EXTENDED.contains(&f)
                || self.extended.contains(&f)
                || self.extended_prefixes.iter().any(|p| f.starts_with(p)))
    }

    /// The level a test with these features has in this profile; `None` when it does not
    /// belong to it.
    pub fn level(&self, features: &[String]) -> Option<Profile> {
        if !features
            .iter()
            .all(|f| self.is_core(f) || self.is_extended(f))
        {
            return None;
        }
        Some(if features.iter().all(|f| self.is_core(f)) {
            Profile::Core
        } else {
            Profile::Extended
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(profile: &str, features: &[&str]) -> Option<Profile> {
        let p = PROFILES
            .iter()
            .find(|p| p.name == profile)
            .expect("profile");
        let features: Vec<String> = features.iter().map(|f| f.to_string()).collect();
        p.level(&features)
    }

    #[test]
    fn tests_are_classified_like_the_suite_does() {
        assert_eq!(
            level("GATEWAY-TLS", &["Gateway", "TLSRoute"]),
            Some(Profile::Core)
        );
        assert_eq!(
            level("GATEWAY-TLS", &["Gateway", "TLSRoute", "ReferenceGrant"]),
            Some(Profile::Core)
        );
        assert_eq!(
            level(
                "GATEWAY-TLS",
                &["Gateway", "TLSRoute", "TLSRouteModeTerminate"]
            ),
            Some(Profile::Extended)
        );
        assert_eq!(
            level("GATEWAY-TLS", &["Gateway", "ListenerSet", "TLSRoute"]),
            Some(Profile::Extended)
        );
        assert_eq!(level("GATEWAY-TLS", &["Gateway", "HTTPRoute"]), None);
        assert_eq!(level("GATEWAY-HTTP", &["Gateway", "TLSRoute"]), None);
        // v1.6.1: ReferenceGrant is core in GATEWAY-TCP (TCPRouteReferenceGrant is core).
        assert_eq!(
            level("GATEWAY-TCP", &["Gateway", "TCPRoute", "ReferenceGrant"]),
            Some(Profile::Core)
        );
        assert_eq!(
            level("GATEWAY-TCP", &["Gateway", "TCPRoute"]),
            Some(Profile::Core)
        );
        assert_eq!(
            level("GATEWAY-TCP", &["Gateway", "ListenerSet", "TCPRoute"]),
            Some(Profile::Extended)
        );
        assert_eq!(
            level("GATEWAY-UDP", &["Gateway", "UDPRoute", "ReferenceGrant"]),
            Some(Profile::Core)
        );
        assert_eq!(
            level("GATEWAY-UDP", &["UDPRoute", "Gateway"]),
            Some(Profile::Core)
        );
        assert_eq!(level("GATEWAY-TCP", &["Gateway", "UDPRoute"]), None);
        assert_eq!(level("GATEWAY-UDP", &["Gateway", "TCPRoute"]), None);
        // A Gateway-only test counts in every profile, at core level.
        for p in PROFILES {
            assert_eq!(
                p.level(&["Gateway".to_string()]),
                Some(Profile::Core),
                "{}",
                p.name
            );
        }
        assert_eq!(
            level("GATEWAY-HTTP", &["Gateway", "HTTPRoute", "HTTPRouteCORS"]),
            Some(Profile::Extended)
        );
    }
}
