//! The MiniGPT-4 parts file: a small TOML naming the BLIP-2 source, the LLaMA directory and
//! the `llama_proj` checkpoint, with MiniGPT-4's prompt defaults.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

fn default_prompt_template() -> String {
    "###Human: {} ###Assistant: ".into()
}
fn default_end_sym() -> String {
    "###".into()
}
fn default_image_marker() -> String {
    "<ImageHere>".into()
}
fn default_max_txt_len() -> usize {
    160
}

/// The keys of a parts file, paths as written (relative to the file's folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartsFile {
    /// An HF BLIP-2 directory (any BLIP-2 class) or a LAVIS `.pth`.
    pub qformer: String,
    /// An HF BLIP-2 directory whose `config.json` (and ViT, when the `.pth` has none) a LAVIS
    /// `.pth` `qformer` is read with; required for a `.pth`, unused for a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision: Option<String>,
    /// An HF `LlamaForCausalLM` directory.
    pub llm: String,
    /// `pretrained_minigpt4.pth` or a `.safetensors` with `llama_proj.weight/bias`; absent: a
    /// fresh projection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection: Option<String>,
    #[serde(default = "default_prompt_template")]
    pub prompt_template: String,
    #[serde(default = "default_end_sym")]
    pub end_sym: String,
    #[serde(default = "default_image_marker")]
    pub image_marker: String,
    #[serde(default = "default_max_txt_len")]
    pub max_txt_len: usize,
}

/// A parts file with its paths resolved against the file's folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Parts {
    pub qformer: PathBuf,
    pub vision: Option<PathBuf>,
    pub llm: PathBuf,
    pub projection: Option<PathBuf>,
    pub prompt_template: String,
    pub end_sym: String,
    pub image_marker: String,
    pub max_txt_len: usize,
}

impl Parts {
    /// Reads and resolves `path`; unknown keys and missing required keys are refused by name.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let file: PartsFile = toml::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {}", path.display(), e.message())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(Self {
            qformer: base.join(&file.qformer),
            vision: file.vision.as_ref().map(|p| base.join(p)),
            llm: base.join(&file.llm),
            projection: file.projection.as_ref().map(|p| base.join(p)),
            prompt_template: file.prompt_template,
            end_sym: file.end_sym,
            image_marker: file.image_marker,
            max_txt_len: file.max_txt_len,
        })
    }
}

/// Writes `parts` to `path` (a training run saving where its projection went).
pub fn write(path: impl AsRef<Path>, parts: &PartsFile) -> Result<()> {
    let path = path.as_ref();
    let text = toml::to_string(parts)
        .map_err(|e| Error::Msg(format!("{}: cannot write parts file: {e}", path.display())))?;
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}
