//! How a link redials.

use std::time::Duration;

use rand::Rng;

use crate::error::{Error, Result};

/// How to redial. Delays grow from `initial_delay` by `multiplier` up to `max_delay`, each
/// multiplied by a random factor in [1 - jitter, 1 + jitter].
#[derive(Clone, Debug)]
pub struct ReconnectPolicy {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub multiplier: f64,
    pub jitter: f64,
    /// Failed dials in a row before giving up (None: never give up).
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: None,
        }
    }
}

impl ReconnectPolicy {
    /// The largest `multiplier`: beyond it the second delay is already `max_delay` for any
    /// sensible `initial_delay`, and a typo (1e9 for 1.9) would go unnoticed.
    pub const MAX_MULTIPLIER: f64 = 1e6;

    /// Each message starts with the field it is about (the Python layer names its source).
    pub fn validate(&self) -> Result<()> {
        if self.initial_delay > self.max_delay {
            return Err(Error::config("initial_delay must not exceed max_delay"));
        }
        if !(1.0..=Self::MAX_MULTIPLIER).contains(&self.multiplier) {
            return Err(Error::config(format!(
                "multiplier must be between 1 and 1e6, got {}",
                self.multiplier
            )));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::config(format!(
                "jitter must be between 0 and 1, got {}",
                self.jitter
            )));
        }
        if self.max_attempts == Some(0) {
            return Err(Error::config(format!(
                "max_attempts must be between 1 and {}, got 0",
                u32::MAX
            )));
        }
        Ok(())
    }

    /// The delay before redial number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.initial_delay.as_secs_f64()
            * self
                .multiplier
                .powi(attempt.saturating_sub(1).min(64) as i32);
        let capped = base.min(self.max_delay.as_secs_f64());
        let factor = 1.0 + self.jitter * (rand::rng().random::<f64>() * 2.0 - 1.0);
        Duration::from_secs_f64((capped * factor).max(0.0))
    }
}
