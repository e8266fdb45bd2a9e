//! `passage chat`: the password reset as a conversation in a terminal. The conversation is
//! the chat bot's ([`passage_bot::Bot`], the same core a Discord transport drives); this
//! module is only its terminal transport:
//!
//! * it performs the core's engine actions on the in-process engine, delivering the outbox
//!   (`worker.drain_journey`: that journey's messages only) after each, as the
//!   `passage journey ...` commands do;
//! * it prints replies, with buttons as numbered choices (`[1] Re-send code`), and turns a
//!   number typed at the prompt into that button's press;
//! * while a call rings it polls the journey until the phone confirmed (or the call ended);
//! * it reads the new password itself, twice, with hidden input (or one line each from
//!   standard input when that is not a terminal, so tests can drive it), submits it to the
//!   engine and hands the outcome back to the core: the password never enters the
//!   conversation.

use crate::app::App;
use crate::cli::ChatArgs;
use anyhow::{Context as _, bail};
use passage_bot::{
    Bot, BotConfig, Button, ChatUser, EngineAction, EngineResult, Intent, Output, PersonIntent,
    SecretKind, Surface, WaitReason,
};
use passage_core::journey::view::{JourneyView, StepView};
use passage_core::journey::{Reply, Status};
use passage_core::ports::JourneyId;
use passage_runtime::Input;
use std::collections::HashSet;
use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

/// How often the journey is read while a call rings.
const POLL: Duration = Duration::from_millis(250);

pub async fn run(app: &App, args: &ChatArgs) -> anyhow::Result<()> {
    let mut config = BotConfig::new(Surface::TERMINAL, "Run `passage chat` to start again.");
    config.workflow = args.workflow.clone();
    let mut chat = Chat {
        app,
        bot: Bot::new(config),
        user: ChatUser::person("terminal", "chat"),
        journey: None,
        view: None,
        buttons: Vec::new(),
        hinted: HashSet::new(),
        interactive: std::io::stdin().is_terminal(),
    };
    chat.converse_until_done(args.email.clone()).await
}

/// What the terminal does after showing a turn's outputs.
enum Next {
    Prompt,
    Wait {
        journey: JourneyId,
        step: String,
    },
    Secret {
        journey: JourneyId,
        kind: SecretKind,
    },
    Ended(Status),
}

struct Chat<'a> {
    app: &'a App,
    bot: Bot,
    user: ChatUser,
    journey: Option<JourneyId>,
    /// The journey's view as last returned by the engine (for the hints).
    view: Option<JourneyView>,
    /// The buttons of the latest reply, numbered from 1 at the prompt.
    buttons: Vec<Button>,
    /// Hints already printed (dev outbox per channel, dev phone).
    hinted: HashSet<&'static str>,
    interactive: bool,
}

impl Chat<'_> {
    async fn converse_until_done(&mut self, email: Option<String>) -> anyhow::Result<()> {
        println!(
            "Passage password reset, as a chat. Answer at the > prompt; a number presses the \
             button shown with it. Ctrl-D or /quit leaves (the journey stays where it is)."
        );
        let start = PersonIntent::StartReset {
            from: self.user.clone(),
            email,
        };
        let mut outputs = self.converse(start.into()).await?;
        let Some(id) = self.journey else {
            self.present(outputs);
            bail!("no password reset was started");
        };
        println!("journey {id} started (`passage journey show {id}` shows its timeline)");
        loop {
            let next = self.present(outputs);
            self.print_hints();
            outputs = match next {
                Next::Ended(Status::Completed) => return Ok(()),
                Next::Ended(status) => bail!("the password reset {}", status.as_str()),
                Next::Wait { journey, step } => self.wait_for_call(journey, &step).await?,
                Next::Secret { journey, kind } => self.secret(journey, kind).await?,
                Next::Prompt => {
                    let line = prompt_line("> ")?;
                    let Some(line) = line.filter(|l| !matches!(l.trim(), "/quit" | "/exit")) else {
                        println!();
                        bail!(
                            "left the chat before the reset was complete; journey {id} stays \
                             where it is (`passage journey show {id}`)"
                        );
                    };
                    let intent = match line.trim().parse::<usize>() {
                        Ok(n) if (1..=self.buttons.len()).contains(&n) => PersonIntent::Press {
                            from: self.user.clone(),
                            custom_id: self.buttons[n - 1].custom_id.clone(),
                        },
                        _ => PersonIntent::Text {
                            from: self.user.clone(),
                            text: line,
                        },
                    };
                    self.converse(intent.into()).await?
                }
            };
        }
    }

    /// Runs one intent through the core, performing its engine actions.
    async fn converse(&mut self, intent: Intent) -> anyhow::Result<Vec<Output>> {
        let mut shown = Vec::new();
        let mut turn = self.bot.handle(intent);
        loop {
            shown.append(&mut turn.outputs);
            let Some(request) = turn.next else {
                return Ok(shown);
            };
            let result = match self.perform(request.action).await {
                Ok(r) => r,
                Err(e) => EngineResult::Failed {
                    message: format!("{e:#}"),
                },
            };
            turn = self
                .bot
                .resume(self.app.engine.now(), request.ticket, result)
                .context("continue the conversation")?;
        }
    }

    /// Prints the outputs; says what comes next.
    fn present(&mut self, outputs: Vec<Output>) -> Next {
        let mut next = Next::Prompt;
        for o in outputs {
            match o {
                Output::Reply(r) | Output::Direct { reply: r, .. } => {
                    println!();
                    for line in r.text.lines() {
                        println!("{line}");
                    }
                    if !r.buttons.is_empty() {
                        let choices: Vec<String> = r
                            .buttons
                            .iter()
                            .enumerate()
                            .map(|(i, b)| format!("[{}] {}", i + 1, b.label))
                            .collect();
                        println!("  {}", choices.join("  "));
                    }
                    self.buttons = r.buttons;
                }
                Output::SecretStep(s) => {
                    if !matches!(next, Next::Ended(_)) {
                        next = Next::Secret {
                            journey: s.journey,
                            kind: s.kind,
                        };
                    }
                }
                Output::Waiting(w) => {
                    if matches!(next, Next::Prompt) {
                        let WaitReason::CallConfirmation { .. } = w.reason;
                        next = Next::Wait {
                            journey: w.journey,
                            step: w.step,
                        };
                    }
                }
                Output::Ended { status, .. } => next = Next::Ended(status),
                // A terminal has no forms (Surface::TERMINAL never asks for one) and no
                // support channel for alerts.
                Output::Form(_) | Output::Alert(_) | Output::AlertUpdate(_) => {}
            }
        }
        next
    }

    /// Where the development channels put what the chat cannot show.
    fn print_hints(&mut self) {
        let (Some(id), Some(view)) = (self.journey, &self.view) else {
            return;
        };
        let hint = match &view.step {
            Some(StepView::Code { channel, .. }) if view.status == Status::Active => {
                Some(channel.as_str())
            }
            _ => None,
        };
        let Some(channel) = hint else { return };
        let name: &'static str = if channel == "email" { "email" } else { "sms" };
        if !self.dev_route(name) || !self.hinted.insert(name) {
            return;
        }
        println!(
            "(dev outbox: nothing is really sent. Read the {} code in another terminal: \
             passage outbox --journey {id})",
            if name == "email" { "email" } else { "SMS" }
        );
    }

    fn dev_route(&self, channel: &str) -> bool {
        matches!(
            self.app.channels.inner().route(channel),
            Some(passage_channels::Route::Dev(_))
        )
    }

    /// The call rings: poll the journey until the phone confirmed it or the call ended.
    async fn wait_for_call(
        &mut self,
        journey: JourneyId,
        step: &str,
    ) -> anyhow::Result<Vec<Output>> {
        println!("waiting for you to press # on the call… (Ctrl-C to stop)");
        if self.dev_route("voice") && self.hinted.insert("voice") {
            println!(
                "(dev phone: answer it from another terminal: passage call answer {journey} \
                 --press '#')"
            );
        }
        let _ = std::io::stdout().flush();
        loop {
            tokio::time::sleep(POLL).await;
            // Timers too: an unanswered call ends when its lifetime is over.
            self.app
                .worker
                .drain_journey(journey)
                .await
                .context("deliver outbox entries")?;
            let (_, _, view) = self.app.engine.load(journey).await?;
            let ringing = view.status == Status::Active
                && matches!(&view.step, Some(StepView::Voice { id, call_open: true, .. }) if id == step);
            if !ringing {
                self.view = Some(view.clone());
                return Ok(self.bot.observe(journey, None, &view));
            }
        }
    }

    /// A step whose secret never enters the conversation: read it here, submit it to the
    /// engine, and tell the core what happened.
    async fn secret(
        &mut self,
        journey: JourneyId,
        kind: SecretKind,
    ) -> anyhow::Result<Vec<Output>> {
        let input = match kind {
            SecretKind::NewPassword { .. } => {
                let new = self.read_secret("New password: ")?;
                let confirm = self.read_secret("Confirm new password: ")?;
                Input::Password { new, confirm }
            }
            // Not asked of a terminal (it takes codes at the prompt); handled all the same.
            SecretKind::Code { .. } => Input::Code(self.read_secret("Code: ")?),
        };
        let outcome = self
            .app
            .engine
            .submit(journey, input, passage_bot::engine::actor(&self.user), None)
            .await?;
        if let Reply::Accepted {
            session_token: Some(_),
        } = &outcome.reply
        {
            println!("signed in with a fresh session (token handed to the portal, not stored)");
        }
        let refusal = passage_bot::engine::refusal(&outcome.reply);
        self.app
            .worker
            .drain_journey(journey)
            .await
            .context("deliver outbox entries")?;
        let (_, _, view) = self.app.engine.load(journey).await?;
        self.view = Some(view.clone());
        Ok(self.bot.observe(journey, refusal.as_ref(), &view))
    }

    /// Hidden input on a terminal; a plain line from standard input otherwise.
    fn read_secret(&self, prompt: &str) -> anyhow::Result<String> {
        if self.interactive {
            return tokio::task::block_in_place(|| rpassword::prompt_password(prompt))
                .context("read hidden input");
        }
        match prompt_line(prompt)? {
            Some(line) => Ok(line),
            None => bail!("standard input ended before the password was given"),
        }
    }

    /// Performs one engine action, delivering what a command left in the outbox (and
    /// firing due timers) before the journey is read back, as the CLI commands do.
    async fn perform(&mut self, action: EngineAction) -> anyhow::Result<EngineResult> {
        let started = matches!(action, EngineAction::Start { .. });
        let worker = &self.app.worker;
        let result =
            passage_bot::engine::perform_settled(&self.app.engine, action, async |journey| {
                worker.drain_journey(journey).await.map(|_| ())
            })
            .await?;
        if let EngineResult::Journey { journey, view, .. } = &result {
            if started {
                self.journey = Some(*journey);
            }
            self.view = Some(view.clone());
        }
        Ok(result)
    }
}

/// Prints `prompt` and reads one line (without its line ending); `None` at end of input.
fn prompt_line(prompt: &str) -> anyhow::Result<Option<String>> {
    let mut out = std::io::stdout();
    let _ = write!(out, "{prompt}");
    let _ = out.flush();
    let mut line = String::new();
    let n = tokio::task::block_in_place(|| std::io::stdin().lock().read_line(&mut line))
        .context("read standard input")?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_owned()))
}
