//! Literals anchored at one end of a value — exact values, `startswith`, `endswith` — found by
//! walking a byte trie from that end of the value.
//!
//! In: at build time, keys (byte strings, already ASCII-lower-cased) each with a payload; a
//! key may be inserted reversed, so that a walk from a value's end finds its suffixes. Per
//! value: the value's bytes, from the anchored end. Out: every node on the walk's path that
//! holds payloads, with its depth (the length of the literal that ends there).
//!
//! Why not the column's Aho-Corasick automaton: an anchored literal can only match at one
//! place, yet an unanchored overlapping scan reads every byte of every value and reports every
//! occurrence of every literal anywhere (`.exe` in the middle of a command line) only for the
//! anchoring check to throw most of them away. The walk reads at most as many bytes as the
//! longest literal the value starts (or ends) with, and usually stops within a few bytes:
//! thousands of `endswith` image names cost one short walk per value, not a scan.
//!
//! Input bytes are ASCII-case-folded as they are read, as the automaton does; other bytes are
//! compared as they are (patterns with letters outside ASCII that have a case are matched by
//! regexes, see [`super::matcher`]).

use std::collections::BTreeMap;

/// Collects keys and payloads; [`TrieBuilder::build`] lays them out for walking.
#[derive(Debug)]
pub(super) struct TrieBuilder<T> {
    /// Per node: children by byte (ordered, so the built edges are sorted).
    children: Vec<BTreeMap<u8, usize>>,
    /// Per node: the payloads of the keys ending there.
    payloads: Vec<Vec<T>>,
}

impl<T> Default for TrieBuilder<T> {
    fn default() -> Self {
        TrieBuilder {
            children: vec![BTreeMap::new()],
            payloads: vec![Vec::new()],
        }
    }
}

impl<T> TrieBuilder<T> {
    /// Whether no key was inserted.
    pub(super) fn is_empty(&self) -> bool {
        self.children.len() == 1 && self.payloads[0].is_empty()
    }

    /// Adds `payloads` at the node spelled by `key` (folded bytes, in walking order).
    pub(super) fn insert(
        &mut self,
        key: impl Iterator<Item = u8>,
        payloads: impl Iterator<Item = T>,
    ) {
        self.insert_from(0, key, payloads);
    }

    /// A new root, apart from node 0: the start of a separate set of keys, walked with
    /// [`AnchoredTrie::walk_from`].
    pub(super) fn add_root(&mut self) -> usize {
        self.children.push(BTreeMap::new());
        self.payloads.push(Vec::new());
        self.children.len() - 1
    }

    /// Adds `payloads` at the node spelled by `key` from node `node`.
    pub(super) fn insert_from(
        &mut self,
        mut node: usize,
        key: impl Iterator<Item = u8>,
        payloads: impl Iterator<Item = T>,
    ) {
        for b in key {
            node = match self.children[node].get(&b) {
                Some(&child) => child,
                None => {
                    let child = self.children.len();
                    self.children.push(BTreeMap::new());
                    self.payloads.push(Vec::new());
                    self.children[node].insert(b, child);
                    child
                }
            };
        }
        self.payloads[node].extend(payloads);
    }

    /// The trie in flat arrays: one allocation per array, whatever the number of keys.
    pub(super) fn build(self) -> AnchoredTrie<T> {
        let n = self.children.len();
        let mut root = vec![0u32; 256].into_boxed_slice();
        for (&b, &child) in &self.children[0] {
            root[usize::from(b)] = child as u32;
        }
        let mut nodes = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        let mut targets = Vec::with_capacity(n);
        let mut payloads = Vec::new();
        for (children, own) in self.children.into_iter().zip(self.payloads) {
            let edges_at = labels.len() as u32;
            for (b, child) in children {
                labels.push(b);
                targets.push(child as u32);
            }
            let payloads_at = payloads.len() as u32;
            payloads.extend(own);
            nodes.push(Node {
                edges: (edges_at, labels.len() as u32),
                payloads: (payloads_at, payloads.len() as u32),
            });
        }
        AnchoredTrie {
            root,
            nodes,
            labels,
            targets,
            payloads,
        }
    }
}

/// One node: ranges into the trie's edge and payload arrays.
#[derive(Debug, Clone, Copy)]
struct Node {
    edges: (u32, u32),
    payloads: (u32, u32),
}

/// A byte trie of folded keys, walked from one end of a value. Node 0 is the root, and never
/// anyone's child, so 0 also means "no child".
#[derive(Debug)]
pub(super) struct AnchoredTrie<T> {
    /// The root's children by byte: most walks end at the first or second byte, so the first
    /// step is a single load.
    root: Box<[u32]>,
    nodes: Vec<Node>,
    /// Edge bytes, sorted within each node.
    labels: Vec<u8>,
    /// Edge targets, parallel to `labels`.
    targets: Vec<u32>,
    payloads: Vec<T>,
}

impl<T> AnchoredTrie<T> {
    /// How many nodes the trie has (the root included).
    #[cfg(test)]
    pub(super) fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// How many payloads the trie holds.
    #[cfg(test)]
    pub(super) fn payloads(&self) -> usize {
        self.payloads.len()
    }

    /// The child of `node` by (folded) byte `b`, or 0.
    #[inline]
    fn child(&self, node: usize, b: u8) -> usize {
        if node == 0 {
            return self.root[usize::from(b)] as usize;
        }
        let (from, to) = self.nodes[node].edges;
        let labels = &self.labels[from as usize..to as usize];
        // Deep nodes have one or two children: a scan beats a search there.
        let at = if labels.len() <= 8 {
            labels.iter().position(|&l| l == b)
        } else {
            labels.binary_search(&b).ok()
        };
        at.map_or(0, |i| self.targets[from as usize + i] as usize)
    }

    /// Walks `bytes` (a value read from its anchored end) from the root, folding ASCII letters,
    /// and calls `visit(depth, payloads)` for every node on the path that holds payloads,
    /// the root included (depth 0), shallowest first. Stops where the path leaves the trie.
    #[inline]
    pub(super) fn walk(&self, bytes: impl Iterator<Item = u8>, visit: impl FnMut(usize, &[T])) {
        self.walk_from(0, bytes, visit);
    }

    /// [`AnchoredTrie::walk`] from node `node` (a root made by [`TrieBuilder::add_root`]).
    #[inline]
    pub(super) fn walk_from(
        &self,
        mut node: usize,
        bytes: impl Iterator<Item = u8>,
        mut visit: impl FnMut(usize, &[T]),
    ) {
        let mut depth = 0;
        let mut bytes = bytes;
        loop {
            let (from, to) = self.nodes[node].payloads;
            if from < to {
                visit(depth, &self.payloads[from as usize..to as usize]);
            }
            let Some(b) = bytes.next() else {
                return;
            };
            node = self.child(node, b.to_ascii_lowercase());
            if node == 0 {
                return;
            }
            depth += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Every (depth, payload) the walk reports.
    fn walked(t: &AnchoredTrie<usize>, value: &[u8], reversed: bool) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut visit = |depth: usize, p: &[usize]| out.extend(p.iter().map(|&p| (depth, p)));
        if reversed {
            t.walk(value.iter().rev().copied(), &mut visit);
        } else {
            t.walk(value.iter().copied(), &mut visit);
        }
        out.sort();
        out
    }

    /// The naive answer: key `i` is reported at its length when the folded value starts (or
    /// ends) with it.
    fn naive(keys: &[Vec<u8>], value: &[u8], reversed: bool) -> Vec<(usize, usize)> {
        let folded = value.to_ascii_lowercase();
        let mut out: Vec<(usize, usize)> = keys
            .iter()
            .enumerate()
            .filter(|(_, k)| {
                if reversed {
                    folded.ends_with(k)
                } else {
                    folded.starts_with(k)
                }
            })
            .map(|(i, k)| (k.len(), i))
            .collect();
        out.sort();
        out
    }

    fn build(keys: &[Vec<u8>], reversed: bool) -> AnchoredTrie<usize> {
        let mut b = TrieBuilder::default();
        for (i, k) in keys.iter().enumerate() {
            if reversed {
                b.insert(k.iter().rev().copied(), std::iter::once(i));
            } else {
                b.insert(k.iter().copied(), std::iter::once(i));
            }
        }
        b.build()
    }

    #[test]
    fn prefixes_and_suffixes_of_windows_paths() {
        let keys: Vec<Vec<u8>> = [
            r"c:\windows\",
            r"c:\windows\system32\",
            r"\cmd.exe",
            r".exe",
        ]
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();
        let front = build(&keys, false);
        let back = build(&keys, true);
        let v = br"C:\Windows\System32\CMD.EXE";
        assert_eq!(walked(&front, v, false), vec![(11, 0), (20, 1)]);
        assert_eq!(walked(&back, v, true), vec![(4, 3), (8, 2)]);
        // A value shorter than every key, and one that leaves the trie at once.
        assert_eq!(walked(&front, b"c:", false), vec![]);
        assert_eq!(walked(&back, b"x", true), vec![]);
        // The empty key is at the root: every value starts with it.
        let empty = build(&[Vec::new()], false);
        assert_eq!(walked(&empty, b"", false), vec![(0, 0)]);
        assert_eq!(walked(&empty, b"abc", false), vec![(0, 0)]);
    }

    /// A key byte: small alphabets so that keys share paths; non-ASCII bytes and wide nodes
    /// (more than eight children: the binary search) included.
    fn key_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            4 => prop::sample::select(b"ab\\.".to_vec()),
            1 => prop::sample::select(vec![0xC3, 0xA9, 0x89, 0xE2]),
            1 => b'c'..=b'z',
        ]
    }

    proptest! {
        #![proptest_config(crate::proptest_config(256))]

        /// The walk reports exactly the keys the folded value starts (ends) with.
        #[test]
        fn walk_agrees_with_starts_with_and_ends_with(
            keys in prop::collection::vec(prop::collection::vec(key_byte(), 0..6), 0..24),
            values in prop::collection::vec(
                prop::collection::vec(prop_oneof![key_byte(), b'A'..=b'Z'], 0..10), 1..20),
            reversed in any::<bool>(),
        ) {
            let t = build(&keys, reversed);
            for v in &values {
                prop_assert_eq!(walked(&t, v, reversed), naive(&keys, v, reversed), "{:?}", v);
            }
        }
    }
}
