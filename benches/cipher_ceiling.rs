//! What sealing and opening cost on one core, without sockets, threads or Python: the floor
//! under argonlink's bulk throughput that no I/O design removes. `benchmarks/` runs it beside
//! the loopback benchmarks and turns its figures into a bound on the bulk ratio to plain TCP.
//!
//! ```text
//! cipher_ceiling [MIB] [MESSAGE_KIB]   prints one JSON object
//! ```
//! * `seal`: the session's `Sealer` turns messages into DATA frames (a copy of the plaintext into
//!   the frame buffer, then AES-256-GCM in place: what the writer task does per byte);
//! * `open`: the `FrameDecoder` opens those frames and reassembles the messages (in place: what
//!   the reading task does per byte);
//! * `copy`: a plain copy of each message (what handing a message to Python costs per byte).
//!
//! Each is timed on its own over the same messages, one thread; GB = 10^9 bytes.
//! A `harness = false` bench target: `cargo build --release --bench cipher_ceiling`.

use std::time::{Duration, Instant};

use argonlink::core::codec::FrameDecoder;
use argonlink::core::record::{Event, Opener, RekeyPolicy, Sealer};
use bytes::BytesMut;
use tokio_util::codec::Decoder;
use zeroize::Zeroizing;

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map_or(1024, |a| a.parse().expect("MiB"));
    let kib: usize = args
        .next()
        .map_or(1024, |a| a.parse().expect("message KiB"));
    let size = kib * 1024;
    let count = mib * 1024 / kib;
    let key = Zeroizing::new([7u8; 32]);
    let policy = RekeyPolicy::default();
    let mut sealer = Sealer::new(&key, policy, u64::MAX);
    let mut decoder = FrameDecoder {
        opener: Opener::new(&key, policy, u64::MAX, false),
    };
    let msg: Vec<u8> = (0..size).map(|i| (i * 131 % 251) as u8).collect();
    let mut copy = vec![0u8; size];
    let mut wire = BytesMut::with_capacity(size + size / 8);
    let (mut seal, mut open, mut copying) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    // One message at a time, as the writer and reader tasks see them: the buffers stay warm.
    for _ in 0..count {
        let t = Instant::now();
        sealer.seal_message(&msg, &mut wire).expect("seal");
        seal += t.elapsed();

        let t = Instant::now();
        let opened = loop {
            match decoder.decode(&mut wire).expect("open") {
                Some(Event::Message { message, .. }) => break message,
                Some(_) => {}
                None => panic!("a sealed message did not open whole"),
            }
        };
        open += t.elapsed();
        assert_eq!(opened.len(), size);

        let t = Instant::now();
        opened.copy_to(&mut copy);
        copying += t.elapsed();
        assert_eq!(copy[size - 1], msg[size - 1]);
        wire.clear();
    }
    let bytes = (count * size) as f64;
    let gbps = |d: Duration| bytes / d.as_secs_f64() / 1e9;
    println!(
        "{{\"bytes\": {}, \"message_size\": {}, \"seal_gbps\": {:.3}, \"open_gbps\": {:.3}, \
         \"copy_gbps\": {:.3}}}",
        count * size,
        size,
        gbps(seal),
        gbps(open),
        gbps(copying)
    );
}
