//! Building status conditions.

use weir_store::{Condition, Time};

/// Builds conditions that share a generation and a time.
pub struct Conditions<'a> {
    pub generation: Option<i64>,
    pub now: &'a Time,
}

impl Conditions<'_> {
    pub fn make(
        &self,
        type_: &str,
        ok: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> Condition {
        Condition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: self.generation,
            last_transition_time: self.now.clone(),
        }
    }
}
