//! The `--max-cordoned-nodes` cap without a process-wide lock.
//!
//! Slots in use are the nodes the Node store shows cordoned by snapmend (unschedulable and
//! annotated), plus reservations: nodes a reconcile decided to cordon whose cordon the store does
//! not show yet. Checking for room and reserving happen under one short, synchronous lock, so two
//! reconciles can never both take the last slot; nothing is awaited while it is held. The
//! store is read under that lock too: a reservation is dropped only when a store newer than the
//! reservation shows the cordon (a snapshot taken earlier could still show an old cordon of the
//! same node and drop a reservation the store does not yet count). A new
//! leader starts with no reservations and counts from its freshly listed store, so the cap is
//! recomputed from the cluster on every start.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// Reservations of cordon slots, by node name (value: the SnapshotRepair that reserved it).
#[derive(Debug)]
pub struct CordonSlots {
    max: u32,
    reserved: Mutex<BTreeMap<String, String>>,
}

/// The answer to a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reservation {
    Granted,
    /// No room: this many other nodes hold slots.
    Full {
        held_elsewhere: u32,
    },
}

impl CordonSlots {
    pub fn new(max: u32) -> Self {
        CordonSlots {
            max,
            reserved: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.reserved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Slots held by nodes other than `node`: cordoned in the store or reserved. Reservations
    /// the store has caught up with are dropped (the store counts them now).
    pub fn held_elsewhere(&self, node: &str, store: impl FnOnce() -> BTreeSet<String>) -> u32 {
        let mut reserved = self.lock();
        count_elsewhere(&mut reserved, node, &store())
    }

    /// All slots in use (for the `snapmend_nodes_cordoned` gauge).
    pub fn in_use(&self, store: impl FnOnce() -> BTreeSet<String>) -> u32 {
        let mut reserved = self.lock();
        let cordoned_in_store = store();
        reserved.retain(|n, _| !cordoned_in_store.contains(n));
        to_u32(cordoned_in_store.len() + reserved.len())
    }

    /// Takes a slot for cordoning `node` for `repair` if one is free. A node that already holds
    /// a slot (cordoned or reserved) needs no second one.
    pub fn try_reserve(
        &self,
        node: &str,
        repair: &str,
        store: impl FnOnce() -> BTreeSet<String>,
    ) -> Reservation {
        let mut reserved = self.lock();
        let cordoned_in_store = store();
        let elsewhere = count_elsewhere(&mut reserved, node, &cordoned_in_store);
        if cordoned_in_store.contains(node) || reserved.contains_key(node) {
            return Reservation::Granted;
        }
        if elsewhere >= self.max {
            return Reservation::Full {
                held_elsewhere: elsewhere,
            };
        }
        reserved.insert(node.to_string(), repair.to_string());
        Reservation::Granted
    }

    /// Gives back `node`'s reservation if `repair` made it (the cordon was not needed, or was
    /// undone before the store showed it).
    pub fn release(&self, node: &str, repair: &str) {
        let mut reserved = self.lock();
        if reserved.get(node).is_some_and(|r| r == repair) {
            reserved.remove(node);
        }
    }
}

fn count_elsewhere(
    reserved: &mut BTreeMap<String, String>,
    node: &str,
    cordoned_in_store: &BTreeSet<String>,
) -> u32 {
    reserved.retain(|n, _| !cordoned_in_store.contains(n));
    let stored = cordoned_in_store.iter().filter(|n| *n != node).count();
    let pending = reserved.keys().filter(|n| *n != node).count();
    to_u32(stored + pending)
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn set(nodes: &[&str]) -> BTreeSet<String> {
        nodes.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_last_slot_goes_to_exactly_one_reconcile() {
        let slots = CordonSlots::new(1);
        let none = set(&[]);
        assert_eq!(
            slots.try_reserve("a", "sr-a", || none.clone()),
            Reservation::Granted
        );
        assert_eq!(
            slots.try_reserve("b", "sr-b", || none.clone()),
            Reservation::Full { held_elsewhere: 1 }
        );
        // The holder asking again (a retry) keeps its slot.
        assert_eq!(
            slots.try_reserve("a", "sr-a", || none.clone()),
            Reservation::Granted
        );
        assert_eq!(slots.in_use(|| none.clone()), 1);
    }

    #[test]
    fn racing_threads_never_exceed_the_cap() {
        for cap in 1..4u32 {
            let slots = Arc::new(CordonSlots::new(cap));
            let granted: Vec<bool> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..16)
                    .map(|i| {
                        let slots = slots.clone();
                        s.spawn(move || {
                            slots.try_reserve(&format!("n{i}"), &format!("sr{i}"), || set(&[]))
                                == Reservation::Granted
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or(false))
                    .collect()
            });
            assert_eq!(granted.iter().filter(|g| **g).count(), cap as usize);
        }
    }

    #[test]
    fn the_store_counts_cordons_and_takes_over_reservations() {
        let slots = CordonSlots::new(2);
        assert_eq!(
            slots.try_reserve("a", "sr-a", || set(&[])),
            Reservation::Granted
        );
        // The store now shows a cordoned (by this repair) and c (cordoned before a restart).
        let store = set(&["a", "c"]);
        assert_eq!(slots.in_use(|| store.clone()), 2);
        assert_eq!(
            slots.try_reserve("b", "sr-b", || store.clone()),
            Reservation::Full { held_elsewhere: 2 }
        );
        // A person uncordons c by hand: its slot is free again.
        assert_eq!(
            slots.try_reserve("b", "sr-b", || set(&["a"])),
            Reservation::Granted
        );
        assert_eq!(slots.held_elsewhere("b", || set(&["a"])), 1);
        assert_eq!(slots.held_elsewhere("z", || set(&["a"])), 2);
    }

    #[test]
    fn only_the_reserving_repair_releases() {
        let slots = CordonSlots::new(1);
        let none = set(&[]);
        assert_eq!(
            slots.try_reserve("a", "sr-a", || none.clone()),
            Reservation::Granted
        );
        slots.release("a", "sr-other");
        assert_eq!(slots.in_use(|| none.clone()), 1);
        slots.release("a", "sr-a");
        assert_eq!(slots.in_use(|| none.clone()), 0);
        assert_eq!(
            slots.try_reserve("b", "sr-b", || none.clone()),
            Reservation::Granted
        );
    }
}
