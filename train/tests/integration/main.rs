//! Every integration test of the `train` crate, as modules of one test binary (one link, not one per
//! file): BERT initialisation of the stage-one Q-Former and the LAVIS training trajectory.

/// The qformer crate's test helpers (fixture paths, reference tensors, the test device).
#[path = "../../../qformer/tests/integration/common/mod.rs"]
mod common;

mod bert_init;
mod train_trajectory;
