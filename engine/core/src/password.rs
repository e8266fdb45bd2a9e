//! The new-password policy: length, blocklist and guessable patterns, context words,
//! confirmation. No composition rules (R37): a long passphrase of lowercase words is a good
//! password; a long run of `a`s, `qwerty…` or `P@ssw0rd` plus digits is not (R38).
//!
//! The same [`requirements`] list drives the grey/green ticks on the Reset Password page and
//! the server's decision, so the page can never promise what the server refuses (R41, R42).

use crate::definition::PasswordPolicy;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::OnceLock;
use unicode_normalization::UnicodeNormalization;

const BLOCKLIST: &str = include_str!("../data/common-passwords.txt");

/// One tick on the Reset Password page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requirement {
    /// Stable id recorded in `PasswordRejected` events.
    pub id: &'static str,
    pub label: String,
    pub met: bool,
}

/// What the password may not contain, taken from the account (never from the request, R29).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PasswordContext {
    pub email: String,
    pub display_name: String,
}

impl std::fmt::Debug for PasswordContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordContext")
            .field("email", &crate::mask::mask_email(&self.email))
            .finish_non_exhaustive()
    }
}

/// NFC, the form applied at set time and at sign-in alike (R39; see docs/security.md).
pub fn normalize(password: &str) -> String {
    password.nfc().collect()
}

/// Lowercase letters and digits only: "Connections Portal!" and "connectionsportal" compare equal.
fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn letters_only(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphabetic())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The blocklist's entries, most common first (the file's order is its rank).
fn entries() -> impl Iterator<Item = &'static str> {
    BLOCKLIST
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn blocklisted(password: &str) -> bool {
    if password.chars().nth(MAX_ANALYSED).is_some() {
        // Longer than any policy allows: the `length` tick refuses it; `weakness` still looks
        // at its beginning.
        return false;
    }
    let lower = password.to_lowercase();
    let squashed = squash(password);
    let letters = letters_only(password);
    entries().any(|w| w == lower || w == squashed || (letters.len() >= 4 && w == letters))
}

fn contains_context(password: &str, policy: &PasswordPolicy, ctx: &PasswordContext) -> bool {
    let pw = squash(password);
    let folded = fold(password);
    let mut words: Vec<String> = policy.context_words.iter().map(|w| squash(w)).collect();
    if policy.forbid_account_identifiers {
        if let Some((local, _)) = ctx.email.split_once('@') {
            words.push(squash(local));
            // Parts of the local part too: "alice.smith" forbids "alice" and "smith".
            words.extend(local.split(['.', '_', '-', '+']).map(squash));
        }
        words.extend(ctx.display_name.split_whitespace().map(squash));
        words.push(squash(&ctx.display_name));
    }
    words.iter().filter(|w| w.chars().count() >= 4).any(|w| {
        // R38: "@l1ce" is still "alice", and "s.m.i.t.h" still "smith".
        let chars: Vec<char> = w.chars().collect();
        pw.contains(w.as_str()) || (0..folded.len()).any(|i| word_at(&folded, i, &chars).is_some())
    })
}

// ---- R38 beyond the exact blocklist ------------------------------------------------------------
//
// With a 15-character minimum almost no blocklist entry can match a whole password, so R38 (and
// NIST SP 800-63B 5.1.1.2: "commonly-used, expected, or compromised" values, "repetitive or
// sequential characters", "context-specific words") needs the *shape* of the password checked:
// `passw0rd12345678`, `aaaaaaaaaaaaaaa` and `qwertyuiopasdfghjkl` are long and still guessable.
// Nothing here is a composition rule (R37): no character class is ever required.
//
// How: the password is folded (see `fold`), then explained as the cheapest sequence of pieces,
// zxcvbn-style. A piece is a known pattern (blocklist word, year, repeated unit, sequence,
// keyboard walk) costing a few bits, or any single character costing `FREE_CHAR_BITS`. If the
// cheapest explanation uses a pattern and costs under `GUESSABLE_BITS`, the password is
// refused and the pattern covering most characters names the reason. Words from a dictionary
// are *not* patterns, so passphrases of ordinary words keep their full length's worth of bits.

/// What one unexplained character costs: 10 guesses, deliberately low (zxcvbn's brute-force
/// floor), so the threshold is reached by length alone and only patterns can pull a password
/// under it.
const FREE_CHAR_BITS: f64 = std::f64::consts::LOG2_10;

/// What each pattern piece adds on top of its own cost (where it starts and ends).
const PIECE_BITS: f64 = 1.0;

/// 2^33 ≈ 10^10 guesses: zxcvbn's bound for "strong protection from an offline slow-hash
/// attack". Capped at the policy's own minimum times `FREE_CHAR_BITS`, so a password of
/// exactly the minimum length is never refused for its length alone.
const GUESSABLE_BITS: f64 = 33.0;

/// Fewer different characters than this (after folding) is repetitive whatever the order
/// (R38: "repetitive"); `aabbaabbbabab…` is about one bit a character.
const MIN_DISTINCT: usize = 5;

/// The shortest repeat, sequence or keyboard walk that counts as a pattern.
const MIN_RUN: usize = 3;

/// The longest repeated unit looked for. A unit is priced by its own cheapest explanation,
/// so a long but guessable one (`qwertyuiop[]`, `summer2024`) repeated is found; 32 covers
/// a quarter of the default maximum length, and keeps the search linear.
const MAX_UNIT: usize = 32;

/// The check runs on every keystroke: at most this many folded characters are analysed
/// (the loader caps `max_length` at 1024; anything longer is refused by `length` anyway).
const MAX_ANALYSED: usize = 1024;

/// Look-alike substitutions undone when matching words (R38: `P@ssw0rd` is `password`).
const LEET: &[(char, &str)] = &[
    ('@', "a"),
    ('4', "a"),
    ('8', "b"),
    ('(', "c"),
    ('3', "e"),
    ('€', "e"),
    ('6', "g"),
    ('9', "g"),
    ('1', "il"),
    ('!', "il"),
    ('|', "il"),
    ('0', "o"),
    ('5', "s"),
    ('$', "s"),
    ('7', "t"),
    ('+', "t"),
];

/// Keyboard rows from the first letter (or digit) key, each row half a key to the right of the
/// one above, so `q` touches `1`, `2`, `w`, `a` (and `s` no). R38: keyboard walks.
const KEYBOARDS: &[[&str; 4]] = &[
    [
        "1234567890-=",
        "qwertyuiop[]\\",
        "asdfghjkl;'",
        "zxcvbnm,./",
    ], // US QWERTY
    ["1234567890ß", "qwertzuiopü+", "asdfghjklöä#", "yxcvbnm,.-"], // German QWERTZ
    ["1234567890", "azertyuiop", "qsdfghjklm", "wxcvbn,;:!"],      // French AZERTY
    ["1234567890-=", "йцукенгшщзхъ", "фывапролджэ", "ячсмитьбю."], // Russian ЙЦУКЕН
];

/// US shifted symbols and the key they are on (`!@#$` is the walk `1234`).
const SHIFTED: &str = "!1@2#3$4%5^6&7*8(9)0_-+={[}]|\\:;\"'<,>.?/";

/// Code points that show nothing (Unicode's Default_Ignorable_Code_Point, plus the Braille
/// blank): zero-width spaces and joiners, bidi controls, variation selectors, Hangul fillers,
/// tags. They do not count towards the length and are dropped before the pattern checks.
const INVISIBLE: &[(char, char)] = &[
    ('\u{ad}', '\u{ad}'),
    ('\u{34f}', '\u{34f}'),
    ('\u{61c}', '\u{61c}'),
    ('\u{115f}', '\u{1160}'),
    ('\u{17b4}', '\u{17b5}'),
    ('\u{180b}', '\u{180f}'),
    ('\u{200b}', '\u{200f}'),
    ('\u{202a}', '\u{202e}'),
    ('\u{2060}', '\u{206f}'),
    ('\u{2800}', '\u{2800}'),
    ('\u{3164}', '\u{3164}'),
    ('\u{fe00}', '\u{fe0f}'),
    ('\u{feff}', '\u{feff}'),
    ('\u{ffa0}', '\u{ffa0}'),
    ('\u{fff0}', '\u{fff8}'),
    ('\u{1bca0}', '\u{1bca3}'),
    ('\u{1d173}', '\u{1d17a}'),
    ('\u{e0000}', '\u{e0fff}'),
];

fn is_invisible(c: char) -> bool {
    c >= '\u{ad}' && INVISIBLE.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// The letters a look-alike stands for ("" for none).
fn leet(c: char) -> &'static str {
    LEET.iter().find(|(k, _)| *k == c).map_or("", |(_, v)| v)
}

/// Punctuation that may sit between the letters of a word (`p.a.s.s-word`).
fn is_separator(c: char) -> bool {
    c.is_ascii_punctuation() && leet(c).is_empty()
}

/// Characters that count towards the minimum length: invisible and control characters do not,
/// a run of spaces counts as one, and spaces at either end not at all (R35, R38: padding a
/// short password with spaces or zero-width characters does not make it any harder to guess).
/// Counts up to `MAX_ANALYSED` (more than any minimum).
fn counted_len(password: &str) -> usize {
    let (mut n, mut space, mut started) = (0, false, false);
    for c in password.chars() {
        if n >= MAX_ANALYSED {
            break;
        }
        if c.is_whitespace() {
            space = started;
        } else if !c.is_control() && !is_invisible(c) {
            n += 1 + usize::from(space);
            (space, started) = (false, true);
        }
    }
    n
}

/// What the pattern checks see: lowercase, without spaces, control or invisible characters,
/// at most `MAX_ANALYSED` of them. Symbols are kept (they are matched as look-alikes,
/// separators or keys).
fn fold(password: &str) -> Vec<char> {
    password
        .chars()
        .filter(|&c| !c.is_whitespace() && !c.is_control() && !is_invisible(c))
        .flat_map(char::to_lowercase)
        .take(MAX_ANALYSED)
        .collect()
}

/// Whether `word` is spelt at `s[i..]`, allowing look-alikes, and one separator between
/// letters if it is always the same (`p.a.s.s.w.o.r.d`, `pass-word`; not `p.a-s`): the end,
/// and the bits the variation adds (1 for look-alikes, 4 for a separator).
fn word_at(s: &[char], i: usize, word: &[char]) -> Option<(usize, f64)> {
    let (mut k, mut substituted, mut separator) = (i, false, None);
    for (j, &w) in word.iter().enumerate() {
        let c = *s.get(k)?;
        if j > 0 && c != w && is_separator(c) && *separator.get_or_insert(c) == c {
            k += 1;
        }
        let c = *s.get(k)?;
        if c != w {
            if !leet(c).contains(w) {
                return None;
            }
            substituted = true;
        }
        k += 1;
    }
    let bits = if substituted { 1.0 } else { 0.0 } + if separator.is_some() { 4.0 } else { 0.0 };
    Some((k, bits))
}

/// Why the `not-common` tick is unmet: each has its own label, so the refusal says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Weakness {
    /// Mostly blocklist entries (with look-alikes, separators or digits added) or years.
    Common,
    /// A short unit repeated: `aaaa`, `abcabc`, `ÉÉÉÉ`.
    Repeated,
    /// Ascending or descending letters or digits, or a walk along a keyboard.
    Sequential,
    /// Fewer than `MIN_DISTINCT` different characters.
    FewDistinct,
}

impl Weakness {
    fn label(self) -> String {
        match self {
            Weakness::Common => "Not a common or breached password, even with numbers added or letters swapped for symbols".into(),
            Weakness::Repeated => "Not a repeated character or pattern (such as aaaa or abcabc)".into(),
            Weakness::Sequential => "Not a sequence or keyboard pattern (such as 12345, abcde or qwerty)".into(),
            Weakness::FewDistinct => format!("Uses at least {MIN_DISTINCT} different characters"),
        }
    }
}

/// One explained stretch of the folded password.
struct Piece {
    end: usize,
    bits: f64,
    kind: Weakness,
}

/// Blocklist entries by first character, each with its cost in bits.
type Dictionary = HashMap<char, Vec<(Vec<char>, f64)>>;

/// The blocklist by first character, forwards and reversed, with each entry's cost in bits:
/// 1 + log2(rank), one more reversed (`drowssap`).
fn dictionary() -> &'static Dictionary {
    static DICTIONARY: OnceLock<Dictionary> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        let mut by_first = Dictionary::new();
        for (rank, entry) in entries().enumerate() {
            let bits = 1.0 + ((rank + 1) as f64).log2();
            let forward: Vec<char> = entry.chars().collect();
            let reversed: Vec<char> = forward.iter().rev().copied().collect();
            if forward.len() < MIN_RUN {
                continue;
            }
            if reversed != forward {
                by_first
                    .entry(reversed[0])
                    .or_default()
                    .push((reversed, bits + 1.0));
            }
            by_first
                .entry(forward[0])
                .or_default()
                .push((forward, bits));
        }
        by_first
    })
}

/// Where a character is on each keyboard: (layout, row, column).
type Keys = HashMap<char, Vec<(usize, usize, usize)>>;

/// Each key's (layout, row, column), shifted US symbols on their key.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = Keys::new();
        for (l, rows) in KEYBOARDS.iter().enumerate() {
            for (r, row) in rows.iter().enumerate() {
                for (c, key) in row.chars().enumerate() {
                    keys.entry(key).or_default().push((l, r, c));
                }
            }
        }
        let shifted: Vec<char> = SHIFTED.chars().collect();
        for pair in shifted.chunks(2) {
            let on: Vec<_> = keys[&pair[1]]
                .iter()
                .filter(|k| k.0 == 0)
                .copied()
                .collect();
            keys.entry(pair[0]).or_default().extend(on);
        }
        keys
    })
}

/// The direction (0..6) from key `a` to a neighbouring key `b` on layout `layout`.
fn step(layout: usize, a: char, b: char) -> Option<u8> {
    let keys = keys();
    let on = |c: char| {
        keys.get(&c)?
            .iter()
            .find(|k| k.0 == layout)
            .map(|&(_, r, c)| (r as isize, c as isize))
    };
    let ((ra, ca), (rb, cb)) = (on(a)?, on(b)?);
    match (rb - ra, cb - ca) {
        (0, 1) => Some(0),
        (0, -1) => Some(1),
        (-1, 0) => Some(2),
        (-1, 1) => Some(3),
        (1, -1) => Some(4),
        (1, 0) => Some(5),
        _ => None,
    }
}

/// Adds the pieces of a maximal run `s[a..b]`: every prefix and every suffix of at least
/// `MIN_RUN` characters (enough for the cheapest explanation, linear in the run's length).
fn add_run(
    pieces: &mut [Vec<Piece>],
    a: usize,
    b: usize,
    kind: Weakness,
    bits: impl Fn(usize, usize) -> f64,
) {
    if b - a < MIN_RUN {
        return;
    }
    for end in a + MIN_RUN..=b {
        pieces[a].push(Piece {
            end,
            bits: bits(a, end),
            kind,
        });
    }
    for (start, here) in pieces
        .iter_mut()
        .enumerate()
        .take(b + 1 - MIN_RUN)
        .skip(a + 1)
    {
        here.push(Piece {
            end: b,
            bits: bits(start, b),
            kind,
        });
    }
}

/// Every pattern piece found in `s`, by start.
fn pieces(s: &[char], units: &mut UnitCosts) -> Vec<Vec<Piece>> {
    let n = s.len();
    let mut pieces: Vec<Vec<Piece>> = (0..n).map(|_| Vec::new()).collect();
    let log2 = |x: usize| (x as f64).log2();

    // Blocklist entries anywhere, with look-alikes and separators (R38: common, breached).
    let dictionary = dictionary();
    for (i, &c) in s.iter().enumerate() {
        let firsts = std::iter::once(c).chain(leet(c).chars());
        for first in firsts {
            for (word, bits) in dictionary.get(&first).into_iter().flatten() {
                if let Some((end, variation)) = word_at(s, i, word) {
                    let bits = bits + variation;
                    pieces[i].push(Piece {
                        end,
                        bits,
                        kind: Weakness::Common,
                    });
                }
            }
        }
    }

    // Years 1900-2099: a date is common knowledge (R38: context-specific, expected).
    for (i, year) in s.windows(4).enumerate() {
        if year.iter().all(char::is_ascii_digit) && matches!(year[..2], ['1', '9'] | ['2', '0']) {
            pieces[i].push(Piece {
                end: i + 4,
                bits: log2(200),
                kind: Weakness::Common,
            });
        }
    }

    // A unit of up to MAX_UNIT characters repeated (R38: repetitive): the unit's own cheapest
    // explanation plus the number of copies, so `summer2024` twice costs what one
    // `summer2024` does, plus a bit.
    for p in 1..=MAX_UNIT.min(n / 2) {
        let mut k = p;
        while k < n {
            if s[k] != s[k - p] {
                k += 1;
                continue;
            }
            let a = k;
            while k < n && s[k] == s[k - p] {
                k += 1;
            }
            if k - a >= p.max(MIN_RUN.saturating_sub(p)) {
                let start = a - p;
                let whole = start + (k - start) / p * p;
                let ends = if whole == k { vec![k] } else { vec![k, whole] };
                let (unit, unit_kind) = unit_cost(&s[start..start + p], units);
                // A common word typed again is still, above all, a common word.
                let kind = match unit_kind {
                    Some(Weakness::Common) => Weakness::Common,
                    _ => Weakness::Repeated,
                };
                for end in ends {
                    let copies = (end - start) as f64 / p as f64;
                    let bits = unit + copies.log2();
                    pieces[start].push(Piece { end, bits, kind });
                }
            }
        }
    }

    // Letters or digits in code point order, forwards or backwards, in steps of up to 3
    // (R38: sequential): `abcdef`, `987654`, `aceg`, `абвгд`.
    for d in [1i64, -1, 2, -2, 3, -3] {
        let linked = |k: usize| {
            s[k].is_alphanumeric()
                && s[k - 1].is_alphanumeric()
                && s[k] as i64 - s[k - 1] as i64 == d
        };
        let mut k = 1;
        while k < n {
            if !linked(k) {
                k += 1;
                continue;
            }
            let a = k - 1;
            while k < n && linked(k) {
                k += 1;
            }
            add_run(&mut pieces, a, k, Weakness::Sequential, |x, y| {
                let first = if s[x].is_ascii_digit() {
                    log2(10)
                } else {
                    log2(26)
                };
                first
                    + log2(y - x)
                    + if d < 0 { 1.0 } else { 0.0 }
                    + if d.abs() > 1 { 1.0 } else { 0.0 }
            });
        }
    }

    // Walks between neighbouring keys (R38: sequential): `qwerty`, `1qaz2wsx`, `zxcvbn`, `йцукен`;
    // each change of direction costs more.
    for layout in 0..KEYBOARDS.len() {
        let dirs: Vec<Option<u8>> = (0..n)
            .map(|k| {
                if k == 0 {
                    None
                } else {
                    step(layout, s[k - 1], s[k])
                }
            })
            .collect();
        let mut k = 1;
        while k < n {
            if dirs[k].is_none() {
                k += 1;
                continue;
            }
            let a = k - 1;
            while k < n && dirs[k].is_some() {
                k += 1;
            }
            add_run(&mut pieces, a, k, Weakness::Sequential, |x, y| {
                let turns = (x + 2..y).filter(|&j| dirs[j] != dirs[j - 1]).count();
                log2(47) + log2(y - x) + 2.5 * turns as f64
            });
        }
    }
    pieces
}

/// The cheapest explanation of a folded password.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Estimate {
    bits: f64,
    /// Characters explained by each kind of pattern: `Common`, `Repeated`, `Sequential`.
    covered: [usize; 3],
}

impl Estimate {
    /// The pattern that explains most of the password; ties go to the earlier kind.
    fn dominant(&self) -> Option<Weakness> {
        let kinds = [Weakness::Common, Weakness::Repeated, Weakness::Sequential];
        let (i, &most) = self
            .covered
            .iter()
            .enumerate()
            .rev()
            .max_by_key(|&(_, c)| *c)?;
        (most > 0).then_some(kinds[i])
    }
}

/// The cheapest explanation of each repeated unit met so far (its bits and main pattern),
/// by its characters: a run of 1 024 `a`s has a unit of every length, all alike.
type UnitCosts = HashMap<Vec<char>, (f64, Option<Weakness>)>;

fn unit_cost(unit: &[char], units: &mut UnitCosts) -> (f64, Option<Weakness>) {
    if unit.len() == 1 {
        return (FREE_CHAR_BITS, None);
    }
    if let Some(&known) = units.get(unit) {
        return known;
    }
    let e = cheapest(unit, units);
    let known = (e.bits, e.dominant());
    units.insert(unit.to_vec(), known);
    known
}

fn cheapest(s: &[char], units: &mut UnitCosts) -> Estimate {
    let n = s.len();
    let pieces = pieces(s, units);
    let mut best = vec![f64::INFINITY; n + 1];
    let mut came_from: Vec<(usize, Option<Weakness>)> = vec![(0, None); n + 1];
    best[0] = 0.0;
    for i in 0..n {
        let here = best[i];
        let free = here + FREE_CHAR_BITS;
        if free < best[i + 1] {
            best[i + 1] = free;
            came_from[i + 1] = (i, None);
        }
        for piece in &pieces[i] {
            let bits = here + piece.bits + PIECE_BITS;
            if bits < best[piece.end] {
                best[piece.end] = bits;
                came_from[piece.end] = (i, Some(piece.kind));
            }
        }
    }
    let mut covered = [0; 3];
    let mut end = n;
    while end > 0 {
        let (start, kind) = came_from[end];
        match kind {
            Some(Weakness::Common) => covered[0] += end - start,
            Some(Weakness::Repeated) => covered[1] += end - start,
            Some(_) => covered[2] += end - start,
            None => {}
        }
        end = start;
    }
    Estimate {
        bits: best[n],
        covered,
    }
}

/// The cheaper of the password itself and its two interleaved halves, so that zips of two
/// patterns (`a1b2c3d4…`, `1q2w3e4r…`) are found too.
fn estimate(s: &[char]) -> Estimate {
    let mut units = UnitCosts::new();
    let whole = cheapest(s, &mut units);
    if s.len() < 2 * (MIN_RUN + 1) {
        return whole;
    }
    let even: Vec<char> = s.iter().step_by(2).copied().collect();
    let odd: Vec<char> = s.iter().skip(1).step_by(2).copied().collect();
    let (e, o) = (cheapest(&even, &mut units), cheapest(&odd, &mut units));
    let zipped = Estimate {
        bits: e.bits + o.bits + PIECE_BITS,
        covered: [0, 1, 2].map(|k| e.covered[k] + o.covered[k]),
    };
    if zipped.bits < whole.bits && e.dominant().is_some() && o.dominant().is_some() {
        zipped
    } else {
        whole
    }
}

/// Why the password is guessable in spite of its length, if it is (R38).
fn weakness(password: &str, policy: &PasswordPolicy) -> Option<Weakness> {
    if blocklisted(password) {
        return Some(Weakness::Common);
    }
    let s = &fold(password)[..];
    if s.is_empty() {
        // Nothing visible: the `length` tick says so.
        return None;
    }
    let limit = GUESSABLE_BITS.min(FREE_CHAR_BITS * policy.min_length as f64);
    let estimate = estimate(s);
    if let Some(why) = estimate.dominant().filter(|_| estimate.bits < limit) {
        return Some(why);
    }
    // Only once the password is long enough: while it is being typed, "Uses at least 5
    // different characters" would be noise.
    if counted_len(password) >= policy.min_length {
        let mut distinct: Vec<char> = s
            .iter()
            .map(|&c| leet(c).chars().next().unwrap_or(c))
            .collect();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < MIN_DISTINCT {
            return Some(Weakness::FewDistinct);
        }
    }
    None
}

/// The `length` tick: code points after NFC in range (R35, R36), none of them control
/// characters, and enough of them visible (R38).
fn length_requirement(new: &str, policy: &PasswordPolicy) -> Requirement {
    let len = new.chars().count();
    let label = format!(
        "At least {} characters (up to {})",
        policy.min_length, policy.max_length
    );
    let (met, label) = if !(policy.min_length..=policy.max_length).contains(&len) {
        (false, label)
    } else if new.chars().any(char::is_control) {
        // NUL, tab, line breaks (R38, and NIST SP 800-63B 5.1.1.2, which asks that printing
        // characters and spaces be accepted, not these): invisible, impossible to type into
        // the page or the CLI prompt, and a truncation hazard for C-string tools.
        (
            false,
            format!("{label}, none of them control characters such as NUL, tab or line break"),
        )
    } else if counted_len(new) < policy.min_length {
        // Fifteen spaces or zero-width spaces, or "secret" padded with them: the minimum
        // counts what can be guessed, not what was typed.
        (
            false,
            format!("{label}, not counting invisible characters or extra spaces"),
        )
    } else {
        (true, label)
    };
    Requirement {
        id: "length",
        label,
        met,
    }
}

/// Evaluates every requirement; all must be met.
///
/// A tick's label names the requirement; when a non-empty password fails it for a specific
/// reason, the label names that reason instead (the ids never change), so the refusal
/// (`decide.rs` lists the unmet labels) says exactly what to change.
pub fn requirements(
    policy: &PasswordPolicy,
    new: &str,
    confirm: &str,
    ctx: &PasswordContext,
) -> Vec<Requirement> {
    let new = normalize(new);
    let confirm = normalize(confirm);
    let len = new.chars().count();
    let mut out = vec![length_requirement(&new, policy)];
    if policy.blocklist {
        let why = if len > 0 {
            weakness(&new, policy)
        } else {
            None
        };
        out.push(Requirement {
            id: "not-common",
            label: why.map_or_else(
                || "Not a common, repeated or sequential password".into(),
                Weakness::label,
            ),
            met: len > 0 && why.is_none(),
        });
    }
    if policy.forbid_account_identifiers || !policy.context_words.is_empty() {
        out.push(Requirement {
            id: "no-personal-words",
            label: "Does not contain your name, your email or the portal's name".into(),
            met: len > 0 && !contains_context(&new, policy, ctx),
        });
    }
    out.push(Requirement {
        id: "match",
        label: "Both passwords match".into(),
        met: len > 0 && new == confirm,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PasswordPolicy {
        PasswordPolicy {
            name: "portal".into(),
            min_length: 15,
            max_length: 128,
            blocklist: true,
            context_words: vec![
                "Enterprise Customer Portal".into(),
                "Connections Portal".into(),
            ],
            forbid_account_identifiers: true,
        }
    }

    fn ctx() -> PasswordContext {
        PasswordContext {
            email: "alice.smith@example.com".into(),
            display_name: "Alice Smith".into(),
        }
    }

    fn unmet(pw: &str, confirm: &str) -> Vec<&'static str> {
        requirements(&policy(), pw, confirm, &ctx())
            .into_iter()
            .filter(|r| !r.met)
            .map(|r| r.id)
            .collect()
    }

    #[test]
    fn passphrase_without_composition_is_accepted() {
        let pw = "correct horse battery staple";
        assert!(unmet(pw, pw).is_empty());
    }

    #[test]
    fn length_counts_code_points_after_nfc() {
        // "résumé et café" decomposed is 17 code points before NFC and 14 after: too short
        // (R35, R39).
        let decomposed = "re\u{301}sume\u{301} et cafe\u{301}";
        assert_eq!(decomposed.chars().count(), 17);
        assert_eq!(unmet(decomposed, decomposed), vec!["length"]);
        let fifteen = "é".repeat(15);
        assert!(!unmet(&fifteen, &fifteen).contains(&"length"));
        // Fifteen code points of emoji are long enough; fifteen of the same one are repetitive.
        let emoji = "🦀🐙🦑🐠🐡🦞🐚🪸🌊⛵🏝🌅🐬🦭🐳";
        assert!(unmet(emoji, emoji).is_empty());
        let crabs = "🦀".repeat(15);
        assert_eq!(unmet(&crabs, &crabs), vec!["not-common"]);
        let long = "x".repeat(129);
        assert!(unmet(&long, &long).contains(&"length"));
    }

    #[test]
    fn upper_bound_is_explicit_and_nothing_is_truncated() {
        // R36: 64 and 128 accepted; 129 and 10 000 refused with a reason, never truncated.
        let words = "harbour lantern meadow copper violet glacier pebble saffron thimble orchard ";
        let of_len = |n: usize| words.chars().cycle().take(n).collect::<String>();
        for ok in [64, 128] {
            let pw = of_len(ok);
            assert!(
                unmet(&pw, &pw).is_empty(),
                "{ok} characters must be accepted"
            );
        }
        for too_long in [129, 10_000] {
            let pw = of_len(too_long);
            assert_eq!(unmet(&pw, &pw), vec!["length"], "{too_long} characters");
        }
        // Confirmation differing only after character 72 (bcrypt's limit) is a mismatch.
        let a = of_len(100);
        let mut b = of_len(99);
        b.push('#');
        assert_eq!(unmet(&a, &b), vec!["match"]);
    }

    #[test]
    fn blocklist_and_context_words() {
        for pw in ["Password123!Password123!", "passwordpassword"] {
            assert!(unmet(pw, pw).contains(&"not-common"), "{pw}");
        }
        for pw in [
            "EnterpriseCustomerPortal2026",
            "my alice.smith secret!!",
            "smith-and-wesson-rocks",
        ] {
            assert!(unmet(pw, pw).contains(&"no-personal-words"), "{pw}");
        }
    }

    #[test]
    fn invisible_and_control_characters_do_not_count() {
        assert_eq!(counted_len("  lantern   harbour  "), 15);
        assert_eq!(
            counted_len("\u{200b}\u{feff}\u{2060}\u{e0041}\u{fe0f}\u{3164}\u{2800}"),
            0
        );
        assert_eq!(counted_len("a\u{0}b"), 2);
        // ZWJ and variation selectors are dropped; the emoji themselves count.
        assert_eq!(counted_len("👩\u{200d}👩\u{200d}👧 ❤\u{fe0f}"), 5);
        assert_eq!(
            fold(" P@ss\u{200b}WORD\t!"),
            "p@ssword!".chars().collect::<Vec<_>>()
        );
        assert_eq!(fold(&"É".repeat(2000)).len(), MAX_ANALYSED);
    }

    #[test]
    fn words_match_through_look_alikes_and_separators_only() {
        let s: Vec<char> = "p.@.s-s_w0rd".chars().collect();
        let word: Vec<char> = "password".chars().collect();
        assert_eq!(word_at(&s, 0, &word), None, "mixed separators");
        let s: Vec<char> = "p.@.s.s.w0r.d".chars().collect();
        assert_eq!(word_at(&s, 0, &word), Some((s.len(), 5.0)));
        let s: Vec<char> = "pass-word".chars().collect();
        assert_eq!(word_at(&s, 0, &word), Some((s.len(), 4.0)));
        // A separator before the first letter, or a different letter, is no match.
        let s: Vec<char> = ".password".chars().collect();
        assert_eq!(word_at(&s, 0, &word), None);
        let s: Vec<char> = "passward".chars().collect();
        assert_eq!(word_at(&s, 0, &word), None);
    }

    #[test]
    fn keyboard_neighbours_follow_the_row_stagger() {
        // US: q touches 1, 2, w, a; not s. Shifted symbols sit on their key.
        for (a, b) in [
            ('q', '1'),
            ('q', '2'),
            ('q', 'w'),
            ('q', 'a'),
            ('!', '@'),
            ('z', 'a'),
        ] {
            assert!(step(0, a, b).is_some(), "{a}{b}");
        }
        for (a, b) in [('q', 's'), ('q', 'e'), ('a', 'x'), ('p', 'a')] {
            assert!(step(0, a, b).is_none(), "{a}{b}");
        }
        // The other layouts: QWERTZ z-u, AZERTY a-z, ЙЦУКЕН й-ц.
        assert!(step(1, 'z', 'u').is_some());
        assert!(step(2, 'a', 'z').is_some());
        assert!(step(3, 'й', 'ц').is_some());
    }

    #[test]
    fn the_cheapest_explanation_names_the_pattern() {
        let bits = |pw: &str| estimate(&fold(pw));
        let e = bits("aaaaaaaaaaaaaaa");
        assert!(
            e.bits < 10.0 && e.dominant() == Some(Weakness::Repeated),
            "{e:?}"
        );
        let e = bits("zyxwvutsrqponmlk");
        assert!(
            e.bits < 15.0 && e.dominant() == Some(Weakness::Sequential),
            "{e:?}"
        );
        // Two zipped sequences are found through the interleaved halves.
        let e = bits("a1b2c3d4e5f6g7h8");
        assert!(e.bits < 20.0, "{e:?}");
        // Unexplained characters cost log2(10) each, whatever they are.
        let e = bits("Zq8#vL2!mW9@rT5");
        assert!(
            (e.bits - 15.0 * FREE_CHAR_BITS).abs() < 1e-9 && e.dominant().is_none(),
            "{e:?}"
        );
    }

    #[test]
    fn confirmation_must_match_after_normalization() {
        let a = "caf\u{e9} au lait tous les jours";
        let b = "cafe\u{301} au lait tous les jours";
        assert!(unmet(a, b).is_empty());
        assert_eq!(unmet(a, "something else entirely"), vec!["match"]);
        assert!(unmet("", "").contains(&"match"));
    }
}
