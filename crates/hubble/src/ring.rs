//! `FlowRing`: the in-memory flow store the agent fills, a bounded queue of recent flows plus a
//! broadcast channel that hands each new flow to followers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::broadcast;

use crate::flow::{Flow, LostEventSource};
use crate::source::{FlowSource, Status};

/// The most recent flows of a node, oldest evicted first.
#[derive(Debug)]
pub struct FlowRing {
    node_name: String,
    capacity: usize,
    started: Instant,
    state: Mutex<RingState>,
    tx: broadcast::Sender<Arc<Flow>>,
}

#[derive(Debug, Default)]
struct RingState {
    flows: VecDeque<Arc<Flow>>,
    seen: u64,
    /// Cumulative losses, keyed by `LostEventSource` number.
    lost: BTreeMap<i32, u64>,
}

impl FlowRing {
    /// A ring of `capacity` flows (at least 1) for node `node_name`; a follower that falls more
    /// than `capacity` flows behind is told how many it lost.
    pub fn new(node_name: impl Into<String>, capacity: usize) -> Self {
        Self::with_follower_backlog(node_name, capacity, capacity)
    }

    /// Like [`FlowRing::new`], with a follower backlog (flows a slow follower may fall behind
    /// before losing some) different from the ring's capacity.
    pub fn with_follower_backlog(
        node_name: impl Into<String>,
        capacity: usize,
        follower_backlog: usize,
    ) -> Self {
        let (tx, _) = broadcast::channel(follower_backlog.max(1));
        FlowRing {
            node_name: node_name.into(),
            capacity: capacity.max(1),
            started: Instant::now(),
            state: Mutex::new(RingState::default()),
            tx,
        }
    }

    fn state(&self) -> MutexGuard<'_, RingState> {
        // A panic while holding the lock leaves the queue consistent: recover it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `flow`, evicting the oldest one when full, and hands it to followers.
    pub fn push(&self, flow: Flow) -> Arc<Flow> {
        let flow = Arc::new(flow);
        self.push_arc(Arc::clone(&flow));
        flow
    }

    /// Stores an already shared flow; see [`FlowRing::push`].
    pub fn push_arc(&self, flow: Arc<Flow>) {
        let mut state = self.state();
        if state.flows.len() == self.capacity {
            state.flows.pop_front();
        }
        state.flows.push_back(Arc::clone(&flow));
        state.seen += 1;
        // Sent under the lock so that `snapshot_and_subscribe` sees each flow exactly once.
        // No receivers is not an error here.
        let _ = self.tx.send(flow);
    }

    /// Records `count` events lost at `source` before they became flows (for example records
    /// the datapath could not put into its ring, or a full queue in front of this one).
    pub fn record_lost(&self, source: LostEventSource, count: u64) {
        if count > 0 {
            *self.state().lost.entry(source as i32).or_default() += count;
        }
    }

    /// Flows stored now.
    pub fn len(&self) -> usize {
        self.state().flows.len()
    }

    /// Whether no flow is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many flows the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many followers (receivers of new flows) are subscribed now.
    pub fn followers(&self) -> usize {
        self.tx.receiver_count()
    }
}

impl FlowSource for FlowRing {
    fn snapshot(&self) -> Vec<Arc<Flow>> {
        self.state().flows.iter().cloned().collect()
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Flow>> {
        self.tx.subscribe()
    }

    fn snapshot_and_subscribe(&self) -> (Vec<Arc<Flow>>, broadcast::Receiver<Arc<Flow>>) {
        let state = self.state();
        (state.flows.iter().cloned().collect(), self.tx.subscribe())
    }

    fn status(&self) -> Status {
        let state = self.state();
        Status {
            num_flows: state.flows.len() as u64,
            max_flows: self.capacity as u64,
            seen_flows: state.seen,
            lost: state
                .lost
                .iter()
                .map(|(source, count)| {
                    let source = LostEventSource::try_from(*source)
                        .unwrap_or(LostEventSource::UnknownLostEventSource);
                    (source, *count)
                })
                .collect(),
            uptime: self.started.elapsed(),
        }
    }

    fn node_name(&self) -> String {
        self.node_name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::broadcast::error::TryRecvError;

    fn flow(n: u32) -> Flow {
        Flow {
            uuid: format!("flow-{n}"),
            ..Default::default()
        }
    }

    fn uuids(flows: &[Arc<Flow>]) -> Vec<String> {
        flows.iter().map(|f| f.uuid.clone()).collect()
    }

    #[test]
    fn keeps_the_newest_flows_oldest_first() {
        let ring = FlowRing::new("node-1", 3);
        assert!(ring.is_empty());
        for n in 0..5 {
            ring.push(flow(n));
        }
        assert_eq!(ring.len(), 3);
        assert_eq!(uuids(&ring.snapshot()), ["flow-2", "flow-3", "flow-4"]);
        let status = ring.status();
        assert_eq!(
            (status.num_flows, status.max_flows, status.seen_flows),
            (3, 3, 5)
        );
        assert_eq!(ring.node_name(), "node-1");
    }

    #[test]
    fn zero_capacity_still_holds_one_flow() {
        let ring = FlowRing::new("n", 0);
        ring.push(flow(1));
        ring.push(flow(2));
        assert_eq!(uuids(&ring.snapshot()), ["flow-2"]);
    }

    #[test]
    fn followers_get_new_flows_only() {
        let ring = FlowRing::new("n", 8);
        ring.push(flow(0));
        let (snap, mut rx) = ring.snapshot_and_subscribe();
        assert_eq!(ring.followers(), 1);
        assert_eq!(uuids(&snap), ["flow-0"]);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        let pushed = ring.push(flow(1));
        let got = rx.try_recv().unwrap();
        assert!(
            Arc::ptr_eq(&pushed, &got),
            "followers share the stored flow"
        );
    }

    #[test]
    fn slow_followers_learn_how_many_they_lost() {
        let ring = FlowRing::with_follower_backlog("n", 100, 2);
        let mut rx = ring.subscribe();
        for n in 0..5 {
            ring.push(flow(n));
        }
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Lagged(3))));
        assert_eq!(rx.try_recv().unwrap().uuid, "flow-3");
    }

    #[test]
    fn lost_events_accumulate_per_source() {
        let ring = FlowRing::new("n", 4);
        ring.record_lost(LostEventSource::PerfEventRingBuffer, 3);
        ring.record_lost(LostEventSource::PerfEventRingBuffer, 2);
        ring.record_lost(LostEventSource::ObserverEventsQueue, 1);
        ring.record_lost(LostEventSource::ObserverEventsQueue, 0);
        assert_eq!(
            ring.status().lost,
            vec![
                (LostEventSource::PerfEventRingBuffer, 5),
                (LostEventSource::ObserverEventsQueue, 1)
            ]
        );
    }

    #[test]
    fn pushing_from_many_threads_counts_every_flow() {
        let ring = Arc::new(FlowRing::new("n", 64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let ring = Arc::clone(&ring);
                std::thread::spawn(move || {
                    for n in 0..250 {
                        ring.push(flow(t * 1000 + n));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let status = ring.status();
        assert_eq!((status.num_flows, status.seen_flows), (64, 1000));
    }
}
