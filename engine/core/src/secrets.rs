//! Codes, keys and password hashing: pure functions over inputs the caller provides.
//!
//! * Codes are drawn from the caller's CSPRNG by rejection sampling (no modulo bias, R7).
//! * Only `HMAC-SHA-256(code_key, journey | step | issue | code)` is stored (R10, R11);
//!   verification recomputes it and compares in constant time (R12).
//! * The outbox must carry the code to the dispatcher without storing it in plain form, so
//!   effects hold it *sealed*: XORed with a keystream `HMAC(seal_key, effect_id)`, which is
//!   used for exactly one effect. Someone reading the database learns nothing without the
//!   deployment's secret.

use argon2::password_hash::PasswordHasher as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::fmt;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// A source of cryptographically secure random bytes (the runtime passes the OS CSPRNG;
/// tests pass a seeded generator).
pub trait Entropy {
    fn fill(&mut self, buf: &mut [u8]);

    fn uuid(&mut self) -> Uuid {
        let mut b = [0u8; 16];
        self.fill(&mut b);
        uuid::Builder::from_random_bytes(b).into_uuid()
    }
}

/// Keys derived from the deployment's master secret.
#[derive(Clone)]
pub struct Keys {
    code_key: [u8; 32],
    seal_key: [u8; 32],
    subject_key: [u8; 32],
    web_key: [u8; 32],
    audit_seed: [u8; 32],
    /// Wraps each journey's personal-data key ([`crate::personal`]).
    data_wrap: [u8; 32],
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// Derives independent keys for hashing and sealing from one secret.
    pub fn derive(master: &[u8]) -> Self {
        Self {
            code_key: hmac(master, &[b"passage/code-hash/v1"]),
            seal_key: hmac(master, &[b"passage/outbox-seal/v1"]),
            subject_key: hmac(master, &[b"passage/subject/v1"]),
            web_key: hmac(master, &[b"passage/web/v1"]),
            audit_seed: hmac(master, &[b"passage/audit-signing/v1"]),
            data_wrap: hmac(master, &[b"passage/data-key-wrap/v1"]),
        }
    }

    /// The seed of the deployment's audit signing key (Ed25519, in the binary): derived from
    /// the same secret, so there is nothing more to configure or lose.
    pub fn audit_signing_seed(&self) -> [u8; 32] {
        self.audit_seed
    }

    pub(crate) fn data_wrap_root(&self) -> &[u8; 32] {
        &self.data_wrap
    }

    /// A tag that binds `data` to `purpose` for the web layer (a browser's hold on a journey,
    /// CSRF tokens): verifiable without storing anything, unforgeable without the secret.
    pub fn web_tag(&self, purpose: &str, data: &[u8]) -> String {
        hex(&hmac(&self.web_key, &[purpose.as_bytes(), data]))
    }

    /// A pseudonym for a normalized address: the same for every journey that names it, known
    /// or not, and useless without the deployment's secret. Account-level limits (R16) and
    /// "revoke the account's other journeys" (R44) key on it, so they behave identically for
    /// unknown addresses (R1) and no address is stored to do it (R50).
    pub fn subject(&self, normalized_email: &str) -> String {
        hex(&hmac(&self.subject_key, &[normalized_email.as_bytes()])[..16])
    }

    /// The stored name of a counter shared by the nodes (a send budget, a per-client request
    /// limit; `what` names it and may hold an address): the same on every node of a
    /// deployment, so they share the count, and no address, number or client is stored to
    /// do it (R50). Two parts, so it can never equal a [`Keys::subject`] of the same text.
    pub fn counter_name(&self, what: &str) -> String {
        hex(&hmac(
            &self.subject_key,
            &[b"shared-counter", what.as_bytes()],
        ))
    }
}

/// HMAC-SHA256 over length-prefixed parts (so part boundaries cannot shift).
pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        mac.update(&(p.len() as u64).to_be_bytes());
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A uniformly random code of `digits` decimal digits.
pub fn generate_code(rng: &mut dyn Entropy, digits: u8) -> String {
    let digits = digits.clamp(1, 18) as u32;
    let modulus = 10u64.pow(digits);
    // Largest multiple of `modulus` that fits: values above it are redrawn.
    let limit = u64::MAX - (u64::MAX % modulus);
    loop {
        let mut b = [0u8; 8];
        rng.fill(&mut b);
        let v = u64::from_be_bytes(b);
        if v < limit {
            return format!("{:0width$}", v % modulus, width = digits as usize);
        }
    }
}

/// The stored form of a code: bound to journey, step and issue (R10).
pub fn code_hash(keys: &Keys, journey: Uuid, step: &str, issue: u32, code: &str) -> String {
    hex(&hmac(
        &keys.code_key,
        &[
            journey.as_bytes(),
            step.as_bytes(),
            &issue.to_be_bytes(),
            code.as_bytes(),
        ],
    ))
}

/// Constant-time comparison of a submitted code with a stored hash (R12).
pub fn code_matches(
    keys: &Keys,
    journey: Uuid,
    step: &str,
    issue: u32,
    code: &str,
    stored: &str,
) -> bool {
    let Some(expected) = unhex(stored) else {
        return false;
    };
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(&keys.code_key).unwrap_or_else(|_| unreachable!());
    for p in [
        journey.as_bytes().as_slice(),
        step.as_bytes(),
        &issue.to_be_bytes(),
        code.as_bytes(),
    ] {
        mac.update(&(p.len() as u64).to_be_bytes());
        mac.update(p);
    }
    mac.verify_slice(&expected).is_ok()
}

fn keystream(keys: &Keys, effect_id: Uuid, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut block = 0u32;
    while out.len() < len {
        out.extend_from_slice(&hmac(
            &keys.seal_key,
            &[effect_id.as_bytes(), &block.to_be_bytes()],
        ));
        block += 1;
    }
    out.truncate(len);
    out
}

/// Length of the tag that authenticates a sealed value.
const SEAL_TAG: usize = 16;

fn seal_tag(keys: &Keys, effect_id: Uuid, ciphertext: &[u8]) -> [u8; 32] {
    hmac(&keys.seal_key, &[b"tag", effect_id.as_bytes(), ciphertext])
}

/// Seals a secret for one effect (see the module docs): ciphertext, then a 16-byte tag so
/// that opening with the wrong key or a damaged value fails instead of yielding garbage.
pub fn seal(keys: &Keys, effect_id: Uuid, secret: &str) -> String {
    let ks = keystream(keys, effect_id, secret.len());
    let mut sealed: Vec<u8> = secret.bytes().zip(ks).map(|(a, b)| a ^ b).collect();
    let tag = seal_tag(keys, effect_id, &sealed);
    sealed.extend_from_slice(&tag[..SEAL_TAG]);
    hex(&sealed)
}

/// Opens what [`seal`] produced; `None` if it was sealed under another key or effect, or
/// was altered.
pub fn unseal(keys: &Keys, effect_id: Uuid, sealed: &str) -> Option<String> {
    let bytes = unhex(sealed)?;
    let split = bytes.len().checked_sub(SEAL_TAG)?;
    let (ciphertext, tag) = bytes.split_at(split);
    let expected = seal_tag(keys, effect_id, ciphertext);
    if !tags_equal(&expected[..SEAL_TAG], tag) {
        return None;
    }
    let ks = keystream(keys, effect_id, ciphertext.len());
    String::from_utf8(ciphertext.iter().zip(ks).map(|(a, b)| a ^ b).collect()).ok()
}

/// Compares two MACs or tokens in constant time (for equal lengths; a length difference is
/// not secret).
pub fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh session token (returned once) and the hash that events and the session table keep.
pub fn session_token(rng: &mut dyn Entropy) -> (String, String) {
    let mut b = [0u8; 32];
    rng.fill(&mut b);
    let token = hex(&b);
    let hash = session_hash(&token);
    (token, hash)
}

/// What a presented session token is looked up by: only this hash is stored, so a copy of
/// the database cannot be replayed as sessions.
pub fn session_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// What a sign-in session remembers of the password hash it was verified against: once the
/// account's hash changes, the session opens nothing, however a reset's revocation (R45)
/// and a sign-in with the old password interleave. Not the hash itself: a fingerprint of
/// it, so the sessions table holds nothing to attack offline.
pub fn password_fingerprint(phc: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"passage-session-password\0");
    h.update(phc.as_bytes());
    hex(&h.finalize()[..16])
}

/// A deterministic id derived from other ids, e.g. the command id under which the worker
/// records an effect's delivery, so that recording it twice is idempotent.
pub fn derived_id(parts: &[&[u8]]) -> Uuid {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let digest = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid()
}

/// Hashes a new password. The salt comes from the caller's entropy so decide stays pure.
pub trait PasswordHasher {
    fn hash(&self, password: &str, salt: &[u8; 16]) -> Result<String, String>;
}

/// Argon2id (R43). The defaults are OWASP's minimum: 19 MiB, 2 passes, 1 lane.
#[derive(Debug, Clone)]
pub struct Argon2id {
    params: argon2::Params,
}

impl Default for Argon2id {
    fn default() -> Self {
        Self::new(19 * 1024, 2, 1)
    }
}

impl Argon2id {
    /// Cheaper settings exist for tests only; production uses [`Argon2id::default`].
    pub fn new(memory_kib: u32, passes: u32, lanes: u32) -> Self {
        let params = argon2::Params::new(memory_kib, passes, lanes, None)
            .unwrap_or_else(|_| argon2::Params::default());
        Self { params }
    }
}

impl PasswordHasher for Argon2id {
    fn hash(&self, password: &str, salt: &[u8; 16]) -> Result<String, String> {
        let argon = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            self.params.clone(),
        );
        argon
            .hash_password_with_salt(password.as_bytes(), salt)
            .map(|h| h.to_string())
            .map_err(|e| e.to_string())
    }
}

/// Checks a password hash brought in from elsewhere (`accounts import`): an Argon2id
/// (version 19) PHC string whose cost meets R43 (OWASP's settings: 46 MiB for 1 pass, 19
/// MiB for 2, 12 for 3, 9 for 4, 7 for 5 or more) and stays within what the sign-in's
/// hashing slots are sized for (at most 64 MiB, 4 lanes, and 4 times the default's
/// memory × passes). Sign-in verifies with the hash's own parameters: a cheaper hash would
/// be weak, a costlier one would hold the slots everybody's sign-in waits for; either
/// makes such accounts' refusals slower or faster than an unknown address's decoy.
pub fn imported_phc(phc: &str) -> Result<(), String> {
    let parsed = argon2::password_hash::phc::PasswordHash::new(phc)
        .map_err(|_| "not a password hash in PHC form ($argon2id$v=19$m=…,t=…,p=…$salt$hash)")?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "an {} hash: only Argon2id hashes are accepted (R43)",
            parsed.algorithm.as_str()
        ));
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err("the hash has no salt or no hash part: it was cut short".into());
    }
    if parsed.version != Some(19) {
        return Err(format!(
            "Argon2 version {} instead of 19 (the version every current library writes)",
            parsed.version.map_or("missing".into(), |v| v.to_string())
        ));
    }
    let params = argon2::Params::try_from(&parsed)
        .map_err(|e| format!("its Argon2 parameters are not valid: {e}"))?;
    let (m, t, p) = (params.m_cost(), params.t_cost(), params.p_cost());
    let default = argon2::Params::default();
    let budget = 4 * u64::from(default.m_cost()) * u64::from(default.t_cost());
    if m > 64 * 1024 || p > 4 || u64::from(m) * u64::from(t) > budget {
        return Err(format!(
            "its cost (m={m} KiB, t={t}, p={p}) is above what a sign-in may spend (m ≤ 65536, \
             p ≤ 4, m × t ≤ {budget})"
        ));
    }
    let least_m = match t {
        1 => 47_104,
        2 => 19_456,
        3 => 12_288,
        4 => 9_216,
        _ => 7_168,
    };
    if m < least_m {
        return Err(format!(
            "its cost (m={m} KiB, t={t}) is below R43's minimum (m ≥ {least_m} KiB with t={t}): \
             leave the column empty, and the person sets a password by resetting it"
        ));
    }
    Ok(())
}

/// Checks a password against a PHC string, normalised as at set time (R39).
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::PasswordVerifier as _;
    let Ok(parsed) = argon2::password_hash::phc::PasswordHash::new(phc) else {
        return false;
    };
    argon2::Argon2::default()
        .verify_password(crate::password::normalize(password).as_bytes(), &parsed)
        .is_ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn imported_hashes_are_argon2id_within_r43_and_a_sign_ins_budget() {
        let with = |params: &str| {
            format!(
                "$argon2id$v=19${params}$c2FsdHNhbHRzYWx0$Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm8"
            )
        };
        for ok in [
            "m=19456,t=2,p=1",
            "m=47104,t=1,p=1",
            "m=12288,t=3,p=1",
            "m=7168,t=5,p=1",
            "m=65536,t=2,p=4",
        ] {
            assert_eq!(imported_phc(&with(ok)), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("m=256,t=1,p=1", "below R43's minimum"),
            ("m=17920,t=2,p=1", "below R43's minimum (m ≥ 19456"),
            ("m=35840,t=1,p=1", "below R43's minimum (m ≥ 47104"),
            ("m=8960,t=4,p=1", "below R43's minimum (m ≥ 9216"),
            ("m=131072,t=1,p=1", "above what a sign-in may spend"),
            ("m=65536,t=3,p=1", "above what a sign-in may spend"),
            ("m=19456,t=4294967295,p=1", "above what a sign-in may spend"),
            ("m=19456,t=2,p=8", "above what a sign-in may spend"),
        ] {
            let e = imported_phc(&with(bad)).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = imported_phc("$2b$10$abcdefghijklmnopqrstuuKVY0HAaVBf2/0s5lCRpN0hlnqVeSLgW")
            .unwrap_err();
        assert!(e.contains("PHC form") || e.contains("only Argon2id"), "{e}");
        let e = imported_phc(&with("m=19456,t=2,p=1").replace("argon2id", "argon2i")).unwrap_err();
        assert!(e.contains("only Argon2id"), "{e}");
        let e = imported_phc(&with("m=19456,t=2,p=1").replace("v=19", "v=16")).unwrap_err();
        assert!(e.contains("version 16 instead of 19"), "{e}");
        let cut = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0";
        let e = imported_phc(cut).unwrap_err();
        assert!(e.contains("cut short"), "{e}");
        // What Passage itself stores passes.
        let own = Argon2id::default().hash("pw", &[7u8; 16]).unwrap();
        assert_eq!(imported_phc(&own), Ok(()));
    }

    #[test]
    fn handoff_tokens_bind_journey_and_expiry() {
        let keys = Keys::derive(b"k");
        let j = Uuid::from_u128(7);
        let at = crate::time::Timestamp(1_000_000);
        let t = handoff_token(&keys, j, at);
        assert_eq!(
            handoff_check(&keys, j, &t, crate::time::Timestamp(999_999)),
            Ok(at)
        );
        assert_eq!(
            handoff_check(&keys, j, &t, at),
            Err(HandoffRefusal::Expired),
            "expired at its expiry"
        );
        assert_eq!(
            handoff_check(&keys, Uuid::from_u128(8), &t, crate::time::Timestamp(0)),
            Err(HandoffRefusal::Malformed)
        );
        let later = t.replacen("1000000", "9000000", 1);
        assert_eq!(
            handoff_check(&keys, j, &later, crate::time::Timestamp(0)),
            Err(HandoffRefusal::Malformed),
            "the expiry is under the tag"
        );
        assert_eq!(
            handoff_check(&Keys::derive(b"other"), j, &t, crate::time::Timestamp(0)),
            Err(HandoffRefusal::Malformed)
        );
        assert!(handoff_check(&keys, j, "", crate::time::Timestamp(0)).is_err());
    }

    /// Deterministic entropy for tests (SplitMix64).
    #[derive(Debug, Clone)]
    pub struct TestEntropy(pub u64);

    impl Entropy for TestEntropy {
        fn fill(&mut self, buf: &mut [u8]) {
            for chunk in buf.chunks_mut(8) {
                self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = self.0;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                chunk.copy_from_slice(&z.to_be_bytes()[..chunk.len()]);
            }
        }
    }

    #[test]
    fn codes_have_the_requested_digits_and_spread() {
        let mut rng = TestEntropy(1);
        let mut first_digit = [0u32; 10];
        for _ in 0..10_000 {
            let c = generate_code(&mut rng, 6);
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
            first_digit[(c.as_bytes()[0] - b'0') as usize] += 1;
        }
        // Each leading digit should appear about 1000 times.
        assert!(
            first_digit.iter().all(|&n| (850..1150).contains(&n)),
            "{first_digit:?}"
        );
    }

    #[test]
    fn hashes_bind_journey_step_and_issue() {
        let k = Keys::derive(b"secret");
        let j = Uuid::from_u128(1);
        let h = code_hash(&k, j, "email-code", 1, "123456");
        assert!(code_matches(&k, j, "email-code", 1, "123456", &h));
        assert!(!code_matches(&k, j, "email-code", 1, "123457", &h));
        assert!(!code_matches(&k, j, "sms-code", 1, "123456", &h));
        assert!(!code_matches(&k, j, "email-code", 2, "123456", &h));
        assert!(!code_matches(
            &k,
            Uuid::from_u128(2),
            "email-code",
            1,
            "123456",
            &h
        ));
        assert!(!code_matches(
            &Keys::derive(b"other"),
            j,
            "email-code",
            1,
            "123456",
            &h
        ));
        assert!(!h.contains("123456"));
    }

    #[test]
    fn seal_roundtrips_and_hides() {
        let k = Keys::derive(b"secret");
        let id = Uuid::from_u128(9);
        let s = seal(&k, id, "654321");
        assert_ne!(s, hex(b"654321"));
        assert_eq!(unseal(&k, id, &s).as_deref(), Some("654321"));
        assert_ne!(
            unseal(&k, Uuid::from_u128(10), &s).as_deref(),
            Some("654321")
        );
        assert_eq!(unseal(&k, id, "zz"), None);
    }

    #[test]
    fn verification_normalizes_like_setting_does() {
        // R39: set with NFC (decide normalizes before hashing); verify any form of it.
        let composed = "caf\u{e9} au lait tous les jours";
        let decomposed = "cafe\u{301} au lait tous les jours";
        let h = Argon2id::new(256, 1, 1)
            .hash(&crate::password::normalize(decomposed), &[3; 16])
            .unwrap();
        assert!(verify_password(composed, &h));
        assert!(verify_password(decomposed, &h));
        assert!(!verify_password("cafe au lait tous les jours", &h));
    }

    #[test]
    fn argon2id_hash_verifies() {
        let h = Argon2id::new(256, 1, 1)
            .hash("correct horse battery staple", &[7; 16])
            .unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery staple", &h));
        assert!(!verify_password("correct horse battery stapler", &h));
    }
}

/// A link token that lets another device (the browser a chat bot hands a person to) take
/// over a journey until `expires_at`: `{expires_ms}-{HMAC(journey, expires)}`. Single use is
/// the journey's to enforce (it records `HandoffLinkOpened`).
pub fn handoff_token(keys: &Keys, journey: Uuid, expires_at: crate::time::Timestamp) -> String {
    let at = expires_at.as_millis();
    let tag = keys.web_tag(
        "handoff",
        &[journey.as_bytes().as_slice(), &at.to_be_bytes()].concat(),
    );
    format!("{at}-{}", &tag[..32])
}

/// Why a handoff token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoffRefusal {
    Malformed,
    Expired,
}

/// The token's expiry when it is genuine for `journey` and not expired at `now`.
pub fn handoff_check(
    keys: &Keys,
    journey: Uuid,
    token: &str,
    now: crate::time::Timestamp,
) -> Result<crate::time::Timestamp, HandoffRefusal> {
    let (at, _) = token.split_once('-').ok_or(HandoffRefusal::Malformed)?;
    let at: i64 = at.parse().map_err(|_| HandoffRefusal::Malformed)?;
    let expires = crate::time::Timestamp(at);
    let expected = handoff_token(keys, journey, expires);
    let same = tags_equal(expected.as_bytes(), token.as_bytes());
    if !same {
        return Err(HandoffRefusal::Malformed);
    }
    if now >= expires {
        return Err(HandoffRefusal::Expired);
    }
    Ok(expires)
}
