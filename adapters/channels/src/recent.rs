//! Receipts of recent sends, by idempotency key.
//!
//! The worker delivers at least once: when recording `MessageDelivered` fails after the
//! provider accepted a message (the store was briefly down), the same effect comes back
//! with the same idempotency key. SMTP and Twilio's Messages/Calls APIs have no idempotency
//! key of their own, so without this the person would get a second SMS or a second call
//! (and the deployment would pay twice, R18). Within one process the earlier receipt is
//! returned instead. After a crash or on another node a duplicate is still possible; the
//! journey accepts only one code or confirmation, so a duplicate costs money, not security.

use passage_core::ports::Receipt;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use uuid::Uuid;

/// How many receipts are kept; the oldest are forgotten first. A worker retries an effect
/// within minutes, long before this many other messages were sent.
const CAPACITY: usize = 4096;

#[derive(Debug, Default)]
struct Entries {
    by_key: HashMap<Uuid, Receipt>,
    /// Insertion order, oldest first.
    order: VecDeque<Uuid>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct RecentReceipts {
    inner: Arc<Mutex<Entries>>,
}

impl RecentReceipts {
    pub(crate) fn get(&self, key: Uuid) -> Option<Receipt> {
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        guard.by_key.get(&key).cloned()
    }

    pub(crate) fn put(&self, key: Uuid, receipt: Receipt) {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Entries { by_key, order } = &mut *guard;
        if by_key.insert(key, receipt).is_none() {
            order.push_back(key);
        }
        while order.len() > CAPACITY {
            if let Some(old) = order.pop_front() {
                by_key.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_receipts() {
        let r = RecentReceipts::default();
        let first = Uuid::new_v4();
        r.put(
            first,
            Receipt {
                provider_ref: "a".into(),
            },
        );
        assert_eq!(r.get(first).unwrap().provider_ref, "a");
        for _ in 0..CAPACITY {
            r.put(
                Uuid::new_v4(),
                Receipt {
                    provider_ref: "b".into(),
                },
            );
        }
        assert!(r.get(first).is_none());
    }
}
