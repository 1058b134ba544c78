//! Writes the seed corpora under `corpus/<target>/` from real encodings, and checks that each
//! seed reaches the part of its target it is meant to reach.
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds
//! ```

use std::path::Path;

use argonlink::core::frame::{Frame, FrameType, FLAG_LENGTH, FLAG_MORE};
use argonlink::core::handshake::{
    ClientAwaitingReply, ClientHello, Identity, ServerAwaitingMessage1, HELLO_FIXED_LEN, MSG2_LEN,
};
use argonlink::core::kdf::{hash_password, KdfParams, Prs};
use argonlink::core::record::{FIRST_FRAGMENT, MAX_CHUNK};
use argonlink_fuzz::{connection, decoder, frame_parse, handshake, mitm, reassembly, roundtrip};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn control(frame: Frame<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    frame.write_control(&mut out);
    out
}

fn data(flags: u8, total: Option<u64>, chunk: &[u8]) -> Vec<u8> {
    let mut out = vec![FrameType::Data as u8, flags];
    if let Some(t) = total {
        out.extend_from_slice(&t.to_be_bytes());
    }
    out.extend_from_slice(chunk);
    out
}

fn frame_parse_seeds() {
    let seeds = [
        ("data", data(0, None, b"hello")),
        ("data-empty", data(0, None, b"")),
        (
            "data-first",
            data(FLAG_MORE | FLAG_LENGTH, Some(100_000), b"abc"),
        ),
        ("data-middle", data(FLAG_MORE, None, b"def")),
        ("data-last", data(0, None, b"ghi")),
        ("ping", control(Frame::Ping(7))),
        ("pong", control(Frame::Pong(u64::MAX))),
        (
            "close",
            control(Frame::Close {
                code: 1000,
                reason: "bye",
            }),
        ),
        (
            "close-utf8",
            control(Frame::Close {
                code: 4002,
                reason: "réauthentifier",
            }),
        ),
        ("rekey", control(Frame::Rekey)),
        ("confirm", control(Frame::Confirm(None))),
    ];
    for (name, bytes) in seeds {
        assert!(frame_parse::run(&bytes), "{name}");
        write("frame_parse", name, &bytes);
    }
}

fn decoder_seeds() {
    use decoder::{Input, Record, FLAG_EXPECT_CONFIRM, FLAG_SMALL_LIMIT};
    let chunk = MAX_CHUNK as u16;
    let session = Input {
        piece: 6,
        flags: FLAG_EXPECT_CONFIRM,
        records: vec![
            Record::Sealed(control(Frame::Confirm(None))),
            Record::Sealed(data(0, None, b"first message")),
            // A message of three fragments: full first and middle frames, a short last one.
            Record::Filler {
                flags: FLAG_MORE | FLAG_LENGTH,
                chunk_len: FIRST_FRAGMENT as u16,
                total: Some((FIRST_FRAGMENT + MAX_CHUNK + 4) as u64),
            },
            Record::Filler {
                flags: FLAG_MORE,
                chunk_len: chunk,
                total: None,
            },
            Record::Filler {
                flags: 0,
                chunk_len: 4,
                total: None,
            },
            Record::Sealed(control(Frame::Ping(1))),
            Record::Sealed(control(Frame::Rekey)),
            Record::Sealed(data(0, None, b"after rekey")),
            Record::Sealed(control(Frame::Pong(2))),
            Record::Sealed(control(Frame::Close {
                code: 1000,
                reason: "done",
            })),
        ],
    };
    let out = decoder::run(&session.encode());
    assert_eq!(out.error, None, "{out:?}");
    assert_eq!(out.events.len(), 7, "{out:?}");
    assert_eq!(out.events[0], decoder::Seen::Confirmed);
    write("frame_decoder", "session", &session.encode());

    let seeds = [
        (
            "truncated",
            Input {
                piece: 0,
                flags: 0,
                records: vec![
                    Record::Sealed(data(0, None, b"whole")),
                    Record::Raw(vec![0, 40, 1, 2, 3]),
                ],
            },
        ),
        (
            "short-length",
            Input {
                piece: 1,
                flags: 0,
                records: vec![Record::Raw(vec![0, 16, 0, 0])],
            },
        ),
        (
            "relength",
            Input {
                piece: 2,
                flags: 0,
                records: vec![Record::Relength {
                    prefix: 60,
                    plain: data(0, None, b"12345678"),
                }],
            },
        ),
        (
            "over-limit",
            Input {
                piece: 255,
                flags: FLAG_SMALL_LIMIT,
                records: vec![Record::Filler {
                    flags: 0,
                    chunk_len: 2000,
                    total: None,
                }],
            },
        ),
        (
            "partial-at-eof",
            Input {
                piece: 9,
                flags: 0,
                records: vec![Record::Filler {
                    flags: FLAG_MORE | FLAG_LENGTH,
                    chunk_len: 100,
                    total: Some(1000),
                }],
            },
        ),
    ];
    for (name, input) in seeds {
        let out = decoder::run(&input.encode());
        assert!(out.error.is_some(), "{name}: {out:?}");
        write("frame_decoder", name, &input.encode());
    }
}

fn reassembly_seeds() {
    use reassembly::{Input, Op};
    let big = MAX_CHUNK as u16;
    let multi = |total: u64, sent: u64| {
        vec![
            Op::Data {
                flags: FLAG_MORE | FLAG_LENGTH,
                bad_flag: false,
                chunk_len: big,
                total: Some(total),
            },
            Op::Data {
                flags: FLAG_MORE,
                bad_flag: false,
                chunk_len: big,
                total: None,
            },
            Op::Data {
                flags: 0,
                bad_flag: false,
                chunk_len: (sent as usize - (2 * MAX_CHUNK - 8)) as u16,
                total: None,
            },
        ]
    };
    let single = |len: u16| Op::Data {
        flags: 0,
        bad_flag: false,
        chunk_len: len,
        total: None,
    };
    let total = (2 * MAX_CHUNK - 8 + 1000) as u64;
    let mut mixed = vec![Op::Confirm, single(10), Op::Ping(5)];
    mixed.extend(multi(total, total));
    // A sender rekeys between fragments when a threshold falls inside a message.
    let mut rekeyed = multi(total, total);
    rekeyed.insert(1, Op::Rekey);
    mixed.extend(rekeyed);
    mixed.extend([Op::Rekey, single(0), Op::Close]);
    let cases: Vec<(&str, Input, usize)> = vec![
        (
            "mixed",
            Input {
                max_message: 1 << 20,
                rekey_frames: 0,
                expect_confirm: true,
                ops: mixed,
            },
            4,
        ),
        (
            "exact-limit",
            Input {
                max_message: total as u32,
                rekey_frames: 0,
                expect_confirm: false,
                ops: multi(total, total),
            },
            1,
        ),
        (
            "over-limit",
            Input {
                max_message: total as u32 - 1,
                rekey_frames: 0,
                expect_confirm: false,
                ops: multi(total, total),
            },
            0,
        ),
        (
            "short-message",
            Input {
                max_message: 1 << 20,
                rekey_frames: 0,
                expect_confirm: false,
                ops: multi(total + 1, total),
            },
            0,
        ),
        (
            "key-exhausted",
            Input {
                max_message: 100,
                rekey_frames: 2,
                expect_confirm: false,
                ops: vec![single(1); 6],
            },
            4,
        ),
        (
            "raw",
            Input {
                max_message: 100,
                rekey_frames: 0,
                expect_confirm: false,
                ops: vec![
                    Op::Raw(data(0, None, b"raw")),
                    Op::Raw(control(Frame::Pong(3))),
                    Op::Raw(vec![1, 0x80]),
                ],
            },
            1,
        ),
    ];
    for (name, input, messages) in cases {
        assert_eq!(reassembly::run(&input.encode()).len(), messages, "{name}");
        write("reassembly", name, &input.encode());
    }
}

fn handshake_seeds() {
    let hello = ClientHello::new(0, Identity::new("seed-1").unwrap()).encode();
    let key_params = handshake::server_params(2).encode();
    let (_, params) = ServerAwaitingMessage1::offer(&handshake::prs(), &hello, &key_params);
    let mut seed = vec![0];
    seed.extend_from_slice(&hello);
    assert!(handshake::run(&seed));
    write("handshake", "hello", &seed);

    let mut seed = vec![1];
    seed.extend_from_slice(&params);
    assert!(handshake::run(&seed));
    write("handshake", "params", &seed);

    // A well-formed message 1 under another PRS: the server must refuse it.
    let other = Prs::from_bytes([0x99; 32]);
    let (_, msg1) = ClientAwaitingReply::start(
        &other,
        &hello,
        &params,
        handshake::CLIENT_NODE,
        handshake::limits(),
    )
    .unwrap();
    for (name, mode) in [("msg1", 2u8), ("msg1-busy", 0x82)] {
        let mut seed = vec![mode];
        seed.extend_from_slice(&msg1);
        handshake::run(&seed);
        write("handshake", name, &seed);
    }

    let mut seed = vec![3];
    seed.extend_from_slice(&params);
    seed.extend_from_slice(&[0x33; MSG2_LEN]);
    handshake::run(&seed);
    write("handshake", "msg2", &seed);

    let phc = hash_password(b"pw", KdfParams::new(256, 1, 1).unwrap()).unwrap();
    let mut seed = vec![4];
    seed.extend_from_slice(phc.as_bytes());
    assert!(handshake::run(&seed));
    write("handshake", "phc", &seed);
    assert_eq!(hello.len(), HELLO_FIXED_LEN + 6);
}

fn mitm_seeds() {
    use mitm::{Edit, Input, SEGMENTS};
    let clean = |flags: u8| Input {
        segment: 0,
        edit: Edit::Xor,
        offset: 0,
        flags,
        epoch_hint: 0,
        payload: vec![0],
    };
    for (name, flags) in [("clean", 0u8), ("clean-busy", 1), ("clean-other-epoch", 2)] {
        let out = mitm::run(&clean(flags).encode());
        assert!(
            !out.edited && (out.client_done || out.client_busy),
            "{out:?}"
        );
        write("handshake_mitm", name, &clean(flags).encode());
    }
    for (segment, name) in SEGMENTS.iter().enumerate() {
        for edit in [Edit::Xor, Edit::Truncate, Edit::Insert, Edit::Replace] {
            let input = Input {
                segment: segment as u8,
                edit,
                offset: 5,
                flags: 0,
                epoch_hint: 1,
                payload: vec![0x01, 0x02],
            };
            let out = mitm::run(&input.encode());
            assert!(
                out.edited && !out.server_accepted,
                "{name} {edit:?}: {out:?}"
            );
            write(
                "handshake_mitm",
                &format!("{name}-{edit:?}").to_lowercase(),
                &input.encode(),
            );
        }
    }
}

fn roundtrip_seeds() {
    use roundtrip::{Input, Item};
    let sizes = [
        0,
        1,
        1000,
        MAX_CHUNK - 8,
        MAX_CHUNK,
        MAX_CHUNK + 1,
        3 * MAX_CHUNK + 17,
    ];
    let mut items: Vec<Item> = sizes.iter().map(|&n| Item::Message(n as u32)).collect();
    items.insert(2, Item::Ping);
    items.insert(4, Item::Pong);
    items.push(Item::Close(1000));
    let seeds = [
        ("default", 0, 0, true, 0),
        ("rekey-every-2-frames", 2, 0, false, 3),
        ("rekey-every-64-kib", 0, 64, true, 1),
    ];
    for (name, rekey_frames, rekey_kib, confirm, piece) in seeds {
        let input = Input {
            rekey_frames,
            rekey_kib,
            confirm,
            piece,
            items: items.clone(),
        };
        let rekeys = roundtrip::run(&input.encode());
        assert_eq!(rekeys > 0, rekey_frames + rekey_kib > 0, "{name}");
        write("roundtrip", name, &input.encode());
    }
}

/// Schedules for the two connection state machines: a conversation and a clean close, a close
/// the peer never answers, keepalive across a paused reader, an idle close, a flipped bit, an
/// ACK where none is allowed, and a truncation.
fn connection_seeds() {
    use connection::{Input, Op};
    let talk = [
        Op::Send {
            side: 0,
            len: 100,
            now: true,
        },
        Op::Send {
            side: 0,
            len: 5000,
            now: false,
        },
        Op::Deliver {
            side: 0,
            bytes: u16::MAX,
        },
        Op::Send {
            side: 1,
            len: 17_000,
            now: false,
        },
        Op::Deliver {
            side: 1,
            bytes: 300,
        },
        Op::Deliver {
            side: 1,
            bytes: u16::MAX,
        },
    ];
    let with =
        |extra: &[Op]| -> Vec<Op> { talk.iter().cloned().chain(extra.iter().cloned()).collect() };
    let seeds = [
        (
            "close",
            None,
            None,
            with(&[
                Op::Close {
                    side: 0,
                    code: 1000,
                },
                Op::Deliver {
                    side: 0,
                    bytes: u16::MAX,
                },
                Op::Deliver {
                    side: 1,
                    bytes: u16::MAX,
                },
            ]),
        ),
        (
            "close-unanswered",
            None,
            None,
            with(&[
                Op::Close {
                    side: 1,
                    code: 4100,
                },
                Op::Advance { millis: 1000 },
                Op::Advance { millis: 1500 },
            ]),
        ),
        (
            "keepalive-paused",
            Some(100),
            None,
            with(&[
                Op::Pause { side: 1 },
                Op::Advance { millis: 150 },
                Op::Deliver {
                    side: 0,
                    bytes: u16::MAX,
                },
                Op::Deliver {
                    side: 1,
                    bytes: u16::MAX,
                },
                Op::Advance { millis: 150 },
                Op::Deliver {
                    side: 1,
                    bytes: u16::MAX,
                },
                Op::Pause { side: 1 },
                Op::Deliver {
                    side: 0,
                    bytes: u16::MAX,
                },
            ]),
        ),
        (
            "idle",
            None,
            Some(500),
            with(&[
                Op::Advance { millis: 499 },
                Op::Advance { millis: 1 },
                Op::Deliver {
                    side: 0,
                    bytes: u16::MAX,
                },
                Op::Deliver {
                    side: 1,
                    bytes: u16::MAX,
                },
            ]),
        ),
        (
            "flip",
            None,
            None,
            with(&[
                Op::Ping { side: 1, value: 7 },
                Op::Send {
                    side: 1,
                    len: 10,
                    now: false,
                },
                Op::Deliver { side: 1, bytes: 0 },
                Op::Flip { side: 1, at: 40 },
                Op::Deliver {
                    side: 1,
                    bytes: u16::MAX,
                },
                Op::Send {
                    side: 0,
                    len: 10,
                    now: false,
                },
                Op::Deliver {
                    side: 0,
                    bytes: u16::MAX,
                },
            ]),
        ),
        (
            "ack-refused",
            None,
            None,
            with(&[
                Op::Ack { side: 0, value: 1 },
                Op::Deliver {
                    side: 0,
                    bytes: u16::MAX,
                },
                Op::Deliver {
                    side: 1,
                    bytes: u16::MAX,
                },
            ]),
        ),
        (
            "truncated",
            None,
            None,
            with(&[
                Op::Eof { side: 0 },
                Op::Deliver {
                    side: 0,
                    bytes: u16::MAX,
                },
            ]),
        ),
    ];
    for (name, ping, idle, ops) in seeds {
        let input = Input {
            ping_interval_ms: ping,
            idle_ms: idle,
            close_ms: 2000,
            ops,
        };
        connection::run(&input.encode());
        write("connection", name, &input.encode());
    }
}

fn main() {
    connection_seeds();
    roundtrip_seeds();
    frame_parse_seeds();
    decoder_seeds();
    reassembly_seeds();
    handshake_seeds();
    mitm_seeds();
    println!("seeds written under fuzz/corpus/");
}
