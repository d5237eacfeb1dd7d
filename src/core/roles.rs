//! Role types (DESIGN.md §3): a client's, a peer's and a relay's transport address are all
//! `SocketAddr`s, and passing one for another compiles. These wrappers make the core's public
//! API say which is which; io converts at the boundary.

use std::fmt;
use std::net::SocketAddr;

macro_rules! role {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub SocketAddr);

        impl $name {
            /// The plain address.
            pub fn addr(self) -> SocketAddr {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

role!(
    /// A client's transport address, as the server sees it (RFC 8656 §2).
    ClientAddr
);
role!(
    /// A peer's transport address: where relayed data goes to or comes from (RFC 8656 §2).
    PeerAddr
);
role!(
    /// A relayed transport address: a relay socket's bound address (RFC 8656 §2).
    RelayAddr
);
