//! Where window state lives: each group key's *record* (its bytes, pane records and
//! count-distinct entries; the layout is [`Rec`]'s) in slabs of fixed-size records, one slab
//! per size class, found through an open-addressing table keyed by a 64-bit hash of the key.
//!
//! Goes in: keys (packed in words) and their hash, how much a record must hold. Comes out:
//! mutable record slices, live records in memory order, bytes held. Guarantees: a record moves
//! only through [`Store::grow`] and [`Store::shrink`] (which return where it went) and
//! [`Store::compact`] (which callers run between passes, holding no [`Ref`]); the table never
//! holds a removed record; bytes reported are every page and table slot allocated, free or
//! not.
//!
//! Why not a `HashMap<u64, Vec<u64>>` (the previous layout): at a million keys a lookup missed
//! the cache three times in a row (the map's control bytes, its bucket, the key's heap block),
//! each allocation carried the allocator's header, and closes and checkpoints chased pointers
//! scattered over the heap. Here a lookup is two misses (a table slot, a record), and a batch
//! asks for both a few rows ahead ([`Store::prefetch_slot`], [`Store::prefetch_record`]), so
//! the misses of consecutive rows overlap instead of queueing. Records are contiguous in
//! 64 KiB pages, so closes, checkpoints and restores walk memory in order.

/// A record: size class (top 6 bits) and index in its slab (low 26 bits).
pub(super) type Ref = u32;

const INDEX_BITS: u32 = 26;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;

/// Words of a page (64 KiB); classes larger than a page have one record per page.
const PAGE_WORDS: usize = 8192;

/// Most words of a record: what the 24-bit `used` field of its meta word can say.
pub(super) const MAX_RECORD_WORDS: usize = (1 << 24) - 1;

/// Record sizes in words: steps of a quarter up to 1,024 words (at most 25 % unused), of a
/// half beyond (few keys are that large). Ends with the first size over
/// [`MAX_RECORD_WORDS`], clamped to it.
const CLASSES: [usize; 64] = {
    let mut sizes = [0usize; 64];
    let mut s = 4;
    let mut i = 0;
    while i < 64 {
        sizes[i] = if s > MAX_RECORD_WORDS {
            MAX_RECORD_WORDS
        } else {
            s
        };
        let step = if s < 1024 { s / 4 } else { s / 2 };
        s += if step == 0 { 1 } else { step };
        i += 1;
    }
    sizes
};

/// Flags of a record's meta word (bits 0-7).
pub(super) const LIVE: u64 = 4;
pub(super) const DIRTY: u64 = 1;
pub(super) const PERSISTED: u64 = 2;

/// A record's layout. Word 0 is the meta word: flags (bits 0-7), key byte length (8-23), pane
/// records (24-39), words in use (40-63). Then the key's bytes (input partition, big-endian,
/// then the Arrow row encoding of the group values) in little-endian words, then the pane
/// records, then the count-distinct entries, sorted. The words past `used` up to the class
/// size are free.
pub(super) struct Rec;

impl Rec {
    /// Most bytes a key may have.
    pub const MAX_KEY: usize = 0xFFFF;
    /// Most pane records (or sessions) a key may have.
    pub const MAX_PANES: usize = 0xFFFF;

    pub fn key_len(rec: &[u64]) -> usize {
        ((rec[0] >> 8) & 0xFFFF) as usize
    }

    pub fn key_words(len: usize) -> usize {
        len.div_ceil(8)
    }

    pub fn pane_count(rec: &[u64]) -> usize {
        ((rec[0] >> 24) & 0xFFFF) as usize
    }

    pub fn set_panes(rec: &mut [u64], n: usize) {
        assert!(n <= Self::MAX_PANES, "pane count checked before");
        rec[0] = (rec[0] & !(0xFFFF << 24)) | ((n as u64) << 24);
    }

    /// Words in use, meta word included.
    pub fn used(rec: &[u64]) -> usize {
        (rec[0] >> 40) as usize
    }

    fn set_used(rec: &mut [u64], n: usize) {
        debug_assert!(n <= MAX_RECORD_WORDS);
        rec[0] = (rec[0] & ((1 << 40) - 1)) | ((n as u64) << 40);
    }

    /// Writes a live, dirty record holding a key of `len` bytes in `words`, and nothing else.
    fn init(rec: &mut [u64], len: usize, words: &[u64]) {
        let used = 1 + words.len();
        rec[0] = ((used as u64) << 40) | ((len as u64) << 8) | LIVE | DIRTY;
        rec[1..used].copy_from_slice(words);
    }

    /// Packs `key` into little-endian words, zero-padded, as records hold it.
    pub fn pack(key: &[u8], words: &mut Vec<u64>) {
        words.clear();
        words.extend(key.chunks(8).map(|c| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(b)
        }));
    }

    pub fn panes_start(rec: &[u64]) -> usize {
        1 + Self::key_words(Self::key_len(rec))
    }

    /// Where the count-distinct entries start, for pane records of `r` words.
    pub fn entries_start(rec: &[u64], r: usize) -> usize {
        Self::panes_start(rec) + Self::pane_count(rec) * r
    }

    /// The input partition (the key's first four bytes).
    pub fn partition(rec: &[u64]) -> i32 {
        let b = rec[1].to_le_bytes();
        i32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Appends the key's bytes (partition first) to `out`.
    pub fn push_key(rec: &[u64], out: &mut Vec<u8>) {
        let len = Self::key_len(rec);
        let from = out.len();
        for w in &rec[1..1 + Self::key_words(len)] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.truncate(from + len);
    }

    pub fn key(rec: &[u64]) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::key_len(rec) + 8);
        Self::push_key(rec, &mut out);
        out
    }

    /// True when the record's key is the `len` bytes packed in `words`.
    pub fn key_eq(rec: &[u64], len: usize, words: &[u64]) -> bool {
        // A loop, not `==` on slices: keys are a few words, and `memcmp` per call cost more.
        Self::key_len(rec) == len && rec[1..].iter().zip(words).all(|(a, b)| a == b)
    }

    /// Opens `n` zeroed words at `pos` (the record's capacity must allow it).
    pub fn insert(rec: &mut [u64], pos: usize, n: usize) {
        let used = Self::used(rec);
        rec.copy_within(pos..used, pos + n);
        rec[pos..pos + n].fill(0);
        Self::set_used(rec, used + n);
    }

    /// Removes the `n` words at `pos`.
    pub fn remove(rec: &mut [u64], pos: usize, n: usize) {
        let used = Self::used(rec);
        rec.copy_within(pos + n..used, pos);
        Self::set_used(rec, used - n);
    }

    /// Keeps the words from `start` to the end that `keep` accepts, in order.
    pub fn retain_from(rec: &mut [u64], start: usize, mut keep: impl FnMut(u64) -> bool) {
        let used = Self::used(rec);
        let mut w = start;
        for r in start..used {
            let x = rec[r];
            if keep(x) {
                rec[w] = x;
                w += 1;
            }
        }
        Self::set_used(rec, w);
    }

    /// Sorts the words from `start` to the end and drops repeats.
    pub fn sort_dedup_from(rec: &mut [u64], start: usize) {
        let used = Self::used(rec);
        rec[start..used].sort_unstable();
        let mut w = start;
        for r in start..used {
            if w == start || rec[w - 1] != rec[r] {
                rec[w] = rec[r];
                w += 1;
            }
        }
        Self::set_used(rec, w);
    }
}

/// Records of one size.
struct Slab {
    /// Words of a record.
    words: usize,
    /// log2 of the records of a page.
    shift: u32,
    pages: Vec<Box<[u64]>>,
    /// Records handed out so far (live or free): the next new one's index.
    next: u32,
    /// Indexes of free records below `next` (their meta word is 0).
    free: Vec<u32>,
}

impl Slab {
    fn new(words: usize) -> Slab {
        let per_page = (PAGE_WORDS / words).max(1);
        Slab {
            words,
            shift: per_page.ilog2(),
            pages: Vec::new(),
            next: 0,
            free: Vec::new(),
        }
    }

    fn at(&self, i: u32) -> (usize, usize) {
        let i = i as usize;
        (i >> self.shift, (i & ((1 << self.shift) - 1)) * self.words)
    }

    fn rec(&self, i: u32) -> &[u64] {
        let (p, o) = self.at(i);
        &self.pages[p][o..o + self.words]
    }

    fn rec_mut(&mut self, i: u32) -> &mut [u64] {
        let (p, o) = self.at(i);
        &mut self.pages[p][o..o + self.words]
    }

    fn alloc(&mut self) -> Option<u32> {
        if let Some(i) = self.free.pop() {
            return Some(i);
        }
        // The last index is left out so a slot's `Ref + 1` never overflows 32 bits.
        if self.next >= INDEX_MASK {
            return None;
        }
        let i = self.next;
        if (i as usize >> self.shift) == self.pages.len() {
            self.pages
                .push(vec![0u64; self.words << self.shift].into_boxed_slice());
        }
        self.next += 1;
        Some(i)
    }

    fn bytes(&self) -> usize {
        self.pages.len() * (self.words << self.shift) * 8
            + self.pages.capacity() * std::mem::size_of::<Box<[u64]>>()
            + self.free.capacity() * 4
    }
}

/// Keys' records and the table that finds them.
pub(super) struct Store {
    /// Open addressing, linear probing. A slot is 0 (empty) or the key hash's top 32 bits
    /// (the tag) above the record's [`Ref`] plus one. A key's home slot is its hash's top
    /// `bits` bits, so the tag alone places it again when the table grows.
    slots: Vec<u64>,
    bits: u32,
    /// Live records.
    len: usize,
    /// Words of live records (their classes' sizes).
    live_words: usize,
    slabs: Vec<Slab>,
}

/// Where [`Store::next_live`] has got to.
#[derive(Default)]
pub(super) struct Cursor {
    class: usize,
    index: u32,
}

/// Asks the CPU to bring the cache line at `p` in, without waiting for it.
#[inline(always)]
fn prefetch(p: *const u64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` is a hint: it reads nothing architecturally and never faults,
    // whatever the address; SSE is part of the x86-64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

fn class_of(words: usize) -> Option<usize> {
    let c = CLASSES.partition_point(|&s| s < words);
    (c < CLASSES.len() && words <= MAX_RECORD_WORDS).then_some(c)
}

impl Store {
    pub fn new() -> Store {
        Store {
            slots: vec![0; 16],
            bits: 4,
            len: 0,
            live_words: 0,
            slabs: Vec::new(),
        }
    }

    /// Live records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes allocated: table, pages (live records and free ones), free lists.
    pub fn bytes(&self) -> usize {
        self.slots.len() * 8 + self.slabs.iter().map(Slab::bytes).sum::<usize>()
    }

    fn home(&self, tag: u64) -> usize {
        (tag >> (32 - self.bits)) as usize
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    pub fn rec(&self, r: Ref) -> &[u64] {
        self.slabs[(r >> INDEX_BITS) as usize].rec(r & INDEX_MASK)
    }

    pub fn rec_mut(&mut self, r: Ref) -> &mut [u64] {
        self.slabs[(r >> INDEX_BITS) as usize].rec_mut(r & INDEX_MASK)
    }

    /// Capacity of `r`'s record in words.
    pub fn capacity(&self, r: Ref) -> usize {
        CLASSES[(r >> INDEX_BITS) as usize]
    }

    /// First step of a lookup a few rows ahead: the home slot of `hash`.
    #[inline]
    pub fn prefetch_slot(&self, hash: u64) {
        prefetch(&self.slots[self.home(hash >> 32)]);
    }

    /// Second step: the record of the first slot whose tag is `hash`'s (usually the key's;
    /// a wrong guess only costs a useless prefetch): its first four lines at most, and its
    /// last.
    #[inline]
    pub fn prefetch_record(&self, hash: u64) {
        let tag = hash >> 32;
        let mut i = self.home(tag);
        loop {
            let s = self.slots[i];
            if s == 0 {
                return;
            }
            if s >> 32 == tag {
                let r = (s as u32).wrapping_sub(1);
                let slab = &self.slabs[(r >> INDEX_BITS) as usize];
                let (p, o) = slab.at(r & INDEX_MASK);
                let words = &slab.pages[p][o..];
                let mut at = 0;
                while at < slab.words.min(32) {
                    prefetch(&words[at]);
                    at += 8;
                }
                prefetch(&words[slab.words.min(32) - 1]);
                return;
            }
            i = (i + 1) & self.mask();
        }
    }

    /// The slot and record of the key of `len` bytes packed in `words` (whose hash is
    /// `hash`), or the empty slot where it would go.
    pub fn find(&self, hash: u64, len: usize, words: &[u64]) -> Result<(usize, Ref), usize> {
        let tag = hash >> 32;
        let mut i = self.home(tag);
        loop {
            let s = self.slots[i];
            if s == 0 {
                return Err(i);
            }
            if s >> 32 == tag {
                let r = (s as u32).wrapping_sub(1);
                if Rec::key_eq(self.rec(r), len, words) {
                    return Ok((i, r));
                }
            }
            i = (i + 1) & self.mask();
        }
    }

    /// Appends the records whose table slot carries `hash`'s tag (the key's, and keys that
    /// share the hash's top 32 bits).
    pub fn tagged(&self, hash: u64, out: &mut Vec<Ref>) {
        let tag = hash >> 32;
        let mut i = self.home(tag);
        loop {
            let s = self.slots[i];
            if s == 0 {
                return;
            }
            if s >> 32 == tag {
                out.push((s as u32).wrapping_sub(1));
            }
            i = (i + 1) & self.mask();
        }
    }

    /// The slot holding `r`, whose key hashes to `hash`.
    fn slot_of(&self, hash: u64, r: Ref) -> usize {
        let want = (r as u64) + 1;
        let mut i = self.home(hash >> 32);
        loop {
            let s = self.slots[i];
            assert!(s != 0, "a live record is in the table");
            if s & 0xFFFF_FFFF == want {
                return i;
            }
            i = (i + 1) & self.mask();
        }
    }

    fn alloc(&mut self, words: usize) -> Option<Ref> {
        let c = class_of(words)?;
        while self.slabs.len() <= c {
            let words = CLASSES[self.slabs.len()];
            self.slabs.push(Slab::new(words));
        }
        let i = self.slabs[c].alloc()?;
        self.live_words += CLASSES[c];
        Some(((c as u32) << INDEX_BITS) | i)
    }

    fn free(&mut self, r: Ref) {
        let c = (r >> INDEX_BITS) as usize;
        let slab = &mut self.slabs[c];
        slab.rec_mut(r & INDEX_MASK)[0] = 0;
        slab.free.push(r & INDEX_MASK);
        self.live_words -= CLASSES[c];
    }

    /// Makes room for `n` more keys without growing the table meanwhile.
    pub fn reserve(&mut self, n: usize) {
        let want = self.len + n;
        if want * 4 > self.slots.len() * 3 {
            let bits = (want * 4 / 3 + 1).next_power_of_two().ilog2().max(4);
            self.rehash(bits);
        }
    }

    fn rehash(&mut self, bits: u32) {
        assert!(bits <= 32, "at most 2^32 table slots");
        let old = std::mem::replace(&mut self.slots, vec![0; 1 << bits]);
        self.bits = bits;
        let mask = self.mask();
        for s in old.into_iter().filter(|&s| s != 0) {
            let mut i = self.home(s >> 32);
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
    }

    /// Adds the key of `len` bytes packed in `words` (hash `hash`, absent) with room for
    /// `extra` more words; returns its slot and record. `None` when no class is that large.
    pub fn insert(
        &mut self,
        hash: u64,
        len: usize,
        words: &[u64],
        extra: usize,
    ) -> Option<(usize, Ref)> {
        debug_assert!(len <= Rec::MAX_KEY && words.len() == Rec::key_words(len));
        self.reserve(1);
        let r = self.alloc(1 + words.len() + extra)?;
        Rec::init(self.rec_mut(r), len, words);
        let mut i = self.home(hash >> 32);
        while self.slots[i] != 0 {
            i = (i + 1) & self.mask();
        }
        self.slots[i] = (hash & !0xFFFF_FFFF) | (r as u64 + 1);
        self.len += 1;
        Some((i, r))
    }

    /// Adds a record of `words` (a key's whole record, meta word first, flags kept): restore.
    pub fn insert_record(&mut self, hash: u64, words: &[u64]) -> Option<Ref> {
        self.reserve(1);
        let r = self.alloc(words.len())?;
        self.rec_mut(r)[..words.len()].copy_from_slice(words);
        let mut i = self.home(hash >> 32);
        while self.slots[i] != 0 {
            i = (i + 1) & self.mask();
        }
        self.slots[i] = (hash & !0xFFFF_FFFF) | (r as u64 + 1);
        self.len += 1;
        Some(r)
    }

    /// Makes `r` (in table slot `slot`) hold at least `words` words, moving it to a larger
    /// class if needed; returns where it is. `None` when no class is that large.
    pub fn grow(&mut self, slot: usize, r: Ref, words: usize) -> Option<Ref> {
        if words <= self.capacity(r) {
            return Some(r);
        }
        // Grow by at least a class more than needed, so a key adding a word at a time
        // moves once per class, not per word.
        let to = self.alloc((words + words / 8).min(MAX_RECORD_WORDS))?;
        self.relocate(slot, r, to);
        Some(to)
    }

    fn relocate(&mut self, slot: usize, from: Ref, to: Ref) {
        let (fc, fi) = ((from >> INDEX_BITS) as usize, from & INDEX_MASK);
        let (tc, ti) = ((to >> INDEX_BITS) as usize, to & INDEX_MASK);
        let used = Rec::used(self.slabs[fc].rec(fi));
        if fc == tc {
            let (p, o) = self.slabs[fc].at(fi);
            let words: Vec<u64> = self.slabs[fc].pages[p][o..o + used].to_vec();
            self.slabs[tc].rec_mut(ti)[..used].copy_from_slice(&words);
        } else {
            let (lo, hi) = self.slabs.split_at_mut(fc.max(tc));
            let (src, dst) = if fc < tc {
                (&lo[fc], &mut hi[0])
            } else {
                (&hi[0], &mut lo[tc])
            };
            dst.rec_mut(ti)[..used].copy_from_slice(&src.rec(fi)[..used]);
        }
        self.free(from);
        self.slots[slot] = (self.slots[slot] & !0xFFFF_FFFF) | (to as u64 + 1);
    }

    /// Removes `r`, whose key hashes to `hash`.
    pub fn remove(&mut self, hash: u64, r: Ref) {
        let slot = self.slot_of(hash, r);
        self.free(r);
        self.len -= 1;
        // Backward-shift deletion: later entries of the probe run move into the hole unless
        // their home lies after it.
        let mask = self.mask();
        let mut hole = slot;
        self.slots[hole] = 0;
        let mut j = (hole + 1) & mask;
        loop {
            let s = self.slots[j];
            if s == 0 {
                break;
            }
            let home = self.home(s >> 32);
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = s;
                self.slots[j] = 0;
                hole = j;
            }
            j = (j + 1) & mask;
        }
    }

    /// The next live record at or after `cur`, in memory order; `cur` moves past it.
    pub fn next_live(&self, cur: &mut Cursor) -> Option<Ref> {
        while cur.class < self.slabs.len() {
            let slab = &self.slabs[cur.class];
            while cur.index < slab.next {
                let i = cur.index;
                cur.index += 1;
                if slab.rec(i)[0] & LIVE != 0 {
                    return Some(((cur.class as u32) << INDEX_BITS) | i);
                }
            }
            cur.class += 1;
            cur.index = 0;
        }
        None
    }

    /// Moves `r` (hash `hash`) to the smallest class that holds its words plus `headroom`, when
    /// that is at least two classes smaller. Returns where it is.
    pub fn shrink(&mut self, hash: u64, r: Ref, headroom: usize) -> Ref {
        let c = (r >> INDEX_BITS) as usize;
        let want = Rec::used(self.rec(r)) + headroom;
        match class_of(want) {
            Some(to) if to + 2 <= c => {
                let slot = self.slot_of(hash, r);
                let Some(to) = self.alloc(want) else {
                    return r;
                };
                self.relocate(slot, r, to);
                to
            }
            _ => r,
        }
    }

    /// Gives back pages of slabs whose live records fit in fewer pages, and (unless `force`)
    /// are at least half free: live records at the end of a slab move into free ones below, and
    /// the pages past the last live record are dropped. `hash` gives a record's key hash (to
    /// find its table slot). Refs held before are stale.
    /// The table shrinks too once under a fifth full.
    pub fn compact(&mut self, force: bool, hash: impl Fn(&[u64]) -> u64) {
        if self.slots.len() > 16 && self.len * 5 < self.slots.len() {
            let bits = (self.len * 8 / 3 + 1).next_power_of_two().ilog2().max(4);
            self.rehash(bits);
        }
        for c in 0..self.slabs.len() {
            let slab = &self.slabs[c];
            let per_page = 1usize << slab.shift;
            let live = slab.next as usize - slab.free.len();
            if live.div_ceil(per_page) == slab.pages.len()
                || (!force && slab.free.len() * 2 < slab.next as usize)
            {
                continue;
            }
            let mut free = std::mem::take(&mut self.slabs[c].free);
            free.sort_unstable();
            let mut top = self.slabs[c].next;
            let mut holes = free.into_iter();
            'fill: for hole in holes.by_ref() {
                // The highest live record above the hole moves into it.
                loop {
                    if top == 0 || top - 1 <= hole {
                        break 'fill;
                    }
                    top -= 1;
                    if self.slabs[c].rec(top)[0] & LIVE != 0 {
                        break;
                    }
                }
                let from = ((c as u32) << INDEX_BITS) | top;
                let to = ((c as u32) << INDEX_BITS) | hole;
                let slot = self.slot_of(hash(self.rec(from)), from);
                let words = self.slabs[c].words;
                let (fp, fo) = self.slabs[c].at(top);
                let (tp, to_off) = self.slabs[c].at(hole);
                let moved: Vec<u64> = self.slabs[c].pages[fp][fo..fo + words].to_vec();
                self.slabs[c].pages[tp][to_off..to_off + words].copy_from_slice(&moved);
                self.slabs[c].pages[fp][fo] = 0;
                self.slots[slot] = (self.slots[slot] & !0xFFFF_FFFF) | (to as u64 + 1);
            }
            // `top` is now one past the last live record, or the holes left are above it.
            let slab = &mut self.slabs[c];
            while top > 0 && slab.rec(top - 1)[0] & LIVE == 0 {
                top -= 1;
            }
            slab.free = holes.filter(|&h| h < top).collect();
            slab.next = top;
            let pages = (top as usize).div_ceil(per_page);
            slab.pages.truncate(pages);
            slab.pages.shrink_to_fit();
            slab.free.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn key(k: u32) -> Vec<u8> {
        let mut v = 7i32.to_be_bytes().to_vec();
        v.extend_from_slice(&k.to_le_bytes());
        v.extend(std::iter::repeat_n(b'x', (k % 13) as usize));
        v
    }

    /// A deliberately poor hash, so probe runs collide and wrap.
    fn weak_hash(k: &[u8]) -> u64 {
        (super::super::hash_bytes(k) & 0xF000_0000_0000_0000) | k.len() as u64
    }

    fn find(store: &Store, hash: u64, key: &[u8]) -> Result<(usize, Ref), usize> {
        let mut words = Vec::new();
        Rec::pack(key, &mut words);
        store.find(hash, key.len(), &words)
    }

    fn insert(store: &mut Store, hash: u64, key: &[u8], extra: usize) -> (usize, Ref) {
        let mut words = Vec::new();
        Rec::pack(key, &mut words);
        store.insert(hash, key.len(), &words, extra).unwrap()
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u32, usize),
        Remove(u32),
        Shrink(u32),
        Compact(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..300, 0usize..40).prop_map(|(k, n)| Op::Add(k, n)),
            3 => (0u32..300).prop_map(Op::Remove),
            1 => (0u32..300).prop_map(Op::Shrink),
            1 => any::<bool>().prop_map(Op::Compact),
        ]
    }

    proptest! {
        #![proptest_config(crate::proptest_config(64))]

        /// Against a `HashMap` of key to words: every key is found with its words after any
        /// mix of inserts, growth (relocation), removal (backward shift), shrinking and
        /// compaction, with a hash that makes long probe runs; nothing else is live.
        #[test]
        fn store_keeps_every_key_and_its_words(
            ops in proptest::collection::vec(op(), 1..400),
            weak in any::<bool>(),
        ) {
            let h = |k: &[u8]| if weak { weak_hash(k) } else { super::super::hash_bytes(k) };
            let mut store = Store::new();
            let mut model: HashMap<Vec<u8>, Vec<u64>> = HashMap::new();
            for op in ops {
                match op {
                    Op::Add(k, n) => {
                        let key = key(k);
                        let hash = h(&key);
                        let (slot, r) = match find(&store, hash, &key) {
                            Ok(found) => found,
                            Err(_) => insert(&mut store, hash, &key, 1),
                        };
                        let used = Rec::used(store.rec(r));
                        let r = store.grow(slot, r, used + n).unwrap();
                        let rec = store.rec_mut(r);
                        let at = Rec::panes_start(rec);
                        Rec::insert(rec, at, n);
                        for (i, w) in rec[at..at + n].iter_mut().enumerate() {
                            *w = (k as u64) << 32 | i as u64;
                        }
                        let body = rec[Rec::panes_start(rec)..Rec::used(rec)].to_vec();
                        model.insert(key, body);
                    }
                    Op::Remove(k) => {
                        let key = key(k);
                        let hash = h(&key);
                        if let Ok((_, r)) = find(&store, hash, &key) {
                            store.remove(hash, r);
                            model.remove(&key);
                        }
                    }
                    Op::Shrink(k) => {
                        let key = key(k);
                        let hash = h(&key);
                        if let Ok((_, r)) = find(&store, hash, &key) {
                            let rec = store.rec_mut(r);
                            let start = Rec::panes_start(rec);
                            Rec::retain_from(rec, start, |w| w & 1 == 0);
                            model.insert(key, rec[start..Rec::used(rec)].to_vec());
                            store.shrink(hash, r, 0);
                        }
                    }
                    Op::Compact(force) => store.compact(force, |rec| h(&Rec::key(rec))),
                }
                prop_assert_eq!(store.len(), model.len());
            }
            for (key, body) in &model {
                let (_, r) = find(&store, h(key), key).expect("present");
                let rec = store.rec(r);
                prop_assert_eq!(&rec[Rec::panes_start(rec)..Rec::used(rec)], &body[..]);
            }
            let mut cur = Cursor::default();
            let mut live = 0;
            while let Some(r) = store.next_live(&mut cur) {
                prop_assert!(model.contains_key(&Rec::key(store.rec(r))));
                live += 1;
            }
            prop_assert_eq!(live, model.len());
            let words: usize = model.iter().map(|(k, b)| {
                CLASSES[class_of(1 + Rec::key_words(k.len()) + b.len()).unwrap()]
            }).sum();
            prop_assert!(store.bytes() >= words * 8);
        }
    }

    #[test]
    fn compaction_gives_pages_back() {
        let mut store = Store::new();
        let h = |k: &[u8]| super::super::hash_bytes(k);
        for k in 0..20_000 {
            let key = key(k);
            insert(&mut store, h(&key), &key, 0);
        }
        let full = store.bytes();
        for k in 0..20_000 {
            if k % 10 != 0 {
                let key = key(k);
                let (_, r) = find(&store, h(&key), &key).unwrap();
                store.remove(h(&key), r);
            }
        }
        assert!(store.bytes() >= full, "removal alone keeps the pages");
        store.compact(false, |rec| h(&Rec::key(rec)));
        assert!(
            store.bytes() < full / 3,
            "{} of {full} bytes after compaction",
            store.bytes()
        );
        for k in (0..20_000).step_by(10) {
            let key = key(k);
            assert!(find(&store, h(&key), &key).is_ok(), "key {k} kept");
        }
    }

    #[test]
    fn classes_grow_by_at_most_a_quarter_below_1024_words() {
        assert_eq!(&CLASSES[..6], &[4, 5, 6, 7, 8, 10]);
        for w in CLASSES.windows(2) {
            assert!(w[1] > w[0] || w[1] == MAX_RECORD_WORDS);
            if w[0] < 1024 {
                assert!(w[1] * 4 <= w[0] * 5 + 4, "{w:?}");
            }
        }
        assert_eq!(CLASSES[63], MAX_RECORD_WORDS);
        assert_eq!(class_of(MAX_RECORD_WORDS + 1), None);
    }
}
