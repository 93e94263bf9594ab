//! One shutdown signal shared by every task of the agent.

use std::time::Duration;

use tokio::sync::watch;

/// Sender side: `trigger` once, every `Shutdown` clone sees it.
pub struct ShutdownTrigger(watch::Sender<bool>);

#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown is triggered (or the trigger was dropped).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Sleeps for `d`; true if shutdown came first.
    pub async fn sleep_or_stop(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => self.is_triggered(),
            _ = self.wait() => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trigger_wakes_every_clone_and_cuts_sleeps_short() {
        let (trigger, shutdown) = channel();
        let mut a = shutdown.clone();
        let mut b = shutdown;
        assert!(!a.sleep_or_stop(Duration::from_millis(1)).await);
        let sleeper = tokio::spawn(async move { b.sleep_or_stop(Duration::from_secs(60)).await });
        trigger.trigger();
        assert!(
            tokio::time::timeout(Duration::from_secs(5), sleeper)
                .await
                .expect("woke")
                .expect("join")
        );
        a.wait().await;
        assert!(a.is_triggered());
    }
}
