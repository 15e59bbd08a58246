//! BLIP-2 evaluation: metrics and evaluation loops.
//!
//! Metrics reproduce the code that produced the published numbers: COCO caption metrics as pycocoevalcap
//! computes them ([`caption`]), the official VQA scorer as LAVIS ships it ([`vqa`]), LAVIS's GQA accuracy
//! ([`gqa`]) and LAVIS's retrieval recall ([`retrieval`]).

pub mod caption;
pub mod error;
pub mod gqa;
pub mod pystr;
pub mod retrieval;
pub mod vqa;

pub use error::{Error, Result};
