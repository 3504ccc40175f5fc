//! From the HuJSON tree to a checked [`Policy`]: every field known, every selector valid
//! where it appears, every group and tag defined. Errors carry the position of the value
//! at fault and the path of its field.

use super::alias::{self, Alias, Hosts, Place};
use super::hujson::{self, array, boolean, required, string, strings, Fields, Json, Located, Pos, Result, Spanned};
use super::model::*;
use super::ports::{parse_ports, NamedProto};
use crate::ip::filter::PortRange;
use crate::wireguard::IpPrefix;

const TOP_LEVEL: &[&str] = &[
    "groups",
    "hosts",
    "tagOwners",
    "acls",
    "grants",
    "ssh",
    "tests",
    "sshTests",
    "autoApprovers",
    "nodeAttrs",
    "randomizeClientPort",
    "derpMap",
    "disableIPv4",
    "OneCGNATRoute",
    "postures",
];

/// Reads a whole policy.
pub(crate) fn read(text: &str) -> Result<Policy> {
    let tree = hujson::parse(text)?;
    let mut top = Fields::of(&tree, "")?;
    let mut reader = Reader { policy: Policy::default() };
    // Definitions first: every later selector is checked against them.
    if let Some(v) = top.take("hosts") {
        reader.hosts(v)?;
    }
    if let Some(v) = top.take("groups") {
        reader.groups(v)?;
    }
    if let Some(v) = top.take("tagOwners") {
        reader.tag_owners(v)?;
    }
    if let Some(v) = top.take("acls") {
        for (i, item) in array(v, "acls")?.iter().enumerate() {
            reader.acl(item, i)?;
        }
    }
    if let Some(v) = top.take("grants") {
        for (i, item) in array(v, "grants")?.iter().enumerate() {
            reader.grant(item, i)?;
        }
    }
    if let Some(v) = top.take("ssh") {
        for (i, item) in array(v, "ssh")?.iter().enumerate() {
            reader.ssh(item, i)?;
        }
    }
    if let Some(v) = top.take("tests") {
        for (i, item) in array(v, "tests")?.iter().enumerate() {
            reader.test(item, i)?;
        }
    }
    if let Some(v) = top.take("sshTests") {
        for (i, item) in array(v, "sshTests")?.iter().enumerate() {
            reader.ssh_test(item, i)?;
        }
    }
    if let Some(v) = top.take("autoApprovers") {
        reader.auto_approvers(v)?;
    }
    if let Some(v) = top.take("nodeAttrs") {
        for (i, item) in array(v, "nodeAttrs")?.iter().enumerate() {
            reader.node_attr(item, i)?;
        }
    }
    if let Some(v) = top.take("randomizeClientPort") {
        boolean(v, "randomizeClientPort")?;
        reader.warn(v.pos, "randomizeClientPort is not used: meshd always listens on its configured port");
    }
    for key in ["derpMap", "disableIPv4", "OneCGNATRoute", "postures"] {
        if let Some(v) = top.take(key) {
            reader.warn(v.pos, format!("{key} is not used by this system and is ignored"));
        }
    }
    top.finish(TOP_LEVEL)?;
    Ok(reader.policy)
}

struct Reader {
    policy: Policy,
}

impl Hosts for Reader {
    fn host(&self, name: &str) -> Option<IpPrefix> {
        self.policy.hosts.get(name).copied()
    }
}

fn err<T>(pos: Pos, message: impl Into<String>) -> Result<T> {
    Err(Located::new(pos, message))
}

impl Reader {
    fn warn(&mut self, pos: Pos, message: impl Into<String>) {
        self.policy.warnings.push(Warning { pos, message: message.into() });
    }

    /// A selector at `place`, with groups and tags checked against their definitions.
    fn selector(&self, s: &Spanned<String>, place: Place, path: &str) -> Result<Alias> {
        let alias = alias::parse(&s.value, place, self).map_err(|m| Located::new(s.pos, format!("{path}: {m}")))?;
        self.defined(&alias, s.pos, path)?;
        Ok(alias)
    }

    fn defined(&self, alias: &Alias, pos: Pos, path: &str) -> Result<()> {
        match alias {
            Alias::Group(g) if !self.policy.groups.contains_key(g) => {
                err(pos, format!("{path}: {g} is not defined in groups"))
            }
            Alias::Tag(t) if !self.policy.tag_owners.contains_key(t) => {
                err(pos, format!("{path}: {t} is not defined in tagOwners"))
            }
            _ => Ok(()),
        }
    }

    fn selectors(&self, value: &Spanned<Json>, place: Place, path: &str) -> Result<Vec<Alias>> {
        strings(value, path)?
            .iter()
            .enumerate()
            .map(|(i, s)| self.selector(s, place, &format!("{path}[{i}]")))
            .collect()
    }

    fn hosts(&mut self, value: &Spanned<Json>) -> Result<()> {
        let mut fields = Fields::of(value, "hosts")?;
        for m in fields.rest() {
            let name = &m.name.value;
            let good = !name.is_empty()
                && name.len() <= 63
                && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !name.starts_with('-');
            if !good {
                return err(
                    m.name.pos,
                    format!("hosts: {name:?} is not a valid host name (letters, digits, -, _ and .)"),
                );
            }
            let addr = string(&m.value, &format!("hosts.{name}"))?;
            let prefix =
                alias::parse_prefix(&addr.value).map_err(|e| Located::new(addr.pos, format!("hosts.{name}: {e}")))?;
            self.policy.hosts.insert(name.clone(), prefix);
        }
        Ok(())
    }

    fn groups(&mut self, value: &Spanned<Json>) -> Result<()> {
        let mut fields = Fields::of(value, "groups")?;
        for m in fields.rest() {
            let name = &m.name.value;
            if !name.starts_with("group:") {
                return err(m.name.pos, format!("groups: {name:?} must start with \"group:\""));
            }
            alias::check_group_name(name).map_err(|e| Located::new(m.name.pos, format!("groups: {e}")))?;
            let path = format!("groups.{name}");
            let mut users = Vec::new();
            for (i, member) in strings(&m.value, &path)?.iter().enumerate() {
                let at = format!("{path}[{i}]");
                if member.value.starts_with("group:") {
                    return err(member.pos, format!("{at}: groups cannot contain groups ({})", member.value));
                }
                if member.value.starts_with("tag:") || member.value.starts_with("autogroup:") {
                    return err(member.pos, format!("{at}: groups contain users only ({})", member.value));
                }
                alias::check_user_name(&member.value).map_err(|e| Located::new(member.pos, format!("{at}: {e}")))?;
                users.push(member.value.clone());
            }
            self.policy.groups.insert(name.clone(), users);
        }
        Ok(())
    }

    fn tag_owners(&mut self, value: &Spanned<Json>) -> Result<()> {
        let mut fields = Fields::of(value, "tagOwners")?;
        let members = fields.rest();
        // Tags may own tags: know every tag before checking owners.
        for m in &members {
            alias::check_tag_name(&m.name.value)
                .and_then(|()| {
                    if m.name.value.starts_with("tag:") {
                        Ok(())
                    } else {
                        Err(format!("{:?} must start with \"tag:\"", m.name.value))
                    }
                })
                .map_err(|e| Located::new(m.name.pos, format!("tagOwners: {e}")))?;
            self.policy.tag_owners.insert(m.name.value.clone(), Vec::new());
        }
        for m in members {
            let path = format!("tagOwners.{}", m.name.value);
            let mut owners = Vec::new();
            for (i, owner) in strings(&m.value, &path)?.iter().enumerate() {
                let at = format!("{path}[{i}]");
                let o = &owner.value;
                if !matches!(o.as_str(), "autogroup:admin" | "autogroup:member" | "autogroup:owner") {
                    let alias =
                        alias::parse(o, Place::Src, self).map_err(|e| Located::new(owner.pos, format!("{at}: {e}")))?;
                    if !matches!(alias, Alias::User(_) | Alias::Group(_) | Alias::Tag(_)) {
                        return err(owner.pos, format!("{at}: tags are owned by users, groups or tags, not {o}"));
                    }
                    self.defined(&alias, owner.pos, &at)?;
                }
                owners.push(o.clone());
            }
            self.policy.tag_owners.insert(m.name.value.clone(), owners);
        }
        Ok(())
    }

    fn acl(&mut self, value: &Spanned<Json>, index: usize) -> Result<()> {
        let path = format!("acls[{index}]");
        let mut f = Fields::of(value, &path)?;
        let action = string(required(&mut f, "action", value.pos)?, &f.field_path("action"))?;
        if action.value != "accept" {
            return err(
                action.pos,
                format!("{path}.action: {:?} is not an acl action (only \"accept\")", action.value),
            );
        }
        // `users`/`ports` are the names of the original format (still accepted by Tailscale).
        let src = pick(&mut f, "src", "users", value.pos)?;
        let dst = pick(&mut f, "dst", "ports", value.pos)?;
        let protos = match f.take("proto") {
            Some(p) => Some(proto(p, &f.field_path("proto"))?),
            None => None,
        };
        if let Some(p) = f.take("srcPosture") {
            return err(p.pos, format!("{path}.srcPosture: device posture conditions are not supported"));
        }
        f.finish(&["action", "src", "dst", "proto", "users", "ports"])?;
        let srcs = self.selectors(src, Place::Src, &format!("{path}.src"))?;
        let origin = Origin { path: path.clone(), pos: value.pos };
        for (i, d) in strings(dst, &format!("{path}.dst"))?.iter().enumerate() {
            let at = format!("{path}.dst[{i}]");
            let (host, ports) = split_host_ports(&d.value).ok_or_else(|| {
                Located::new(d.pos, format!("{at}: {:?} must be alias:ports (such as tag:web:443 or *:*)", d.value))
            })?;
            let dst = self.selector(&Spanned::new(d.pos, host.to_string()), Place::Dst, &at)?;
            let ports = parse_ports(ports).map_err(|e| Located::new(d.pos, format!("{at}: {e}")))?;
            if let Some(p) = protos.iter().flatten().find(|p| !p.has_ports()) {
                if ports != [PortRange::ALL] {
                    return err(
                        d.pos,
                        format!("{at}: protocol {} has no ports; only tcp, udp and sctp may name them", p.number),
                    );
                }
            }
            self.check_self_sources(&srcs, &dst, d.pos, &at)?;
            self.push_rule(srcs.clone(), dst, ports, protos.as_deref().unwrap_or(&[]), origin.clone(), d.pos);
        }
        Ok(())
    }

    fn push_rule(
        &mut self,
        srcs: Vec<Alias>,
        dst: Alias,
        ports: Vec<PortRange>,
        protos: &[NamedProto],
        origin: Origin,
        pos: Pos,
    ) {
        if protos.iter().any(|p| p.number == 132) && ports != [PortRange::ALL] {
            self.warn(pos, "the node's filter does not read SCTP ports: SCTP is allowed only where every port is");
        }
        let protos = protos.iter().filter(|p| !(p.number == 132 && ports != [PortRange::ALL])).map(|p| p.proto());
        let mut protos: Vec<_> = protos.collect();
        protos.dedup();
        self.policy.rules.push(NetRule { srcs, dsts: vec![dst], ports, protos, origin });
    }

    /// `autogroup:self` as a destination needs sources that are people.
    fn check_self_sources(&self, srcs: &[Alias], dst: &Alias, pos: Pos, path: &str) -> Result<()> {
        if *dst == Alias::SelfNodes {
            if let Some(bad) = srcs.iter().find(|s| !matches!(s, Alias::User(_) | Alias::Group(_) | Alias::Member)) {
                return err(pos, format!("{path}: autogroup:self needs user or group sources, not {bad}"));
            }
        }
        Ok(())
    }

    fn grant(&mut self, value: &Spanned<Json>, index: usize) -> Result<()> {
        let path = format!("grants[{index}]");
        let mut f = Fields::of(value, &path)?;
        let src = required(&mut f, "src", value.pos)?;
        let dst = required(&mut f, "dst", value.pos)?;
        let ip = f.take("ip");
        if let Some(app) = f.take("app") {
            let empty = matches!(&app.value, Json::Object(m) if m.is_empty());
            if !empty {
                return err(
                    app.pos,
                    format!("{path}.app: application capabilities are not supported (only ip grants)"),
                );
            }
        }
        if let Some(via) = f.take("via") {
            return err(via.pos, format!("{path}.via: routing grants through nodes (via) is not supported"));
        }
        if let Some(p) = f.take("srcPosture") {
            return err(p.pos, format!("{path}.srcPosture: device posture conditions are not supported"));
        }
        f.finish(&["src", "dst", "ip", "app"])?;
        let caps = match ip {
            Some(ip) => strings(ip, &format!("{path}.ip"))?,
            None => Vec::new(),
        };
        if caps.is_empty() {
            return err(value.pos, format!("{path}: ip is required and cannot be empty"));
        }
        let srcs = self.selectors(src, Place::Src, &format!("{path}.src"))?;
        let dsts = self.selectors(dst, Place::Dst, &format!("{path}.dst"))?;
        let origin = Origin { path: path.clone(), pos: value.pos };
        for (i, cap) in caps.iter().enumerate() {
            let at = format!("{path}.ip[{i}]");
            let (proto, ports) = ip_capability(&cap.value).map_err(|e| Located::new(cap.pos, format!("{at}: {e}")))?;
            for d in &dsts {
                self.check_self_sources(&srcs, d, cap.pos, &format!("{path}.dst"))?;
                let protos: Vec<NamedProto> = proto.into_iter().collect();
                self.push_rule(srcs.clone(), d.clone(), ports.clone(), &protos, origin.clone(), cap.pos);
            }
        }
        Ok(())
    }

    fn ssh(&mut self, value: &Spanned<Json>, index: usize) -> Result<()> {
        let path = format!("ssh[{index}]");
        let mut f = Fields::of(value, &path)?;
        let action = string(required(&mut f, "action", value.pos)?, &format!("{path}.action"))?;
        let action = match action.value.as_str() {
            "accept" => SshAction::Accept,
            "check" => SshAction::Check,
            other => {
                return err(action.pos, format!("{path}.action: {other:?} is not an ssh action (accept or check)"))
            }
        };
        let src = required(&mut f, "src", value.pos)?;
        let dst = required(&mut f, "dst", value.pos)?;
        let users_value = required(&mut f, "users", value.pos)?;
        let period = f.take("checkPeriod");
        let env = f.take("acceptEnv");
        let mut forwarding = SshForwarding::ALL;
        for (name, flag) in [
            ("allowAgentForwarding", &mut forwarding.agent),
            ("allowLocalPortForwarding", &mut forwarding.local),
            ("allowRemotePortForwarding", &mut forwarding.remote),
        ] {
            if let Some(v) = f.take(name) {
                *flag = boolean(v, &format!("{path}.{name}"))?;
            }
        }
        f.finish(&[
            "action",
            "src",
            "dst",
            "users",
            "checkPeriod",
            "acceptEnv",
            "allowAgentForwarding",
            "allowLocalPortForwarding",
            "allowRemotePortForwarding",
        ])?;
        let srcs = self.selectors(src, Place::SshSrc, &format!("{path}.src"))?;
        let dsts = self.selectors(dst, Place::SshDst, &format!("{path}.dst"))?;
        for (i, d) in dsts.iter().enumerate() {
            let at = format!("{path}.dst[{i}]");
            let pos = element_pos(dst, i);
            let tagged_source = srcs.iter().find(|s| matches!(s, Alias::Tag(_) | Alias::Tagged));
            if let (Some(t), Alias::User(_) | Alias::SelfNodes) = (tagged_source, d) {
                return err(pos, format!("{at}: tagged sources ({t}) cannot ssh to user-owned nodes ({d})"));
            }
            if let Alias::User(u) = d {
                if srcs.iter().any(|s| *s != Alias::User(u.clone())) {
                    return err(pos, format!("{at}: a user destination ({u}) needs that same user as the only source"));
                }
            }
        }
        let mut users = Vec::new();
        let listed = strings(users_value, &format!("{path}.users"))?;
        if listed.is_empty() {
            return err(users_value.pos, format!("{path}.users cannot be empty"));
        }
        for (i, u) in listed.iter().enumerate() {
            users.push(ssh_user(&u.value).map_err(|e| Located::new(u.pos, format!("{path}.users[{i}]: {e}")))?);
        }
        let check_period = match period {
            None => CheckPeriod::DEFAULT,
            Some(p) => {
                if action != SshAction::Check {
                    return err(p.pos, format!("{path}.checkPeriod applies only to check rules"));
                }
                let s = string(p, &format!("{path}.checkPeriod"))?;
                parse_check_period(&s.value).map_err(|e| Located::new(s.pos, format!("{path}.checkPeriod: {e}")))?
            }
        };
        let mut accept_env = Vec::new();
        if let Some(env) = env {
            for (i, g) in strings(env, &format!("{path}.acceptEnv"))?.iter().enumerate() {
                let good = !g.value.is_empty()
                    && g.value.len() <= 128
                    && g.value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '*' | '?'));
                if !good {
                    return err(g.pos, format!("{path}.acceptEnv[{i}]: {:?} is not a variable name glob", g.value));
                }
                accept_env.push(g.value.clone());
            }
        }
        let origin = Origin { path, pos: value.pos };
        self.policy.ssh.push(SshRule { action, srcs, dsts, users, check_period, accept_env, forwarding, origin });
        Ok(())
    }

    fn test(&mut self, value: &Spanned<Json>, index: usize) -> Result<()> {
        let path = format!("tests[{index}]");
        let mut f = Fields::of(value, &path)?;
        let src = string(required(&mut f, "src", value.pos)?, &format!("{path}.src"))?;
        let protos = match f.take("proto") {
            Some(p) => proto(p, &format!("{path}.proto"))?,
            None => Vec::new(),
        };
        let accept = f.take("accept");
        let deny = f.take("deny");
        f.finish(&["src", "proto", "accept", "deny"])?;
        let src = self.selector(&src, Place::TestSrc, &format!("{path}.src"))?;
        let targets = |v: Option<&Spanned<Json>>, key: &str| -> Result<Vec<TestTarget>> {
            let Some(v) = v else { return Ok(Vec::new()) };
            let mut out = Vec::new();
            for (i, t) in strings(v, &format!("{path}.{key}"))?.iter().enumerate() {
                let at = format!("{path}.{key}[{i}]");
                let bad = || Located::new(t.pos, format!("{at}: {:?} must be host:port with one port", t.value));
                let (host, port) = split_host_ports(&t.value).ok_or_else(bad)?;
                let port = match parse_ports(port).map_err(|e| Located::new(t.pos, format!("{at}: {e}")))?.as_slice() {
                    [r] if r.first == r.last => r.first,
                    _ => return Err(bad()),
                };
                let dst = self.selector(&Spanned::new(t.pos, host.to_string()), Place::TestDst, &at)?;
                out.push(TestTarget { text: t.value.clone(), dst, port });
            }
            Ok(out)
        };
        let accept = targets(accept, "accept")?;
        let deny = targets(deny, "deny")?;
        let protos = protos.iter().map(|p| p.proto()).collect();
        self.policy.tests.push(AclTest { src, protos, accept, deny, origin: Origin { path, pos: value.pos } });
        Ok(())
    }

    fn ssh_test(&mut self, value: &Spanned<Json>, index: usize) -> Result<()> {
        let path = format!("sshTests[{index}]");
        let mut f = Fields::of(value, &path)?;
        let src = string(required(&mut f, "src", value.pos)?, &format!("{path}.src"))?;
        let dst = required(&mut f, "dst", value.pos)?;
        let lists: Vec<Option<&Spanned<Json>>> = ["accept", "check", "deny"].iter().map(|k| f.take(k)).collect();
        f.finish(&["src", "dst", "accept", "check", "deny"])?;
        let src = self.selector(&src, Place::TestSrc, &format!("{path}.src"))?;
        let mut dsts = Vec::new();
        for (i, d) in strings(dst, &format!("{path}.dst"))?.iter().enumerate() {
            let at = format!("{path}.dst[{i}]");
            let name = d.value.strip_prefix("tag:").or_else(|| d.value.strip_prefix("autogroup:")).unwrap_or(&d.value);
            if name.contains(':') || name.contains('/') {
                return err(
                    d.pos,
                    format!("{at}: {:?}: ssh test destinations are nodes, without ports or CIDRs", d.value),
                );
            }
            dsts.push(self.selector(d, Place::TestDst, &at)?);
        }
        let mut users: Vec<Vec<String>> = Vec::new();
        for (key, v) in ["accept", "check", "deny"].iter().zip(lists) {
            let list = match v {
                Some(v) => strings(v, &format!("{path}.{key}"))?.into_iter().map(|s| s.value).collect(),
                None => Vec::new(),
            };
            users.push(list);
        }
        let [accept, check, deny] = <[Vec<String>; 3]>::try_from(users).unwrap_or_default();
        self.policy.ssh_tests.push(SshTest { src, dsts, accept, check, deny, origin: Origin { path, pos: value.pos } });
        Ok(())
    }

    fn auto_approvers(&mut self, value: &Spanned<Json>) -> Result<()> {
        let mut f = Fields::of(value, "autoApprovers")?;
        let routes = f.take("routes");
        let exit = f.take("exitNode");
        f.finish(&["routes", "exitNode"])?;
        if let Some(routes) = routes {
            let mut rf = Fields::of(routes, "autoApprovers.routes")?;
            for m in rf.rest() {
                let path = format!("autoApprovers.routes.{}", m.name.value);
                let prefix =
                    alias::parse_prefix(&m.name.value).map_err(|e| Located::new(m.name.pos, format!("{path}: {e}")))?;
                let approvers = self.approvers(&m.value, &path)?;
                self.policy.auto_approvers.routes.insert(prefix, approvers);
            }
        }
        if let Some(exit) = exit {
            self.policy.auto_approvers.exit_node = self.approvers(exit, "autoApprovers.exitNode")?;
        }
        Ok(())
    }

    fn approvers(&self, value: &Spanned<Json>, path: &str) -> Result<Vec<Alias>> {
        let list = self.selectors(value, Place::Src, path)?;
        for (i, a) in list.iter().enumerate() {
            if !matches!(a, Alias::User(_) | Alias::Group(_) | Alias::Tag(_) | Alias::Member | Alias::Tagged) {
                return err(
                    element_pos(value, i),
                    format!("{path}[{i}]: approvers are users, groups or tags, not {a}"),
                );
            }
        }
        Ok(list)
    }

    fn node_attr(&mut self, value: &Spanned<Json>, index: usize) -> Result<()> {
        let path = format!("nodeAttrs[{index}]");
        let mut f = Fields::of(value, &path)?;
        let target = required(&mut f, "target", value.pos)?;
        let attr = f.take("attr");
        if let Some(app) = f.take("app") {
            self.warn(app.pos, format!("{path}.app: node capabilities are not used by this system"));
        }
        if let Some(pool) = f.take("ipPool") {
            self.warn(pool.pos, format!("{path}.ipPool: address pools are not used by this system"));
        }
        f.finish(&["target", "attr", "app", "ipPool"])?;
        let targets = self.selectors(target, Place::Src, &format!("{path}.target"))?;
        let mut attrs = Vec::new();
        if let Some(attr) = attr {
            for (i, a) in strings(attr, &format!("{path}.attr"))?.iter().enumerate() {
                self.warn(a.pos, format!("{path}.attr[{i}]: node attribute {:?} is not used by this system", a.value));
                attrs.push(a.value.clone());
            }
        }
        self.policy.node_attrs.push(NodeAttr { targets, attrs });
        Ok(())
    }
}

/// `primary` or its legacy name; exactly one of them.
fn pick<'a>(f: &mut Fields<'a>, primary: &str, legacy: &str, at: Pos) -> Result<&'a Spanned<Json>> {
    match (f.take(primary), f.take(legacy)) {
        (Some(v), None) | (None, Some(v)) => Ok(v),
        (Some(_), Some(v)) => err(v.pos, format!("{}: give {primary} or {legacy}, not both", f.path())),
        (None, None) => err(at, format!("{} is required", f.field_path(primary))),
    }
}

fn element_pos(list: &Spanned<Json>, i: usize) -> Pos {
    match &list.value {
        Json::Array(items) => items.get(i).map_or(list.pos, |v| v.pos),
        _ => list.pos,
    }
}

/// `proto` of an acl or test: a name or number, as a string or a JSON number.
fn proto(value: &Spanned<Json>, path: &str) -> Result<Vec<NamedProto>> {
    let text = match &value.value {
        Json::String(s) => s.clone(),
        Json::Number(n) => n.clone(),
        _ => return err(value.pos, format!("{path}: expected a protocol name or number")),
    };
    NamedProto::parse(&text).map(|p| vec![p]).map_err(|e| Located::new(value.pos, format!("{path}: {e}")))
}

/// `tag:web:443` -> (`tag:web`, `443`); `[fd7a::1]:22` -> (`fd7a::1`, `22`).
pub(crate) fn split_host_ports(text: &str) -> Option<(&str, &str)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return Some((host, after.strip_prefix(':')?));
    }
    let (host, ports) = text.rsplit_once(':')?;
    // `tag:web` alone has a colon but no ports.
    (!matches!(host, "" | "tag" | "group" | "autogroup")).then_some((host, ports))
}

/// A grant's network capability: `*`, `tcp:22`, `udp:*`, `443`, `80,443`, `icmp:*`.
fn ip_capability(text: &str) -> std::result::Result<(Option<NamedProto>, Vec<PortRange>), String> {
    if text == "*" {
        return Ok((None, vec![PortRange::ALL]));
    }
    match text.split_once(':') {
        Some((proto, ports)) => {
            let proto = NamedProto::parse(proto)?;
            let ports = parse_ports(ports)?;
            if !proto.has_ports() && ports != [PortRange::ALL] {
                return Err(format!("protocol {} has no ports; only tcp, udp and sctp may name them", proto.number));
            }
            Ok((Some(proto), ports))
        }
        None => Ok((None, parse_ports(text)?)),
    }
}

fn ssh_user(text: &str) -> std::result::Result<SshUser, String> {
    match text {
        "*" => Err("\"*\" is not allowed: list users, or use autogroup:nonroot".into()),
        "root" => Ok(SshUser::Root),
        "autogroup:nonroot" => Ok(SshUser::NonRoot),
        _ if text.starts_with("autogroup:") => Err(format!("{text} is not an ssh user autogroup (autogroup:nonroot)")),
        _ => {
            if let Some(rest) = text.strip_prefix("localpart:") {
                let domain =
                    rest.strip_prefix("*@").ok_or_else(|| format!("{text:?}: the form is localpart:*@domain"))?;
                if domain.is_empty() || domain.contains('@') || domain.contains('*') {
                    return Err(format!("{text:?}: the form is localpart:*@domain"));
                }
                return Ok(SshUser::Localpart { domain: domain.to_string() });
            }
            check_local_user(text)?;
            Ok(SshUser::Named(text.to_string()))
        }
    }
}

/// A local account name as login(1) and useradd(8) accept them.
pub fn check_local_user(name: &str) -> std::result::Result<(), String> {
    let good = !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.bytes().all(|b| b.is_ascii_digit());
    if good {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid local user name"))
    }
}

/// `12h`, `30m`, `1h30m`, `45s` (Go durations without fractions), or `always`.
pub(crate) fn parse_check_period(text: &str) -> std::result::Result<CheckPeriod, String> {
    if text == "always" {
        return Ok(CheckPeriod::Always);
    }
    let bad = || format!("{text:?} is not a duration (such as 12h, 90m or always)");
    let mut total: u64 = 0;
    let mut digits = String::new();
    if text.is_empty() {
        return Err(bad());
    }
    for c in text.chars() {
        if c.is_ascii_digit() {
            if digits.len() >= 9 {
                return Err(bad());
            }
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = total.saturating_add(n.saturating_mul(unit));
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    if total == 0 {
        return Err("the check period must be longer than zero".into());
    }
    if total > CheckPeriod::MAX_SECONDS {
        return Err(format!("{text} is longer than the maximum of 168h"));
    }
    Ok(CheckPeriod::Seconds(total))
}
