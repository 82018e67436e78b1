//! Small things every layer may use: the clock.

pub mod time;
