//! The leader's right to act, as the replica's own clock sees it: granted until a deadline by
//! each lease renewal, revoked for good when the lease is lost. Checked before every action
//! outside the database (starting or stopping an attempt, CreateFleet, TerminateInstances), so a
//! leader that was paused past its lease (SIGSTOP, a long GC-like stall, a partition) does not
//! act on waking, even before it has heard that another replica took over. Writes to the
//! database are fenced there as well, by epoch (see `store::ha`).

use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Default)]
pub struct Fence {
    state: Mutex<State>,
}

#[derive(Debug, Default, Clone, Copy)]
enum State {
    /// A single server: nothing else can lead, so the fence never closes.
    #[default]
    Open,
    /// Leader until `until` (local monotonic clock), unless renewed.
    Until(Instant),
    /// Follower: no action outside the database.
    Closed,
    /// A leader that lost its lease: never again in this process.
    Revoked,
}

/// Why an action was refused: this replica may not act as the leader now.
#[derive(Debug, Clone, thiserror::Error)]
#[error("this replica is not the leader (its lease lapsed or was taken over): action refused")]
pub struct Fenced;

impl Fence {
    /// A fence that is always open (one server per store).
    pub fn open() -> Fence {
        Fence::default()
    }

    /// A replica's fence: closed until it wins the lease.
    pub fn closed() -> Fence {
        Fence {
            state: Mutex::new(State::Closed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lease holds until `until`; a revoked fence stays revoked.
    pub fn grant_until(&self, until: Instant) {
        let mut s = self.lock();
        if !matches!(*s, State::Open | State::Revoked) {
            *s = State::Until(until);
        }
    }

    /// The lease is gone: nothing more may be done.
    pub fn revoke(&self) {
        let mut s = self.lock();
        if !matches!(*s, State::Open) {
            *s = State::Revoked;
        }
    }

    /// How long the grant still runs; `None` for an open fence, zero once shut.
    pub fn remaining(&self) -> Option<std::time::Duration> {
        match *self.lock() {
            State::Open => None,
            State::Until(t) => Some(t.saturating_duration_since(Instant::now())),
            _ => Some(std::time::Duration::ZERO),
        }
    }

    /// Whether this replica may act now.
    pub fn check(&self) -> Result<(), Fenced> {
        match *self.lock() {
            State::Open => Ok(()),
            State::Until(t) if Instant::now() < t => Ok(()),
            _ => Err(Fenced),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_lapsed_grant_refuses_and_a_revoked_fence_stays_shut() {
        let f = Fence::closed();
        assert!(f.check().is_err(), "a follower may not act");
        f.grant_until(Instant::now() + Duration::from_secs(60));
        assert!(f.check().is_ok());
        f.grant_until(Instant::now() - Duration::from_millis(1));
        assert!(f.check().is_err(), "a lease past its deadline refuses");
        f.revoke();
        f.grant_until(Instant::now() + Duration::from_secs(60));
        assert!(f.check().is_err(), "a revoked fence is not opened again");
        assert!(Fence::open().check().is_ok());
        let o = Fence::open();
        o.revoke();
        assert!(o.check().is_ok(), "a single server's fence never closes");
    }
}
