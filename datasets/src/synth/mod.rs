//! The synthetic world of colored shapes used for demos, tests and the quickstart.

pub mod scene;
pub mod world;

pub use scene::{Group, Relation, Scene, SceneQuestion};
pub use world::{generate, write_world, Split, SynthConfig, SynthSample, SynthSummary};
