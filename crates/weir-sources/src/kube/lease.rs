//! [`LeaderElection`]: which replica writes status, decided by a `coordination.k8s.io/v1`
//! Lease.
//!
//! Every `lease_duration / 3` each replica reads the Lease. The holder renews `renewTime`;
//! anyone else takes the Lease over when it is free (no holder) or expired (`renewTime +
//! leaseDurationSeconds` has passed). Every write carries the Lease's `resourceVersion`, so of
//! two replicas racing for it exactly one wins (the other gets 409 Conflict). A leader that
//! cannot renew steps down (publishes `false`) two thirds into the lease duration, before any
//! other replica may take over. Stopping releases the Lease so the next replica takes over at
//! its next check instead of after the lease expires.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;

use super::KubeError;

/// Leader election through a Lease (see the module docs).
pub struct LeaderElection {
    client: Client,
    namespace: String,
    lease_name: String,
    identity: String,
    lease_duration: Duration,
}

impl LeaderElection {
    pub fn new(
        client: Client,
        namespace: String,
        lease_name: String,
        identity: String,
        lease_duration: Duration,
    ) -> Self {
        Self {
            client,
            namespace,
            lease_name,
            identity,
            lease_duration,
        }
    }

    /// Acquire and renew the Lease, publishing whether we lead, until every receiver of
    /// `is_leader` is dropped; then release it. (Dropping this future instead leaves the Lease
    /// to expire.)
    pub async fn run(self, is_leader: watch::Sender<bool>) {
        self.run_until(is_leader, std::future::pending()).await
    }

    /// Like [`run`](Self::run), also stopping (and releasing the Lease) when `shutdown`
    /// completes.
    pub async fn run_until(
        self,
        is_leader: watch::Sender<bool>,
        shutdown: impl Future<Output = ()>,
    ) {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let retry = (self.lease_duration / 3).max(Duration::from_millis(10));
        // Step down this long after the last successful renewal if renewals keep failing.
        let renew_deadline = self.lease_duration * 2 / 3;
        let mut renewed_at: Option<Instant> = None;
        tokio::pin!(shutdown);
        loop {
            let leading = match self.try_acquire_or_renew(&api).await {
                Ok(true) => {
                    renewed_at = Some(Instant::now());
                    true
                }
                Ok(false) => {
                    renewed_at = None;
                    false
                }
                Err(err) => {
                    tracing::warn!(error = %err, "leader election: lease check failed");
                    renewed_at.is_some_and(|at| at.elapsed() < renew_deadline)
                }
            };
            is_leader.send_if_modified(|current| {
                if *current == leading {
                    return false;
                }
                *current = leading;
                tracing::info!(identity = %self.identity, leader = leading, "leadership changed");
                true
            });
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = &mut shutdown => break,
                _ = is_leader.closed() => break,
            }
        }
        // Stop acting as the leader before letting anyone else take over.
        let was_leader = is_leader.send_replace(false);
        if was_leader || renewed_at.is_some() {
            if let Err(err) = self.release(&api).await {
                tracing::warn!(error = %err, "leader election: could not release the lease; it expires on its own");
            }
        }
    }

    fn lease_error(&self, verb: &'static str, source: kube::Error) -> KubeError {
        KubeError::Lease {
            verb,
            namespace: self.namespace.clone(),
            name: self.lease_name.clone(),
            source,
        }
    }

    fn duration_seconds(&self) -> i32 {
        let millis = self.lease_duration.as_millis().max(1);
        i32::try_from(millis.div_ceil(1000)).unwrap_or(i32::MAX)
    }

    /// One round: returns whether we hold the Lease afterwards.
    async fn try_acquire_or_renew(&self, api: &Api<Lease>) -> Result<bool, KubeError> {
        let now = Timestamp::now();
        let existing = api
            .get_opt(&self.lease_name)
            .await
            .map_err(|e| self.lease_error("read", e))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.lease_name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.duration_seconds()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.lease_error("create", e)),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder == self.identity {
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(self.duration_seconds());
        } else if holder.is_empty() || expired(spec, now, self.lease_duration) {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(self.duration_seconds());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        } else {
            return Ok(false);
        }
        // `lease` still carries the resourceVersion we read: a concurrent writer wins, we lose.
        match api
            .replace(&self.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.lease_error("update", e)),
        }
    }

    /// Clear the holder if it is still us.
    async fn release(&self, api: &Api<Lease>) -> Result<(), KubeError> {
        let Some(mut lease) = api
            .get_opt(&self.lease_name)
            .await
            .map_err(|e| self.lease_error("read", e))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match api
            .replace(&self.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                tracing::info!(identity = %self.identity, "leader election: lease released");
                Ok(())
            }
            // Someone else already took it: nothing to release.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(self.lease_error("release", e)),
        }
    }
}

/// Whether the holder's `renewTime + leaseDurationSeconds` (ours if unset) has passed.
fn expired(spec: &LeaseSpec, now: Timestamp, default_duration: Duration) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let duration = spec
        .lease_duration_seconds
        .map(|s| SignedDuration::from_secs(i64::from(s)))
        .unwrap_or_else(|| {
            SignedDuration::try_from(default_duration).unwrap_or(SignedDuration::MAX)
        });
    match renewed.0.checked_add(duration) {
        Ok(expiry) => expiry < now,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(renewed_secs_ago: i64, duration: i32) -> LeaseSpec {
        let renewed = Timestamp::now() - SignedDuration::from_secs(renewed_secs_ago);
        LeaseSpec {
            holder_identity: Some("other".into()),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(duration),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_expires_after_its_duration_since_the_last_renewal() {
        let now = Timestamp::now();
        assert!(!expired(&spec(1, 15), now, Duration::from_secs(15)));
        assert!(expired(&spec(16, 15), now, Duration::from_secs(15)));
        assert!(expired(&LeaseSpec::default(), now, Duration::from_secs(15)));
    }
}
