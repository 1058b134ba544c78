//! `handshake`: every handshake parser on arbitrary input. The first byte picks the parser:
//!
//! 0. the client hello (29 + n bytes, the rest of the input): what parses re-encodes to the
//!    same bytes;
//! 1. the server parameters (104 bytes): the key's part re-encodes to the same bytes, then the
//!    client's KDF bounds check;
//! 2. message 1 at the server (CPace share, then Noise message 1), after a valid hello and
//!    parameters;
//! 3. a client given arbitrary server parameters (104 bytes), then an arbitrary message 2;
//! 4. a PHC string, as a server's configured key.
//!
//! Without running CPace with the PRS against the other side's share nothing here can
//! authenticate: modes 2 and 3 must fail, cleanly.

use argonlink::core::handshake::{
    server_respond, Admission, ClientAwaitingReply, ClientHello, Identity, NodeId,
    ServerAwaitingMessage1, ServerParams, KEY_PARAMS_LEN, PARAMS_LEN,
};
use argonlink::core::kdf::{KdfBounds, KdfParams, Prs, ServerKey};
use argonlink::Error;

use crate::Reader;

pub const MODES: u8 = 5;
pub const SERVER_NODE: NodeId = NodeId([0x5e; 16]);
pub const CLIENT_NODE: NodeId = NodeId([0xc1; 16]);

pub fn prs() -> Prs {
    Prs::from_bytes([0x07; 32])
}

/// The parameters a test server offers.
pub fn server_params(other_epoch: u32) -> ServerParams {
    ServerParams::new([0x5a; 16], KdfParams::OWASP, 3, SERVER_NODE, other_epoch)
}

/// Returns whether the input got past the parser (modes 0, 1, 4) — never true for 2 and 3.
pub fn run(data: &[u8]) -> bool {
    let mut r = Reader::new(data);
    let Some(mode) = r.u8() else { return false };
    match mode % MODES {
        0 => {
            let bytes = r.rest();
            match ClientHello::parse(bytes) {
                Ok(hello) => {
                    assert_eq!(hello.encode(), bytes);
                    true
                }
                Err(e) => {
                    assert!(matches!(e, Error::Protocol(_)), "{e:?}");
                    false
                }
            }
        }
        1 => {
            let Some(bytes) = r.array::<PARAMS_LEN>() else {
                return false;
            };
            match ServerParams::parse(&bytes) {
                Ok(params) => {
                    assert_eq!(params.encode()[..], bytes[..KEY_PARAMS_LEN]);
                    // What the client does next with the costs: no panic, whatever they are.
                    let _ = KdfBounds::default().check(&params.kdf);
                    let k = params.kdf;
                    let _ = KdfParams::new(k.m_cost, k.t_cost, k.p_cost);
                    true
                }
                Err(e) => {
                    assert!(matches!(e, Error::Protocol(_)), "{e:?}");
                    false
                }
            }
        }
        2 => {
            let admission = if mode & 0x80 != 0 {
                Admission::Busy
            } else {
                Admission::Accepted
            };
            let msg1 = r.rest();
            let hello = ClientHello::new(0, Identity::default()).encode();
            let (offered, _) =
                ServerAwaitingMessage1::offer(&prs(), &hello, &server_params(0).encode());
            match server_respond(offered, SERVER_NODE, limits(), msg1, admission) {
                Ok(_) => panic!("message 1 forged without the server's CPace share"),
                Err(e) => assert!(
                    matches!(e, Error::Protocol(_) | Error::Authentication(_)),
                    "{e:?}"
                ),
            }
            false
        }
        3 => {
            let Some(params) = r.array::<PARAMS_LEN>() else {
                return false;
            };
            let hello = ClientHello::new(0, Identity::default()).encode();
            let client =
                match ClientAwaitingReply::start(&prs(), &hello, &params, CLIENT_NODE, limits()) {
                    Ok((client, _msg1)) => client,
                    Err(e) => {
                        assert!(matches!(e, Error::Protocol(_)), "{e:?}");
                        return false;
                    }
                };
            match client.finish(r.rest()) {
                Ok(_) => panic!("message 2 forged without the client's CPace share"),
                Err(e) => assert!(
                    matches!(e, Error::Protocol(_) | Error::Authentication(_)),
                    "{e:?}"
                ),
            }
            false
        }
        _ => {
            let phc = String::from_utf8_lossy(r.rest());
            ServerKey::from_phc(&phc).is_ok()
        }
    }
}

pub fn limits() -> argonlink::core::channel::Limits {
    argonlink::core::channel::Limits {
        max_message: 1 << 20,
        ..argonlink::core::channel::Config::default().limits
    }
}
