//! Socket construction: listeners and relay sockets (DESIGN.md §4).
//!
//! Every socket returned here is non-blocking and, when IPv6, IPV6_V6ONLY, so
//! that a v6 socket never claims the same port on IPv4 as well.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Send and receive buffer size tried on listening UDP sockets.
const LISTENER_BUFFER_BYTES: usize = 4 << 20;
/// Pending-connection queue for TCP/TLS listeners.
const TCP_BACKLOG: i32 = 1024;

/// Non-blocking UDP socket bound to `addr`; SO_REUSEPORT when `reuse_port`
/// (one socket per worker on the same address, the kernel spreads clients by
/// 4-tuple); IPV6_V6ONLY on v6; tries 4 MiB send/receive buffers (a failure or
/// a kernel cap is ignored).
pub fn udp_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let sock = new_socket(addr, Type::DGRAM, Protocol::UDP)?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    // Bigger buffers absorb bursts between two batches; best effort only.
    let _ = sock.set_recv_buffer_size(LISTENER_BUFFER_BYTES);
    let _ = sock.set_send_buffer_size(LISTENER_BUFFER_BYTES);
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Non-blocking TCP listener on `addr` with SO_REUSEADDR (restarts do not wait
/// for TIME_WAIT), SO_REUSEPORT when `reuse_port`, IPV6_V6ONLY on v6, and a
/// backlog of 1024.
pub fn tcp_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let sock = new_socket(addr, Type::STREAM, Protocol::TCP)?;
    sock.set_reuse_address(true)?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    sock.bind(&addr.into())?;
    sock.listen(TCP_BACKLOG)?;
    Ok(sock.into())
}

/// Backlog of a TCP relay's listening socket (RFC 6062 §5.3): peers connecting in wait
/// here until accepted; more than this are refused by the kernel.
const TCP_RELAY_BACKLOG: i32 = 64;

/// The listening socket of a TCP relay (RFC 6062 §5.1) on exactly `addr`. Bound without
/// SO_REUSEPORT, so that it fails (`AddrInUse`) while anything else holds the port, our own
/// SO_REUSEPORT listeners included (it must never join their group and take their
/// connections); SO_REUSEPORT is set only after the bind, so the outgoing connections of
/// [`tcp_relay_connect_socket`] can share the address (RFC 6062 §5.2: a Connect's local
/// end is the relayed transport address).
pub fn tcp_relay_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = new_socket(addr, Type::STREAM, Protocol::TCP)?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.set_reuse_port(true)?;
    sock.listen(TCP_RELAY_BACKLOG)?;
    Ok(sock.into())
}

/// A non-blocking TCP socket bound to a TCP relay's address `local` (see
/// [`tcp_relay_listener`]), ready to connect to a peer (RFC 6062 §5.2).
pub fn tcp_relay_connect_socket(local: SocketAddr) -> io::Result<std::net::TcpStream> {
    let sock = new_socket(local, Type::STREAM, Protocol::TCP)?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.bind(&local.into())?;
    Ok(sock.into())
}

/// Binds `addr` once without SO_REUSEPORT and closes the socket again, returning the bound
/// address (port 0 resolved to a port free for everyone). Fails with `AddrInUse` while any
/// other socket holds the address, including another process's SO_REUSEPORT group, which
/// the workers' own SO_REUSEPORT binds would silently join. TCP sets SO_REUSEADDR, so
/// TIME_WAIT connections of a previous run do not count, and never listens, so closing the
/// probe leaves nothing behind.
pub fn probe_exclusive(addr: SocketAddr, udp: bool) -> io::Result<SocketAddr> {
    let sock = if udp {
        new_socket(addr, Type::DGRAM, Protocol::UDP)?
    } else {
        let sock = new_socket(addr, Type::STREAM, Protocol::TCP)?;
        sock.set_reuse_address(true)?;
        sock
    };
    sock.bind(&addr.into())?;
    sock.local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound address is not an IP address"))
}

/// Binds a non-blocking UDP socket to exactly `addr`, without SO_REUSEADDR or
/// SO_REUSEPORT, so that it fails if anyone holds the port: used to claim a
/// port reserved by RESERVATION-TOKEN (RFC 8656 §18.10).
pub fn bind_udp_exact(addr: SocketAddr) -> io::Result<UdpSocket> {
    let sock = new_socket(addr, Type::DGRAM, Protocol::UDP)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Sets or clears the Don't Fragment behaviour for datagrams sent on `sock`
/// (RFC 8656 §18.9 DONT-FRAGMENT: the server sets DF when relaying for a
/// client that asked). Linux: IP_MTU_DISCOVER = IP_PMTUDISC_DO / _DONT on v4,
/// IPV6_DONTFRAG on v6.
pub fn set_dont_fragment<S: std::os::fd::AsFd>(sock: &S, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    let sock = sock.as_fd();
    let is_v4 = socket2::SockRef::from(&sock).local_addr()?.is_ipv4();
    let (level, name, value) = if is_v4 {
        let mode = if on {
            libc::IP_PMTUDISC_DO
        } else {
            libc::IP_PMTUDISC_DONT
        };
        (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, mode)
    } else {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_DONTFRAG,
            libc::c_int::from(on),
        )
    };
    // SAFETY: `value` is a live c_int and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A non-blocking socket of `addr`'s family, IPV6_V6ONLY when v6.
fn new_socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// Reads from a stream socket into `buf`'s spare capacity (none is zeroed first) and returns
/// how many bytes arrived (0: the peer closed its side). Non-blocking sockets return
/// `WouldBlock` when nothing is there.
pub fn read_into_spare<S: AsFd>(sock: &S, buf: &mut Vec<u8>) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let spare = buf.spare_capacity_mut();
    if spare.is_empty() {
        return Ok(0);
    }
    // SAFETY: the kernel writes at most `spare.len()` bytes into memory `buf` owns.
    let n = unsafe {
        libc::recv(
            sock.as_fd().as_raw_fd(),
            spare.as_mut_ptr().cast(),
            spare.len(),
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the first `n` spare bytes were just written by recv.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::SockRef;

    #[test]
    fn two_reuse_port_udp_sockets_share_an_address() {
        let a = udp_socket("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let b = udp_socket(a.local_addr().unwrap(), true).unwrap();
        assert_eq!(a.local_addr().unwrap(), b.local_addr().unwrap());
        let err = udp_socket(a.local_addr().unwrap(), false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn udp_socket_is_non_blocking_and_v6_only_on_ipv6() {
        let sock = udp_socket("[::1]:0".parse().unwrap(), false).unwrap();
        assert!(SockRef::from(&sock).only_v6().unwrap());
        let mut buf = [0u8; 8];
        let err = sock.recv_from(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn two_reuse_port_tcp_listeners_share_an_address() {
        let a = tcp_listener("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let b = tcp_listener(a.local_addr().unwrap(), true).unwrap();
        assert_eq!(a.local_addr().unwrap(), b.local_addr().unwrap());
        assert_eq!(
            a.accept().unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "listener must be non-blocking"
        );
    }

    #[test]
    fn tcp_listener_is_v6_only_on_ipv6() {
        let l = tcp_listener("[::1]:0".parse().unwrap(), false).unwrap();
        assert!(SockRef::from(&l).only_v6().unwrap());
    }

    #[test]
    fn exclusive_probe_fails_beside_a_reuse_port_group_and_frees_the_port_after() {
        let udp = udp_socket("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let err = probe_exclusive(udp.local_addr().unwrap(), true).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let tcp = tcp_listener("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let err = probe_exclusive(tcp.local_addr().unwrap(), false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);

        // A free port 0 resolves, and the probe does not keep it: SO_REUSEPORT sockets bind.
        let addr = probe_exclusive("127.0.0.1:0".parse().unwrap(), false).unwrap();
        assert_ne!(addr.port(), 0);
        tcp_listener(addr, true).unwrap();
        let addr = probe_exclusive("[::1]:0".parse().unwrap(), true).unwrap();
        udp_socket(addr, true).unwrap();
    }

    #[test]
    fn exact_bind_claims_a_free_port_and_fails_on_a_taken_one() {
        let held = bind_udp_exact("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = held.local_addr().unwrap();
        let err = bind_udp_exact(addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(held);
        let again = bind_udp_exact(addr).unwrap();
        assert_eq!(again.local_addr().unwrap(), addr);
        let v6 = bind_udp_exact("[::1]:0".parse().unwrap()).unwrap();
        assert!(SockRef::from(&v6).only_v6().unwrap());
    }

    fn int_option(sock: &UdpSocket, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        use std::os::fd::AsRawFd;
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                level,
                name,
                std::ptr::from_mut(&mut value).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        value
    }

    #[test]
    fn dont_fragment_sets_and_clears_df_on_both_families() {
        let v4 = bind_udp_exact("127.0.0.1:0".parse().unwrap()).unwrap();
        set_dont_fragment(&v4, true).unwrap();
        let mode = int_option(&v4, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER);
        assert_eq!(mode, libc::IP_PMTUDISC_DO);
        set_dont_fragment(&v4, false).unwrap();
        let mode = int_option(&v4, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER);
        assert_eq!(mode, libc::IP_PMTUDISC_DONT);

        let v6 = bind_udp_exact("[::1]:0".parse().unwrap()).unwrap();
        set_dont_fragment(&v6, true).unwrap();
        assert_eq!(int_option(&v6, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG), 1);
        set_dont_fragment(&v6, false).unwrap();
        assert_eq!(int_option(&v6, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG), 0);
    }
}
