//! The kernel fast path (issue 15): loads bpf/fastpath.bpf.c (compiled by build.rs), attaches
//! it to the ingress of the interfaces that carry the server's UDP listeners and relay
//! addresses, and keeps its maps a copy of each worker's flat tables.
//!
//! The core stays the single source of truth: after every core call the worker drains the
//! core's mirror changes ([`crate::core::MirrorOp`]) into the maps ([`WorkerMirror::sync`]),
//! and once a second it reads what the program relayed back into the core's counters and
//! usage records ([`WorkerMirror::collect`]). The program relays only what the core put in
//! the maps, checks every expiry itself, and hands anything else to userspace unchanged.
//!
//! Loader: aya, a pure-Rust loader (no libbpf to build or link, no C at run time); it
//! attaches with TCX links on kernels ≥ 6.6, which the kernel detaches when the process
//! exits, so a crashed server leaves nothing on its interfaces.

mod maps;

use std::collections::HashMap as StdHashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use crate::core::keys::Slot;
use crate::core::{MirrorOp, Server, Traffic, Transport};

pub use maps::MAX_SLOTS;
use maps::{KernelClock, SlotStats};

/// `[relay] fast_path`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FastPathMode {
    /// Never load it.
    Off,
    /// Use it when it loads; say once, in plain words, whether it is active and why not.
    #[default]
    Auto,
    /// Refuse to start without it.
    On,
}

/// What `io::start` needs to decide on the fast path.
#[derive(Clone, Debug, Default)]
pub struct FastPathSpec {
    /// Off, auto or on.
    pub mode: FastPathMode,
    /// Interfaces to attach to; empty: those holding the UDP listeners' and relays' IPs.
    pub interfaces: Vec<String>,
    /// Bandwidth caps are configured: they are enforced in userspace, so nothing is relayed
    /// in the kernel (`auto` stays off, `on` is refused by configuration).
    pub capped: bool,
}

/// Why the fast path is not active.
#[derive(Debug, thiserror::Error)]
pub enum FastPathError {
    /// Built without clang.
    #[error(
        "this build has no fast path: clang and libbpf-dev were not installed when it was compiled"
    )]
    NotBuilt,
    /// EPERM from the kernel.
    #[error("no privilege to load eBPF programs (run as root, or with CAP_BPF and CAP_NET_ADMIN)")]
    NoPrivilege,
    /// The verifier said no, or the kernel lacks what the program uses.
    #[error("the kernel refused the program (kernel too old or too restricted?): {0}")]
    Rejected(String),
    /// Attaching to an interface failed.
    #[error("cannot attach to interface {name}: {why}")]
    Interface {
        /// The interface.
        name: String,
        /// What failed.
        why: String,
    },
    /// Nothing it could serve.
    #[error("{0}")]
    NothingToServe(String),
}

/// Counters the program keeps (`enum event` in the program), in its order.
pub const EVENTS: [&str; 7] = [
    "relayed_to_peer",
    "relayed_to_client",
    "stale",
    "no_route",
    "offloaded",
    "too_big",
    "rewrite_failed",
];

#[cfg(turnstone_bpf)]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fastpath.bpf.o"));

struct Maps {
    channels: aya::maps::HashMap<aya::maps::MapData, maps::ChanKey, maps::ChanVal>,
    peers: aya::maps::HashMap<aya::maps::MapData, maps::PeerKey, maps::PeerVal>,
    slots: aya::maps::Array<aya::maps::MapData, maps::SlotVal>,
    stats: aya::maps::PerCpuArray<aya::maps::MapData, SlotStats>,
    events: aya::maps::PerCpuArray<aya::maps::MapData, u64>,
}

/// The loaded, attached program and its maps, shared by the workers.
pub struct FastPath {
    maps: Mutex<Maps>,
    /// Owns the program and its links: dropping it detaches.
    _program: Mutex<aya::Ebpf>,
    /// Where it is attached.
    pub interfaces: Vec<String>,
    slots_per_worker: u32,
    cpus: usize,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("interfaces", &self.interfaces)
            .finish_non_exhaustive()
    }
}

/// The largest datagrams userspace relays (its receive buffers): the program takes no larger
/// one, so both paths relay exactly the same datagrams.
#[derive(Clone, Copy, Debug)]
pub struct DatagramLimits {
    /// A client's datagram (ChannelData with its header and padding).
    pub client_datagram: u32,
    /// A peer's payload.
    pub peer_payload: u32,
}

/// Decides, loads and logs: `Ok(None)` when it is off or (under `auto`) cannot be active.
pub fn start(
    spec: &FastPathSpec,
    listeners: &[(Transport, SocketAddr)],
    relay_ips: &[IpAddr],
    workers: usize,
    limits: DatagramLimits,
) -> Result<Option<Arc<FastPath>>, FastPathError> {
    if spec.mode == FastPathMode::Off {
        return Ok(None);
    }
    let attempt = || {
        if spec.capped {
            return Err(FastPathError::NothingToServe(
                "bandwidth caps are configured, and they are enforced in userspace".into(),
            ));
        }
        let specific: Vec<IpAddr> = listeners
            .iter()
            .filter(|(t, a)| *t == Transport::Udp && !a.ip().is_unspecified())
            .map(|(_, a)| a.ip())
            .collect();
        if specific.is_empty() {
            return Err(FastPathError::NothingToServe(
                "no UDP listener is bound to a specific address (it serves only those, \
                 e.g. address = \"192.0.2.10:3478\", not 0.0.0.0)"
                    .into(),
            ));
        }
        let interfaces = if spec.interfaces.is_empty() {
            interfaces_of(specific.iter().chain(relay_ips))
        } else {
            spec.interfaces.clone()
        };
        FastPath::load(&interfaces, workers, limits)
    };
    match attempt() {
        Ok(fp) => {
            let wildcard = listeners
                .iter()
                .any(|(t, a)| *t == Transport::Udp && a.ip().is_unspecified());
            tracing::info!(
                target: "turnstone::fastpath",
                interfaces = %fp.interfaces.join(","),
                "kernel fast path active: ChannelData of UDP clients is relayed in the kernel{}",
                if wildcard { " (not for clients of wildcard listeners)" } else { "" }
            );
            Ok(Some(Arc::new(fp)))
        }
        Err(e) if spec.mode == FastPathMode::Auto => {
            tracing::info!(target: "turnstone::fastpath", "kernel fast path inactive: {e}; relaying in userspace");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The interfaces holding `ips` (every loopback IP is on `lo`).
fn interfaces_of<'a>(ips: impl Iterator<Item = &'a IpAddr>) -> Vec<String> {
    let known = crate::sys::ifaddrs::interface_addresses().unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    for ip in ips {
        let name = if ip.is_loopback() {
            Some("lo".to_string())
        } else {
            known.iter().find(|(_, a)| a == ip).map(|(n, _)| n.clone())
        };
        if let Some(name) = name
            && !out.contains(&name)
        {
            out.push(name);
        }
    }
    out
}

/// Whether an interface carries Ethernet frames (or is loopback, which does too): the
/// program parses an Ethernet header.
// Used by the loader, which a build without clang leaves out.
#[cfg_attr(not(turnstone_bpf), allow(dead_code))]
fn ethernet_like(name: &str) -> bool {
    const ARPHRD_ETHER: &str = "1";
    const ARPHRD_LOOPBACK: &str = "772";
    std::fs::read_to_string(format!("/sys/class/net/{name}/type"))
        .is_ok_and(|t| matches!(t.trim(), ARPHRD_ETHER | ARPHRD_LOOPBACK))
}

/// Walks an error's sources for an OS error code.
// Used by the loader, which a build without clang leaves out.
#[cfg_attr(not(turnstone_bpf), allow(dead_code))]
fn os_error(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(code) = io.raw_os_error()
        {
            return Some(code);
        }
        cur = err.source();
    }
    None
}

// Used by the loader, which a build without clang leaves out.
#[cfg_attr(not(turnstone_bpf), allow(dead_code))]
fn classify(e: &(dyn std::error::Error + 'static)) -> FastPathError {
    match os_error(e) {
        Some(libc::EPERM) => FastPathError::NoPrivilege,
        _ => {
            // The verifier log ends with what it refused, then its statistics; the rest is a
            // trace (all of it at debug level).
            let text = format!("{e}");
            tracing::debug!(target: "turnstone::fastpath", "{text}");
            let reason = text
                .lines()
                .rev()
                .find(|l| {
                    let l = l.trim();
                    !l.is_empty()
                        && !l.starts_with("processed ")
                        && !l.starts_with("verification time")
                        && !l.starts_with("stack depth")
                })
                .unwrap_or(&text);
            FastPathError::Rejected(reason.trim().to_string())
        }
    }
}

impl FastPath {
    /// Loads the program, attaches it to `interfaces` and takes its maps.
    #[cfg(not(turnstone_bpf))]
    pub fn load(
        _interfaces: &[String],
        _workers: usize,
        _limits: DatagramLimits,
    ) -> Result<Self, FastPathError> {
        Err(FastPathError::NotBuilt)
    }

    /// Loads the program, attaches it to `interfaces` and takes its maps.
    #[cfg(turnstone_bpf)]
    pub fn load(
        interfaces: &[String],
        workers: usize,
        limits: DatagramLimits,
    ) -> Result<Self, FastPathError> {
        use aya::programs::{SchedClassifier, TcAttachType, tc};
        if interfaces.is_empty() {
            return Err(FastPathError::NothingToServe(
                "no interface holds the listener or relay addresses".into(),
            ));
        }
        for name in interfaces {
            if !ethernet_like(name) {
                return Err(FastPathError::Interface {
                    name: name.clone(),
                    why: "not an Ethernet or loopback interface".into(),
                });
            }
        }
        let mut ebpf = aya::EbpfLoader::new()
            .override_global("max_client_datagram", &limits.client_datagram, true)
            .override_global("max_peer_payload", &limits.peer_payload, true)
            .load(OBJECT)
            .map_err(|e| classify(&e))?;
        let program: &mut SchedClassifier = ebpf
            .program_mut("turnstone_ingress")
            .ok_or_else(|| FastPathError::Rejected("program missing from the object".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| classify(&e))?;
        program.load().map_err(|e| classify(&e))?;
        let tcx = aya::util::KernelVersion::current()
            .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0));
        for name in interfaces {
            if !tcx {
                // Netlink attachment needs the clsact qdisc; it may exist already.
                let _ = tc::qdisc_add_clsact(name);
            }
            program
                .attach(name, TcAttachType::Ingress)
                .map_err(|e| match os_error(&e) {
                    Some(libc::EPERM) => FastPathError::NoPrivilege,
                    _ => FastPathError::Interface {
                        name: name.clone(),
                        why: e.to_string(),
                    },
                })?;
        }
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| FastPathError::Rejected(format!("map {name} missing")))
        };
        let bad = |e: aya::maps::MapError| FastPathError::Rejected(e.to_string());
        let maps = Maps {
            channels: aya::maps::HashMap::try_from(take("channels")?).map_err(bad)?,
            peers: aya::maps::HashMap::try_from(take("peers")?).map_err(bad)?,
            slots: aya::maps::Array::try_from(take("slots")?).map_err(bad)?,
            stats: aya::maps::PerCpuArray::try_from(take("stats")?).map_err(bad)?,
            events: aya::maps::PerCpuArray::try_from(take("events")?).map_err(bad)?,
        };
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| classify(&e))?;
        Ok(Self {
            maps: Mutex::new(maps),
            _program: Mutex::new(ebpf),
            interfaces: interfaces.to_vec(),
            slots_per_worker: MAX_SLOTS / workers.max(1) as u32,
            cpus,
        })
    }

    /// Worker `index`'s side: its share of the slot arrays.
    pub fn worker(self: &Arc<Self>, index: usize) -> WorkerMirror {
        WorkerMirror {
            fast_path: Arc::clone(self),
            base: self.slots_per_worker * index as u32,
            ops: Vec::new(),
            clock: None,
            tracked: StdHashMap::new(),
            map_errors: 0,
        }
    }

    /// The program's event counters, summed over CPUs, in [`EVENTS`] order.
    pub fn events(&self) -> [u64; EVENTS.len()] {
        let mut out = [0u64; EVENTS.len()];
        let Ok(maps) = self.maps.lock() else {
            return out;
        };
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(values) = maps.events.get(&(i as u32), 0) {
                *slot = values.iter().sum();
            }
        }
        out
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Maps>> {
        self.maps.lock().ok()
    }
}

/// A slot whose kernel counters are read back.
#[derive(Clone, Copy, Debug)]
struct Tracked {
    generation: u32,
    seen: SlotStats,
}

/// One worker's mirror: applies its core's changes and reads its slots' counters.
pub struct WorkerMirror {
    fast_path: Arc<FastPath>,
    /// The worker's first slot in the kernel's arrays.
    base: u32,
    ops: Vec<MirrorOp>,
    clock: Option<KernelClock>,
    tracked: StdHashMap<u32, Tracked>,
    map_errors: u64,
}

impl WorkerMirror {
    /// How many slots this worker may mirror (`Server::enable_mirror`).
    pub fn slot_limit(&self) -> u32 {
        self.fast_path.slots_per_worker
    }

    /// Writes the core's changes since the last call into the maps. Cheap when nothing
    /// changed: one branch in the core.
    pub fn sync(&mut self, server: &mut Server) {
        server.drain_mirror(&mut self.ops);
        if !self.ops.is_empty() {
            self.apply_all(server);
        }
        server.release_usage();
    }

    fn apply_all(&mut self, server: &mut Server) {
        let clock = match self.clock {
            Some(c) => c,
            None => match server.tick_epoch() {
                Some(epoch) => *self.clock.insert(KernelClock {
                    epoch_ns: crate::sys::clock::monotonic_nanos(epoch),
                }),
                None => {
                    self.ops.clear();
                    return;
                }
            },
        };
        let fast_path = Arc::clone(&self.fast_path);
        let Some(mut maps) = fast_path.lock() else {
            self.ops.clear();
            return;
        };
        let ops = std::mem::take(&mut self.ops);
        for op in &ops {
            if let Err(e) = self.apply(&mut maps, server, clock, op) {
                self.map_errors += 1;
                if self.map_errors.is_power_of_two() {
                    tracing::warn!(target: "turnstone::fastpath", error = %e, errors = self.map_errors, "cannot update the fast path's maps; those flows stay in userspace");
                }
            }
        }
        self.ops = ops;
        self.ops.clear();
    }

    fn apply(
        &mut self,
        maps: &mut Maps,
        server: &mut Server,
        clock: KernelClock,
        op: &MirrorOp,
    ) -> Result<(), aya::maps::MapError> {
        match op {
            MirrorOp::SetChannel(c) => {
                let ((ck, cv), (pk, pv)) = maps::entries(c, clock, self.base);
                // Only slots with a channel in the kernel have counters there to read back.
                self.tracked.entry(c.slot.index).or_insert(Tracked {
                    generation: c.slot.generation,
                    seen: SlotStats::default(),
                });
                maps.channels.insert(ck, cv, 0)?;
                maps.peers.insert(pk, pv, 0)?;
            }
            MirrorOp::RemoveChannel(c) => {
                let ((ck, _), (pk, _)) = maps::entries(c, clock, self.base);
                // Absent already is fine: a failed insert leaves nothing to remove.
                let _ = maps.channels.remove(&ck);
                let _ = maps.peers.remove(&pk);
            }
            MirrorOp::Slot {
                index,
                generation,
                expires,
            } => {
                let kernel = self.base + index;
                if let Some(old) = self.tracked.get(index).copied()
                    && old.generation != *generation
                {
                    // The allocation left the slot: its last counts, then zeros for the next.
                    self.collect_slot(maps, server, *index, old);
                    self.tracked.remove(index);
                    let zeros = vec![SlotStats::default(); self.fast_path.cpus];
                    if let Ok(zeros) = aya::maps::PerCpuValues::try_from(zeros) {
                        maps.stats.set(kernel, zeros, 0)?;
                    }
                }
                let value = maps::SlotVal {
                    generation: *generation,
                    pad: 0,
                    expires: clock.at(*expires),
                };
                maps.slots.set(kernel, value, 0)?;
            }
        }
        Ok(())
    }

    /// Adds what the kernel relayed for `index` since the last read to the core.
    fn collect_slot(&mut self, maps: &Maps, server: &mut Server, index: u32, t: Tracked) {
        let Ok(values) = maps.stats.get(&(self.base + index), 0) else {
            return;
        };
        let total = SlotStats::total(values.iter());
        let delta: Traffic = total.since(&t.seen);
        if let Some(entry) = self.tracked.get_mut(&index) {
            entry.seen = total;
        }
        if delta != Traffic::default() {
            let slot = Slot {
                index,
                generation: t.generation,
            };
            server.add_fast_path_traffic(slot, delta);
        }
    }

    /// Reads every tracked slot's counters into the core (about once a second).
    pub fn collect(&mut self, server: &mut Server) {
        let fast_path = Arc::clone(&self.fast_path);
        let Some(maps) = fast_path.lock() else {
            return;
        };
        let tracked: Vec<(u32, Tracked)> = self.tracked.iter().map(|(i, t)| (*i, *t)).collect();
        for (index, t) in tracked {
            self.collect_slot(&maps, server, index, t);
        }
    }

    /// The shared fast path (its event counters, for metrics).
    pub fn fast_path(&self) -> &Arc<FastPath> {
        &self.fast_path
    }
}

#[cfg(test)]
mod tests {
    use super::{FastPathError, classify};

    /// A loader error shaped like aya's: a message over an OS error (its `source`).
    #[derive(Debug)]
    struct LoadError {
        text: String,
        source: std::io::Error,
    }

    impl std::fmt::Display for LoadError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.text)
        }
    }

    impl std::error::Error for LoadError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    fn load_error(errno: i32, text: &str) -> LoadError {
        LoadError {
            text: text.to_string(),
            source: std::io::Error::from_raw_os_error(errno),
        }
    }

    /// Wraps `inner` once more, as the loader's error enums nest.
    #[derive(Debug)]
    struct Outer(LoadError);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "loading the program failed")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn eperm_anywhere_in_the_source_chain_is_no_privilege() {
        let direct = std::io::Error::from_raw_os_error(libc::EPERM);
        assert!(matches!(classify(&direct), FastPathError::NoPrivilege));
        let nested = Outer(load_error(libc::EPERM, "map create failed"));
        assert!(matches!(classify(&nested), FastPathError::NoPrivilege));
    }

    /// `Program::load` fails with the log in its message (aya's `ProgramError::LoadError`).
    #[test]
    fn a_verifier_log_is_reduced_to_the_line_saying_what_was_refused() {
        // The verifier refuses with EACCES or EINVAL, never EPERM: a refusal, not privilege.
        let log = "the BPF_PROG_LOAD syscall returned Permission denied (os error 13). \
                   Verifier output: 0: R1=ctx() R10=fp0\n\
                   0: (bf) r6 = r1                       ; R1=ctx() R6_w=ctx()\n\
                   1: (61) r2 = *(u32 *)(r6 +76)\n\
                   invalid bpf_context access off=76 size=4\n\
                   processed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0 \
                   peak_states 0 mark_read 0\n\
                   verification time 17 usec\n\
                   stack depth 0\n\n";
        for errno in [libc::EACCES, libc::EINVAL] {
            match classify(&load_error(errno, log)) {
                FastPathError::Rejected(reason) => {
                    assert_eq!(reason, "invalid bpf_context access off=76 size=4")
                }
                other => panic!("errno {errno}: {other:?}"),
            }
        }
    }

    #[test]
    fn without_a_verifier_log_the_message_is_the_reason() {
        let text = "the BPF_PROG_LOAD syscall returned Invalid argument (os error 22). \
                    Verifier output: ";
        match classify(&load_error(libc::EINVAL, text)) {
            FastPathError::Rejected(reason) => assert_eq!(reason, text.trim()),
            other => panic!("{other:?}"),
        }
        // No OS error at all (e.g. an object the loader cannot parse): refused too.
        let parse = std::io::Error::other("error parsing ELF data");
        match classify(&parse) {
            FastPathError::Rejected(reason) => assert_eq!(reason, "error parsing ELF data"),
            other => panic!("{other:?}"),
        }
    }
}
