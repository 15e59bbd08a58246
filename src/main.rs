//! `blip2`: pretrain and evaluate BLIP-2 Q-Formers.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod cmd;
mod common;

/// mimalloc (glibc malloc costs up to 2.6x here), counting live bytes for `blip2 bench`.
#[global_allocator]
pub(crate) static GLOBAL: common::alloc::CountingMiMalloc = common::alloc::CountingMiMalloc::new();

/// The whole context chain on one line: "reading x.json: missing field `y`". A cause whose text
/// its parent already shows (library errors print their source) is not repeated.
pub(crate) fn one_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// `mi_option_purge_delay`: its index in `mi_option_e` of mimalloc v2's `mimalloc.h` (the
/// workspace asks libmimalloc-sys for v2: see its Cargo.toml entry).
const MI_OPTION_PURGE_DELAY: std::os::raw::c_int = 15;
/// `mi_option_allow_thp`, likewise (v3 numbers it 43).
const MI_OPTION_ALLOW_THP: std::os::raw::c_int = 37;

// In the mimalloc C library that the `mimalloc` crate links (libmimalloc-sys only binds it
// behind a feature that needs another crate).
extern "C" {
    fn mi_option_set(option: std::os::raw::c_int, value: std::os::raw::c_long);
}

fn main() -> ExitCode {
    // Never hand freed pages back to the OS: by default mimalloc purges them after a delay, and
    // the next forward pass faults them back in zeroed: 35k page faults and ~16% of the CPU time
    // of a B=8 Q-Former forward (perf stat). Peak RSS is unchanged; memory is reused, not grown.
    // SAFETY: sets a plain integer option; mimalloc reads it at every purge decision.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // No transparent huge pages: mimalloc asks for them on its arenas, and a 2 MiB page that one
    // small block touches is resident whole. Off, the stage-one step's peak RSS was ~90 MB lower
    // at the same speed (measured on mimalloc v3: 6342-6346 against 6432-6434 MB). The option stops
    // mimalloc's requests for arenas mapped from here on; the process flag also covers the
    // arena reserved before `main`.
    // SAFETY: sets a plain integer option / a per-process flag; no memory is touched.
    unsafe {
        mi_option_set(MI_OPTION_ALLOW_THP, 0);
        #[cfg(target_os = "linux")]
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    let cli = cli::Cli::parse();
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}
