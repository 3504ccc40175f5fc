//! The policy editor: the policy in force in a text area; "Preview" checks the edited text
//! and shows, node by node, what each would receive differently; "Save" does the same
//! checks and then sets it (the server compiles it and streams it to every node). Errors
//! and warnings read exactly as `meshcontrol policy check policy.hujson` prints them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mesh_core::policy::{idp_policy_group, NodeId, NodeInfo};

use super::{csrf_field, failed, fetch, form_admin, frame_with, run, signed_in, Admin};
use crate::admin_api::{AdminRequest, NodeView, PolicyView, UserView};
use crate::http::AppState;
use crate::login_page::escape;
use crate::policy_cmd;

const PATH: &str = "/admin/policy";
/// The file name errors are reported under.
pub const FILE: &str = "policy.hujson";

/// `GET /admin/policy`.
pub async fn page(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let admin = match signed_in(&app, &headers) {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    let current: PolicyView = match fetch(&app, &admin, AdminRequest::PolicyGet {}).await {
        Ok(p) => p,
        Err(why) => return failed(&admin, PATH, "Policy", &why),
    };
    let note = if current.default { "<p>No policy was set yet: this is the built-in default.</p>" } else { "" };
    editor(&admin, StatusCode::OK, note, &current.text)
}

fn editor(admin: &Admin, status: StatusCode, above: &str, text: &str) -> Response {
    let body = format!(
        "{above}<form method=\"post\" action=\"{PATH}\">{csrf}\
         <label for=\"policy-text\">Policy (HuJSON)</label>\
         <textarea id=\"policy-text\" name=\"text\" rows=\"28\" spellcheck=\"false\">{text}</textarea>\
         <p><button type=\"submit\" name=\"action\" value=\"preview\" id=\"preview\">Preview</button> \
         <button type=\"submit\" name=\"action\" value=\"save\" id=\"save\">Save</button></p></form>",
        csrf = csrf_field(admin),
        text = escape(text),
    );
    frame_with(admin, PATH, "Policy", &body, status)
}

/// `POST /admin/policy` with `action` = `preview` or `save`.
pub async fn submit(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let admin = match form_admin(&app, &headers, &form) {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    let text = form.get("text").cloned().unwrap_or_default();
    let save = form.get("action").map(String::as_str) == Some("save");
    let checked = match policy_cmd::check(FILE, &text) {
        Ok(summary) => summary,
        Err(error) => {
            let above = format!("<p class=\"error\" role=\"alert\" id=\"policy-error\">{}</p>", escape(&error));
            return editor(&admin, StatusCode::UNPROCESSABLE_ENTITY, &above, &text);
        }
    };
    let preview = match preview(&app, &admin, &text).await {
        Ok(preview) => preview,
        Err(why) => return failed(&admin, PATH, "Policy", &why),
    };
    let mut above = format!("<pre id=\"policy-check\">{}</pre>", escape(&checked));
    if save {
        if let Err(why) = run(&app, &admin, AdminRequest::PolicySet { text: text.clone() }).await {
            let refused = format!("<p class=\"error\" role=\"alert\" id=\"policy-error\">{}</p>", escape(&why));
            return editor(&admin, StatusCode::UNPROCESSABLE_ENTITY, &refused, &text);
        }
        above.insert_str(0, "<p class=\"notice\" role=\"status\" id=\"policy-saved\">Saved: every node receives the new policy now.</p>");
    }
    let heading = if save { "What changed" } else { "What would change" };
    let _ = write!(above, "<h2>{heading}</h2>{preview}");
    editor(&admin, StatusCode::OK, &above, &text)
}

/// The nodes the server compiles for (expired ones receive nothing, as in the server),
/// with their users' groups from single sign-on.
fn inventory(nodes: &[NodeView], users: &[UserView]) -> Vec<NodeInfo> {
    let groups: BTreeMap<&str, &[String]> = users.iter().map(|u| (u.name.as_str(), u.groups.as_slice())).collect();
    nodes
        .iter()
        .filter(|n| !n.expired)
        .map(|n| NodeInfo {
            id: NodeId(n.id),
            name: n.name.clone(),
            user: n.user.clone(),
            tags: n.tags.clone(),
            addresses: n.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
            routes: Vec::new(),
            idp_groups: groups
                .get(n.user.as_str())
                .into_iter()
                .flat_map(|g| g.iter())
                .filter_map(|g| idp_policy_group(g))
                .collect(),
        })
        .collect()
}

/// Node by node, the lines of `policy compile` that `text` adds or removes against the
/// policy in force.
async fn preview(app: &AppState, admin: &Admin, text: &str) -> Result<String, String> {
    let current: PolicyView = fetch(app, admin, AdminRequest::PolicyGet {}).await?;
    let nodes: Vec<NodeView> = fetch(app, admin, AdminRequest::NodesList {}).await?;
    let users: Vec<UserView> = fetch(app, admin, AdminRequest::UsersList {}).await?;
    let nodes = inventory(&nodes, &users);
    let before = policy_cmd::compile_report(FILE, &current.text, &nodes, None)?;
    let after = policy_cmd::compile_report(FILE, text, &nodes, None)?;
    let mut out = String::new();
    let mut unchanged = 0;
    for (old, new) in before.iter().zip(&after) {
        let old_text = policy_cmd::render(std::slice::from_ref(old));
        let new_text = policy_cmd::render(std::slice::from_ref(new));
        let old_lines: BTreeSet<&str> = old_text.lines().skip(1).collect();
        let new_lines: BTreeSet<&str> = new_text.lines().skip(1).collect();
        if old_lines == new_lines {
            unchanged += 1;
            continue;
        }
        let _ = write!(out, "<h3>{}</h3><pre class=\"node-diff\">", escape(&new.name));
        for line in old_text.lines().skip(1).filter(|l| !new_lines.contains(l)) {
            let _ = writeln!(out, "<span class=\"del\">- {}</span>", escape(line.trim_start()));
        }
        for line in new_text.lines().skip(1).filter(|l| !old_lines.contains(l)) {
            let _ = writeln!(out, "<span class=\"add\">+ {}</span>", escape(line.trim_start()));
        }
        out.push_str("</pre>");
    }
    if out.is_empty() {
        out.push_str("<p id=\"no-change\">No node receives anything different.</p>");
    }
    if unchanged > 0 {
        let _ = write!(out, "<p>{unchanged} other nodes receive the same as before.</p>");
    }
    Ok(out)
}
