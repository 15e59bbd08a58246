//! `blip2`: pretrain and evaluate BLIP-2 Q-Formers.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod cmd;
mod common;

// glibc malloc maps and unmaps every large tensor buffer, costing up to 2.6x on CPU
// (see shared/research/candle-feasibility.md §4); mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}
