//! A BLIP-2 model as it lies in an HF Hub directory (config.json, model.safetensors or a sharded
//! index, tokenizer.json, preprocessor_config.json), optionally with a LAVIS stage-one `.pth`
//! on top and/or an LM head from a LAVIS-named safetensors file; and the writer of such a
//! directory.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use datasets::image::ImageProcessorConfig;
use datasets::text::TextTokenizer;
use qformer::model::Blip2Qformer;
use qformer::weights::{
    check, detect_parts, load, read_lavis_pth, read_lavis_safetensors, LoadOptions, TensorSet,
};
use qformer::Blip2Config;

use crate::common::atomic::replace_dir;
use crate::common::device::parse_device;

/// The model arguments of the commands that run a Q-Former with its image-text heads
/// (`score`, `embed`, `eval loss`, `eval retrieval`): `#[command(flatten)]` them.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// HF Hub model directory (config.json, model.safetensors, tokenizer.json,
    /// preprocessor_config.json), e.g. the RUN_DIR/model a stage-one `blip2 pretrain` run writes.
    #[arg(long = "model", value_name = "MODEL")]
    pub dir: PathBuf,
    /// LAVIS stage-one checkpoint (.pth) replacing all but the ViT of the model directory.
    #[arg(long)]
    pub lavis_checkpoint: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ModelArgs {
    /// The `--device` as a candle device.
    pub fn open_device(&self) -> Result<Device> {
        parse_device(&self.device)
    }

    /// Where the weights come from: `--model`, `--lavis-checkpoint` and an optional ITG head file.
    pub fn source(&self, lm_head: Option<PathBuf>) -> ModelSource {
        ModelSource {
            dir: self.dir.clone(),
            lavis_checkpoint: self.lavis_checkpoint.clone(),
            lm_head,
        }
    }

    /// Opens `--device`, loads the model ([`load_model_dir`], the tokenizer cut at
    /// `text_max_length`) and refuses one without image-text heads (ITC/ITM projections), such as
    /// the Q-Former of a `Blip2ForConditionalGeneration` directory.
    pub fn load_with_heads(
        &self,
        lm_head: Option<PathBuf>,
        text_max_length: usize,
    ) -> Result<(LoadedDir, Device)> {
        let device = self.open_device()?;
        let loaded = load_model_dir(&self.source(lm_head), text_max_length, &device)?;
        if loaded.model.heads().is_none() {
            bail!(
                "model {} has no image-text heads (vision/text projections, ITM head; \
                 use_qformer_text_input is false in its config.json), which this command needs: \
                 give a Q-Former directory such as a stage-one `blip2 pretrain` run's RUN_DIR/model",
                self.dir.display()
            );
        }
        Ok((loaded, device))
    }
}

/// Where the weights come from.
#[derive(Debug, Clone)]
pub struct ModelSource {
    /// HF Hub directory (gives the config, tokenizer, processor and at least the ViT).
    pub dir: PathBuf,
    /// LAVIS stage-one checkpoint replacing everything but the ViT (its `ln_vision` eps is 1e-5).
    pub lavis_checkpoint: Option<PathBuf>,
    /// `Qformer.cls.predictions.*` tensors replacing (or adding) the ITG head.
    pub lm_head: Option<PathBuf>,
}

pub struct LoadedDir {
    pub model: Blip2Qformer,
    pub processor: ImageProcessorConfig,
    pub tokenizer: TextTokenizer,
}

/// The Q-Former tokenizer: LLM directories keep it in `qformer_tokenizer/` next to the LLM's own.
fn tokenizer_path(dir: &Path) -> Result<PathBuf> {
    let nested = dir.join("qformer_tokenizer").join("tokenizer.json");
    if nested.is_file() {
        return Ok(nested);
    }
    let top = dir.join("tokenizer.json");
    if top.is_file() {
        return Ok(top);
    }
    bail!(
        "model directory {} has no tokenizer.json (nor qformer_tokenizer/tokenizer.json)",
        dir.display()
    )
}

pub fn load_model_dir(
    src: &ModelSource,
    text_max_length: usize,
    device: &Device,
) -> Result<LoadedDir> {
    let dir = &src.dir;
    if !dir.is_dir() {
        bail!("model directory {} does not exist", dir.display());
    }
    if !dir.join("config.json").is_file() {
        bail!("{} is not a model directory: it has no config.json", dir.display());
    }
    let processor_path = dir.join("preprocessor_config.json");
    let processor = ImageProcessorConfig::from_file(&processor_path)
        .with_context(|| format!("cannot read {}", processor_path.display()))?;
    let tokenizer = TextTokenizer::from_file(&tokenizer_path(dir)?, text_max_length)?;

    let (cfg, hf) = TensorSet::from_hf_dir(dir, device)?;
    let mut set = match &src.lavis_checkpoint {
        Some(pth) => {
            if !pth.is_file() {
                bail!("LAVIS checkpoint {} does not exist", pth.display());
            }
            // LAVIS saves only trainable tensors: the ViT comes from the HF directory.
            read_lavis_pth(pth, device)?.merge(hf.vision_encoder_only())?
        }
        // The LLM half of a Blip2ForConditionalGeneration directory is not part of the Q-Former model.
        None => hf.filter(|n| {
            !n.starts_with("language_model.") && !n.starts_with("language_projection.")
        }),
    };
    if let Some(head) = &src.lm_head {
        if !head.is_file() {
            bail!("LM head file {} does not exist", head.display());
        }
        let head_set = read_lavis_safetensors(head, device)?;
        if !head_set.names().any(|n| n.starts_with("cls.predictions.")) {
            bail!("{} holds no Qformer.cls.predictions.* tensors", head.display());
        }
        set = set.filter(|n| !n.starts_with("cls.predictions.")).merge(head_set)?;
    }
    let parts = detect_parts(&cfg, &set);
    let opts = LoadOptions { device: device.clone(), ..Default::default() };
    let loaded = load(&cfg, &set, parts, &opts)?;
    Ok(LoadedDir { model: loaded.model, processor, tokenizer })
}

/// `config.json` for `cfg` as HF writes it: our fields plus the `model_type`s that
/// transformers' `AutoConfig` dispatches on (a `Blip2Config` does not keep them).
pub fn hf_config_json(cfg: &Blip2Config) -> Result<serde_json::Value> {
    let mut json = serde_json::to_value(cfg).context("cannot serialize the model config")?;
    let obj = json.as_object_mut().ok_or_else(|| anyhow!("model config is not a JSON object"))?;
    if obj.get("text_config").is_some_and(|t| t.is_null()) {
        obj.remove("text_config");
    }
    if cfg.architectures.is_empty() && cfg.qformer_config.use_qformer_text_input {
        obj.insert("architectures".into(), serde_json::json!(["Blip2ForImageTextRetrieval"]));
    }
    obj.insert("model_type".into(), "blip-2".into());
    for (section, model_type) in
        [("vision_config", "blip_2_vision_model"), ("qformer_config", "blip_2_qformer")]
    {
        if let Some(sub) = obj.get_mut(section).and_then(|v| v.as_object_mut()) {
            sub.insert("model_type".into(), model_type.into());
        }
    }
    Ok(json)
}

/// Writes a model directory that [`load_model_dir`] (and HF's `from_pretrained`) opens alone:
/// `config.json` (`config` as given), `model.safetensors` (`tensors` under canonical names,
/// the frozen ViT included; `temp` kept, which HF ignores), `tokenizer.json` (a copy of
/// `tokenizer_json`) and `preprocessor_config.json`. The directory appears whole or not at all;
/// an existing one is replaced.
pub fn save_model_dir(
    dir: &Path,
    config: &serde_json::Value,
    tensors: &HashMap<String, Tensor>,
    tokenizer_json: &Path,
    processor: &ImageProcessorConfig,
) -> Result<()> {
    let files = [(PathBuf::from("tokenizer.json"), tokenizer_json.to_path_buf())];
    save_model_dir_with_files(dir, config, tensors, processor, &files)
}

/// [`save_model_dir`] with any side files: `(path inside the directory, source file)`, e.g. an
/// LLM directory's `tokenizer.json` plus `qformer_tokenizer/tokenizer.json`. One of them must be
/// a tokenizer [`load_model_dir`] finds.
pub fn save_model_dir_with_files(
    dir: &Path,
    config: &serde_json::Value,
    tensors: &HashMap<String, Tensor>,
    processor: &ImageProcessorConfig,
    files: &[(PathBuf, PathBuf)],
) -> Result<()> {
    // Everything is checked before anything is written: a refused model leaves no directory.
    let cfg: Blip2Config = serde_json::from_value(config.clone())
        .with_context(|| format!("{}: config.json would not parse", dir.display()))?;
    cfg.validate().with_context(|| format!("{}: config.json", dir.display()))?;
    let mut set = TensorSet::empty();
    for (name, t) in tensors {
        set.insert(name.clone(), t.clone(), "tensors to save");
    }
    let report = check(&cfg, &set, detect_parts(&cfg, &set), true);
    if !report.is_strict_ok() {
        bail!(
            "{}: the tensors do not make the model config.json describes: {}",
            dir.display(),
            report.problems()
        );
    }
    processor
        .validate(Path::new("preprocessor_config.json"))
        .with_context(|| format!("{}: preprocessor_config.json", dir.display()))?;
    for (rel, src) in files {
        let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain || rel.as_os_str().is_empty() {
            bail!("{}: side file {} is not a plain relative path", dir.display(), rel.display());
        }
        if !src.is_file() {
            bail!(
                "{} does not exist (to copy into {} as {})",
                src.display(),
                dir.display(),
                rel.display()
            );
        }
    }
    let has_tokenizer = files.iter().any(|(rel, _)| {
        rel == Path::new("tokenizer.json") || rel == Path::new("qformer_tokenizer/tokenizer.json")
    });
    if !has_tokenizer {
        bail!("{}: no tokenizer.json among the files to write", dir.display());
    }

    let mut processor_json = serde_json::to_value(processor)?;
    if let Some(obj) = processor_json.as_object_mut() {
        // transformers' AutoImageProcessor picks the class by this key.
        obj.entry("image_processor_type").or_insert_with(|| "BlipImageProcessor".into());
    }
    let json = [
        (PathBuf::from("config.json"), config.clone()),
        (PathBuf::from("preprocessor_config.json"), processor_json),
    ];
    write_weights_dir(dir, &json, tensors, files)
}

/// Writes `dir` whole or not at all (an existing one is replaced): the `json` files, the
/// `tensors` as `model.safetensors` and copies of the side `files` (`(path inside, source)`).
pub fn write_weights_dir(
    dir: &Path,
    json: &[(PathBuf, serde_json::Value)],
    tensors: &HashMap<String, Tensor>,
    files: &[(PathBuf, PathBuf)],
) -> Result<()> {
    replace_dir(dir, |tmp| {
        for (rel, value) in json {
            write_json(&tmp.join(rel), value)?;
        }
        let weights = tmp.join("model.safetensors");
        // transformers refuses safetensors files whose metadata names another framework.
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(tensors.iter(), Some(metadata), &weights)
            .with_context(|| format!("cannot write {}", weights.display()))?;
        // safetensors creates its file owner-only; the directory's other files follow the umask.
        if let Some((rel, _)) = json.first() {
            let permissions = std::fs::metadata(tmp.join(rel))?.permissions();
            std::fs::set_permissions(&weights, permissions)
                .with_context(|| format!("cannot set the permissions of {}", weights.display()))?;
        }
        for (rel, src) in files {
            let dst = tmp.join(rel);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::fs::copy(src, &dst)
                .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
        }
        Ok(())
    })
    .with_context(|| format!("cannot write model directory {}", dir.display()))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use candle_nn::{VarBuilder, VarMap};
    use qformer::masks::PaddingMask;
    use qformer::model::{itc_similarity, ImageInput, ModelParts};

    fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny").join(rel)
    }

    /// The variables of `vm` by name, as plain tensors (what a caller saving a model hands over).
    fn named(vm: &VarMap) -> HashMap<String, Tensor> {
        let data = vm.data().lock().unwrap();
        data.iter().map(|(n, v)| (n.clone(), v.as_tensor().detach())).collect()
    }

    fn bytes(t: &Tensor) -> Vec<u8> {
        let mut b = Vec::new();
        t.write_bytes(&mut b).unwrap();
        b
    }

    /// A freshly initialised tiny model with every part (ViT, text, heads, LM head) and LAVIS's
    /// ln_vision eps: its config and its tensors under canonical names.
    fn fresh_tiny_model() -> (Blip2Config, HashMap<String, Tensor>) {
        let dev = Device::Cpu;
        let mut cfg = Blip2Config::preset("tiny").unwrap();
        cfg.ln_vision_eps = Some(qformer::weights::LAVIS_LN_VISION_EPS);
        let parts = ModelParts::from_config(&cfg, true);
        let (frozen, trainable) = (VarMap::new(), VarMap::new());
        // Building the model is what creates (and initialises) every variable it has.
        Blip2Qformer::new(
            &cfg,
            parts,
            qformer::weights::LAVIS_LN_VISION_EPS,
            VarBuilder::from_varmap(&frozen, DType::F32, &dev),
            VarBuilder::from_varmap(&trainable, DType::F32, &dev),
        )
        .unwrap();
        // Fresh LayerNorms are ones/zeros and `temp` is a constant: perturb every tensor so
        // that a tensor swapped or lost on the way shows in the outputs.
        for vm in [&frozen, &trainable] {
            for (i, var) in vm.all_vars().iter().enumerate() {
                let t = var.as_tensor();
                let bump = (t.ones_like().unwrap() * (0.01 * (i % 7) as f64)).unwrap();
                var.set(&(t + bump).unwrap()).unwrap();
            }
        }
        let mut tensors = named(&frozen);
        tensors.extend(named(&trainable));
        (cfg, tensors)
    }

    /// The model `tensors` make, built in memory the way a loaded model is (from plain tensors:
    /// linears over `Var`s keep another matmul layout, which moves the last float bits).
    fn in_memory_model(cfg: &Blip2Config, tensors: &HashMap<String, Tensor>) -> Blip2Qformer {
        let mut set = TensorSet::empty();
        for (n, t) in tensors {
            set.insert(n.clone(), t.clone(), "memory");
        }
        load(cfg, &set, detect_parts(cfg, &set), &LoadOptions::default()).unwrap().model
    }

    /// ITC similarities and ITM logits of 2 images x 2 texts.
    fn outputs(model: &Blip2Qformer, pixels: &Tensor) -> (Vec<f32>, Vec<f32>) {
        let dev = Device::Cpu;
        let ids = Tensor::new(&[[101u32, 7, 9, 102, 0], [101, 30, 31, 32, 102]], &dev).unwrap();
        let mask = PaddingMask::from_rows(&[vec![1i64, 1, 1, 1, 0], vec![1; 5]]).unwrap();
        let image = model.encode_image(ImageInput::Pixels(pixels)).unwrap();
        let text = model.encode_text(&ids, &mask).unwrap();
        let itc = itc_similarity(image.image_feats.as_ref().unwrap(), &text.text_feat).unwrap();
        let itm = model.itm_logits(ImageInput::Pixels(pixels), &ids, &mask).unwrap();
        let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (flat(itc), flat(itm))
    }

    #[test]
    fn a_saved_fresh_model_loads_back_with_identical_tensors_and_outputs() {
        let (cfg, tensors) = fresh_tiny_model();
        let model = in_memory_model(&cfg, &tensors);
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("model");
        let processor = ImageProcessorConfig::square(32);
        let config = hf_config_json(&cfg).unwrap();
        let tokenizer = fixture("itm/tokenizer.json");
        save_model_dir(&dir, &config, &tensors, &tokenizer, &processor).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"]
        {
            assert!(dir.join(f).is_file(), "{f} written");
        }
        assert!(!root.path().join("model.tmp").exists());

        let saved =
            candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
        let mut names: Vec<&String> = saved.keys().collect();
        names.sort();
        let mut want: Vec<&String> = tensors.keys().collect();
        want.sort();
        assert_eq!(names, want, "same tensor names, temp and the ViT included");
        assert!(
            saved.contains_key("temp")
                && saved.contains_key("vision_model.embeddings.class_embedding")
        );
        for (name, t) in &tensors {
            assert_eq!(saved[name].dims(), t.dims(), "{name}");
            assert_eq!(bytes(&saved[name]), bytes(t), "{name}");
        }

        let src = ModelSource { dir: dir.clone(), lavis_checkpoint: None, lm_head: None };
        let loaded = load_model_dir(&src, 35, &Device::Cpu).unwrap();
        assert_eq!(loaded.processor, processor);
        assert!(loaded.model.lm_head().is_some(), "the LM head is found again");
        let back_cfg = Blip2Config::from_file(dir.join("config.json")).unwrap();
        assert_eq!(back_cfg.ln_vision_eps, Some(1e-5));
        let pixels = Tensor::randn(0f32, 1., (2, 3, 32, 32), &Device::Cpu).unwrap();
        let (want_itc, want_itm) = outputs(&model, &pixels);
        let (got_itc, got_itm) = outputs(&loaded.model, &pixels);
        assert_eq!(got_itc, want_itc, "ITC similarities");
        assert_eq!(got_itm, want_itm, "ITM logits");

        // Saving again replaces the directory whole.
        save_model_dir(&dir, &config, &tensors, &tokenizer, &processor).unwrap();
        let left: Vec<_> =
            std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("model")]);
    }

    #[test]
    fn tensors_that_do_not_fit_the_config_are_refused_before_anything_is_written() {
        let (cfg, mut tensors) = fresh_tiny_model();
        tensors.remove("query_tokens");
        tensors.insert("stray.weight".into(), Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap());
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("model");
        let err = save_model_dir(
            &dir,
            &hf_config_json(&cfg).unwrap(),
            &tensors,
            &fixture("itm/tokenizer.json"),
            &ImageProcessorConfig::square(32),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("query_tokens") && err.contains("stray.weight"), "{err}");
        assert!(std::fs::read_dir(root.path()).unwrap().next().is_none(), "nothing written");
    }
}
