//! BLIP-2 stage-one objectives: ITC, ITM with hard negatives, ITG (LAVIS `blip2_qformer.py`).

pub mod cross_entropy;
pub mod itc;
pub mod itg;
pub mod itm;
pub mod stage1;
pub mod stage2;

pub use cross_entropy::{cross_entropy, soft_cross_entropy, CeOpts, IGNORE_INDEX};
pub use itc::{
    itc_loss, itc_loss_with, max_query_similarities, ItcGradient, ItcOutput, ItcTargets,
    ITC_LABEL_SMOOTHING,
};
pub use itg::{itg_inputs, itg_loss, ItgInputs, ITG_LABEL_SMOOTHING};
pub use itm::{itm_loss, select_negatives, NegativeMode, SelectedNegatives};
pub use stage1::{stage_one_losses, ObjectiveConfig, PretrainBatch, PretrainLosses};
pub use stage2::{is_stage_two_trainable, stage_two_loss, StageTwoBatch, StageTwoText};
