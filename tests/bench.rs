//! `passage bench` end to end (issue: PostgreSQL event store and several engine nodes, point 5).
//! A small run on each store must print a complete table whose figures agree with each other
//! and with the journeys it ran, leave no scratch store behind, and counts that would measure
//! nothing are refused before anything runs.

mod common;

use common::{Passage, Run, TestDir};
use std::collections::HashMap;

/// Journeys per level in the small runs.
const JOURNEYS: usize = 6;

/// What the bench's person does (email code, SMS code, new password) stores 12 events per
/// journey, from `JourneyStarted` to the delivery of the "password changed" notice.
const EVENTS_PER_JOURNEY: usize = 12;

/// The steps the bench times, in journey order.
const STEPS: [&str; 6] = [
    "start",
    "email",
    "email code",
    "choice",
    "sms code",
    "password",
];

/// One row of the bench's table.
#[derive(Debug)]
struct Row {
    mode: String,
    concurrency: usize,
    journeys: usize,
    events_per_sec: f64,
    journeys_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    ratio: String,
}

fn rows(run: &Run, backend: &str) -> Vec<Row> {
    let prefix = format!("| {backend} |");
    run.stdout
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 9, "a table row has 9 cells: {l}");
            let num = |i: usize| -> f64 {
                cells[i]
                    .parse()
                    .unwrap_or_else(|_| panic!("cell {i} of {l:?} is not a number"))
            };
            Row {
                mode: cells[1].to_owned(),
                concurrency: num(2) as usize,
                journeys: num(3) as usize,
                events_per_sec: num(4),
                journeys_per_sec: num(5),
                p50_ms: num(6),
                p99_ms: num(7),
                ratio: cells[8].to_owned(),
            }
        })
        .collect()
}

/// The first line of stdout that starts with `prefix`, without it.
#[track_caller]
fn line_starting<'a>(run: &'a Run, prefix: &str) -> &'a str {
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in {run}"))
}

/// The number that follows `{backend}: {start}` in a note under the table, after `skip`.
fn note_number(run: &Run, backend: &str, start: &str, skip: &str) -> f64 {
    let line = line_starting(run, &format!("- {backend}: {start}"));
    let after = line
        .strip_prefix(skip)
        .unwrap_or_else(|| panic!("{line:?} does not start with {skip:?}"));
    let digits: String = after
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {start:?} in {line:?}"))
}

/// The three figures on the summary line that starts with `which`: grouped ÷ ungrouped,
/// engine ÷ raw (as printed) and the step p99, each a median when `which` says so; and the
/// rest of the line.
fn ratios<'a>(run: &'a Run, which: &str) -> (f64, &'a str, f64, &'a str) {
    let line = line_starting(
        run,
        &format!("- {which}grouped ÷ one append per transaction "),
    );
    let after = |marker: &str| -> &'a str {
        line.split_once(marker)
            .unwrap_or_else(|| panic!("{marker:?} not in {line:?}"))
            .1
            .split([' ', '×'])
            .next()
            .expect("a figure")
    };
    let num = |text: &str| -> f64 {
        text.parse()
            .unwrap_or_else(|_| panic!("{text:?} is not a number in {line:?}"))
    };
    let grouping = line.split(['×', ' ']).next().expect("a figure");
    (
        num(grouping),
        after("engine ÷ raw "),
        num(after("step p99 ")),
        line,
    )
}

/// The range the exact grouped ÷ ungrouped ratio lies in, given the table's events/s,
/// which are rounded to whole events.
fn grouping_range(grouped: f64, ungrouped: f64) -> (f64, f64) {
    (
        (grouped - 0.5) / (ungrouped + 0.5),
        (grouped + 0.5) / (ungrouped - 0.5),
    )
}

/// `printed`, the exact ratio rounded to one decimal, is within rounding of `range`.
#[track_caller]
fn assert_within(printed: f64, (low, high): (f64, f64), run: &Run) {
    assert!(
        low - 0.05 - 1e-9 <= printed && printed <= high + 0.05 + 1e-9,
        "{printed} outside {low:.3}..{high:.3} (from the table) in {run}"
    );
}

/// Runs a small bench on `backend`, checks everything it printed, and returns the run.
fn small_run(p: &Passage, backend: &str, extra: &[&str]) -> Run {
    let journeys = JOURNEYS.to_string();
    let mut args = vec![
        "bench",
        "--backend",
        backend,
        // Space separated, as the default is shown in --help.
        "--levels",
        "1",
        "3",
        "--journeys",
        &journeys,
        "--think-ms",
        "20",
        "--raw-rows",
        "400",
    ];
    args.extend_from_slice(extra);
    let run = p.run(&args);
    run.expect_ok().no_panic();

    let rows = rows(&run, backend);
    let modes: Vec<(&str, usize)> = rows
        .iter()
        .map(|r| (r.mode.as_str(), r.concurrency))
        .collect();
    assert_eq!(
        modes,
        [
            ("grouped", 1),
            ("grouped", 3),
            ("grouped, people pausing ~20 ms before each step", 3),
            ("one append per transaction", 3),
        ],
        "rows of {run}"
    );
    for r in &rows {
        assert_eq!(r.journeys, JOURNEYS, "{r:?}");
        assert!(r.events_per_sec > 0.0 && r.journeys_per_sec > 0.0, "{r:?}");
        // Both rates divide a count by one elapsed time, so unrounded, events/s is exactly
        // 12 × journeys/s. The table rounds events/s to a whole number (±0.5) and journeys/s
        // to tenths (±0.05, ±0.6 once multiplied by 12).
        let off = (r.events_per_sec - EVENTS_PER_JOURNEY as f64 * r.journeys_per_sec).abs();
        assert!(
            off <= 0.5 + EVENTS_PER_JOURNEY as f64 * 0.05 + 1e-9,
            "events/s is {off:.2} away from {EVENTS_PER_JOURNEY} × journeys/s in {r:?}"
        );
        // A fast step rounds to 0.0 ms.
        assert!(0.0 <= r.p50_ms && r.p50_ms <= r.p99_ms, "{r:?}");
        // The efficiency ratio belongs to the rows at the highest level run flat out.
        let flat_out_top = r.concurrency == 3 && !r.mode.contains("pausing");
        assert_eq!(r.ratio.ends_with(" %"), flat_out_top, "{r:?}");
        assert_eq!(r.ratio == "-", !flat_out_top, "{r:?}");
    }

    let mut raw = HashMap::new();
    for batch in [1, 8, 64] {
        let rate = note_number(
            &run,
            backend,
            &format!("raw batched INSERT, 3 clients, {batch} rows per transaction"),
            ":",
        );
        assert!(rate > 0.0, "x{batch}: {rate} rows/s in {run}");
        raw.insert(batch, rate);
    }
    let best = note_number(&run, backend, "raw baseline (best)", "");
    let max = raw.values().copied().fold(0.0, f64::max);
    // The notes round to whole rows/s.
    assert!((best - max).abs() <= 1.0, "best {best} of {raw:?}");

    // The replay reads the store of the highest flat-out level: all its journeys' events.
    let replayed = note_number(&run, backend, "replay of", "");
    assert_eq!(replayed as usize, JOURNEYS * EVENTS_PER_JOURNEY, "{run}");

    // The summary's ratios are the table's, at the highest level.
    let (grouping, of_raw, p99, _) = ratios(&run, &format!("{backend}: "));
    let (grouped, ungrouped) = (&rows[1], &rows[3]);
    assert_within(
        grouping,
        grouping_range(grouped.events_per_sec, ungrouped.events_per_sec),
        &run,
    );
    assert_eq!(format!("{of_raw} %"), grouped.ratio, "{run}");
    assert_eq!(p99, grouped.p99_ms, "{run}");

    for note in ["c=3, flat out: ", "c=3, 20 ms pauses: "] {
        let line = line_starting(&run, &format!("- {backend}: {note}"));
        let named: Vec<&str> = line
            .split_once("step p50/p99 ms: ")
            .expect("the steps' latencies")
            .1
            .split(", ")
            .map(|s| s.rsplit_once(' ').expect("a step and its figures").0)
            .collect();
        assert_eq!(named, STEPS, "{line}");
    }
    run
}

/// A runner whose temporary files (the bench's scratch stores) go to `dir`, where the test
/// can check they were removed.
fn in_dir(dir: &TestDir) -> Passage {
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).expect("create the scratch parent");
    Passage::new(dir).with_env("TMPDIR", &tmp.display().to_string())
}

/// What the bench left in the temporary directory it was given.
fn leftovers(dir: &TestDir) -> Vec<String> {
    std::fs::read_dir(dir.join("tmp"))
        .expect("list the scratch parent")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_small_run_on_sqlite_prints_a_consistent_table() {
    let dir = TestDir::new("bench-sqlite");
    small_run(&in_dir(&dir), "sqlite", &[]);
    assert_eq!(leftovers(&dir), Vec::<String>::new(), "scratch files left");
}

/// `--repeat 2`: each run has its own rows (and baseline), and the summary gives the median
/// and range of what the rows say.
#[test]
fn repeated_runs_are_summarized_by_median_and_range() {
    let dir = TestDir::new("bench-repeat");
    let run = in_dir(&dir).run(&[
        "bench",
        "--levels",
        "2",
        "--journeys",
        "4",
        "--think-ms",
        "0",
        "--raw-rows",
        "200",
        "--repeat",
        "2",
    ]);
    run.expect_ok().no_panic();
    let mut ranges = Vec::new();
    let mut p99 = Vec::new();
    for n in [1, 2] {
        let label = format!("sqlite (run {n})");
        let rows = rows(&run, &label);
        let modes: Vec<&str> = rows.iter().map(|r| r.mode.as_str()).collect();
        assert_eq!(modes, ["grouped", "one append per transaction"], "{run}");
        ranges.push(grouping_range(
            rows[0].events_per_sec,
            rows[1].events_per_sec,
        ));
        p99.push(rows[0].p99_ms);
        let replayed = note_number(&run, &label, "replay of", "");
        assert_eq!(replayed as usize, 4 * EVENTS_PER_JOURNEY, "{run}");
    }
    let (median, _, p99_median, line) = ratios(&run, "sqlite, median of 2 runs (lowest–highest): ");
    p99.sort_by(f64::total_cmp);
    // The median of two is their mean: it lies between the means of the runs' bounds.
    let mean = |pick: fn(&(f64, f64)) -> f64| ranges.iter().map(pick).sum::<f64>() / 2.0;
    assert_within(median, (mean(|r| r.0), mean(|r| r.1)), &run);
    // The p99s are the table's own figures: their range is printed as they are.
    assert!(
        line.contains(&format!(
            "step p99 {p99_median:.1} ms ({:.1}–{:.1} ms)",
            p99[0], p99[1]
        )),
        "{line}"
    );
    // The median is rounded once from the exact figures, the table's two p99s once each.
    assert!(
        (p99_median - (p99[0] + p99[1]) / 2.0).abs() <= 0.1 + 1e-9,
        "{line}"
    );
    assert_eq!(leftovers(&dir), Vec::<String>::new(), "scratch files left");
}

#[tokio::test]
async fn a_small_run_on_postgres_prints_a_consistent_table_and_drops_its_database() {
    let Some(server) = common::postgres::ScratchServer::connect().await else {
        return;
    };
    let dir = TestDir::new("bench-postgres");
    let admin = server.url("postgres");
    let p = in_dir(&dir);
    let run = tokio::task::spawn_blocking(move || {
        small_run(&p, "postgres", &["--bench-postgres", &admin])
    })
    .await
    .expect("the bench run");
    assert_eq!(leftovers(&dir), Vec::<String>::new(), "scratch files left");
    // The database this run named, not every bench database: another bench may be running.
    let note = line_starting(&run, "- postgres: scratch database ");
    let (name, _) = note.split_once(',').expect("the database's name");
    assert!(name.starts_with("passage_bench_"), "{note}");
    assert_eq!(
        server.databases_like(&name.replace('_', "\\_")).await,
        Vec::<String>::new(),
        "the bench's scratch database {name} was not dropped"
    );
}

#[test]
fn counts_that_measure_nothing_are_refused() {
    let dir = TestDir::new("bench-usage");
    // A regressed check would start a whole benchmark: fail instead of waiting for it.
    let p = in_dir(&dir).with_timeout(std::time::Duration::from_secs(60));
    for (args, flag) in [
        (&["bench", "--levels", "0"][..], "--levels"),
        (&["bench", "--levels", "1,0,4"][..], "--levels"),
        (&["bench", "--journeys", "0"][..], "--journeys"),
        (&["bench", "--raw-rows", "0"][..], "--raw-rows"),
        (&["bench", "--repeat", "0"][..], "--repeat"),
    ] {
        p.refuses(args, flag, "must be at least 1");
    }
    p.refuses(
        &["bench", "--levels", "1,x"],
        "--levels",
        "`x` is not a whole number",
    );
    // Fewer journeys than the level: the row would claim a concurrency it never reached.
    p.run(&["bench", "--levels", "1", "16", "--journeys", "10"])
        .expect_code(2)
        .no_panic()
        .stderr_has("--journeys 10 is below the highest --levels value, 16")
        .stderr_has("give at least 16 journeys or lower --levels");
}
