//! `plexus observe`: flows from the agent's Hubble-compatible API, with the filters users know
//! from `hubble observe`, printed compact (like Hubble), as JSON, or as a table.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use plexus_hubble::{
    flow::{self, layer4::Protocol, Flow, FlowFilter},
    observer::{
        get_flows_response::ResponseTypes, observer_client::ObserverClient, GetFlowsRequest,
    },
};

use crate::{table::Table, Cli};

/// Output formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    /// One line per flow, like `hubble observe`.
    Compact,
    /// One JSON object per line.
    Json,
    /// A table.
    Table,
}

/// `plexus observe` options.
#[derive(Debug, Clone, Args)]
pub struct ObserveArgs {
    /// Flows from or to this pod (`ns/name` or `ns/name-prefix`, or `ns/`).
    #[arg(long)]
    pod: Vec<String>,
    /// Flows from this pod.
    #[arg(long)]
    from_pod: Vec<String>,
    /// Flows to this pod.
    #[arg(long)]
    to_pod: Vec<String>,
    /// Flows from or to pods of this namespace.
    #[arg(long, short = 'n')]
    namespace: Vec<String>,
    /// Flows from pods of this namespace.
    #[arg(long)]
    from_namespace: Vec<String>,
    /// Flows to pods of this namespace.
    #[arg(long)]
    to_namespace: Vec<String>,
    /// Flows from or to endpoints with this label selector (`k8s:app=web`, `app=web`).
    #[arg(long, short = 'l')]
    label: Vec<String>,
    /// Flows from endpoints with this label selector.
    #[arg(long)]
    from_label: Vec<String>,
    /// Flows to endpoints with this label selector.
    #[arg(long)]
    to_label: Vec<String>,
    /// Flows from or to this IP or CIDR.
    #[arg(long)]
    ip: Vec<String>,
    /// Flows from this IP or CIDR.
    #[arg(long)]
    from_ip: Vec<String>,
    /// Flows to this IP or CIDR.
    #[arg(long)]
    to_ip: Vec<String>,
    /// Flows from or to this security identity.
    #[arg(long)]
    identity: Vec<u32>,
    /// Flows from this identity.
    #[arg(long)]
    from_identity: Vec<u32>,
    /// Flows to this identity.
    #[arg(long)]
    to_identity: Vec<u32>,
    /// Flows from or to this port.
    #[arg(long)]
    port: Vec<u16>,
    /// Flows from this port.
    #[arg(long)]
    from_port: Vec<u16>,
    /// Flows to this port.
    #[arg(long)]
    to_port: Vec<u16>,
    /// L4 protocol: tcp, udp, icmp, sctp.
    #[arg(long)]
    protocol: Vec<String>,
    /// FORWARDED or DROPPED.
    #[arg(long)]
    verdict: Vec<String>,
    /// Event type: trace, drop, policy-verdict (optionally `type:subtype`).
    #[arg(long = "type", short = 't')]
    event_type: Vec<String>,
    /// Negate the filter flag that follows (as in `hubble observe --not --pod x/a`).
    #[arg(long, action = clap::ArgAction::Count)]
    not: u8,
    /// Keep streaming new flows.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only the last N flows (default 20 unless following).
    #[arg(long)]
    last: Option<u64>,
    /// Only flows newer than this: a duration like `30s`, `5m`, `1h`.
    #[arg(long)]
    since: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "compact")]
    output: Output,
    /// The agent's Observer API: a unix socket path or `host:port` (default: the lab node's).
    #[arg(long)]
    server: Option<String>,
}

fn duration(s: &str) -> anyhow::Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("--since {s:?}: want e.g. 30s, 5m, 1h"))?;
    Ok(match unit {
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        other => bail!("--since {s:?}: unknown unit {other:?}"),
    })
}

fn event_type(s: &str) -> anyhow::Result<flow::EventTypeFilter> {
    let (t, sub) = s.split_once(':').map_or((s, None), |(a, b)| (a, Some(b)));
    let r#type = match t {
        "drop" => 1,
        "trace" => 4,
        "policy-verdict" => 5,
        "capture" => 6,
        other => bail!("--type {other:?}: want trace, drop or policy-verdict"),
    };
    let sub_type = sub
        .map(str::parse::<i32>)
        .transpose()
        .with_context(|| format!("--type {s:?}"))?;
    Ok(flow::EventTypeFilter {
        r#type,
        match_sub_type: sub_type.is_some(),
        sub_type: sub_type.unwrap_or(0),
    })
}

impl ObserveArgs {
    /// The filters, as Hubble builds them: from/to flags in one filter (AND), either-side flags
    /// as two filters (a source one and a destination one, OR).
    fn filters(&self) -> anyhow::Result<Vec<FlowFilter>> {
        let mut base = FlowFilter {
            source_pod: self.from_pod.clone(),
            destination_pod: self.to_pod.clone(),
            source_label: self.from_label.clone(),
            destination_label: self.to_label.clone(),
            source_ip: self.from_ip.clone(),
            destination_ip: self.to_ip.clone(),
            source_identity: self.from_identity.clone(),
            destination_identity: self.to_identity.clone(),
            source_port: self.from_port.iter().map(u16::to_string).collect(),
            destination_port: self.to_port.iter().map(u16::to_string).collect(),
            protocol: self.protocol.iter().map(|p| p.to_lowercase()).collect(),
            ..Default::default()
        };
        base.source_pod
            .extend(self.from_namespace.iter().map(|n| format!("{n}/")));
        base.destination_pod
            .extend(self.to_namespace.iter().map(|n| format!("{n}/")));
        for v in &self.verdict {
            let v = flow::Verdict::from_str_name(&v.to_uppercase())
                .with_context(|| format!("--verdict {v:?}: want FORWARDED or DROPPED"))?;
            base.verdict.push(v as i32);
        }
        for t in &self.event_type {
            base.event_type.push(event_type(t)?);
        }
        let pods: Vec<String> = self
            .pod
            .iter()
            .cloned()
            .chain(self.namespace.iter().map(|n| format!("{n}/")))
            .collect();
        let either = !pods.is_empty()
            || !self.label.is_empty()
            || !self.ip.is_empty()
            || !self.identity.is_empty()
            || !self.port.is_empty();
        if !either {
            return Ok(if base == FlowFilter::default() {
                vec![]
            } else {
                vec![base]
            });
        }
        let mut src = base.clone();
        src.source_pod.extend(pods.iter().cloned());
        src.source_label.extend(self.label.iter().cloned());
        src.source_ip.extend(self.ip.iter().cloned());
        src.source_identity.extend(self.identity.iter().copied());
        src.source_port.extend(self.port.iter().map(u16::to_string));
        let mut dst = base;
        dst.destination_pod.extend(pods);
        dst.destination_label.extend(self.label.iter().cloned());
        dst.destination_ip.extend(self.ip.iter().cloned());
        dst.destination_identity
            .extend(self.identity.iter().copied());
        dst.destination_port
            .extend(self.port.iter().map(u16::to_string));
        Ok(vec![src, dst])
    }
}

fn endpoint_text(e: Option<&flow::Endpoint>, ip: &str, port: Option<u32>) -> String {
    let port = port
        .filter(|p| *p != 0)
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    match e {
        Some(e) if !e.pod_name.is_empty() => {
            format!("{}/{}{port} (ID:{})", e.namespace, e.pod_name, e.identity)
        }
        Some(e) => {
            let name = e
                .labels
                .iter()
                .find(|l| l.starts_with("reserved:"))
                .cloned()
                .unwrap_or_default();
            if name.is_empty() {
                format!("{ip}{port} (ID:{})", e.identity)
            } else {
                format!("{ip}{port} ({name})")
            }
        }
        None => format!("{ip}{port}"),
    }
}

fn ports(f: &Flow) -> (Option<u32>, Option<u32>, String) {
    match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => {
            let flags = t
                .flags
                .as_ref()
                .map(|fl| {
                    [
                        (fl.syn, "SYN"),
                        (fl.ack, "ACK"),
                        (fl.fin, "FIN"),
                        (fl.rst, "RST"),
                        (fl.psh, "PSH"),
                    ]
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, n)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
                })
                .unwrap_or_default();
            (
                Some(t.source_port),
                Some(t.destination_port),
                format!("TCP Flags: {flags}"),
            )
        }
        Some(Protocol::Udp(u)) => (Some(u.source_port), Some(u.destination_port), "UDP".into()),
        Some(Protocol::Sctp(u)) => (Some(u.source_port), Some(u.destination_port), "SCTP".into()),
        Some(Protocol::IcmPv4(i)) => (
            None,
            None,
            format!("ICMPv4 type {} code {}", i.r#type, i.code),
        ),
        _ => (None, None, String::new()),
    }
}

/// Hubble's human name of a drop reason, e.g. `Policy denied`.
fn drop_name(code: i32) -> String {
    match plexus_abi::DropReason::from_code(code as u8) {
        Some(r) => r.description().to_string(),
        None => flow::DropReason::try_from(code).map_or_else(
            |_| format!("reason {code}"),
            |r| r.as_str_name().to_string(),
        ),
    }
}

/// What happened, in Hubble's words: observation point, drop reason or verdict kind.
fn what(f: &Flow) -> String {
    match f.event_type.as_ref().map(|e| e.r#type) {
        Some(1) => drop_name(f.drop_reason_desc),
        Some(5) => {
            let dir = flow::TrafficDirection::try_from(f.traffic_direction)
                .map_or("", |d| d.as_str_name());
            format!("policy-verdict {dir}")
        }
        _ => flow::TraceObservationPoint::try_from(f.trace_observation_point).map_or_else(
            |_| String::new(),
            |p| p.as_str_name().to_lowercase().replace('_', "-"),
        ),
    }
}

fn time_text(f: &Flow) -> String {
    let t = f
        .time
        .as_ref()
        .map_or(0, |t| t.seconds * 1000 + t.nanos as i64 / 1_000_000);
    chrono::DateTime::from_timestamp_millis(t)
        .map_or_else(String::new, |d| d.format("%b %e %H:%M:%S%.3f").to_string())
}

/// The compact line of a flow.
pub fn compact(f: &Flow) -> String {
    let ip = f.ip.clone().unwrap_or_default();
    let (sp, dp, l4) = ports(f);
    let arrow = if f.is_reply == Some(true) { "<-" } else { "->" };
    let (a, b) = if f.is_reply == Some(true) {
        (
            endpoint_text(f.destination.as_ref(), &ip.destination, dp),
            endpoint_text(f.source.as_ref(), &ip.source, sp),
        )
    } else {
        (
            endpoint_text(f.source.as_ref(), &ip.source, sp),
            endpoint_text(f.destination.as_ref(), &ip.destination, dp),
        )
    };
    let verdict = flow::Verdict::try_from(f.verdict).map_or("UNKNOWN", |v| v.as_str_name());
    let rules: Vec<String> = f
        .ingress_denied_by
        .iter()
        .chain(&f.egress_denied_by)
        .chain(&f.ingress_allowed_by)
        .chain(&f.egress_allowed_by)
        .map(|p| {
            format!(
                "{} {}/{} {}",
                p.kind,
                p.namespace,
                p.name,
                p.labels.join(" ")
            )
        })
        .collect();
    let by = if rules.is_empty() {
        String::new()
    } else {
        format!(" by {}", rules.join("; "))
    };
    format!(
        "{}: {a} {arrow} {b} {} {verdict} ({l4}){by}",
        time_text(f),
        what(f)
    )
}

/// The Observer API address for this CLI invocation.
fn server(cli: &Cli, a: &ObserveArgs) -> anyhow::Result<String> {
    if let Some(s) = &a.server {
        return Ok(s.clone());
    }
    Ok(crate::socket(cli)?
        .with_file_name("hubble.sock")
        .display()
        .to_string())
}

async fn connect(addr: &str) -> anyhow::Result<ObserverClient<tonic::transport::Channel>> {
    if addr.contains(':') && !addr.starts_with('/') {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        return Ok(ObserverClient::new(ch));
    }
    let path = PathBuf::from(addr);
    let ch = tonic::transport::Endpoint::try_from("http://[::]:4244")?
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .with_context(|| format!("connecting to the Observer API at {addr}"))?;
    Ok(ObserverClient::new(ch))
}

/// Calls macro `$m` with every filter field of [`ObserveArgs`] (one list for every place that
/// walks them).
macro_rules! filter_fields {
    ($m:ident) => {
        $m!(
            pod,
            from_pod,
            to_pod,
            namespace,
            from_namespace,
            to_namespace,
            label,
            from_label,
            to_label,
            ip,
            from_ip,
            to_ip,
            identity,
            from_identity,
            to_identity,
            port,
            from_port,
            to_port,
            protocol,
            verdict,
            event_type
        )
    };
}

/// Splits the filter flags into those given plainly and those preceded by `--not`, using
/// where each value stood on the command line (clap keeps no order across different flags).
fn split_negated(a: &ObserveArgs) -> (ObserveArgs, ObserveArgs) {
    use clap::CommandFactory;
    let mut pos = a.clone();
    let mut neg = a.clone();
    let Ok(m) = crate::Cli::command().try_get_matches_from(std::env::args_os()) else {
        return (pos, neg.emptied());
    };
    let Some(m) = m.subcommand_matches("observe") else {
        return (pos, neg.emptied());
    };
    let nots: Vec<usize> = m.indices_of("not").map(|i| i.collect()).unwrap_or_default();
    // A value is negated when `--not` stands right before its flag (`--not --pod x`) or right
    // before a `--pod=x` form.
    let negated = |idx: usize| nots.iter().any(|n| *n + 2 == idx || *n + 1 == idx);
    macro_rules! split {
        ($($field:ident),*) => {$(
            let idx: Vec<usize> = m.indices_of(stringify!($field)).map(|i| i.collect()).unwrap_or_default();
            let vals = std::mem::take(&mut pos.$field);
            neg.$field.clear();
            for (v, i) in vals.into_iter().zip(idx.into_iter().chain(std::iter::repeat(0))) {
                if negated(i) { neg.$field.push(v) } else { pos.$field.push(v) }
            }
        )*};
    }
    filter_fields!(split);
    (pos, neg)
}

impl ObserveArgs {
    /// The same options with no filter flag set.
    fn emptied(mut self) -> Self {
        macro_rules! clear {
            ($($field:ident),*) => {$( self.$field.clear(); )*};
        }
        filter_fields!(clear);
        self
    }
}

/// Runs `plexus observe`.
pub fn run(cli: &Cli, a: &ObserveArgs) -> anyhow::Result<()> {
    let (pos, neg) = if a.not > 0 {
        split_negated(a)
    } else {
        (a.clone(), a.clone().emptied())
    };
    let allow = pos.filters()?;
    let deny = neg.filters()?;
    let since = a.since.as_deref().map(duration).transpose()?.map(|d| {
        let t = std::time::SystemTime::now() - d;
        let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        prost_types::Timestamp {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }
    });
    let number = a
        .last
        .unwrap_or(if a.follow || since.is_some() { 0 } else { 20 });
    let req = GetFlowsRequest {
        number,
        follow: a.follow,
        whitelist: allow,
        blacklist: deny,
        since,
        ..Default::default()
    };
    let addr = server(cli, a)?;
    let output = a.output;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut client = connect(&addr).await?;
        let mut stream = client.get_flows(req).await?.into_inner();
        let mut table = Table::new(&[
            "TIME",
            "SOURCE",
            "DESTINATION",
            "TYPE",
            "VERDICT",
            "SUMMARY",
        ]);
        while let Some(resp) = stream.message().await? {
            let Some(ResponseTypes::Flow(f)) = resp.response_types else {
                continue;
            };
            match output {
                Output::Compact => println!("{}", compact(&f)),
                Output::Json => println!("{}", flow_json(&f)),
                Output::Table => {
                    let ip = f.ip.clone().unwrap_or_default();
                    let (sp, dp, l4) = ports(&f);
                    table.row(vec![
                        time_text(&f),
                        endpoint_text(f.source.as_ref(), &ip.source, sp),
                        endpoint_text(f.destination.as_ref(), &ip.destination, dp),
                        what(&f),
                        flow::Verdict::try_from(f.verdict)
                            .map_or("UNKNOWN", |v| v.as_str_name())
                            .to_string(),
                        l4,
                    ]);
                }
            }
        }
        if let Output::Table = output {
            print!("{table}");
        }
        Ok::<_, anyhow::Error>(())
    })
}

/// A flow as JSON with Hubble's field names (the subset the CLI knows).
fn flow_json(f: &Flow) -> serde_json::Value {
    let ep = |e: Option<&flow::Endpoint>| {
        e.map(|e| {
            serde_json::json!({
                "ID": e.id, "identity": e.identity, "namespace": e.namespace, "labels": e.labels,
                "pod_name": e.pod_name,
                "workloads": e.workloads.iter().map(|w| serde_json::json!({"name": w.name, "kind": w.kind})).collect::<Vec<_>>(),
            })
        })
    };
    let ip = f.ip.clone().unwrap_or_default();
    let (sp, dp, l4) = ports(f);
    serde_json::json!({
        "time": time_text(f),
        "verdict": flow::Verdict::try_from(f.verdict).map_or("UNKNOWN", |v| v.as_str_name()),
        "drop_reason_desc": if f.drop_reason_desc != 0 { flow::DropReason::try_from(f.drop_reason_desc).map_or("UNKNOWN", |r| r.as_str_name()) } else { "" },
        "IP": {"source": ip.source, "destination": ip.destination},
        "l4": {"source_port": sp, "destination_port": dp, "summary": l4},
        "source": ep(f.source.as_ref()),
        "destination": ep(f.destination.as_ref()),
        "Type": "L3_L4",
        "node_name": f.node_name,
        "event_type": f.event_type.as_ref().map(|e| serde_json::json!({"type": e.r#type, "sub_type": e.sub_type})),
        "is_reply": f.is_reply,
        "traffic_direction": flow::TrafficDirection::try_from(f.traffic_direction).map_or("UNKNOWN", |d| d.as_str_name()),
        "trace_observation_point": flow::TraceObservationPoint::try_from(f.trace_observation_point).map_or("UNKNOWN_POINT", |p| p.as_str_name()),
        "policies": f.ingress_denied_by.iter().chain(&f.egress_denied_by).chain(&f.ingress_allowed_by).chain(&f.egress_allowed_by)
            .map(|p| serde_json::json!({"kind": p.kind, "namespace": p.namespace, "name": p.name, "labels": p.labels})).collect::<Vec<_>>(),
        "summary": compact(f),
    })
}
