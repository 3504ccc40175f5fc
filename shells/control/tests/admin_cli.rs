//! (a) `meshcontrol serve` driven only through the admin CLI: users, pre-auth keys, the
//! policy (a bad one refused with file:line and nothing changed), API keys over HTTP, the
//! audit log, and the exit codes (0 done, 1 refused, 2 could not run).

mod common;

use common::{cli, Server, TempDir};
use serde_json::Value;

const POLICY: &str = r#"// Engineering owns the web tag.
{
  "groups": {"group:eng": ["alice@example.com"]},
  "tagOwners": {"tag:web": ["group:eng"]},
  "acls": [
    {"action": "accept", "src": ["group:eng"], "dst": ["tag:web:22,443"]},
    {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
  ],
}
"#;

/// Line 4 names an undefined group.
const BAD_POLICY: &str = r#"{
  "acls": [
    {"action": "accept",
     "src": ["group:nobody"], "dst": ["*:*"]},
  ],
}
"#;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn the_admin_cli_drives_the_server() {
    let dir = TempDir::new("admin-cli");
    let server = Server::start(&dir);

    // Users.
    assert!(server.cli(&["users", "create", "alice@example.com"]).ok().contains("created user 1"));
    server.cli(&["users", "create", "bob@example.com"]).ok();
    let dup = server.cli(&["users", "create", "bob@example.com"]);
    assert_eq!(dup.code, 1, "{dup:?}");
    assert!(dup.stderr.contains("exists"), "{dup:?}");
    let bad = server.cli(&["users", "create", "no-domain"]);
    assert_eq!(bad.code, 1, "{bad:?}");
    let users = json(&server.cli(&["users", "list", "--json"]).ok());
    let names: Vec<&str> = users.as_array().into_iter().flatten().filter_map(|u| u["name"].as_str()).collect();
    assert_eq!(names, ["alice@example.com", "bob@example.com"]);
    server.cli(&["users", "rename", "bob@example.com", "robert@example.com"]).ok();
    assert!(server.cli(&["users", "list"]).ok().contains("robert@example.com"));

    // The policy: set from a file; a bad one is refused against the file's line.
    let good = dir.path().join("policy.hujson");
    std::fs::write(&good, POLICY).unwrap_or_else(|e| panic!("{e}"));
    let good = good.display().to_string();
    server.cli(&["policy", "set", "-f", &good]).ok();
    assert_eq!(server.cli(&["policy", "get"]).ok(), POLICY);
    let bad_file = dir.path().join("bad.hujson");
    std::fs::write(&bad_file, BAD_POLICY).unwrap_or_else(|e| panic!("{e}"));
    let bad_file = bad_file.display().to_string();
    let refused = server.cli(&["policy", "set", "-f", &bad_file]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.starts_with(&format!("{bad_file}:4:")), "{refused:?}");
    assert!(refused.stderr.contains("group:nobody"), "{refused:?}");
    assert_eq!(server.cli(&["policy", "get"]).ok(), POLICY, "a refused policy changes nothing");
    // `policy check` stays offline and agrees.
    let offline = cli(&dir.path().join("nowhere"), &["policy", "check", "-f", &bad_file], None);
    assert_eq!(offline.code, 1, "{offline:?}");

    // Pre-auth keys: printed once, listed without their secret.
    let key = server.cli(&["preauthkeys", "create", "--user", "alice@example.com", "--reusable"]).ok();
    assert!(key.trim().starts_with("mskey-1-"), "{key}");
    let tagged = server.cli(&[
        "preauthkeys",
        "create",
        "--user",
        "alice@example.com",
        "--tags",
        "tag:web",
        "--expiration",
        "2h",
        "--json",
    ]);
    let tagged = json(&tagged.ok());
    assert_eq!(tagged["id"], 2);
    let undefined = server.cli(&["preauthkeys", "create", "--user", "alice@example.com", "--tags", "tag:nope"]);
    assert_eq!(undefined.code, 1, "{undefined:?}");
    let no_user = server.cli(&["preauthkeys", "create", "--user", "carol@example.com"]);
    assert_eq!(no_user.code, 1, "{no_user:?}");
    let list = server.cli(&["preauthkeys", "list", "--json"]).ok();
    assert!(!list.contains(key.trim()), "secrets are never listed");
    let keys = json(&list);
    let keys = keys.as_array().unwrap_or_else(|| panic!("{list}"));
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["reusable"], true);
    assert_eq!(keys[1]["tags"][0], "tag:web");
    server.cli(&["preauthkeys", "expire", "2"]).ok();
    let keys = json(&server.cli(&["preauthkeys", "list", "--json"]).ok());
    assert_eq!(keys[1]["revoked"], true);
    assert_eq!(server.cli(&["preauthkeys", "expire", "9"]).code, 1);

    // API keys: used over HTTP; the actor is the key.
    let api_key = server.cli(&["apikeys", "create", "--expiration", "1d"]).ok().trim().to_string();
    assert!(api_key.starts_with("mskapi-1-"), "{api_key}");
    let url = server.url();
    let over_http = |key: &str, args: &[&str]| {
        let mut all = vec!["--server", url.as_str(), "--api-key", key];
        all.extend_from_slice(args);
        cli(&dir.path().join("nowhere"), &all, None)
    };
    over_http(&api_key, &["users", "create", "carol@example.com"]).ok();
    let users = json(&over_http(&api_key, &["users", "list", "--json"]).ok());
    assert_eq!(users.as_array().map(Vec::len), Some(3));
    let wrong = over_http("mskapi-1-000000000000000000000000000000000000000000000000", &["users", "list"]);
    assert_eq!(wrong.code, 1, "{wrong:?}");
    let refused = over_http(&api_key, &["users", "create", "carol@example.com"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    let apikeys = json(&server.cli(&["apikeys", "list", "--json"]).ok());
    assert_eq!(apikeys[0]["revoked"], false);
    server.cli(&["apikeys", "expire", "1"]).ok();
    assert_eq!(over_http(&api_key, &["users", "list"]).code, 1, "an expired key is refused");

    // The audit log names every actor.
    let audit = json(&server.cli(&["audit", "--json"]).ok());
    let entries: Vec<(String, String)> = audit
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["actor"].as_str().unwrap_or("").to_string(), e["action"].as_str().unwrap_or("").to_string()))
        .collect();
    assert!(entries.contains(&("admin".into(), "user-create".into())), "{entries:?}");
    assert!(entries.contains(&("api-key:1".into(), "user-create".into())), "{entries:?}");
    assert!(entries.contains(&("admin".into(), "policy-set".into())), "{entries:?}");
    assert_eq!(entries.iter().filter(|(_, a)| a == "policy-set").count(), 1, "the refused policy left no entry");
    assert!(server.cli(&["audit"]).ok().contains("ACTOR"));

    // Nothing listens: exit 2.
    let none = cli(&dir.path().join("nowhere"), &["users", "list"], None);
    assert_eq!(none.code, 2, "{none:?}");
    let no_http =
        cli(&dir.path().join("nowhere"), &["--server", "http://127.0.0.1:1", "--api-key", "x", "users", "list"], None);
    assert_eq!(no_http.code, 2, "{no_http:?}");
}

#[test]
fn everything_survives_a_restart() {
    let dir = TempDir::new("restart");
    let mut server = Server::start(&dir);
    let key_before = server.key();
    server.cli(&["users", "create", "alice@example.com"]).ok();
    let policy = dir.path().join("policy.hujson");
    std::fs::write(&policy, POLICY).unwrap_or_else(|e| panic!("{e}"));
    server.cli(&["policy", "set", "-f", &policy.display().to_string()]).ok();
    server.cli(&["preauthkeys", "create", "--user", "alice@example.com"]).ok();
    server.cli(&["apikeys", "create"]).ok();
    server.kill();
    let server = Server::start(&dir);
    assert_eq!(server.key(), key_before, "the server key is kept");
    assert_eq!(server.cli(&["policy", "get"]).ok(), POLICY);
    assert!(server.cli(&["users", "list"]).ok().contains("alice@example.com"));
    assert_eq!(json(&server.cli(&["preauthkeys", "list", "--json"]).ok()).as_array().map(Vec::len), Some(1));
    assert_eq!(json(&server.cli(&["apikeys", "list", "--json"]).ok()).as_array().map(Vec::len), Some(1));
    // New records continue the ids.
    assert!(server.cli(&["users", "create", "bob@example.com"]).ok().contains("created user 2"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(server.state.join("server.key")).unwrap_or_else(|e| panic!("{e}")).permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}
