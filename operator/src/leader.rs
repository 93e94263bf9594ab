//! Leader election on a coordination.k8s.io Lease (kube-lease-manager): only the leader runs
//! controllers, so two replicas never act at once.

use std::future::Future;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Environment;
use crate::error::Error;

/// Name of the leader-election Lease, in the operator's namespace.
pub const LEADER_LEASE_NAME: &str = "snapmend-operator";

/// Renewal margin before expiry: a third of the lease, at least a second.
pub fn grace_seconds(lease_seconds: u64) -> u64 {
    (lease_seconds / 3).clamp(1, lease_seconds.saturating_sub(1).max(1))
}

/// Runs `lead` while this replica holds the Lease, again each time it wins it back, until
/// `shutdown` is cancelled. `lead` gets a token that is cancelled when leadership is lost.
/// `on_joined` runs once the Lease is reachable; `on_change` is told about each change of
/// leadership.
pub async fn run_when_leader<F, Fut>(
    client: Client,
    env: &Environment,
    shutdown: CancellationToken,
    on_joined: impl FnOnce(),
    on_change: impl Fn(bool),
    lead: F,
) -> Result<(), Error>
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    let election_error = |source| Error::LeaderElection {
        namespace: env.namespace.clone(),
        name: LEADER_LEASE_NAME.to_string(),
        source,
    };
    let manager = LeaseManagerBuilder::new(client, LEADER_LEASE_NAME)
        .with_namespace(&env.namespace)
        .with_identity(&env.identity)
        .with_duration(env.leader_lease_seconds)
        .with_grace(grace_seconds(env.leader_lease_seconds))
        .build()
        .await
        .map_err(election_error)?;
    let (mut leading, manager_task) = manager.watch().await;
    on_joined();
    info!(identity = %env.identity, lease = LEADER_LEASE_NAME, "joined leader election");
    'terms: loop {
        // Wait for leadership.
        while !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => if changed.is_err() {
                    warn!("leader election stopped");
                    break 'terms;
                },
                () = shutdown.cancelled() => break 'terms,
            }
        }
        info!(identity = %env.identity, "became leader");
        on_change(true);
        let term = shutdown.child_token();
        let work = lead(term.clone());
        tokio::pin!(work);
        loop {
            tokio::select! {
                () = &mut work => break,
                changed = leading.changed() => {
                    if changed.is_err() || !*leading.borrow_and_update() {
                        warn!(identity = %env.identity, "lost leadership; stopping controllers");
                        term.cancel();
                        (&mut work).await;
                        break;
                    }
                }
            }
        }
        on_change(false);
        if shutdown.is_cancelled() {
            break;
        }
    }
    // Closing the channel makes the manager release the Lease, so a standby takes over at once.
    drop(leading);
    match manager_task.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(election_error(source)),
        Err(join) => {
            warn!(error = %join, "leader election task ended abnormally");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_is_a_third_and_always_shorter_than_the_lease() {
        assert_eq!(grace_seconds(15), 5);
        assert_eq!(grace_seconds(4), 1);
        assert_eq!(grace_seconds(2), 1);
        for s in 2..100 {
            let g = grace_seconds(s);
            assert!(g >= 1 && g < s, "{s} -> {g}");
        }
    }
}
