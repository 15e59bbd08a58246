//! Annotation and shard readers; each returns typed items and names the file (and field) on
//! error.

pub mod cc_sbu_align;
pub mod conversations;
pub mod gqa;
pub mod json;
pub mod karpathy;
pub mod nocaps;
pub mod pairs;
#[cfg(feature = "tables")]
pub mod table;
pub mod vqa;
pub mod webdataset;

pub use cc_sbu_align::{read_cc_sbu_align, read_instruction_prompts, CC_SBU_ALIGN_FILE};
pub use conversations::{conversation_items, read_conversations, Conversation, Speaker, Turn};
pub use gqa::{read_gqa, GqaQuestion};
pub use karpathy::{
    coco_id_from_filename, read_karpathy_eval, read_karpathy_train, EvalImage, RetrievalSplit,
};
pub use nocaps::{read_nocaps, NoCapsImage};
pub use pairs::{read_capfilt, read_pairs_jsonl};
#[cfg(feature = "tables")]
pub use table::{read_pairs_table, read_table, TableRead, TableRow};
pub use vqa::{
    read_lavis_vqa, read_vqa_official, LavisVqaRow, VqaAnnotation, VqaAnswer, VqaQuestion,
    VqaQuestionRow,
};
pub use webdataset::{for_each_shard_sample, write_shard, ShardMembers, ShardSample};
