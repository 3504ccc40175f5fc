//! `meshcontrol policy check` and `policy compile` as a user runs them: the real binary,
//! real files, exit codes and output.

use std::path::PathBuf;
use std::process::Command;

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("meshcontrol-policy-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d
}

fn write(name: &str, text: &str) -> PathBuf {
    let p = dir().join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
    p
}

fn meshcontrol(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshcontrol")).args(args).output().unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const POLICY: &str = r#"// Engineering reaches the web servers; everyone their own nodes.
{
  "groups": {"group:eng": ["alice@example.com"]},
  "tagOwners": {"tag:web": ["group:eng"]},
  "acls": [
    {"action": "accept", "src": ["group:eng"], "dst": ["tag:web:22,443"]},
    {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
  ],
  "ssh": [
    {"action": "accept", "src": ["group:eng"], "dst": ["tag:web"], "users": ["deploy"]},
  ],
  "nodeAttrs": [{"target": ["*"], "attr": ["funnel"]}],
}
"#;

const NODES: &str = r#"[
  {"name": "laptop", "user": "alice@example.com", "addresses": ["100.64.0.1", "fd7a:115c:a1e0::1"]},
  {"name": "phone", "user": "alice@example.com", "addresses": ["100.64.0.2"]},
  {"name": "web", "user": "alice@example.com", "tags": ["tag:web"], "addresses": ["100.64.0.3"]},
  {"name": "other", "user": "bob@example.com", "addresses": ["100.64.0.4"]}
]"#;

#[test]
fn check_accepts_a_valid_policy_with_a_summary_and_warnings() {
    let f = write("good.hujson", POLICY);
    let (code, out, err) = meshcontrol(&["policy", "check", "-f", &f.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    let first = lines.next().unwrap_or_default();
    assert!(first.contains(": ok: 1 groups") && first.contains("1 ssh rules"), "{out}");
    assert!(lines.next().is_some_and(|l| l.contains(":12:") && l.contains("funnel")), "{out}");
}

#[test]
fn check_rejects_with_file_line_and_message() {
    let bad = POLICY.replace("tag:web:22,443", "tag:web:0");
    let f = write("bad.hujson", &bad);
    let (code, out, err) = meshcontrol(&["policy", "check", "-f", &f.display().to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(err.starts_with(&format!("{}:6:", f.display())), "{err}");
    assert!(err.contains("acls[0].dst[0]") && err.contains("port 0"), "{err}");
    let (code, _, err) = meshcontrol(&["policy", "check", "-f", "/nonexistent/policy.hujson"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn compile_shows_what_each_node_receives() {
    let f = write("compile.hujson", POLICY);
    let n = write("nodes.json", NODES);
    let (code, out, err) = meshcontrol(&[
        "policy",
        "compile",
        "-f",
        &f.display().to_string(),
        "--nodes",
        &n.display().to_string(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let node = |name: &str| {
        v.as_array().and_then(|a| a.iter().find(|n| n["name"] == name)).cloned().unwrap_or_else(|| panic!("{name}"))
    };
    let web = node("web");
    assert_eq!(web["peers"], serde_json::json!(["laptop", "phone"]));
    assert_eq!(web["filter"][0]["dsts"], serde_json::json!(["100.64.0.3/32:22", "100.64.0.3/32:443"]));
    assert_eq!(web["ssh"][0]["principals"], serde_json::json!(["laptop", "phone"]));
    assert_eq!(web["ssh"][0]["users"]["deploy"], "deploy");
    assert_eq!(web["ssh"][0]["users"]["root"], "");
    assert_eq!(node("other")["peers"], serde_json::json!([]));
    assert_eq!(node("laptop")["peers"], serde_json::json!(["phone", "web"]));
    let (code, out, _) = meshcontrol(&[
        "policy",
        "compile",
        "-f",
        &f.display().to_string(),
        "--nodes",
        &n.display().to_string(),
        "--node",
        "web",
    ]);
    assert_eq!(code, 0);
    assert!(out.starts_with("node web\n  peers: laptop, phone\n"), "{out}");
    assert!(out.contains("ssh accept from laptop phone"), "{out}");
    let (code, _, err) = meshcontrol(&[
        "policy",
        "compile",
        "-f",
        &f.display().to_string(),
        "--nodes",
        &n.display().to_string(),
        "--node",
        "nope",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no node named"), "{err}");
}

/// `"groups"` on an inventory node stands for its user's IdP group claim: bob (in no group
/// of the policy) reaches the web server once his claim says `eng`; values that are no
/// group names are ignored.
#[test]
fn compile_takes_idp_groups_from_the_inventory() {
    let f = write("idp.hujson", POLICY);
    let nodes = NODES.replace(
        r#""user": "bob@example.com","#,
        r#""user": "bob@example.com", "groups": ["eng", "not a group", "sales"],"#,
    );
    let n = write("idp-nodes.json", &nodes);
    let (code, out, err) = meshcontrol(&[
        "policy",
        "compile",
        "-f",
        &f.display().to_string(),
        "--nodes",
        &n.display().to_string(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let web = v.as_array().and_then(|a| a.iter().find(|n| n["name"] == "web")).cloned().unwrap_or_default();
    assert_eq!(web["peers"], serde_json::json!(["laptop", "phone", "other"]), "{web}");
    assert_eq!(web["ssh"][0]["principals"], serde_json::json!(["laptop", "phone", "other"]), "{web}");
}
