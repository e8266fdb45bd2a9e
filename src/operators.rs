//! `passage operators`: support and audit operators and their API tokens.

use crate::Refused;
use crate::app::App;
use crate::cli::OperatorsCommand;
use anyhow::{Context as _, bail};
use passage_core::roles::Role;
use passage_core::secrets::{Entropy as _, PasswordHasher as _, hex, session_hash};
use passage_runtime::OsEntropy;

pub async fn run(app: &App, cmd: OperatorsCommand) -> anyhow::Result<()> {
    let now = app.engine.now();
    match cmd {
        OperatorsCommand::Add {
            name,
            role,
            password_stdin,
        } => {
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
            {
                return Err(Refused(
                    "an operator name is 1 to 64 letters, digits, `.`, `_`, `-` or `@`".into(),
                )
                .into());
            }
            let password = read_password(password_stdin)?;
            if password.chars().count() < 15 {
                return Err(Refused(
                    "an operator password has at least 15 characters (R35)".into(),
                )
                .into());
            }
            let mut salt = [0u8; 16];
            OsEntropy.fill(&mut salt);
            let phc = passage_core::secrets::Argon2id::default()
                .hash(&passage_core::password::normalize(&password), &salt)
                .map_err(|e| anyhow::anyhow!("hash the password: {e}"))?;
            if !app.store.add_operator(&name, role, &phc, now).await? {
                return Err(Refused(format!("an operator named `{name}` exists")).into());
            }
            println!("operator {name} added with role {role}");
        }
        OperatorsCommand::List => {
            let ops = app.store.operators().await?;
            if ops.is_empty() {
                println!("no operators: add one with `passage operators add NAME --role admin`");
            }
            for o in &ops {
                println!(
                    "{:<24} {:<8} since {}{}",
                    o.name,
                    o.role,
                    o.created_at,
                    if o.disabled { "  (disabled)" } else { "" }
                );
            }
            for t in app.store.api_tokens().await? {
                println!(
                    "  token {}  {:<20} {:<8} {:<24} {}",
                    t.token_id,
                    t.operator,
                    t.role,
                    t.label,
                    match t.revoked_at {
                        Some(at) => format!("revoked {at}"),
                        None => "live".into(),
                    }
                );
            }
        }
        OperatorsCommand::Token { name, label, role } => {
            let ops = app.store.operators().await?;
            let Some(op) = ops.iter().find(|o| o.name == name && !o.disabled) else {
                return Err(Refused(format!("no enabled operator named `{name}`")).into());
            };
            let role = role.unwrap_or(op.role);
            if !narrower_or_same(op.role, role) {
                return Err(Refused(format!(
                    "a token cannot have more rights than its operator ({} cannot issue {role})",
                    op.role
                ))
                .into());
            }
            let mut b = [0u8; 32];
            OsEntropy.fill(&mut b);
            let token = format!("pst_{}", hex(&b));
            let id = app
                .store
                .add_api_token(&session_hash(&token), &name, role, &label, now)
                .await?;
            println!("{token}");
            eprintln!("token {id} for {name} ({role}): shown once, stored only as a hash");
        }
        OperatorsCommand::Disable { name } => {
            if !app.store.set_operator_disabled(&name, true).await? {
                return Err(Refused(format!("no operator named `{name}`")).into());
            }
            println!("operator {name} disabled: their sessions and tokens open nothing any more");
        }
        OperatorsCommand::Enable { name } => {
            if !app.store.set_operator_disabled(&name, false).await? {
                return Err(Refused(format!("no operator named `{name}`")).into());
            }
            println!("operator {name} enabled");
        }
        OperatorsCommand::Revoke { token_id } => {
            if !app.store.revoke_api_token(&token_id, now).await? {
                return Err(Refused(format!("no live token with id {token_id}")).into());
            }
            println!("token {token_id} revoked");
        }
    }
    Ok(())
}

/// Every right of `narrow` is a right of `wide`.
fn narrower_or_same(wide: Role, narrow: Role) -> bool {
    use passage_core::roles::Permission::*;
    [ReadJourneys, ActOnJourneys, ExportAudit, ManageOperators]
        .into_iter()
        .all(|p| !narrow.allows(p) || wide.allows(p))
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    use std::io::{BufRead as _, IsTerminal as _};
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("read the password from standard input")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    let a = rpassword::prompt_password("Password: ").context("read the password")?;
    let b = rpassword::prompt_password("Again: ").context("read the password")?;
    if a != b {
        bail!("the two passwords differ");
    }
    Ok(a)
}
