//! A set of nodes as a bitset over their index in the inventory: unions and membership are
//! word operations, which is what keeps visibility at 10k nodes cheap.

/// Node indices `0..len` of one inventory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeSet {
    words: Vec<u64>,
}

impl NodeSet {
    /// An empty set able to hold indices below `len`.
    pub fn with_len(len: usize) -> Self {
        Self { words: vec![0; len.div_ceil(64)] }
    }

    pub fn insert(&mut self, index: usize) {
        let word = index / 64;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << (index % 64);
    }

    pub fn remove(&mut self, index: usize) {
        if let Some(w) = self.words.get_mut(index / 64) {
            *w &= !(1 << (index % 64));
        }
    }

    pub fn contains(&self, index: usize) -> bool {
        self.words.get(index / 64).is_some_and(|w| w & (1 << (index % 64)) != 0)
    }

    pub fn union_with(&mut self, other: &NodeSet) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    pub fn intersects(&self, other: &NodeSet) -> bool {
        self.words.iter().zip(&other.words).any(|(a, b)| a & b != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Members of `self` that are not in `other`, in increasing order.
    pub fn difference<'a>(&'a self, other: &'a NodeSet) -> impl Iterator<Item = usize> + 'a {
        self.words
            .iter()
            .enumerate()
            .flat_map(move |(i, &w)| word_bits(i, w & !other.words.get(i).copied().unwrap_or(0)))
    }

    /// The members in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| word_bits(i, w))
    }
}

/// The indices of the set bits of word `i`.
fn word_bits(i: usize, mut w: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if w == 0 {
            return None;
        }
        let bit = w.trailing_zeros() as usize;
        w &= w - 1;
        Some(i * 64 + bit)
    })
}

impl FromIterator<usize> for NodeSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut set = NodeSet::default();
        for i in iter {
            set.insert(i);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let mut a: NodeSet = [1, 64, 130].into_iter().collect();
        let b: NodeSet = [2, 64].into_iter().collect();
        assert!(a.contains(64) && !a.contains(2) && !a.contains(10_000));
        assert!(a.intersects(&b));
        a.union_with(&b);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![1, 2, 64, 130]);
        assert_eq!(a.difference(&b).collect::<Vec<_>>(), vec![1, 130]);
        assert_eq!(b.difference(&NodeSet::default()).collect::<Vec<_>>(), vec![2, 64]);
        a.remove(64);
        assert_eq!(a.len(), 3);
        assert!(NodeSet::with_len(100).is_empty());
    }
}
