//! BLIP-2 evaluation: metrics and evaluation loops.
