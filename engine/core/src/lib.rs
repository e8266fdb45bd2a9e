//! # passage-core
//!
//! The pure core of Passage: workflow definitions, the journey state machine (decide/apply
//! over events), effects as data, and the ports adapters implement. Nothing here performs
//! I/O, reads a clock or draws randomness by itself: time, randomness and keys are inputs.
//! `.ci/run` fails if tokio, sqlx, axum, serenity or reqwest ever enter this crate's tree.

pub mod chain;
pub mod definition;
pub mod funnel;
pub mod journey;
pub mod mask;
pub mod password;
pub mod personal;
pub mod ports;
pub mod reason;
pub mod roles;
pub mod secrets;
pub mod time;
