//! # passage-runtime
//!
//! Runs journeys on tokio: the [`Engine`] executes commands (load -> decide -> append events,
//! outbox entries and timers in one transaction), the [`Worker`] delivers effects after
//! commit and fires durable timers. Both are generic over the core's ports, so the same code
//! runs on SQLite, PostgreSQL or in tests.

mod clock;
mod engine;
mod erasure;
mod error;
mod funnel;
mod messages;
mod worker;

pub use clock::{Clock, ManualClock, OsEntropy, SystemClock};
pub use engine::{Actor, Engine, EngineOptions, Input, Outcome, ScanReport, TimelineEntry};
pub use erasure::{JourneyErased, RetentionReport, SubjectErased};
pub use error::Error;
pub use funnel::compute_funnel;
pub use worker::{
    DELIVERY_MARGIN, DrainReport, Worker, WorkerOptions, delivery_budget, least_lease,
};
