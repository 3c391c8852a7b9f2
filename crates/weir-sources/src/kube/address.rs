//! Gateway addresses from the LoadBalancer Service in front of Weir.

use futures::StreamExt;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::watch;
use weir_store::Service;

/// Watch the Service `namespace/name` and publish its `status.loadBalancer.ingress` as
/// `("IPAddress", ip)` / `("Hostname", hostname)` pairs (empty while it has none or does not
/// exist), whenever they change. Runs until every receiver of `tx` is dropped.
pub async fn watch_service_addresses(
    client: Client,
    namespace: String,
    name: String,
    tx: watch::Sender<Vec<(String, String)>>,
) {
    let api: Api<Service> = Api::namespaced(client, &namespace);
    let mut service = std::pin::pin!(watcher::watch_object(api, &name).default_backoff());
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            event = service.next() => match event {
                None => return,
                Some(Ok(service)) => {
                    let addresses = service.as_ref().map(ingress_addresses).unwrap_or_default();
                    tx.send_if_modified(|current| {
                        if *current == addresses {
                            return false;
                        }
                        tracing::info!(service = %format!("{namespace}/{name}"), ?addresses, "gateway addresses changed");
                        *current = addresses;
                        true
                    });
                }
                Some(Err(err)) => tracing::warn!(
                    service = %format!("{namespace}/{name}"),
                    error = %err,
                    "watching the gateway Service failed; retrying with backoff (check --gateway-service and RBAC)"
                ),
            },
        }
    }
}

/// The Service's load balancer ingress points, IPs and hostnames in their listed order.
pub(crate) fn ingress_addresses(service: &Service) -> Vec<(String, String)> {
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    let mut out = Vec::new();
    for point in ingress.into_iter().flatten() {
        if let Some(ip) = point.ip.as_ref().filter(|ip| !ip.is_empty()) {
            out.push(("IPAddress".to_string(), ip.clone()));
        }
        if let Some(host) = point.hostname.as_ref().filter(|h| !h.is_empty()) {
            out.push(("Hostname".to_string(), host.clone()));
        }
    }
    out
}
