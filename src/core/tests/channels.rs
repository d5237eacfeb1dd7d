//! ChannelBind (RFC 8656 §11.1–11.2) and channel lifetime (§12: 10 minutes).

use std::time::Duration;

use crate::core::{DropReason, Handled, Settings};

use super::harness::{Harness, lifetime, sa, settings};

#[test]
fn channel_numbers_0x4000_to_0x7ffe_are_accepted_and_others_answered_400() {
    // RFC 8656 §12 narrowed the range to 0x4FFF; RFC 5766 clients still use up to 0x7FFE.
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[]);
    for (i, number) in [0x4000, 0x4FFF, 0x5000, 0x7FFE].into_iter().enumerate() {
        h.bind(&mut c, number, sa(&format!("8.8.8.8:{}", 1000 + i)))
            .ok();
    }
    h.bind(&mut c, 0x3FFF, sa("8.8.8.8:2000")).err(400);
    h.bind(&mut c, 0x7FFF, sa("8.8.8.8:2001")).err(400);
    assert_eq!(
        h.channel_data(c.ft, 0x4FFF, b"x").0,
        h.forward(relayed, sa("8.8.8.8:1001"), 4..5)
    );
    assert_eq!(
        h.channel_data(c.ft, 0x7FFF, b"x").0,
        Handled::Drop(DropReason::NoChannel)
    );
}

#[test]
fn rebinding_a_channel_to_the_same_peer_refreshes_it() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[lifetime(3600)]);
    let p = sa("8.8.8.8:1000");
    h.bind(&mut c, 0x4000, p).ok();
    h.advance(Duration::from_secs(500));
    h.bind(&mut c, 0x4000, p).ok();
    h.advance(Duration::from_secs(200));
    assert_eq!(
        h.channel_data(c.ft, 0x4000, b"x").0,
        h.forward(relayed, p, 4..5)
    );
}

#[test]
fn binding_a_bound_number_to_another_peer_is_answered_400() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    h.allocate(&mut c, &[]);
    h.bind(&mut c, 0x4000, sa("8.8.8.8:1000")).ok();
    h.bind(&mut c, 0x4000, sa("8.8.4.4:1000")).err(400);
    h.bind(&mut c, 0x4000, sa("8.8.8.8:1001")).err(400);
}

#[test]
fn binding_a_bound_peer_to_another_number_is_answered_400() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    h.allocate(&mut c, &[]);
    h.bind(&mut c, 0x4000, sa("8.8.8.8:1000")).ok();
    h.bind(&mut c, 0x4001, sa("8.8.8.8:1000")).err(400);
}

#[test]
fn channel_expires_after_600_seconds() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[lifetime(3600)]);
    let p = sa("8.8.8.8:1000");
    h.bind(&mut c, 0x4000, p).ok();
    // Keep the permission alive so only the channel lapses.
    h.advance(Duration::from_secs(400));
    h.permit(&mut c, &[p]).ok();
    h.advance(Duration::from_secs(199));
    assert_eq!(
        h.channel_data(c.ft, 0x4000, b"x").0,
        h.forward(relayed, p, 4..5)
    );
    assert_eq!(h.delivered(relayed, p, b"y")[..2], [0x40, 0x00]);
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.channel_data(c.ft, 0x4000, b"x").0,
        Handled::Drop(DropReason::NoChannel)
    );
    // Without the channel, peer data comes as a Data indication (type 0x0017).
    assert_eq!(h.delivered(relayed, p, b"y")[..2], [0x00, 0x17]);
    // The number is free again, for any peer.
    h.bind(&mut c, 0x4000, sa("8.8.4.4:1000")).ok();
}

#[test]
fn channel_bind_refused_for_the_permission_cap_binds_nothing() {
    let mut h = Harness::with_settings(Settings {
        max_permissions: 1,
        ..settings()
    });
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[lifetime(3600)]);
    h.permit(&mut c, &[sa("8.8.8.8:53")]).ok();
    h.bind(&mut c, 0x4000, sa("1.1.1.1:53")).err(508);
    assert_eq!(
        h.channel_data(c.ft, 0x4000, b"x").0,
        Handled::Drop(DropReason::NoChannel)
    );
    // Once the first permission lapses, the number is free for any peer.
    h.advance(Duration::from_secs(300));
    h.bind(&mut c, 0x4000, sa("9.9.9.9:53")).ok();
    assert_eq!(
        h.channel_data(c.ft, 0x4000, b"x").0,
        h.forward(relayed, sa("9.9.9.9:53"), 4..5)
    );
}
