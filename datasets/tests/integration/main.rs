//! Every integration test of the `datasets` crate, as modules of one test binary (one link, not one
//! per file): annotation formats, the loader, preprocessing and tokenizer parity, the synthetic
//! world and the fuzz tests.

mod common;
mod fuzz;

mod formats;
mod fuzz_formats;
mod fuzz_image;
mod fuzz_tar;
mod loader;
mod preprocess_parity;
mod sources;
mod streaming;
mod synth;
mod tokenizer_parity;
