//! Small things every layer may use: the clock, the leader fence.

pub mod fence;
pub mod http;
pub mod time;
