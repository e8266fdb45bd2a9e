//! `passage bot`: the Discord bot (bots/discord) in this process, with a worker whose
//! support alerts go to the Discord support channel (other messages to the configured
//! channels) and the stall scanner that raises those alerts.

use crate::app::App;
use crate::cli::BotArgs;
use anyhow::Context as _;
use passage_discord::{Discord, DiscordAlerts, DiscordConfig, WithDiscordAlerts};

pub async fn run(
    app: &App,
    args: &BotArgs,
    worker_options: passage_runtime::WorkerOptions,
) -> anyhow::Result<()> {
    let config = DiscordConfig::from_env().context("configure the Discord bot")?;
    let http = passage_discord::http(&config.token);
    let discord = Discord::new(http, app.engine.clone(), config);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let worker = passage_runtime::Worker::new(
        app.engine.clone(),
        WithDiscordAlerts {
            channels: app.channels.clone(),
            alerts: DiscordAlerts(discord.clone()),
        },
        worker_options,
    );
    let worker = tokio::spawn(worker.run(rx.clone()));
    let scanner = tokio::spawn(crate::stalls::run(
        app.engine.clone(),
        args.stall_scan.clone(),
        args.escalate_after,
        rx.clone(),
    ));
    let mut bot = tokio::spawn(passage_discord::run(discord, rx));
    eprintln!("Discord bot starting (worker and stall scanner running); Ctrl-C stops it");
    let result = tokio::select! {
        _ = crate::shutdown_signal() => Ok(()),
        r = &mut bot => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("the Discord connection failed")),
            Err(e) => Err(anyhow::Error::new(e).context("the Discord bot stopped")),
        },
    };
    let _ = tx.send(true);
    let _ = worker.await;
    let _ = scanner.await;
    if !bot.is_finished() {
        bot.abort();
    }
    result
}
