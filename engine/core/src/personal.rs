//! Personal data in events, sealed under a key per journey so it can be erased by
//! destroying the key (crypto-shredding, ADR 0005).
//!
//! * Every journey has a random 32-byte [`DataKey`]. The store keeps it wrapped under a key
//!   derived from the deployment's secret ([`Keys::wrap_data_key`]); erasing the journey's
//!   personal data sets the stored key to NULL.
//! * The personal fields of events (masked address and phone, the address's pseudonym,
//!   delivery errors that may name a recipient) and of event metadata (client address, user
//!   agent) are written as `sealed:v1:<hex>` strings: a random 16-byte nonce, the value
//!   XORed with an HMAC-SHA-256 keystream, and a 16-byte HMAC tag. The chain hashes the
//!   sealed text, so destroying the key leaves every hash intact.
//! * Opening with no key (erased) gives [`ERASED`] in place of each sealed value; values that
//!   were never sealed (events written before this existed) read as they are.
//!
//! The nonce is random, never derived: a command retried after losing a race may seal a
//! different value at the same place in the stream, and two values must never share a
//! keystream.

use crate::journey::JourneyEvent;
use crate::secrets::{Entropy, Keys, hex, hmac, tags_equal, unhex};
use std::fmt;

/// What a sealed value reads as once its journey's key is destroyed.
pub const ERASED: &str = "[erased]";

const PREFIX: &str = "sealed:v1:";
const NONCE: usize = 16;
const TAG: usize = 16;

/// Why a stored value could not be opened although its key exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("a sealed value is malformed")]
    Malformed,
    #[error(
        "a sealed value does not authenticate under its journey's key (altered, or sealed under another key)"
    )]
    Tampered,
}

/// A journey's data key, with its encryption and authentication subkeys derived once.
#[derive(Clone)]
pub struct DataKey {
    raw: [u8; 32],
    enc: [u8; 32],
    mac: [u8; 32],
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl PartialEq for DataKey {
    fn eq(&self, other: &Self) -> bool {
        tags_equal(&self.raw, &other.raw)
    }
}

impl Eq for DataKey {}

impl DataKey {
    pub fn from_bytes(raw: [u8; 32]) -> Self {
        Self {
            raw,
            enc: hmac(&raw, &[b"passage/personal-data/enc/v1"]),
            mac: hmac(&raw, &[b"passage/personal-data/mac/v1"]),
        }
    }

    /// A fresh key from the caller's CSPRNG.
    pub fn generate(rng: &mut dyn Entropy) -> Self {
        let mut raw = [0u8; 32];
        rng.fill(&mut raw);
        Self::from_bytes(raw)
    }

    pub(crate) fn raw(&self) -> &[u8; 32] {
        &self.raw
    }
}

fn xor_keystream(enc: &[u8; 32], nonce: &[u8], data: &mut [u8]) {
    for (block, chunk) in data.chunks_mut(32).enumerate() {
        let ks = hmac(enc, &[nonce, &(block as u64).to_be_bytes()]);
        for (b, k) in chunk.iter_mut().zip(ks) {
            *b ^= k;
        }
    }
}

/// nonce ‖ ciphertext ‖ tag, the tag over `aad`, the nonce and the ciphertext.
pub(crate) fn seal_bytes(
    enc: &[u8; 32],
    mac: &[u8; 32],
    aad: &[u8],
    plain: &[u8],
    rng: &mut dyn Entropy,
) -> Vec<u8> {
    let mut nonce = [0u8; NONCE];
    rng.fill(&mut nonce);
    let mut out = Vec::with_capacity(NONCE + plain.len() + TAG);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    xor_keystream(enc, &nonce, &mut out[NONCE..]);
    let tag = hmac(mac, &[aad, &out]);
    out.extend_from_slice(&tag[..TAG]);
    out
}

pub(crate) fn open_bytes(
    enc: &[u8; 32],
    mac: &[u8; 32],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, OpenError> {
    if sealed.len() < NONCE + TAG {
        return Err(OpenError::Malformed);
    }
    let (body, tag) = sealed.split_at(sealed.len() - TAG);
    if !tags_equal(&hmac(mac, &[aad, body])[..TAG], tag) {
        return Err(OpenError::Tampered);
    }
    let (nonce, ciphertext) = body.split_at(NONCE);
    let mut plain = ciphertext.to_vec();
    xor_keystream(enc, nonce, &mut plain);
    Ok(plain)
}

/// Whether a stored value is sealed (as opposed to written before sealing existed).
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX)
}

/// Seals one value under the journey's key.
pub fn seal(key: &DataKey, value: &str, rng: &mut dyn Entropy) -> String {
    let sealed = seal_bytes(&key.enc, &key.mac, b"value", value.as_bytes(), rng);
    format!("{PREFIX}{}", hex(&sealed))
}

/// Opens one stored value: unsealed values come back as they are; with no key (erased)
/// a sealed value reads as [`ERASED`].
pub fn open(key: Option<&DataKey>, value: &str) -> Result<String, OpenError> {
    let Some(body) = value.strip_prefix(PREFIX) else {
        return Ok(value.to_owned());
    };
    let Some(key) = key else {
        return Ok(ERASED.to_owned());
    };
    let bytes = unhex(body).ok_or(OpenError::Malformed)?;
    let plain = open_bytes(&key.enc, &key.mac, b"value", &bytes)?;
    String::from_utf8(plain).map_err(|_| OpenError::Malformed)
}

fn seal_opt(key: &DataKey, v: &mut Option<String>, rng: &mut dyn Entropy) {
    if let Some(s) = v {
        *s = seal(key, s, rng);
    }
}

fn open_opt(key: Option<&DataKey>, v: &mut Option<String>) -> Result<(), OpenError> {
    if let Some(s) = v {
        *s = open(key, s)?;
    }
    Ok(())
}

/// The event as it is stored: its personal fields sealed. Events without personal data
/// come back unchanged.
pub fn seal_event(key: &DataKey, event: &JourneyEvent, rng: &mut dyn Entropy) -> JourneyEvent {
    let mut e = event.clone();
    match &mut e {
        JourneyEvent::EmailSubmitted {
            email_masked,
            phone_masked,
            subject,
            ..
        } => {
            *email_masked = seal(key, email_masked, rng);
            seal_opt(key, phone_masked, rng);
            seal_opt(key, subject, rng);
        }
        JourneyEvent::CodeIssued {
            destination_masked, ..
        }
        | JourneyEvent::CallPlaced {
            destination_masked, ..
        } => seal_opt(key, destination_masked, rng),
        // A provider's error may quote the recipient (masked, but still theirs).
        JourneyEvent::MessageFailed { error, .. } => *error = seal(key, error, rng),
        _ => {}
    }
    e
}

/// The event as read back: sealed fields opened, or [`ERASED`] with no key.
pub fn open_event(key: Option<&DataKey>, mut e: JourneyEvent) -> Result<JourneyEvent, OpenError> {
    match &mut e {
        JourneyEvent::EmailSubmitted {
            email_masked,
            phone_masked,
            subject,
            ..
        } => {
            *email_masked = open(key, email_masked)?;
            open_opt(key, phone_masked)?;
            // A pseudonym that reads "[erased]" would group every erased journey under
            // one subject: it is gone instead.
            if subject.as_deref().is_some_and(is_sealed) && key.is_none() {
                *subject = None;
            }
            open_opt(key, subject)?;
        }
        JourneyEvent::CodeIssued {
            destination_masked, ..
        }
        | JourneyEvent::CallPlaced {
            destination_masked, ..
        } => open_opt(key, destination_masked)?,
        JourneyEvent::MessageFailed { error, .. } => *error = open(key, error)?,
        _ => {}
    }
    Ok(e)
}

/// Seals an optional metadata value (client address, user agent).
pub fn seal_field(key: &DataKey, v: &mut Option<String>, rng: &mut dyn Entropy) {
    seal_opt(key, v, rng)
}

/// Opens an optional metadata value.
pub fn open_field(key: Option<&DataKey>, v: &mut Option<String>) -> Result<(), OpenError> {
    open_opt(key, v)
}

impl Keys {
    /// The data key as the store keeps it: sealed under the deployment's wrapping key and
    /// bound to its journey, so a key row copied onto another journey does not open.
    pub fn wrap_data_key(
        &self,
        journey: uuid::Uuid,
        key: &DataKey,
        rng: &mut dyn Entropy,
    ) -> String {
        let (enc, mac) = self.data_wrap_keys();
        hex(&seal_bytes(&enc, &mac, journey.as_bytes(), key.raw(), rng))
    }

    /// Opens what [`Keys::wrap_data_key`] produced for `journey`.
    pub fn unwrap_data_key(
        &self,
        journey: uuid::Uuid,
        wrapped: &str,
    ) -> Result<DataKey, OpenError> {
        let bytes = unhex(wrapped).ok_or(OpenError::Malformed)?;
        let (enc, mac) = self.data_wrap_keys();
        let raw = open_bytes(&enc, &mac, journey.as_bytes(), &bytes)?;
        let raw: [u8; 32] = raw.try_into().map_err(|_| OpenError::Malformed)?;
        Ok(DataKey::from_bytes(raw))
    }

    fn data_wrap_keys(&self) -> ([u8; 32], [u8; 32]) {
        let root = self.data_wrap_root();
        (
            hmac(root, &[b"passage/data-key-wrap/enc/v1"]),
            hmac(root, &[b"passage/data-key-wrap/mac/v1"]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::StepId;
    use crate::secrets::tests::TestEntropy;

    fn submitted() -> JourneyEvent {
        JourneyEvent::EmailSubmitted {
            step: StepId("identify".into()),
            email_masked: "a•••e@e•••.com".into(),
            account_id: Some("acct-0001".into()),
            phone_masked: Some("+61 ••• ••• 678".into()),
            next: StepId("email-code".into()),
            subject: Some("0123abcd".into()),
        }
    }

    #[test]
    fn values_roundtrip_and_hide_the_plaintext() {
        let mut rng = TestEntropy(3);
        let key = DataKey::generate(&mut rng);
        let s = seal(&key, "a•••e@e•••.com", &mut rng);
        assert!(is_sealed(&s));
        assert!(!s.contains("e•••.com"));
        assert_eq!(open(Some(&key), &s).unwrap(), "a•••e@e•••.com");
        assert_ne!(
            s,
            seal(&key, "a•••e@e•••.com", &mut rng),
            "a fresh nonce per value"
        );
    }

    #[test]
    fn without_the_key_a_value_reads_erased_and_old_values_read_as_they_are() {
        let mut rng = TestEntropy(4);
        let key = DataKey::generate(&mut rng);
        let s = seal(&key, "+61 ••• ••• 678", &mut rng);
        assert_eq!(open(None, &s).unwrap(), ERASED);
        assert_eq!(open(None, "a•••e@e•••.com").unwrap(), "a•••e@e•••.com");
        assert_eq!(open(Some(&key), "plain").unwrap(), "plain");
    }

    #[test]
    fn a_wrong_key_or_an_altered_value_is_refused() {
        let mut rng = TestEntropy(5);
        let key = DataKey::generate(&mut rng);
        let other = DataKey::generate(&mut rng);
        let s = seal(&key, "10.0.0.7", &mut rng);
        assert_eq!(open(Some(&other), &s), Err(OpenError::Tampered));
        // Flip one hex digit of the ciphertext.
        let at = PREFIX.len() + 2 * NONCE + 1;
        let mut bytes = s.into_bytes();
        bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(open(Some(&key), &tampered), Err(OpenError::Tampered));
        assert_eq!(open(Some(&key), "sealed:v1:zz"), Err(OpenError::Malformed));
        assert_eq!(open(Some(&key), "sealed:v1:00"), Err(OpenError::Malformed));
    }

    #[test]
    fn events_seal_their_personal_fields_only() {
        let mut rng = TestEntropy(6);
        let key = DataKey::generate(&mut rng);
        let sealed = seal_event(&key, &submitted(), &mut rng);
        let json = serde_json::to_string(&sealed).unwrap();
        for plain in ["a•••e@e•••.com", "+61 ••• ••• 678", "0123abcd"] {
            assert!(!json.contains(plain), "{plain} left in {json}");
        }
        assert!(json.contains("acct-0001"), "account ids are opaque, kept");
        assert_eq!(open_event(Some(&key), sealed.clone()).unwrap(), submitted());

        let JourneyEvent::EmailSubmitted {
            email_masked,
            phone_masked,
            subject,
            account_id,
            ..
        } = open_event(None, sealed).unwrap()
        else {
            panic!("the variant changed");
        };
        assert_eq!(email_masked, ERASED);
        assert_eq!(phone_masked.as_deref(), Some(ERASED));
        assert_eq!(subject, None, "an erased pseudonym is dropped");
        assert_eq!(account_id.as_deref(), Some("acct-0001"));

        let started = JourneyEvent::JourneyCancelled {
            reason: "by support".into(),
        };
        assert_eq!(seal_event(&key, &started, &mut rng), started);
    }

    #[test]
    fn wrapped_keys_are_bound_to_journey_and_deployment() {
        let mut rng = TestEntropy(7);
        let keys = Keys::derive(b"deployment");
        let key = DataKey::generate(&mut rng);
        let j = uuid::Uuid::from_u128(1);
        let wrapped = keys.wrap_data_key(j, &key, &mut rng);
        assert!(!wrapped.contains(&hex(key.raw())));
        assert_eq!(keys.unwrap_data_key(j, &wrapped).unwrap(), key);
        assert_eq!(
            keys.unwrap_data_key(uuid::Uuid::from_u128(2), &wrapped),
            Err(OpenError::Tampered)
        );
        assert_eq!(
            Keys::derive(b"other").unwrap_data_key(j, &wrapped),
            Err(OpenError::Tampered)
        );
        assert_eq!(keys.unwrap_data_key(j, "xyz"), Err(OpenError::Malformed));
    }
}
