//! `passage`: the command-line entry point. Only wiring and presentation live here; every
//! rule is in `passage-core`.

mod accounts;
mod app;
mod audit;
mod bench;
mod bench_search;
mod bench_stalls;
mod budgets;
mod callbacks;
mod chat;
mod cli;
mod demo;
mod discord_bot;
mod funnel;
mod operators;
mod render;
mod seed;
mod stalls;
mod subjects;

use anyhow::Context as _;
use app::App;
use clap::Parser;
use cli::{
    AuditCommand, CallCommand, CallOutcome, Cli, Command, JourneyCommand, JourneysCommand,
    WorkflowsCommand,
};
use passage_channels::MessageFilter;
use passage_core::chain::{self, Verifier};
use passage_core::definition::DefinitionErrors;
use passage_core::journey::view::StepView;
use passage_core::journey::{CallFailure, Reply};
use passage_core::ports::{EventStore, JourneyFilter, JourneyId};
use passage_runtime::{Actor, Input, Outcome};
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

/// An outcome that is not a crash but should fail a script: exit status 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// The command line asked for something impossible: exit status 2, like clap's own errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Usage(pub(crate) String);

macro_rules! usage {
    ($($arg:tt)*) => { return Err(Usage(format!($($arg)*)).into()) };
}

fn main() -> ExitCode {
    // One TLS crypto provider for every client (SMTP, HTTP), chosen before any is built.
    passage_channels::install_crypto_provider();
    let cli = Cli::parse();
    init_tracing(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(d) = e.downcast_ref::<DefinitionErrors>() {
                eprintln!("{d}");
                return ExitCode::from(2);
            }
            if let Some(u) = e.downcast_ref::<Usage>() {
                eprintln!("error: {u}");
                return ExitCode::from(2);
            }
            if let Some(r) = e.downcast_ref::<Refused>() {
                eprintln!("{r}");
                return ExitCode::from(1);
            }
            eprintln!("error: {}", causes(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated like `{:#}`, without a cause its parent already
/// printed: sqlx's errors repeat their source in their own message ("(code: 26) file is not
/// a database: (code: 26) file is not a database").
fn causes(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut last = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !last.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        last = text;
    }
    out
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: logs redirected to a file stay plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// A malformed id is bad usage (exit 2); a well-formed one that names no journey is an
/// input the store refuses (exit 1), reported where it is looked up.
fn journey_id(s: &str) -> anyhow::Result<JourneyId> {
    s.trim().parse().map_err(|_| {
        Usage(format!(
            "`{s}` is not a journey id (a UUID such as 0193b7c2-…, see `passage journeys list`)"
        ))
        .into()
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Workflows(WorkflowsCommand::Check { files }) = &cli.command {
        return check_workflows(files);
    }
    if let Command::Accounts(cli::AccountsCommand::Import { file, check: true }) = &cli.command {
        return accounts::check(file);
    }
    if let Command::Audit(AuditCommand::VerifyExport { file, public_key }) = &cli.command {
        // Offline by design: no store, no secret.
        let m = audit::verify_export(file, public_key)
            .map_err(|e| Refused(format!("verify-export FAILED: {e:#}")))?;
        println!(
            "verify-export ok: {} events, positions {} to {}, last hash {}, signed by {}",
            m.count, m.from_position, m.to_position, m.last_hash, m.public_key
        );
        return Ok(());
    }
    if let Command::Audit(AuditCommand::Verify {
        public_key: Some(hex),
    }) = &cli.command
    {
        // The published key instead of the secret: the reviewer trusts what was published,
        // not what the database or a secret says, and reads the store without any secret.
        let key = audit::verifying_key(hex).map_err(|e| Usage(format!("--public-key: {e:#}")))?;
        let store = app::open_store(&cli.global, false, true).await?;
        let recorded = store
            .deployment_key()
            .await
            .context("read the deployment's audit key")?;
        let result = audit_verify(&store, key, recorded.as_deref(), true).await;
        store.close().await;
        return result;
    }
    if let Command::Bench(args) = &cli.command {
        // Scratch stores only: a benchmark never touches the configured database.
        let definitions = app::load_definitions(&cli.global.workflows)?;
        return match args.scenario {
            cli::BenchScenario::Throughput => bench::run(args, definitions).await,
            cli::BenchScenario::Stalls => bench_stalls::run(args, definitions).await,
            cli::BenchScenario::Search => bench_search::run(args).await,
        };
    }
    let config =
        passage_channels::ChannelsConfig::from_env().context("read the channel configuration")?;
    if let Command::Serve(args) = &cli.command {
        // Before the store is opened (or created): nothing to undo when refused.
        refuse_public_dev_channels(&config, args)?;
    }
    if matches!(cli.command, Command::Serve(_) | Command::Worker(_))
        && config.alerts.is_some()
        && std::env::var_os("PASSAGE_DISCORD_SUPPORT_CHANNEL").is_some()
    {
        // The nodes would post alerts to the webhook while `passage bot` posts them to
        // Discord: the same refusal the bot makes, for a deployment that shares one
        // environment (a bot in another environment cannot be seen from here).
        usage!(
            "both PASSAGE_ALERT_WEBHOOK_URL and PASSAGE_DISCORD_SUPPORT_CHANNEL are set: \
             support alerts would be split between the webhook and `passage bot`; keep one"
        );
    }
    if let Command::Bot(_) = &cli.command {
        // The same: a first run without its token must not create the store, a key file,
        // or record that key as the deployment's (`discord_bot::run` reads it again).
        passage_discord::DiscordConfig::from_env().context("configure the Discord bot")?;
        // Both would take support alerts from the one outbox: each alert's updates would
        // land in whichever claimed them, half on Discord with stale buttons, half on the
        // webhook. One sink, chosen here, instead.
        if config.alerts.is_some() {
            usage!(
                "PASSAGE_ALERT_WEBHOOK_URL is set, and `passage bot` posts support alerts to \
                 Discord itself: unset the webhook for the nodes (alerts then go to the bot's \
                 support channel), or run without the bot (alerts go to the webhook)"
            );
        }
    }
    if let Some(args) = cli.command.worker_args() {
        // A lease too short for a provider is refused before the store is opened (or, on
        // a first run, created); `dispatch` computes the same options from the open app.
        worker_options(config.slowest_timeout(), args)?;
    }
    let secret = match &cli.command {
        // `audit verify` names a checkpoint signed with another key itself, with both keys.
        Command::Audit(AuditCommand::Verify { .. } | AuditCommand::PublicKey) => {
            app::SecretCheck::Skip
        }
        // Signing a checkpoint binds the log to this secret as much as writing to it does.
        Command::Audit(AuditCommand::Checkpoint) => app::SecretCheck::Record,
        c if c.creates_store() => app::SecretCheck::Record,
        _ => app::SecretCheck::Compare,
    };
    let budgets = match cli.command {
        Command::Demo(_) | Command::Chat(_) => app::Budgets::PerProcess,
        _ => app::Budgets::Shared,
    };
    let app = app::open(
        &cli.global,
        &config,
        cli.command.creates_store(),
        secret,
        budgets,
        cli.command.only_reads(),
    )
    .await?;
    let result = dispatch(&app, cli).await;
    app.close().await;
    result
}

async fn dispatch(app: &App, cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run(app, &args).await,
        Command::Chat(args) => chat::run(app, &args).await,
        Command::Journey(cmd) => journey(app, cmd).await,
        Command::Operators(cmd) => operators::run(app, cmd).await,
        Command::Accounts(cli::AccountsCommand::Import { file, .. }) => {
            accounts::import(app, &file).await
        }
        Command::Subjects(cmd) => subjects::run(app, cmd).await,
        Command::Journeys(JourneysCommand::List {
            status,
            workflow,
            email,
            limit,
        }) => {
            // A masked address lists everyone it masks; a full one exactly that person's
            // journeys, through the keyed pseudonym the read model keeps (as the console
            // searches), not everyone whose address masks the same.
            let (email_masked, subject) = match email {
                None => (None, None),
                Some(e) if e.contains('•') || e.contains('*') => {
                    (Some(e.replace('*', "•")), None)
                }
                Some(e) => match passage_core::mask::normalize_email(&e) {
                    Ok(n) => (None, Some(app.engine.keys().subject(&n))),
                    Err(why) => usage!(
                        "--email {e:?} is neither an email address ({why}) nor a masked one \
                         such as a•••e@e•••.com"
                    ),
                },
            };
            let rows = app
                .store
                .list_journeys(JourneyFilter {
                    status,
                    definition_id: workflow,
                    email_masked,
                    subject,
                    limit,
                    ..JourneyFilter::default()
                })
                .await?;
            if rows.is_empty() {
                println!("no journeys");
            }
            for r in rows {
                println!(
                    "{}  {:<10} {:<16} {:<15} {:<20} updated {}",
                    r.journey_id,
                    r.status,
                    format!("{} v{}", r.definition_id, r.definition_version),
                    r.current_step.as_deref().unwrap_or("-"),
                    r.email_masked.as_deref().unwrap_or("-"),
                    r.updated_at
                );
            }
            Ok(())
        }
        Command::Outbox(args) => {
            let journey = args.journey.as_deref().map(journey_id).transpose()?;
            let messages = app
                .outbox
                .list(&MessageFilter {
                    journey,
                    channel: args.channel.clone(),
                    limit: args.limit,
                })
                .await?;
            if messages.is_empty() {
                match (journey, &args.channel) {
                    (Some(j), _) => println!(
                        "the dev outbox holds no message for journey {j}{}",
                        args.channel
                            .as_deref()
                            .map(|c| format!(" on {c}"))
                            .unwrap_or_default()
                    ),
                    (None, Some(c)) => println!("the dev outbox holds no {c} message"),
                    (None, None) => println!("the dev outbox is empty"),
                }
            }
            for m in messages {
                println!(
                    "#{} {} {} to {} (journey {}){}",
                    m.id,
                    m.created_at,
                    m.channel,
                    m.recipient_masked(),
                    m.journey_id,
                    m.code().map(|c| format!("  code {c}")).unwrap_or_default()
                );
                if let Some(s) = &m.subject {
                    println!("    Subject: {s}");
                }
                for line in m.body.lines() {
                    println!("    {line}");
                }
            }
            Ok(())
        }
        Command::Call(CallCommand::Answer {
            journey,
            press,
            outcome,
        }) => {
            let id = journey_id(&journey)?;
            let (state, _, _) = app.engine.load(id).await?;
            let call = state
                .call
                .filter(|c| c.open)
                .ok_or_else(|| Refused(format!("journey {id} has no call ringing")))?;
            let input = match (press, outcome) {
                (Some(digits), _) => Input::CallKeys {
                    call_id: call.call_id,
                    digits,
                },
                (None, Some(o)) => Input::CallEnded {
                    call_id: call.call_id,
                    reason: match o {
                        CallOutcome::NoAnswer => CallFailure::NoAnswer,
                        CallOutcome::Busy => CallFailure::Busy,
                        CallOutcome::Voicemail => CallFailure::Voicemail,
                    },
                },
                (None, None) => usage!(
                    "say what the phone does: --press '#' or --outcome no-answer|busy|voicemail"
                ),
            };
            let outcome = app
                .engine
                .submit(id, input, Actor::person("phone"), None)
                .await?;
            finish(app, outcome, false).await
        }
        Command::Audit(AuditCommand::Verify { .. }) => {
            let key = audit::signing_key(app.engine.keys()).verifying_key();
            audit_verify(&app.store, key, app.deployment_key.as_deref(), false).await
        }
        Command::Funnel {
            workflow,
            from,
            to,
            csv,
        } => {
            let mut f = funnel::compute(&app.store, &workflow, from, to)
                .await
                .map_err(|e| Refused(format!("{e:#}")))?;
            // The definition's order, not the order journeys happened to be read in.
            if let Some(d) = app.engine.definitions().iter().find(|d| d.id == workflow) {
                let at = |s: &str| d.steps.iter().position(|x| x.id.as_str() == s);
                f.steps.sort_by_key(|s| at(&s.step).unwrap_or(usize::MAX));
            }
            print!("{}", funnel::render(&f, csv));
            Ok(())
        }
        Command::Audit(AuditCommand::Export {
            from,
            to,
            format,
            out,
            force,
        }) => {
            // An export handed to an auditor is evidence: never replace one by accident.
            let manifest = audit::manifest_path(&out);
            if !force && let Some(there) = [&out, &manifest].into_iter().find(|p| p.exists()) {
                usage!(
                    "{} already exists: choose another --out, or add --force to replace the \
                     export",
                    there.display()
                );
            }
            let key = audit::signing_key(app.engine.keys());
            let m = audit::export(
                &app.store,
                &key,
                from,
                to,
                format,
                &out,
                app.engine.now(),
                force,
            )
            .await?;
            println!(
                "exported {} events (positions {} to {}) to {}; manifest {}.manifest.json, signed by {}",
                m.count,
                m.from_position,
                m.to_position,
                out.display(),
                out.display(),
                m.public_key
            );
            Ok(())
        }
        Command::Audit(AuditCommand::Checkpoint) => {
            let key = audit::signing_key(app.engine.keys());
            match audit::checkpoint(&app.store, &key, app.engine.now()).await? {
                Some(c) => println!("{}", audit::checkpoint_line(&c)),
                None => println!("the log is empty: nothing to checkpoint"),
            }
            Ok(())
        }
        Command::Audit(AuditCommand::PublicKey) => {
            let key = audit::signing_key(app.engine.keys());
            let ours = passage_core::secrets::hex(key.verifying_key().as_bytes());
            println!("{ours}");
            // Printed all the same (a reviewer may want this secret's key), but a key that
            // is not the deployment's must not be published as if it were.
            if let Some(recorded) = &app.deployment_key
                && *recorded != ours
            {
                eprintln!(
                    "note: this is not the deployment's audit key, which is {recorded}: \
                     PASSAGE_SECRET or --secret-file is not the secret the deployment was \
                     first written under"
                );
            }
            Ok(())
        }
        Command::Audit(AuditCommand::VerifyExport { .. }) => {
            unreachable!("handled before opening the store")
        }
        Command::Workflows(WorkflowsCommand::List) => {
            for d in app.engine.definitions() {
                println!(
                    "{:<18} v{:<3} {}  {}",
                    d.id,
                    d.version,
                    &d.content_hash[..12],
                    d.title
                );
            }
            Ok(())
        }
        Command::Workflows(WorkflowsCommand::Check { .. }) => Ok(()),
        Command::Serve(args) => serve(app, *args).await,
        Command::Bot(args) => {
            let options = worker_options(app.slowest_provider, &args.worker)?;
            discord_bot::run(app, &args, options).await
        }
        Command::Bench(_) => Ok(()),
        Command::Worker(args) => {
            let (tx, rx) = tokio::sync::watch::channel(false);
            let options = alert_duty(app, worker_options(app.slowest_provider, &args)?);
            let lease = period(options.lease);
            let worker =
                passage_runtime::Worker::new(app.engine.clone(), app.channels.clone(), options);
            let handle = tokio::spawn(worker.run(rx));
            eprintln!(
                "worker running on the {} store (lease {lease}); Ctrl-C stops it",
                app.store.backend()
            );
            shutdown_signal().await;
            let _ = tx.send(true);
            handle.await.context("stop the worker")?;
            Ok(())
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM (what a service manager or a container runtime sends).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The worker's options, refused when the lease leaves a delivery less time than a
/// configured provider may take to answer (plus a margin): the worker would cut off calls
/// the provider still counts as in time, and fail deliveries that were on their way.
/// A `serve` or `worker` node's share of support alerts (`app::alerts_here`), said once at
/// start so that an operator looking for missing alerts learns which process sends them.
fn alert_duty(
    app: &App,
    options: passage_runtime::WorkerOptions,
) -> passage_runtime::WorkerOptions {
    if app.alerts_here {
        tracing::info!(
            route = app
                .channels
                .inner()
                .route("support")
                .map_or("none", |r| r.provider()),
            "support alerts are delivered by this node"
        );
    } else {
        tracing::info!(
            "support alerts are left to `passage bot` (no PASSAGE_ALERT_WEBHOOK_URL here, and \
             real channels or a Discord support channel are configured)"
        );
    }
    passage_runtime::WorkerOptions {
        skip_alerts: !app.alerts_here,
        ..options
    }
}

fn worker_options(
    slowest_provider: Option<(&'static str, std::time::Duration)>,
    args: &cli::WorkerArgs,
) -> anyhow::Result<passage_runtime::WorkerOptions> {
    let lease = match args.lease {
        None => app::default_lease(slowest_provider),
        Some(lease) => {
            if let Some((provider, timeout)) = slowest_provider {
                let least = passage_runtime::least_lease(timeout);
                let needed = timeout.saturating_add(passage_runtime::DELIVERY_MARGIN);
                if passage_runtime::delivery_budget(lease) < needed {
                    usage!(
                        "--lease {} gives a delivery {} ms (3/4 of the lease), less than the {} s \
                         timeout of {provider} plus a {} s margin; use --lease {}s or more \
                         (or leave it out: the default follows the configured timeouts), or \
                         lower that timeout in the channel configuration",
                        period(lease),
                        passage_runtime::delivery_budget(lease).as_millis(),
                        timeout.as_secs(),
                        passage_runtime::DELIVERY_MARGIN.as_secs(),
                        least.as_secs()
                    );
                }
            }
            lease
        }
    };
    Ok(passage_runtime::WorkerOptions {
        lease,
        batch: args.batch,
        ..Default::default()
    })
}

/// A period as it would be written on the command line, to the millisecond.
fn period(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Refuses to serve the dev outbox's pages beyond this machine (R1, R26): while calls, or
/// all channels, go to the dev outbox, `/dev/inbox` shows every code and the API plays any
/// ringing phone, so whoever reaches the port could reset any account in the directory. A
/// deployment whose channels file never reached the node would otherwise start and look
/// healthy.
fn refuse_public_dev_channels(
    config: &passage_channels::ChannelsConfig,
    args: &cli::ServeArgs,
) -> anyhow::Result<()> {
    use passage_channels::{EmailProvider, PhoneProvider};
    let all_dev = config.email == EmailProvider::Dev
        && config.sms == PhoneProvider::Dev
        && config.voice == PhoneProvider::Dev;
    let exposed = if all_dev {
        "/dev/inbox would show every code, and the API would play any ringing phone"
    } else if config.voice == PhoneProvider::Dev {
        "the API would play any ringing phone (calls go to the dev outbox)"
    } else {
        return Ok(());
    };
    if args.listen.ip().is_loopback() || args.public_dev_channels {
        return Ok(());
    }
    usage!(
        "refusing to listen on {} with development channels: {exposed}, so anyone who reaches \
         the port could reset any account. Configure real channels (PASSAGE_CHANNELS_CONFIG, \
         docs/channels.md), listen on 127.0.0.1, or add --public-dev-channels for a demo on \
         a trusted network",
        args.listen
    )
}

async fn serve(app: &App, args: cli::ServeArgs) -> anyhow::Result<()> {
    // Before binding: a refused lease must not leave a port taken for nothing.
    let options = worker_options(app.slowest_provider, &args.worker)?;
    let options = alert_duty(app, options);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("read the listening address")?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let worker = passage_runtime::Worker::new(app.engine.clone(), app.channels.clone(), options);
    let scanner = tokio::spawn(stalls::run(
        app.engine.clone(),
        args.stall_scan.clone(),
        args.escalate_after,
        rx.clone(),
    ));
    let retention = args.retention.map(|period| {
        tokio::spawn(subjects::retention_loop(
            app.engine.clone(),
            period,
            std::time::Duration::from_secs(3600),
            rx.clone(),
        ))
    });
    let checkpoints = {
        let engine = app.engine.clone();
        tokio::spawn(audit::checkpoint_loop(
            app.store.clone(),
            audit::signing_key(app.engine.keys()),
            move || engine.now(),
            args.checkpoint_every,
            rx.clone(),
        ))
    };
    let worker = tokio::spawn(worker.run(rx));
    // The API may play the phone only while calls go to the development outbox.
    let simulated_phone = matches!(
        app.channels.inner().route("voice"),
        Some(passage_channels::Route::Dev(_))
    );
    // The dev inbox shows codes to anyone who can reach it: only when every channel is the
    // dev outbox (a deployment with real email but dev SMS must not publish SMS codes).
    let dev_outbox = ["email", "sms", "voice"]
        .iter()
        .all(|c| {
            matches!(
                app.channels.inner().route(c),
                Some(passage_channels::Route::Dev(_))
            )
        })
        .then(|| app.outbox.clone());
    let dev_inbox = dev_outbox.is_some();
    let options = passage_web::WebOptions {
        simulated_phone,
        dev_outbox,
        secure: args.secure_cookies,
        trusted_proxies: args.trusted_proxies.clone(),
        limits: passage_web::Limits {
            starts_per_client: args.limit_starts,
            answers_per_client: args.limit_answers,
            ..passage_web::Limits::default()
        },
        // Several nodes share one PostgreSQL database: count each client once for all of
        // them. A SQLite store has one node serving it.
        shared_limits: match &app.store {
            passage_store::AnyStore::Postgres(pg) => {
                Some(std::sync::Arc::new(budgets::StoreWindows::new(
                    pg.clone(),
                    std::sync::Arc::new(app.engine.keys().clone()),
                )) as _)
            }
            passage_store::AnyStore::Sqlite(_) => None,
        },
        audit: Some(std::sync::Arc::new(audit::ConsoleExporter {
            store: app.store.clone(),
            key: audit::signing_key(app.engine.keys()),
            clock: std::sync::Arc::new(passage_runtime::SystemClock),
        })),
        ..passage_web::WebOptions::default()
    };
    let webhooks = match app.channels.inner().webhook_settings() {
        Some(settings) => passage_channels::twilio_webhooks(passage_channels::WebhookState::new(
            settings,
            callbacks::EngineSink::new(app.engine.clone()),
        )),
        None => axum::Router::new(),
    };
    let router = passage_web::router_with(
        passage_web::AppState::configured(app.engine.clone(), options),
        webhooks,
    );
    println!("listening on http://{addr}");
    let _ = std::io::stdout().flush();
    // Hints for a person; whoever started us may have stopped reading after the first line
    // (tests do), so a closed stdout is not an error here.
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "portal: http://{addr}/ (select \"Forgot Password?\"); API: http://{addr}/api/openapi.json"
    );
    let _ = writeln!(
        out,
        "support console: http://{addr}/console (operators: passage operators add NAME --role support)"
    );
    if dev_inbox {
        let _ = writeln!(
            out,
            "dev inbox (codes and the simulated phone): http://{addr}/dev/inbox"
        );
    }
    let _ = out.flush();
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("serve HTTP")?;
    let _ = tx.send(true);
    worker.await.context("stop the worker")?;
    scanner.await.context("stop the stall scanner")?;
    checkpoints.await.context("stop the checkpoints")?;
    if let Some(retention) = retention {
        retention.await.context("stop retention")?;
    }
    Ok(())
}

fn check_workflows(files: &[std::path::PathBuf]) -> anyhow::Result<()> {
    let mut bad: Option<DefinitionErrors> = None;
    // Every file is checked and every problem said: a file that cannot be read must not
    // hide the errors of the others.
    let mut unread = 0;
    for f in files {
        let src = match std::fs::read_to_string(f) {
            Ok(src) => src,
            Err(e) => {
                eprintln!("error: read {}: {e}", f.display());
                unread += 1;
                continue;
            }
        };
        match passage_core::definition::load(&f.display().to_string(), &src) {
            Ok(d) => println!(
                "{}: ok ({} v{}, {} steps, sha256 {})",
                f.display(),
                d.id,
                d.version,
                d.steps.len(),
                &d.content_hash[..12]
            ),
            Err(e) => {
                if let Some(prev) = bad.take() {
                    eprintln!("{prev}");
                }
                bad = Some(e);
            }
        }
    }
    match bad {
        Some(e) => Err(e.into()),
        None if unread > 0 => usage!(
            "{unread} of {} file(s) could not be read (above)",
            files.len()
        ),
        None => Ok(()),
    }
}

/// Delivers what the command left in the outbox (unless asked not to), then shows what is next.
async fn finish(app: &App, outcome: Outcome, no_deliver: bool) -> anyhow::Result<()> {
    if !no_deliver {
        // This journey's only: on a shared store the rest of the queue is the nodes'.
        app.worker
            .drain_journey(outcome.journey_id)
            .await
            .context("deliver outbox entries")?;
    }
    let (_, _, view) = app.engine.load(outcome.journey_id).await?;
    if let Reply::Accepted {
        session_token: Some(_),
    } = &outcome.reply
    {
        println!("signed in with a fresh session (token handed to the portal, not stored)");
    }
    print!("{}", render::view(&outcome.journey_id.to_string(), &view));
    match render::reply(&outcome.reply) {
        Some(msg) => Err(Refused(msg).into()),
        None => Ok(()),
    }
}

async fn journey(app: &App, cmd: JourneyCommand) -> anyhow::Result<()> {
    match cmd {
        JourneyCommand::Start {
            email,
            workflow,
            delivery,
        } => {
            let started = app
                .engine
                .start(&workflow, Actor::person("cli"), None)
                .await?;
            let outcome = app
                .engine
                .submit(
                    started.journey_id,
                    Input::Email(email),
                    Actor::person("cli"),
                    None,
                )
                .await?;
            finish(app, outcome, delivery.no_deliver).await
        }
        JourneyCommand::Input {
            id,
            value,
            password_stdin,
            delivery,
        } => {
            let id = journey_id(&id)?;
            let (_, _, view) = app.engine.load(id).await?;
            let input = match (&view.step, value) {
                // Asked for explicitly: let the journey's rules judge it, even at another step.
                (Some(_), None) if password_stdin => read_password(true)?,
                (Some(StepView::Complete { .. }), _) | (None, _) => {
                    return Err(Refused(format!(
                        "journey {id} is {}: nothing to answer",
                        view.status.as_str()
                    ))
                    .into());
                }
                (Some(StepView::Identify { .. }), Some(v)) => Input::Email(v),
                (Some(StepView::Code { .. }), Some(v))
                | (Some(StepView::Voice { .. }), Some(v)) => Input::Code(v),
                (Some(StepView::Choose { .. }), Some(v)) => Input::Choose(v),
                (Some(StepView::SetPassword { .. }), None) => read_password(password_stdin)?,
                (Some(_), None) => {
                    usage!("this step needs a value: passage journey input {id} <value>")
                }
                (Some(StepView::SetPassword { .. }), Some(_)) => usage!(
                    "a password is never taken from the command line (it would stay in your shell history): \
                     run `passage journey input {id}` and type it at the prompt, or use --password-stdin"
                ),
            };
            let outcome = app
                .engine
                .submit(id, input, Actor::person("cli"), None)
                .await?;
            finish(app, outcome, delivery.no_deliver).await
        }
        JourneyCommand::Resend { id, delivery } => {
            let id = journey_id(&id)?;
            let outcome = app
                .engine
                .submit(id, Input::Resend, Actor::person("cli"), None)
                .await?;
            finish(app, outcome, delivery.no_deliver).await
        }
        JourneyCommand::Cancel {
            id,
            reason,
            operator,
        } => {
            let id = journey_id(&id)?;
            let outcome = app
                .engine
                .submit(
                    id,
                    Input::Cancel { reason },
                    Actor::support(&operator, "cli"),
                    None,
                )
                .await?;
            finish(app, outcome, true).await
        }
        JourneyCommand::Show { id, json } => {
            let id = journey_id(&id)?;
            if json {
                // The events as the engine reads them: personal fields opened with the
                // journey's key (or `[erased]`), beside the stored hash that covers the sealed
                // form.
                for t in app.engine.timeline(id).await? {
                    let line = serde_json::json!({
                        "position": t.position,
                        "version": t.version,
                        "recorded_at": t.recorded_at.to_rfc3339(),
                        "type": t.event_type,
                        "event": t.event,
                        "metadata": { "actor": t.actor },
                        "hash": chain::to_hex(&t.hash),
                    });
                    println!("{line}");
                }
                return Ok(());
            }
            let entries = app.engine.timeline(id).await?;
            print!("{}", render::timeline(&entries));
            let (_, _, view) = app.engine.load(id).await?;
            print!("{}", render::view(&id.to_string(), &view));
            Ok(())
        }
        JourneyCommand::Replay { id, at } => {
            let id = journey_id(&id)?;
            if at == 0 {
                usage!("--at counts events from 1 (1 = the journey just started)");
            }
            let (state, view, total) = app.engine.replay(id, at).await?;
            if at > total {
                usage!("journey {id} has {total} events; --at must be between 1 and {total}");
            }
            let entries = app.engine.timeline(id).await?;
            print!("{}", render::timeline(&entries[..at]));
            println!("--- state after event {at} of {total} ---");
            println!("{}", serde_json::to_string_pretty(&state)?);
            print!("{}", render::view(&id.to_string(), &view));
            Ok(())
        }
    }
}

fn read_password(from_stdin: bool) -> anyhow::Result<Input> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("read the password from standard input")?;
        let pw = line.trim_end_matches(['\r', '\n']).to_owned();
        return Ok(Input::Password {
            new: pw.clone(),
            confirm: pw,
        });
    }
    let new = rpassword::prompt_password("New password: ").context("read the new password")?;
    let confirm =
        rpassword::prompt_password("Confirm new password: ").context("read the confirmation")?;
    Ok(Input::Password { new, confirm })
}

/// `key`: the audit key checkpoints must be signed with; `given`: it came from
/// `--public-key`, not from the secret (which changes what the notes say).
async fn audit_verify(
    store: &passage_store::AnyStore,
    key: ed25519_dalek::VerifyingKey,
    deployment_key: Option<&str>,
    given: bool,
) -> anyhow::Result<()> {
    let source = if given {
        "--public-key"
    } else {
        "PASSAGE_SECRET or --secret-file"
    };
    let checkpoints = store.checkpoints().await?;
    if let Some(forged) = checkpoints
        .iter()
        .find(|c| !audit::checkpoint_signed_by(c, &key))
    {
        let ours = passage_core::secrets::hex(key.as_bytes());
        let why = if forged.public_key == ours {
            "its signature does not match: it was altered".to_owned()
        } else {
            format!(
                "it names key {}…, {source} gives {}…: either {source} is not the \
                 deployment's {}, or the checkpoint was written by someone else",
                forged.public_key.get(..16).unwrap_or(&forged.public_key),
                &ours[..16],
                if given { "key" } else { "secret" }
            )
        };
        return Err(Refused(format!(
            "audit verify FAILED: the checkpoint at position {} is not signed by this deployment's audit key ({why})",
            forged.position
        ))
        .into());
    }
    let by_position: std::collections::HashMap<u64, &passage_core::ports::Checkpoint> =
        checkpoints.iter().map(|c| (c.position, c)).collect();
    // Read before the events: appends made while verifying only move it further, so the
    // events must reach at least this position and have this hash there.
    let recorded_head = store.recorded_head().await?.filter(|(p, _)| *p > 0);
    let mut hash_at_recorded_head = None;
    let mut verifier = Verifier::new();
    let show_progress = std::io::stderr().is_terminal();
    audit::each_event(store, 0, None, |e| {
        if let Some(c) = by_position.get(&e.position)
            && c.hash != e.hash
        {
            return Err(Refused(format!(
                "audit verify FAILED at position {}: the event there does not match the checkpoint signed at {} (the chain was rewritten from there or earlier)",
                e.position, c.created_at
            ))
            .into());
        }
        if recorded_head.is_some_and(|(p, _)| p == e.position) {
            hash_at_recorded_head = Some(e.hash);
        }
        if let Err(bad) = verifier.check(e) {
            if show_progress {
                eprintln!();
            }
            return Err(Refused(format!(
                "audit verify FAILED at position {}: {}\n{} event{} before it verified",
                bad.position,
                bad.fault,
                verifier.checked(),
                if verifier.checked() == 1 { "" } else { "s" }
            ))
            .into());
        }
        if show_progress && verifier.checked().is_multiple_of(2_000) {
            eprint!("\rverified {} events", verifier.checked());
            let _ = std::io::stderr().flush();
        }
        Ok(())
    })
    .await?;
    if show_progress {
        eprintln!("\rverified {} events", verifier.checked());
    }
    if let Some((position, hash)) = recorded_head
        && hash_at_recorded_head != Some(hash)
    {
        return Err(Refused(format!(
            "audit verify FAILED: the log's head record (log_head) says position {position}, but {}: events were removed from the end, or the head record was edited",
            match hash_at_recorded_head {
                None => format!("the events end at position {}", verifier.checked()),
                Some(_) => format!("the event at position {position} has another hash"),
            }
        ))
        .into());
    }
    if let Some(c) = checkpoints.iter().find(|c| c.position > verifier.checked()) {
        return Err(Refused(format!(
            "audit verify FAILED: the log ends at position {} but a checkpoint signed at {} covers position {}: events were removed from the end",
            verifier.checked(),
            c.created_at,
            c.position
        ))
        .into());
    }
    println!(
        "audit verify ok: {} events, positions 1 to {} gap-free, head hash {}, {} signed checkpoint{} match",
        verifier.checked(),
        verifier.checked(),
        chain::to_hex(&verifier.head()),
        checkpoints.len(),
        if checkpoints.len() == 1 { "" } else { "s" }
    );
    // The chain needs no key; the secret matters for checkpoints and for running the
    // deployment. One that is not the deployment's is named here rather than refused.
    let ours = passage_core::secrets::hex(key.as_bytes());
    if let Some(recorded) = deployment_key
        && recorded != ours
    {
        println!(
            "note: the audit key from {source} ({}…) is not the deployment's ({}…, as the \
             database records it): the chain above verifies without it, but checkpoints \
             cannot be signed or checked with it",
            &ours[..16],
            recorded.get(..16).unwrap_or(recorded)
        );
    }
    // The chain proves every event links to the one before; only a signed checkpoint (or
    // a published copy of its line) proves where the log ended. Say what is not covered.
    let covered = checkpoints.iter().map(|c| c.position).max().unwrap_or(0);
    if covered == 0 && verifier.checked() > 0 {
        println!(
            "note: no signed checkpoint yet, so events removed from the end of the log would \
             not show here; sign one with `passage audit checkpoint` (`serve` signs one every \
             --checkpoint-every) and keep its line outside the database"
        );
    } else if covered < verifier.checked() {
        println!(
            "note: events {} to {} come after the newest signed checkpoint (position \
             {covered}), so events removed from there would not show here; compare the head \
             hash above with a line published elsewhere, or sign a new checkpoint",
            covered + 1,
            verifier.checked()
        );
    }
    Ok(())
}
