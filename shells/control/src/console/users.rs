//! The users page: who is in the tailnet and how many machines each has; create, delete,
//! and set a user's local password (for tailnets without single sign-on).

use std::collections::BTreeMap;

use axum::extract::{Form, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::{button, csrf_field, done, failed, fetch, form_admin, frame, run, signed_in};
use crate::admin_api::{AdminRequest, Secret, UserView};
use crate::http::AppState;
use crate::login_page::escape;

const PATH: &str = "/admin/users";

/// `GET /admin/users`.
pub async fn page(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let admin = match signed_in(&app, &headers) {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    let users: Vec<UserView> = match fetch(&app, &admin, AdminRequest::UsersList {}).await {
        Ok(users) => users,
        Err(why) => return failed(&admin, PATH, "Users", &why),
    };
    let rows: String = users
        .iter()
        .map(|u| {
            let password = format!(
                "<form class=\"inline\" method=\"post\" action=\"{PATH}/passwd\">{csrf}\
                 <input type=\"hidden\" name=\"name\" value=\"{name}\">\
                 <input type=\"password\" name=\"password\" aria-label=\"New local password of {name}\" \
                 autocomplete=\"new-password\" required size=\"12\"><button type=\"submit\">Set password</button></form>",
                csrf = csrf_field(&admin),
                name = escape(&u.name),
            );
            format!(
                "<tr><td>{id}</td><td>{name}</td><td>{nodes}</td><td>{password}{delete}</td></tr>",
                id = u.id,
                name = escape(&u.name),
                nodes = u.nodes,
                delete = button(&admin, &format!("{PATH}/delete"), "Delete", &[("name", &u.name)]),
            )
        })
        .collect();
    let body = format!(
        "<table><caption>{count} users</caption><thead><tr><th scope=\"col\">ID</th><th scope=\"col\">Name</th>\
         <th scope=\"col\">Machines</th><th scope=\"col\">Actions</th></tr></thead><tbody>{rows}</tbody></table>\
         <h2>New user</h2><form method=\"post\" action=\"{PATH}/create\">{csrf}\
         <label>Name <input name=\"name\" placeholder=\"alice@example.com\" required></label>\
         <button type=\"submit\">Create</button></form>",
        count = users.len(),
        csrf = csrf_field(&admin),
    );
    frame(&admin, PATH, "Users", &body)
}

/// `POST /admin/users/{create,delete,passwd}`.
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
    let name = form.get("name").map(|v| v.trim().to_string()).unwrap_or_default();
    let (request, message) = match action.as_str() {
        "create" => (AdminRequest::UsersCreate { name: name.clone() }, format!("User {name} created.")),
        "delete" => (AdminRequest::UsersDelete { name: name.clone() }, format!("User {name} deleted.")),
        "passwd" => {
            let password = Secret(form.get("password").cloned().unwrap_or_default());
            (
                AdminRequest::UsersPasswd { name: name.clone(), password },
                format!("The local password of {name} is set."),
            )
        }
        _ => return done(&app, &admin, PATH, Err(format!("no such action: {action}"))),
    };
    let result = run(&app, &admin, request).await.map(|_| message);
    done(&app, &admin, PATH, result)
}
