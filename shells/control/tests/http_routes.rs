//! (d) `/health`, `/metrics` and `/key` respond; other requests to `/control` are refused.

mod common;

use common::{http, Server, TempDir};

#[test]
fn health_metrics_and_key_respond() {
    let dir = TempDir::new("http-routes");
    let server = Server::start(&dir);
    assert_eq!(http(server.addr, "GET", "/health", &[], ""), (200, "ok".to_string()));
    server.cli(&["users", "create", "alice@example.com"]).ok();
    let (status, metrics) = http(server.addr, "GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    for name in [
        "meshcontrol_nodes 0",
        "meshcontrol_nodes_online 0",
        "meshcontrol_users 1",
        "meshcontrol_policy_compiles_total",
        "meshcontrol_connections_total 0",
        "meshcontrol_messages_sent_total{type=\"map\"} 0",
        "meshcontrol_core_seconds_total",
        "meshcontrol_commits_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
    let (status, key) = http(server.addr, "GET", "/key", &[], "");
    assert_eq!(status, 200);
    let key = key.trim();
    assert_eq!(key.len(), 64);
    assert!(key.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{key}");
    // /control without the upgrade, and the admin API without a key.
    assert_eq!(http(server.addr, "POST", "/control", &[], "").0, 400);
    assert_eq!(http(server.addr, "POST", "/api/v1/users/list", &[], "").0, 401);
    assert_eq!(http(server.addr, "GET", "/nope", &[], "").0, 404);
}
