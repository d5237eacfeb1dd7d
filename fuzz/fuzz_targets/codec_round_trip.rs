//! Fuzz target `codec_round_trip`: see `turnstone_fuzz::codec::check`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| turnstone_fuzz::codec::check(data));
