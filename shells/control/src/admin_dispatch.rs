//! Where an admin request goes, whichever way it came (socket or HTTP): most to the actor
//! (the core decides), `audit` to the database, `users/passwd` hashed here (argon2 is slow,
//! so not on the actor) and then stored by the actor.

use crate::actor::ActorHandle;
use crate::admin_api::{AdminReply, AdminRequest};
use crate::login::hash_password;
use crate::storage::{AuditFilter, StoreHandle};

/// Audit entries returned when the request names no limit.
const DEFAULT_AUDIT_LIMIT: usize = 1000;

pub async fn dispatch(actor: &ActorHandle, store: &StoreHandle, who: String, request: AdminRequest) -> AdminReply {
    let result = match request {
        AdminRequest::Audit { limit, actor: filter_actor, action, contains } => {
            let filter =
                AuditFilter { limit: limit.unwrap_or(DEFAULT_AUDIT_LIMIT), actor: filter_actor, action, contains };
            match store.run(move |s| s.audit(&filter)).await {
                Ok(entries) => serde_json::to_value(entries).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
        AdminRequest::UsersPasswd { name, password } => {
            if password.0.is_empty() {
                return AdminReply::Error("the password is empty".into());
            }
            match tokio::task::spawn_blocking(move || hash_password(&password.0)).await {
                Ok(Ok(hash)) => actor.set_password(who, name, hash).await.unwrap_or_else(|e| Err(e.to_string())),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
        request => actor.admin(who, request).await.unwrap_or_else(|e| Err(e.to_string())),
    };
    match result {
        Ok(value) => AdminReply::Ok(value),
        Err(why) => AdminReply::Error(why),
    }
}
