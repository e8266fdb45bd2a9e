//! The hash chain over the global event log.
//!
//! Each stored event carries `hash = SHA-256(prev_hash || canonical(event))`, where
//! `prev_hash` is the hash of the event at the previous global position (all zeroes before
//! position 1). Editing, deleting, inserting or reordering any stored event therefore breaks
//! the chain at the first position touched, which [`Verifier`] reports. The encoding is
//! length-prefixed so that no two different events share canonical bytes.

use crate::ports::{Hash, StoredEvent};
use crate::time::Timestamp;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Hash of "nothing before": the `prev_hash` of position 1.
pub const GENESIS: Hash = [0u8; 32];

/// The fields covered by the chain, borrowed from whatever holds them.
#[derive(Debug, Clone, Copy)]
pub struct ChainFields<'a> {
    pub position: u64,
    pub stream: Uuid,
    pub stream_version: u64,
    pub event_type: &'a str,
    pub schema_version: u16,
    pub payload: &'a str,
    pub metadata: &'a str,
    pub recorded_at: Timestamp,
    pub command_id: Uuid,
}

impl<'a> From<&'a StoredEvent> for ChainFields<'a> {
    fn from(e: &'a StoredEvent) -> Self {
        ChainFields {
            position: e.position,
            stream: e.stream.0,
            stream_version: e.stream_version,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            payload: &e.payload,
            metadata: &e.metadata,
            recorded_at: e.recorded_at,
            command_id: e.command_id,
        }
    }
}

/// `SHA-256(prev || canonical(fields))`.
pub fn event_hash(prev: &Hash, f: &ChainFields<'_>) -> Hash {
    let mut h = Sha256::new();
    h.update(b"passage-chain-v1");
    h.update(prev);
    h.update(f.position.to_be_bytes());
    h.update(f.stream.as_bytes());
    h.update(f.stream_version.to_be_bytes());
    for text in [f.event_type, f.payload, f.metadata] {
        h.update((text.len() as u64).to_be_bytes());
        h.update(text.as_bytes());
    }
    h.update(f.schema_version.to_be_bytes());
    h.update(f.recorded_at.as_millis().to_be_bytes());
    h.update(f.command_id.as_bytes());
    h.finalize().into()
}

pub fn to_hex(hash: &Hash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why the chain is broken at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainFault {
    /// The stored event's content no longer matches its hash (edited in place).
    ContentChanged,
    /// The event does not link to the one before it (deleted, inserted or reordered).
    LinkBroken,
    /// A position is missing from the global log (deleted).
    Missing { found: u64 },
}

impl std::fmt::Display for ChainFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainFault::ContentChanged => {
                f.write_str("the event's content does not match its stored hash (modified)")
            }
            ChainFault::LinkBroken => f.write_str(
                "the event does not link to the previous event's hash (removed, inserted or reordered)",
            ),
            ChainFault::Missing { found } => {
                write!(f, "the position is missing; the next stored event is at {found} (removed)")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPosition {
    pub position: u64,
    pub fault: ChainFault,
}

/// Verifies the log incrementally, page by page, in position order.
#[derive(Debug, Clone)]
pub struct Verifier {
    expected_position: u64,
    prev: Hash,
    checked: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    pub fn new() -> Self {
        Self {
            expected_position: 1,
            prev: GENESIS,
            checked: 0,
        }
    }

    /// A verifier that continues a chain: the next event must be at `position` and link to
    /// `prev` (an export that starts after position 1).
    pub fn resume(position: u64, prev: Hash) -> Self {
        Self {
            expected_position: position,
            prev,
            checked: 0,
        }
    }

    /// Checks the next event; stops at the first fault.
    pub fn check(&mut self, e: &StoredEvent) -> Result<(), BadPosition> {
        if e.position != self.expected_position {
            let fault = if e.position > self.expected_position {
                ChainFault::Missing { found: e.position }
            } else {
                ChainFault::LinkBroken
            };
            return Err(BadPosition {
                position: self.expected_position,
                fault,
            });
        }
        if e.prev_hash != self.prev {
            return Err(BadPosition {
                position: e.position,
                fault: ChainFault::LinkBroken,
            });
        }
        if event_hash(&e.prev_hash, &ChainFields::from(e)) != e.hash {
            return Err(BadPosition {
                position: e.position,
                fault: ChainFault::ContentChanged,
            });
        }
        self.prev = e.hash;
        self.expected_position += 1;
        self.checked += 1;
        Ok(())
    }

    /// Events verified so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// The hash of the last verified event (the head of the chain).
    pub fn head(&self) -> Hash {
        self.prev
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::JourneyId;

    fn chain(n: u64) -> Vec<StoredEvent> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|p| {
                let mut e = StoredEvent {
                    position: p,
                    stream: JourneyId(Uuid::from_u128(7)),
                    stream_version: p,
                    event_type: "JourneyStarted".into(),
                    schema_version: 1,
                    payload: format!("{{\"n\":{p}}}"),
                    metadata: "{}".into(),
                    recorded_at: Timestamp(p as i64),
                    command_id: Uuid::from_u128(p as u128),
                    prev_hash: prev,
                    hash: GENESIS,
                };
                e.hash = event_hash(&prev, &ChainFields::from(&e));
                prev = e.hash;
                e
            })
            .collect()
    }

    fn first_bad(events: &[StoredEvent]) -> Option<BadPosition> {
        let mut v = Verifier::new();
        events.iter().find_map(|e| v.check(e).err())
    }

    #[test]
    fn untouched_chain_verifies() {
        assert_eq!(first_bad(&chain(5)), None);
    }

    #[test]
    fn edited_payload_is_found() {
        let mut c = chain(5);
        c[2].payload = "{\"n\":4}".into();
        assert_eq!(first_bad(&c).unwrap().position, 3);
        assert_eq!(first_bad(&c).unwrap().fault, ChainFault::ContentChanged);
    }

    #[test]
    fn deleted_event_is_found() {
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(
            first_bad(&c),
            Some(BadPosition {
                position: 2,
                fault: ChainFault::Missing { found: 3 }
            })
        );
    }

    #[test]
    fn swapped_events_are_found() {
        let mut c = chain(5);
        // Swap contents but keep positions, as an UPDATE would.
        let (a, b) = (c[1].clone(), c[2].clone());
        c[1] = StoredEvent { position: 2, ..b };
        c[2] = StoredEvent { position: 3, ..a };
        assert_eq!(first_bad(&c).unwrap().position, 2);
    }
}
