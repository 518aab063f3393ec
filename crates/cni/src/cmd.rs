//! The CNI commands.

use std::{path::Path, time::Duration};

use plexus_api::{call, Attachment, EndpointSpec, EndpointState, Request, Response};
use plexus_netdev::{ip, link};
use serde_json::{json, Value};

use crate::{
    config::{Env, NetConf, SUPPORTED_VERSIONS},
    error::CniError,
};

const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

fn attachment(env: &Env) -> Attachment {
    Attachment {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
    }
}

/// Host-side veth name: `lxc` + a hash of the attachment, within the 15-byte limit and stable
/// across retries of the same ADD.
pub fn host_ifname(a: &Attachment) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in a.container_id.bytes().chain([b'/']).chain(a.ifname.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("lxc{:011x}", h & 0xfff_ffff_ffff)
}

/// VERSION: the versions this plugin supports.
pub fn version(stdin: &[u8]) -> String {
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "1.1.0".to_string());
    json!({"cniVersion": asked, "supportedVersions": SUPPORTED_VERSIONS[..5]}).to_string()
}

/// ADD: lease an address, create and configure the veth pair, register the endpoint.
pub fn add(env: &Env, conf: &NetConf) -> Result<String, CniError> {
    let netns = Path::new(&env.netns);
    if !netns.exists() {
        return Err(CniError::invalid_env(format!(
            "CNI_NETNS {} does not exist",
            env.netns
        )));
    }
    let att = attachment(env);
    let lease = match call(
        &conf.agent_socket,
        &Request::IpamAllocate(att.clone()),
        AGENT_TIMEOUT,
    )? {
        Response::Lease(l) => l,
        other => {
            return Err(CniError::plugin(
                "Unexpected agent answer",
                format!("{other:?}"),
            ))
        }
    };
    match wire(env, conf, &att, &lease.ipv4, &lease.gateway) {
        Ok(result) => Ok(result),
        Err(e) => {
            // Roll back: no half-wired pod, no leaked address.
            let host = host_ifname(&att);
            let _ = ip(None, &["link", "del", &host]);
            let _ = call(
                &conf.agent_socket,
                &Request::EndpointDelete(att),
                AGENT_TIMEOUT,
            );
            Err(e)
        }
    }
}

fn wire(
    env: &Env,
    conf: &NetConf,
    att: &Attachment,
    pod_ip: &str,
    gateway: &str,
) -> Result<String, CniError> {
    let netns = Path::new(&env.netns);
    let host = host_ifname(att);
    // A retried ADD may find its own veth from the first try.
    if link(None, &host)?.is_some() {
        ip(None, &["link", "del", &host])?;
    }
    if link(Some(netns), &env.ifname)?.is_some() {
        return Err(CniError::plugin(
            "Interface exists",
            format!("{} already exists in {}", env.ifname, env.netns),
        ));
    }
    let mtu = conf.mtu.to_string();
    ip(
        None,
        &[
            "link",
            "add",
            &host,
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            &env.ifname,
            "mtu",
            &mtu,
            "netns",
            &env.netns,
        ],
    )?;
    let host_link =
        link(None, &host)?.ok_or_else(|| CniError::plugin("veth vanished", host.clone()))?;
    let pod_link = link(Some(netns), &env.ifname)?
        .ok_or_else(|| CniError::plugin("veth vanished", env.ifname.clone()))?;

    // Pod side: a /32 address, the gateway on-link, a default route, and a permanent neighbour
    // entry for the gateway so the pod never ARPs for it.
    ip(Some(netns), &["link", "set", &env.ifname, "up"])?;
    ip(
        Some(netns),
        &["addr", "add", &format!("{pod_ip}/32"), "dev", &env.ifname],
    )?;
    ip(
        Some(netns),
        &["route", "add", gateway, "dev", &env.ifname, "scope", "link"],
    )?;
    ip(
        Some(netns),
        &[
            "route",
            "add",
            "default",
            "via",
            gateway,
            "dev",
            &env.ifname,
        ],
    )?;
    ip(
        Some(netns),
        &[
            "neigh",
            "replace",
            gateway,
            "lladdr",
            &host_link.address,
            "dev",
            &env.ifname,
            "nud",
            "permanent",
        ],
    )?;
    ip(None, &["link", "set", &host, "up"])?;

    let spec = EndpointSpec {
        attachment: att.clone(),
        pod_namespace: env.pod_namespace.clone(),
        pod_name: if env.pod_name.is_empty() {
            env.container_id.clone()
        } else {
            env.pod_name.clone()
        },
        netns: env.netns.clone(),
        host_ifname: host.clone(),
        host_ifindex: host_link.ifindex,
        host_mac: host_link.address.clone(),
        pod_mac: pod_link.address.clone(),
        ipv4: pod_ip.to_string(),
    };
    match call(
        &conf.agent_socket,
        &Request::EndpointCreate(spec),
        AGENT_TIMEOUT,
    )? {
        Response::Endpoint(_) => {}
        other => {
            return Err(CniError::plugin(
                "Unexpected agent answer",
                format!("{other:?}"),
            ))
        }
    }

    let mut ipc = json!({"address": format!("{pod_ip}/32"), "gateway": gateway, "interface": 1});
    if conf.legacy_result() {
        ipc["version"] = json!("4");
    }
    Ok(json!({
        "cniVersion": conf.cni_version,
        "interfaces": [
            {"name": host, "mac": host_link.address},
            {"name": env.ifname, "mac": pod_link.address, "sandbox": env.netns},
        ],
        "ips": [ipc],
        "routes": [{"dst": "0.0.0.0/0", "gw": gateway}],
        "dns": {},
    })
    .to_string())
}

/// DEL: unregister the endpoint (releasing its address) and remove the veth. Everything that is
/// already gone is skipped, so DEL is idempotent and safe on a half-created pod.
pub fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let att = attachment(env);
    let host = host_ifname(&att);
    let agent = call(
        &conf.agent_socket,
        &Request::EndpointDelete(att),
        AGENT_TIMEOUT,
    );
    if link(None, &host)?.is_some() {
        ip(None, &["link", "del", &host])?;
    }
    agent.map(|_| ()).map_err(CniError::from)
}

/// CHECK: the endpoint is ready in the agent, and both ends of the veth are as ADD left them.
pub fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let att = attachment(env);
    let ep = match call(
        &conf.agent_socket,
        &Request::EndpointGet(att.clone()),
        AGENT_TIMEOUT,
    )? {
        Response::Endpoint(e) => e,
        _ => {
            return Err(CniError::plugin(
                "Endpoint not found",
                format!("agent has no endpoint for {}", att.owner()),
            ))
        }
    };
    if ep.state != EndpointState::Ready {
        return Err(CniError::plugin(
            "Endpoint not ready",
            format!("endpoint {} is {}", ep.id, ep.state),
        ));
    }
    let host = host_ifname(&att);
    if link(None, &host)?.is_none() {
        return Err(CniError::plugin("Host interface missing", host));
    }
    let netns = Path::new(&env.netns);
    let addrs = ip(
        Some(netns),
        &["-j", "-4", "addr", "show", "dev", &env.ifname],
    )
    .map_err(|e| CniError::plugin("Pod interface missing", e.to_string()))?;
    if !addrs.contains(&format!("\"{}\"", ep.spec.ipv4)) {
        return Err(CniError::plugin(
            "Pod address missing",
            format!("{} in {} lacks {}", env.ifname, env.netns, ep.spec.ipv4),
        ));
    }
    Ok(())
}

/// STATUS: ready when the agent answers.
pub fn status(conf: &NetConf) -> Result<(), CniError> {
    call(&conf.agent_socket, &Request::Health, Duration::from_secs(5))
        .map(|_| ())
        .map_err(|e| CniError::not_available(e.to_string()))
}

/// GC: remove every endpoint and lease not in the valid attachments.
pub fn gc(conf: &NetConf) -> Result<(), CniError> {
    let valid = conf
        .valid_attachments
        .iter()
        .map(|v| Attachment {
            container_id: v.container_id.clone(),
            ifname: v.ifname.clone(),
        })
        .collect();
    call(&conf.agent_socket, &Request::Gc { valid }, AGENT_TIMEOUT)
        .map(|_| ())
        .map_err(CniError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ifname_fits_and_is_stable() {
        let a = Attachment {
            container_id: "abcdef0123456789".repeat(4),
            ifname: "eth0".into(),
        };
        let n = host_ifname(&a);
        assert!(n.len() <= 15 && n.starts_with("lxc"), "{n}");
        assert_eq!(n, host_ifname(&a.clone()));
        let b = Attachment {
            ifname: "eth1".into(),
            ..a
        };
        assert_ne!(n, host_ifname(&b));
    }
}
