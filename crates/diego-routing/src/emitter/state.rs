//! What the emitter sends and when, without IO: [`EmitterState`] is told what happened (a
//! new table, a router's greeting, a reconnect, the time) and answers with the messages to
//! publish. The NATS shell (`nats.rs`) only feeds it and publishes its answers.
//!
//! | what happened                  | what is sent                                             |
//! |--------------------------------|----------------------------------------------------------|
//! | a new table                    | registers for new or changed registrations, then unregisters for gone ones (each cached for repeats; a register cancels a cached unregister of its key) |
//! | the broadcast timer is due     | a register for every registration; the timer restarts    |
//! | a cached unregister is due     | that unregister again                                    |
//! | a `router.start`               | the interval it names; the whole table at once (the router starts empty) |
//! | an answer to `router.greet`    | the interval it names; nothing else (that router has the routes) |
//! | (re)connected to NATS          | the whole table and every cached unregister (what was published while away is lost) |

use std::time::Duration;

use tokio::time::Instant;

use super::message::RouterGreeting;
use super::schedule::BroadcastSchedule;
use super::unregistrations::UnregisterCache;
use crate::table::{diff_registrations, Registration};

/// The NATS subject a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    Register,
    Unregister,
}

impl Subject {
    pub fn as_str(self) -> &'static str {
        match self {
            Subject::Register => super::message::REGISTER,
            Subject::Unregister => super::message::UNREGISTER,
        }
    }
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub subject: Subject,
    pub registration: Registration,
}

/// The intervals the emitter works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Full re-registration interval until a router names one.
    pub register_interval: Duration,
    /// Time between repeats of an unregistration.
    pub unregister_interval: Duration,
    /// Repeats of an unregistration after its first send.
    pub unregister_repeats: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            register_interval: super::schedule::DEFAULT_REGISTER_INTERVAL,
            unregister_interval: super::unregistrations::DEFAULT_REPEAT_INTERVAL,
            unregister_repeats: super::unregistrations::DEFAULT_REPEATS,
        }
    }
}

/// Where the emitter is: what it last emitted, the unregistrations to repeat, the timer.
#[derive(Debug, Clone)]
pub struct EmitterState {
    emitted: Vec<Registration>,
    unregistrations: UnregisterCache,
    schedule: BroadcastSchedule,
}

fn all(subject: Subject, rs: impl IntoIterator<Item = Registration>) -> impl Iterator<Item = Outgoing> {
    rs.into_iter().map(move |registration| Outgoing {
        subject,
        registration,
    })
}

impl EmitterState {
    /// `r` is a random number in `[0, 1]` for the timer's jitter (here and below).
    pub fn new(timing: Timing, now: Instant, r: f64) -> Self {
        EmitterState {
            emitted: Vec::new(),
            unregistrations: UnregisterCache::new(timing.unregister_interval, timing.unregister_repeats),
            schedule: BroadcastSchedule::new(timing.register_interval, now, r),
        }
    }

    /// The table is now `table`: what to send to move routers from the last one to it.
    pub fn table(&mut self, table: Vec<Registration>, now: Instant) -> Vec<Outgoing> {
        let diff = diff_registrations(&self.emitted, &table);
        self.emitted = table;
        for r in &diff.register {
            self.unregistrations.registered(&r.key());
        }
        for r in &diff.unregister {
            self.unregistrations.unregistered(r, now);
        }
        // Registers first: a moved instance is reachable at its new address before the old
        // one goes.
        all(Subject::Register, diff.register)
            .chain(all(Subject::Unregister, diff.unregister))
            .collect()
    }

    /// What is due at `now`: the whole table when the timer is, and cached unregisters.
    pub fn tick(&mut self, now: Instant, r: f64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        if self.schedule.is_due(now) {
            out.extend(all(Subject::Register, self.emitted.iter().cloned()));
            self.schedule.sent(now, r);
        }
        out.extend(all(Subject::Unregister, self.unregistrations.due(now)));
        out
    }

    /// A router's greeting: `started` for a `router.start` (the router has no routes yet),
    /// not for an answer to `router.greet`.
    pub fn greeted(
        &mut self,
        greeting: RouterGreeting,
        started: bool,
        now: Instant,
        r: f64,
    ) -> Vec<Outgoing> {
        self.schedule.greeted(greeting, now, r);
        if !started {
            return Vec::new();
        }
        self.schedule.sent(now, r);
        all(Subject::Register, self.emitted.iter().cloned()).collect()
    }

    /// (Re)connected to NATS: everything again, registers then the cached unregisters (not
    /// counted as repeats).
    pub fn connected(&mut self, now: Instant, r: f64) -> Vec<Outgoing> {
        self.schedule.sent(now, r);
        all(Subject::Register, self.emitted.iter().cloned())
            .chain(all(Subject::Unregister, self.unregistrations.pending().cloned()))
            .collect()
    }

    /// When [`EmitterState::tick`] next has something to send.
    pub fn next_wake(&self) -> Instant {
        match self.unregistrations.next_due() {
            Some(t) => t.min(self.schedule.next()),
            None => self.schedule.next(),
        }
    }

    /// Registrations in the table last emitted.
    pub fn registrations(&self) -> usize {
        self.emitted.len()
    }

    /// Unregistrations waiting to be sent again.
    pub fn unregistrations_cached(&self) -> usize {
        self.unregistrations.len()
    }

    /// The full re-registration interval in force.
    pub fn register_interval(&self) -> Duration {
        self.schedule.interval()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(port: u32, since: i64) -> Registration {
        super::super::test_registration(port, since)
    }

    /// `R1` = register port 1, `U2` = unregister port 2.
    fn show(out: &[Outgoing]) -> Vec<String> {
        out.iter()
            .map(|o| {
                let s = match o.subject {
                    Subject::Register => "R",
                    Subject::Unregister => "U",
                };
                format!("{s}{}", o.registration.endpoint.port)
            })
            .collect()
    }

    enum Step {
        Table(Vec<Registration>),
        Tick,
        Start(u64),
        GreetReply(u64),
        Connected,
    }

    #[test]
    fn what_is_sent_when() {
        use Step::*;
        let t0 = Instant::now();
        let timing = Timing {
            register_interval: Duration::from_secs(20),
            unregister_interval: Duration::from_secs(30),
            unregister_repeats: 2,
        };
        let mut state = EmitterState::new(timing, t0, 0.0);
        // (at second, what happened, what is sent, registrations held, unregistrations cached)
        let steps: Vec<(u64, Step, Vec<&str>, usize, usize)> = vec![
            (0, Tick, vec![], 0, 0),
            (1, Table(vec![reg(1, 1), reg(2, 1)]), vec!["R1", "R2"], 2, 0),
            (2, Table(vec![reg(1, 1), reg(2, 1)]), vec![], 2, 0),
            // Changed in a field other than the key: registered again.
            (3, Table(vec![reg(1, 1), reg(2, 5)]), vec!["R2"], 2, 0),
            (5, Table(vec![reg(1, 1), reg(3, 1)]), vec!["R3", "U2"], 2, 1),
            (19, Tick, vec![], 2, 1),
            // The timer (20 s from the start, jitter 0) sends the whole table.
            (20, Tick, vec!["R1", "R3"], 2, 1),
            // The unregister of 2 repeats 30 s after it was sent ...
            (35, Tick, vec!["U2"], 2, 1),
            (40, Tick, vec!["R1", "R3"], 2, 1),
            // ... and is cancelled when 2 is registered again.
            (41, Table(vec![reg(1, 1), reg(2, 1), reg(3, 1)]), vec!["R2"], 3, 0),
            (59, Tick, vec![], 3, 0),
            (60, Tick, vec!["R1", "R2", "R3"], 3, 0),
            // A router answering router.greet asks for 5 s: counted from now, nothing sent.
            (66, GreetReply(5), vec![], 3, 0),
            (70, Tick, vec![], 3, 0),
            (71, Tick, vec!["R1", "R2", "R3"], 3, 0),
            // A router that just started gets the whole table at once.
            (72, Start(5), vec!["R1", "R2", "R3"], 3, 0),
            (76, Tick, vec![], 3, 0),
            (77, Table(vec![reg(1, 1)]), vec!["U2", "U3"], 1, 2),
            // Reconnected: the table and the cached unregisters, at once.
            (78, Connected, vec!["R1", "U2", "U3"], 1, 2),
            (82, Tick, vec![], 1, 2),
            (83, Tick, vec!["R1"], 1, 2),
            // Two repeats each, 30 s after the first send, then they are dropped.
            (106, Tick, vec!["R1"], 1, 2),
            (107, Tick, vec!["U2", "U3"], 1, 2),
            (137, Tick, vec!["R1", "U2", "U3"], 1, 0),
            (167, Tick, vec!["R1"], 1, 0),
        ];
        for (at, step, want, held, cached) in steps {
            let now = t0 + Duration::from_secs(at);
            let greeting = |secs| RouterGreeting {
                register_interval: Duration::from_secs(secs),
                prune_threshold: None,
            };
            let out = match step {
                Table(t) => state.table(t, now),
                Tick => state.tick(now, 0.0),
                Start(secs) => state.greeted(greeting(secs), true, now, 0.0),
                GreetReply(secs) => state.greeted(greeting(secs), false, now, 0.0),
                Connected => state.connected(now, 0.0),
            };
            assert_eq!(show(&out), want, "at {at} s");
            assert_eq!(state.registrations(), held, "held at {at} s");
            assert_eq!(state.unregistrations_cached(), cached, "cached at {at} s");
        }
        assert_eq!(state.register_interval(), Duration::from_secs(5));
    }

    #[test]
    fn the_next_wake_is_the_sooner_of_the_timer_and_a_repeat() {
        let t0 = Instant::now();
        let timing = Timing {
            register_interval: Duration::from_secs(20),
            unregister_interval: Duration::from_secs(3),
            unregister_repeats: 1,
        };
        let mut state = EmitterState::new(timing, t0, 0.0);
        assert_eq!(state.next_wake(), t0 + Duration::from_secs(20));
        state.table(vec![reg(1, 1)], t0);
        state.table(vec![], t0 + Duration::from_secs(1));
        assert_eq!(state.next_wake(), t0 + Duration::from_secs(4));
        let out = state.tick(t0 + Duration::from_secs(4), 0.0);
        assert_eq!(show(&out), ["U1"]);
        assert_eq!(state.next_wake(), t0 + Duration::from_secs(20));
    }
}
