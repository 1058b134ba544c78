//! The server's side of one handshake over a socket: the protocol is [`ServerHandshake`]'s;
//! this moves its bytes and answers its questions (which key, whether there is room, where the
//! connection goes).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};

use tokio::net::TcpStream;

use super::*;

/// A confirmed connection: the key (by generation) it authenticated under, and where it goes.
pub(super) struct Confirmed {
    pub conn: Connection,
    pub generation: u64,
    pub route: Route,
}

/// One handshake; the protocol is [`ServerHandshake`]'s, this moves its bytes and answers its
/// questions (which key, whether there is room, where the connection goes). `named` gets the
/// identity the hello named, for the log of a failure.
pub(super) async fn server_handshake(
    shared: &Arc<Shared>,
    stream: TcpStream,
    id: u64,
    named: &mut Option<Identity>,
) -> Result<Confirmed> {
    let mut wire = Wire::new(stream)?;
    let link = &shared.config.link;
    let mut hs = ServerHandshake::new(ServerSetup {
        node_id: link.node_id,
        limits: link.limits(),
        rekey: link.rekey,
    });
    let mut slot = None;
    let mut generation = None;
    let driven = drive(
        shared,
        &mut hs,
        &mut wire,
        id,
        &mut slot,
        &mut generation,
        named,
    )
    .await;
    let route = match driven {
        Ok(route) => route,
        Err(e) => {
            wire.last_words(&hs.poll_transmit()).await;
            return Err(e);
        }
    };
    wire.write(&hs.poll_transmit()).await?; // RESUME, for a session
    let done = hs.finish()?;
    let socket = wire.into_socket(done.opener, done.sealer);
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let on_done = Box::new(move || {
        if let Some(shared) = weak.upgrade() {
            shared.lock_live().remove(&id);
        }
        drop(slot); // the connection's slot, held for its whole life
    });
    let conn = Connection::spawn(
        socket,
        &done.established,
        done.epoch,
        link.clone(),
        Start {
            acknowledged: !matches!(route, Route::Plain),
            on_done: Some(on_done),
            peer_identity: done.identity,
            server: true,
        },
    )?;
    Ok(Confirmed {
        conn,
        generation: generation.expect("a confirmed handshake had a key"),
        route,
    })
}

/// Run `hs` until it is confirmed and routed. The slot is taken only after CONFIRM: until
/// then this may be a replay of someone's message 1, which must not hold capacity. It is held
/// by a guard until the connection ends (however this future ends, it comes back unless the
/// connection took it over).
async fn drive(
    shared: &Arc<Shared>,
    hs: &mut ServerHandshake,
    wire: &mut Wire,
    id: u64,
    slot: &mut Option<SlotGuard>,
    generation: &mut Option<u64>,
    named: &mut Option<Identity>,
) -> Result<Route> {
    loop {
        match hs.handle_input(&mut wire.buf)? {
            ServerStep::NeedInput => {
                // What we have to say goes out before we wait for the answer.
                wire.write(&hs.poll_transmit()).await?;
                let want = hs.wants(&wire.buf);
                if let Err(e) = wire.read(want).await {
                    return Err(hs.connection_lost(e));
                }
            }
            ServerStep::NeedKey {
                epoch_hint,
                identity,
            } => {
                shared.look_up(&identity).await;
                let node = shared.config.link.node_id;
                let offer = shared.lock_keys().offer(&identity, epoch_hint, node);
                if offer.generation.is_none() {
                    shared.stats.unknown_identities.fetch_add(1, Relaxed);
                }
                hs.offer(&offer.prs, &offer.key_params, offer.epoch)?;
                *generation = offer.generation;
                *named = Some(identity);
            }
            ServerStep::NeedAdmission => {
                // A decoy's random key opens nothing; should it ever, it still admits no one.
                if generation.is_none() {
                    return Err(Error::Authentication("unknown identity".into()));
                }
                shared.lock_pending().proved(id);
                // Message 2 tells an authenticated client whether there is room.
                let admission = if shared.slot_free() {
                    Admission::Accepted
                } else {
                    Admission::Busy
                };
                hs.admit(admission)?; // busy: message 2 says so, then we hang up
            }
            ServerStep::Confirmed(request) => {
                // Room seen at message 1 may have gone since: say so in a CLOSE.
                let Some(taken) = SlotGuard::take(shared) else {
                    return Err(hs.refuse(busy("max_connections reached")));
                };
                *slot = Some(taken);
                let identity = named.as_ref().expect("named in the hello");
                let (route, reply) = match route(shared, request, identity) {
                    Ok(routed) => routed,
                    Err(e) => return Err(hs.refuse(e)),
                };
                hs.accept(reply)?;
                return Ok(route);
            }
            ServerStep::Done => unreachable!("accepted above"),
        }
    }
}

/// One `max_connections` slot, given back when dropped.
struct SlotGuard(Weak<Shared>);

impl SlotGuard {
    fn take(shared: &Arc<Shared>) -> Option<SlotGuard> {
        shared
            .take_slot()
            .then(|| SlotGuard(Arc::downgrade(shared)))
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.release_slot();
        }
    }
}

/// Where a confirmed connection goes, and the RESUME frame that tells the client (sessions).
/// A resume that names numbers the session cannot continue from is a protocol error, found
/// before RESUME would tell the client it resumed.
/// Only the identity that opened a session may resume it: to any other, it does not exist.
fn route(
    shared: &Shared,
    request: Option<SessionRequest>,
    identity: &Identity,
) -> Result<(Route, Option<ResumeReply>)> {
    let Some(request) = request else {
        return Ok((Route::Plain, None));
    };
    let existing = shared
        .lock_sessions()
        .get(&request.session_id)
        .filter(|(link, _)| link.ended().is_none())
        .map(|(link, owner)| (link.clone(), owner == identity));
    let (route, status, next_expected) = match (request.resume, existing) {
        (false, None) if shared.lock_sessions().len() >= shared.config.max_sessions => {
            return Err(Error::Closed(CloseInfo::error(
                CloseCode::BUSY,
                "max_sessions reached",
            )));
        }
        (false, None) => (Route::NewSession(request), ResumeStatus::Created, 0),
        (true, Some((link, true))) => {
            if !link.can_resume_at(request.next_expected) {
                return Err(Error::Protocol(PeerMisbehaved::ResumeUnknownPoint(
                    request.next_expected,
                )));
            }
            let announced = link.next_expected();
            let route = Route::Resume {
                link,
                announced,
                peer_next_expected: request.next_expected,
                peer_window: request.window,
            };
            (route, ResumeStatus::Resumed, announced)
        }
        // Resuming what is gone (expired, or this is a restarted server) or what another
        // identity opened, or a "new" session under an id in use: either way, not a session
        // this client can continue.
        _ => (Route::Refuse, ResumeStatus::Unknown, 0),
    };
    let reply = ResumeReply {
        status,
        next_expected,
        window: crate::net::link::window(shared.config.link.recv_buffer),
    };
    Ok((route, Some(reply)))
}
