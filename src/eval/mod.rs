//! The pure, I/O-free logic behind `backlog-scaler eval` (issue 11).

pub mod formula;
pub mod replicas;
pub mod scaledobject;
