//! The benchmark harness: what the gateway adds to every call, lane beside lane, in one run.
//!
//! `ferryman-bench run` starts the mock upstreams (this binary's `mock` command, as their own
//! processes), then for each run and each lane starts the lane afresh, measures, and stops it;
//! it prints one Markdown table of medians with their min and max over the runs. Each added
//! figure is the lane's minus the direct lane's of the same run. `tests/bench/run.sh` builds
//! everything in release, installs wrk and LiteLLM, and calls this.

mod lanes;
mod load;
mod mock;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lanes::{Lane, Mocks, Running, Setup};
use load::Run;

const USAGE: &str = "usage:
  ferryman-bench mock --port P [--latency-ms L] [--chunk-ms C]
  ferryman-bench run [--runs N] [--seconds S] [--load-seconds S] [--ttft N] [--lanes a,b,...]
                     [--litellm PATH] [--latency-ms L]
lanes: direct, plain, governed-sqlite, governed-redis, governed-grpc, litellm-master, litellm-virtual";

struct Args(Vec<String>);

impl Args {
    fn value(&self, flag: &str) -> Option<&str> {
        self.0.iter().position(|a| a == flag).and_then(|i| self.0.get(i + 1)).map(String::as_str)
    }

    fn number<T: std::str::FromStr>(&self, flag: &str, default: T) -> Result<T, String> {
        match self.value(flag) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("{flag}: {v:?} is not a number")),
        }
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    // The mock runs on one thread: no cross-thread wake-ups in the baseline.
    let mut builder = if argv.first().is_some_and(|a| a == "mock") {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => fail(&format!("cannot start a runtime: {e}")),
    };
    let args = Args(argv.clone());
    let result = match argv.first().map(String::as_str) {
        Some("mock") => runtime.block_on(run_mock(&args)),
        Some("run") => runtime.block_on(run(&args)),
        _ => Err(USAGE.to_owned()),
    };
    if let Err(e) = result {
        fail(&e);
    }
}

fn fail(message: &str) -> ! {
    eprintln!("ferryman-bench: {message}");
    std::process::exit(2)
}

async fn run_mock(args: &Args) -> Result<(), String> {
    let port = args.number("--port", 0u16)?;
    let latency = Duration::from_millis(args.number("--latency-ms", 0u64)?);
    let chunk = Duration::from_millis(args.number("--chunk-ms", 2u64)?);
    mock::serve(port, latency, chunk).await.map_err(|e| format!("mock: {e}"))
}

/// A mock upstream process, killed on drop.
struct MockProcess(std::process::Child);

impl Drop for MockProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_mock(latency_ms: u64) -> Result<(MockProcess, u16), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let child = std::process::Command::new(exe)
        .args(["mock", "--port", &port.to_string(), "--latency-ms", &latency_ms.to_string()])
        .spawn()
        .map_err(|e| format!("cannot start the mock: {e}"))?;
    let process = MockProcess(child);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok((process, port));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("the mock did not start".into())
}

/// Every figure of one lane in one run.
#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    c1: Run,
    ttft: Run,
    load: Run,
    cpu_per_10k: Option<f64>,
    rss_idle: Option<f64>,
    rss_load: Option<f64>,
}

struct Plan {
    c1_seconds: u32,
    load_seconds: u32,
    ttft: usize,
    work: PathBuf,
}

async fn measure(lane: Lane, running: &Running, plan: &Plan) -> Result<Figures, String> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = running.pid.map(load::rss_mib);
    let mut f = Figures { rss_idle, ..Default::default() };
    // Warm up: connection pools, caches, the first database writes.
    match &running.grpc {
        Some((fast, _)) => {
            load::grpc(fast, 1, 1).await?;
            f.c1 = load::grpc(fast, 1, u64::from(plan.c1_seconds)).await?;
            f.ttft = load::ttft_grpc(fast, plan.ttft).await?;
        }
        None => {
            load::wrk(&running.fast, 1, 1, 1, &plan.work)?;
            f.c1 = load::wrk(&running.fast, 1, 1, plan.c1_seconds, &plan.work)?;
            f.ttft = load::ttft_http(&running.fast, plan.ttft).await?;
        }
    }
    // Sustained load against the slow upstream, sampling the process's memory meanwhile.
    let peak = Arc::new(std::sync::Mutex::new(0.0f64));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = running.pid.map(|pid| {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let rss = load::rss_mib(pid);
                if let Ok(mut p) = peak.lock() {
                    *p = p.max(rss);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    });
    let cpu_before = running.pid.map(load::cpu_time);
    f.load = match &running.grpc {
        Some((_, slow)) => load::grpc(slow, 64, u64::from(plan.load_seconds)).await?,
        None => {
            let (target, work, seconds) = (running.slow.clone(), plan.work.clone(), plan.load_seconds);
            tokio::task::spawn_blocking(move || load::wrk(&target, 2, 64, seconds, &work))
                .await
                .map_err(|e| e.to_string())??
        }
    };
    let cpu_after = running.pid.map(load::cpu_time);
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = sampler {
        let _ = s.join();
    }
    if let (Some(a), Some(b)) = (cpu_before, cpu_after)
        && f.load.requests > 0
    {
        f.cpu_per_10k = Some((b - a).as_secs_f64() * 1000.0 / f.load.requests as f64 * 10_000.0);
    }
    f.rss_load = running.pid.map(|_| peak.lock().map_or(0.0, |p| *p));
    for (what, r) in [("c=1", f.c1), ("ttft", f.ttft), ("c=64", f.load)] {
        if r.errors > 0 {
            eprintln!("  {}: {what}: {} errors in {} requests", lane.name(), r.errors, r.requests + r.errors);
        }
    }
    Ok(f)
}

async fn run(args: &Args) -> Result<(), String> {
    let runs = args.number("--runs", 3usize)?.max(1);
    let lanes: Vec<Lane> = match args.value("--lanes") {
        None => Lane::ALL.to_vec(),
        Some(list) => {
            let mut out = vec![Lane::Direct];
            for name in list.split(',').filter(|n| !n.is_empty() && *n != "direct") {
                out.push(Lane::parse(name).ok_or_else(|| format!("--lanes: unknown lane {name:?}\n{USAGE}"))?);
            }
            out
        }
    };
    let plan = Plan {
        c1_seconds: args.number("--seconds", 5u32)?,
        load_seconds: args.number("--load-seconds", 10u32)?,
        ttft: args.number("--ttft", 200usize)?,
        work: std::env::temp_dir().join(format!("ferryman-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&plan.work).map_err(|e| e.to_string())?;
    let setup = Setup {
        // Absolute: LiteLLM runs in a working directory of its own.
        litellm: args.value("--litellm").map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| PathBuf::from(p))),
        postgres: ferryman_tests::postgres_base_url(),
        redis: std::env::var("FERRYMAN_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned()),
        work: plan.work.clone(),
    };
    let latency = args.number("--latency-ms", 20u64)?;
    let (_fast_mock, fast) = start_mock(0).await?;
    let (_slow_mock, slow) = start_mock(latency).await?;
    let mocks = Mocks { fast, slow };

    let mut results: Vec<(Lane, Vec<Figures>, Option<String>)> = lanes.iter().map(|l| (*l, Vec::new(), None)).collect();
    for r in 0..runs {
        for (lane, figures, skipped) in results.iter_mut() {
            if skipped.is_some() {
                continue;
            }
            eprintln!("run {}/{runs}: {}", r + 1, lane.name());
            let outcome = match lanes::start(*lane, &setup, mocks).await {
                Ok(running) => measure(*lane, &running, &plan).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(f) => figures.push(f),
                Err(e) => {
                    eprintln!("  {} not measured: {e}", lane.name());
                    *skipped = Some(e.lines().next().unwrap_or("").to_owned());
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&plan.work);
    // The table is the harness's output: stdout, so it can be redirected into a file.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", table(&results, runs, latency, &plan)).map_err(|e| e.to_string())?;
    Ok(())
}

/// Median, min and max of a figure over the runs.
fn spread(values: &[f64]) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    Some((mid, v[0], v[v.len() - 1]))
}

fn cell(values: &[f64], decimals: usize) -> String {
    match spread(values) {
        None => "–".to_owned(),
        Some((mid, lo, hi)) if values.len() == 1 || (lo - hi).abs() < f64::EPSILON => format!("{mid:.decimals$}"),
        Some((mid, lo, hi)) => format!("{mid:.decimals$} ({lo:.decimals$}–{hi:.decimals$})"),
    }
}

fn table(results: &[(Lane, Vec<Figures>, Option<String>)], runs: usize, latency: u64, plan: &Plan) -> String {
    let direct = results.iter().find(|(l, _, _)| *l == Lane::Direct).map(|(_, f, _)| f.clone()).unwrap_or_default();
    let added = |figures: &[Figures], pick: fn(&Figures) -> f64| -> Vec<f64> {
        figures.iter().zip(&direct).map(|(f, d)| pick(f) - pick(d)).collect()
    };
    let mut out = format!(
        "| lane | added p50 c=1 (µs) | added p99 c=1 (µs) | req/s c=64, {latency} ms upstream | p99 c=64 (ms) | TTFT added p50 (µs) | CPU per 10k req (ms) | RSS idle (MiB) | RSS under load (MiB) |\n|---|---|---|---|---|---|---|---|---|\n"
    );
    for (lane, figures, skipped) in results {
        if let Some(why) = skipped {
            out.push_str(&format!("| {} | not measured: {} | | | | | | | |\n", lane.name(), why.replace('|', "/")));
            continue;
        }
        let all = |pick: fn(&Figures) -> f64| figures.iter().map(pick).collect::<Vec<_>>();
        let opt = |pick: fn(&Figures) -> Option<f64>| figures.iter().filter_map(pick).collect::<Vec<_>>();
        let (p50, p99, ttft) = if *lane == Lane::Direct {
            (cell(&all(|f| f.c1.p50_us), 0), cell(&all(|f| f.c1.p99_us), 0), cell(&all(|f| f.ttft.p50_us), 0))
        } else {
            (
                cell(&added(figures, |f| f.c1.p50_us), 0),
                cell(&added(figures, |f| f.c1.p99_us), 0),
                cell(&added(figures, |f| f.ttft.p50_us), 0),
            )
        };
        let errors: u64 = figures.iter().map(|f| f.c1.errors + f.ttft.errors + f.load.errors).sum();
        let mut name = lane.name().to_owned();
        if *lane == Lane::Direct {
            name.push_str(" (absolute figures)");
        }
        if errors > 0 {
            name.push_str(&format!(" ({errors} errors!)"));
        }
        out.push_str(&format!(
            "| {name} | {p50} | {p99} | {} | {} | {ttft} | {} | {} | {} |\n",
            cell(&all(|f| f.load.rps()), 0),
            cell(&all(|f| f.load.p99_us / 1000.0), 1),
            cell(&opt(|f| f.cpu_per_10k), 0),
            cell(&opt(|f| f.rss_idle), 1),
            cell(&opt(|f| f.rss_load), 1),
        ));
    }
    out.push_str(&format!(
        "\nMedian (min–max) of {runs} run(s); c=1 for {} s, c=64 for {} s, TTFT over {} streamed calls. \
         Added figures are the lane's minus the direct lane's in the same run.\n",
        plan.c1_seconds, plan.load_seconds, plan.ttft
    ));
    out
}
