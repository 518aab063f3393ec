//! `traffic_direction`: flows with one of the listed directions (ingress, egress).

use super::{Check, FilterError};
use crate::flow::FlowFilter;

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.traffic_direction.is_empty() {
        let directions = filter.traffic_direction.clone();
        checks.push(Box::new(move |flow| {
            directions.contains(&flow.traffic_direction)
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{dropped_flow, tcp_flow};
    use super::super::CompiledFilter;
    use crate::flow::{FlowFilter, TrafficDirection};

    #[test]
    fn matches_listed_directions() {
        let egress = CompiledFilter::new(&FlowFilter {
            traffic_direction: vec![TrafficDirection::Egress as i32],
            ..Default::default()
        })
        .unwrap();
        assert!(egress.matches(&tcp_flow()));
        assert!(!egress.matches(&dropped_flow()));
    }
}
