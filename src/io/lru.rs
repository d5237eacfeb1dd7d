//! A bounded table of token buckets with least-recently-seen eviction: one shard of the
//! request limiter (io::admission). Entries live in a slab threaded on a doubly linked list
//! (most recent first), so a lookup, a touch and an eviction are O(1) and the memory never
//! exceeds the capacity given at construction.

use std::collections::HashMap;
use std::hash::Hash;

/// No node: the end of the list.
const NIL: u32 = u32::MAX;

/// A bucket's state: its GCRA theoretical arrival time in nanoseconds since the limiter's
/// epoch (a bucket is full again once this is not in the future).
pub(super) type Tat = u64;

struct Node<K> {
    key: K,
    tat: Tat,
    prev: u32,
    next: u32,
}

/// Up to `capacity` keys, each with a bucket, ordered by when they were last seen.
pub(super) struct LruBuckets<K> {
    index: HashMap<K, u32>,
    nodes: Vec<Node<K>>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    capacity: usize,
}

impl<K: Copy + Eq + Hash> LruBuckets<K> {
    /// An empty table holding at most `capacity` keys (at least one, at most `u32::MAX - 1`).
    pub fn new(capacity: usize) -> Self {
        Self {
            index: HashMap::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            capacity: capacity.clamp(1, (NIL - 1) as usize),
        }
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether inserting a new key needs an eviction first.
    pub fn is_full(&self) -> bool {
        self.index.len() >= self.capacity
    }

    /// The bucket of `key`, which becomes the most recently seen.
    pub fn touch(&mut self, key: &K) -> Option<&mut Tat> {
        let at = *self.index.get(key)?;
        self.unlink(at);
        self.push_front(at);
        Some(&mut self.nodes[at as usize].tat)
    }

    /// The bucket of the least recently seen key.
    pub fn oldest(&self) -> Option<Tat> {
        (self.tail != NIL).then(|| self.nodes[self.tail as usize].tat)
    }

    /// Forgets the least recently seen key.
    pub fn evict_oldest(&mut self) {
        if self.tail != NIL {
            self.remove(self.tail);
        }
    }

    /// Adds `key` (not yet present) as the most recently seen; refused when full.
    pub fn insert(&mut self, key: K, tat: Tat) -> bool {
        if self.is_full() || self.index.contains_key(&key) {
            return false;
        }
        let node = Node {
            key,
            tat,
            prev: NIL,
            next: NIL,
        };
        let at = match self.free.pop() {
            Some(at) => {
                self.nodes[at as usize] = node;
                at
            }
            None => {
                // capacity < NIL, so the slab index fits in a u32.
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        self.index.insert(key, at);
        self.push_front(at);
        true
    }

    /// Forgets every key whose bucket fails `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(Tat) -> bool) {
        let mut at = self.head;
        while at != NIL {
            let next = self.nodes[at as usize].next;
            if !keep(self.nodes[at as usize].tat) {
                self.remove(at);
            }
            at = next;
        }
        if self.index.is_empty() {
            // After a flood, give the memory back.
            *self = Self::new(self.capacity);
        }
    }

    fn remove(&mut self, at: u32) {
        self.unlink(at);
        self.index.remove(&self.nodes[at as usize].key);
        self.free.push(at);
    }

    fn unlink(&mut self, at: u32) {
        let (prev, next) = {
            let n = &self.nodes[at as usize];
            (n.prev, n.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, at: u32) {
        let old = self.head;
        {
            let n = &mut self.nodes[at as usize];
            n.prev = NIL;
            n.next = old;
        }
        match old {
            NIL => self.tail = at,
            o => self.nodes[o as usize].prev = at,
        }
        self.head = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(t: &LruBuckets<u32>) -> Vec<u32> {
        let mut out = Vec::new();
        let mut at = t.head;
        while at != NIL {
            out.push(t.nodes[at as usize].key);
            at = t.nodes[at as usize].next;
        }
        out
    }

    #[test]
    fn the_least_recently_seen_key_is_evicted_first() {
        let mut t = LruBuckets::new(3);
        for k in 1..=3 {
            assert!(t.insert(k, u64::from(k)));
        }
        assert!(!t.insert(4, 4), "full");
        assert_eq!(t.touch(&1).copied(), Some(1));
        assert_eq!(t.oldest(), Some(2));
        t.evict_oldest();
        assert!(t.insert(4, 4));
        assert_eq!(keys(&t), [4, 1, 3]);
        assert!(t.touch(&2).is_none());
    }

    #[test]
    fn retain_forgets_failing_buckets_and_keeps_the_order() {
        let mut t = LruBuckets::new(10);
        for k in 0..6 {
            t.insert(k, u64::from(k));
        }
        t.retain(|tat| tat % 2 == 0);
        assert_eq!((keys(&t), t.len()), (vec![4, 2, 0], 3));
        assert!(t.insert(9, 9) && t.insert(8, 8));
        assert_eq!(keys(&t), [8, 9, 4, 2, 0]);
        t.retain(|_| false);
        assert_eq!((t.len(), t.oldest()), (0, None));
        assert!(t.insert(1, 1));
        assert_eq!(keys(&t), [1]);
    }
}
