//! Maps keyed by secret URL tokens (login links, check holds), looked up by the token's
//! SHA-256: the lookup's comparisons run on a digest the caller cannot steer, so their
//! timing says nothing about how close a guess came to a real token.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

#[derive(Debug)]
pub(crate) struct TokenMap<T> {
    entries: BTreeMap<[u8; 32], (String, T)>,
}

impl<T> Default for TokenMap<T> {
    fn default() -> Self {
        Self { entries: BTreeMap::new() }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl<T> TokenMap<T> {
    pub(crate) fn insert(&mut self, token: String, value: T) {
        self.entries.insert(digest(&token), (token, value));
    }

    pub(crate) fn get(&self, token: &str) -> Option<&T> {
        self.entries.get(&digest(token)).map(|(_, v)| v)
    }

    pub(crate) fn remove(&mut self, token: &str) -> Option<T> {
        self.entries.remove(&digest(token)).map(|(_, v)| v)
    }

    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&String, &mut T) -> bool) {
        self.entries.retain(|_, (t, v)| keep(t, v));
    }

    /// Entries with their tokens (for the admin's lists), in no meaningful order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &T)> {
        self.entries.values().map(|(t, v)| (t, v))
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.values().map(|(_, v)| v)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_by_their_digest_only() {
        let mut map = TokenMap::default();
        map.insert("0123abcd".to_string(), 1);
        map.insert("ffff0000".to_string(), 2);
        assert_eq!(map.get("0123abcd"), Some(&1));
        assert_eq!(map.get("0123abce"), None);
        map.retain(|t, _| t != "ffff0000");
        assert_eq!(map.len(), 1);
        assert_eq!(map.iter().map(|(t, v)| (t.as_str(), *v)).collect::<Vec<_>>(), vec![("0123abcd", 1)]);
        assert_eq!(map.remove("0123abcd"), Some(1));
        assert_eq!(map.values().count(), 0);
    }
}
