//! What one handshake costs the server's CPU, without sockets: the work an unauthenticated
//! peer can make a server do (PROTOCOL.md §6), and how many handshakes one core completes.
//!
//! ```text
//! handshake_cost [ITERATIONS]   prints one JSON object, microseconds per step
//! ```
//! * `hello`: a valid hello arrives: the server starts CPace (generator, its share) and builds
//!   its parameters: what any peer gets for a 29-byte hello;
//! * `random_message1`: 104 random bytes where message 1 goes (most are no group element);
//! * `wrong_password_message1`: a well-formed message 1 under another password: a guess;
//! * `full`: the server's whole share of a successful handshake (parameters, message 1,
//!   message 2), and `per_core_per_second` from it.
//!
//! A `harness = false` bench target: `cargo bench --bench handshake_cost`.

use std::time::Instant;

use argonlink::core::handshake::{
    server_respond, Admission, ClientAwaitingReply, ClientHello, Identity, NodeId,
    ServerAwaitingMessage1, ServerParams, MSG1_LEN,
};
use argonlink::core::kdf::{KdfParams, Prs};
use rand::RngCore;

const SERVER: NodeId = NodeId([1; 16]);
const CLIENT: NodeId = NodeId([2; 16]);

fn limits() -> argonlink::core::channel::Limits {
    argonlink::core::channel::Config::default().limits
}

/// Mean microseconds of `f` over `n` runs.
fn per_run(n: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_secs_f64() / f64::from(n) * 1e6
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .map_or(3000, |a| a.parse().expect("iterations"));
    let prs = Prs::from_bytes([7; 32]);
    let key = ServerParams::new([1; 16], KdfParams::OWASP, 1, SERVER, 0).encode();
    let hello = ClientHello::new(0, Identity::default()).encode();
    let offer = || ServerAwaitingMessage1::offer(&prs, &hello, &key);
    let hello_us = per_run(n, || drop(offer()));
    let mut rng = rand::rng();
    let random_us = per_run(n, || {
        let mut msg1 = [0u8; MSG1_LEN];
        rng.fill_bytes(&mut msg1);
        assert!(offer().0.read(SERVER, limits(), &msg1).is_err());
    }) - hello_us;
    let (_, params) = offer();
    let other = Prs::from_bytes([8; 32]);
    let (_, guess) = ClientAwaitingReply::start(&other, &hello, &params, CLIENT, limits()).unwrap();
    let guess_us = per_run(n, || {
        assert!(offer().0.read(SERVER, limits(), &guess).is_err())
    }) - hello_us;
    // The client's part is timed alone and taken out of the whole exchange.
    let client_us = per_run(n, || {
        let (_, params) = offer();
        ClientAwaitingReply::start(&prs, &hello, &params, CLIENT, limits()).unwrap();
    }) - hello_us;
    let exchange_us = per_run(n, || {
        let (offered, params) = offer();
        let (_, msg1) =
            ClientAwaitingReply::start(&prs, &hello, &params, CLIENT, limits()).unwrap();
        server_respond(offered, SERVER, limits(), &msg1, Admission::Accepted).unwrap();
    });
    let full_us = exchange_us - client_us;
    println!(
        "{{\"hello\": {hello_us:.1}, \"random_message1\": {random_us:.1}, \
         \"wrong_password_message1\": {guess_us:.1}, \"full\": {full_us:.1}, \
         \"per_core_per_second\": {:.0}}}",
        1e6 / full_us
    );
}
