//! Churn mode: the control-plane cost of a TURN server. A client arrives, authenticates,
//! allocates and leaves, over and over: each cycle is an Allocate without credentials
//! (answered 401 with REALM and NONCE, RFC 8489 §9.2), the Allocate again with them
//! (RFC 8656 §7) and a Refresh with LIFETIME 0 that deletes the allocation (RFC 8656 §8).
//! Cycles run in waves of [`WAVE`] client sockets, pipelined: every socket of the wave sends,
//! then every answer is read, step by step.
//!
//! Sockets come from a pool and one is reused only [`REUSE_GAP`] after its allocation was
//! deleted: coturn keeps a deleted allocation's 5-tuple for about a second and answers a new
//! Allocate on it with 437 (Allocation Mismatch). A run therefore makes at most
//! pool / `REUSE_GAP` cycles per second.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use socket2::SockRef;

use super::control::{self, Auth, Outcome, Request};
use super::{Credentials, LoadError, mono_now};
use crate::proto::{Class, Message, TransactionId};
use crate::sys::clock;

/// Client sockets per wave.
pub const WAVE: usize = 64;
/// Time between deleting an allocation and reusing its 5-tuple.
pub const REUSE_GAP: Duration = Duration::from_millis(2000);
/// Lifetime asked for in each Allocate (it is deleted at once anyway).
const LIFETIME_SECS: u32 = 600;
/// How long a pipelined answer may take before the request counts as failed.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// A pool of client sockets to churn allocations from.
#[derive(Debug)]
pub struct Churn {
    server: SocketAddr,
    credentials: Credentials,
    pool: Vec<(UdpSocket, Instant)>,
    next: usize,
}

/// What [`Churn::run`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ChurnReport {
    /// Cycles attempted (each 3 requests, more after a 438).
    pub cycles: u64,
    /// Unauthenticated Allocates not answered with a 401 challenge.
    pub challenge_failures: u64,
    /// Authenticated Allocates not answered with a success.
    pub allocate_failures: u64,
    /// Refresh(0) requests not answered with a success.
    pub delete_failures: u64,
    /// Of the failures, requests never answered within a second.
    pub timeouts: u64,
    /// 438 (Stale Nonce) answers, each followed by the request again.
    pub stale_nonces: u64,
    /// The ERROR-CODE of the last unexpected error response, if any.
    pub last_error: Option<u16>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl ChurnReport {
    /// Requests of any step that did not get the expected answer.
    pub fn failures(&self) -> u64 {
        self.challenge_failures + self.allocate_failures + self.delete_failures
    }

    /// Cycles per second.
    pub fn cycles_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.cycles as f64 / secs
        } else {
            0.0
        }
    }
}

/// How one request of a cycle was answered.
enum Answer {
    Done,
    /// 401 or 438 with a new nonce.
    Challenged,
    /// Any other error response.
    Error(u16),
    /// No answer in time.
    Silence,
    /// An answer the client cannot use (e.g. it fails MESSAGE-INTEGRITY).
    Unusable,
}

impl Churn {
    /// Binds `pool` client sockets (WAVE to 16384) connected to `server`.
    pub fn new(
        server: SocketAddr,
        credentials: &Credentials,
        pool: usize,
    ) -> Result<Self, LoadError> {
        if !(WAVE..=16_384).contains(&pool) {
            return Err(LoadError::Config("churn pool must be 64 to 16384 sockets"));
        }
        let now = mono_now();
        let local = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        let sockets = (0..pool)
            .map(|_| {
                let socket = UdpSocket::bind(local).map_err(|source| LoadError::Bind {
                    addr: local,
                    source,
                })?;
                socket.connect(server)?;
                socket.set_read_timeout(Some(ANSWER_TIMEOUT))?;
                let _ = SockRef::from(&socket).set_recv_buffer_size(64 * 1024);
                Ok((socket, now))
            })
            .collect::<Result<_, LoadError>>()?;
        Ok(Self {
            server,
            credentials: credentials.clone(),
            pool: sockets,
            next: 0,
        })
    }

    /// Runs waves of cycles until at least `cycles` were made or `max_time` passed.
    pub fn run(&mut self, cycles: u64, max_time: Duration) -> Result<ChurnReport, LoadError> {
        let start = mono_now();
        let mut report = ChurnReport::default();
        let unix_now = clock::now().unix_secs;
        let mut wave: Vec<(usize, Auth, TransactionId)> = Vec::with_capacity(WAVE);
        let mut buf = [0u8; 1500];
        while report.cycles < cycles && mono_now().duration_since(start) < max_time {
            wave.clear();
            for _ in 0..WAVE {
                let i = self.next;
                self.next = (self.next + 1) % self.pool.len();
                wait_until(self.pool[i].1);
                // A new client: no nonce yet (REST usernames valid for a day).
                let auth = Auth::new(&self.credentials, unix_now, Duration::from_secs(86_400));
                wave.push((i, auth, TransactionId([0; 12])));
            }
            let steps = [
                Request::Allocate {
                    lifetime: LIFETIME_SECS,
                },
                Request::Allocate {
                    lifetime: LIFETIME_SECS,
                },
                Request::Refresh { lifetime: 0 },
            ];
            for (step, req) in steps.into_iter().enumerate() {
                for (i, auth, tid) in &mut wave {
                    *tid = control::random_tid()?;
                    let mut out = [0u8; 512];
                    let len = auth.write(&mut out, req, *tid)?;
                    send(&self.pool[*i].0, &out[..len])?;
                }
                for (i, auth, tid) in &mut wave {
                    let socket = &mut self.pool[*i].0;
                    let mut answer = answered(socket, auth, req, *tid, &mut buf)?;
                    if step > 0 && matches!(answer, Answer::Challenged) {
                        // 438 Stale Nonce: the same request again with the new nonce.
                        report.stale_nonces += 1;
                        answer = match control::transact(socket, auth, req, &mut buf) {
                            Ok(_) => Answer::Done,
                            Err(LoadError::Rejected { code, .. }) => Answer::Error(code),
                            Err(LoadError::Timeout { .. }) => Answer::Silence,
                            Err(_) => Answer::Unusable,
                        };
                        socket.set_read_timeout(Some(ANSWER_TIMEOUT))?;
                    }
                    let expected = if step == 0 {
                        Answer::Challenged
                    } else {
                        Answer::Done
                    };
                    if std::mem::discriminant(&answer) == std::mem::discriminant(&expected) {
                        continue;
                    }
                    match answer {
                        Answer::Error(code) => report.last_error = Some(code),
                        Answer::Silence => report.timeouts += 1,
                        _ => {}
                    }
                    match step {
                        0 => report.challenge_failures += 1,
                        1 => report.allocate_failures += 1,
                        _ => report.delete_failures += 1,
                    }
                }
            }
            let free_at = mono_now() + REUSE_GAP;
            for (i, _, _) in &wave {
                self.pool[*i].1 = free_at;
            }
            report.cycles += WAVE as u64;
        }
        report.elapsed = mono_now().duration_since(start);
        Ok(report)
    }

    /// The server churned against.
    pub fn server(&self) -> SocketAddr {
        self.server
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "the generator waits in real time before reusing a client 5-tuple"
)]
fn wait_until(at: Instant) {
    let left = at.saturating_duration_since(mono_now());
    if !left.is_zero() {
        std::thread::sleep(left);
    }
}

/// Sends one datagram; a full buffer or an ICMP error loses it like the network would.
fn send(socket: &UdpSocket, datagram: &[u8]) -> Result<(), LoadError> {
    match socket.send(datagram) {
        Ok(_) => Ok(()),
        Err(e) if super::link::is_transient(&e) => Ok(()),
        Err(e) => Err(LoadError::Io(e)),
    }
}

/// Waits for the answer to `tid` and judges it (a challenge updates REALM and NONCE).
fn answered(
    socket: &UdpSocket,
    auth: &mut Auth,
    req: Request,
    tid: TransactionId,
    buf: &mut [u8],
) -> Result<Answer, LoadError> {
    let deadline = mono_now() + ANSWER_TIMEOUT;
    while mono_now() < deadline {
        let n = match socket.recv(buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Answer::Silence);
            }
            Err(e) if super::link::is_transient(&e) => continue,
            Err(e) => return Err(LoadError::Io(e)),
        };
        let Ok(msg) = Message::parse(&buf[..n]) else {
            continue;
        };
        if msg.transaction_id() != tid || msg.class() == Class::Indication {
            continue; // a late answer to an earlier request
        }
        return Ok(match auth.judge(&msg, req.name()) {
            Ok(Outcome::Done) => Answer::Done,
            Ok(Outcome::Retry) => Answer::Challenged,
            Ok(Outcome::Rejected(code)) => Answer::Error(code),
            Err(_) => Answer::Unusable,
        });
    }
    Ok(Answer::Silence)
}
