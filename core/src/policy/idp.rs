//! Group claims of the identity provider as policy groups.
//!
//! A user whose most recent single sign-on carried the group `eng` is also a member of
//! `group:eng`, in addition to the members the policy lists. The policy must still declare
//! the group (`"groups": {"group:eng": []}`), so a typo in a rule stays an error rather than
//! a group some IdP might one day fill. The claim's values come from outside: only those
//! that make valid policy group names count, and a user keeps at most [`MAX_IDP_GROUPS`]
//! of them, so neither the user record nor the compiler grows with what an IdP sends.
//!
//! The policy's `tests` and `sshTests` do not see these groups: they are about the policy
//! text, which must pass them whatever an IdP says.

use super::alias::check_group_name;

/// At most this many IdP groups are kept per user (the rest are dropped).
pub const MAX_IDP_GROUPS: usize = 64;
/// An IdP group value longer than this is ignored.
pub const MAX_IDP_GROUP_BYTES: usize = 128;

/// The result of [`idp_groups`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdpGroups {
    /// The values kept (`eng`, not `group:eng`), sorted and without repeats.
    pub kept: Vec<String>,
    /// How many values were not valid policy group names (or too long).
    pub ignored: usize,
    /// How many valid values were dropped past [`MAX_IDP_GROUPS`].
    pub dropped: usize,
}

/// Sanitizes an IdP's group values: invalid names are ignored, the rest sorted (so the
/// order the IdP sends them in changes nothing), deduplicated and cut to
/// [`MAX_IDP_GROUPS`].
pub fn idp_groups<S: AsRef<str>>(values: &[S]) -> IdpGroups {
    let mut kept: Vec<String> = Vec::new();
    let mut ignored = 0;
    for v in values {
        match idp_policy_group(v.as_ref()) {
            Some(_) => kept.push(v.as_ref().to_string()),
            None => ignored += 1,
        }
    }
    kept.sort();
    kept.dedup();
    let dropped = kept.len().saturating_sub(MAX_IDP_GROUPS);
    kept.truncate(MAX_IDP_GROUPS);
    IdpGroups { kept, ignored, dropped }
}

/// The policy group an IdP group value fills (`eng` -> `group:eng`), or `None` when the
/// value cannot name one (too long, empty, characters a group name may not have; a value
/// that already reads `group:eng` is not a name either).
pub fn idp_policy_group(value: &str) -> Option<String> {
    if value.len() > MAX_IDP_GROUP_BYTES {
        return None;
    }
    let name = format!("group:{value}");
    check_group_name(&name).is_ok().then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_are_kept_sorted_once() {
        let got = idp_groups(&["ops", "eng", "ops", "a.b-c_d"]);
        assert_eq!(got.kept, ["a.b-c_d", "eng", "ops"]);
        assert_eq!((got.ignored, got.dropped), (0, 0));
        assert_eq!(idp_policy_group("eng").as_deref(), Some("group:eng"));
    }

    #[test]
    fn invalid_names_are_ignored() {
        let long = "x".repeat(MAX_IDP_GROUP_BYTES + 1);
        let values = ["", "group:eng", "a b", "é", "*", "eng/ops", long.as_str(), "ok"];
        let got = idp_groups(&values);
        assert_eq!(got.kept, ["ok"]);
        assert_eq!(got.ignored, values.len() - 1);
        assert!(idp_policy_group(&"x".repeat(MAX_IDP_GROUP_BYTES)).is_some());
    }

    #[test]
    fn at_most_the_limit_is_kept() {
        let values: Vec<String> = (0..MAX_IDP_GROUPS + 10).map(|i| format!("g{i:03}")).collect();
        let got = idp_groups(&values);
        assert_eq!(got.kept.len(), MAX_IDP_GROUPS);
        assert_eq!(got.dropped, 10);
        assert_eq!(got.kept.first().map(String::as_str), Some("g000"));
    }
}
