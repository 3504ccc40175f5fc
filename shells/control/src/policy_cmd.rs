//! `meshcontrol policy check` and `policy compile`: the policy compiler offline.

use std::collections::BTreeMap;
use std::fmt::Write;

use mesh_core::ip::filter::FilterRule;
use mesh_core::ip::packet::Proto;
use mesh_core::policy::{compile, NodeInfo, NodePolicy, NodeSshAction, Policy};
use serde::Serialize;

/// The result of `policy check`: a one-line summary, with warnings on following lines.
pub fn check(file: &str, text: &str) -> Result<String, String> {
    let policy = Policy::parse(file, text).map_err(|e| e.to_string())?;
    let mut out = format!("{file}: ok: {}", policy.summary());
    for w in &policy.warnings {
        let _ = write!(out, "\n{file}:{}: warning: {}", w.pos, w.message);
    }
    Ok(out)
}

/// What one node would receive, for people and for `--json`.
#[derive(Debug, Serialize)]
pub struct NodeReport {
    pub name: String,
    pub filter: Vec<FilterReport>,
    pub ssh: Vec<SshReport>,
    pub peers: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct FilterReport {
    pub srcs: Vec<String>,
    /// `prefix:first-last`.
    pub dsts: Vec<String>,
    /// Empty: TCP, UDP and ICMP.
    pub protos: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SshReport {
    pub action: &'static str,
    pub principals: Vec<String>,
    pub users: BTreeMap<String, String>,
    #[serde(rename = "acceptEnv")]
    pub accept_env: Vec<String>,
    /// The index of the policy's `ssh` entry.
    pub rule: u32,
}

/// Compiles `text` for `nodes` and reports every node, or only `only`.
pub fn compile_report(
    file: &str,
    text: &str,
    nodes: &[NodeInfo],
    only: Option<&str>,
) -> Result<Vec<NodeReport>, String> {
    let policy = Policy::parse(file, text).map_err(|e| e.to_string())?;
    if let Some(name) = only {
        if !nodes.iter().any(|n| n.name == name) {
            return Err(format!("no node named {name:?} in the node list"));
        }
    }
    let compiled = compile(&policy, nodes);
    let names: BTreeMap<u64, &str> = nodes.iter().map(|n| (n.id.0, n.name.as_str())).collect();
    Ok(nodes
        .iter()
        .zip(&compiled.nodes)
        .filter(|(n, _)| only.is_none_or(|o| o == n.name))
        .map(|(n, p)| report(n, p, nodes, &names))
        .collect())
}

fn report(node: &NodeInfo, policy: &NodePolicy, nodes: &[NodeInfo], names: &BTreeMap<u64, &str>) -> NodeReport {
    NodeReport {
        name: node.name.clone(),
        filter: policy.filter.iter().map(filter_report).collect(),
        ssh: policy
            .ssh
            .iter()
            .map(|r| SshReport {
                action: match r.action {
                    NodeSshAction::Accept => "accept",
                    NodeSshAction::Check => "check",
                },
                principals: r
                    .principals
                    .iter()
                    .map(|id| names.get(&id.0).map_or(id.0.to_string(), |n| n.to_string()))
                    .collect(),
                users: (*r.users).clone(),
                accept_env: r.accept_env.to_vec(),
                rule: r.rule,
            })
            .collect(),
        peers: policy.peers().into_iter().filter_map(|i| nodes.get(i)).map(|n| n.name.clone()).collect(),
    }
}

fn filter_report(rule: &FilterRule) -> FilterReport {
    FilterReport {
        srcs: rule.srcs.iter().map(|p| p.to_string()).collect(),
        dsts: rule
            .dsts
            .iter()
            .map(
                |(p, r)| {
                    if r.first == r.last {
                        format!("{p}:{}", r.first)
                    } else {
                        format!("{p}:{}-{}", r.first, r.last)
                    }
                },
            )
            .collect(),
        protos: rule
            .protos
            .iter()
            .map(|p| match p {
                Proto::Tcp => "tcp".to_string(),
                Proto::Udp => "udp".to_string(),
                Proto::Icmp => "icmp".to_string(),
                Proto::Other(n) => n.to_string(),
            })
            .collect(),
    }
}

/// The plain-text form of a report.
pub fn render(reports: &[NodeReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let _ = writeln!(out, "node {}", r.name);
        let _ =
            writeln!(out, "  peers: {}", if r.peers.is_empty() { "(none)".to_string() } else { r.peers.join(", ") });
        if r.filter.is_empty() {
            let _ = writeln!(out, "  filter: deny all inbound");
        }
        for f in &r.filter {
            let protos = if f.protos.is_empty() { "tcp,udp,icmp".to_string() } else { f.protos.join(",") };
            let _ = writeln!(out, "  allow {protos} from {} to {}", f.srcs.join(" "), f.dsts.join(" "));
        }
        if r.ssh.is_empty() {
            let _ = writeln!(out, "  ssh: deny");
        }
        for s in &r.ssh {
            let users: Vec<String> = s.users.iter().map(|(k, v)| format!("{k}->{v:?}")).collect();
            let _ = writeln!(
                out,
                "  ssh {} from {} as {} (ssh[{}])",
                s.action,
                s.principals.join(" "),
                users.join(" "),
                s.rule
            );
        }
    }
    out
}
