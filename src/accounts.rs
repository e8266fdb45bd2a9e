//! `passage accounts import`: the portal's users into Passage's account directory.
//!
//! The file is CSV with a header row. Every row is checked before anything is written, and
//! every problem is reported with its line, so a malformed file changes nothing. Rows are
//! keyed by the portal's own account id: importing the same file again updates profiles
//! (address, name, phone, enabled) and never touches a password Passage already holds.
//! Addresses are printed masked (R50), as everywhere else.

use crate::Refused;
use crate::app::App;
use anyhow::Context as _;
use passage_core::mask::{mask_email, normalize_email};
use passage_core::ports::Account;
use passage_core::secrets::{Entropy as _, PasswordHasher as _, hex};
use passage_runtime::OsEntropy;
use passage_store::Seeded;
use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::Path;

/// The columns a file may have; the first three are required.
const COLUMNS: [&str; 6] = [
    "account_id",
    "email",
    "display_name",
    "phone",
    "enabled",
    "password_phc",
];

/// One checked row: its line in the file, the account, and the password hash it brings.
/// `phone` and `enabled` are `None` when the file has no such column: an existing account
/// then keeps its own (a file that fixes names must not erase phones or enable accounts).
#[derive(Debug)]
pub struct Row {
    pub line: usize,
    pub account_id: String,
    pub email: String,
    pub display_name: String,
    pub phone: Option<Option<String>>,
    pub enabled: Option<bool>,
    pub phc: Option<String>,
}

impl Row {
    /// The account to write: this row's columns, the rest from `existing` (or the
    /// defaults for a new account: no phone, enabled).
    fn account(&self, existing: Option<&Account>) -> Account {
        Account {
            account_id: self.account_id.clone(),
            email: self.email.clone(),
            display_name: self.display_name.clone(),
            phone: match &self.phone {
                Some(phone) => phone.clone(),
                None => existing.and_then(|a| a.phone.clone()),
            },
            enabled: self
                .enabled
                .unwrap_or_else(|| existing.is_none_or(|a| a.enabled)),
        }
    }
}

/// An account id as messages may show it: ids with an `@` are masked (R50), valid
/// addresses or not (`ada@corp`, `ada@example.com@sso`).
fn shown_id(id: &str) -> String {
    if id.contains('@') {
        mask_email(&id.to_lowercase())
    } else {
        id.to_owned()
    }
}

/// Splits CSV text into records of fields, each with the line it starts on (RFC 4180:
/// commas, double quotes around fields that hold commas or quotes, `""` for a quote). A
/// field may not span lines: an account's fields never need to.
fn records(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut chars = raw.chars().peekable();
        let mut quoted = false;
        let mut was_quoted = false;
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => field.push(c),
                (false, '"') if field.is_empty() && !was_quoted => {
                    quoted = true;
                    was_quoted = true;
                }
                (false, '"') => {
                    return Err(format!(
                        "line {line}: a quote inside an unquoted field (quote the whole field \
                         and double the quote: \"a \"\"b\"\"\")"
                    ));
                }
                (false, ',') => {
                    fields.push(std::mem::take(&mut field));
                    was_quoted = false;
                }
                (false, c) if was_quoted => {
                    return Err(format!(
                        "line {line}: `{c}` after a closing quote (a quoted field ends at a comma)"
                    ));
                }
                (false, c) => field.push(c),
            }
        }
        if quoted {
            return Err(format!(
                "line {line}: a quoted field is not closed (fields may not span lines)"
            ));
        }
        fields.push(field);
        out.push((line, fields));
    }
    Ok(out)
}

/// A phone number as the channels take it: `+` and 8 to 15 digits (E.164), the first not
/// 0; spaces, dashes, dots and brackets are dropped.
fn phone(raw: &str) -> Result<Option<String>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let digits: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let ok = digits.strip_prefix('+').is_some_and(|d| {
        (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    });
    if ok {
        Ok(Some(digits))
    } else {
        Err("phone: not an international number (write it as +61 412 345 678)".into())
    }
}

/// `None` for an empty cell: an existing account keeps its own, a new one is enabled. A
/// spreadsheet's blank cell must not switch an off-boarded account back on.
fn enabled(raw: &str) -> Result<Option<bool>, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "true" | "yes" | "1" => Ok(Some(true)),
        "false" | "no" | "0" => Ok(Some(false)),
        other => Err(format!(
            "enabled: `{other}` is not true or false (yes/no and 1/0 work too)"
        )),
    }
}

/// Checks the whole file; every problem is returned, each with its line.
pub fn parse(text: &str) -> Result<Vec<Row>, Vec<String>> {
    // A spreadsheet's byte-order mark is not part of the first column's name.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = records(text).map_err(|e| vec![e])?.into_iter();
    let Some((_, header)) = records.next() else {
        return Err(vec![format!(
            "the file is empty: it needs a header row ({}) and one row per account",
            COLUMNS.join(",")
        )]);
    };
    let mut at: HashMap<&str, usize> = HashMap::new();
    let mut problems = Vec::new();
    for (i, name) in header.iter().enumerate() {
        let name = name.trim();
        match COLUMNS.iter().find(|c| **c == name) {
            Some(c) if at.insert(c, i).is_some() => {
                problems.push(format!("line 1: column `{name}` appears twice"));
            }
            Some(_) => {}
            // A column name is shown back; a cell that looks like data is not (a file
            // without its header row starts with someone's address).
            None if name.len() <= 32
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                problems.push(format!(
                    "line 1: unknown column `{name}` (the columns are {})",
                    COLUMNS.join(", ")
                ));
            }
            None => problems.push(format!(
                "line 1: the header row is not recognised: the first line must name the \
                 columns ({})",
                COLUMNS.join(",")
            )),
        }
    }
    for required in &COLUMNS[..3] {
        if !at.contains_key(required) {
            problems.push(format!("line 1: the column `{required}` is missing"));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut rows = Vec::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut emails: HashMap<String, usize> = HashMap::new();
    for (line, fields) in records {
        if fields.len() != header.len() {
            problems.push(format!(
                "line {line}: {} field(s), the header has {}",
                fields.len(),
                header.len()
            ));
            continue;
        }
        let get = |c: &str| at.get(c).map_or("", |i| fields[*i].trim());
        let mut bad = |what: String| problems.push(format!("line {line}: {what}"));
        let id = get("account_id");
        if id.is_empty()
            || id.len() > 128
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:@-".contains(c))
        {
            bad("account_id: 1 to 128 letters, digits, `.`, `_`, `:`, `@` or `-`".into());
        } else if let Some(first) = ids.insert(id.to_owned(), line) {
            bad(format!(
                "account_id `{}` is also on line {first}",
                shown_id(id)
            ));
        }
        let email = match normalize_email(get("email")) {
            Ok(e) => {
                if let Some(first) = emails.insert(e.clone(), line) {
                    bad(format!("email {} is also on line {first}", mask_email(&e)));
                }
                Some(e)
            }
            Err(e) => {
                bad(format!("email: {e}"));
                None
            }
        };
        let name = get("display_name");
        // No control, bidi or zero-width characters: a name is shown to support, and must
        // not disguise itself (the rule operators' reasons follow).
        if name.is_empty()
            || name.chars().count() > 200
            || name.chars().any(passage_core::reason::disguises_text)
        {
            bad(
                "display_name: 1 to 200 characters, no control, bidi or zero-width characters"
                    .into(),
            );
        }
        let phone = match at.contains_key("phone") {
            true => phone(get("phone")).map_err(&mut bad).ok(),
            false => None,
        };
        let enabled = match at.contains_key("enabled") {
            true => enabled(get("enabled")).map_err(&mut bad).ok().flatten(),
            false => None,
        };
        let phc = Some(get("password_phc"))
            .filter(|p| !p.is_empty())
            .map(str::to_owned);
        if let Some(Err(why)) = phc.as_deref().map(passage_core::secrets::imported_phc) {
            bad(format!("password_phc: {why}"));
        }
        if let Some(email) = email {
            rows.push(Row {
                line,
                account_id: id.to_owned(),
                email,
                display_name: name.to_owned(),
                phone,
                enabled,
                phc,
            });
        }
    }
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(problems)
    }
}

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub inserted: usize,
    pub updated: usize,
    /// Rows the directory refused (an address another account already has), with why.
    pub failed: Vec<String>,
    /// Rows written when the last pass ended (the retry loop stops when a pass adds none).
    last_progress: usize,
}

/// Reads and checks `file`, reporting every problem (exit 2 when there is any).
pub fn read(file: &Path) -> anyhow::Result<Vec<Row>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    parse(&text).map_err(|problems| {
        const SHOWN: usize = 50;
        for p in problems.iter().take(SHOWN) {
            eprintln!("{}: {p}", file.display());
        }
        if problems.len() > SHOWN {
            eprintln!("… and {} more", problems.len() - SHOWN);
        }
        crate::Usage(format!(
            "{} problem(s) in {}: nothing was imported",
            problems.len(),
            file.display()
        ))
        .into()
    })
}

/// `passage accounts import FILE --check`: no store needed.
pub fn check(file: &Path) -> anyhow::Result<()> {
    let rows = read(file)?;
    println!(
        "{}: {} account(s), all valid (nothing imported: --check)",
        file.display(),
        rows.len()
    );
    Ok(())
}

/// `passage accounts import FILE`.
pub async fn import(app: &App, file: &Path) -> anyhow::Result<()> {
    let rows = read(file)?;
    let report = write(app, &rows).await?;
    println!(
        "imported {} account(s) from {}: {} new, {} updated (an existing account keeps its \
         password){}",
        report.inserted + report.updated,
        file.display(),
        report.inserted,
        report.updated,
        if report.failed.is_empty() {
            String::new()
        } else {
            format!(", {} refused", report.failed.len())
        }
    );
    if report.failed.is_empty() {
        return Ok(());
    }
    for f in &report.failed {
        eprintln!("{}: {f}", file.display());
    }
    Err(Refused(format!(
        "{} row(s) were not imported (above); the others were",
        report.failed.len()
    ))
    .into())
}

async fn write(app: &App, rows: &[Row]) -> anyhow::Result<Report> {
    // New accounts without a hash get a password nobody knows, so they can only reset it.
    // One random password hashed once serves them all: hashing one per account would take
    // tens of milliseconds each, and a shared hash of a discarded 192-bit secret opens
    // nothing. It is a real Argon2id hash, so signing in to such an account costs what a
    // wrong password costs elsewhere (no timing tells these accounts apart).
    let unusable = if rows.iter().any(|r| r.phc.is_none()) {
        let mut secret = [0u8; 24];
        let mut salt = [0u8; 16];
        OsEntropy.fill(&mut secret);
        OsEntropy.fill(&mut salt);
        passage_core::secrets::Argon2id::default()
            .hash(&hex(&secret), &salt)
            .map_err(|e| anyhow::anyhow!("hash a placeholder password: {e}"))?
    } else {
        String::new()
    };
    // The accounts already there: their phone and enabled stay unless the file has the
    // column, and they are written first, so that an address moving from one existing
    // account to a new one is free before the new one takes it.
    let ids: Vec<&str> = rows.iter().map(|r| r.account_id.as_str()).collect();
    let existing: HashMap<String, Account> =
        passage_core::ports::AccountDirectory::get_many(&app.store, &ids)
            .await
            .context("read the accounts already in the directory")?
            .into_iter()
            .map(|a| (a.account_id.clone(), a))
            .collect();
    let mut pending: Vec<&Row> = rows.iter().collect();
    pending.sort_by_key(|r| (!existing.contains_key(&r.account_id), r.line));
    let bar = (std::io::stderr().is_terminal() && rows.len() >= 200)
        .then(|| crate::bench::progress(rows.len() as u64, "importing accounts"));
    let mut report = Report::default();
    // Rows refused because another account still has their address are tried again once
    // the others are written: an address that moves on in the same file (from one account
    // to another, in any order) is free by then. What is still refused after a pass that
    // frees nothing is a real conflict (or two accounts trading addresses).
    loop {
        let mut taken = Vec::new();
        for row in pending {
            let phc = row.phc.as_deref().unwrap_or(&unusable);
            let account = row.account(existing.get(&row.account_id));
            match app.store.upsert_account(&account, phc).await {
                Ok(Seeded::Inserted) => report.inserted += 1,
                Ok(Seeded::Updated) => report.updated += 1,
                Err(passage_store::Error::EmailTaken) => {
                    taken.push(row);
                    continue;
                }
                Err(e) => {
                    if let Some(bar) = &bar {
                        bar.abandon();
                    }
                    return Err(anyhow::Error::new(e).context(format!(
                        "import line {} ({}); {} row(s) were imported before it, and \
                         importing the file again is safe",
                        row.line,
                        shown_id(&row.account_id),
                        report.inserted + report.updated
                    )));
                }
            }
            if let Some(bar) = &bar {
                bar.inc(1);
            }
        }
        let progressed = report.inserted + report.updated;
        if taken.is_empty() || progressed == report.last_progress {
            taken.sort_by_key(|r| r.line);
            report.failed = taken
                .iter()
                .map(|row| {
                    format!(
                        "line {} ({}): another account already uses {} (two accounts trading \
                         addresses need two imports: first move one to a free address)",
                        row.line,
                        shown_id(&row.account_id),
                        mask_email(&row.email)
                    )
                })
                .collect();
            break;
        }
        report.last_progress = progressed;
        pending = taken;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$\
                       Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm8";

    #[test]
    fn a_valid_file_gives_its_accounts() {
        let text = format!(
            "account_id,email,display_name,phone,enabled,password_phc\r\n\
             u-1, Ada@Example.com ,\"Lovelace, Ada\",+61 412 345 678,yes,\n\
             \n\
             u-2,grace@example.com,\"Grace \"\"Amazing\"\" Hopper\",,false,\"{PHC}\"\n"
        );
        let rows = parse(&text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[0].email, "ada@example.com");
        assert_eq!(rows[0].display_name, "Lovelace, Ada");
        assert_eq!(rows[0].phone, Some(Some("+61412345678".into())));
        assert_eq!(rows[0].enabled, Some(true));
        assert_eq!(enabled(" "), Ok(None), "a blank cell keeps what is there");
        assert!(rows[0].phc.is_none());
        assert_eq!(rows[1].line, 4);
        assert_eq!(rows[1].display_name, "Grace \"Amazing\" Hopper");
        assert_eq!(rows[1].phone, Some(None));
        assert_eq!(rows[1].enabled, Some(false));
        assert_eq!(rows[1].phc.as_deref(), Some(PHC));
        // Only the required columns, in another order, after a spreadsheet's BOM: an
        // existing account keeps its phone and enabled, a new one gets the defaults.
        let rows =
            parse("\u{feff}email,account_id,display_name\nbob@example.com,u-3,Bob\n").unwrap();
        assert_eq!((rows[0].phone.clone(), rows[0].enabled), (None, None));
        let before = Account {
            account_id: "u-3".into(),
            email: "robert@example.com".into(),
            display_name: "Robert".into(),
            phone: Some("+61412345678".into()),
            enabled: false,
        };
        let after = rows[0].account(Some(&before));
        assert_eq!(after.phone, before.phone);
        assert!(!after.enabled);
        assert_eq!(after.email, "bob@example.com");
        let new = rows[0].account(None);
        assert!(new.enabled && new.phone.is_none());
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = "account_id,email,display_name,phone,enabled,password_phc\n\
                    u 1,not-an-address,Ada,0412,maybe,$2b$10$bcrypt\n\
                    u-2,grace@example.com,,,,\n\
                    u-2,Grace@example.com,Grace,,,\n\
                    u-4,x@example.com\n";
        let problems = parse(text).unwrap_err();
        let expected = [
            "line 2: account_id: 1 to 128",
            "line 2: email: ",
            "line 2: phone: not an international number",
            "line 2: enabled: `maybe` is not true or false",
            "line 2: password_phc: ",
            "line 3: display_name: 1 to 200 characters",
            "line 4: account_id `u-2` is also on line 3",
            "line 4: email g•••e@e•••.com is also on line 3",
            "line 5: 2 field(s), the header has 6",
        ];
        for e in expected {
            assert!(
                problems.iter().any(|p| p.starts_with(e)),
                "missing {e:?} in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        assert!(
            !problems.iter().any(|p| p.contains("grace@example.com")),
            "addresses are masked: {problems:#?}"
        );
    }

    #[test]
    fn a_bad_header_or_quoting_is_named() {
        let e = parse("").unwrap_err();
        assert!(e[0].contains("the file is empty"), "{e:?}");
        let e = parse("account_id,mail,display_name,email,email\n").unwrap_err();
        assert!(
            e.iter().any(|p| p.contains("unknown column `mail`")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|p| p.contains("column `email` appears twice")),
            "{e:?}"
        );
        // A file without its header row: its first row is not shown back.
        let e = parse("ada@example.com,u-1,Ada\n").unwrap_err();
        assert!(e[0].contains("the header row is not recognised"), "{e:?}");
        assert!(!e.iter().any(|p| p.contains("ada@")), "{e:?}");
        // Ids that are addresses are masked too.
        let e = parse("account_id,email,display_name\nada@example.com,a@example.com,A\nada@example.com,b@example.com,B\n").unwrap_err();
        assert!(
            e.iter()
                .any(|p| p.contains("account_id `a•••a@e•••.com` is also on line 2")),
            "{e:?}"
        );
        let e =
            parse("account_id,email,display_name\nu-1,a@example.com,\u{202e}evil\n").unwrap_err();
        assert!(e.iter().any(|p| p.contains("display_name: ")), "{e:?}");
        let e = parse("account_id,display_name\n").unwrap_err();
        assert!(
            e.iter()
                .any(|p| p.contains("the column `email` is missing")),
            "{e:?}"
        );
        let header = "account_id,email,display_name\n";
        for (row, why) in [
            (
                "u-1,\"a@example.com,Ada\n",
                "line 2: a quoted field is not closed",
            ),
            (
                "u-1,a@example.com,Ada \"the\" Dev\n",
                "line 2: a quote inside an unquoted",
            ),
            (
                "u-1,\"a@example.com\"x,Ada\n",
                "line 2: `x` after a closing quote",
            ),
        ] {
            let e = parse(&format!("{header}{row}")).unwrap_err();
            assert!(e[0].starts_with(why), "{row:?}: {e:?}");
        }
    }
}
