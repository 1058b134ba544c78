//! Both drivers against each other over in-memory bytes: no sockets, no clock.

use crate::core::channel::{Config, Limits};
use bytes::BytesMut;

use super::client::{ClientHandshake, ClientSetup, ClientStep};
use super::server::{ServerHandshake, ServerSetup, ServerStep};
use super::*;
use crate::core::frame::{ResumeReply, ResumeStatus, SessionRequest, MIN_WINDOW};
use crate::core::kdf::{derive_prs, KdfBounds, KdfParams, Prs};
use crate::core::record::{Event, RekeyPolicy};
use crate::error::CloseCode;

const FAST: KdfParams = KdfParams {
    m_cost: 256,
    t_cost: 1,
    p_cost: 1,
};
const SALT: [u8; 16] = [7; 16];
const SERVER_NODE: NodeId = NodeId([1; 16]);
const CLIENT_NODE: NodeId = NodeId([2; 16]);

fn prs(password: &[u8]) -> Prs {
    derive_prs(password, &SALT, &FAST).unwrap()
}

fn client(session: Option<SessionRequest>) -> ClientHandshake {
    ClientHandshake::new(ClientSetup {
        node_id: CLIENT_NODE,
        limits: Limits {
            max_message: 1 << 20,
            ..Config::default().limits
        },
        kdf_bounds: KdfBounds {
            floor: FAST,
            cap: KdfParams::DEFAULT_CAP,
        },
        rekey: RekeyPolicy::default(),
        epoch_hint: 0,
        session,
        identity: Identity::new("edge-1").unwrap(),
    })
}

fn server() -> ServerHandshake {
    ServerHandshake::new(ServerSetup {
        node_id: SERVER_NODE,
        limits: Limits {
            max_message: 1 << 16,
            ..Config::default().limits
        },
        rekey: RekeyPolicy::default(),
    })
}

/// A whole parameters message for these costs (with a nonce and a share for some hello).
fn params_message(kdf: KdfParams) -> BytesMut {
    let key = ServerParams::new(SALT, kdf, 1, SERVER_NODE, 0).encode();
    let hello = ClientHello::new(0, Identity::default()).encode();
    BytesMut::from(&ServerAwaitingMessage1::offer(&prs(b"pw"), &hello, &key).1[..])
}

fn request(resume: bool) -> SessionRequest {
    SessionRequest {
        session_id: [9; 16],
        resume,
        next_expected: 0,
        window: MIN_WINDOW,
    }
}

/// Two drivers and the bytes in flight between them, delivered `chunk` bytes at a time.
struct Pair {
    client: ClientHandshake,
    server: ServerHandshake,
    to_server: BytesMut,
    to_client: BytesMut,
    chunk: usize,
    client_password: &'static [u8],
    admission: Admission,
    /// How the server answers a CONFIRM: with this RESUME (sessions), or by refusing.
    resume: Option<ResumeReply>,
    refuse: Option<fn() -> Error>,
}

impl Pair {
    fn new(session: Option<SessionRequest>, chunk: usize) -> Pair {
        Pair {
            client: client(session),
            server: server(),
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
            chunk,
            client_password: b"pw",
            admission: Admission::Accepted,
            resume: session.map(|_| ResumeReply {
                status: ResumeStatus::Created,
                next_expected: 0,
                window: MIN_WINDOW,
            }),
            refuse: None,
        }
    }

    /// Run both sides until neither can move: each side's final result.
    fn run(&mut self) -> (Result<ClientStep>, Result<ServerStep>) {
        let (mut server_in, mut client_in) = (BytesMut::new(), BytesMut::new());
        let mut client_result = Ok(ClientStep::NeedInput);
        let mut server_result = Ok(ServerStep::NeedInput);
        for _ in 0..100_000 {
            self.to_server.extend(self.client.poll_transmit());
            self.to_client.extend(self.server.poll_transmit());
            let (from_c, from_s) = (self.to_server.len(), self.to_client.len());
            let n = self.chunk.min(from_c);
            server_in.extend_from_slice(&self.to_server.split_to(n));
            let n = self.chunk.min(from_s);
            client_in.extend_from_slice(&self.to_client.split_to(n));
            if matches!(server_result, Ok(ServerStep::NeedInput)) {
                server_result = self.serve(&mut server_in);
            }
            if matches!(client_result, Ok(ClientStep::NeedInput)) {
                client_result = self.dial(&mut client_in);
            }
            let waiting = |c: &Result<ClientStep>, s: &Result<ServerStep>| {
                !matches!(c, Ok(ClientStep::NeedInput)) && !matches!(s, Ok(ServerStep::NeedInput))
            };
            if waiting(&client_result, &server_result)
                && self.to_server.is_empty()
                && self.to_client.is_empty()
            {
                break;
            }
            if from_c == 0 && from_s == 0 && server_in.is_empty() && client_in.is_empty() {
                break;
            }
        }
        (client_result, server_result)
    }

    fn dial(&mut self, input: &mut BytesMut) -> Result<ClientStep> {
        loop {
            match self.client.handle_input(input)? {
                ClientStep::NeedKey(params) => {
                    assert_eq!((params.salt, params.kdf), (SALT, FAST));
                    self.client.set_key(&prs(self.client_password), false)?;
                }
                step => return Ok(step),
            }
        }
    }

    fn serve(&mut self, input: &mut BytesMut) -> Result<ServerStep> {
        loop {
            match self.server.handle_input(input)? {
                ServerStep::NeedKey {
                    epoch_hint,
                    identity,
                } => {
                    assert_eq!((epoch_hint, identity.as_str()), (0, "edge-1"));
                    let params = ServerParams::new(SALT, FAST, 1, SERVER_NODE, 0).encode();
                    self.server.offer(&prs(b"pw"), &params, 1)?;
                }
                ServerStep::NeedAdmission => self.server.admit(self.admission)?,
                ServerStep::Confirmed(request) => {
                    if let Some(refuse) = self.refuse {
                        return Err(self.server.refuse(refuse()));
                    }
                    assert_eq!(request.is_some(), self.resume.is_some());
                    self.server.accept(self.resume)?;
                }
                step => return Ok(step),
            }
        }
    }
}

#[test]
fn both_sides_agree_on_keys_whatever_the_chunking() {
    for chunk in [1, 2, 7, 100, 1 << 20] {
        for session in [None, Some(request(false))] {
            let mut pair = Pair::new(session, chunk);
            let (c, s) = pair.run();
            assert_eq!(c.unwrap(), ClientStep::Done, "chunk {chunk}");
            assert_eq!(s.unwrap(), ServerStep::Done, "chunk {chunk}");
            let client = pair.client.finish().unwrap();
            let server = pair.server.finish().unwrap();
            assert_eq!(*client.established.send_key, *server.established.recv_key);
            assert_eq!(*client.established.recv_key, *server.established.send_key);
            assert_eq!(client.established.peer_node_id, SERVER_NODE);
            assert_eq!(server.established.peer_node_id, CLIENT_NODE);
            assert_eq!(client.established.peer_max_message, 1 << 16);
            assert_eq!(server.established.peer_max_message, 1 << 20);
            assert_eq!(server.epoch, 1);
            assert_eq!(client.reply, pair.resume);
        }
    }
}

#[test]
fn bytes_after_the_handshake_are_left_for_the_connection() {
    // The client's first data frame can arrive in the same read as CONFIRM; the server's in
    // the same read as message 2 (plain) or RESUME (sessions).
    for session in [None, Some(request(false))] {
        let mut pair = Pair::new(session, 1 << 20);
        let (c, s) = pair.run();
        assert!(c.is_ok() && s.is_ok());
        let mut client = pair.client.finish().unwrap();
        let mut server = pair.server.finish().unwrap();
        let mut wire = BytesMut::new();
        client
            .sealer
            .seal_message(b"after CONFIRM", &mut wire)
            .unwrap();
        let record = take_record(&mut wire).unwrap().unwrap();
        let mut record = record;
        let event = server.opener.open_frame(&mut record).unwrap();
        assert_eq!(
            event,
            Some(Event::Message {
                channel: 0,
                message: bytes::Bytes::from_static(b"after CONFIRM").into(),
                credit: 13 + 64,
            })
        );
    }
    // Driven by bytes: what follows the handshake in the buffer is not consumed.
    let mut pair = Pair::new(None, 1 << 20);
    pair.client_password = b"pw";
    let mut hs = server();
    let mut input = BytesMut::from(&ClientHello::new(0, Identity::default()).encode()[..]);
    input.extend_from_slice(b"trailing");
    assert_eq!(
        hs.handle_input(&mut input).unwrap(),
        ServerStep::NeedKey {
            epoch_hint: 0,
            identity: Identity::default()
        }
    );
    assert_eq!(&input[..], b"trailing");
}

#[test]
fn a_wrong_password_fails_at_the_server_and_reads_as_a_refusal_at_the_client() {
    let mut pair = Pair::new(None, 13);
    pair.client_password = b"wrong";
    let (c, s) = pair.run();
    assert!(matches!(s, Err(Error::Authentication(_))), "{s:?}");
    assert_eq!(c.unwrap(), ClientStep::NeedInput, "it waits for message 2");
    // The server hangs up: to the client, that is the refusal...
    let eof = || std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
    assert!(matches!(
        pair.client.connection_lost(eof()),
        Error::Authentication(_)
    ));
    // ...unless this key worked with this server before: then it is a cut, to retry.
    let mut hs = client(None);
    hs.poll_transmit();
    let mut params = params_message(FAST);
    assert!(matches!(
        hs.handle_input(&mut params).unwrap(),
        ClientStep::NeedKey(_)
    ));
    hs.set_key(&prs(b"pw"), true).unwrap();
    assert!(matches!(hs.connection_lost(eof()), Error::Io(_)));
}

#[test]
fn what_a_close_means_depends_on_where_the_client_is() {
    let eof = || std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
    // Before the parameters: busy, or not argonlink.
    assert!(matches!(
        client(None).connection_lost(eof()),
        Error::Protocol(_)
    ));
    // While it derives its key: a fault to retry (an evicted first-time client).
    let mut hs = client(None);
    let mut params = params_message(FAST);
    hs.handle_input(&mut params).unwrap();
    match hs.connection_lost(eof()) {
        Error::Io(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionAborted),
        other => panic!("{other:?}"),
    }
    // Data from the server before message 1 is not argonlink.
    let mut hs = client(None);
    let mut params = params_message(FAST);
    params.extend_from_slice(b"x");
    assert!(matches!(
        hs.handle_input(&mut params),
        Err(Error::Protocol(PeerMisbehaved::DataBeforeMessage1))
    ));
}

#[test]
fn parameters_beyond_the_clients_bounds_are_refused_before_any_work() {
    let mut hs = client(None);
    let greedy = KdfParams {
        m_cost: u32::MAX,
        t_cost: 1,
        p_cost: 1,
    };
    let mut params = params_message(greedy);
    assert!(hs.handle_input(&mut params).is_err());
}

#[test]
fn a_busy_server_says_so_in_message_2() {
    let mut pair = Pair::new(None, 5);
    pair.admission = Admission::Busy;
    let (c, s) = pair.run();
    assert!(
        matches!(&s, Err(Error::Closed(i)) if i.code == CloseCode::BUSY),
        "{s:?}"
    );
    assert!(
        matches!(&c, Err(Error::Closed(i)) if i.code == CloseCode::BUSY),
        "{c:?}"
    );
}

#[test]
fn a_refused_confirmed_client_gets_the_servers_close() {
    let mut pair = Pair::new(Some(request(false)), 3);
    pair.refuse = Some(|| super::server::busy("max_sessions reached"));
    let (c, s) = pair.run();
    assert!(
        matches!(&s, Err(Error::Closed(i)) if i.code == CloseCode::BUSY),
        "{s:?}"
    );
    match c {
        Err(Error::Closed(info)) => {
            assert_eq!(info.code, CloseCode::BUSY);
            assert_eq!(info.reason, "max_sessions reached");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_resume_that_does_not_fit_the_request_gets_the_clients_close_1002() {
    let bad = [
        (request(true), ResumeStatus::Created),
        (request(false), ResumeStatus::Resumed),
    ];
    for (req, status) in bad {
        let mut pair = Pair::new(Some(req), 1 << 20);
        pair.resume = Some(ResumeReply {
            status,
            next_expected: 0,
            window: MIN_WINDOW,
        });
        let (c, s) = pair.run();
        assert!(matches!(c, Err(Error::Protocol(_))), "{c:?}");
        assert!(pair.client.is_authenticated(), "message 2 had verified");
        assert!(matches!(s, Ok(ServerStep::Done)));
        let mut server = pair.server.finish().unwrap();
        let mut close = pair.client.poll_transmit();
        let mut record = take_record(&mut close).unwrap().expect("a CLOSE");
        match server.opener.open_frame(&mut record).unwrap() {
            Some(Event::Close { code, .. }) => assert_eq!(code, 1002),
            other => panic!("{other:?}"),
        }
    }
}

/// A client and server stopped just before CONFIRM reaches the server (CONFIRM dropped).
fn up_to_confirm() -> (ServerHandshake, super::client::ClientDone) {
    let (mut hs, mut c) = (server(), client(None));
    let mut to_server = c.poll_transmit();
    assert!(matches!(
        hs.handle_input(&mut to_server).unwrap(),
        ServerStep::NeedKey { .. }
    ));
    let params = ServerParams::new(SALT, FAST, 1, SERVER_NODE, 0).encode();
    hs.offer(&prs(b"pw"), &params, 1).unwrap();
    let mut to_client = hs.poll_transmit();
    assert!(matches!(
        c.handle_input(&mut to_client).unwrap(),
        ClientStep::NeedKey(_)
    ));
    c.set_key(&prs(b"pw"), false).unwrap();
    let mut to_server = c.poll_transmit();
    assert_eq!(
        hs.handle_input(&mut to_server).unwrap(),
        ServerStep::NeedAdmission
    );
    hs.admit(Admission::Accepted).unwrap();
    let mut to_client = hs.poll_transmit();
    assert_eq!(c.handle_input(&mut to_client).unwrap(), ClientStep::Done);
    c.poll_transmit(); // CONFIRM, dropped
    (hs, c.finish().unwrap())
}

#[test]
fn a_first_frame_other_than_confirm_is_refused_with_a_close() {
    let (mut hs, mut c) = up_to_confirm();
    // A PING under the right keys at the first nonce: the peer holds the keys.
    let key = &c.established.send_key;
    let mut sealer = crate::core::record::Sealer::new(key, RekeyPolicy::default(), 1 << 16);
    let mut ping = BytesMut::new();
    sealer
        .seal_control(&crate::core::frame::Frame::Ping(1), &mut ping)
        .unwrap();
    let err = hs.handle_input(&mut ping).unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    let mut close = hs.poll_transmit();
    let mut record = take_record(&mut close).unwrap().expect("a CLOSE");
    match c.opener.open_frame(&mut record).unwrap() {
        Some(Event::Close { code, .. }) => assert_eq!(code, 1002),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_first_frame_that_does_not_open_is_a_failed_confirmation_and_gets_no_answer() {
    // A replayed message 1 looks like this: the replayer cannot seal anything that opens.
    let (mut hs, mut c) = up_to_confirm();
    let mut ping = BytesMut::new();
    c.sealer // already sealed CONFIRM: this PING is at the wrong nonce
        .seal_control(&crate::core::frame::Frame::Ping(1), &mut ping)
        .unwrap();
    let err = hs.handle_input(&mut ping).unwrap_err();
    assert!(matches!(err, Error::Authentication(_)), "{err:?}");
    assert!(
        hs.poll_transmit().is_empty(),
        "nothing is said to a peer without the keys"
    );
}

#[test]
fn a_close_before_confirmation_is_reported_as_such() {
    let (mut hs, _c) = up_to_confirm();
    let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
    assert!(matches!(hs.connection_lost(eof), Error::Protocol(_)));
}

#[test]
fn reading_what_each_side_wants_stops_exactly_at_the_connections_first_byte() {
    for session in [None, Some(request(false))] {
        let mut pair = Pair::new(session, 1);
        // Each side's connection bytes follow its last handshake message at once.
        let (mut to_server, mut to_client) = (BytesMut::new(), BytesMut::new());
        let (mut s_buf, mut c_buf) = (BytesMut::new(), BytesMut::new());
        let (mut c_step, mut s_step) = (ClientStep::NeedInput, ServerStep::NeedInput);
        for _ in 0..1000 {
            to_server.extend(pair.client.poll_transmit());
            to_client.extend(pair.server.poll_transmit());
            if c_step == ClientStep::Done && !to_server.ends_with(b"CONNECTION") {
                to_server.extend_from_slice(b"CONNECTION");
            }
            if s_step == ServerStep::Done && !to_client.ends_with(b"CONNECTION") {
                to_client.extend_from_slice(b"CONNECTION");
            }
            let want = pair.server.wants(&s_buf).min(to_server.len());
            s_buf.extend_from_slice(&to_server.split_to(want));
            if s_step == ServerStep::NeedInput {
                s_step = pair.serve(&mut s_buf).unwrap();
            }
            let want = pair.client.wants(&c_buf).min(to_client.len());
            c_buf.extend_from_slice(&to_client.split_to(want));
            if c_step == ClientStep::NeedInput {
                c_step = pair.dial(&mut c_buf).unwrap();
            }
        }
        assert_eq!((c_step, s_step), (ClientStep::Done, ServerStep::Done));
        assert!(s_buf.is_empty() && c_buf.is_empty());
        assert_eq!(&to_server[..], b"CONNECTION", "{session:?}");
        assert_eq!(&to_client[..], b"CONNECTION", "{session:?}");
    }
}
