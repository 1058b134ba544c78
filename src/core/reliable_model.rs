//! Model check of exactly-once delivery: the real [`Outbox`], [`Numbering`] and [`Delivered`]
//! driven through arbitrary interleavings of what the network layer lets happen to one direction
//! of a session.
//!
//! The network is modelled per connection as two FIFO queues (data to the receiver, ACKs to the
//! sender) and a receive mailbox. A cut keeps an arbitrary prefix of what was in flight (it may
//! still arrive, at any later moment: late frames and late ACKs) and drops everything sent on
//! the connection afterwards. A new connection carries the number the receiver announced when it
//! was dialled; each side attaches connections in order, possibly skipping one (a handshake that
//! completed on one side only), and possibly long after the other side did. The receiver reads
//! its connections oldest first, numbering a connection's messages from its announced number,
//! and acknowledges on its newest connection, as `net::link` does.
//!
//! Properties, checked after every step: no side reports a protocol error, every delivered
//! message is the one its number names, in order, once; and after the network heals, everything
//! pushed is delivered and the outbox is empty.
//!
//! One rule of `net::link` makes this hold: the sender applies the ACKs of a connection only once
//! it has attached it (ACKs arriving earlier wait). The last test shows that without the rule the
//! model finds a schedule that breaks a session.

use std::collections::VecDeque;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRng, TestRunner};

use super::reliable::{Delivered, Numbering, Outbox};

#[derive(Debug, Clone)]
enum Step {
    /// The application sends a message.
    Push,
    /// The sender hands its next message to its connection.
    Transmit,
    /// One data frame arrives in the receiver's mailbox of a connection (chosen by index).
    Arrive(usize),
    /// The receiving application takes the next message.
    Take,
    /// One ACK reaches the sender on a connection (chosen by index).
    AckArrives(usize),
    /// The newest connection breaks, keeping a prefix of what was in flight each way.
    Cut { keep_data: usize, keep_acks: usize },
    /// A new connection, after the newest one broke.
    Dial,
    /// The sender attaches a connection newer than its current one (chosen by index).
    SenderAttach(usize),
    /// The receiver attaches a connection newer than its current one (chosen by index).
    ReceiverAttach(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Push),
        4 => Just(Step::Transmit),
        4 => any::<usize>().prop_map(Step::Arrive),
        4 => Just(Step::Take),
        3 => any::<usize>().prop_map(Step::AckArrives),
        1 => (0..8usize, 0..4usize).prop_map(|(keep_data, keep_acks)| Step::Cut {
            keep_data,
            keep_acks
        }),
        1 => Just(Step::Dial),
        1 => any::<usize>().prop_map(Step::SenderAttach),
        1 => any::<usize>().prop_map(Step::ReceiverAttach),
    ]
}

fn schedule() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(step(), 1..300)
}

fn payload(seq: u64) -> Bytes {
    Bytes::copy_from_slice(&seq.to_be_bytes())
}

struct Conn {
    /// What the receiver announced when this connection was dialled.
    announced: u64,
    data: VecDeque<Bytes>,
    acks: VecDeque<u64>,
    mailbox: VecDeque<Bytes>,
    cut: bool,
    sender_attached: bool,
    receiver_attached: bool,
}

#[derive(Default, Debug, Clone, Copy)]
struct Reached {
    resumes: u32,
    duplicates: u32,
    /// ACKs applied from a connection older than the sender's current one.
    late_acks: u32,
    /// Messages delivered from an older connection after a newer one was dialled.
    drained_after_dial: u32,
}

struct World {
    /// The sender applies a connection's ACKs only once it attached that connection.
    acks_after_attach: bool,
    conns: Vec<Conn>,
    outbox: Outbox,
    pushed: u64,
    sender_conn: Option<usize>,
    delivered: Delivered,
    reading: VecDeque<(usize, Numbering)>,
    receiver_conn: Option<usize>,
    got: u64,
    reached: Reached,
}

fn pick(candidates: &[usize], choice: usize) -> Option<usize> {
    (!candidates.is_empty()).then(|| candidates[choice % candidates.len()])
}

impl World {
    fn new(acks_after_attach: bool) -> World {
        let mut w = World {
            acks_after_attach,
            conns: Vec::new(),
            outbox: Outbox::default(),
            pushed: 0,
            sender_conn: None,
            delivered: Delivered::default(),
            reading: VecDeque::new(),
            receiver_conn: None,
            got: 0,
            reached: Reached::default(),
        };
        w.dial();
        w
    }

    fn dial(&mut self) {
        if self.conns.last().is_none_or(|c| c.cut) {
            self.conns.push(Conn {
                announced: self.delivered.next_expected(),
                data: VecDeque::new(),
                acks: VecDeque::new(),
                mailbox: VecDeque::new(),
                cut: false,
                sender_attached: false,
                receiver_attached: false,
            });
        }
    }

    fn step(&mut self, step: &Step) -> Result<(), String> {
        match *step {
            Step::Push => {
                self.outbox.push(payload(self.pushed), 1);
                self.pushed += 1;
            }
            Step::Transmit => self.transmit(),
            Step::Arrive(choice) => {
                let ready: Vec<usize> = (0..self.conns.len())
                    .filter(|&i| !self.conns[i].data.is_empty())
                    .collect();
                if let Some(i) = pick(&ready, choice) {
                    let c = &mut self.conns[i];
                    let m = c.data.pop_front().expect("not empty");
                    c.mailbox.push_back(m);
                }
            }
            Step::Take => self.take()?,
            Step::AckArrives(choice) => {
                let ready: Vec<usize> = (0..self.conns.len())
                    .filter(|&i| {
                        let c = &self.conns[i];
                        !c.acks.is_empty() && (c.sender_attached || !self.acks_after_attach)
                    })
                    .collect();
                if let Some(i) = pick(&ready, choice) {
                    self.ack_arrives(i)?;
                }
            }
            Step::Cut {
                keep_data,
                keep_acks,
            } => {
                let c = self.conns.last_mut().expect("one connection at least");
                if !c.cut {
                    c.data.truncate(keep_data);
                    c.acks.truncate(keep_acks);
                    c.cut = true;
                }
            }
            Step::Dial => self.dial(),
            Step::SenderAttach(choice) => {
                let newer: Vec<usize> = (0..self.conns.len())
                    .filter(|&i| self.sender_conn.is_none_or(|s| i > s))
                    .collect();
                if let Some(i) = pick(&newer, choice) {
                    self.sender_attach(i)?;
                }
            }
            Step::ReceiverAttach(choice) => {
                let newer: Vec<usize> = (0..self.conns.len())
                    .filter(|&i| self.receiver_conn.is_none_or(|r| i > r))
                    .collect();
                if let Some(i) = pick(&newer, choice) {
                    self.receiver_attach(i);
                }
            }
        }
        Ok(())
    }

    fn transmit(&mut self) {
        let Some(i) = self.sender_conn else { return };
        let Some(m) = self.outbox.next_to_transmit().cloned() else {
            return;
        };
        let c = &mut self.conns[i];
        if !c.cut {
            c.data.push_back(m);
        }
        self.outbox.mark_transmitted();
    }

    fn ack_arrives(&mut self, i: usize) -> Result<(), String> {
        let n = self.conns[i].acks.pop_front().expect("not empty");
        if self.sender_conn.is_some_and(|s| i < s) {
            self.reached.late_acks += 1;
        }
        self.outbox
            .ack(n)
            .map(drop)
            .map_err(|e| format!("sender: {e}"))
    }

    fn sender_attach(&mut self, i: usize) -> Result<(), String> {
        let c = &mut self.conns[i];
        c.sender_attached = true;
        self.sender_conn = Some(i);
        self.reached.resumes += 1;
        self.outbox
            .resume_at(c.announced)
            .map(drop)
            .map_err(|e| format!("sender attaching connection {i}: {e}"))
    }

    fn receiver_attach(&mut self, i: usize) {
        let c = &mut self.conns[i];
        c.receiver_attached = true;
        self.reading
            .push_back((i, Numbering::starting_at(c.announced)));
        self.receiver_conn = Some(i);
        // Delivered while this connection was being set up: acknowledged on the old one only.
        let delivered = self.delivered.next_expected();
        if delivered > c.announced && !c.cut {
            c.acks.push_back(delivered);
        }
    }

    /// As `Link::try_recv`: the oldest connection first, duplicates skipped, the ACK on the
    /// newest connection.
    fn take(&mut self) -> Result<(), String> {
        loop {
            let Some((i, numbering)) = self.reading.front_mut() else {
                return Ok(());
            };
            let i = *i;
            let c = &mut self.conns[i];
            let Some(m) = c.mailbox.pop_front() else {
                let ended = c.cut && c.data.is_empty();
                if ended && self.reading.len() > 1 {
                    self.reading.pop_front();
                    continue;
                }
                return Ok(());
            };
            let seq = numbering.assign();
            if m != payload(seq) {
                return Err(format!(
                    "connection {i} numbered message {} as {seq}",
                    u64::from_be_bytes(m[..].try_into().expect("8 bytes"))
                ));
            }
            let fresh = self
                .delivered
                .accept(seq)
                .map_err(|e| format!("receiver: {e}"))?;
            if !fresh {
                self.reached.duplicates += 1;
                continue;
            }
            if i + 1 < self.conns.len() {
                self.reached.drained_after_dial += 1;
            }
            self.got += 1;
            let current = self.receiver_conn.expect("reading a connection");
            let c = &mut self.conns[current];
            if !c.cut {
                c.acks.push_back(self.delivered.next_expected());
            }
            return Ok(());
        }
    }

    /// The network heals: one live connection that both sides attach, then everything runs to
    /// completion.
    fn heal(&mut self) -> Result<(), String> {
        self.dial();
        let last = self.conns.len() - 1;
        if self.sender_conn != Some(last) {
            self.sender_attach(last)?;
        }
        if self.receiver_conn != Some(last) {
            self.receiver_attach(last);
        }
        loop {
            let before = (self.got, self.outbox.len(), self.in_flight());
            while self.outbox.next_to_transmit().is_some() {
                self.transmit();
            }
            for c in &mut self.conns {
                c.mailbox.extend(c.data.drain(..));
            }
            for _ in 0..=self.pushed {
                self.take()?;
            }
            for i in 0..self.conns.len() {
                let c = &self.conns[i];
                if c.sender_attached || !self.acks_after_attach {
                    while !self.conns[i].acks.is_empty() {
                        self.ack_arrives(i)?;
                    }
                }
            }
            if (self.got, self.outbox.len(), self.in_flight()) == before {
                break;
            }
        }
        if self.got != self.pushed || !self.outbox.is_empty() {
            return Err(format!(
                "after healing: {} of {} messages delivered, {} unacknowledged",
                self.got,
                self.pushed,
                self.outbox.len()
            ));
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.conns
            .iter()
            .map(|c| c.data.len() + c.acks.len() + c.mailbox.len())
            .sum()
    }
}

fn run(steps: &[Step], acks_after_attach: bool) -> Result<Reached, String> {
    let mut world = World::new(acks_after_attach);
    for (n, s) in steps.iter().enumerate() {
        world
            .step(s)
            .map_err(|e| format!("step {n} ({s:?}): {e}"))?;
    }
    world.heal()?;
    Ok(world.reached)
}

proptest! {
    #![proptest_config(Config { cases: 4000, ..Config::default() })]

    #[test]
    fn every_message_is_delivered_once_in_order_across_any_interleaving(steps in schedule()) {
        if let Err(e) = run(&steps, true) {
            return Err(TestCaseError::fail(e));
        }
    }
}

fn deterministic_runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    TestRunner::new_with_rng(config, rng)
}

/// The schedules reach the states that matter: otherwise the property above proves little.
#[test]
fn the_schedules_reach_resends_duplicates_and_late_acks() {
    let total = std::cell::Cell::new(Reached::default());
    let cases = std::cell::Cell::new(0u32);
    let mut runner = deterministic_runner(2000);
    runner
        .run(&schedule(), |steps| {
            let r = run(&steps, true).map_err(TestCaseError::fail)?;
            let mut t = total.get();
            t.resumes += r.resumes;
            t.duplicates += r.duplicates;
            t.late_acks += r.late_acks;
            t.drained_after_dial += r.drained_after_dial;
            total.set(t);
            cases.set(cases.get() + 1);
            Ok(())
        })
        .expect("the property holds");
    let (total, cases) = (total.get(), cases.get());
    // Counted over the runner's cases only: shrinking does not happen when nothing fails.
    assert!(cases >= 2000, "{cases}");
    assert!(total.resumes > 4000, "{total:?}");
    assert!(total.duplicates > 500, "{total:?}");
    assert!(total.late_acks > 100, "{total:?}");
    assert!(total.drained_after_dial > 500, "{total:?}");
}

/// Without the rule (ACKs of a connection applied before the sender attached it), an ACK for
/// messages the receiver took from an older connection after announcing where the new one
/// starts moves the sender past the new connection's start: the model finds it.
#[test]
fn acks_applied_before_attach_break_a_session() {
    let mut runner = deterministic_runner(20_000);
    let found = runner.run(&schedule(), |steps| {
        run(&steps, false).map(drop).map_err(TestCaseError::fail)
    });
    let Err(proptest::test_runner::TestError::Fail(reason, steps)) = found else {
        panic!("no failing schedule found: {found:?}");
    };
    println!("{} steps: {reason}", steps.len());
}
