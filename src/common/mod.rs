//! Helpers shared by several subcommands.

pub mod device;
