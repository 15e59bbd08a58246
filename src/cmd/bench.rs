//! `blip2 bench WORKLOAD`: time one of the five PyTorch side-by-side workloads (random
//! BLIP-2-sized weights, f32 on CPU) the way the PyTorch timer that `tools/side_by_side.sh` runs
//! times them (untimed warm-up calls, then the median of the timed ones), for side-by-side ratios
//! (`docs/performance.md`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use workloads::{anchor_gflop, Scale, Stage1StepCase, Workload, DEFAULT_SEED};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// qformer-forward, stage1-step, itm, vit-forward, opt-generate, matmul (the GEMM ceiling),
    /// llava-generate (LLaVA-1.5-7B shapes, one prefill + greedy decode), or loader (the
    /// stage-one input pipeline over the webdataset shards of --data).
    pub workload: String,
    /// Timed calls (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Untimed calls before timing (first-call allocation, caches).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// CPU threads for the tensor kernels (the anchors use 2); default: RAYON_NUM_THREADS or all cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of the random weights and inputs.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// stage1-step: also time forward, backward, gradient norm and AdamW separately (extra steps).
    #[arg(long)]
    pub phases: bool,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Shrink every dimension (tests): the numbers mean nothing.
    #[arg(long, hide = true)]
    pub tiny: bool,
    /// loader: a directory of webdataset shards (`tools/bench_loader_torch.py make DIR`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// loader: the loader's decode threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// loader: samples per batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// loader: the tokenizer.json captions are tokenized with (default: the hf-tiny fixture's).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// loader: samples shuffled together (`data.shuffle_buffer`).
    #[arg(long, default_value_t = 1000)]
    pub shuffle_buffer: usize,
    /// loader: walk the epoch's samples in their streamed order without decoding them: the
    /// index's speed and the process's peak memory, whatever the shards hold.
    #[arg(long)]
    pub index_only: bool,
    /// llava-generate: vision-tower and LLM layers (default: LLaVA-1.5-7B's 24 and 32).
    #[arg(long)]
    pub layers: Option<usize>,
    /// llava-generate: dtype the weight matrices are held in (bf16, f16, f32); activations are f32.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    /// llava-generate: tokens generated (greedy; the first comes from the prefill).
    #[arg(long, default_value_t = 16)]
    pub new_tokens: usize,
    /// llava-generate: text tokens of the prompt (BOS included), besides the image's tokens.
    #[arg(long, default_value_t = 32)]
    pub prompt_tokens: usize,
}

/// The workloads of `blip2 bench` outside the side-by-side set: one generation, not repeated
/// calls; one pass of the input pipeline.
const LLAVA_GENERATE: &str = "llava-generate";
const LOADER: &str = "loader";

pub fn run(args: BenchArgs) -> Result<()> {
    let workload = Workload::from_name(&args.workload);
    if args.workload == LOADER {
        let data =
            args.data.as_deref().context("bench loader needs --data DIR (webdataset shards)")?;
        let tokenizer = args.tokenizer.clone().unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny/itm/tokenizer.json")
        });
        return super::bench_loader::run(&args, data, &tokenizer);
    }
    if workload.is_none() && args.workload != LLAVA_GENERATE {
        let mut names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
        names.extend([LLAVA_GENERATE, LOADER]);
        bail!("unknown workload {:?}: expected one of {}", args.workload, names.join(", "));
    }
    if args.iters == 0 {
        bail!("--iters must be at least 1");
    }
    if let Some(n) = args.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        // candle's gemm and rayon's global pool both read RAYON_NUM_THREADS; the pool is built
        // on first use, which has not happened yet (nothing has run in parallel so far).
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let threads = candle_core::utils::get_num_threads();
    let Some(workload) = workload else {
        return super::bench_llava::run(&args, threads);
    };
    let scale = if args.tiny { Scale::Tiny } else { Scale::Real };

    let t = Instant::now();
    let mut case = workload.build(scale, args.seed).context("building the workload")?;
    let build_s = t.elapsed().as_secs_f64();
    for _ in 0..args.warmup {
        case.run().context("warm-up call")?;
    }
    let mut runs_ms = Vec::with_capacity(args.iters);
    let mut cpu_ms = Vec::with_capacity(args.iters);
    for _ in 0..args.iters {
        let (t, c) = (Instant::now(), process_cpu_ms()?);
        case.run().context("timed call")?;
        runs_ms.push(t.elapsed().as_secs_f64() * 1e3);
        cpu_ms.push(process_cpu_ms()? - c);
    }
    let ms = median(&runs_ms);
    let min_ms = runs_ms.iter().cloned().fold(f64::INFINITY, f64::min);

    let mut out = json!({
        "workload": workload.name(),
        "ms": ms,
        "min_ms": min_ms,
        "runs_ms": runs_ms,
        // CPU time of all threads per call (10 ms ticks): on a shared machine it moves less
        // than wall time when other processes take cores (spin-waits still count).
        "cpu_ms": median(&cpu_ms),
        "iters": args.iters,
        "warmup": args.warmup,
        "threads": threads,
        "build_s": build_s,
        "tiny": args.tiny,
    });
    if let Some((unit, per_call)) = case.throughput() {
        out[format!("{unit}_per_s")] = json!(per_call / (ms / 1e3));
    }
    let flop = if args.tiny {
        case.flop()
    } else {
        case.flop().or(anchor_gflop(workload).map(|g| g * 1e9))
    };
    if let Some(flop) = flop {
        out["gflop_per_call"] = json!(flop / 1e9);
        out["gflop_per_s"] = json!(flop / 1e9 / (ms / 1e3));
    }
    drop(case);
    if args.phases && workload == Workload::Stage1Step {
        out["phases_ms"] = stage_one_phases(scale, args.seed, args.iters)?;
    }
    // After everything, so the peak covers the phases run too.
    out["peak_rss_mb"] = json!(peak_rss_mb()?);
    // The part of that peak that was live heap (tensors, weights): the rest is what the
    // allocator kept resident beyond it.
    out["peak_live_mb"] = json!(crate::GLOBAL.peak_bytes() as f64 / (1024.0 * 1024.0));

    if args.json {
        println!("{out}");
    } else {
        let mut rate = case_rate(&out);
        if let Some(g) = out["gflop_per_s"].as_f64() {
            rate.push_str(&format!(", {g:.1} GFLOP/s"));
        }
        println!(
            "{}: median {ms:.1} ms over {} calls (min {min_ms:.1}){rate}, {threads} threads, peak RSS {:.0} MB",
            workload.name(),
            args.iters,
            out["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
        );
    }
    Ok(())
}

/// Median per phase over `iters` steps taken apart (after one warm-up step).
fn stage_one_phases(scale: Scale, seed: u64, iters: usize) -> Result<serde_json::Value> {
    let mut case = Stage1StepCase::new(scale, seed).context("building stage1-step for phases")?;
    let mb = |b: usize| b as f64 / (1024.0 * 1024.0);
    let mut live = serde_json::Map::new();
    live.insert("built".into(), json!(mb(crate::GLOBAL.live_bytes())));
    let mut probe = |phase: &'static str| {
        // Overwritten each step: the last step's values (all steps are alike).
        live.insert(phase.into(), json!(mb(crate::GLOBAL.live_bytes())));
    };
    case.step_phases(&mut probe).context("warm-up step")?;
    let mut phases = Vec::with_capacity(iters);
    for _ in 0..iters {
        phases.push(case.step_phases(&mut probe).context("timed step")?);
    }
    let med =
        |f: fn(&workloads::StepPhases) -> f64| median(&phases.iter().map(f).collect::<Vec<_>>());
    Ok(json!({
        "forward": med(|p| p.forward_ms),
        "backward": med(|p| p.backward_ms),
        "grad_norm": med(|p| p.grad_norm_ms),
        "optimizer": med(|p| p.optimizer_ms),
        // Live heap (MB) at the end of each phase of the last step.
        "live_mb": live,
    }))
}

fn case_rate(out: &serde_json::Value) -> String {
    for unit in ["pairs", "tokens"] {
        if let Some(r) = out[format!("{unit}_per_s")].as_f64() {
            return format!(", {r:.1} {unit}/s");
        }
    }
    String::new()
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// User + system CPU time of the whole process so far (/proc/self/stat, clock ticks of 10 ms).
fn process_cpu_ms() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("/proc/self/stat: no ')'")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .with_context(|| format!("/proc/self/stat: unreadable field {}", i + 3))
    };
    // Field 3 (state) is fields[0], so field 14 is fields[11].
    Ok((ticks(11)? + ticks(12)?) * 10.0)
}

/// Peak resident set (`VmHWM` of /proc/self/status) in MB (MiB, like the anchors' ru_maxrss/1024).
pub(crate) fn peak_rss_mb() -> Result<f64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("/proc/self/status has no VmHWM line")?;
    let kb: f64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("/proc/self/status: unreadable {line:?}"))?;
    Ok(kb / 1024.0)
}
