//! Image decoding and the LAVIS/HF image transforms.

pub mod augment;
pub mod clip;
pub mod decode;
pub mod jpeg;
pub mod processor;
pub mod resample;

pub use augment::{CropBox, TrainAugment};
pub use clip::{
    center_crop, clip_transform, expand_to_square, mean_background, resize_shortest_edge,
    shortest_edge_size, ClipImageProcessorConfig, ClipSize,
};
pub use decode::{decode_bytes, decode_file, to_rgb8, DecodeLimits};
pub use processor::{
    eval_transform, to_tensor, ImageProcessorConfig, ImageSize, ImageTensor, CLIP_MEAN, CLIP_STD,
};
pub use resample::{resize_bicubic, RgbImage8};
