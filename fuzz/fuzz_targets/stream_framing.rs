//! Fuzz target `stream_framing`: see `turnstone_fuzz::framing::check`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| turnstone_fuzz::framing::check(data));
