//! Packet capture by Kubernetes name: the datapath copies packets of the chosen endpoints into
//! the event ring, and a capture session collects them until it has enough or times out.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine;
use plexus_abi::CaptureSpec;
use plexus_api::{CaptureRequest, CapturedPacket, Response};

use crate::{endpoints::Agent, observer::ObserverHandle};

/// Endpoints (id → `ns/pod`) a request names.
fn targets(agent: &Agent, req: &CaptureRequest) -> BTreeMap<u32, String> {
    let wanted: Vec<(&str, &str)> = req
        .labels
        .iter()
        .filter_map(|l| l.split_once('='))
        .collect();
    agent
        .state
        .endpoints
        .values()
        .filter(|e| {
            let name = format!("{}/{}", e.spec.pod_namespace, e.spec.pod_name);
            let pod = agent.state.objects.pods.get(&name);
            req.pods.contains(&name)
                || (!wanted.is_empty()
                    && pod.is_some_and(|p| {
                        wanted
                            .iter()
                            .all(|(k, v)| p.labels.get(*k).is_some_and(|x| x == v))
                    }))
        })
        .map(|e| {
            (
                e.id,
                format!("{}/{}", e.spec.pod_namespace, e.spec.pod_name),
            )
        })
        .collect()
}

fn set(
    agent: &Agent,
    eps: &BTreeMap<u32, String>,
    spec: Option<CaptureSpec>,
) -> anyhow::Result<()> {
    let maps = agent.datapath.maps()?;
    let mut remaining = 0;
    for id in eps.keys() {
        match spec {
            Some(s) => maps.capture_add(*id, s)?,
            None => remaining = maps.capture_remove(*id)?,
        }
    }
    let mut cfg = maps.monitor()?;
    cfg.capture = u32::from(spec.is_some() || remaining > 0);
    maps.set_monitor(cfg)?;
    Ok(())
}

/// Runs one capture session.
pub async fn capture(
    agent: Arc<Mutex<Agent>>,
    obs: ObserverHandle,
    req: CaptureRequest,
) -> Response {
    let err = |e: anyhow::Error| Response::Error {
        message: format!("{e:#}"),
    };
    let spec = CaptureSpec {
        port: req.port,
        snaplen: req
            .snaplen
            .clamp(14, plexus_abi::event::EVENT_DATA_LEN as u16),
    };
    let mut rx = obs.captures.subscribe();
    let eps = {
        let Ok(a) = agent.lock() else {
            return err(anyhow::anyhow!("agent state poisoned"));
        };
        let eps = targets(&a, &req);
        if eps.is_empty() {
            return err(anyhow::anyhow!(
                "no endpoint matches pods {:?} labels {:?}",
                req.pods,
                req.labels
            ));
        }
        if let Err(e) = set(&a, &eps, Some(spec)) {
            return err(e);
        }
        eps
    };
    let mut packets = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(req.timeout_ms);
    while packets.len() < req.count {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(p)) => {
                if let Some(pod) = eps.get(&p.endpoint_id) {
                    packets.push(CapturedPacket {
                        pod: pod.clone(),
                        ts_ns: p.ts_ns,
                        orig_len: p.orig_len,
                        data: base64::engine::general_purpose::STANDARD.encode(&p.data),
                    });
                }
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    if let Ok(a) = agent.lock() {
        if let Err(e) = set(&a, &eps, None) {
            return err(e);
        }
    }
    Response::Packets { packets }
}
