//! `passage audit export` and `passage audit verify-export`: the event log, with positions and
//! chain hashes, for a compliance reviewer, plus a manifest signed with Ed25519 so the export
//! can be checked offline, with no database, by anyone holding the public key.
//!
//! Files: `FILE` (JSONL: one event per line; or CSV with a header row) and
//! `FILE.manifest.json`: range, count, the hash before the first event, first and last hash,
//! the SHA-256 of `FILE`'s bytes, and a signature over all of that.

use anyhow::{Context as _, anyhow, bail};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use passage_core::chain::{self, Verifier};
use passage_core::ports::{EventStore, JourneyId, StoredEvent};
use passage_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The deployment's audit signing key, derived from its secret: nothing more to configure,
/// and `passage audit public-key` prints the half a reviewer needs.
pub fn signing_key(keys: &passage_core::secrets::Keys) -> SigningKey {
    SigningKey::from_bytes(&keys.audit_signing_seed())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Jsonl,
    Csv,
}

/// One exported event: every field the chain covers, plus its links.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    position: u64,
    stream: String,
    stream_version: u64,
    event_type: String,
    schema_version: u16,
    recorded_at: i64,
    recorded_at_utc: String,
    command_id: String,
    payload: String,
    metadata: String,
    prev_hash: String,
    hash: String,
}

const CSV_HEADER: [&str; 12] = [
    "position",
    "stream",
    "stream_version",
    "event_type",
    "schema_version",
    "recorded_at",
    "recorded_at_utc",
    "command_id",
    "payload",
    "metadata",
    "prev_hash",
    "hash",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: Format,
    pub file: String,
    pub from_position: u64,
    pub to_position: u64,
    pub count: u64,
    /// The chain hash just before the first exported event (64 zeros from position 1).
    pub prev_hash: String,
    pub first_hash: String,
    pub last_hash: String,
    pub content_sha256: String,
    pub exported_at: String,
    pub public_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signature: String,
}

impl Manifest {
    /// What is signed: the manifest without its signature, as compact JSON.
    fn signed_bytes(&self) -> anyhow::Result<Vec<u8>> {
        let unsigned = Manifest {
            signature: String::new(),
            ..self.clone()
        };
        Ok(serde_json::to_vec(&unsigned)?)
    }
}

pub fn manifest_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".manifest.json");
    PathBuf::from(p)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str, what: &str) -> anyhow::Result<[u8; N]> {
    let bytes: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow!("{what} is not hexadecimal"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow!("{what} must be {} hex digits", N * 2))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// RFC 4180 records (quoted fields may hold commas, quotes and newlines).
fn csv_records(text: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            ',' => {
                record.push(std::mem::take(&mut field));
                at_start = true;
            }
            '\n' => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
                at_start = true;
            }
            '\r' => {}
            c => {
                field.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        bail!("the CSV ends inside a quoted field");
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

fn line_of(e: &StoredEvent) -> Line {
    Line {
        position: e.position,
        stream: e.stream.to_string(),
        stream_version: e.stream_version,
        event_type: e.event_type.clone(),
        schema_version: e.schema_version,
        recorded_at: e.recorded_at.as_millis(),
        recorded_at_utc: e.recorded_at.to_rfc3339(),
        command_id: e.command_id.to_string(),
        payload: e.payload.clone(),
        metadata: e.metadata.clone(),
        prev_hash: chain::to_hex(&e.prev_hash),
        hash: chain::to_hex(&e.hash),
    }
}

fn event_of(l: Line) -> anyhow::Result<StoredEvent> {
    let at = format!("position {}", l.position);
    Ok(StoredEvent {
        position: l.position,
        stream: l
            .stream
            .parse::<JourneyId>()
            .map_err(|_| anyhow!("{at}: stream is not a journey id"))?,
        stream_version: l.stream_version,
        event_type: l.event_type,
        schema_version: l.schema_version,
        payload: l.payload,
        metadata: l.metadata,
        recorded_at: Timestamp(l.recorded_at),
        command_id: l
            .command_id
            .parse()
            .map_err(|_| anyhow!("{at}: command_id is not a UUID"))?,
        prev_hash: unhex::<32>(&l.prev_hash, &format!("{at}: prev_hash"))?,
        hash: unhex::<32>(&l.hash, &format!("{at}: hash"))?,
    })
}

/// Writes the events with positions `from..=to` (clamped to the log) and the signed manifest;
/// `replace`: overwrite files that exist (otherwise an existing file, or one created
/// meanwhile, is an error and nothing of it is changed).
#[allow(clippy::too_many_arguments)]
pub async fn export<S: EventStore>(
    store: &S,
    key: &SigningKey,
    from: u64,
    to: Option<u64>,
    format: Format,
    out: &Path,
    now: Timestamp,
    replace: bool,
) -> anyhow::Result<Manifest> {
    let file = out
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (body, manifest) = export_bytes(store, key, from, to, format, &file, now).await?;
    let manifest_text = serde_json::to_string_pretty(&manifest)? + "\n";
    place_export(out, &body, manifest_text.as_bytes(), replace)?;
    Ok(manifest)
}

/// Puts an export's two files in place so that an interruption (a full disk, Ctrl-C, a
/// crash) never leaves a body without its manifest, nor destroys an earlier export that was
/// to be replaced before the new one is whole: both are written and synced under temporary
/// names in the same directory first, then moved into place. Without `replace`, each is
/// hard-linked to its name, which fails if a file is there (one appeared since the caller
/// looked, or a symlink someone left), and a body placed before its manifest failed is
/// taken back. With it, each is renamed over the old one: the only window is between the
/// two renames, after which `verify-export` would say the pair does not match.
fn place_export(out: &Path, body: &[u8], manifest: &[u8], replace: bool) -> anyhow::Result<()> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    // Unique enough with the process id; `create_new` refuses a leftover of the same name.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tag = format!("{}-{nanos}", std::process::id());
    let staged = |what: &str| dir.join(format!(".{name}.{what}.{tag}.tmp"));
    let (body_tmp, manifest_tmp) = (staged("body"), staged("manifest"));
    let write = |path: &Path, bytes: &[u8]| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    let final_manifest = manifest_path(out);
    let placed = (|| -> anyhow::Result<()> {
        write(&body_tmp, body).with_context(|| format!("write {}", out.display()))?;
        write(&manifest_tmp, manifest)
            .with_context(|| format!("write {}", final_manifest.display()))?;
        if replace {
            std::fs::rename(&body_tmp, out).with_context(|| format!("write {}", out.display()))?;
            std::fs::rename(&manifest_tmp, &final_manifest)
                .with_context(|| format!("write {}", final_manifest.display()))?;
        } else {
            place_new(&body_tmp, out).with_context(|| format!("write {}", out.display()))?;
            if let Err(e) = place_new(&manifest_tmp, &final_manifest) {
                let _ = std::fs::remove_file(out);
                return Err(
                    anyhow::Error::new(e).context(format!("write {}", final_manifest.display()))
                );
            }
        }
        // The renames and links are entries of the directory: synced, they survive a crash.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    // Gone after a rename; the staged names after a link or a failure.
    let _ = std::fs::remove_file(&body_tmp);
    let _ = std::fs::remove_file(&manifest_tmp);
    placed
}

/// Puts `staged` at `to` unless something is there: a hard link (atomic, and refused by
/// the file system if `to` exists). Where links are not supported (FAT and exFAT sticks,
/// some network shares), the name is claimed with an empty file created new, and the
/// staged file renamed over it: `to` then holds nothing or the whole file, never a part.
fn place_new(staged: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(staged, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
        Err(_) => {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(to)?;
            std::fs::rename(staged, to).inspect_err(|_| {
                let _ = std::fs::remove_file(to);
            })
        }
    }
}

/// Calls `each` on the log's events after position `after`, in order, up to `until`
/// (inclusive; the end of the log without it), reading the store a page at a time.
pub async fn each_event<S: EventStore>(
    store: &S,
    mut after: u64,
    until: Option<u64>,
    mut each: impl FnMut(&StoredEvent) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    const PAGE: usize = 2_000;
    loop {
        let page = store.read_all(after, PAGE).await?;
        if page.is_empty() {
            return Ok(());
        }
        for e in &page {
            if until.is_some_and(|u| e.position > u) {
                return Ok(());
            }
            each(e)?;
            after = e.position;
        }
    }
}

/// The export's bytes and its signed manifest naming them as `file`.
pub async fn export_bytes<S: EventStore>(
    store: &S,
    key: &SigningKey,
    from: u64,
    to: Option<u64>,
    format: Format,
    file: &str,
    now: Timestamp,
) -> anyhow::Result<(Vec<u8>, Manifest)> {
    let from = from.max(1);
    let mut body = Vec::new();
    if format == Format::Csv {
        writeln!(body, "{}", CSV_HEADER.join(","))?;
    }
    let (mut count, mut first, mut last, mut prev) = (0u64, None, None, None);
    let mut last_position = from - 1;
    each_event(store, from - 1, to, |e| {
        if prev.is_none() {
            prev = Some(e.prev_hash);
        }
        first.get_or_insert(e.hash);
        last = Some(e.hash);
        last_position = e.position;
        count += 1;
        let l = line_of(e);
        match format {
            Format::Jsonl => writeln!(body, "{}", serde_json::to_string(&l)?)?,
            Format::Csv => {
                let fields = [
                    l.position.to_string(),
                    l.stream,
                    l.stream_version.to_string(),
                    l.event_type,
                    l.schema_version.to_string(),
                    l.recorded_at.to_string(),
                    l.recorded_at_utc,
                    l.command_id,
                    l.payload,
                    l.metadata,
                    l.prev_hash,
                    l.hash,
                ];
                let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                writeln!(body, "{}", row.join(","))?;
            }
        }
        Ok(())
    })
    .await?;
    if count == 0 {
        bail!(
            "no events in positions {from}..{} to export",
            to.map_or("end".into(), |t| t.to_string())
        );
    }
    let mut manifest = Manifest {
        format,
        file: file.to_owned(),
        from_position: from,
        to_position: last_position,
        count,
        prev_hash: chain::to_hex(&prev.unwrap_or(chain::GENESIS)),
        first_hash: chain::to_hex(&first.unwrap_or_default()),
        last_hash: chain::to_hex(&last.unwrap_or_default()),
        content_sha256: hex(&Sha256::digest(&body)),
        exported_at: now.to_rfc3339(),
        public_key: hex(key.verifying_key().as_bytes()),
        signature: String::new(),
    };
    manifest.signature = hex(&key.sign(&manifest.signed_bytes()?).to_bytes());
    Ok((body, manifest))
}

/// The console's exporter: the same bytes and manifest as `passage audit export`, signed
/// with the deployment's key.
pub struct ConsoleExporter<S> {
    pub store: S,
    pub key: SigningKey,
    pub clock: std::sync::Arc<dyn passage_runtime::Clock>,
}

impl<S> std::fmt::Debug for ConsoleExporter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleExporter").finish_non_exhaustive()
    }
}

impl<S: EventStore> passage_web::AuditExporter for ConsoleExporter<S> {
    fn export(
        &self,
        from: u64,
        to: u64,
        csv: bool,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<passage_web::ExportFiles, String>> + Send + '_>,
    > {
        Box::pin(async move {
            let format = if csv { Format::Csv } else { Format::Jsonl };
            let file = format!(
                "passage-audit-{from}-{to}.{}",
                if csv { "csv" } else { "jsonl" }
            );
            let (body, manifest) = export_bytes(
                &self.store,
                &self.key,
                from,
                Some(to),
                format,
                &file,
                self.clock.now(),
            )
            .await
            .map_err(|e| format!("{e:#}"))?;
            let manifest =
                serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())? + "\n";
            Ok(passage_web::ExportFiles {
                body,
                manifest,
                file_name: file,
            })
        })
    }
}

/// An audit public key as `audit public-key` prints it (64 hex digits).
pub fn verifying_key(hex: &str) -> anyhow::Result<VerifyingKey> {
    VerifyingKey::from_bytes(&unhex::<32>(hex.trim(), "the public key")?)
        .map_err(|_| anyhow!("the public key is not an Ed25519 key"))
}

/// Checks an export with no database: the manifest's signature under `public_key`, the
/// file's bytes against the manifest, and the chain through every line.
pub fn verify_export(file: &Path, public_key: &str) -> anyhow::Result<Manifest> {
    let key = verifying_key(public_key)?;
    let mpath = manifest_path(file);
    let text = std::fs::read_to_string(&mpath)
        .with_context(|| format!("read the manifest {}", mpath.display()))?;
    let manifest: Manifest =
        serde_json::from_str(&text).context("the manifest is not a Passage export manifest")?;
    let signature = Signature::from_bytes(&unhex::<64>(&manifest.signature, "the signature")?);
    key.verify(&manifest.signed_bytes()?, &signature).map_err(|_| {
        anyhow!("the manifest's signature does not verify with this public key: the manifest was changed, or signed by another key")
    })?;
    let body = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
    if hex(&Sha256::digest(&body)) != manifest.content_sha256 {
        bail!(
            "{} does not match its manifest: the file was changed after export",
            file.display()
        );
    }
    let text = String::from_utf8(body).context("the export is not UTF-8")?;
    let lines: Vec<Line> = match manifest.format {
        Format::Jsonl => text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("line {} is not an exported event", i + 1))
            })
            .collect::<anyhow::Result<_>>()?,
        Format::Csv => {
            let records = csv_records(&text)?;
            let mut rows = records.into_iter();
            if rows
                .next()
                .as_deref()
                .map(|h| h.iter().map(String::as_str).collect::<Vec<_>>())
                != Some(CSV_HEADER.to_vec())
            {
                bail!("the CSV header is not the export's");
            }
            rows.enumerate()
                .map(|(i, r)| {
                    let [
                        position,
                        stream,
                        stream_version,
                        event_type,
                        schema_version,
                        recorded_at,
                        recorded_at_utc,
                        command_id,
                        payload,
                        metadata,
                        prev_hash,
                        hash,
                    ]: [String; 12] = r
                        .try_into()
                        .map_err(|_| anyhow!("row {} does not have 12 fields", i + 2))?;
                    let num = |s: &str, what: &str| {
                        s.parse::<i64>()
                            .map_err(|_| anyhow!("row {}: {what} is not a number", i + 2))
                    };
                    Ok(Line {
                        position: num(&position, "position")? as u64,
                        stream,
                        stream_version: num(&stream_version, "stream_version")? as u64,
                        event_type,
                        schema_version: num(&schema_version, "schema_version")? as u16,
                        recorded_at: num(&recorded_at, "recorded_at")?,
                        recorded_at_utc,
                        command_id,
                        payload,
                        metadata,
                        prev_hash,
                        hash,
                    })
                })
                .collect::<anyhow::Result<_>>()?
        }
    };
    let mut verifier = Verifier::resume(
        manifest.from_position,
        unhex::<32>(&manifest.prev_hash, "the manifest's prev_hash")?,
    );
    let mut first = None;
    for l in lines {
        let e = event_of(l)?;
        verifier.check(&e).map_err(|bad| {
            anyhow!(
                "the chain breaks at position {}: {}",
                bad.position,
                bad.fault
            )
        })?;
        first.get_or_insert(e.hash);
    }
    if verifier.checked() != manifest.count {
        bail!(
            "the export holds {} events, the manifest says {}",
            verifier.checked(),
            manifest.count
        );
    }
    if first.map(|h| chain::to_hex(&h)).as_deref() != Some(manifest.first_hash.as_str())
        || chain::to_hex(&verifier.head()) != manifest.last_hash
    {
        bail!("the first or last hash does not match the manifest");
    }
    Ok(manifest)
}

/// Signs the chain's current head and keeps it (`None` for an empty log). Print or post the
/// returned line somewhere else too: a copy outside the database is what makes a rewrite of
/// the whole chain detectable.
///
/// A signature vouches for the chain up to the head, so the events since the last
/// checkpoint (all of them for the first) are verified first, and a chain that does not
/// verify is refused: signing it would make a tampered log look attested.
pub async fn checkpoint(
    store: &passage_store::AnyStore,
    key: &SigningKey,
    now: Timestamp,
) -> anyhow::Result<Option<passage_core::ports::Checkpoint>> {
    // The head record first: appends move it and the events together, so the events read
    // after it reach at least its position, with its hash there, unless they were cut.
    let recorded = store.recorded_head().await?.filter(|(p, _)| *p > 0);
    if let Some((at, recorded_hash)) = recorded {
        let found = store.read_all(at - 1, 1).await?;
        if !found
            .first()
            .is_some_and(|e| e.position == at && e.hash == recorded_hash)
        {
            bail!(
                "not signing: the log's head record (log_head) says position {at}, but {}: \
                 events were removed from the end, or the head record was edited; run \
                 `passage audit verify`",
                match found.first() {
                    Some(e) if e.position == at =>
                        format!("the event at position {at} has another hash"),
                    _ => "the events do not reach it".to_owned(),
                }
            );
        }
    }
    let Some((mut position, mut hash)) = store.head().await? else {
        return Ok(None);
    };
    // Another node may append and sign between our reading of the head and of the
    // checkpoints: then the head has moved on, and we start again from it.
    let mut tries = 0;
    while !verify_since_last_checkpoint(store, &key.verifying_key(), position, &hash).await? {
        tries += 1;
        if tries == 3 {
            bail!("not signing: the log kept moving past newer checkpoints; try again");
        }
        (position, hash) = store
            .head()
            .await?
            .ok_or_else(|| anyhow!("not signing: the log is empty now"))?;
    }
    let bytes = passage_core::ports::Checkpoint::signed_bytes(position, &hash, now);
    let c = passage_core::ports::Checkpoint {
        position,
        hash,
        created_at: now,
        public_key: hex(key.verifying_key().as_bytes()),
        signature: hex(&key.sign(&bytes).to_bytes()),
    };
    store.save_checkpoint(&c).await?;
    // Another node may have signed this position first: what is kept is what to publish.
    let kept = store
        .checkpoints()
        .await?
        .into_iter()
        .find(|k| k.position == position)
        .unwrap_or(c);
    Ok(Some(kept))
}

/// Verifies the events after the newest checkpoint at or below `position` (from the start
/// when there is none) up to `position`, which must end at `hash`. `Ok(false)`: a checkpoint
/// lies beyond `position` but the log has grown past it meanwhile (read the head again).
async fn verify_since_last_checkpoint<S: EventStore>(
    store: &S,
    key: &VerifyingKey,
    position: u64,
    hash: &passage_core::ports::Hash,
) -> anyhow::Result<bool> {
    let checkpoints = store.checkpoints().await?;
    // A checkpoint beyond the head means events were cut off the end: signing the shorter
    // log would attest the truncation. Unless the log grew past it since the head was read.
    if let Some(c) = checkpoints.iter().find(|c| c.position > position) {
        if store.head().await?.is_some_and(|(p, _)| p >= c.position) {
            return Ok(false);
        }
        bail!(
            "not signing: the log ends at position {position} but a checkpoint signed at {} \
             covers position {}: events were removed from the end; run `passage audit verify`",
            c.created_at,
            c.position
        );
    }
    let last = checkpoints.into_iter().max_by_key(|c| c.position);
    let (mut verifier, start) = match &last {
        Some(c) if !checkpoint_signed_by(c, key) => bail!(
            "not signing: the checkpoint at position {} is not signed by this deployment's \
             audit key; run `passage audit verify`",
            c.position
        ),
        Some(c) => (Verifier::resume(c.position + 1, c.hash), c.position),
        None => (Verifier::new(), 0),
    };
    each_event(store, start, Some(position), |e| {
        verifier.check(e).map_err(|bad| {
            anyhow!(
                "not signing: the chain does not verify at position {}: {}; run `passage audit \
                 verify`",
                bad.position,
                bad.fault
            )
        })
    })
    .await?;
    if start + verifier.checked() != position || verifier.head() != *hash {
        bail!(
            "not signing: the log's head says position {position}, but the chain verified \
             from position {} reaches position {}; run `passage audit verify`",
            start + 1,
            start + verifier.checked()
        );
    }
    Ok(true)
}

/// One line a person can publish and later compare.
pub fn checkpoint_line(c: &passage_core::ports::Checkpoint) -> String {
    format!(
        "checkpoint position={} hash={} at={} key={} signature={}",
        c.position,
        chain::to_hex(&c.hash),
        c.created_at.to_rfc3339(),
        c.public_key,
        c.signature
    )
}

/// Whether `c` was signed by `key` (a checkpoint signed by anything else is forged).
pub fn checkpoint_signed_by(c: &passage_core::ports::Checkpoint, key: &VerifyingKey) -> bool {
    let Ok(sig) = unhex::<64>(&c.signature, "signature") else {
        return false;
    };
    let bytes = passage_core::ports::Checkpoint::signed_bytes(c.position, &c.hash, c.created_at);
    hex(key.as_bytes()) == c.public_key && key.verify(&bytes, &Signature::from_bytes(&sig)).is_ok()
}

/// Signs the head every `every`, until shutdown (a node of `passage serve`).
pub async fn checkpoint_loop(
    store: passage_store::AnyStore,
    key: SigningKey,
    clock: impl Fn() -> Timestamp + Send + 'static,
    every: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        match store.head().await {
            Ok(Some((position, _))) if last == Some(position) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("checkpoint: cannot read the head: {e}");
                continue;
            }
        }
        match checkpoint(&store, &key, clock()).await {
            Ok(Some(c)) => {
                last = Some(c.position);
                tracing::info!("{}", checkpoint_line(&c));
            }
            Ok(None) => {}
            // A refusal means the log does not verify: an incident, not a hiccup.
            Err(e) => tracing::error!("checkpoint failed: {e:#}"),
        }
    }
}
