//! `passage demo`: the seed journey end to end, as a person would walk it, on the embedded
//! store and the dev outboxes.

use crate::app::App;
use crate::cli::{DemoArgs, DemoChannel};
use crate::render;
use anyhow::{Context as _, anyhow, bail};
use passage_core::journey::Reply;
use passage_core::journey::view::StepView;
use passage_core::ports::JourneyId;
use passage_core::secrets::Entropy;
use passage_runtime::{Actor, Input, OsEntropy, Outcome};

const WORDS: [&str; 32] = [
    "harbour", "lantern", "meadow", "copper", "violet", "glacier", "pebble", "saffron", "thimble",
    "orchard", "falcon", "velvet", "juniper", "quartz", "tundra", "maple", "cobalt", "willow",
    "ember", "pylon", "canyon", "marble", "nectar", "prairie", "rocket", "sierra", "tulip",
    "walnut", "zephyr", "basalt", "comet", "dune",
];

/// Five random words: a long passphrase with no composition rules (R37).
fn passphrase() -> String {
    let mut b = [0u8; 5];
    OsEntropy.fill(&mut b);
    b.iter()
        .map(|x| WORDS[(*x as usize) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn say(step: &str, text: impl AsRef<str>) {
    println!("  {step:<28} {}", text.as_ref());
}

fn accepted(o: &Outcome, what: &str) -> anyhow::Result<()> {
    match &o.reply {
        Reply::Accepted { .. } => Ok(()),
        Reply::Rejected(r) => bail!("{what} was refused ({}): {}", r.code, r.message),
    }
}

async fn read_code(app: &App, id: JourneyId, channel: &str) -> anyhow::Result<String> {
    let m =
        app.outbox.latest(id, channel).await?.ok_or_else(|| {
            anyhow!("no {channel} message reached the dev outbox for journey {id}")
        })?;
    say(
        &format!("{channel} received"),
        format!(
            "to {} ({})",
            m.recipient_masked(),
            m.subject.as_deref().unwrap_or("no subject")
        ),
    );
    m.code()
        .ok_or_else(|| anyhow!("the {channel} message carries no code"))
}

pub async fn run(app: &App, args: &DemoArgs) -> anyhow::Result<()> {
    let factors: &[&str] = match args.second_factor {
        DemoChannel::Sms => &["sms"],
        DemoChannel::Voice => &["call"],
        DemoChannel::Both => &["sms", "call"],
    };
    // The demo reads codes from the dev outbox; an address nobody has gets no code (R1),
    // so it would start a journey and then stall. Say so before anything is started.
    use passage_core::ports::AccountDirectory as _;
    let email = passage_core::mask::normalize_email(&args.email).map_err(|e| {
        crate::Usage(format!(
            "--email must be a demo account's address (e.g. alice@example.com): {e}"
        ))
    })?;
    match app.store.find_by_email(&email).await? {
        Some(account) if account.enabled => {}
        _ => {
            return Err(crate::Usage(format!(
                "{} is not an enabled account in the directory (erased, disabled or never \
                 seeded), so no code would be sent to it; run the demo with another account, \
                 e.g. --email bob.smith@example.com --second-factor voice",
                passage_core::mask::mask_email(&email)
            ))
            .into());
        }
    }
    for (i, factor) in factors.iter().enumerate() {
        if i > 0 {
            println!();
        }
        one(app, &args.email, factor).await?;
    }
    Ok(())
}

async fn one(app: &App, email: &str, factor: &str) -> anyhow::Result<()> {
    let person = Actor::person("demo");
    let label = if factor == "sms" { "SMS" } else { "voice call" };
    println!("== Password reset for {email} with {label} ==");
    let started = app
        .engine
        .start("password-reset", person.clone(), None)
        .await?;
    let id = started.journey_id;
    say("Forgot Password?", format!("journey {id} started"));

    let o = app
        .engine
        .submit(id, Input::Email(email.into()), person.clone(), None)
        .await?;
    accepted(&o, "the email")?;
    say("Send verification code", format!("for {email}"));
    app.worker
        .drain_journey(id)
        .await
        .context("deliver the email")?;
    let code = read_code(app, id, "email").await?;
    let o = app
        .engine
        .submit(id, Input::Code(code.clone()), person.clone(), None)
        .await?;
    accepted(&o, "the email code")?;
    say("6-digit code entered", format!("{code} accepted"));

    let Some(StepView::Choose {
        options,
        phone_masked,
        ..
    }) = &o.view.step
    else {
        bail!(
            "expected the choice of a second method, got {:?}",
            o.view.step
        );
    };
    let chosen = options
        .iter()
        .find(|x| x.id == factor)
        .ok_or_else(|| anyhow!("the definition offers no `{factor}` option"))?;
    let o = app
        .engine
        .submit(id, Input::Choose(factor.to_string()), person.clone(), None)
        .await?;
    accepted(&o, "the choice")?;
    say(
        "Second method",
        format!(
            "\"{}\" ({})",
            chosen.label,
            phone_masked.as_deref().unwrap_or("no phone")
        ),
    );
    app.worker
        .drain_journey(id)
        .await
        .context("deliver the second factor")?;

    let o = if factor == "sms" {
        let sms = read_code(app, id, "sms").await?;
        let o = app
            .engine
            .submit(id, Input::Code(sms.clone()), person.clone(), None)
            .await?;
        accepted(&o, "the SMS code")?;
        say("SMS code entered", format!("{sms} accepted"));
        o
    } else {
        let call = app
            .outbox
            .latest(id, "voice")
            .await?
            .ok_or_else(|| anyhow!("no call reached the dev outbox"))?;
        say(
            "Phone rings",
            format!("{}: \"{}\"", call.recipient_masked(), call.body),
        );
        let call_id = call.call_id.ok_or_else(|| anyhow!("the call has no id"))?;
        let o = app
            .engine
            .submit(
                id,
                Input::CallKeys {
                    call_id,
                    digits: "#".into(),
                },
                Actor::person("phone"),
                None,
            )
            .await?;
        accepted(&o, "pressing #")?;
        say("# pressed", "the call confirms and ends");
        o
    };

    if let Some(StepView::SetPassword { requirements, .. }) = &o.view.step {
        say(
            "Reset Password",
            format!("requirements: {}", requirements.join("; ")),
        );
    }
    let weak = "Password123!";
    let o = app
        .engine
        .submit(
            id,
            Input::Password {
                new: weak.into(),
                confirm: weak.into(),
            },
            person.clone(),
            None,
        )
        .await?;
    if let Reply::Rejected(r) = &o.reply {
        say("Weak password refused", &r.message);
    }
    let pw = passphrase();
    let o = app
        .engine
        .submit(
            id,
            Input::Password {
                new: pw.clone(),
                confirm: pw,
            },
            person.clone(),
            None,
        )
        .await?;
    accepted(&o, "the new password")?;
    say(
        "Update Password",
        "new five-word passphrase accepted (never shown or stored in plain form)",
    );
    app.worker
        .drain_journey(id)
        .await
        .context("apply the password and notify")?;
    let notice = app.outbox.latest(id, "email").await?;
    if let Some(n) = notice {
        say("Notification sent", n.subject.unwrap_or_default());
    }
    println!();
    print!("{}", render::view(&id.to_string(), &o.view));
    println!("\nTimeline:");
    print!("{}", render::timeline(&app.engine.timeline(id).await?));
    Ok(())
}
