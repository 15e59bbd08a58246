//! Phase 2a: the tiny ViT pretrained contrastively on the world's training images and captions
//! (CLIP's objective, as EVA-CLIP's ViT-g was before BLIP-2 froze it), then frozen.
//!
//! The image side is the BLIP-2 ViT itself through [`VisionTransformer::forward_trainable`], mean
//! pooled over its tokens (so every token, not only the class token, has to carry what captions
//! name: the Q-Former later reads all of them). The text side is a throwaway one-block
//! transformer over the Q-Former tokenizer's ids, pooled at `[CLS]`. Both project to
//! `image_text_hidden_size`, and the loss is the Q-Former's own ITC with the query axis of
//! length one. Only the ViT is kept; the towers' heads are dropped with the phase.
//!
//! Each step draws distinct training images (one random caption each): two captions of one image
//! in a batch would be false negatives.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::seq::IndexedRandom;
use rayon::prelude::*;

use datasets::image::{decode_file, eval_transform, DecodeLimits, ImageProcessorConfig};
use datasets::text::{Padding, TextTokenizer};
use qformer::masks::{AdditiveMask, MaskMode, PaddingMask};
use qformer::model::{l2_normalize, VisionTransformer};
use qformer::nn::{gelu, softmax, LayerNorm, Linear};
use qformer::objectives::{itc_loss_with, ItcGradient, ItcTargets};
use train::init::{init_fresh, named_vars};
use train::{
    rng, DecayRule, EpochSampler, Extras, MicroLoss, ParamStore, RunSummary, SampledBatches, Task,
    TrainRng,
};

use super::plan::PhaseOptim;
use super::world::World;
use crate::common::train_error;

const TEXT_HEADS: usize = 4;

/// One pre-LN transformer block over caption tokens, pooled at `[CLS]`.
struct CaptionTower {
    token: Tensor,
    position: Tensor,
    ln1: LayerNorm,
    qkv: Linear,
    out: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    ln_final: LayerNorm,
    proj: Linear,
}

impl CaptionTower {
    fn new(vocab: usize, max_len: usize, d: usize, embed: usize, vb: VarBuilder) -> Result<Self> {
        let ln = |name: &str| LayerNorm::new(d, 1e-6, vb.pp(name));
        let lin = |i: usize, o: usize, name: &str| qformer::nn::linear(i, o, true, vb.pp(name));
        Ok(Self {
            token: vb.get((vocab, d), "token_embedding")?,
            position: vb.get((max_len, d), "position_embedding")?,
            ln1: ln("ln1")?,
            qkv: lin(d, 3 * d, "qkv")?,
            out: lin(d, d, "out")?,
            ln2: ln("ln2")?,
            fc1: lin(d, 4 * d, "fc1")?,
            fc2: lin(4 * d, d, "fc2")?,
            ln_final: ln("ln_final")?,
            proj: lin(d, embed, "proj")?,
        })
    }

    // ids: [B, L] u32 -> [B, E]
    fn forward(&self, ids: &Tensor, padding: &PaddingMask) -> candle_core::Result<Tensor> {
        let (b, l) = ids.dims2()?;
        let d = self.token.dim(1)?;
        let hd = d / TEXT_HEADS;
        let x = self
            .token
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, l, d))?
            .broadcast_add(&self.position.narrow(0, 0, l)?)?;
        let h = self.ln1.forward(&x)?;
        let qkv =
            self.qkv.forward(&h)?.reshape((b, l, 3, TEXT_HEADS, hd))?.permute((2, 0, 3, 1, 4))?;
        let (q, k, v) =
            (qkv.get(0)?.contiguous()?, qkv.get(1)?.contiguous()?, qkv.get(2)?.contiguous()?);
        // A text-only pass: padding keys masked ([CLS] is never padding, so no row is fully
        // masked).
        let mask = AdditiveMask::new(MaskMode::UniModal, 0, Some(padding), b, ids.device())?;
        let bias = mask.tensor();
        let scores = (q.matmul(&k.t()?)? * (hd as f64).powf(-0.5))?.broadcast_add(bias)?;
        let ctx = softmax(&scores)?.matmul(&v)?.transpose(1, 2)?.reshape((b, l, d))?;
        let x = (x + self.out.forward(&ctx)?)?;
        let mlp = self.fc2.forward(&gelu(&self.fc1.forward(&self.ln2.forward(&x)?)?)?)?;
        let x = (x + mlp)?;
        self.proj.forward(&self.ln_final.forward(&x.i((.., 0))?)?)
    }
}

/// Mean of the ViT's tokens, normalized and projected.
struct ImageHead {
    ln: LayerNorm,
    proj: Linear,
}

impl ImageHead {
    // vit: [B, T, Dv] -> [B, E]
    fn forward(&self, vit: &Tensor) -> candle_core::Result<Tensor> {
        self.proj.forward(&self.ln.forward(vit)?.mean(1)?)
    }
}

/// The training images as one pixel tensor (row i = image i) and each image's captions.
pub struct ImageCaptions {
    pixels: Tensor,
    captions: Vec<Vec<String>>,
}

impl ImageCaptions {
    /// Decodes (eval transform) every training image once.
    pub fn load(world: &World, cfg: &ImageProcessorConfig, device: &Device) -> Result<Self> {
        let mut by_image: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for item in &world.train {
            by_image.entry(item.key.as_str()).or_default().push(item.caption.clone());
        }
        let names: Vec<&str> = by_image.keys().copied().collect();
        let pixels: Vec<f32> = names
            .par_iter()
            .map(|n| -> Result<Vec<f32>> {
                let path = world.root.join(n);
                let img = decode_file(&path, DecodeLimits::default())
                    .with_context(|| format!("decoding {}", path.display()))?;
                Ok(eval_transform(&img, cfg).data)
            })
            .collect::<Result<Vec<_>>>()?
            .concat();
        let s = cfg.size.height;
        let pixels = Tensor::from_vec(pixels, (names.len(), 3, s, s), device)?;
        Ok(Self { pixels, captions: by_image.into_values().collect() })
    }

    pub fn len(&self) -> usize {
        self.captions.len()
    }
}

/// The two towers' heads and the temperature: trained with the ViT, dropped after.
struct ContrastiveHeads {
    text: CaptionTower,
    image: ImageHead,
    temp: Tensor,
}

impl ContrastiveHeads {
    /// Seeded fresh heads in `heads` for a ViT of width `dv`.
    fn new(
        heads: &VarMap,
        dv: usize,
        tokenizer: &TextTokenizer,
        embed: usize,
        seed: u64,
        dev: &Device,
    ) -> Result<Self> {
        let vb = VarBuilder::from_varmap(heads, DType::F32, dev);
        let (vocab, max_len) = (tokenizer.vocab_size(), tokenizer.max_length);
        let this = Self {
            text: CaptionTower::new(vocab, max_len, dv, embed, vb.pp("text"))?,
            image: ImageHead {
                ln: LayerNorm::new(dv, 1e-6, vb.pp("image.ln"))?,
                proj: qformer::nn::linear(dv, embed, true, vb.pp("image.proj"))?,
            },
            temp: vb.get((), "temp")?,
        };
        init_fresh(&named_vars(heads)?, &mut rng::substream(seed, "init/vit_heads"))?;
        Ok(this)
    }

    /// Symmetric ITC of a batch of images and their captions (text b is image b's positive).
    // pixels: [B, 3, H, W], ids: [B, L] -> scalar
    fn loss(
        &self,
        vit: &VisionTransformer,
        pixels: &Tensor,
        ids: &Tensor,
        padding: &PaddingMask,
    ) -> candle_core::Result<Tensor> {
        let img = l2_normalize(&self.image.forward(&vit.forward_trainable(pixels)?)?)?;
        let txt = l2_normalize(&self.text.forward(ids, padding)?)?;
        let targets = ItcTargets::Diagonal;
        Ok(itc_loss_with(&img.unsqueeze(1)?, &txt, &self.temp, targets, ItcGradient::Both)?.loss)
    }
}

/// One step's images (distinct) and one caption of each.
pub struct ImageCaptionBatch {
    /// `[B, 3, H, W]`
    pixels: Tensor,
    /// `[B, L]` each
    ids: Tensor,
    padding: PaddingMask,
}

/// Phase 2a's task: CLIP's symmetric ITC between the mean-pooled ViT and the caption tower.
struct ContrastiveVit<'a> {
    vit: &'a VisionTransformer,
    towers: ContrastiveHeads,
}

impl Task for ContrastiveVit<'_> {
    type Batch = ImageCaptionBatch;

    fn loss(&self, b: &ImageCaptionBatch, _rng: &mut TrainRng) -> qformer::Result<MicroLoss> {
        let itc = self.towers.loss(self.vit, &b.pixels, &b.ids, &b.padding)?;
        Ok(MicroLoss { total: itc.clone(), parts: vec![("itc".into(), itc)] })
    }
}

/// Trains `vit` (its variables in `vision_vars`) for `optim.steps` steps; the heads are dropped.
#[allow(clippy::too_many_arguments)]
pub fn pretrain_vit(
    vit: &VisionTransformer,
    vision_vars: &VarMap,
    data: &ImageCaptions,
    tokenizer: &TextTokenizer,
    embed_dim: usize,
    optim: PhaseOptim,
    seed: u64,
    out: &Path,
) -> Result<RunSummary> {
    let dev = data.pixels.device().clone();
    let heads = VarMap::new();
    let dv = vit.config().hidden_size;
    let towers = ContrastiveHeads::new(&heads, dv, tokenizer, embed_dim, seed, &dev)?;
    let mut params = ParamStore::from_varmap(vision_vars, DecayRule::LavisBase);
    for (name, var) in named_vars(&heads)? {
        params.insert(&format!("heads.{name}"), var, true, DecayRule::LavisBase);
    }
    let task = ContrastiveVit { vit, towers };
    let sampler = EpochSampler::new(data.len(), rng::substream(seed, "data/vit"));
    let mut pick: TrainRng = rng::substream(seed, "data/vit/captions");
    let build = move |idx: &[usize]| -> train::Result<ImageCaptionBatch> {
        let captions: Vec<&str> = idx
            .iter()
            .map(|&i| {
                data.captions[i].choose(&mut pick).expect("every image has captions").as_str()
            })
            .collect();
        let (ids, padding) = token_tensors(tokenizer, &captions, &dev).map_err(train_error)?;
        let rows = Tensor::new(idx.iter().map(|&i| i as u32).collect::<Vec<_>>(), &dev)?;
        Ok(ImageCaptionBatch { pixels: data.pixels.index_select(&rows, 0)?, ids, padding })
    };
    let batch = optim.batch.min(data.len());
    let mut batches = SampledBatches::new(sampler, batch, true, Box::new(build));
    let settings = optim.settings(out, "vit", seed);
    Ok(train::run(&settings, &params, &task, &mut batches, Extras::default())?)
}

/// Token ids `[B, L]` and padding mask of `texts`, padded to the longest.
fn token_tensors(
    tok: &TextTokenizer,
    texts: &[&str],
    dev: &Device,
) -> Result<(Tensor, PaddingMask)> {
    let t = tok.encode(texts, Padding::Longest)?;
    let ids = Tensor::from_vec(t.input_ids, (t.batch, t.seq_len), dev)?;
    let rows: Vec<Vec<u32>> = t.attention_mask.chunks(t.seq_len).map(<[u32]>::to_vec).collect();
    Ok((ids, PaddingMask::from_rows(&rows)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::quickstart::models::{write_config, Models, Sizes};
    use crate::cmd::quickstart::vocab::{world_words, write_qformer_tokenizer};

    /// One backward through the phase's loss reaches every ViT weight and every head: the
    /// composite (differentiable) LayerNorm/softmax paths are taken, the patch convolution
    /// passes its gradient on, nothing is detached on the way.
    #[test]
    fn every_vit_and_head_variable_gets_a_gradient() {
        let dir = tempfile::tempdir().unwrap();
        let captions = ["a red circle", "two blue squares above a red circle", "a green square"];
        let words = world_words(captions);
        let tok_path = dir.path().join("q.json");
        let vocab = write_qformer_tokenizer(&tok_path, &words).unwrap();
        let tok = TextTokenizer::from_file(&tok_path, 16).unwrap();
        let sizes = Sizes {
            image_size: 16,
            patch_size: 8,
            vit_hidden: 16,
            vit_layers: 2,
            qformer_hidden: 16,
            qformer_layers: 1,
            queries: 2,
            embed_dim: 8,
            opt_hidden: 16,
            opt_layers: 1,
            qformer_dropout: 0.0,
        };
        write_config(&dir.path().join("config.json"), &sizes, vocab, vocab).unwrap();
        let dev = Device::Cpu;
        let models = Models::fresh(&dir.path().join("config.json"), 3, &dev).unwrap();
        let vit = models.qformer.vision().unwrap();
        let heads = VarMap::new();
        let towers =
            ContrastiveHeads::new(&heads, sizes.vit_hidden, &tok, sizes.embed_dim, 3, &dev)
                .unwrap();
        let s = sizes.image_size;
        let n = captions.len();
        let pixels: Vec<f32> =
            (0..n * 3 * s * s).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let pixels = Tensor::from_vec(pixels, (n, 3, s, s), &dev).unwrap();
        let (ids, mask) = token_tensors(&tok, &captions, &dev).unwrap();
        let loss = towers.loss(vit, &pixels, &ids, &mask).unwrap();
        let grads = loss.backward().unwrap();
        let mut checked = 0;
        for vm in [&models.vision_vars, &heads] {
            for (name, var) in named_vars(vm).unwrap() {
                let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient"));
                let mass = g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(mass > 0.0 && mass.is_finite(), "{name}: gradient mass {mass}");
                checked += 1;
            }
        }
        assert!(checked > 20, "only {checked} variables");
    }
}
