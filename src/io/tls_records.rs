//! The TLS record layer of an established TURN-over-TLS connection, in place and without
//! allocation: rustls runs the handshake (`tls_handoff`), then hands over the traffic keys
//! and sequence numbers (its secret extraction, made for kernel TLS offload) and every later
//! record is sealed and opened here with ring's AEADs, inside buffers the connection owns.
//! rustls 0.23 decrypts into a fresh `Vec` per record and encrypts through one, which would
//! cost two allocations per relayed round trip.
//!
//! Application data goes on after the handoff, and TLS 1.3 key updates (RFC 8446 §4.6.3):
//! rustls's kernel-TLS state derives the next keys, in both directions, and ours are renewed
//! before the AES-GCM limit. An alert (close_notify or fatal), any other handshake message
//! (a TLS 1.2 renegotiation) or anything malformed ends the connection.

use std::ops::Range;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion};

/// Record header: content type, legacy version, length (RFC 8446 §5.1, RFC 5246 §6.2.1).
pub(crate) const HEADER: usize = 5;
/// Largest plaintext per record (2^14, RFC 8446 §5.1).
pub(crate) const MAX_PLAINTEXT: usize = 1 << 14;
/// Largest ciphertext a peer may send: TLS 1.3 allows 2^14 + 256 (RFC 8446 §5.2), TLS 1.2
/// 2^14 + 2048 (RFC 5246 §6.2.3).
const MAX_CIPHERTEXT_13: usize = MAX_PLAINTEXT + 256;
const MAX_CIPHERTEXT_12: usize = MAX_PLAINTEXT + 2048;
/// Largest record on the wire: room the input buffer keeps for one.
pub(crate) const MAX_RECORD: usize = HEADER + MAX_CIPHERTEXT_12;
const TAG: usize = 16;
/// TLS 1.2 AES-GCM records carry the nonce's last 8 bytes (RFC 5288 §3).
const EXPLICIT_NONCE: usize = 8;
/// Records we seal under one AES-GCM key: RFC 8446 §5.5 puts the limit at 2^24.5 full
/// records. TLS 1.3 moves to the next key before it; TLS 1.2 cannot, and ends cleanly there
/// (the last sequence number is kept for its close_notify), as rustls does. What the client
/// seals is its own business.
const GCM_RECORD_LIMIT: u64 = 1 << 24;
/// Our next key is taken this many records before the limit.
const UPDATE_MARGIN: u64 = 1 << 10;
/// TLS 1.3 KeyUpdate (RFC 8446 §4.6.3): type 24, length 1, then whether the peer must update
/// too.
const KEY_UPDATE: [u8; 4] = [24, 0, 0, 1];
const UPDATE_NOT_REQUESTED: u8 = 0;
const UPDATE_REQUESTED: u8 = 1;
const HANDSHAKE: u8 = 22;

const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const LEGACY_VERSION: [u8; 2] = [3, 3];

/// Why the record layer ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecordError {
    #[error("the negotiated cipher or protocol cannot be continued outside rustls")]
    Unsupported,
    #[error("a record failed authentication")]
    BadRecordMac,
    #[error("a record is larger than TLS allows")]
    RecordOverflow,
    #[error("the peer sent an alert (close_notify or an error)")]
    Alert,
    #[error("the peer sent a record other than application data")]
    UnexpectedMessage,
    #[error("the key has protected as many records as it safely can")]
    KeyExhausted,
    #[error("a key update failed")]
    KeyUpdate,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    Tls12,
    Tls13,
}

/// One direction's key, static IV and sequence number.
struct Keys {
    key: LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
    limit: u64,
    /// TLS 1.2 AES-GCM: the nonce's last 8 bytes travel in the record.
    explicit_nonce: bool,
}

impl Keys {
    fn new(
        version: Version,
        seq: u64,
        secrets: &ConnectionTrafficSecrets,
        sealing: bool,
    ) -> Result<Self, RecordError> {
        let (algorithm, key, iv, gcm) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv, true),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv, true),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv, false)
            }
            _ => return Err(RecordError::Unsupported),
        };
        let unbound =
            UnboundKey::new(algorithm, key.as_ref()).map_err(|_| RecordError::Unsupported)?;
        let iv: [u8; aead::NONCE_LEN] = iv
            .as_ref()
            .try_into()
            .map_err(|_| RecordError::Unsupported)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            iv,
            seq,
            limit: if gcm && sealing {
                GCM_RECORD_LIMIT
            } else {
                u64::MAX
            },
            explicit_nonce: gcm && version == Version::Tls12,
        })
    }

    /// The per-record nonce: the static IV XOR the sequence number (RFC 8446 §5.3; RFC 7905
    /// §2; for TLS 1.2 AES-GCM the same value is what goes on the wire, as rustls does).
    fn nonce(&self) -> [u8; aead::NONCE_LEN] {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        nonce
    }

    /// Takes the next sequence number.
    fn advance(&mut self) -> Result<(), RecordError> {
        if self.seq >= self.limit {
            return Err(RecordError::KeyExhausted);
        }
        self.seq += 1;
        Ok(())
    }
}

/// TLS 1.2's additional data: sequence number, type, version, plaintext length (RFC 5246
/// §6.2.3.3).
fn aad_12(seq: u64, typ: u8, len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = typ;
    aad[9..11].copy_from_slice(&LEGACY_VERSION);
    aad[11..].copy_from_slice(&(len as u16).to_be_bytes());
    aad
}

/// An opened record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Opened {
    /// The record's whole length in the input (header included): consume it after use.
    pub len: usize,
    /// Where its plaintext now is in the input (possibly empty).
    pub plaintext: Range<usize>,
}

/// Seals and opens the records of one connection.
pub(crate) struct RecordLayer {
    version: Version,
    tx: Keys,
    rx: Keys,
    /// rustls's key schedule after the handshake (TLS 1.3): the next keys each way.
    kernel: Option<KernelConnection<ServerConnectionData>>,
    /// The client asked for our next key: a KeyUpdate of ours goes before our next record.
    update_due: bool,
}

impl RecordLayer {
    /// The record layer rustls negotiated; `None` for a protocol we cannot continue.
    pub fn new(
        version: Option<ProtocolVersion>,
        secrets: &ExtractedSecrets,
        kernel: Option<KernelConnection<ServerConnectionData>>,
    ) -> Result<Self, RecordError> {
        let version = match version {
            Some(ProtocolVersion::TLSv1_3) => Version::Tls13,
            Some(ProtocolVersion::TLSv1_2) => Version::Tls12,
            _ => return Err(RecordError::Unsupported),
        };
        Ok(Self {
            version,
            tx: Keys::new(version, secrets.tx.0, &secrets.tx.1, true)?,
            rx: Keys::new(version, secrets.rx.0, &secrets.rx.1, false)?,
            kernel: kernel.filter(|_| version == Version::Tls13),
            update_due: false,
        })
    }

    /// Bytes a record carrying `plaintext` bytes takes on the wire.
    pub fn sealed_len(&self, plaintext: usize) -> usize {
        let records = plaintext.div_ceil(MAX_PLAINTEXT).max(1);
        // Room for a KeyUpdate of ours too, should one be due (rare: no allocation then).
        plaintext + records * self.overhead() + self.overhead() + KEY_UPDATE.len() + 1
    }

    fn overhead(&self) -> usize {
        HEADER
            + TAG
            + match self.version {
                Version::Tls13 => 1,
                Version::Tls12 if self.tx.explicit_nonce => EXPLICIT_NONCE,
                Version::Tls12 => 0,
            }
    }

    /// Appends `plaintext` to `out` as application-data records. Allocates nothing when `out`
    /// has [`RecordLayer::sealed_len`] bytes of spare capacity.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        for chunk in plaintext.chunks(MAX_PLAINTEXT) {
            if self.kernel.is_some()
                && (self.update_due || self.tx.seq.saturating_add(UPDATE_MARGIN) >= self.tx.limit)
            {
                self.update_tx(out)?;
            }
            self.seal_record(APPLICATION_DATA, chunk, out)?;
        }
        Ok(())
    }

    /// Sends a KeyUpdate under the current key and moves to the next one (RFC 8446 §4.6.3).
    fn update_tx(&mut self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        let Some(kernel) = &mut self.kernel else {
            return Err(RecordError::KeyUpdate);
        };
        let mut message = [0u8; 5];
        message[..4].copy_from_slice(&KEY_UPDATE);
        message[4] = UPDATE_NOT_REQUESTED;
        let (seq, secrets) = kernel
            .update_tx_secret()
            .map_err(|_| RecordError::KeyUpdate)?;
        self.seal_record(HANDSHAKE, &message, out)?;
        self.tx = Keys::new(self.version, seq, &secrets, true)?;
        self.update_due = false;
        Ok(())
    }

    /// Takes the client's next key after its KeyUpdate; notes whether it wants ours too.
    fn update_rx(&mut self, message: &[u8]) -> Result<(), RecordError> {
        let (Some(kernel), Some((&request, head))) = (&mut self.kernel, message.split_last())
        else {
            return Err(RecordError::UnexpectedMessage);
        };
        if head != KEY_UPDATE || request > UPDATE_REQUESTED {
            return Err(RecordError::UnexpectedMessage);
        }
        let (seq, secrets) = kernel
            .update_rx_secret()
            .map_err(|_| RecordError::KeyUpdate)?;
        self.rx = Keys::new(self.version, seq, &secrets, false)?;
        self.update_due |= request == UPDATE_REQUESTED;
        Ok(())
    }

    /// Appends a close_notify alert (RFC 8446 §6.1): the clean end of what we send.
    pub fn seal_close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        // Level warning (1), description close_notify (0).
        self.seal_record(ALERT, &[1, 0], out)
    }

    fn seal_record(&mut self, typ: u8, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        if typ == APPLICATION_DATA && self.tx.seq.saturating_add(1) >= self.tx.limit {
            return Err(RecordError::KeyExhausted);
        }
        let nonce = self.tx.nonce();
        let seq = self.tx.seq;
        self.tx.advance()?;
        let start = out.len();
        let body = self.overhead() - HEADER + chunk.len();
        // TLS 1.3 hides the real type inside (RFC 8446 §5.2).
        out.push(match self.version {
            Version::Tls13 => APPLICATION_DATA,
            Version::Tls12 => typ,
        });
        out.extend_from_slice(&LEGACY_VERSION);
        out.extend_from_slice(&(body as u16).to_be_bytes());
        if self.tx.explicit_nonce {
            out.extend_from_slice(&nonce[4..]);
        }
        let sealed_from = out.len();
        out.extend_from_slice(chunk);
        let tag = match self.version {
            // RFC 8446 §5.2: the inner content type follows the content, no padding; the
            // additional data is the record header.
            Version::Tls13 => {
                out.push(typ);
                let mut header = [0u8; HEADER];
                header.copy_from_slice(&out[start..start + HEADER]);
                self.tx.key.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(header),
                    &mut out[sealed_from..],
                )
            }
            Version::Tls12 => self.tx.key.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad_12(seq, typ, chunk.len())),
                &mut out[sealed_from..],
            ),
        }
        .map_err(|_| RecordError::KeyExhausted)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens the first record of `input` in place: `None` until it is complete.
    pub fn open(&mut self, input: &mut [u8]) -> Result<Option<Opened>, RecordError> {
        let Some(header) = input.get(..HEADER) else {
            return Ok(None);
        };
        let typ = header[0];
        let body = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let max = match self.version {
            Version::Tls13 => MAX_CIPHERTEXT_13,
            Version::Tls12 => MAX_CIPHERTEXT_12,
        };
        if body > max {
            return Err(RecordError::RecordOverflow);
        }
        let len = HEADER + body;
        if input.len() < len {
            return Ok(None);
        }
        let mut aad_header = [0u8; HEADER];
        aad_header.copy_from_slice(&input[..HEADER]);
        let record = &mut input[..len];
        let seq = self.rx.seq;
        let plaintext = match self.version {
            Version::Tls13 => {
                // Only encrypted records follow the handshake (RFC 8446 §5).
                if typ != APPLICATION_DATA {
                    return Err(RecordError::UnexpectedMessage);
                }
                let nonce = self.rx.nonce();
                let opened = self
                    .rx
                    .key
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad_header),
                        &mut record[HEADER..],
                    )
                    .map_err(|_| RecordError::BadRecordMac)?;
                // RFC 8446 §5.4: the real type is the last non-zero byte; zeros are padding.
                let Some(end) = opened.iter().rposition(|&b| b != 0) else {
                    return Err(RecordError::UnexpectedMessage);
                };
                if end > MAX_PLAINTEXT {
                    return Err(RecordError::RecordOverflow);
                }
                match opened[end] {
                    APPLICATION_DATA => HEADER..HEADER + end,
                    ALERT => return Err(RecordError::Alert),
                    HANDSHAKE => {
                        // The next key applies from the next record on: this one counts under
                        // the old key, whose sequence number is dropped with it.
                        let mut message = [0u8; 5];
                        let Some(body) = opened.get(..end).filter(|b| b.len() == 5) else {
                            return Err(RecordError::UnexpectedMessage);
                        };
                        message.copy_from_slice(body);
                        self.update_rx(&message)?;
                        return Ok(Some(Opened {
                            len,
                            plaintext: HEADER..HEADER,
                        }));
                    }
                    _ => return Err(RecordError::UnexpectedMessage),
                }
            }
            Version::Tls12 => {
                let skip = if self.rx.explicit_nonce {
                    EXPLICIT_NONCE
                } else {
                    0
                };
                let Some(plain_len) = body.checked_sub(skip + TAG) else {
                    return Err(RecordError::BadRecordMac);
                };
                let nonce = if self.rx.explicit_nonce {
                    // RFC 5288 §3: the salt from the key block, then the record's own 8 bytes.
                    let mut nonce = self.rx.iv;
                    nonce[4..].copy_from_slice(&record[HEADER..HEADER + EXPLICIT_NONCE]);
                    nonce
                } else {
                    self.rx.nonce()
                };
                self.rx
                    .key
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad_12(seq, typ, plain_len)),
                        &mut record[HEADER + skip..],
                    )
                    .map_err(|_| RecordError::BadRecordMac)?;
                match typ {
                    APPLICATION_DATA => {}
                    ALERT => return Err(RecordError::Alert),
                    _ => return Err(RecordError::UnexpectedMessage),
                }
                if plain_len > MAX_PLAINTEXT {
                    return Err(RecordError::RecordOverflow);
                }
                HEADER + skip..HEADER + skip + plain_len
            }
        };
        self.rx.advance()?;
        Ok(Some(Opened { len, plaintext }))
    }
}

#[cfg(test)]
mod tests {
    //! Against rustls itself: a rustls client and our handshake driver (rustls's unbuffered
    //! server) in memory, the server's keys handed over, and records cross between our layer
    //! and the client.
    use super::*;
    use std::io::{Read, Write};
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

    use crate::io::tls_handoff::Handshake;

    fn configs(
        versions: &[&'static rustls::SupportedProtocolVersion],
        suite: Option<rustls::SupportedCipherSuite>,
    ) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let cert = rcgen::generate_simple_self_signed(vec!["turn.test".into()]).unwrap();
        let der = CertificateDer::from(cert.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(suite) = suite {
            provider.cipher_suites = vec![suite];
        }
        let provider = Arc::new(provider);
        let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        server.enable_secret_extraction = true;
        let mut roots = RootCertStore::empty();
        roots.add(der).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// A rustls client against our handshake driver (`tls_handoff::Handshake`), in memory;
    /// returns the client and the record layer handed over.
    fn established(
        versions: &[&'static rustls::SupportedProtocolVersion],
        suite: Option<rustls::SupportedCipherSuite>,
    ) -> (ClientConnection, RecordLayer) {
        let (server_config, client_config) = configs(versions, suite);
        let mut server = Handshake::new(server_config).unwrap();
        let name = ServerName::try_from("turn.test").unwrap();
        let mut client = ClientConnection::new(client_config, name).unwrap();
        for _ in 0..20 {
            let mut flight = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut flight).unwrap();
            }
            server.room()[..flight.len()].copy_from_slice(&flight);
            server.received(flight.len());
            let done = server.advance().unwrap();
            let back = std::mem::take(&mut server.outgoing);
            let mut slice = &back[..];
            while !slice.is_empty() {
                client.read_tls(&mut slice).unwrap();
                client.process_new_packets().unwrap();
            }
            if done && !client.is_handshaking() && !client.wants_write() {
                let (layer, early, input) = server.finish().unwrap();
                assert!(early.is_empty() && input.is_empty());
                return (client, layer);
            }
        }
        panic!("handshake did not finish");
    }

    /// Client → our layer: every record of `payload` opened, the plaintext joined.
    fn client_to_layer(client: &mut ClientConnection, layer: &mut RecordLayer, payload: &[u8]) {
        client.writer().write_all(payload).unwrap();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let mut got = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let opened = layer
                .open(&mut wire[at..])
                .unwrap()
                .expect("a whole record");
            got.extend_from_slice(&wire[at..][opened.plaintext.clone()]);
            at += opened.len;
        }
        assert_eq!(got, payload);
    }

    fn layer_to_client(client: &mut ClientConnection, layer: &mut RecordLayer, payload: &[u8]) {
        let mut wire = Vec::with_capacity(layer.sealed_len(payload.len()));
        let capacity = wire.capacity();
        layer.seal(payload, &mut wire).unwrap();
        assert!(wire.len() <= layer.sealed_len(payload.len()));
        assert_eq!(wire.capacity(), capacity, "sealing allocated");
        let mut slice = &wire[..];
        let mut got = Vec::new();
        while !slice.is_empty() {
            client.read_tls(&mut slice).unwrap();
            client.process_new_packets().unwrap();
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = client.reader().read(&mut chunk) {
                got.extend_from_slice(&chunk[..n]);
            }
        }
        assert_eq!(got, payload);
    }

    fn round_trips(
        versions: &[&'static rustls::SupportedProtocolVersion],
        suite: Option<rustls::SupportedCipherSuite>,
    ) {
        let (mut client, mut layer) = established(versions, suite);
        for size in [1, 100, 1200, MAX_PLAINTEXT, MAX_PLAINTEXT + 1, 40_000] {
            let payload: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
            client_to_layer(&mut client, &mut layer, &payload);
            layer_to_client(&mut client, &mut layer, &payload);
        }
    }

    #[test]
    fn tls13_records_interoperate_with_rustls_for_every_cipher() {
        use rustls::crypto::ring::cipher_suite as cs;
        for suite in [
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            round_trips(&[&rustls::version::TLS13], Some(suite));
        }
    }

    #[test]
    fn tls12_records_interoperate_with_rustls_for_every_cipher() {
        use rustls::crypto::ring::cipher_suite as cs;
        for suite in [
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ] {
            round_trips(&[&rustls::version::TLS12], Some(suite));
        }
    }

    #[test]
    fn partial_records_wait_and_tampering_or_alerts_end_the_connection() {
        for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12]] {
            let (mut client, mut layer) = established(versions, None);
            client.writer().write_all(b"hello").unwrap();
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            for cut in [0, 3, HEADER, wire.len() - 1] {
                assert_eq!(layer.open(&mut wire[..cut].to_vec()), Ok(None));
            }
            let mut tampered = wire.clone();
            *tampered.last_mut().unwrap() ^= 1;
            assert_eq!(layer.open(&mut tampered), Err(RecordError::BadRecordMac));

            let (mut client, mut layer) = established(versions, None);
            client.send_close_notify();
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            assert_eq!(layer.open(&mut wire), Err(RecordError::Alert));
        }
    }

    #[test]
    fn our_close_notify_ends_the_clients_input_cleanly() {
        for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12]] {
            let (mut client, mut layer) = established(versions, None);
            let mut wire = Vec::new();
            layer.seal(b"bye", &mut wire).unwrap();
            layer.seal_close_notify(&mut wire).unwrap();
            let mut slice = &wire[..];
            while !slice.is_empty() {
                client.read_tls(&mut slice).unwrap();
                client.process_new_packets().unwrap();
            }
            let mut got = Vec::new();
            client.reader().read_to_end(&mut got).unwrap();
            assert_eq!(got, b"bye", "a clean end, not an unexpected EOF");
        }
    }

    #[test]
    fn key_updates_are_followed_both_ways_and_ours_come_before_the_limit() {
        for suite in [
            rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
            rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            let (mut client, mut layer) = established(&[&rustls::version::TLS13], Some(suite));
            client_to_layer(&mut client, &mut layer, b"before");
            // The client moves to its next key and asks for ours (RFC 8446 §4.6.3).
            client.refresh_traffic_keys().unwrap();
            client_to_layer(&mut client, &mut layer, b"after the client's update");
            assert!(layer.update_due);
            layer_to_client(&mut client, &mut layer, b"after ours");
            assert!(!layer.update_due);
            assert_eq!(layer.tx.seq, 1, "a fresh key");
            // Spontaneously too: the client follows our KeyUpdate.
            layer.update_due = true;
            layer_to_client(&mut client, &mut layer, b"after another of ours");
            client_to_layer(&mut client, &mut layer, b"still fine");
            if layer.tx.limit != u64::MAX {
                // Near the AES-GCM limit we move on by ourselves (the client's sequence
                // numbers no longer match ours here, so nothing goes to it).
                layer.tx.seq = layer.tx.limit - UPDATE_MARGIN;
                layer.seal(b"past the margin", &mut Vec::new()).unwrap();
                assert_eq!(layer.tx.seq, 1);
            }
        }
    }

    #[test]
    fn an_exhausted_key_still_seals_its_close_notify() {
        // TLS 1.2 has no key update.
        let (_, mut layer) = established(&[&rustls::version::TLS12], None);
        layer.tx.seq = GCM_RECORD_LIMIT - 2;
        let mut wire = Vec::new();
        layer.seal(b"last", &mut wire).unwrap();
        let sealed = wire.len();
        assert_eq!(
            layer.seal(b"one more", &mut wire),
            Err(RecordError::KeyExhausted)
        );
        assert_eq!(wire.len(), sealed, "nothing half-written");
        layer.seal_close_notify(&mut wire).unwrap();
        assert_eq!(layer.tx.seq, GCM_RECORD_LIMIT);
        assert!(layer.seal_close_notify(&mut wire).is_err());
    }

    #[test]
    fn oversized_records_are_refused_before_waiting_for_them() {
        let (_, mut layer) = established(&[&rustls::version::TLS13], None);
        let mut header = [APPLICATION_DATA, 3, 3, 0xFF, 0xFF];
        assert_eq!(layer.open(&mut header), Err(RecordError::RecordOverflow));
    }
}
