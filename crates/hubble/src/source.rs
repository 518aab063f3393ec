//! The interface between whatever stores flows (the agent's ring) and the Observer service.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::flow::{Flow, LostEventSource};

/// Counters of a flow source, as `ServerStatus` and `GetNodes` report them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// Flows stored now.
    pub num_flows: u64,
    /// How many flows the store holds at most.
    pub max_flows: u64,
    /// Flows observed since start, stored or not.
    pub seen_flows: u64,
    /// Events lost before they reached the store, per place of loss (cumulative counts).
    pub lost: Vec<(LostEventSource, u64)>,
    /// Time since the source started.
    pub uptime: Duration,
}

/// A store of recent flows that the Observer service reads.
pub trait FlowSource: Send + Sync + 'static {
    /// The stored flows, oldest first.
    fn snapshot(&self) -> Vec<Arc<Flow>>;

    /// A receiver of every flow stored from now on.
    fn subscribe(&self) -> broadcast::Receiver<Arc<Flow>>;

    /// The stored flows and a receiver of every later flow, with no flow missed in between.
    ///
    /// The default subscribes first and then takes the snapshot, so a flow stored in between
    /// may arrive twice; the service drops such repeats by pointer identity. Sources that can do
    /// both atomically (like [`crate::FlowRing`]) should.
    fn snapshot_and_subscribe(&self) -> (Vec<Arc<Flow>>, broadcast::Receiver<Arc<Flow>>) {
        let rx = self.subscribe();
        (self.snapshot(), rx)
    }

    /// Current counters.
    fn status(&self) -> Status;

    /// Name of the node the flows were observed on.
    fn node_name(&self) -> String;
}

impl<S: FlowSource + ?Sized> FlowSource for Arc<S> {
    fn snapshot(&self) -> Vec<Arc<Flow>> {
        (**self).snapshot()
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Flow>> {
        (**self).subscribe()
    }

    fn snapshot_and_subscribe(&self) -> (Vec<Arc<Flow>>, broadcast::Receiver<Arc<Flow>>) {
        (**self).snapshot_and_subscribe()
    }

    fn status(&self) -> Status {
        (**self).status()
    }

    fn node_name(&self) -> String {
        (**self).node_name()
    }
}
