#![no_main]
//! See `argonlink_fuzz::handshake`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = argonlink_fuzz::handshake::run(data);
});
