//! Answers to retransmitted requests (RFC 8489 §6.3.1: a server remembers responses for 40 s so
//! a retransmitted non-idempotent request — Allocate, Refresh with LIFETIME 0 — gets the same
//! answer instead of a 437).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::proto::TransactionId;

use super::FiveTuple;

const TTL: Duration = Duration::from_secs(40);

type Key = (FiveTuple, TransactionId);

/// A bounded map of recent responses; the oldest entries go first.
#[derive(Debug)]
pub(crate) struct ResponseCache {
    entries: HashMap<Key, (Instant, Box<[u8]>)>,
    order: VecDeque<(Instant, Key)>,
    capacity: usize,
}

impl ResponseCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// The remembered response, if still fresh.
    pub fn get(&self, ft: &FiveTuple, tid: &TransactionId, now: Instant) -> Option<&[u8]> {
        match self.entries.get(&(*ft, *tid)) {
            Some((expires, bytes)) if *expires > now => Some(bytes),
            _ => None,
        }
    }

    /// Remembers a response.
    pub fn insert(&mut self, ft: FiveTuple, tid: TransactionId, response: &[u8], now: Instant) {
        self.expire(now);
        while self.order.len() >= self.capacity {
            if let Some((_, key)) = self.order.pop_front() {
                self.entries.remove(&key);
            }
        }
        let expires = now + TTL;
        if self
            .entries
            .insert((ft, tid), (expires, response.into()))
            .is_none()
        {
            self.order.push_back((expires, (ft, tid)));
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((expires, key)) = self.order.front().copied() {
            if expires > now {
                break;
            }
            self.order.pop_front();
            if self.entries.get(&key).is_some_and(|(e, _)| *e <= now) {
                self.entries.remove(&key);
            }
        }
    }
}
