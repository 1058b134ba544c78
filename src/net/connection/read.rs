//! The reading side: the reader task opens frames (outside the lock), hands them to the core,
//! delivers messages, channel events and ACKs, and keeps the core's timers; when the connection
//! ends it lets the last frames out and releases the socket.
//!
//! It never stops reading to wait for the application: every message is within credit the
//! core granted (per channel), so a channel nobody reads holds its window and no more, and
//! the other channels, PINGs and ACKs keep moving.

use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tokio_util::codec::Decoder;

use super::Shared;
use crate::core::channel::{self, DEFAULT};
use crate::core::codec::FrameDecoder;
use crate::core::connection::Event;
use crate::core::message::Message;
use crate::error::{CloseInfo, Error, Result};
use crate::net::lock;

/// How reading stopped without an error.
enum Stop {
    /// The peer's CLOSE arrived: nothing more comes.
    PeerClosed,
    /// The connection was ended from elsewhere (aborted, a failed write, a sender's error).
    Ended,
}

/// The one timer the reader keeps: armed at the core's earliest deadline. It is only moved
/// earlier, never later, so it is reset rarely; waking early is harmless (the core then does
/// nothing and says when to come back).
struct Deadline {
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl Deadline {
    fn new() -> Self {
        Deadline {
            sleep: Box::pin(tokio::time::sleep(std::time::Duration::ZERO)),
            armed: None,
        }
    }

    fn arm(&mut self, at: Option<Instant>) {
        let Some(at) = at else { return };
        if self.armed.is_none_or(|armed| at < armed) {
            self.sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(at));
            self.armed = Some(at);
        }
    }

    /// Resolves when the armed deadline passes (never, when none is armed).
    async fn passed(&mut self) {
        if self.armed.is_none() {
            return std::future::pending().await;
        }
        self.sleep.as_mut().await;
        self.armed = None;
    }
}

struct Reader<'a> {
    shared: &'a Arc<Shared>,
    rd: OwnedReadHalf,
    decoder: FrameDecoder,
    /// Read from the socket, not yet opened. Bound: about one frame (2 + 65,535 B) beyond the read
    /// reserve (256 KiB), whatever the peer sends: nothing is read while a message waits for
    /// room in the mailbox. A message being reassembled is the decoder's, within the limit we
    /// announced (M16).
    buf: BytesMut,
    deadline: Deadline,
    /// The events one frame made (at most two), taken under the lock, handled outside it.
    events: Vec<Event>,
    /// Channels ended under the lock, kept until it is released (see `end_channels_now`).
    ended: Vec<Arc<super::channels::Slot>>,
}

impl Reader<'_> {
    /// Read, open and hand over frames until nothing more is read.
    async fn read(&mut self) -> Result<Stop> {
        let cancel = self.shared.cancel.clone();
        self.rearm();
        loop {
            let frame = self.decoder.decode(&mut self.buf);
            self.shared
                .stats
                .rekeys_received
                .store(self.decoder.opener.rekeys(), Relaxed);
            match frame {
                Ok(Some(frame)) => {
                    let now = Instant::now();
                    let mut events = std::mem::take(&mut self.events);
                    let mut ended = std::mem::take(&mut self.ended);
                    let (handled, deadline, reading) = self.shared.update(|st| {
                        let handled = st.conn.handle_frame(frame, now).map(|first| {
                            events.extend(first);
                            while let Some(e) = st.conn.poll_event() {
                                events.push(e);
                            }
                        });
                        // A channel's end reaches its handle in the same step as the core
                        // learns it: a send right after sees the reset, not a vanished channel.
                        self.shared.end_channels_now(&events, &mut ended);
                        (handled, st.conn.poll_timeout(), st.conn.is_reading())
                    });
                    ended.clear(); // their handles, released with no lock held
                    self.ended = ended;
                    self.deadline.arm(deadline);
                    let handled = handled.and_then(|()| {
                        for event in events.drain(..) {
                            match event {
                                Event::Channel(channel::Event::Message {
                                    channel: DEFAULT,
                                    message,
                                    credit,
                                }) => {
                                    if !self.deliver(message, credit) {
                                        return Ok(false);
                                    }
                                }
                                Event::Channel(e) => self.shared.channel_event(e),
                                Event::Acked(next_expected) => self.acked(next_expected)?,
                            }
                        }
                        Ok(true)
                    });
                    self.events = events;
                    if !handled? {
                        return Ok(Stop::Ended);
                    }
                    if !reading {
                        return Ok(Stop::PeerClosed);
                    }
                }
                Ok(None) => {
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return Ok(Stop::Ended),
                        _ = self.shared.timers.notified() => self.rearm(),
                        _ = self.deadline.passed() => self.timeout()?,
                        read = self.rd.read_buf(&mut self.buf) => match read {
                            Ok(0) => {
                                self.shared.update(|st| st.conn.handle_eof())?;
                                return Ok(Stop::PeerClosed);
                            }
                            Ok(_) => {}
                            Err(e) => return Err(self.fail(Error::Io(e))),
                        },
                    }
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    fn fail(&self, err: Error) -> Error {
        self.shared.update(|st| st.conn.fail(err))
    }

    fn rearm(&mut self) {
        let at = self.shared.lock().conn.poll_timeout();
        self.deadline.arm(at);
    }

    fn timeout(&mut self) -> Result<()> {
        let now = Instant::now();
        let (r, at) = self.shared.update(|st| {
            let r = st.conn.handle_timeout(now);
            (r, st.conn.poll_timeout())
        });
        self.deadline.arm(at);
        r
    }

    fn acked(&self, next_expected: u64) -> Result<()> {
        let handled = match lock(&self.shared.ack_handler).as_ref() {
            Some(handler) => handler(next_expected),
            None => Ok(()), // unreachable: the gate opens with the handler's lock held
        };
        handled.map_err(|e| self.fail(e))
    }

    /// Hand a default-channel message to the application. False when the connection ended
    /// meanwhile. Its queue has no room limit of its own: what it can hold is the credit the
    /// core granted.
    fn deliver(&mut self, m: Message, credit: u64) -> bool {
        let len = m.len();
        if self.shared.inbound.try_push(m, credit as usize).is_err() {
            return false;
        }
        let stats = &self.shared.stats;
        stats.messages_received.fetch_add(1, Relaxed);
        stats.bytes_received.fetch_add(len as u64, Relaxed);
        true
    }
}

/// The reader task. Either side ending in error ends the connection: the outcome is recorded
/// once (by the core), the other task is stopped, pending senders are woken, and received
/// messages already queued still drain to the application.
pub(super) async fn run(
    shared: Arc<Shared>,
    rd: OwnedReadHalf,
    decoder: FrameDecoder,
    mut writer: JoinHandle<()>,
    finished: watch::Sender<bool>,
    on_done: Option<Box<dyn FnOnce() + Send>>,
) {
    let mut reader = Reader {
        shared: &shared,
        rd,
        decoder,
        buf: BytesMut::new(),
        deadline: Deadline::new(),
        events: Vec::with_capacity(2),
        ended: Vec::new(),
    };
    let stopped = reader.read().await;
    let close_timeout = shared.config.close_timeout;
    let writer_done = match stopped {
        Err(e) => {
            // The peer broke the protocol over an intact channel: our CLOSE tells it why
            // before the FIN, within the close timeout (after a tag failure nothing is sent).
            let told = shared.lock().conn.failed_with_close()
                && tokio::time::timeout(close_timeout, &mut writer)
                    .await
                    .is_ok();
            shared.finish(e.to_close_info());
            told
        }
        Ok(Stop::PeerClosed) => {
            // Orderly end: the echo goes out within the close timeout; our own CLOSE, within
            // what is left of its deadline.
            let deadline = shared.lock().conn.close_deadline();
            let deadline = deadline.map_or_else(
                || tokio::time::Instant::now() + close_timeout,
                tokio::time::Instant::from_std,
            );
            let flushed = tokio::time::timeout_at(deadline, &mut writer).await.is_ok();
            shared.finish(CloseInfo::abnormal("the writer did not finish in time"));
            flushed
        }
        Ok(Stop::Ended) => false,
    };
    shared.cancel.cancel();
    drop(reader); // the reading half: with the writing half gone too, the socket closes
    if !writer_done {
        let _ = writer.await;
    }
    let _ = finished.send(true);
    if let Some(f) = on_done {
        f();
    }
}
