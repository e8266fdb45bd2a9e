//! Command-line interface: what `passage --help` teaches.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "passage",
    version,
    about = "Password-reset journeys on an event-sourced workflow engine",
    long_about = "Passage runs password-reset journeys for the Enterprise Customer Portal. Each \
journey follows a workflow definition (workflows/*.toml) and every step is stored as an event \
in an append-only, hash-chained log.\n\n\
Start with `passage serve` and open http://127.0.0.1:8080/ (\"Forgot Password?\"; codes at \
/dev/inbox), or `passage demo`: it resets a demo account twice (SMS and voice call) on a local \
SQLite file and prints the timeline. `passage chat` does it as a conversation. Or drive a \
journey by hand:\n\n  \
passage journey start --email alice@example.com\n  \
passage outbox                      # read the code the dev outbox received\n  \
passage journey input <ID> <CODE>   # answer whatever the current step asks\n  \
passage journey show <ID>           # the timeline\n\n\
Everything runs on the embedded store (./passage.db) with development outboxes \
(./passage-outbox.db): nothing is sent anywhere.",
    after_help = "Exit status: 0 success, 1 a refused input or a failed verification, 2 bad usage or a \
malformed definition."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Event store file (SQLite). `demo`, `chat`, `serve`, `worker`, `bot`, `journey start`,
    /// `operators add` and `accounts import` create it; the other commands refuse a path with
    /// none.
    #[arg(
        long,
        global = true,
        env = "PASSAGE_DB",
        default_value = "passage.db",
        value_name = "PATH"
    )]
    pub db: PathBuf,

    /// PostgreSQL database shared by several nodes, e.g. postgres://user@host:5432/passage.
    /// Overrides --db.
    #[arg(long, global = true, env = "PASSAGE_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,

    /// Directory of workflow definitions (*.toml). When it does not exist, the definitions
    /// built into this binary are used.
    #[arg(
        long,
        global = true,
        env = "PASSAGE_WORKFLOWS",
        default_value = "workflows",
        value_name = "DIR"
    )]
    pub workflows: PathBuf,

    /// Development outbox file (default: beside the event store, `passage-outbox.db`).
    #[arg(long, global = true, env = "PASSAGE_OUTBOX", value_name = "PATH")]
    pub outbox: Option<PathBuf>,

    /// File holding the deployment's secret key (created with mode 0600 if missing; default:
    /// beside the event store, `passage.key`). `PASSAGE_SECRET` overrides it.
    #[arg(long, global = true, env = "PASSAGE_SECRET_FILE", value_name = "PATH")]
    pub secret_file: Option<PathBuf>,

    /// Do not add the four demo accounts (alice@example.com and the others) to a new
    /// store's account directory, then or later: for a deployment whose people come from
    /// `accounts import`. A directory that has them already keeps them (switch them off by
    /// importing them with enabled false).
    #[arg(long, global = true, env = "PASSAGE_NO_DEMO_ACCOUNTS")]
    pub no_demo_accounts: bool,

    /// More log output (-v info, -vv debug). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the seed journey end to end on the embedded store: once with an SMS code, once
    /// with a voice call, printing each step and the final timeline.
    Demo(DemoArgs),
    /// Reset a password as a conversation in this terminal (the chat bot's conversation).
    #[command(long_about = CHAT_HELP)]
    Chat(ChatArgs),
    /// Start and drive one journey by hand.
    #[command(subcommand)]
    Journey(JourneyCommand),
    /// List journeys.
    #[command(subcommand)]
    Journeys(JourneysCommand),
    /// The account directory: load the portal's users from a CSV file (`accounts import`).
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Operators of the support console and API (separate from portal users) and their API
    /// tokens: support acts on journeys, auditor reads and exports, admin does both and
    /// manages operators.
    #[command(subcommand)]
    Operators(OperatorsCommand),
    /// Erase a person's personal data (right to erasure), or apply retention: the events
    /// stay and still verify, their personal fields read "[erased]" (docs/audit.md).
    #[command(subcommand)]
    Subjects(SubjectsCommand),
    /// Show what the development outboxes received (emails, SMS, calls), codes included.
    Outbox(OutboxArgs),
    /// Act as the phone of a journey's pending voice call.
    #[command(subcommand)]
    Call(CallCommand),
    /// Verify the event log's hash chain, export it signed for an auditor, sign checkpoints.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The funnel of a workflow: journeys that reached each step, moved on, ended there or
    /// are still waiting, and the time spent per step (p50/p90). `--csv` for spreadsheets.
    Funnel {
        #[arg(long, default_value = "password-reset")]
        workflow: String,
        /// Only journeys started at or after this time (RFC 3339, e.g. 2026-11-27T00:00:00Z).
        #[arg(long, value_parser = crate::funnel::parse_time)]
        from: Option<passage_core::time::Timestamp>,
        /// Only journeys started before this time.
        #[arg(long, value_parser = crate::funnel::parse_time)]
        to: Option<passage_core::time::Timestamp>,
        #[arg(long)]
        csv: bool,
    },
    /// Check or list workflow definitions.
    #[command(subcommand)]
    Workflows(WorkflowsCommand),
    /// Deliver outbox entries and fire timers until interrupted (Ctrl-C stops it cleanly).
    Worker(WorkerArgs),
    /// Measure the engine's throughput and latency against a raw-insert baseline on the
    /// same database, in the same run (see docs/benchmarks.md). Uses fresh scratch stores.
    Bench(BenchArgs),
    /// Serve the portal (sign-in, the reset pages, the tiles page, /dev/inbox with the dev
    /// channels) and the JSON API (/api/journeys, described at /api/openapi.json), and run a
    /// worker in the same process, until Ctrl-C or SIGTERM. Open http://127.0.0.1:8080/ and
    /// select "Forgot Password?". Several `serve` nodes can share one database.
    Serve(Box<ServeArgs>),
    /// Run the Discord bot (`/reset`, buttons, code modals; support alerts, buttons and
    /// `/journey` commands) with a worker and the stall scanner, until Ctrl-C or SIGTERM.
    /// Needs PASSAGE_DISCORD_TOKEN, PASSAGE_DISCORD_SUPPORT_CHANNEL and
    /// PASSAGE_DISCORD_SUPPORT_ROLE (PASSAGE_PUBLIC_URL defaults to http://127.0.0.1:8080;
    /// see docs/chatops.md).
    Bot(Box<BotArgs>),
}

impl Command {
    /// Whether the command may create the embedded store: the ones that start journeys or
    /// run the service (see `app::open`).
    pub fn creates_store(&self) -> bool {
        matches!(
            self,
            Command::Demo(_)
                | Command::Chat(_)
                | Command::Serve(_)
                | Command::Worker(_)
                | Command::Bot(_)
                | Command::Journey(JourneyCommand::Start { .. })
                | Command::Operators(OperatorsCommand::Add { .. })
                | Command::Accounts(AccountsCommand::Import { check: false, .. })
        )
    }

    /// Commands that only read the store: they open it read-only (docs/audit.md). Listed,
    /// not inferred, so that a new command writes unless it is added here.
    pub fn only_reads(&self) -> bool {
        matches!(
            self,
            Command::Journeys(JourneysCommand::List { .. })
                | Command::Journey(JourneyCommand::Show { .. } | JourneyCommand::Replay { .. })
                | Command::Outbox(_)
                | Command::Audit(
                    AuditCommand::Verify { .. }
                        | AuditCommand::Export { .. }
                        | AuditCommand::PublicKey
                )
                | Command::Funnel { .. }
                | Command::Workflows(WorkflowsCommand::List)
                | Command::Operators(OperatorsCommand::List)
        )
    }

    /// The worker's options of a command that runs a worker.
    pub fn worker_args(&self) -> Option<&WorkerArgs> {
        match self {
            Command::Worker(args) => Some(args),
            Command::Serve(args) => Some(&args.worker),
            Command::Bot(args) => Some(&args.worker),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum BenchBackend {
    Sqlite,
    Postgres,
    Both,
}

impl BenchBackend {
    /// The stores to measure, in the order the tables list them.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            BenchBackend::Sqlite => &["sqlite"],
            BenchBackend::Postgres => &["postgres"],
            BenchBackend::Both => &["sqlite", "postgres"],
        }
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which store(s) to measure. PostgreSQL uses a scratch database created on the server
    /// named by --bench-postgres and dropped afterwards.
    #[arg(long, value_enum, default_value_t = BenchBackend::Sqlite)]
    pub backend: BenchBackend,
    /// A PostgreSQL server to create the scratch database on.
    #[arg(
        long,
        env = "PASSAGE_BENCH_POSTGRES",
        default_value = "postgres://root@127.0.0.1:5432/postgres"
    )]
    pub bench_postgres: String,
    /// How many journeys run at once, one measurement per value: `--levels 1,16,256` or
    /// `--levels 1 16 256`. The highest one is also run paced and ungrouped, and the
    /// efficiency ratios are judged there.
    #[arg(long, num_args = 1.., value_delimiter = ',', value_parser = positive::<usize>, default_values_t = [1usize, 16, 256])]
    pub levels: Vec<usize>,
    /// Journeys each row runs, the paced and ungrouped rows included (default: 40 at level
    /// 1, otherwise 3 x the level, at least 160). At least the highest level: fewer could
    /// never have that many journeys under way at once.
    #[arg(long, value_parser = positive::<usize>)]
    pub journeys: Option<usize>,
    /// Rows the raw baseline inserts at each batch size (1, 8 and 64 rows per transaction).
    /// Fewer rows finish sooner but measure ramp-up more than the database's pace.
    #[arg(long, value_parser = positive::<usize>, default_value_t = 20_000)]
    pub raw_rows: usize,
    /// Also run the highest level with each simulated person pausing about this long before
    /// each step (0: skip; each pause is drawn between half and one and a half times it). The
    /// other rows run flat out, so their step latency is mostly queueing behind every other
    /// person; this row shows a step's latency when that many people are mid-reset at a
    /// human pace (people take seconds to read and type a code).
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub think_ms: u64,
    /// Hash new passwords with the production Argon2id cost (19 MiB, 2 passes) instead of a
    /// light one. The light one measures the engine; with the production one, password
    /// hashing sets the pace (docs/benchmarks.md).
    #[arg(long)]
    pub production_hashing: bool,
    /// Measure everything this many times, each time on fresh stores with its own raw
    /// baseline, and summarize the ratios the targets are judged on by their median and
    /// range: runs on a busy or shared machine vary by 15 % or more.
    #[arg(long, value_parser = positive::<usize>, default_value_t = 1)]
    pub repeat: usize,
    /// What to measure: the engine's throughput against the raw baseline, the stall
    /// scanner's cost against the number of healthy open journeys (0, 10 000, 100 000), or
    /// the search by masked address over 10 000 and 1 000 000 journeys.
    #[arg(long, value_enum, default_value_t = BenchScenario::Throughput)]
    pub scenario: BenchScenario,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum BenchScenario {
    Throughput,
    Stalls,
    /// Support's search by masked address over 10 000 and 1 000 000 journeys.
    Search,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, env = "PASSAGE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Set when browsers reach Passage over HTTPS (directly or through a TLS proxy): cookies
    /// then get `Secure` and the `__Host-` prefix, and HSTS is sent.
    #[arg(long, env = "PASSAGE_SECURE_COOKIES")]
    pub secure_cookies: bool,
    /// Proxies whose X-Forwarded-For is believed, comma separated addresses or CIDR ranges
    /// (e.g. `10.0.0.0/8,::1`). Without it the peer address is the client.
    #[arg(long, env = "PASSAGE_TRUSTED_PROXIES", default_value = "", value_parser = parse_proxies)]
    pub trusted_proxies: passage_web::TrustedProxies,
    /// Journeys one client address (IPv6: its /64) may start per 10 minutes (at least 1).
    #[arg(long, env = "PASSAGE_LIMIT_STARTS", default_value_t = 30, value_parser = positive::<u32>)]
    pub limit_starts: u32,
    /// Answers (codes, choices, passwords, sign-ins) one client address may send per 10
    /// minutes (at least 1).
    #[arg(long, env = "PASSAGE_LIMIT_ANSWERS", default_value_t = 200, value_parser = positive::<u32>)]
    pub limit_answers: u32,
    /// When the stall scanner runs, as a cron expression with seconds (`sec min hour day
    /// month weekday`; a 5-field expression gets `0` seconds). Each run nudges, alerts or
    /// escalates the journeys whose step's `stall_after` has passed; see workflows/README.md.
    #[arg(long, env = "PASSAGE_STALL_SCAN", default_value = "*/15 * * * * *", value_parser = parse_schedule)]
    pub stall_scan: cron::Schedule,
    /// How long a support alert may wait unacknowledged before it is escalated (the alert
    /// then mentions the support role), at least 1s.
    #[arg(long, env = "PASSAGE_ESCALATE_AFTER", default_value = "5m", value_parser = parse_period)]
    pub escalate_after: std::time::Duration,
    /// How often to sign a checkpoint of the chain's head (docs/audit.md), at least 1s;
    /// skipped when no event was added since the last one.
    #[arg(long, env = "PASSAGE_CHECKPOINT_EVERY", default_value = "10m", value_parser = parse_period)]
    pub checkpoint_every: std::time::Duration,
    /// Erase the personal data of finished journeys (completed, failed, expired, cancelled)
    /// started longer ago than this, e.g. `90d` (at least 1d; `m` is minutes, so write
    /// months as days); checked at start and hourly. Off unless set. Accounts stay; see
    /// `passage subjects retain`.
    #[arg(long, env = "PASSAGE_RETENTION", value_parser = parse_retention, value_name = "PERIOD")]
    pub retention: Option<std::time::Duration>,
    /// Serve the development outbox's pages on an address other than loopback. While calls
    /// (or every channel) go to the dev outbox, `/dev/inbox` shows every code and the API
    /// can play any person's phone, so anyone who reaches the port can reset any account:
    /// without this flag, `serve` refuses such a `--listen`. For a demo on a trusted
    /// network only; configure real channels (PASSAGE_CHANNELS_CONFIG) for anything else.
    #[arg(long, env = "PASSAGE_PUBLIC_DEV_CHANNELS")]
    pub public_dev_channels: bool,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

#[derive(Debug, Args)]
pub struct BotArgs {
    /// When the stall scanner runs (cron with seconds, as for `serve`).
    #[arg(long, env = "PASSAGE_STALL_SCAN", default_value = "*/15 * * * * *", value_parser = parse_schedule)]
    pub stall_scan: cron::Schedule,
    /// How long a support alert may wait unacknowledged before it mentions the support role,
    /// at least 1s.
    #[arg(long, env = "PASSAGE_ESCALATE_AFTER", default_value = "5m", value_parser = parse_period)]
    pub escalate_after: std::time::Duration,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// An email address as typed, refused before anything runs if it cannot be anyone's.
fn parse_email(s: &str) -> Result<String, String> {
    passage_core::mask::normalize_email(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("must be the person's address (e.g. alice@example.com): {e}"))
}

/// The longest reason recorded, as in the support console.
const MAX_REASON: usize = 500;

/// A reason as the log will keep it, by the rule every surface shares
/// ([`passage_core::reason::clean_reason`]): control, separator, bidi and invisible
/// characters dropped (a newline, an escape sequence or U+202E would forge or disguise a
/// line of `journey show`), trimmed, and long enough to say why.
fn parse_reason(s: &str) -> Result<String, String> {
    use passage_core::reason::{MAX_REASON_CHARS, ReasonError, clean_reason};
    // This file's bound and the shared rule's must not drift apart.
    const _: () = assert!(MAX_REASON == MAX_REASON_CHARS);
    clean_reason(s).map_err(|e| match e {
        ReasonError::TooShort => "must say why, in at least 3 characters (e.g. \"ticket 1234\"); \
                                  it is recorded in the log"
            .to_owned(),
        ReasonError::TooLong => format!("is longer than {MAX_REASON} characters"),
    })
}

/// An operator id recorded as an event's actor: a plain name, nothing that could pass for
/// other text in a timeline.
fn parse_actor(s: &str) -> Result<String, String> {
    let ok = |c: char| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if s.is_empty() || s.chars().count() > 64 || !s.chars().all(ok) {
        return Err(
            "must be an operator id of 1 to 64 letters, digits, `.`, `_`, `-` or `@`".into(),
        );
    }
    Ok(s.to_owned())
}

fn parse_schedule(s: &str) -> Result<cron::Schedule, String> {
    let fields = s.split_whitespace().count();
    let full = if fields == 5 {
        format!("0 {s}")
    } else {
        s.to_owned()
    };
    full.parse().map_err(|_| {
        format!(
            "`{s}` is not a cron schedule: write `sec min hour day month weekday`, \
             e.g. `*/15 * * * * *` (every 15 seconds) or `0 */5 * * * *` (every 5 minutes)"
        )
    })
}

fn parse_proxies(s: &str) -> Result<passage_web::TrustedProxies, String> {
    passage_web::TrustedProxies::parse(s)
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// How long a claimed outbox entry or timer stays with this worker (at least 1s). If the
    /// worker dies, another one (or this one, restarted) takes the work over once the lease
    /// lapses. A delivery gets 3/4 of the lease, then counts as a transient failure and is
    /// retried later, so a slow provider is never sent the same message by two workers at
    /// once. It must leave a delivery a configured provider's own timeout plus 5 s (SMTP's
    /// 30 s by default needs 47s); start-up refuses a shorter one. [default: 60s, or the
    /// least that the configured timeouts need when that is longer]
    #[arg(long, value_parser = parse_period)]
    pub lease: Option<std::time::Duration>,
    /// Entries claimed per pass.
    #[arg(long, default_value_t = 64, value_parser = positive::<usize>)]
    pub batch: usize,
}

/// A count that must be at least 1: zero journeys measure nothing, a rate limit of zero
/// refuses everyone, and a pass of zero entries would never deliver anything.
fn positive<T: std::str::FromStr + Default + PartialEq>(s: &str) -> Result<T, String> {
    match s.trim().parse::<T>() {
        Ok(n) if n == T::default() => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) if !s.trim().is_empty() && s.trim().bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("`{s}` is too large"))
        }
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
}

/// A lease, a pause between background passes or an escalation delay: under a second, a
/// lease lapses while its delivery runs (another node sends it again), a loop spins on the
/// database, and every alert pings the support role as it is raised.
fn parse_period(s: &str) -> Result<std::time::Duration, String> {
    // The example is one this parser accepts (500ms would be refused as too short).
    let d = passage_core::time::parse_duration(s)
        .ok_or_else(|| format!("`{s}` is not a duration: write e.g. 90s, 10m or 1h"))?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("`{s}` is too short: at least 1s"));
    }
    Ok(d)
}

/// A retention period: at least a day. Erasure cannot be undone, and `6m` (six minutes,
/// meant as six months) would erase every journey that just finished.
fn parse_retention(s: &str) -> Result<std::time::Duration, String> {
    let d = passage_core::time::parse_duration(s)
        .ok_or_else(|| format!("`{s}` is not a duration: write e.g. 90d or 36h"))?;
    if d < std::time::Duration::from_secs(86_400) {
        let hint = if s.trim_end().ends_with('m') {
            " (`m` is minutes: write months as days, e.g. 180d)"
        } else {
            ""
        };
        return Err(format!("`{s}` is too short: at least 1d{hint}"));
    }
    Ok(d)
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DemoChannel {
    Sms,
    Voice,
    Both,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Which second factor(s) to demonstrate.
    #[arg(long, value_enum, default_value_t = DemoChannel::Both)]
    pub second_factor: DemoChannel,
    /// The demo account to reset.
    #[arg(long, default_value = "alice@example.com")]
    pub email: String,
}

const CHAT_HELP: &str = "Reset a password as a conversation in this terminal: the same \
conversation the chat bot holds (bots/core), driving the journey on the local event store.

The chat asks for your registered email address and sends a verification code. Answer at \
the `>` prompt: type the code, or the number of a button shown as `[1] Re-send code  [2] ...`. \
With the development channels nothing is really sent: read each code from another terminal \
with

  passage outbox --journey <ID>

If you choose \"Call me on my landline or mobile\", the chat waits while the call rings. Act \
as the phone from another terminal:

  passage call answer <ID> --press '#'

The new password is never typed as a chat message: the chat asks for it twice, with hidden \
input (when standard input is not a terminal, it reads one line for each, so scripts and \
tests can drive it).

Ctrl-D or /quit leaves; the journey stays where it is (`passage journey show <ID>`). Exit \
status: 0 once the password is reset, 1 when the reset ends otherwise or the chat is left.";

/// `passage chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The registered email address; without it, the chat asks for it.
    #[arg(long)]
    pub email: Option<String>,
    /// Workflow definition id.
    #[arg(long, default_value = "password-reset")]
    pub workflow: String,
}

#[derive(Debug, Subcommand)]
pub enum JourneyCommand {
    /// Start a journey and submit the email address ("Forgot Password?" then "Send
    /// verification code").
    Start {
        /// The registered email address.
        #[arg(long)]
        email: String,
        /// Workflow definition id.
        #[arg(long, default_value = "password-reset")]
        workflow: String,
        #[command(flatten)]
        delivery: Delivery,
    },
    /// Answer what the journey's current step asks: a code, an option id (`sms`, `call`), or
    /// for the Reset Password step nothing (you are prompted twice, input hidden).
    Input {
        /// Journey id.
        id: String,
        /// The code or option. Omit it at the Reset Password step.
        value: Option<String>,
        /// Read the new password from standard input (one line, used for both fields)
        /// instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        delivery: Delivery,
    },
    /// "Re-send code" (or, at a voice step, "call me again").
    Resend {
        id: String,
        #[command(flatten)]
        delivery: Delivery,
    },
    /// Cancel a journey, with a reason (recorded with you as the actor).
    Cancel {
        id: String,
        /// Why (at least 3 characters, e.g. a ticket id); recorded in the log.
        #[arg(long, value_parser = parse_reason)]
        reason: String,
        /// Operator id recorded as the actor (letters, digits, `.`, `_`, `-`, `@`).
        #[arg(long, default_value = "cli-operator", value_parser = parse_actor)]
        operator: String,
    },
    /// Print the journey's timeline: time, event, masked details, actor.
    Show {
        id: String,
        /// Print the events as JSON lines instead.
        #[arg(long)]
        json: bool,
    },
    /// Print the journey's state rebuilt from its first N events.
    Replay {
        id: String,
        /// Number of events to replay (1 = just the start).
        #[arg(long)]
        at: usize,
    },
}

#[derive(Debug, Args)]
pub struct Delivery {
    /// Leave outbox entries for a running `passage worker` instead of delivering them now.
    #[arg(long)]
    pub no_deliver: bool,
}

#[derive(Debug, Subcommand)]
pub enum OperatorsCommand {
    /// Add an operator; the password is asked twice without echo (or read from stdin).
    Add {
        /// The operator's sign-in name (shown as the actor of what they do).
        name: String,
        /// `support` (acts on journeys), `auditor` (reads and exports the log) or `admin`
        /// (both, and manages operators).
        #[arg(long, value_parser = |s: &str| s.parse::<passage_core::roles::Role>())]
        role: passage_core::roles::Role,
        /// Read the password from standard input (one line) instead of a hidden prompt.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Operators and their tokens (ids and labels only; tokens are stored hashed).
    List,
    /// Create an API token for an operator, with their role or a narrower one. The token is
    /// printed once and never stored.
    Token {
        /// The operator the token acts as.
        name: String,
        /// What the token is for (e.g. `nightly-export`), shown by `operators list`.
        #[arg(long)]
        label: String,
        /// A narrower role than the operator's (an admin's token for read-only scripts).
        #[arg(long, value_parser = |s: &str| s.parse::<passage_core::roles::Role>())]
        role: Option<passage_core::roles::Role>,
    },
    /// Revoke a token by the id `operators list` shows.
    Revoke { token_id: String },
    /// Disable an operator: their console sessions and API tokens stop working at once.
    Disable { name: String },
    /// Enable a disabled operator again (their unrevoked tokens work again).
    Enable { name: String },
}

#[derive(Debug, Subcommand)]
pub enum JourneysCommand {
    /// Journeys, newest first.
    List {
        /// Only journeys in this status.
        #[arg(long, value_parser = ["active", "completed", "failed", "expired", "cancelled"])]
        status: Option<String>,
        /// Only journeys of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only journeys for this address. The full address finds exactly that person's
        /// journeys (through a keyed pseudonym; the address itself is stored nowhere); the
        /// masked form listings show (`a•••e@e•••.com`, or `*` for `•`) finds everyone
        /// whose address masks the same.
        #[arg(long)]
        email: Option<String>,
        /// At most this many journeys.
        #[arg(long, default_value_t = 50, value_parser = positive::<usize>)]
        limit: usize,
    },
}

#[derive(Debug, Args)]
pub struct OutboxArgs {
    /// Only messages of this journey.
    #[arg(long)]
    pub journey: Option<String>,
    /// Only this channel (`support`: the alerts of a development setup).
    #[arg(long, value_parser = ["email", "sms", "voice", "support"])]
    pub channel: Option<String>,
    /// At most this many messages.
    #[arg(long, default_value_t = 20, value_parser = positive::<usize>)]
    pub limit: usize,
}

#[derive(Debug, Subcommand)]
pub enum CallCommand {
    /// Answer the journey's pending call and press keys, or let it fail.
    Answer {
        /// Journey id.
        journey: String,
        /// Keys to press, e.g. '#'.
        #[arg(long, conflicts_with = "outcome")]
        press: Option<String>,
        /// Instead of pressing keys: how the call ends.
        #[arg(long, value_enum)]
        outcome: Option<CallOutcome>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CallOutcome {
    NoAnswer,
    Busy,
    Voicemail,
}

const ACCOUNTS_IMPORT_HELP: &str = "\
Load the portal's users into the account directory from a CSV file with a header row:

  account_id,email,display_name,phone,enabled,password_phc
  u-1001,ada@example.com,\"Lovelace, Ada\",+61 412 345 678,true,
  u-1002,grace@example.com,Grace Hopper,,true,\"$argon2id$v=19$m=19456,t=2,p=1$…\"

account_id, email and display_name are required; phone (international form, for the SMS
and call steps), enabled (true or false; a blank cell, like a missing column, keeps an
existing account's and enables a new one; a disabled account is treated like an unknown
address) and password_phc (an Argon2id hash in PHC form, quoted: it holds commas) are
optional, in any order. Fields holding commas or quotes are quoted (RFC 4180).

Every row is checked first, and every problem is reported with its line: a file with any
problem imports nothing (exit 2). Rows are keyed by account_id: importing again updates
address and name, and phone and enabled when the file has those columns (without them,
an existing account keeps its own), and never replaces a password Passage holds (the
password_phc column applies to new accounts; it must be Argon2id version 19, its cost at
least R43's and at most 64 MiB, 4 lanes and 4 times the default's memory × passes). A new account without a hash can only reset
its password. An address another account already uses is refused for that row (exit 1;
the other rows are imported). The demo accounts of a new store are acct-0001 to acct-0004:
import them with enabled=false to switch them off. Addresses are printed masked.";

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Load or update accounts from a CSV file (see `passage accounts import --help`).
    #[command(long_about = ACCOUNTS_IMPORT_HELP)]
    Import {
        /// The CSV file.
        file: std::path::PathBuf,
        /// Only check the file, import nothing.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain over the whole log and report the first position that was
    /// modified, removed or reordered, and check the signed checkpoints.
    Verify {
        /// Check the checkpoints against this audit public key (hex, as `audit public-key`
        /// printed and the deployment published) instead of the one derived from the
        /// secret: a reviewer then needs no secret at all, only read access to the store.
        #[arg(long, value_name = "HEX")]
        public_key: Option<String>,
    },
    /// Export events with their positions and chain hashes for an auditor, plus
    /// FILE.manifest.json (range, count, first and last hash, the file's SHA-256) signed with
    /// the deployment's Ed25519 audit key. Check it anywhere with `audit verify-export`.
    Export {
        /// First position to export.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Last position to export (default: the end of the log).
        #[arg(long)]
        to: Option<u64>,
        #[arg(long, value_enum, default_value_t = crate::audit::Format::Jsonl)]
        format: crate::audit::Format,
        /// Where to write the events; the manifest goes to OUT.manifest.json. An existing
        /// export is not overwritten unless --force is given.
        #[arg(long, short)]
        out: PathBuf,
        /// Replace OUT and its manifest if they exist.
        #[arg(long)]
        force: bool,
    },
    /// Verify an export offline (no database): the manifest's signature with the public key,
    /// the file against the manifest, and the hash chain through every event.
    VerifyExport {
        /// The events file (`.jsonl` or `.csv`); its manifest is `FILE.manifest.json`.
        file: PathBuf,
        /// The deployment's audit public key (hex), as `passage audit public-key` prints it.
        #[arg(long)]
        public_key: String,
    },
    /// Print the deployment's audit public key (hex), for reviewers who verify exports.
    PublicKey,
    /// Sign the chain's current head (position, hash, time) and keep it; prints the
    /// checkpoint line to publish elsewhere. `audit verify` then also checks that the event
    /// at every checkpoint still has its signed hash and that none was cut off the end.
    /// `passage serve` does this on its own every --checkpoint-every.
    Checkpoint,
}

#[derive(Debug, Subcommand)]
pub enum WorkflowsCommand {
    /// Validate definition files; prints every problem with file, line and what to change.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the definitions journeys can start on.
    List,
}

const ERASE_HELP: &str = "Erase everything Passage holds about one person, by crypto-shredding.

Every journey that names the address (found by its keyed pseudonym, never by the address \
itself) is cancelled if still open and gets a PersonalDataErased event with your reason and \
name; then its personal-data key is destroyed, so the masked address, masked phone, \
pseudonym, client address and user agent sealed in its events read \"[erased]\" for ever. The \
journey's listing row loses the masked address, its pending messages and timers are deleted, \
and finally the account (full address, phone, name, password hash) and its sessions are \
deleted, as are the dev outbox's copies of its messages.

The events themselves stay: `passage audit verify` still passes and `passage journey show` \
still lists every step. Running it again is harmless and finishes an erasure that was \
interrupted.

  passage subjects erase --email alice@example.com --reason \"GDPR request #1234\" --by ada

The reason is recorded in the log: do not put personal data in it.";

#[derive(Debug, Subcommand)]
pub enum SubjectsCommand {
    /// Erase a person's personal data: their journeys' keys, the account and its sessions.
    #[command(long_about = ERASE_HELP)]
    Erase {
        /// The person's email address (normalised; it is not stored or printed).
        #[arg(long, value_parser = parse_email)]
        email: String,
        /// Why (a ticket or request id, at least 3 characters); recorded in the log. No
        /// personal data here.
        #[arg(long, value_parser = parse_reason)]
        reason: String,
        /// Who is erasing (the operator recorded as the actor; letters, digits, `.`, `_`,
        /// `-`, `@`).
        #[arg(long, default_value = "cli-operator", value_parser = parse_actor)]
        by: String,
    },
    /// Apply retention once: erase the personal data of finished journeys (completed,
    /// failed, expired, cancelled) started longer ago than --older-than, the same way as
    /// `erase` does for one journey. Accounts stay. `serve --retention` does this hourly.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["older_than", "all_finished"])))]
    Retain {
        /// The retention period, e.g. 90d or 36h (at least 1d; `m` is minutes).
        #[arg(long, value_parser = parse_retention, value_name = "PERIOD")]
        older_than: Option<std::time::Duration>,
        /// Instead of a period: every finished journey, however recent (e.g. before a
        /// system is decommissioned).
        #[arg(long)]
        all_finished: bool,
    },
}
