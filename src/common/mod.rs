//! Helpers shared by CLI commands.

pub mod generator;
