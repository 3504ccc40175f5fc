//! The pre-auth keys page: the keys (never their secrets), revoking one, and creating one,
//! whose secret is shown on the answer to that form and nowhere else (the server keeps
//! only its hash).

use std::collections::BTreeMap;

use axum::extract::{Form, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::{button, csrf_field, done, failed, fetch, form_admin, frame, run, signed_in, time, Admin};
use crate::admin_api::{AdminRequest, AuthKeyView, CreatedKey, UserView};
use crate::http::AppState;
use crate::login_page::escape;

const PATH: &str = "/admin/keys";
/// The form's default and largest lifetime, in hours.
const DEFAULT_HOURS: u64 = 24;
const MAX_HOURS: u64 = 24 * 365;

/// `GET /admin/keys`.
pub async fn page(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let admin = match signed_in(&app, &headers) {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    render(&app, &admin, "").await
}

async fn render(app: &AppState, admin: &Admin, created: &str) -> Response {
    let keys: Vec<AuthKeyView> = match fetch(app, admin, AdminRequest::PreauthkeysList { user: None }).await {
        Ok(keys) => keys,
        Err(why) => return failed(admin, PATH, "Pre-auth keys", &why),
    };
    let users: Vec<UserView> = match fetch(app, admin, AdminRequest::UsersList {}).await {
        Ok(users) => users,
        Err(why) => return failed(admin, PATH, "Pre-auth keys", &why),
    };
    let yes = |b: bool| if b { "yes" } else { "no" };
    let rows: String = keys
        .iter()
        .map(|k| {
            let revoke = if k.revoked {
                String::new()
            } else {
                button(admin, &format!("{PATH}/{}/revoke", k.id), "Revoke", &[])
            };
            format!(
                "<tr><td>{id}</td><td>{user}</td><td>{reusable}</td><td>{ephemeral}</td><td>{tags}</td>\
                 <td>{used}</td><td>{revoked}</td><td>{expires}</td><td>{revoke}</td></tr>",
                id = k.id,
                user = escape(&k.user),
                reusable = yes(k.reusable),
                ephemeral = yes(k.ephemeral),
                tags = escape(&k.tags.join(", ")),
                used = yes(k.used),
                revoked = yes(k.revoked),
                expires = time(k.expires),
            )
        })
        .collect();
    let options: String =
        users.iter().map(|u| format!("<option value=\"{0}\">{0}</option>", escape(&u.name))).collect();
    let body = format!(
        "{created}<table><caption>{count} pre-auth keys</caption><thead><tr><th scope=\"col\">ID</th>\
         <th scope=\"col\">User</th><th scope=\"col\">Reusable</th><th scope=\"col\">Ephemeral</th>\
         <th scope=\"col\">Tags</th><th scope=\"col\">Used</th><th scope=\"col\">Revoked</th>\
         <th scope=\"col\">Expires</th><th scope=\"col\">Actions</th></tr></thead><tbody>{rows}</tbody></table>\
         <h2>New key</h2><form method=\"post\" action=\"{PATH}/create\">{csrf}\
         <label>User <select name=\"user\" required>{options}</select></label>\
         <label><input type=\"checkbox\" name=\"reusable\" value=\"1\"> Reusable</label>\
         <label><input type=\"checkbox\" name=\"ephemeral\" value=\"1\"> Ephemeral</label>\
         <label>Tags <input name=\"tags\" placeholder=\"tag:server\"></label>\
         <label>Valid for <input name=\"hours\" type=\"number\" min=\"1\" max=\"{MAX_HOURS}\" value=\"{DEFAULT_HOURS}\"> hours</label>\
         <button type=\"submit\">Create key</button></form>",
        count = keys.len(),
        csrf = csrf_field(admin),
    );
    frame(admin, PATH, "Pre-auth keys", &body)
}

/// `POST /admin/keys/create`: the new key, shown on this page only.
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let admin = match form_admin(&app, &headers, &form) {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    let hours = match form.get("hours").map(|h| h.trim()).filter(|h| !h.is_empty()) {
        None => DEFAULT_HOURS,
        Some(h) => match h.parse::<u64>() {
            Ok(h) if (1..=MAX_HOURS).contains(&h) => h,
            _ => return done(&app, &admin, PATH, Err(format!("the lifetime must be 1 to {MAX_HOURS} hours"))),
        },
    };
    let request = AdminRequest::PreauthkeysCreate {
        user: form.get("user").cloned().unwrap_or_default(),
        reusable: form.contains_key("reusable"),
        ephemeral: form.contains_key("ephemeral"),
        tags: form
            .get("tags")
            .map(|t| t.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect())
            .unwrap_or_default(),
        expiration_secs: hours * 3600,
    };
    let key = match run(&app, &admin, request)
        .await
        .and_then(|v| serde_json::from_value::<CreatedKey>(v).map_err(|e| format!("unexpected answer: {e}")))
    {
        Ok(key) => key,
        Err(why) => return done(&app, &admin, PATH, Err(why)),
    };
    let shown = format!(
        "<section aria-labelledby=\"new-key\"><h2 id=\"new-key\">Key {id} created</h2>\
         <p>Copy it now: it is not shown again.</p><p class=\"secret\" id=\"created-key\">{key}</p>\
         <p>On the machine: <code>meshctl up --login-server URL --auth-key {key}</code></p></section>",
        id = key.id,
        key = escape(&key.key),
    );
    render(&app, &admin, &shown).await
}

/// `POST /admin/keys/{id}/revoke`.
pub async fn revoke(
    State(app): State<AppState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let admin = match form_admin(&app, &headers, &form) {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    let result = run(&app, &admin, AdminRequest::PreauthkeysExpire { id }).await.map(|_| format!("Key {id} revoked."));
    done(&app, &admin, PATH, result)
}
