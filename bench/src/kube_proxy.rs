//! The NAT rules kube-proxy writes for ClusterIP Services, as the text its iptables mode feeds
//! `iptables-restore` and its nftables mode feeds `nft -f`, so a benchmark can load the same
//! shape into a network namespace and compare.
//!
//! iptables (kube-proxy's `pkg/proxy/iptables`): nat `PREROUTING` and `OUTPUT` jump to
//! `KUBE-SERVICES`, one `-d VIP -p tcp --dport P -j KUBE-SVC-*` rule per Service port there (a
//! linear list), then the `KUBE-NODEPORTS` rule; each `KUBE-SVC-*` marks traffic from outside
//! the cluster CIDR for masquerade and picks an endpoint with `-m statistic --mode random
//! --probability 1/n, 1/(n-1), ...`; each `KUBE-SEP-*` marks hairpin traffic and DNATs;
//! `KUBE-POSTROUTING` masquerades what was marked. Chain names are kube-proxy's hashes. Above
//! 1,000 endpoints kube-proxy's "large cluster mode" drops the comments of endpoint rules; so
//! does this writer.
//!
//! nftables (kube-proxy's `pkg/proxy/nftables`): table `ip kube-proxy`, a `service-ips` verdict
//! map `ipv4_addr . inet_proto . inet_service : goto service-*`, per Service a chain that marks
//! for masquerade and picks an endpoint with `numgen random mod n vmap`, per endpoint a chain
//! doing `dnat to`. Written, as kube-proxy does, as one transaction of `add` commands.

use std::{fmt::Write, net::Ipv4Addr};

use sha2::{Digest, Sha256};

use crate::service_set::{Svc, NAMESPACE, SERVICE_PORT, TARGET_PORT};

/// Above this many endpoints kube-proxy stops writing comments on endpoint rules
/// (`largeClusterEndpointsThreshold`).
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// RFC 4648 base32 (Go's `base32.StdEncoding`) of `data`, padded.
pub fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    for chunk in data.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let bits = buf.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        let chars = (chunk.len() * 8).div_ceil(5);
        for i in 0..8 {
            if i < chars {
                out.push(ALPHABET[((bits >> (35 - 5 * i)) & 31) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The first `len` characters of the base32 of the SHA-256 of `s`: kube-proxy's chain hash.
fn hash(s: &str, len: usize) -> String {
    let mut h = base32(&Sha256::digest(s.as_bytes()));
    h.truncate(len);
    h
}

/// kube-proxy's `ServicePortName.String()`: `ns/name`, then `:port-name` when the port is named
/// (ours are not).
fn service_port_name(svc: &Svc) -> String {
    format!("{NAMESPACE}/{}", svc.name)
}

/// `KUBE-SVC-` + hash of the service port name and the protocol (`servicePortChainName`).
pub fn svc_chain(port_name: &str, proto: &str) -> String {
    format!("KUBE-SVC-{}", hash(&format!("{port_name}{proto}"), 16))
}

/// `KUBE-SEP-` + hash of the service port name, protocol and `ip:port`
/// (`servicePortEndpointChainName`).
pub fn sep_chain(port_name: &str, proto: &str, endpoint: &str) -> String {
    format!(
        "KUBE-SEP-{}",
        hash(&format!("{port_name}{proto}{endpoint}"), 16)
    )
}

/// kube-proxy's `computeProbability`: `1/n` with ten decimals.
fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

/// What an `iptables-restore` text covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IptablesSync {
    /// The whole nat table, built-in chains and their jumps included: load it without
    /// `--noflush`, replacing whatever the table held.
    Initial,
    /// kube-proxy's full sync, for `--noflush`: every KUBE-* chain declared (so flushed) and
    /// written again.
    Full,
    /// kube-proxy's partial sync, for `--noflush`: its own chains (`KUBE-SERVICES` with every
    /// Service's rule, `KUBE-NODEPORTS`, `KUBE-POSTROUTING`, `KUBE-MARK-MASQ`) and the chains of
    /// the last `n` Services only (the changed ones); the other Services' chains stay as they are.
    Partial(usize),
}

/// The nat table kube-proxy's iptables mode writes for `svcs`; traffic from outside
/// `cluster_cidr` (kube-proxy's `--cluster-cidr`) to a ClusterIP is masqueraded.
pub fn iptables_nat(svcs: &[Svc], cluster_cidr: &str, sync: IptablesSync) -> String {
    let endpoints: usize = svcs.iter().map(|s| s.endpoints.len()).sum();
    let large = endpoints > LARGE_CLUSTER_ENDPOINTS;
    let with_chains = match sync {
        IptablesSync::Partial(n) => svcs.len().saturating_sub(n),
        _ => 0,
    };
    let chains: Vec<(String, Vec<String>)> = svcs
        .iter()
        .map(|s| {
            let name = service_port_name(s);
            let seps = s
                .endpoints
                .iter()
                .map(|ip| sep_chain(&name, "tcp", &format!("{ip}:{TARGET_PORT}")))
                .collect();
            (svc_chain(&name, "tcp"), seps)
        })
        .collect();

    // About 330 bytes per Service with comments, 250 without.
    let mut t = String::with_capacity(svcs.len() * 400 + 1024);
    t.push_str("*nat\n");
    if sync == IptablesSync::Initial {
        for c in ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"] {
            let _ = writeln!(t, ":{c} ACCEPT [0:0]");
        }
    }
    for c in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        let _ = writeln!(t, ":{c} - [0:0]");
    }
    for (svc, seps) in &chains[with_chains..] {
        let _ = writeln!(t, ":{svc} - [0:0]");
        for sep in seps {
            let _ = writeln!(t, ":{sep} - [0:0]");
        }
    }
    if sync == IptablesSync::Initial {
        t.push_str(
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
        );
    }
    t.push_str(
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n",
    );
    for (s, (svc, _)) in svcs.iter().zip(&chains) {
        let _ = writeln!(
            t,
            "-A KUBE-SERVICES -m comment --comment \"{} cluster IP\" -m tcp -p tcp -d {}/32 --dport {SERVICE_PORT} -j {svc}",
            service_port_name(s),
            s.vip
        );
    }
    t.push_str(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
    );
    for (s, (svc, seps)) in svcs.iter().zip(&chains).skip(with_chains) {
        let name = service_port_name(s);
        let _ = writeln!(
            t,
            "-A {svc} -m comment --comment \"{name} cluster IP\" -m tcp -p tcp -d {}/32 --dport {SERVICE_PORT} ! -s {cluster_cidr} -j KUBE-MARK-MASQ",
            s.vip
        );
        let n = seps.len();
        for (i, (ip, sep)) in s.endpoints.iter().zip(seps).enumerate() {
            let _ = write!(t, "-A {svc}");
            if !large {
                let _ = write!(t, " -m comment --comment \"{name} -> {ip}:{TARGET_PORT}\"");
            }
            if i + 1 < n {
                let _ = write!(
                    t,
                    " -m statistic --mode random --probability {}",
                    probability(n - i)
                );
            }
            let _ = writeln!(t, " -j {sep}");
        }
        for (ip, sep) in s.endpoints.iter().zip(seps) {
            let comment = if large {
                String::new()
            } else {
                format!(" -m comment --comment {name}")
            };
            let _ = writeln!(t, "-A {sep}{comment} -s {ip}/32 -j KUBE-MARK-MASQ");
            let _ = writeln!(
                t,
                "-A {sep}{comment} -m tcp -p tcp -j DNAT --to-destination {ip}:{TARGET_PORT}"
            );
        }
    }
    t.push_str("COMMIT\n");
    t
}

/// The name of the nftables table.
pub const NFT_TABLE: &str = "ip kube-proxy";

/// kube-proxy nftables mode's `hashAndTruncate`: 8 characters of hash, `-`, the name.
fn nft_hashed(base: &str) -> String {
    format!("{}-{base}", hash(base, 8))
}

/// `ns/name/proto/port-name` (`servicePortChainNameBase`).
fn nft_base(svc: &Svc) -> String {
    format!("{}/tcp/", service_port_name(svc))
}

/// The `service-*` chain of `svc`.
pub fn nft_service_chain(svc: &Svc) -> String {
    format!("service-{}", nft_hashed(&nft_base(svc)))
}

/// The `endpoint-*` chain of endpoint `ip` of `svc`.
pub fn nft_endpoint_chain(svc: &Svc, ip: Ipv4Addr) -> String {
    format!(
        "endpoint-{}",
        nft_hashed(&format!("{}__{ip}/{TARGET_PORT}", nft_base(svc)))
    )
}

/// The table with its base chains and no Services, replacing any earlier one: kube-proxy's
/// nftables mode on a node before it knows Services.
pub fn nft_skeleton() -> String {
    format!(
        "add table {NFT_TABLE} {{ comment \"rules for kube-proxy\" ; }}\n\
         delete table {NFT_TABLE}\n\
         add table {NFT_TABLE} {{ comment \"rules for kube-proxy\" ; }}\n\
         add chain {NFT_TABLE} mark-for-masquerade\n\
         add rule {NFT_TABLE} mark-for-masquerade mark set mark or 0x4000\n\
         add chain {NFT_TABLE} masquerading\n\
         add rule {NFT_TABLE} masquerading mark and 0x4000 == 0 return\n\
         add rule {NFT_TABLE} masquerading mark set mark xor 0x4000\n\
         add rule {NFT_TABLE} masquerading masquerade fully-random\n\
         add map {NFT_TABLE} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}\n\
         add map {NFT_TABLE} service-nodeports {{ type inet_proto . inet_service : verdict ; comment \"NodePort traffic\" ; }}\n\
         add chain {NFT_TABLE} nodeports\n\
         add rule {NFT_TABLE} nodeports meta l4proto . th dport vmap @service-nodeports\n\
         add chain {NFT_TABLE} services\n\
         add rule {NFT_TABLE} services ip daddr . meta l4proto . th dport vmap @service-ips\n\
         add rule {NFT_TABLE} services fib daddr type local ip daddr != 127.0.0.0/8 jump nodeports\n\
         add chain {NFT_TABLE} nat-prerouting {{ type nat hook prerouting priority dstnat ; }}\n\
         add rule {NFT_TABLE} nat-prerouting jump services\n\
         add chain {NFT_TABLE} nat-output {{ type nat hook output priority -100 ; }}\n\
         add rule {NFT_TABLE} nat-output jump services\n\
         add chain {NFT_TABLE} nat-postrouting {{ type nat hook postrouting priority srcnat ; }}\n\
         add rule {NFT_TABLE} nat-postrouting jump masquerading\n"
    )
}

/// The commands that add `svcs` to a table that has the skeleton: their chains, then their
/// `service-ips` elements (one transaction when fed to `nft -f` together).
pub fn nft_add_services(svcs: &[Svc], cluster_cidr: &str) -> String {
    let mut t = String::with_capacity(svcs.len() * 900);
    for s in svcs {
        let chain = nft_service_chain(s);
        let eps: Vec<String> = s
            .endpoints
            .iter()
            .map(|&ip| nft_endpoint_chain(s, ip))
            .collect();
        for (ip, ep) in s.endpoints.iter().zip(&eps) {
            let _ = writeln!(t, "add chain {NFT_TABLE} {ep}");
            let _ = writeln!(
                t,
                "add rule {NFT_TABLE} {ep} ip saddr {ip} jump mark-for-masquerade"
            );
            let _ = writeln!(
                t,
                "add rule {NFT_TABLE} {ep} meta l4proto tcp dnat to {ip}:{TARGET_PORT}"
            );
        }
        let _ = writeln!(t, "add chain {NFT_TABLE} {chain}");
        let _ = writeln!(
            t,
            "add rule {NFT_TABLE} {chain} ip daddr {} tcp dport {SERVICE_PORT} ip saddr != {cluster_cidr} jump mark-for-masquerade",
            s.vip
        );
        let _ = write!(
            t,
            "add rule {NFT_TABLE} {chain} numgen random mod {} vmap {{ ",
            eps.len()
        );
        for (i, ep) in eps.iter().enumerate() {
            let sep = if i + 1 < eps.len() { "," } else { "" };
            let _ = write!(t, "{i} : goto {ep}{sep} ");
        }
        t.push_str("}\n");
        let _ = writeln!(
            t,
            "add element {NFT_TABLE} service-ips {{ {} . tcp . {SERVICE_PORT} : goto {chain} }}",
            s.vip
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_set::{fake, services};

    #[test]
    fn base32_vectors() {
        // RFC 4648 section 10.
        for (input, out) in [
            ("", ""),
            ("f", "MY======"),
            ("fo", "MZXQ===="),
            ("foo", "MZXW6==="),
            ("foob", "MZXW6YQ="),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI======"),
        ] {
            assert_eq!(base32(input.as_bytes()), out, "{input:?}");
        }
    }

    #[test]
    fn chain_names_match_kube_proxy() {
        // From kube-proxy's own tests (pkg/proxy/iptables and pkg/proxy/nftables).
        assert_eq!(
            svc_chain("ns1/svc1:p80", "tcp"),
            "KUBE-SVC-XPGD46QRK7WJZT7O"
        );
        assert_eq!(
            sep_chain("ns1/svc1:p80", "tcp", "10.180.0.1:80"),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
        assert_eq!(
            format!("service-{}", nft_hashed("ns1/svc1/tcp/p80")),
            "service-ULMVA6XW-ns1/svc1/tcp/p80"
        );
        assert_eq!(
            format!("endpoint-{}", nft_hashed("ns1/svc1/tcp/p80__10.180.0.1/80")),
            "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
        );
    }

    #[test]
    fn iptables_shape() {
        let real = [Ipv4Addr::new(10, 250, 0, 20); 3];
        let set = services(0, 2, 2, &real);
        let t = iptables_nat(&set, "10.250.0.0/16", IptablesSync::Initial);
        assert!(t.starts_with("*nat\n:PREROUTING ACCEPT [0:0]\n"));
        assert!(t.ends_with("COMMIT\n"));
        let svc = svc_chain("bench-svc/svc-1", "tcp");
        let lines: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with(&format!("-A {svc}")))
            .collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].ends_with("! -s 10.250.0.0/16 -j KUBE-MARK-MASQ"));
        assert!(lines[1].contains("--probability 0.3333333333"));
        assert!(lines[2].contains("--probability 0.5000000000"));
        assert!(!lines[3].contains("statistic"));
        // The Services' rules come in order, the nodeports rule last.
        let services: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES"))
            .collect();
        assert_eq!(services.len(), 3);
        assert!(services[1].contains("-d 10.100.0.2/32"));
        assert!(services[2].contains("KUBE-NODEPORTS"));
        assert_eq!(t.matches("DNAT --to-destination").count(), 6);
        assert!(t.contains("-A PREROUTING -m comment"));

        // A sync for --noflush leaves the built-in chains alone; a partial one writes only
        // the last Service's chains but every Service's KUBE-SERVICES rule.
        let full = iptables_nat(&set, "10.250.0.0/16", IptablesSync::Full);
        assert!(!full.contains("PREROUTING"));
        assert_eq!(full.matches("DNAT").count(), 6);
        let partial = iptables_nat(&set, "10.250.0.0/16", IptablesSync::Partial(1));
        assert_eq!(partial.matches("DNAT").count(), 3);
        assert_eq!(partial.matches("-A KUBE-SERVICES").count(), 3);
        let svc0 = svc_chain("bench-svc/svc-0", "tcp");
        assert!(!partial.contains(&format!(":{svc0} ")));
        assert!(partial.contains(&format!("-j {svc0}\n")));
    }

    #[test]
    fn large_clusters_drop_endpoint_comments() {
        let set: Vec<Svc> = (0..400).map(fake).collect();
        let t = iptables_nat(&set, "10.250.0.0/16", IptablesSync::Full);
        assert!(!t.contains(" -> "));
        assert_eq!(t.matches("cluster IP").count(), 800);
        let t = iptables_nat(&set[..10], "10.250.0.0/16", IptablesSync::Full);
        assert_eq!(t.matches(" -> ").count(), 30);
    }

    #[test]
    fn nft_shape() {
        let s = fake(0);
        let t = nft_add_services(std::slice::from_ref(&s), "10.250.0.0/16");
        let chain = nft_service_chain(&s);
        assert!(chain.starts_with("service-") && chain.ends_with("-bench-svc/svc-0/tcp/"));
        assert!(t.contains(&format!(
            "add element ip kube-proxy service-ips {{ 10.100.0.1 . tcp . 80 : goto {chain} }}"
        )));
        assert!(t.contains("numgen random mod 3 vmap { 0 : goto endpoint-"));
        assert!(t.contains("dnat to 10.200.0.3:8080"));
        assert_eq!(t.matches("add chain").count(), 4);
        assert!(nft_skeleton().starts_with("add table ip kube-proxy"));
    }
}
