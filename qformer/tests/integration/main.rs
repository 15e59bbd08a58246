//! Every integration test of the `qformer` crate, as modules of one test binary (one link, not one
//! per file): forward parity with HF / LAVIS, stage-one objectives and their gradients, mask modes,
//! strict weight loading and the LLM bridges, on the tiny fixtures of tests/fixtures/hf-tiny.

mod common;
mod llm_common;

mod connector_splice;
mod half_weights;
mod llava;
mod llm_blip2_llama;
mod llm_grad;
mod llm_llama;
mod llm_opt;
mod llm_t5;
mod minigpt4;
mod parity_hf;
mod parity_lavis;
mod parity_objectives;
mod qformer_modes;
mod stage1_finite_difference;
mod weights_strict;
