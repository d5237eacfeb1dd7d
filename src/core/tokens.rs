//! RESERVATION-TOKEN values (RFC 8656 §7.2, §18.10): unguessable, since a token is the only
//! thing that lets an Allocate take the port another allocation reserved.
//!
//! The core cannot read OS randomness, so the IO layer feeds it in: the 32-byte server key
//! (from `getrandom`, also the nonce key) and a per-worker 64-bit seed (also `getrandom`). The
//! tokens are HMAC-SHA256 under a key derived from both with its own label, over a counter:
//! a PRF, so seeing any number of tokens, nonces or Data indication transaction ids (those
//! come from a separate, non-secret splitmix64 state) tells nothing about the next token.

use hmac::{Hmac, Mac};
use sha2::Sha256;

const LABEL: &[u8] = b"turnstone reservation-token key v1";

/// A generator of reservation tokens.
#[derive(Clone)]
pub(crate) struct TokenSource {
    key: [u8; 32],
    counter: u64,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource").finish_non_exhaustive()
    }
}

impl TokenSource {
    /// Keys the generator from OS randomness the IO layer read (`server_key`, `seed`).
    pub fn new(server_key: &[u8; 32], seed: u64) -> Self {
        let mut key = [0u8; 32];
        key.copy_from_slice(&prf(server_key, &[LABEL, &seed.to_be_bytes()]));
        Self { key, counter: 0 }
    }

    /// The next token.
    pub fn next_token(&mut self) -> [u8; 8] {
        self.counter += 1;
        let out = prf(&self.key, &[&self.counter.to_be_bytes()]);
        let mut token = [0u8; 8];
        token.copy_from_slice(&out[..8]);
        token
    }
}

fn prf(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return [0; 32];
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::server::next_random;

    #[test]
    fn tokens_differ_from_each_other_and_across_workers_and_keys() {
        let mut a = TokenSource::new(&[7; 32], 42);
        let mut b = TokenSource::new(&[7; 32], 43);
        let mut c = TokenSource::new(&[8; 32], 42);
        let first = a.next_token();
        assert_ne!(first, a.next_token());
        assert_ne!(first, b.next_token());
        assert_ne!(first, c.next_token());
    }

    #[test]
    fn tokens_are_not_the_seed_stream_that_transaction_ids_reveal() {
        // The old tokens were splitmix64 outputs from the same state as Data indication ids,
        // so one observed id predicted the next token.
        let seed = 42;
        let mut ids = seed;
        let predicted: Vec<[u8; 8]> = (0..64)
            .map(|_| next_random(&mut ids).to_be_bytes())
            .collect();
        let mut tokens = TokenSource::new(&[7; 32], seed);
        for _ in 0..64 {
            assert!(!predicted.contains(&tokens.next_token()));
        }
    }
}
