//! The audit log page: the newest entries first, filtered by actor (exact), action
//! (prefix: `node-`, `ssh-check`) and text in the detail; the filters are a GET form, so
//! a filtered view is a link.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::{failed, fetch, frame, signed_in, time};
use crate::admin_api::{AdminRequest, AuditView};
use crate::http::AppState;
use crate::login_page::escape;

const PATH: &str = "/admin/audit";
const DEFAULT_LIMIT: usize = 200;
const MAX_LIMIT: usize = 5000;

/// `GET /admin/audit?actor=&action=&contains=&limit=`.
pub async fn page(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let admin = match signed_in(&app, &headers) {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    let filter = |name: &str| query.get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let limit =
        query.get("limit").and_then(|l| l.trim().parse::<usize>().ok()).unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let request = AdminRequest::Audit {
        limit: Some(limit),
        actor: filter("actor"),
        action: filter("action"),
        contains: filter("contains"),
    };
    let mut entries: Vec<AuditView> = match fetch(&app, &admin, request).await {
        Ok(e) => e,
        Err(why) => return failed(&admin, PATH, "Audit log", &why),
    };
    entries.reverse();
    let value = |name: &str| escape(&filter(name).unwrap_or_default());
    let rows: String = entries
        .iter()
        .map(|e| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                time(e.unix),
                escape(&e.actor),
                escape(&e.action),
                escape(&e.detail)
            )
        })
        .collect();
    let body = format!(
        "<form method=\"get\" action=\"{PATH}\" role=\"search\">\
         <label>Actor <input name=\"actor\" value=\"{actor}\" placeholder=\"console:alice@example.com\"></label>\
         <label>Action <input name=\"action\" value=\"{action}\" placeholder=\"node-\"></label>\
         <label>Detail contains <input name=\"contains\" value=\"{contains}\"></label>\
         <label>At most <input name=\"limit\" type=\"number\" min=\"1\" max=\"{MAX_LIMIT}\" value=\"{limit}\"></label>\
         <button type=\"submit\">Filter</button></form>\
         <table><caption>{count} entries, newest first</caption><thead><tr><th scope=\"col\">Time</th>\
         <th scope=\"col\">Actor</th><th scope=\"col\">Action</th><th scope=\"col\">Detail</th></tr></thead>\
         <tbody>{rows}</tbody></table>",
        actor = value("actor"),
        action = value("action"),
        contains = value("contains"),
        count = entries.len(),
    );
    frame(&admin, PATH, "Audit log", &body)
}
