//! The machines page: every node with its owner, tags, addresses, status, last contact,
//! key expiry and SSH; and the changes an admin makes to one (expire its key, delete,
//! rename, retag).

use std::collections::BTreeMap;

use axum::extract::{Form, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::{button, csrf_field, done, failed, fetch, form_admin, frame, run, signed_in, time};
use crate::admin_api::{AdminRequest, NodeView};
use crate::http::AppState;
use crate::login_page::escape;

const PATH: &str = "/admin/machines";

/// `GET /admin/machines`.
pub async fn page(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let admin = match signed_in(&app, &headers) {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    let nodes: Vec<NodeView> = match fetch(&app, &admin, AdminRequest::NodesList {}).await {
        Ok(nodes) => nodes,
        Err(why) => return failed(&admin, PATH, "Machines", &why),
    };
    let mut rows = String::new();
    for n in &nodes {
        let id = n.id.to_string();
        let status =
            if n.online { "<span class=\"online\">online</span>" } else { "<span class=\"offline\">offline</span>" };
        let seen = match n.last_seen {
            _ if n.online => "now".to_string(),
            Some(t) => time(t),
            None => "—".to_string(),
        };
        let expiry = match n.key_expiry {
            None => "never".to_string(),
            Some(_) if n.expired => "<strong>expired</strong>".to_string(),
            Some(t) => time(t),
        };
        let owner = if n.tags.is_empty() { escape(&n.user) } else { format!("{} (tagged)", escape(&n.user)) };
        let rename = format!(
            "<form class=\"inline\" method=\"post\" action=\"{PATH}/{id}/rename\">{csrf}\
             <input name=\"name\" value=\"{name}\" aria-label=\"New name of {name}\" size=\"12\" required>\
             <button type=\"submit\">Rename</button></form>",
            csrf = csrf_field(&admin),
            name = escape(&n.name),
        );
        let tags = format!(
            "<form class=\"inline\" method=\"post\" action=\"{PATH}/{id}/tags\">{csrf}\
             <input name=\"tags\" value=\"{tags}\" aria-label=\"Tags of {name}\" placeholder=\"tag:server\" size=\"14\">\
             <button type=\"submit\">Set tags</button></form>",
            csrf = csrf_field(&admin),
            tags = escape(&n.tags.join(",")),
            name = escape(&n.name),
        );
        let expire =
            if n.expired { String::new() } else { button(&admin, &format!("{PATH}/{id}/expire"), "Expire key", &[]) };
        let delete = button(&admin, &format!("{PATH}/{id}/delete"), "Delete", &[]);
        rows.push_str(&format!(
            "<tr id=\"node-{id}\"><td>{name}</td><td>{owner}</td><td>{tag_list}</td><td>{addresses}</td>\
             <td>{status}</td><td>{seen}</td><td>{expiry}</td><td>{ssh}</td>\
             <td>{rename}{tags}{expire}{delete}</td></tr>",
            name = escape(&n.name),
            tag_list = escape(&n.tags.join(", ")),
            addresses = escape(&n.addresses.join(" ")),
            ssh = if n.ssh { "on" } else { "off" },
        ));
    }
    let body = if nodes.is_empty() {
        "<p>No machines yet. Create a pre-auth key on the <a href=\"/admin/keys\">Keys</a> page, or run \
         <code>meshctl up</code> and approve it on the <a href=\"/admin/pending\">Pending</a> page.</p>"
            .to_string()
    } else {
        format!(
            "<table><caption>{count} machines</caption><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Owner</th>\
             <th scope=\"col\">Tags</th><th scope=\"col\">Addresses</th><th scope=\"col\">Status</th>\
             <th scope=\"col\">Last seen</th><th scope=\"col\">Key expiry</th><th scope=\"col\">SSH</th>\
             <th scope=\"col\">Actions</th></tr></thead><tbody>{rows}</tbody></table>",
            count = nodes.len()
        )
    };
    frame(&admin, PATH, "Machines", &body)
}

/// `POST /admin/machines/{id}/{action}`.
pub async fn act(
    State(app): State<AppState>,
    Path((id, action)): Path<(u64, String)>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let admin = match form_admin(&app, &headers, &form) {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    let field = |name: &str| form.get(name).map(|v| v.trim().to_string()).unwrap_or_default();
    let (request, message) = match action.as_str() {
        "expire" => (AdminRequest::NodesExpire { id }, format!("Machine {id}: key expired.")),
        "delete" => (AdminRequest::NodesDelete { id }, format!("Machine {id} deleted.")),
        "rename" => {
            let name = field("name");
            (AdminRequest::NodesRename { id, name: name.clone() }, format!("Machine {id} is now {name}."))
        }
        "tags" => {
            let tags: Vec<String> =
                field("tags").split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect();
            let shown = if tags.is_empty() { "none".to_string() } else { tags.join(", ") };
            (AdminRequest::NodesTag { id, tags }, format!("Machine {id}: tags {shown}."))
        }
        _ => return done(&app, &admin, PATH, Err(format!("no such action: {action}"))),
    };
    let result = run(&app, &admin, request).await.map(|_| message);
    done(&app, &admin, PATH, result)
}
