//! The bot's configuration, from the environment.

use std::fmt;

/// What `passage bot` needs to talk to Discord.
#[derive(Clone)]
pub struct DiscordConfig {
    /// The bot token (`PASSAGE_DISCORD_TOKEN`). Never printed.
    pub token: String,
    /// Where support alerts are posted (`PASSAGE_DISCORD_SUPPORT_CHANNEL`, a channel id).
    pub support_channel: u64,
    /// Members of this role are the service desk (`PASSAGE_DISCORD_SUPPORT_ROLE`, a role id):
    /// checked on every interaction; escalated alerts mention it.
    pub support_role: u64,
    /// The portal's public base URL (`PASSAGE_PUBLIC_URL`), for the single-use links to the
    /// journey's page, e.g. `https://portal.example.com`.
    pub public_url: String,
    /// Register the slash commands in this guild only (`PASSAGE_DISCORD_GUILD`): they appear
    /// at once, where global commands may take a while. `None`: global commands.
    pub guild: Option<u64>,
}

impl fmt::Debug for DiscordConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscordConfig")
            .field("token", &"..")
            .field("support_channel", &self.support_channel)
            .field("support_role", &self.support_role)
            .field("public_url", &self.public_url)
            .field("guild", &self.guild)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no Discord bot token: set PASSAGE_DISCORD_TOKEN to the token of your application's bot \
         (Discord Developer Portal → your application → Bot → Reset Token); see docs/chatops.md"
    )]
    MissingToken,
    #[error("{name} is not set: it must be a Discord {what} id (a number; see docs/chatops.md)")]
    Missing {
        name: &'static str,
        what: &'static str,
    },
    #[error("{name} must be a Discord {what} id (a positive number)")]
    NotAnId {
        name: &'static str,
        what: &'static str,
    },
    #[error("PASSAGE_PUBLIC_URL must start with http:// or https://")]
    BadUrl,
}

impl DiscordConfig {
    /// Reads `PASSAGE_DISCORD_TOKEN`, `PASSAGE_DISCORD_SUPPORT_CHANNEL`,
    /// `PASSAGE_DISCORD_SUPPORT_ROLE`, `PASSAGE_PUBLIC_URL` (default `http://127.0.0.1:8080`)
    /// and the optional `PASSAGE_DISCORD_GUILD`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`DiscordConfig::from_env`], reading variables through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let token = get("PASSAGE_DISCORD_TOKEN")
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .ok_or(ConfigError::MissingToken)?;
        let id = |name: &'static str, what: &'static str| -> Result<u64, ConfigError> {
            let raw = get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .ok_or(ConfigError::Missing { name, what })?;
            raw.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(ConfigError::NotAnId { name, what })
        };
        let support_channel = id("PASSAGE_DISCORD_SUPPORT_CHANNEL", "channel")?;
        let support_role = id("PASSAGE_DISCORD_SUPPORT_ROLE", "role")?;
        let guild = match get("PASSAGE_DISCORD_GUILD").filter(|v| !v.trim().is_empty()) {
            Some(_) => Some(id("PASSAGE_DISCORD_GUILD", "guild (server)")?),
            None => None,
        };
        let public_url = get("PASSAGE_PUBLIC_URL")
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(ConfigError::BadUrl);
        }
        Ok(Self {
            token,
            support_channel,
            support_role,
            public_url,
            guild,
        })
    }
}
