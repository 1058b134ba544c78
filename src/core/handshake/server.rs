//! The server's side of the handshake:
//!
//! ```text
//! ← hello   [the driver picks the key]   → params   ← message 1   [the driver says if
//! there is room]   → message 2   ← CONFIRM   [the driver routes it]   → RESUME (sessions)
//! ```
//!
//! Nothing before CONFIRM proves more than that someone once had message 1 (it may be a
//! replay), so the driver takes capacity only at [`ServerStep::Confirmed`].

use bytes::BytesMut;

use super::{first_frame, framed, record_wants, take_noise_message};
use super::{Admission, ClientHello, Established, Identity, NodeId};
use super::{ServerAwaitingAdmission, ServerAwaitingMessage1};
use super::{HELLO_FIXED_LEN, KEY_PARAMS_LEN, MSG1_LEN};
use crate::core::frame::{Frame, ResumeReply, SessionRequest, MAX_CLOSE_REASON};
use crate::core::kdf::Prs;
use crate::core::record::{Event, Opener, RekeyPolicy, Sealer};
use crate::error::{CloseCode, CloseInfo, Error, PeerMisbehaved, Result};

/// What the server brings to every handshake.
#[derive(Clone, Debug)]
pub struct ServerSetup {
    pub node_id: NodeId,
    /// What we accept (the largest message, windows, channels), told to the peer.
    pub limits: crate::core::channel::Limits,
    pub rekey: RekeyPolicy,
}

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerStep {
    NeedInput,
    /// The hello is valid: give [`ServerHandshake::offer`] the key for `identity`, a client
    /// that last authenticated under `epoch_hint`.
    NeedKey {
        epoch_hint: u32,
        identity: Identity,
    },
    /// Message 1 opened under the key: the client ran CPace with the right password against
    /// this connection's share. Message 2 tells the client whether there is room:
    /// [`ServerHandshake::admit`].
    NeedAdmission,
    /// CONFIRM opened: the client holds the keys. [`ServerHandshake::accept`] the connection
    /// (with the answer to its session request) or [`ServerHandshake::refuse`] it.
    Confirmed(Option<SessionRequest>),
    /// Complete: [`ServerHandshake::finish`] gives the connection's record layer.
    Done,
}

/// A completed server handshake: what the connection starts from.
pub struct ServerDone {
    pub established: Established,
    /// The key epoch the client authenticated under.
    pub epoch: u32,
    /// The identity the client authenticated as (its password was the one for it).
    pub identity: Identity,
    /// Opens the client's frames; it already opened CONFIRM.
    pub opener: Opener,
    /// Seals ours; it already sealed RESUME, if there was one.
    pub sealer: Sealer,
}

/// What the handshake knows of the key it offered.
struct Offered {
    epoch: u32,
    identity: Identity,
}

enum State {
    AwaitHello,
    NeedKey(Vec<u8>, ClientHello),
    AwaitMessage1(Box<ServerAwaitingMessage1>, Offered),
    NeedAdmission(Box<ServerAwaitingAdmission>, Offered),
    AwaitConfirm(Box<ServerDone>),
    Confirmed(Box<ServerDone>, Option<SessionRequest>),
    Done(Box<ServerDone>),
    Failed,
}

pub struct ServerHandshake {
    setup: ServerSetup,
    state: State,
    /// Our messages not yet taken by the driver: each step adds one (a few hundred bytes at
    /// most), and nothing the peer sends adds to it.
    transmit: BytesMut,
}

impl ServerHandshake {
    pub fn new(setup: ServerSetup) -> Self {
        ServerHandshake {
            setup,
            state: State::AwaitHello,
            transmit: BytesMut::new(),
        }
    }

    /// Bytes to write, in order; empty when there are none.
    pub fn poll_transmit(&mut self) -> BytesMut {
        self.transmit.split()
    }

    /// How many more bytes the handshake needs before it can move, given the `buffered` ones
    /// (0: it is not waiting for input). Reading exactly this much never takes the
    /// connection's first bytes.
    pub fn wants(&self, buffered: &[u8]) -> usize {
        match self.state {
            State::AwaitHello => ClientHello::wants(buffered),
            State::AwaitMessage1(..) | State::AwaitConfirm(_) => record_wants(buffered),
            _ => 0,
        }
    }

    /// Take what the handshake needs from the front of `buf`; the rest is the connection's.
    pub fn handle_input(&mut self, buf: &mut BytesMut) -> Result<ServerStep> {
        let step = self.advance(buf);
        if step.is_err() {
            self.state = State::Failed;
        }
        step
    }

    fn advance(&mut self, buf: &mut BytesMut) -> Result<ServerStep> {
        loop {
            match &mut self.state {
                State::AwaitHello => {
                    // Magic, version and suite are judged as soon as they are in, before the
                    // identity's length is waited for.
                    if buf.len() >= HELLO_FIXED_LEN {
                        ClientHello::check_prefix(buf)?;
                    }
                    if buf.len() < HELLO_FIXED_LEN || ClientHello::wants(buf) > 0 {
                        return Ok(ServerStep::NeedInput);
                    }
                    let bytes = buf.split_to(HELLO_FIXED_LEN + buf[HELLO_FIXED_LEN - 1] as usize);
                    let hello = ClientHello::parse(&bytes)?;
                    self.state = State::NeedKey(bytes.to_vec(), hello);
                }
                State::NeedKey(_, hello) => {
                    return Ok(ServerStep::NeedKey {
                        epoch_hint: hello.epoch_hint,
                        identity: hello.identity.clone(),
                    })
                }
                State::AwaitMessage1(..) => {
                    let Some(msg1) = take_noise_message::<MSG1_LEN>(buf, "handshake message")?
                    else {
                        return Ok(ServerStep::NeedInput);
                    };
                    let State::AwaitMessage1(offered, key) =
                        std::mem::replace(&mut self.state, State::Failed)
                    else {
                        unreachable!("matched above")
                    };
                    let opened = offered.read(self.setup.node_id, self.setup.limits, &msg1)?;
                    self.state = State::NeedAdmission(Box::new(opened), key);
                }
                State::NeedAdmission(..) => return Ok(ServerStep::NeedAdmission),
                State::AwaitConfirm(done) => {
                    // Key confirmation: the client's first frame must open under the new keys.
                    let event = match first_frame(&mut done.opener, buf, "CONFIRM") {
                        Ok(None) => return Ok(ServerStep::NeedInput),
                        Ok(Some(event)) => event,
                        // Nothing decrypted: a replayed message 1, or a client without the keys.
                        Err(Error::Integrity) => {
                            return Err(Error::Authentication("key confirmation failed".into()))
                        }
                        // A frame decrypted, so the peer holds the keys and broke the protocol.
                        Err(e) => return Err(self.refuse(e)),
                    };
                    let Event::Confirmed(request) = event else {
                        return Err(self
                            .refuse(Error::Protocol(PeerMisbehaved::FirstFrameMustBe("CONFIRM"))));
                    };
                    let State::AwaitConfirm(done) =
                        std::mem::replace(&mut self.state, State::Failed)
                    else {
                        unreachable!("matched above")
                    };
                    self.state = State::Confirmed(done, request);
                }
                State::Confirmed(_, request) => return Ok(ServerStep::Confirmed(*request)),
                State::Done(_) => return Ok(ServerStep::Done),
                State::Failed => return Err(Error::Misuse("the handshake already failed")),
            }
        }
    }

    /// The key (PRS) to offer for [`ServerStep::NeedKey`], with its parameters
    /// (`key_params`, [`super::ServerParams::encode`]) and its epoch. CPace starts, and the
    /// parameters message is then ready to send. (For an unknown identity the driver offers a
    /// decoy: a random PRS under plausible parameters, which fails at message 1 like a wrong
    /// password.)
    pub fn offer(
        &mut self,
        prs: &Prs,
        key_params: &[u8; KEY_PARAMS_LEN],
        epoch: u32,
    ) -> Result<()> {
        let State::NeedKey(hello, parsed) = std::mem::replace(&mut self.state, State::Failed)
        else {
            return Err(Error::Misuse("no key was asked for"));
        };
        let (offered, params) = ServerAwaitingMessage1::offer(prs, &hello, key_params);
        self.transmit.extend_from_slice(&params);
        self.state = State::AwaitMessage1(
            Box::new(offered),
            Offered {
                epoch,
                identity: parsed.identity,
            },
        );
        Ok(())
    }

    /// Answer [`ServerStep::NeedAdmission`]: message 2 is then ready to send. `Busy` ends the
    /// handshake (the error says so) once message 2 is sent.
    pub fn admit(&mut self, admission: Admission) -> Result<()> {
        let State::NeedAdmission(opened, key) = std::mem::replace(&mut self.state, State::Failed)
        else {
            return Err(Error::Misuse("no admission was asked for"));
        };
        let (established, msg2) = opened.reply(admission)?;
        framed(&msg2, &mut self.transmit);
        if admission == Admission::Busy {
            return Err(busy("max_connections reached"));
        }
        let rekey = self.setup.rekey;
        let opener = Opener::new(
            &established.recv_key,
            rekey,
            self.setup.limits.max_message,
            true,
        );
        let sealer = Sealer::new(&established.send_key, rekey, established.peer_max_message);
        self.state = State::AwaitConfirm(Box::new(ServerDone {
            established,
            epoch: key.epoch,
            identity: key.identity,
            opener,
            sealer,
        }));
        Ok(())
    }

    /// Take the confirmed connection; `reply` answers its session request (RESUME, the
    /// connection's first frame), and must be given exactly when there was one.
    pub fn accept(&mut self, reply: Option<ResumeReply>) -> Result<()> {
        let State::Confirmed(mut done, request) = std::mem::replace(&mut self.state, State::Failed)
        else {
            return Err(Error::Misuse("no confirmed connection to accept"));
        };
        match (request, reply) {
            (Some(_), Some(reply)) => done
                .sealer
                .seal_control(&Frame::Resume(reply), &mut self.transmit)?,
            (None, None) => {}
            _ => return Err(Error::Protocol(PeerMisbehaved::UnaskedResume)),
        }
        self.state = State::Done(done);
        Ok(())
    }

    /// Refuse a client that proved it holds the keys: a CLOSE saying why (sealed under the
    /// new keys, the connection's first and last frame) is then ready to send. Returns `err`.
    pub fn refuse(&mut self, err: Error) -> Error {
        let done = match &mut self.state {
            State::AwaitConfirm(done) | State::Confirmed(done, _) => done,
            _ => return err,
        };
        let info = err.to_close_info();
        let code = err.close_code_to_send().unwrap_or(info.code);
        let reason = crate::core::frame::truncate_utf8(&info.reason, MAX_CLOSE_REASON);
        let close = Frame::Close {
            code: code.0,
            reason,
        };
        if done
            .sealer
            .seal_control(&close, &mut self.transmit)
            .is_err()
        {
            self.transmit.clear();
        }
        self.state = State::Failed;
        err
    }

    /// What it means that the client's stream ended (`UnexpectedEof`) or failed now.
    pub fn connection_lost(&mut self, e: std::io::Error) -> Error {
        let meaning = match self.state {
            State::AwaitConfirm(_) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Error::Protocol(PeerMisbehaved::ClosedBeforeConfirmation)
            }
            _ => Error::Io(e),
        };
        self.state = State::Failed;
        meaning
    }

    /// The completed handshake.
    pub fn finish(self) -> Result<ServerDone> {
        match self.state {
            State::Done(done) => Ok(*done),
            _ => Err(Error::Misuse("the handshake is not complete")),
        }
    }
}

/// A refusal for lack of room.
pub fn busy(what: &str) -> Error {
    Error::Closed(CloseInfo::error(CloseCode::BUSY, what))
}
