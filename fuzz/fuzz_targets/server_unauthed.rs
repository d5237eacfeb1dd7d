//! Fuzz target `server_unauthed`: see `turnstone_fuzz::server::check_unauthed`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| turnstone_fuzz::server::check_unauthed(data));
