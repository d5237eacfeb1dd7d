//! Fuzz target `server_authed`: see `turnstone_fuzz::server::check_authed`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| turnstone_fuzz::server::check_authed(data));
