//! The pending page: interactive registrations waiting for a login and SSH logins held by
//! a `check` rule, each with approve and reject. An admin's approval of a check is the
//! override `meshcontrol auth approve` also is: the audit log names the admin.

use std::collections::BTreeMap;

use axum::extract::{Form, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::{button, csrf_field, done, failed, fetch, form_admin, frame, run, signed_in};
use crate::admin_api::{AdminRequest, PendingView, UserView};
use crate::http::AppState;
use crate::login_page::escape;

const PATH: &str = "/admin/pending";

/// `GET /admin/pending`.
pub async fn page(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let admin = match signed_in(&app, &headers) {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    let pending: Vec<PendingView> = match fetch(&app, &admin, AdminRequest::AuthList {}).await {
        Ok(p) => p,
        Err(why) => return failed(&admin, PATH, "Pending", &why),
    };
    let users: Vec<UserView> = match fetch(&app, &admin, AdminRequest::UsersList {}).await {
        Ok(u) => u,
        Err(why) => return failed(&admin, PATH, "Pending", &why),
    };
    let options: String =
        users.iter().map(|u| format!("<option value=\"{0}\">{0}</option>", escape(&u.name))).collect();
    let rows: String = pending
        .iter()
        .map(|p| {
            let approve = if p.kind == "login" {
                format!(
                    "<form class=\"inline\" method=\"post\" action=\"{PATH}/approve\">{csrf}\
                     <input type=\"hidden\" name=\"token\" value=\"{token}\">\
                     <select name=\"user\" aria-label=\"Register for user\" required>{options}</select>\
                     <button type=\"submit\">Approve</button></form>",
                    csrf = csrf_field(&admin),
                    token = escape(&p.token),
                )
            } else {
                button(&admin, &format!("{PATH}/approve"), "Approve", &[("token", &p.token)])
            };
            let reject = button(&admin, &format!("{PATH}/reject"), "Reject", &[("token", &p.token)]);
            let kind = if p.kind == "login" { "registration" } else { "SSH check" };
            format!("<tr><td>{kind}</td><td>{}</td><td>{approve}{reject}</td></tr>", escape(&p.detail))
        })
        .collect();
    let body = if pending.is_empty() {
        "<p id=\"nothing-pending\">Nothing is waiting.</p>".to_string()
    } else {
        format!(
            "<table><caption>{} waiting</caption><thead><tr><th scope=\"col\">Kind</th><th scope=\"col\">What</th>\
             <th scope=\"col\">Actions</th></tr></thead><tbody>{rows}</tbody></table>",
            pending.len()
        )
    };
    frame(&admin, PATH, "Pending", &body)
}

/// `POST /admin/pending/{approve,reject}`.
pub async fn act(
    State(app): State<AppState>,
    Path(action): Path<String>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let admin = match form_admin(&app, &headers, &form) {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    let token = form.get("token").cloned().unwrap_or_default();
    let (request, message) = match action.as_str() {
        "approve" => {
            let user = form.get("user").filter(|u| !u.is_empty()).cloned();
            (AdminRequest::AuthApprove { token, user }, "Approved.")
        }
        "reject" => (AdminRequest::AuthReject { token }, "Rejected."),
        _ => return done(&app, &admin, PATH, Err(format!("no such action: {action}"))),
    };
    let result = run(&app, &admin, request).await.map(|_| message.to_string());
    done(&app, &admin, PATH, result)
}
