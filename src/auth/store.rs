//! Static users and TURN REST API secrets, looked up per request without
//! allocating.

use std::collections::HashMap;
use std::fmt;

use super::key::{Key, PasswordAlgorithm, long_term_key, userhash};
use super::nonce::SecurityFeatures;
use super::rest::{
    HmacSha1, hmac_sha1, parse_rest_expiry, rest_password_buf, rest_password_with, rest_username,
};
use super::selftest::{SelftestKey, is_selftest_username};

/// Most REST secrets active at once; [`CredentialStore::new`] ignores the rest.
/// Several secrets let an operator rotate without downtime; 8 is plenty and
/// keeps [`KeyList`] inline.
pub const MAX_SECRETS: usize = 8;

/// Keys derived for one static user, one per password algorithm.
struct StaticUser {
    md5: Key,
    sha256: Key,
}

impl StaticUser {
    fn key(&self, alg: PasswordAlgorithm) -> Key {
        match alg {
            PasswordAlgorithm::Md5 => self.md5,
            PasswordAlgorithm::Sha256 => self.sha256,
        }
    }
}

/// Static users and REST secrets (several active so secrets rotate without
/// downtime; the first mints new credentials).
pub struct CredentialStore {
    realm: String,
    users: HashMap<String, StaticUser>,
    by_hash: HashMap<[u8; 32], String>,
    /// Pre-keyed HMAC-SHA1 states, one per secret, at most [`MAX_SECRETS`].
    secrets: Vec<HmacSha1>,
    /// The key of self-test credentials (see [`super::selftest`]); `None` while the
    /// self-test page is off, and then every name with the reserved marker is unknown.
    selftest: Option<SelftestKey>,
}

impl CredentialStore {
    /// Builds the store, precomputing both keys and the USERHASH index for
    /// every static user (passwords are not kept). A repeated username keeps
    /// its last password. Only the first [`MAX_SECRETS`] secrets are used.
    pub fn new(
        realm: &str,
        users: impl IntoIterator<Item = (String, String)>,
        secrets: Vec<Vec<u8>>,
    ) -> Self {
        let mut map = HashMap::new();
        let mut by_hash = HashMap::new();
        for (name, password) in users {
            let (u, r, p) = (name.as_bytes(), realm.as_bytes(), password.as_bytes());
            let user = StaticUser {
                md5: long_term_key(PasswordAlgorithm::Md5, u, r, p),
                sha256: long_term_key(PasswordAlgorithm::Sha256, u, r, p),
            };
            by_hash.insert(userhash(u, r), name.clone());
            map.insert(name, user);
        }
        Self {
            realm: realm.to_owned(),
            users: map,
            by_hash,
            secrets: secrets
                .iter()
                .take(MAX_SECRETS)
                .map(|s| hmac_sha1(s))
                .collect(),
            selftest: None,
        }
    }

    /// The store that also accepts self-test credentials signed with `key`.
    #[must_use]
    pub fn with_selftest(mut self, key: SelftestKey) -> Self {
        self.selftest = Some(key);
        self
    }

    /// Whether self-test credentials are accepted.
    pub fn accepts_selftest(&self) -> bool {
        self.selftest.is_some()
    }

    /// Candidate keys for `username` at `unix_now` for algorithm `alg`: a
    /// static user's key; else, if it parses as a REST username that has not
    /// expired, one key per secret. Static users win over REST parsing.
    ///
    /// A REST username stays valid through its expiry second
    /// (`unix_now <= expiry`). Does not allocate.
    ///
    /// A name with the reserved self-test marker is checked before anything else and only
    /// against the self-test key ([`Lookup::SelfTest`]), so no static user or REST secret
    /// can stand in for the class, and a self-test credential is never anything else.
    pub fn lookup(&self, username: &[u8], alg: PasswordAlgorithm, unix_now: u64) -> Lookup {
        if is_selftest_username(username) {
            return self.lookup_selftest(username, alg, unix_now);
        }
        let user = std::str::from_utf8(username)
            .ok()
            .and_then(|u| self.users.get(u));
        if let Some(user) = user {
            let mut keys = KeyList::new();
            keys.push(user.key(alg));
            return Lookup::Keys(keys);
        }
        if self.secrets.is_empty() {
            return Lookup::Unknown;
        }
        let Some(expiry) = parse_rest_expiry(username) else {
            return Lookup::Unknown;
        };
        if expiry < unix_now {
            return Lookup::Expired;
        }
        let mut keys = KeyList::new();
        for mac in &self.secrets {
            // The password is the long-term password of this username
            // (draft-uberti-behave-turn-rest-00 §2.2); the key is derived as usual.
            if let Some(password) = rest_password_buf(mac, username) {
                keys.push(long_term_key(
                    alg,
                    username,
                    self.realm.as_bytes(),
                    &password,
                ));
            }
        }
        if keys.is_empty() {
            return Lookup::Unknown;
        }
        Lookup::Keys(keys)
    }

    /// A self-test name: one key, from the self-test key, while it has not expired.
    fn lookup_selftest(&self, username: &[u8], alg: PasswordAlgorithm, unix_now: u64) -> Lookup {
        let (Some(key), Some(expiry)) = (&self.selftest, parse_rest_expiry(username)) else {
            return Lookup::Unknown;
        };
        if expiry < unix_now {
            return Lookup::Expired;
        }
        let Some(password) = key.password(username) else {
            return Lookup::Unknown;
        };
        let mut keys = KeyList::new();
        keys.push(long_term_key(
            alg,
            username,
            self.realm.as_bytes(),
            &password,
        ));
        Lookup::SelfTest(keys)
    }

    /// The static user whose USERHASH (RFC 8489 §14.4) is `hash`. REST users
    /// cannot be found by hash: their names are not known in advance.
    pub fn username_for_hash(&self, hash: &[u8]) -> Option<&str> {
        let hash: &[u8; 32] = hash.try_into().ok()?;
        self.by_hash.get(hash).map(String::as_str)
    }

    /// The RFC 8489 §9.2 security features to advertise in nonces: only those that
    /// every credential this store accepts can use, since an RFC-following client
    /// uses whatever is advertised (§9.2.5).
    ///
    /// Password algorithms: always, as both keys can be derived for static and REST
    /// users. Username anonymity: only without REST secrets, because a USERHASH can
    /// be resolved only for names known in advance (§14.4); with anonymity
    /// advertised every REST client would send USERHASH and fail.
    pub fn security_features(&self) -> SecurityFeatures {
        SecurityFeatures {
            password_algorithms: true,
            username_anonymity: self.secrets.is_empty(),
        }
    }

    /// The realm all keys were derived with.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Mints REST credentials with the first secret, valid for `ttl_secs` from
    /// `unix_now`: `(username, password)`. `None` without secrets.
    pub fn mint_rest(
        &self,
        user: Option<&str>,
        ttl_secs: u64,
        unix_now: u64,
    ) -> Option<(String, String)> {
        let mac = self.secrets.first()?;
        let username = rest_username(unix_now.saturating_add(ttl_secs), user);
        let password = rest_password_with(mac, &username);
        Some((username, password))
    }

    /// Whether any static user or REST secret is configured.
    pub fn has_credentials(&self) -> bool {
        !self.users.is_empty() || !self.secrets.is_empty()
    }
}

impl fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialStore")
            .field("realm", &self.realm)
            .field("static_users", &self.users.len())
            .field("secrets", &self.secrets.len())
            .field("selftest", &self.selftest.is_some())
            .finish()
    }
}

/// What a lookup found.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "keys stay inline so the per-request lookup never allocates"
)]
pub enum Lookup {
    /// Candidate keys: try each against the message integrity.
    Keys(KeyList),
    /// The key of a self-test credential (see [`super::selftest`]): an allocation made with
    /// it may reach only the server's own relay addresses.
    SelfTest(KeyList),
    /// A REST username whose expiry has passed (answer 401).
    Expired,
    /// Neither a static user nor a REST username this store can check.
    Unknown,
}

/// Up to [`MAX_SECRETS`] keys held inline (no heap).
#[derive(Clone, Copy)]
pub struct KeyList {
    keys: [Key; MAX_SECRETS],
    len: u8,
}

impl KeyList {
    fn new() -> Self {
        Self {
            keys: [Key::EMPTY; MAX_SECRETS],
            len: 0,
        }
    }

    /// Appends `key`; keys beyond [`MAX_SECRETS`] are dropped.
    fn push(&mut self, key: Key) {
        if let Some(slot) = self.keys.get_mut(usize::from(self.len)) {
            *slot = key;
            self.len += 1;
        }
    }

    /// The keys, in secret order (the minting secret first).
    pub fn iter(&self) -> impl Iterator<Item = &Key> {
        self.keys[..usize::from(self.len)].iter()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for KeyList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::rest_password;

    const REALM: &str = "example.org";
    const NOW: u64 = 1_700_000_000;

    fn store(users: &[(&str, &str)], secrets: &[&[u8]]) -> CredentialStore {
        CredentialStore::new(
            REALM,
            users.iter().map(|(u, p)| (u.to_string(), p.to_string())),
            secrets.iter().map(|s| s.to_vec()).collect(),
        )
    }

    fn keys(lookup: Lookup) -> Vec<Vec<u8>> {
        match lookup {
            Lookup::Keys(list) => list.iter().map(|k| k.as_bytes().to_vec()).collect(),
            other => panic!("expected keys, got {other:?}"),
        }
    }

    fn key(alg: PasswordAlgorithm, user: &str, password: &str) -> Vec<u8> {
        long_term_key(alg, user.as_bytes(), REALM.as_bytes(), password.as_bytes())
            .as_bytes()
            .to_vec()
    }

    #[test]
    fn static_user_gets_key_for_requested_algorithm() {
        let s = store(&[("alice", "pw")], &[]);
        for alg in [PasswordAlgorithm::Md5, PasswordAlgorithm::Sha256] {
            assert_eq!(
                keys(s.lookup(b"alice", alg, NOW)),
                vec![key(alg, "alice", "pw")]
            );
        }
    }

    #[test]
    fn unknown_user_is_unknown() {
        let s = store(&[("alice", "pw")], &[b"secret"]);
        assert!(matches!(
            s.lookup(b"bob", PasswordAlgorithm::Md5, NOW),
            Lookup::Unknown
        ));
        assert!(matches!(
            s.lookup(&[0xff, 0xfe], PasswordAlgorithm::Md5, NOW),
            Lookup::Unknown
        ));
    }

    #[test]
    fn rest_username_gets_key_from_hmac_password() {
        let s = store(&[], &[b"secret"]);
        let name = "1700000000:alice";
        let got = keys(s.lookup(name.as_bytes(), PasswordAlgorithm::Md5, NOW));
        assert_eq!(
            got,
            vec![key(
                PasswordAlgorithm::Md5,
                name,
                "d8soP47RbdIKLDUOpnJPVQyq5Ts="
            )]
        );
    }

    #[test]
    fn rest_username_is_valid_through_its_expiry_second() {
        let s = store(&[], &[b"secret"]);
        let got = s.lookup(b"1700000000:alice", PasswordAlgorithm::Md5, NOW);
        assert!(matches!(got, Lookup::Keys(_)));
    }

    #[test]
    fn expired_rest_username_is_expired() {
        let s = store(&[], &[b"secret"]);
        let got = s.lookup(b"1700000000:alice", PasswordAlgorithm::Md5, NOW + 1);
        assert!(matches!(got, Lookup::Expired));
    }

    #[test]
    fn rest_username_without_secrets_is_unknown() {
        let s = store(&[("bob", "pw")], &[]);
        let got = s.lookup(b"1700000000:alice", PasswordAlgorithm::Md5, NOW);
        assert!(matches!(got, Lookup::Unknown));
    }

    #[test]
    fn two_secrets_give_two_keys_minting_secret_first() {
        let s = store(&[], &[b"new", b"old"]);
        let name = "1700000100:carol";
        let got = keys(s.lookup(name.as_bytes(), PasswordAlgorithm::Sha256, NOW));
        let expected: Vec<_> = [b"new".as_slice(), b"old"]
            .iter()
            .map(|secret| {
                key(
                    PasswordAlgorithm::Sha256,
                    name,
                    &rest_password(secret, name),
                )
            })
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn secrets_beyond_the_cap_are_ignored() {
        let secrets: Vec<Vec<u8>> = (0..MAX_SECRETS + 3).map(|i| vec![i as u8 + 1]).collect();
        let s = CredentialStore::new(REALM, Vec::new(), secrets);
        let got = keys(s.lookup(b"1700000000", PasswordAlgorithm::Md5, NOW));
        assert_eq!(got.len(), MAX_SECRETS);
    }

    #[test]
    fn static_user_wins_over_rest_parsing() {
        let s = store(&[("1700000000:alice", "static")], &[b"secret"]);
        let name = "1700000000:alice";
        // Even when the REST expiry has passed, the static user answers.
        let got = keys(s.lookup(name.as_bytes(), PasswordAlgorithm::Md5, NOW + 10));
        assert_eq!(got, vec![key(PasswordAlgorithm::Md5, name, "static")]);
    }

    #[test]
    fn userhash_finds_static_user_only() {
        let s = store(&[("alice", "pw")], &[b"secret"]);
        let hash = userhash(b"alice", REALM.as_bytes());
        assert_eq!(s.username_for_hash(&hash), Some("alice"));
        let rest = userhash(b"1700000000:alice", REALM.as_bytes());
        assert_eq!(s.username_for_hash(&rest), None);
        assert_eq!(s.username_for_hash(&hash[..31]), None);
    }

    #[test]
    fn username_anonymity_is_advertised_only_without_rest_secrets() {
        let static_only = store(&[("alice", "pw")], &[]).security_features();
        assert!(static_only.username_anonymity && static_only.password_algorithms);
        for s in [store(&[("alice", "pw")], &[b"s"]), store(&[], &[b"s"])] {
            let features = s.security_features();
            assert!(!features.username_anonymity && features.password_algorithms);
        }
    }

    #[test]
    fn minted_rest_credentials_verify_against_the_store() {
        let s = store(&[], &[b"new", b"old"]);
        let (username, password) = s.mint_rest(Some("dave"), 600, NOW).unwrap();
        assert_eq!(username, "1700000600:dave");
        assert_eq!(password, rest_password(b"new", &username));
        let got = keys(s.lookup(username.as_bytes(), PasswordAlgorithm::Md5, NOW));
        assert_eq!(got[0], key(PasswordAlgorithm::Md5, &username, &password));
        assert_eq!(s.mint_rest(None, 60, NOW).unwrap().0, "1700000060");
    }

    #[test]
    fn minting_without_secrets_gives_none() {
        assert!(store(&[("a", "b")], &[]).mint_rest(None, 60, NOW).is_none());
    }

    #[test]
    fn selftest_names_are_checked_only_against_the_selftest_key() {
        use crate::auth::{ReportId, SelftestKey};
        let sk = SelftestKey::new([5; 32]);
        let id = ReportId::from_random([1; 5]);
        let (username, password) = sk.mint(&id, NOW + 60);
        let alg = PasswordAlgorithm::Md5;
        // Without the key, even a name signed with a REST secret is unknown: the marker is
        // reserved, so a REST credential can never claim the class.
        let rest_only = store(&[(username.as_str(), "static")], &[b"secret"]);
        assert!(matches!(
            rest_only.lookup(username.as_bytes(), alg, NOW),
            Lookup::Unknown
        ));
        let s = store(&[], &[b"secret"]).with_selftest(sk);
        assert!(s.accepts_selftest());
        match s.lookup(username.as_bytes(), alg, NOW) {
            Lookup::SelfTest(list) => assert_eq!(
                list.iter()
                    .map(|k| k.as_bytes().to_vec())
                    .collect::<Vec<_>>(),
                vec![key(alg, &username, &password)]
            ),
            other => panic!("expected a self-test key, got {other:?}"),
        }
        assert!(matches!(
            s.lookup(username.as_bytes(), alg, NOW + 61),
            Lookup::Expired
        ));
        // Ordinary REST names are still REST names.
        assert!(matches!(
            s.lookup(b"1700000000:alice", alg, NOW),
            Lookup::Keys(_)
        ));
    }

    #[test]
    fn has_credentials_reflects_users_and_secrets() {
        assert!(!store(&[], &[]).has_credentials());
        assert!(store(&[("a", "b")], &[]).has_credentials());
        assert!(store(&[], &[b"s"]).has_credentials());
        assert_eq!(store(&[], &[]).realm(), REALM);
    }
}
