//! The host's interface addresses (`getifaddrs(3)`): every IPv4 and IPv6 address of every
//! interface, including secondary and IPv6 temporary addresses. The peer policy refuses them
//! (RFC 8656 §21: a relay must not become a way into its own host).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Every IP address configured on the host's interfaces, sorted and deduplicated.
pub fn host_addresses() -> io::Result<Vec<IpAddr>> {
    let mut out: Vec<IpAddr> = interface_addresses()?
        .into_iter()
        .map(|(_, ip)| ip)
        .collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Every (interface name, IP address) pair, in the kernel's order.
pub fn interface_addresses() -> io::Result<Vec<(String, IpAddr)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; on success the list is freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cur };
        if let Some(ip) = address_of(entry.ifa_addr)
            && !entry.ifa_name.is_null()
        {
            // SAFETY: a non-null ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) };
            out.push((name.to_string_lossy().into_owned(), ip));
        }
        cur = entry.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The IP of a socket address from getifaddrs, if it is IPv4 or IPv6 (null for some links).
fn address_of(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: non-null and points to a sockaddr whose family says its real type.
    let family = i32::from(unsafe { (*sa).sa_family });
    match family {
        libc::AF_INET => {
            // SAFETY: AF_INET entries are sockaddr_in.
            let sin = unsafe { &*sa.cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: AF_INET6 entries are sockaddr_in6.
            let sin6 = unsafe { &*sa.cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addresses_include_loopback() {
        let ips = host_addresses().unwrap();
        assert!(ips.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{ips:?}");
    }
}
