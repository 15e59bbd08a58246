//! BLIP-2 data: formats, preprocessing, tokenization, loader, synthetic world.
