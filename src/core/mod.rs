//! The protocol, with no sockets and no Python: what goes over the wire and how it is checked.
//!
//! - [`kdf`]: password → PRS (Argon2id), PHC strings, parameter bounds;
//! - [`cpace`]: the CPace PAKE (ristretto255, SHA-512) that turns the PRS into a per-connection
//!   key;
//! - [`handshake`]: the hello / server parameters carrying CPace's shares, the Noise NNpsk0
//!   exchange, and each side's whole handshake as a state machine over bytes;
//! - [`cipher`]: one direction's AES-256-GCM state (Noise nonces, rekey);
//! - [`frame`]: the plaintext layout of transport frames;
//! - [`message`]: a received message, kept as the decrypted fragments until it is read;
//! - [`reliable`]: sequence numbers, acknowledgements and resending for exactly-once sessions;
//! - [`record`]: the record layer: sealing messages into frames and opening frames into
//!   messages, with rekeying;
//! - [`codec`]: the record layer as tokio-util `Encoder`/`Decoder` over a length-prefixed byte
//!   stream;
//! - [`connection`]: one authenticated connection as a state machine over frames and time
//!   (closing handshake, keepalive, idle and close deadlines, ACK gating, reply slots).

pub mod channel;
pub mod cipher;
pub mod codec;
pub mod connection;
pub mod cpace;
pub mod frame;
pub mod handshake;
pub mod kdf;
pub mod message;
pub mod record;
pub mod reliable;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod reliable_model;
