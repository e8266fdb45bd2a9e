//! Support alerts in the support channel: one message per dedup key (`<journey>:<step>`),
//! posted once and edited in place afterwards.
//!
//! The map from dedup key to Discord message id is kept **in memory**. After a restart the
//! first update of an alert posted before it is posted as a new message (and remembered from
//! then on); nothing is lost, one old message stays behind unedited. Alerts live minutes
//! (a journey lasts minutes), so a table was not worth its migration; a deployment that
//! restarts often can swap [`AlertBoard`]'s map for a SQLite table keyed the same way.

use crate::render::{CANCEL_PREFIX, cut, rows};
use passage_bot::{AlertKey, AlertState, Button, ButtonId, ButtonStyle};
use serenity::all::{
    ChannelId, CreateAllowedMentions, CreateMessage, EditMessage, Http, HttpError, MessageId,
    RoleId,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// What to post or edit: the core's `Alert` or `AlertUpdate`, flattened.
#[derive(Debug, Clone)]
pub struct AlertPost {
    pub dedup_key: String,
    pub title: Option<String>,
    pub state: Option<AlertState>,
    pub text: String,
    pub buttons: Vec<Button>,
    pub mention: bool,
}

impl AlertPost {
    /// The post an output of the conversation core asks for, if it is an alert's.
    pub fn from_output(o: passage_bot::Output) -> Option<Self> {
        match o {
            passage_bot::Output::Alert(a) => Some(Self {
                dedup_key: a.dedup_key,
                title: Some(a.title),
                state: None,
                text: a.text,
                buttons: a.buttons,
                mention: a.mention,
            }),
            passage_bot::Output::AlertUpdate(u) => Some(Self {
                dedup_key: u.dedup_key,
                title: None,
                state: Some(u.state),
                text: u.text,
                buttons: u.buttons,
                mention: u.mention,
            }),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct AlertBoard {
    http: Arc<Http>,
    channel: ChannelId,
    role: RoleId,
    /// dedup key → the message posted for it. A tokio mutex held across the post, so two
    /// deliveries of one key cannot both post.
    messages: Mutex<HashMap<String, Posted>>,
}

/// The message an alert lives in, and whether it was posted as an escalation: its later
/// edits keep showing the role tag (without pinging again).
#[derive(Debug, Clone, Copy)]
struct Posted {
    id: MessageId,
    escalated: bool,
}

/// Discord's JSON error code for a message that does not exist (deleted by hand, or its
/// channel purged), returned with HTTP 404.
pub const UNKNOWN_MESSAGE: isize = 10008;

/// Whether Discord refused a request because the message is gone.
pub fn is_unknown_message(e: &serenity::Error) -> bool {
    matches!(
        e,
        serenity::Error::Http(HttpError::UnsuccessfulRequest(r)) if r.error.code == UNKNOWN_MESSAGE
    )
}

/// What a message an escalation replaced says instead, without buttons: acting on it would
/// look current while the alert has moved on.
const MOVED: &str = "**Password reset alert — escalated**\nThis alert continues in a newer \
                     message below.";

impl AlertBoard {
    pub fn new(http: Arc<Http>, channel: u64, role: u64) -> Self {
        Self {
            http,
            channel: ChannelId::new(channel),
            role: RoleId::new(role),
            messages: Mutex::new(HashMap::new()),
        }
    }

    /// The message id remembered for `dedup_key`.
    pub async fn message_of(&self, dedup_key: &str) -> Option<MessageId> {
        self.messages.lock().await.get(dedup_key).map(|p| p.id)
    }

    /// Posts the alert, or edits the message already posted for its key.
    pub async fn show(&self, alert: AlertPost) -> serenity::Result<MessageId> {
        let mut messages = self.messages.lock().await;
        let mut posted = messages.get(&alert.dedup_key).copied();
        let escalated = alert.mention || posted.is_some_and(|p| p.escalated);
        let (content, buttons) = self.render(&alert, escalated);
        let components = rows(&buttons, &[]);
        // Discord notifies nobody of a mention added by an edit: an escalation is a new
        // message (which later updates then edit), everything else edits in place.
        if let Some(old) = posted
            && !alert.mention
        {
            // An edit never pings, not even the role tag an escalated alert keeps showing.
            let edit = EditMessage::new()
                .content(content.clone())
                .components(components.clone())
                .allowed_mentions(CreateAllowedMentions::new());
            match self.channel.edit_message(&*self.http, old.id, edit).await {
                Ok(_) => return Ok(old.id),
                // Someone deleted the alert's message. Keeping its id would make this and
                // every later update of the alert fail for good: forget it and post the
                // alert anew, which later updates then edit.
                Err(e) if is_unknown_message(&e) => {
                    tracing::info!(
                        dedup_key = %alert.dedup_key,
                        "the alert's message {} is gone; posting it again",
                        old.id
                    );
                    messages.remove(&alert.dedup_key);
                    posted = None;
                }
                Err(e) => return Err(e),
            }
        }
        // Nobody is pinged by an alert, except the support role when it escalates.
        let mentions = if alert.mention {
            CreateAllowedMentions::new().roles(vec![self.role])
        } else {
            CreateAllowedMentions::new()
        };
        let post = CreateMessage::new()
            .content(content)
            .components(components)
            .allowed_mentions(mentions);
        let message = self.channel.send_message(&*self.http, post).await?;
        messages.insert(
            alert.dedup_key,
            Posted {
                id: message.id,
                escalated,
            },
        );
        if let Some(old) = posted {
            let retire = EditMessage::new()
                .content(MOVED)
                .components(Vec::new())
                .allowed_mentions(CreateAllowedMentions::new());
            // The escalation is posted and remembered: a stale message left with its
            // buttons is untidy, not lost work, so a failure here fails nothing.
            if let Err(e) = self.channel.edit_message(&*self.http, old.id, retire).await {
                tracing::warn!(
                    "could not retire the alert message an escalation replaced ({}): {e}",
                    old.id
                );
            }
        }
        Ok(message.id)
    }

    fn render(&self, alert: &AlertPost, escalated: bool) -> (String, Vec<Button>) {
        let mut content = String::new();
        if escalated {
            content.push_str(&format!("<@&{}> ", self.role));
        }
        let state = match &alert.state {
            Some(AlertState::Acknowledged { by }) => {
                Some(format!("Acknowledged by {}", display_user(by)))
            }
            Some(AlertState::Resolved { .. }) => Some("Resolved".to_owned()),
            Some(AlertState::Open) | None => None,
        };
        match (&alert.title, state) {
            (Some(t), _) => content.push_str(&format!("**{t}**\n")),
            (None, Some(s)) => content.push_str(&format!("**Password reset alert — {s}**\n")),
            (None, None) => content.push_str("**Password reset needs attention**\n"),
        }
        content.push_str(&alert.text);
        let mut buttons: Vec<Button> = alert
            .buttons
            .iter()
            .cloned()
            .map(|mut b| {
                // The core's "Show" is the journey's (redacted) timeline: its replay.
                if matches!(b.custom_id.parse::<ButtonId>(), Ok(ButtonId::Show { .. })) {
                    b.label = "Replay".into();
                }
                b
            })
            .collect();
        let resolved = matches!(alert.state, Some(AlertState::Resolved { .. }));
        if let (false, Ok(key)) = (resolved, alert.dedup_key.parse::<AlertKey>()) {
            buttons.push(Button {
                custom_id: format!("{CANCEL_PREFIX}{}", key.journey),
                label: "Cancel journey".into(),
                style: ButtonStyle::Danger,
            });
        }
        (cut(&content, crate::render::MAX_CONTENT), buttons)
    }
}

/// `discord:123` → `<@123>` (a mention rendered as a name; alerts allow no user pings).
fn display_user(id: &str) -> String {
    match id.strip_prefix("discord:") {
        Some(n) if n.bytes().all(|b| b.is_ascii_digit()) => format!("<@{n}>"),
        _ => id.to_owned(),
    }
}
