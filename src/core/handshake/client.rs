//! The client's side of the handshake:
//!
//! ```text
//! → hello   ← params   [the driver gets the key]   → message 1   ← message 2
//! → CONFIRM (with the session request, if any)      ← RESUME (sessions only)
//! ```
//!
//! The key for the server's parameters is the one thing the driver supplies: an Argon2 run,
//! done off the event loop, or a cache hit.

use bytes::BytesMut;

use super::{exact_wants, first_frame, framed, record_wants, take_exact, take_noise_message};
use super::{ClientAwaitingReply, ClientHello, Established, Identity, NodeId, ServerParams};
use super::{MSG2_LEN, PARAMS_LEN};
use crate::core::frame::{Frame, ResumeReply, ResumeStatus, SessionRequest, MAX_CLOSE_REASON};
use crate::core::kdf::{KdfBounds, Prs};
use crate::core::record::{Event, Opener, RekeyPolicy, Sealer};
use crate::error::{CloseCode, CloseInfo, Error, PeerMisbehaved, Result};

/// What the client brings to a handshake.
#[derive(Clone, Debug)]
pub struct ClientSetup {
    pub node_id: NodeId,
    /// What we accept (the largest message, windows, channels), told to the peer.
    pub limits: crate::core::channel::Limits,
    /// The Argon2 costs we are willing to pay for a server we do not know yet.
    pub kdf_bounds: KdfBounds,
    pub rekey: RekeyPolicy,
    /// The server key epoch we last authenticated under (0: none).
    pub epoch_hint: u32,
    /// Ask for an exactly-once session (new or resumed).
    pub session: Option<SessionRequest>,
    /// Who we say we are (it picks our password on the server); empty: anonymous.
    pub identity: Identity,
}

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientStep {
    /// Read more and feed it to [`ClientHandshake::handle_input`].
    NeedInput,
    /// The server's parameters arrived and are acceptable: get the key for them and give it
    /// to [`ClientHandshake::set_key`].
    NeedKey(ServerParams),
    /// Complete: [`ClientHandshake::finish`] gives the connection's record layer.
    Done,
}

/// A completed client handshake: what the connection starts from.
pub struct ClientDone {
    pub established: Established,
    pub params: ServerParams,
    /// Opens the server's frames; it already opened RESUME, if there was one.
    pub opener: Opener,
    /// Seals ours; it already sealed CONFIRM.
    pub sealer: Sealer,
    /// The server's answer to the session request.
    pub reply: Option<ResumeReply>,
}

enum State {
    AwaitParams,
    NeedKey {
        params_bytes: [u8; PARAMS_LEN],
        params: ServerParams,
    },
    AwaitReply {
        noise: Box<ClientAwaitingReply>,
        params: ServerParams,
        /// This key completed a handshake with this server before.
        proven_key: bool,
    },
    AwaitResume(Box<ClientDone>, SessionRequest),
    Done(Box<ClientDone>),
    Failed,
}

pub struct ClientHandshake {
    setup: ClientSetup,
    /// As sent: CPace's CI and the Noise prologue cover it.
    hello: Vec<u8>,
    state: State,
    /// Our messages not yet taken by the driver: each step adds one (a few hundred bytes at
    /// most), and nothing the peer sends adds to it.
    transmit: BytesMut,
    /// Message 2 verified (stays true when a later step fails).
    authenticated: bool,
}

impl ClientHandshake {
    /// Start: the hello is ready to send.
    pub fn new(setup: ClientSetup) -> Self {
        let hello = ClientHello::new(setup.epoch_hint, setup.identity.clone()).encode();
        ClientHandshake {
            setup,
            transmit: BytesMut::from(&hello[..]),
            hello,
            state: State::AwaitParams,
            authenticated: false,
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
            State::AwaitParams => exact_wants::<PARAMS_LEN>(buffered),
            State::AwaitReply { .. } | State::AwaitResume(..) => record_wants(buffered),
            _ => 0,
        }
    }

    /// Message 2 verified: the server knows the password (whatever happens next).
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// Take what the handshake needs from the front of `buf`; the rest is the connection's.
    pub fn handle_input(&mut self, buf: &mut BytesMut) -> Result<ClientStep> {
        let step = self.advance(buf);
        if step.is_err() {
            self.state = State::Failed;
        }
        step
    }

    // Long (one arm per state, each a few lines): split up, the order of the states would
    // no longer read top to bottom.
    fn advance(&mut self, buf: &mut BytesMut) -> Result<ClientStep> {
        loop {
            match &mut self.state {
                State::AwaitParams => {
                    let Some(params_bytes) = take_exact::<PARAMS_LEN>(buf) else {
                        return Ok(ClientStep::NeedInput);
                    };
                    let params = ServerParams::parse(&params_bytes)?;
                    self.setup.kdf_bounds.check(&params.kdf)?;
                    self.state = State::NeedKey {
                        params_bytes,
                        params,
                    };
                }
                State::NeedKey { params, .. } => {
                    // The server speaks only after message 1: anything now is not argonlink.
                    if !buf.is_empty() {
                        return Err(Error::Protocol(PeerMisbehaved::DataBeforeMessage1));
                    }
                    return Ok(ClientStep::NeedKey(*params));
                }
                State::AwaitReply { .. } => {
                    let Some(msg2) = take_noise_message::<MSG2_LEN>(buf, "handshake reply")? else {
                        return Ok(ClientStep::NeedInput);
                    };
                    let State::AwaitReply { noise, params, .. } =
                        std::mem::replace(&mut self.state, State::Failed)
                    else {
                        unreachable!("matched above")
                    };
                    let established = noise.finish(&msg2)?;
                    self.authenticated = true;
                    let rekey = self.setup.rekey;
                    let mut sealer =
                        Sealer::new(&established.send_key, rekey, established.peer_max_message);
                    let opener = Opener::new(
                        &established.recv_key,
                        rekey,
                        self.setup.limits.max_message,
                        false,
                    );
                    let request = self.setup.session;
                    sealer.seal_control(&Frame::Confirm(request), &mut self.transmit)?;
                    let done = Box::new(ClientDone {
                        established,
                        params,
                        opener,
                        sealer,
                        reply: None,
                    });
                    self.state = match request {
                        // Where each side resumes is settled before either sends a message.
                        Some(request) => State::AwaitResume(done, request),
                        None => State::Done(done),
                    };
                }
                State::AwaitResume(done, request) => {
                    let event = match first_frame(&mut done.opener, buf, "RESUME") {
                        Ok(None) => return Ok(ClientStep::NeedInput),
                        Ok(Some(event)) => event,
                        Err(e) => return Err(self.refuse(e)),
                    };
                    let reply = match event {
                        Event::Resume(reply) => reply,
                        // Refused with a reason (busy, a protocol error): the server's code.
                        Event::Close { code, reason } => {
                            return Err(Error::Closed(CloseInfo::error(CloseCode(code), reason)))
                        }
                        _ => {
                            return Err(self.refuse(Error::Protocol(PeerMisbehaved::ExpectedResume)))
                        }
                    };
                    if let Err(e) = check_resume(request, &reply) {
                        return Err(self.refuse(e));
                    }
                    done.reply = Some(reply);
                    let State::AwaitResume(done, _) =
                        std::mem::replace(&mut self.state, State::Failed)
                    else {
                        unreachable!("matched above")
                    };
                    self.state = State::Done(done);
                }
                State::Done(_) => return Ok(ClientStep::Done),
                State::Failed => return Err(Error::Misuse("the handshake already failed")),
            }
        }
    }

    /// The key (PRS) for the parameters of [`ClientStep::NeedKey`]; `proven` when it completed
    /// a handshake with this server before (then a cut before message 2 is a fault, not a
    /// refusal). CPace runs, and message 1 is then ready to send.
    pub fn set_key(&mut self, prs: &Prs, proven: bool) -> Result<()> {
        let State::NeedKey {
            params_bytes,
            params,
        } = std::mem::replace(&mut self.state, State::Failed)
        else {
            return Err(Error::Misuse("no key was asked for"));
        };
        let (noise, msg1) = ClientAwaitingReply::start(
            prs,
            &self.hello,
            &params_bytes,
            self.setup.node_id,
            self.setup.limits,
        )?;
        framed(&msg1, &mut self.transmit);
        self.state = State::AwaitReply {
            noise: Box::new(noise),
            params,
            proven_key: proven,
        };
        Ok(())
    }

    /// What it means that the server's stream ended (`UnexpectedEof`) or failed now.
    pub fn connection_lost(&mut self, e: std::io::Error) -> Error {
        use std::io::ErrorKind::{ConnectionReset, UnexpectedEof};
        let cut = matches!(e.kind(), UnexpectedEof | ConnectionReset);
        let meaning = match &self.state {
            State::AwaitParams if e.kind() == UnexpectedEof => {
                Error::Protocol(PeerMisbehaved::ClosedBeforeHandshake)
            }
            // The server can judge the password only once it has message 1: a close before
            // that (evicted at its pending-handshake cap, restarted) is a fault to retry.
            State::NeedKey { .. } if cut => Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the server closed the connection before message 1 (busy or restarting)",
            )),
            // The server hangs up on a handshake it cannot decrypt and says nothing else, by
            // design. Unless this key already completed a handshake with this very server:
            // then the connection was lost (a restart, a network fault).
            State::AwaitReply {
                proven_key: false, ..
            } if cut => Error::Authentication(
                "the server rejected the handshake (wrong password, or a password change)".into(),
            ),
            // A cut, as likely as a refusal: worth another try.
            State::AwaitResume(..) if e.kind() == UnexpectedEof => Error::Io(std::io::Error::new(
                UnexpectedEof,
                "the connection ended before the server answered the session request",
            )),
            _ => Error::Io(e),
        };
        self.state = State::Failed;
        meaning
    }

    /// The completed handshake.
    pub fn finish(self) -> Result<ClientDone> {
        match self.state {
            State::Done(done) => Ok(*done),
            _ => Err(Error::Misuse("the handshake is not complete")),
        }
    }

    /// The server proved it holds the keys and then broke the protocol: our CLOSE says why
    /// (unless a tag failed: then the channel is not intact and we say nothing).
    fn refuse(&mut self, err: Error) -> Error {
        if let (Some(code), State::AwaitResume(done, _)) =
            (err.close_code_to_send(), &mut self.state)
        {
            let reason = err.to_string();
            let reason = crate::core::frame::truncate_utf8(&reason, MAX_CLOSE_REASON);
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
        }
        err
    }
}

/// The server's answer must fit the request: a new session is created, a known one resumed.
/// (An unknown session is a valid answer: the caller reports the session lost.)
fn check_resume(request: &SessionRequest, reply: &ResumeReply) -> Result<()> {
    match reply.status {
        ResumeStatus::Created if request.resume => Err(Error::Protocol(PeerMisbehaved::NotResumed)),
        ResumeStatus::Resumed if !request.resume => {
            Err(Error::Protocol(PeerMisbehaved::ResumedUnknown))
        }
        _ => Ok(()),
    }
}
