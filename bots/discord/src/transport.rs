//! The serenity adapter: interactions in, the core's outputs out.

use crate::alerts::{AlertBoard, AlertPost};
use crate::config::DiscordConfig;
use crate::render::{
    self, CANCEL_PREFIX, EMAIL_MODAL_ID, LinkButton, MAX_CONTENT, MODAL_INPUT_ID, cut, rows,
};
use crate::{engine, handoff_link};
use passage_bot::{
    Bot, BotConfig, Button, ButtonId, ChatUser, EngineResult, Intent, Output, PersonIntent, Reply,
    SecretKind, SupportIntent, Surface, SystemIntent, Turn,
};
use passage_core::journey::view::JourneyView;
use passage_core::ports::{
    AccountDirectory, Channel, EventStore, JourneyId, MessageKind, OutboundMessage, Receipt,
    SendError,
};
use passage_runtime::Engine;
use serenity::all::{
    ActionRowComponent, Command, CommandInteraction, CommandOptionType, ComponentInteraction,
    Context, CreateAllowedMentions, CreateCommand, CreateCommandOption, CreateInteractionResponse,
    CreateInteractionResponseFollowup, CreateInteractionResponseMessage, CreateMessage,
    CreateModal, EditInteractionResponse, EventHandler, GatewayIntents, GuildId, Http, HttpBuilder,
    Interaction, Member, ModalInteraction, Ready, ResolvedValue, RoleId, User, UserId,
};
use serenity::builder::Builder as _;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The `channel` recorded with every command a Discord user causes.
pub const CHANNEL: &str = "discord";

/// An interaction token works for 15 minutes; past this, progress goes by DM instead.
const TOKEN_FRESH: Duration = Duration::from_secs(14 * 60);

const NOT_SUPPORT: &str = "Only members of the support role can do that. Nothing was changed.";
const START_HINT: &str = "Use /reset to start again.";

/// Where a journey's progress goes when it moves on outside the conversation.
#[derive(Debug, Clone)]
struct Watch {
    user: UserId,
    /// The person's latest interaction token and when it arrived (followups are ephemeral).
    token: Option<(String, Instant)>,
    /// What was last shown: status and step (with whether its code/call went out).
    last: Option<String>,
}

/// One interaction to answer.
enum Origin<'a> {
    Command(&'a CommandInteraction),
    Component(&'a ComponentInteraction),
    Modal(&'a ModalInteraction),
}

impl Origin<'_> {
    fn token(&self) -> &str {
        match self {
            Origin::Command(i) => &i.token,
            Origin::Component(i) => &i.token,
            Origin::Modal(i) => &i.token,
        }
    }

    async fn respond(&self, http: &Http, r: CreateInteractionResponse) -> serenity::Result<()> {
        match self {
            Origin::Command(i) => i.create_response(http, r).await,
            Origin::Component(i) => i.create_response(http, r).await,
            Origin::Modal(i) => i.create_response(http, r).await,
        }
    }

    async fn edit(&self, http: &Http, e: EditInteractionResponse) -> serenity::Result<()> {
        match self {
            Origin::Command(i) => i.edit_response(http, e).await.map(drop),
            Origin::Component(i) => i.edit_response(http, e).await.map(drop),
            Origin::Modal(i) => i.edit_response(http, e).await.map(drop),
        }
    }
}

/// What an interaction causes besides its answer, done once it is answered.
enum SideEffect {
    /// A DM to another user (the person a support member nudged or whose reset was
    /// cancelled).
    Direct(String, Reply),
    /// Post or edit an alert in the support channel.
    Alert(AlertPost),
}

/// How the answer reaches the user.
enum Phase<'a> {
    /// The interaction's first (and only) response.
    Initial(&'a Origin<'a>),
    /// The interaction was deferred: edit the deferred response.
    Deferred(&'a Origin<'a>),
    /// Later progress: an ephemeral followup on the person's latest interaction token, or a
    /// DM when it is too old.
    Later(UserId, Option<String>),
}

/// The bot: the conversation core, the engine, and a serenity `Http` to answer with.
pub struct Discord<S, D> {
    http: Arc<Http>,
    engine: Engine<S, D>,
    config: DiscordConfig,
    bot: Mutex<Bot>,
    alerts: AlertBoard,
    watched: Mutex<HashMap<JourneyId, Watch>>,
    defer_after: Duration,
    /// Resets each Discord user started lately: Discord shows no client address, so the
    /// portal's per-client start limit (R17) is kept here per user instead.
    starts: Mutex<Starts>,
}

#[derive(Default)]
struct Starts {
    by_user: HashMap<UserId, Vec<std::time::Instant>>,
    swept: Option<std::time::Instant>,
}

/// Resets one Discord user may start per [`STARTS_WINDOW`], whatever the addresses.
pub const STARTS_PER_USER: usize = 5;
pub const STARTS_WINDOW: Duration = Duration::from_secs(10 * 60);

impl<S, D> fmt::Debug for Discord<S, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discord")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<S: EventStore, D: AccountDirectory> Discord<S, D> {
    /// How long the engine gets before an interaction is deferred (Discord wants a first
    /// response within 3 s of the interaction; this leaves room for the round trip).
    pub const DEFER_AFTER: Duration = Duration::from_millis(1500);

    pub fn new(http: Arc<Http>, engine: Engine<S, D>, config: DiscordConfig) -> Arc<Self> {
        Self::with_defer(http, engine, config, Self::DEFER_AFTER)
    }

    /// As [`Discord::new`], deferring after `defer_after` (tests use zero to see the
    /// deferred path).
    pub fn with_defer(
        http: Arc<Http>,
        engine: Engine<S, D>,
        config: DiscordConfig,
        defer_after: Duration,
    ) -> Arc<Self> {
        let mut bot = BotConfig::new(Surface::CHAT, START_HINT);
        bot.surface.watches = true;
        let alerts = AlertBoard::new(http.clone(), config.support_channel, config.support_role);
        Arc::new(Self {
            http,
            engine,
            bot: Mutex::new(Bot::new(bot)),
            alerts,
            watched: Mutex::new(HashMap::new()),
            starts: Mutex::new(Starts::default()),
            config,
            defer_after,
        })
    }

    pub fn alerts(&self) -> &AlertBoard {
        &self.alerts
    }

    pub fn http(&self) -> &Arc<Http> {
        &self.http
    }

    /// The chat user behind an interaction: `discord:<id>`, support when the member holds
    /// the support role (interactions in DMs carry no member: a person).
    fn user(&self, user: &User, member: Option<&Member>) -> ChatUser {
        let id = format!("discord:{}", user.id);
        let role = RoleId::new(self.config.support_role);
        if member.is_some_and(|m| m.roles.contains(&role)) {
            ChatUser::support(id, CHANNEL)
        } else {
            ChatUser::person(id, CHANNEL)
        }
    }

    /// Answers one interaction. Errors talking to Discord are logged, never panicked on.
    pub async fn handle_interaction(&self, interaction: Interaction) {
        let result = match &interaction {
            Interaction::Command(c) => self.command(c).await,
            Interaction::Component(c) => self.component(c).await,
            Interaction::Modal(m) => self.modal(m).await,
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!("could not answer a Discord interaction: {e}");
        }
    }

    /// Counts a start for `user`, or says how long until they may start another. The same
    /// answer whatever address they asked for (R1).
    fn start_allowed(&self, user: UserId) -> Result<(), String> {
        let now = std::time::Instant::now();
        let mut starts = lock(&self.starts);
        // Users with no start in the window are forgotten when the map is large, at most
        // once a minute, so a crowd of new users cannot make every start pay for a sweep.
        let due = starts
            .swept
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60));
        if starts.by_user.len() > 10_000 && due {
            starts
                .by_user
                .retain(|_, at| at.iter().any(|t| now.duration_since(*t) < STARTS_WINDOW));
            starts.swept = Some(now);
        }
        let at = starts.by_user.entry(user).or_default();
        at.retain(|t| now.duration_since(*t) < STARTS_WINDOW);
        if at.len() >= STARTS_PER_USER {
            let wait = STARTS_WINDOW.saturating_sub(now.duration_since(at[0]));
            let minutes = wait.as_secs().max(1).div_ceil(60);
            return Err(format!(
                "You have started {STARTS_PER_USER} password resets in the last {} minutes. \
                 Try again in {minutes} minute{}.",
                STARTS_WINDOW.as_secs() / 60,
                if minutes == 1 { "" } else { "s" }
            ));
        }
        at.push(now);
        Ok(())
    }

    async fn refuse(&self, origin: &Origin<'_>, text: &str) -> serenity::Result<()> {
        origin
            .respond(
                &self.http,
                CreateInteractionResponse::Message(ephemeral_message(text)),
            )
            .await
    }

    async fn command(&self, c: &CommandInteraction) -> serenity::Result<()> {
        let origin = Origin::Command(c);
        let from = self.user(&c.user, c.member.as_deref());
        let options = c.data.options();
        match c.data.name.as_str() {
            "reset" => {
                let email = options.iter().find_map(|o| match (o.name, &o.value) {
                    ("email", ResolvedValue::String(s)) => Some((*s).to_owned()),
                    _ => None,
                });
                if email.is_none() {
                    let current = lock(&self.bot).journey_of(&from.id);
                    // Resume only a journey that can go on past its email step; an ended
                    // one, or one still waiting for a valid address, starts over through
                    // the email modal (the bot reads no typed messages).
                    let current = match current {
                        Some(j) => match self.engine.load(j).await {
                            Ok((_, _, view)) => (view.status
                                == passage_core::journey::Status::Active
                                && !matches!(
                                    view.step,
                                    Some(passage_core::journey::view::StepView::Identify { .. })
                                ))
                            .then_some(j),
                            Err(_) => None,
                        },
                        None => None,
                    };
                    let Some(journey) = current else {
                        // Ask for the address in a modal: it stays out of the channel.
                        return origin
                            .respond(
                                &self.http,
                                CreateInteractionResponse::Modal(render::email_modal()),
                            )
                            .await;
                    };
                    // Resume: show where the journey is now.
                    let check = ButtonId::Check {
                        journey,
                        step: "resume".into(),
                    };
                    let intent = PersonIntent::Press {
                        from: from.as_person(),
                        custom_id: check.to_string(),
                    };
                    return self.converse(&origin, c.user.id, intent.into()).await;
                }
                if let Err(wait) = self.start_allowed(c.user.id) {
                    return self.refuse(&origin, &wait).await;
                }
                let intent = PersonIntent::StartReset {
                    from: from.as_person(),
                    email,
                };
                self.converse(&origin, c.user.id, intent.into()).await
            }
            "journey" | "journeys" => {
                if !from.is_support() {
                    return self.refuse(&origin, NOT_SUPPORT).await;
                }
                let Some(sub) = options.first() else {
                    return self.refuse(&origin, "Which one? See /journey.").await;
                };
                let ResolvedValue::SubCommand(args) = &sub.value else {
                    return self.refuse(&origin, "Which one? See /journey.").await;
                };
                let text = |name: &str| {
                    args.iter().find_map(|o| match (&o.value, o.name == name) {
                        (ResolvedValue::String(s), true) => Some((*s).to_owned()),
                        _ => None,
                    })
                };
                let at = args.iter().find_map(|o| match (&o.value, o.name == "at") {
                    (ResolvedValue::Integer(n), true) => Some(*n),
                    _ => None,
                });
                let intent: SupportIntent = match (c.data.name.as_str(), sub.name) {
                    ("journeys", "stalled") => SupportIntent::ListStalled { from },
                    ("journey", "show" | "replay") => {
                        let Some(journey) = text("id").and_then(|s| s.trim().parse().ok()) else {
                            return self
                                .refuse(&origin, "That is not a journey id (a UUID).")
                                .await;
                        };
                        match (sub.name, at) {
                            ("replay", Some(at)) => SupportIntent::ReplayJourney {
                                from,
                                journey,
                                at: usize::try_from(at.max(1)).unwrap_or(1),
                            },
                            _ => SupportIntent::ShowJourney { from, journey },
                        }
                    }
                    _ => return self.refuse(&origin, "Unknown command.").await,
                };
                self.converse(&origin, c.user.id, intent.into()).await
            }
            _ => self.refuse(&origin, "Unknown command.").await,
        }
    }

    async fn component(&self, c: &ComponentInteraction) -> serenity::Result<()> {
        let origin = Origin::Component(c);
        let from = self.user(&c.user, c.member.as_ref());
        let custom_id = c.data.custom_id.clone();
        if let Some(rest) = custom_id.strip_prefix(CANCEL_PREFIX) {
            if !from.is_support() {
                return self.refuse(&origin, NOT_SUPPORT).await;
            }
            if rest.parse::<JourneyId>().is_err() {
                return self
                    .refuse(
                        &origin,
                        "That button is not one I know: nothing was changed.",
                    )
                    .await;
            }
            return origin
                .respond(
                    &self.http,
                    CreateInteractionResponse::Modal(render::cancel_modal(&custom_id)),
                )
                .await;
        }
        // Support buttons from someone without the role: the core refuses them (no engine
        // action); the role was computed from this very interaction.
        let intent = PersonIntent::Press { from, custom_id };
        self.converse(&origin, c.user.id, intent.into()).await
    }

    async fn modal(&self, m: &ModalInteraction) -> serenity::Result<()> {
        let origin = Origin::Modal(m);
        let from = self.user(&m.user, m.member.as_ref());
        let value = m
            .data
            .components
            .iter()
            .flat_map(|row| row.components.iter())
            .find_map(|c| match c {
                ActionRowComponent::InputText(t) if t.custom_id == MODAL_INPUT_ID => {
                    t.value.clone()
                }
                _ => None,
            })
            .unwrap_or_default();
        let custom_id = m.data.custom_id.clone();
        let intent: Intent = if custom_id == EMAIL_MODAL_ID {
            if let Err(wait) = self.start_allowed(m.user.id) {
                return self.refuse(&origin, &wait).await;
            }
            PersonIntent::StartReset {
                from: from.as_person(),
                email: Some(value),
            }
            .into()
        } else if let Some(rest) = custom_id.strip_prefix(CANCEL_PREFIX) {
            if !from.is_support() {
                return self.refuse(&origin, NOT_SUPPORT).await;
            }
            let Ok(journey) = rest.parse::<JourneyId>() else {
                return self
                    .refuse(&origin, "Unknown form: nothing was changed.")
                    .await;
            };
            // As typed: the core applies the one reason rule (passage_core::reason).
            SupportIntent::CancelJourney {
                from,
                journey,
                reason: value,
            }
            .into()
        } else {
            PersonIntent::FormSubmitted {
                from,
                custom_id,
                value,
            }
            .into()
        };
        self.converse(&origin, m.user.id, intent).await
    }

    /// Runs an intent through the core and answers the interaction: at once when the core
    /// needs no engine action (a modal must be the first response), otherwise when the
    /// engine answered, or deferred first when it takes longer than `defer_after`.
    async fn converse(
        &self,
        origin: &Origin<'_>,
        user: UserId,
        intent: Intent,
    ) -> serenity::Result<()> {
        let turn = lock(&self.bot).handle(intent);
        if turn.next.is_none() {
            return self.present(turn.outputs, Phase::Initial(origin)).await;
        }
        let token = origin.token().to_owned();
        let work = self.run(turn, user, token);
        tokio::pin!(work);
        tokio::select! {
            outputs = &mut work => self.present(outputs, Phase::Initial(origin)).await,
            _ = tokio::time::sleep(self.defer_after) => {
                let defer = CreateInteractionResponse::Defer(
                    CreateInteractionResponseMessage::new().ephemeral(true),
                );
                let deferred = origin.respond(&self.http, defer).await;
                // Finish the turn even when Discord refused the deferral (a late or lost
                // interaction): dropping `work` would leave the core's ticket pending, and
                // the button answering "already on it" until the bot restarts.
                let outputs = work.await;
                deferred?;
                self.present(outputs, Phase::Deferred(origin)).await
            }
        }
    }

    /// Performs the turn's engine actions until the core needs none; remembers the person's
    /// journey so its progress can be followed.
    async fn run(&self, mut turn: Turn, user: UserId, token: String) -> Vec<Output> {
        let mut shown = Vec::new();
        let mut seen: Option<(JourneyId, String)> = None;
        loop {
            shown.append(&mut turn.outputs);
            let Some(request) = turn.next else { break };
            let result = engine::perform(&self.engine, request.action).await;
            if let EngineResult::Journey { journey, view, .. } = &result {
                seen = Some((*journey, progress_key(view)));
            }
            let next = lock(&self.bot).resume(self.engine.now(), request.ticket, result);
            turn = match next {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!("conversation protocol error: {e}");
                    shown.push(Output::Reply(Reply {
                        text: "Something went wrong on our side: nothing more was changed.".into(),
                        buttons: Vec::new(),
                        ephemeral: true,
                    }));
                    break;
                }
            };
        }
        let own = lock(&self.bot).journey_of(&format!("discord:{user}"));
        if let Some(journey) = own {
            let mut watched = lock(&self.watched);
            let w = watched.entry(journey).or_insert(Watch {
                user,
                token: None,
                last: None,
            });
            w.user = user;
            w.token = Some((token, Instant::now()));
            if let Some((j, key)) = seen.filter(|(j, _)| *j == journey) {
                debug_assert_eq!(j, journey);
                w.last = Some(key);
            }
        }
        shown
    }

    /// Shows the outputs: one ephemeral message for the user (texts joined, buttons in rows,
    /// the link to the page as a link button) or a modal, then DMs and alerts in the support
    /// channel.
    ///
    /// The answer goes first. Discord fails an interaction not answered within 3 seconds
    /// ("This interaction failed", although the engine recorded the action), and a DM or an
    /// alert edit can take longer than that: the alert board is locked while the worker
    /// posts, and a rate-limited support channel holds every request on it.
    async fn present(&self, outputs: Vec<Output>, phase: Phase<'_>) -> serenity::Result<()> {
        let mut texts: Vec<String> = Vec::new();
        let mut buttons = Vec::new();
        let mut links = Vec::new();
        let mut modal = None;
        let mut after: Vec<SideEffect> = Vec::new();
        for o in outputs {
            match o {
                Output::Reply(r) => {
                    texts.push(r.text);
                    buttons.extend(r.buttons);
                }
                Output::Direct { user, reply } => after.push(SideEffect::Direct(user, reply)),
                Output::Form(f) => modal = Some(render::modal(&f)),
                Output::SecretStep(s) => {
                    let link = handoff_link(
                        self.engine.keys(),
                        &self.config.public_url,
                        s.journey,
                        self.engine.now(),
                    );
                    let (what, label) = match s.kind {
                        SecretKind::NewPassword { .. } => {
                            ("choose your new password", "Choose new password")
                        }
                        SecretKind::Code { .. } => ("enter your code", "Enter code on the page"),
                    };
                    texts.push(format!(
                        "Please {what} on the secure page: the link below works once and \
                         expires in 10 minutes. Never type a password in Discord."
                    ));
                    links.push(LinkButton {
                        label: label.into(),
                        url: link,
                    });
                }
                Output::Waiting(_) => {
                    texts.push("I'll tell you here as soon as the call is confirmed.".to_owned())
                }
                Output::Ended { journey, .. } => {
                    lock(&self.watched).remove(&journey);
                }
                alert @ (Output::Alert(_) | Output::AlertUpdate(_)) => {
                    after.extend(AlertPost::from_output(alert).map(SideEffect::Alert));
                }
            }
        }
        let answered = self.answer(texts, buttons, links, modal, phase).await;
        // Whether or not Discord took the answer, the engine did what it answers: the
        // person is still written to and the alert still updated.
        for effect in after {
            match effect {
                SideEffect::Direct(user, reply) => {
                    if let Err(e) = self.direct(&user, reply).await {
                        tracing::warn!("could not DM a Discord user: {e}");
                    }
                }
                SideEffect::Alert(post) => self.post_alert(post).await,
            }
        }
        answered
    }

    /// The answer itself: the interaction's response (a message or a modal), the edit of a
    /// deferred response, or later progress as a followup or a DM.
    async fn answer(
        &self,
        mut texts: Vec<String>,
        buttons: Vec<Button>,
        links: Vec<LinkButton>,
        modal: Option<CreateModal>,
        phase: Phase<'_>,
    ) -> serenity::Result<()> {
        if let (Some(m), Phase::Initial(origin)) = (modal, &phase) {
            return origin
                .respond(&self.http, CreateInteractionResponse::Modal(m))
                .await;
        }
        if texts.is_empty() && buttons.is_empty() && links.is_empty() {
            if matches!(phase, Phase::Later(..)) {
                return Ok(());
            }
            texts.push("Done.".into());
        }
        let content = cut(&texts.join("\n\n"), MAX_CONTENT);
        let components = rows(&buttons, &links);
        match phase {
            Phase::Initial(origin) => {
                let msg = ephemeral_message(&content).components(components);
                origin
                    .respond(&self.http, CreateInteractionResponse::Message(msg))
                    .await
            }
            Phase::Deferred(origin) => {
                let edit = EditInteractionResponse::new()
                    .content(content)
                    .components(components)
                    .allowed_mentions(CreateAllowedMentions::new());
                origin.edit(&self.http, edit).await
            }
            Phase::Later(user, token) => {
                if let Some(token) = token {
                    let followup = CreateInteractionResponseFollowup::new()
                        .content(content.clone())
                        .components(components.clone())
                        .ephemeral(true)
                        .allowed_mentions(CreateAllowedMentions::new());
                    match followup.execute(&*self.http, (None, &token)).await {
                        Ok(_) => return Ok(()),
                        Err(e) => tracing::debug!("followup failed, sending a DM: {e}"),
                    }
                }
                let dm = user.create_dm_channel(&*self.http).await?;
                dm.id
                    .send_message(
                        &*self.http,
                        CreateMessage::new()
                            .content(content)
                            .components(components)
                            .allowed_mentions(CreateAllowedMentions::new()),
                    )
                    .await
                    .map(drop)
            }
        }
    }

    async fn post_alert(&self, alert: AlertPost) {
        if let Err(e) = self.alerts.show(alert).await {
            tracing::warn!("could not post or edit a support alert: {e}");
        }
    }

    /// A reply to another user (the person a support member nudged): a DM.
    async fn direct(&self, user: &str, reply: Reply) -> serenity::Result<()> {
        let Some(id) = user
            .strip_prefix("discord:")
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n > 0)
        else {
            return Ok(());
        };
        let dm = UserId::new(id).create_dm_channel(&*self.http).await?;
        dm.id
            .send_message(
                &*self.http,
                CreateMessage::new()
                    .content(cut(&reply.text, MAX_CONTENT))
                    .components(rows(&reply.buttons, &[]))
                    .allowed_mentions(CreateAllowedMentions::new()),
            )
            .await
            .map(drop)
    }

    /// Delivers one engine alert: through the core (which tracks it and adds its buttons,
    /// or shows it resolved without them), then posted or edited in the support channel.
    /// Returns the message id.
    pub async fn deliver_alert(
        &self,
        dedup_key: &str,
        text: &str,
        update: bool,
        mention: bool,
        resolved: bool,
    ) -> Result<Receipt, SendError> {
        let turn = lock(&self.bot).handle(SystemIntent::AlertDelivered {
            dedup_key: dedup_key.to_owned(),
            text: text.to_owned(),
            update,
            mention,
            resolved,
        });
        let mut last = None;
        for o in turn.outputs {
            let Some(post) = AlertPost::from_output(o) else {
                continue;
            };
            last = Some(self.alerts.show(post).await.map_err(send_error)?);
        }
        let id =
            last.ok_or_else(|| SendError::Permanent("the alert rendered to nothing".into()))?;
        Ok(Receipt {
            provider_ref: format!("discord-message:{id}"),
        })
    }

    /// Whether the journey's alert `dedup_key` is over (the journey ended or left the
    /// alerted step), by the engine's own rule (`JourneyState::alert_resolved`, the one its
    /// closing `Effect::RaiseAlert { resolved: true }` is decided by): for a refresh
    /// delivered late, after the closing update (which carries the flag itself). A
    /// journey that cannot be read leaves the alert open: buttons that turn out stale are
    /// answered as such, a closed alert that looks open is only untidy.
    async fn alert_resolved(&self, journey: JourneyId, dedup_key: &str) -> bool {
        match self.engine.load(journey).await {
            Ok((state, _, _)) => state.alert_resolved(dedup_key),
            Err(e) => {
                tracing::warn!(%journey, "could not read the journey of an alert: {e}");
                false
            }
        }
    }

    /// Follows the event log and tells people whose journey moved on outside the
    /// conversation (the linked page, the phone, a timer): reads `EventStore::read_all`
    /// from the last position seen, waking on the store's work signal (`wait_for_work`:
    /// commits that add effects or timers, from any process) or every `interval` at the
    /// latest (commits with neither, such as an accepted code). Runs until `shutdown`.
    pub async fn follow_events(
        self: Arc<Self>,
        interval: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let store = self.engine.store().clone();
        // Start at the end of the log: only what happens from now on is news.
        let mut after = match store.head().await {
            Ok(head) => head.map_or(0, |(position, _)| position),
            Err(e) => {
                tracing::warn!("read the head of the event log: {e}; following from the start");
                0
            }
        };
        loop {
            if *shutdown.borrow() {
                return;
            }
            tokio::select! {
                _ = store.wait_for_work(interval) => {}
                _ = shutdown.changed() => return,
            }
            after = self.catch_up(after).await;
        }
    }

    /// Reads the events after `after`, shows progress for the watched journeys among them,
    /// and returns the new position.
    pub async fn catch_up(&self, mut after: u64) -> u64 {
        let mut moved = Vec::new();
        loop {
            let events = match self.engine.store().read_all(after, 500).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!("read the event log: {e}");
                    break;
                }
            };
            let Some(last) = events.last() else { break };
            after = last.position;
            for e in &events {
                if !moved.contains(&e.stream) {
                    moved.push(e.stream);
                }
            }
        }
        for journey in moved {
            if lock(&self.watched).contains_key(&journey)
                && let Err(e) = self.progress(journey).await
            {
                tracing::warn!(%journey, "could not tell a person about progress: {e}");
            }
        }
        after
    }

    async fn progress(&self, journey: JourneyId) -> serenity::Result<()> {
        let Ok((_, _, view)) = self.engine.load(journey).await else {
            return Ok(());
        };
        let key = progress_key(&view);
        let (user, token) = {
            let mut watched = lock(&self.watched);
            let Some(w) = watched.get_mut(&journey) else {
                return Ok(());
            };
            if w.last.as_deref() == Some(key.as_str()) {
                return Ok(());
            }
            w.last = Some(key);
            let token = w
                .token
                .as_ref()
                .filter(|(_, at)| at.elapsed() < TOKEN_FRESH)
                .map(|(t, _)| t.clone());
            (w.user, token)
        };
        let outputs = lock(&self.bot).observe(journey, None, &view);
        if view.status.is_finished() {
            lock(&self.watched).remove(&journey);
        }
        self.present(outputs, Phase::Later(user, token)).await
    }
}

/// What changes when a journey makes progress: status, step, whether the step's code or
/// call went out, whether a call is open. (Not countdowns: they would fire every second.)
fn progress_key(view: &JourneyView) -> String {
    let step = serde_json::to_value(&view.step).unwrap_or_default();
    format!(
        "{}|{}|{}|{}|{}",
        view.status.as_str(),
        step.get("kind").and_then(|v| v.as_str()).unwrap_or(""),
        step.get("id").and_then(|v| v.as_str()).unwrap_or(""),
        step.get("sent_to").is_some_and(|v| !v.is_null()),
        step.get("call_open")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
    )
}

fn ephemeral_message(text: &str) -> CreateInteractionResponseMessage {
    CreateInteractionResponseMessage::new()
        .content(cut(text, MAX_CONTENT))
        .ephemeral(true)
        .allowed_mentions(CreateAllowedMentions::new())
}

fn send_error(e: serenity::Error) -> SendError {
    use serenity::all::HttpError;
    match &e {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(r)) => {
            let status = r.status_code.as_u16();
            if status == 429 {
                SendError::RateLimited { retry_after: None }
            } else if (400..500).contains(&status) {
                SendError::Permanent(format!("Discord refused the alert: HTTP {status}"))
            } else {
                SendError::Transient(format!("Discord: HTTP {status}"))
            }
        }
        _ => SendError::Transient(format!("Discord: {e}")),
    }
}

/// The engine's support alerts, delivered to Discord: a [`Channel`] that posts
/// (`update = false`) or edits (`update = true`, same dedup key) the alert's message in the
/// support channel. Other messages are refused permanently: wrap the deployment's channels
/// in [`WithDiscordAlerts`] instead.
pub struct DiscordAlerts<S, D>(pub Arc<Discord<S, D>>);

impl<S, D> Clone for DiscordAlerts<S, D> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<S, D> fmt::Debug for DiscordAlerts<S, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DiscordAlerts")
    }
}

impl<S: EventStore, D: AccountDirectory> Channel for DiscordAlerts<S, D> {
    async fn deliver(&self, message: &OutboundMessage) -> Result<Receipt, SendError> {
        match &message.kind {
            MessageKind::Alert {
                dedup_key,
                text,
                update,
                mention,
                resolved,
            } => {
                // The engine's flag on its closing update; the journey's own state for a
                // refresh delivered late, after the alert was closed.
                let resolved =
                    *resolved || self.0.alert_resolved(message.journey_id, dedup_key).await;
                // Only keys the core recognises (`<journey>:<step>`) get buttons; others
                // are posted as text.
                self.0
                    .deliver_alert(dedup_key, text, *update, *mention, resolved)
                    .await
            }
            other => Err(SendError::Permanent(format!(
                "the Discord alert sink does not deliver {} messages",
                other.channel()
            ))),
        }
    }
}

/// The deployment's channels, with support alerts going to Discord instead.
#[derive(Debug, Clone)]
pub struct WithDiscordAlerts<C, S, D> {
    pub channels: C,
    pub alerts: DiscordAlerts<S, D>,
}

impl<C: Channel, S: EventStore, D: AccountDirectory> Channel for WithDiscordAlerts<C, S, D> {
    async fn deliver(&self, message: &OutboundMessage) -> Result<Receipt, SendError> {
        match message.kind {
            MessageKind::Alert { .. } => self.alerts.deliver(message).await,
            _ => self.channels.deliver(message).await,
        }
    }
}

/// The slash commands: `/reset [email]`, `/journey show|replay <id> [at]`,
/// `/journeys stalled`. The support commands are checked against the support role on
/// every use (Discord's own command permissions are a convenience on top).
pub fn commands() -> Vec<CreateCommand> {
    let id = || {
        CreateCommandOption::new(CommandOptionType::String, "id", "The journey id (a UUID)")
            .required(true)
    };
    vec![
        CreateCommand::new("reset")
            .description("Reset your password, or see where your reset is")
            .add_option(CreateCommandOption::new(
                CommandOptionType::String,
                "email",
                "Your account's email address (or leave empty to be asked privately)",
            )),
        CreateCommand::new("journey")
            .description("Support: a password-reset journey")
            .add_option(
                CreateCommandOption::new(
                    CommandOptionType::SubCommand,
                    "show",
                    "Where the journey is and its (redacted) timeline",
                )
                .add_sub_option(id()),
            )
            .add_option(
                CreateCommandOption::new(
                    CommandOptionType::SubCommand,
                    "replay",
                    "The journey's redacted timeline, or its state after the first AT events",
                )
                .add_sub_option(id())
                .add_sub_option(
                    CreateCommandOption::new(
                        CommandOptionType::Integer,
                        "at",
                        "Replay up to this many events",
                    )
                    .min_int_value(1),
                ),
            ),
        CreateCommand::new("journeys")
            .description("Support: password-reset journeys")
            .add_option(CreateCommandOption::new(
                CommandOptionType::SubCommand,
                "stalled",
                "Open alerts, and active journeys past their step's stall deadline",
            )),
    ]
}

/// serenity's event handler: registers the commands when connected, hands every
/// interaction to [`Discord::handle_interaction`] on its own task.
pub struct Handler<S, D> {
    pub discord: Arc<Discord<S, D>>,
}

impl<S, D> fmt::Debug for Handler<S, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handler")
    }
}

#[serenity::async_trait]
impl<S: EventStore, D: AccountDirectory> EventHandler for Handler<S, D> {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        let http = &self.discord.http;
        http.set_application_id(ready.application.id);
        let registered = match self.discord.config.guild {
            Some(g) => GuildId::new(g).set_commands(&**http, commands()).await,
            None => Command::set_global_commands(&**http, commands()).await,
        };
        match registered {
            Ok(c) => tracing::info!(
                user = %ready.user.name,
                commands = c.len(),
                "connected to Discord; slash commands registered"
            ),
            Err(e) => tracing::error!("could not register the slash commands: {e}"),
        }
    }

    async fn interaction_create(&self, _ctx: Context, interaction: Interaction) {
        let discord = self.discord.clone();
        tokio::spawn(async move { discord.handle_interaction(interaction).await });
    }
}

/// Connects to Discord and runs until `shutdown`: the gateway client, the event-log
/// follower. Returns the bot so the caller can deliver alerts through it (build it with
/// [`Discord::new`] first and pass it here).
pub async fn run<S: EventStore, D: AccountDirectory>(
    discord: Arc<Discord<S, D>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), serenity::Error> {
    // Interactions arrive without privileged intents; GUILDS keeps the session minimal.
    let http = HttpBuilder::new(&discord.config.token).build();
    let mut client = serenity::all::ClientBuilder::new_with_http(http, GatewayIntents::GUILDS)
        .event_handler(Handler {
            discord: discord.clone(),
        })
        .await?;
    let follower = tokio::spawn(
        discord
            .clone()
            .follow_events(Duration::from_millis(500), shutdown.clone()),
    );
    let shards = client.shard_manager.clone();
    tokio::spawn(async move {
        let _ = shutdown.changed().await;
        shards.shutdown_all().await;
    });
    let result = client.start().await;
    follower.abort();
    result
}

/// A serenity `Http` for the bot's token (the REST client the bot answers with).
pub fn http(token: &str) -> Arc<Http> {
    Arc::new(HttpBuilder::new(token).build())
}
