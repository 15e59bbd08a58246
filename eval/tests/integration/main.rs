//! Every integration test of the `eval` crate, as modules of one test binary (one link, not one per
//! file): VQA and GQA scoring, VQA normalisation and retrieval metrics against their references.

mod gqa;
mod retrieval;
mod retrieval_hf;
mod vqa_normalization;
mod vqa_official;
