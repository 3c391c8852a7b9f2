//! Control-plane metrics: reloads, snapshot generation, translation time. The proxy registers
//! its own request metrics on the same registry.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct ControlMetrics {
    pub reloads: IntCounterVec,
    pub snapshot_generation: IntGauge,
    pub translation_seconds: Histogram,
    pub objects: IntGauge,
}

impl ControlMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "weir_config_reloads_total",
                "Configuration reloads by result: ok, or failed when the source reported errors (the last good version of the affected objects keeps serving).",
            ),
            &["result"],
        )?;
        let snapshot_generation = IntGauge::new(
            "weir_snapshot_generation",
            "Generation of the routing snapshot being served.",
        )?;
        let translation_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "weir_translation_duration_seconds",
                "Time to translate the object store into a routing snapshot.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )?;
        let objects = IntGauge::new("weir_store_objects", "Objects held in the store.")?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(snapshot_generation.clone()))?;
        registry.register(Box::new(translation_seconds.clone()))?;
        registry.register(Box::new(objects.clone()))?;
        Ok(Self {
            reloads,
            snapshot_generation,
            translation_seconds,
            objects,
        })
    }
}
