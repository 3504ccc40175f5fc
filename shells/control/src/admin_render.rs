//! How the admin CLI shows the server's answers: aligned tables for people (times as UTC
//! `YYYY-MM-DD HH:MM`), pretty JSON with `--json`, and created keys alone on a line.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::admin_api::{ApiKeyView, AuditView, AuthKeyView, CreatedKey, NodeView, PendingView, PolicyView, UserView};

/// `YYYY-MM-DD HH:MM` (UTC) of unix seconds.
pub fn show_time(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

/// Left-aligned columns.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(head.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// What to do with a successful reply.
#[derive(Clone, Copy, Debug)]
pub enum Show {
    Done(&'static str),
    Users(bool),
    Nodes(bool),
    AuthKeys(bool),
    ApiKeys(bool),
    Pending(bool),
    Audit(bool),
    Created(bool),
    Policy,
    Id(&'static str),
}

fn parse<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| format!("unexpected answer from the server: {e}"))
}

pub fn render(show: Show, value: Value) -> Result<String, String> {
    let json = |v: &Value| serde_json::to_string_pretty(v).map(|s| s + "\n").map_err(|e| e.to_string());
    Ok(match show {
        Show::Done(what) => format!("{what}\n"),
        Show::Id(what) => format!("{what} {value}\n"),
        Show::Users(true)
        | Show::Nodes(true)
        | Show::AuthKeys(true)
        | Show::ApiKeys(true)
        | Show::Pending(true)
        | Show::Audit(true)
        | Show::Created(true) => json(&value)?,
        Show::Users(false) => {
            let users: Vec<UserView> = parse(value)?;
            let rows: Vec<_> = users
                .iter()
                .map(|u| vec![u.id.to_string(), u.name.clone(), u.nodes.to_string(), u.groups.join(",")])
                .collect();
            table(&["ID", "NAME", "NODES", "IDP GROUPS"], &rows)
        }
        Show::Nodes(false) => {
            let nodes: Vec<NodeView> = parse(value)?;
            let rows: Vec<_> = nodes
                .iter()
                .map(|n| {
                    let expiry = match n.key_expiry {
                        None => "never".into(),
                        Some(_) if n.expired => "expired".into(),
                        Some(t) => show_time(t),
                    };
                    vec![
                        n.id.to_string(),
                        n.name.clone(),
                        n.user.clone(),
                        n.addresses.join(","),
                        n.tags.join(","),
                        if n.online { "online" } else { "offline" }.into(),
                        expiry,
                    ]
                })
                .collect();
            table(&["ID", "NAME", "USER", "ADDRESSES", "TAGS", "STATUS", "KEY EXPIRY"], &rows)
        }
        Show::AuthKeys(false) => {
            let keys: Vec<AuthKeyView> = parse(value)?;
            let rows: Vec<_> = keys
                .iter()
                .map(|k| {
                    vec![
                        k.id.to_string(),
                        k.user.clone(),
                        yes(k.reusable),
                        yes(k.ephemeral),
                        yes(k.used),
                        yes(k.revoked),
                        show_time(k.expires),
                        k.tags.join(","),
                    ]
                })
                .collect();
            table(&["ID", "USER", "REUSABLE", "EPHEMERAL", "USED", "REVOKED", "EXPIRES", "TAGS"], &rows)
        }
        Show::ApiKeys(false) => {
            let keys: Vec<ApiKeyView> = parse(value)?;
            let rows: Vec<_> = keys
                .iter()
                .map(|k| vec![k.id.to_string(), show_time(k.created), show_time(k.expires), yes(k.revoked)])
                .collect();
            table(&["ID", "CREATED", "EXPIRES", "REVOKED"], &rows)
        }
        Show::Pending(false) => {
            let pending: Vec<PendingView> = parse(value)?;
            let rows: Vec<_> =
                pending.iter().map(|p| vec![p.kind.clone(), p.token.clone(), p.detail.clone()]).collect();
            table(&["KIND", "TOKEN", "WHAT"], &rows)
        }
        Show::Audit(false) => {
            let entries: Vec<AuditView> = parse(value)?;
            let rows: Vec<_> = entries
                .iter()
                .map(|e| vec![show_time(e.unix), e.actor.clone(), e.action.clone(), e.detail.clone()])
                .collect();
            table(&["TIME (UTC)", "ACTOR", "ACTION", "DETAIL"], &rows)
        }
        Show::Created(false) => {
            let created: CreatedKey = parse(value)?;
            format!("{}\n", created.key)
        }
        Show::Policy => {
            let policy: PolicyView = parse(value)?;
            let mut text = policy.text;
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_show_as_utc_dates() {
        assert_eq!(show_time(0), "1970-01-01 00:00");
        assert_eq!(show_time(1_800_000_000), "2027-01-15 08:00");
        assert_eq!(show_time(951_782_400), "2000-02-29 00:00");
    }

    #[test]
    fn tables_align_their_columns() {
        let rows = vec![vec!["1".to_string(), "alice@example.com".to_string()], vec!["22".into(), "b".into()]];
        assert_eq!(table(&["ID", "NAME"], &rows), "ID  NAME\n1   alice@example.com\n22  b\n");
    }
}
