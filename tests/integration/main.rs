//! Every integration test of the `blip2` CLI, as modules of one test binary (one link, not one
//! per file). Each module runs the built `blip2` binary on in-tree fixtures.

mod common;

mod cli_bench;
mod cli_cache_features;
mod cli_caption_score;
mod cli_embed;
mod cli_errors;
mod cli_eval_loss;
mod cli_eval_vqa;
mod cli_export;
mod cli_generate;
mod cli_generate_llava;
mod cli_generate_minigpt4;
mod cli_llava_chat;
mod cli_llava_original;
mod cli_pretrain;
mod cli_pretrain_bert;
mod cli_pretrain_connector;
mod cli_pretrain_llama;
mod cli_pretrain_sources;
mod cli_pretrain_stage2;
mod cli_quickstart;
mod cli_retrieval;
mod cli_score;
mod cli_vqa_score;
mod robust_crash;
mod robust_inputs;
mod robust_runs;
