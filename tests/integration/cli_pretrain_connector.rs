//! `blip2 pretrain` with `model.connector`: LLaVA's and MiniGPT-4's two stages against the
//! PyTorch reference trajectories of `tools/connector_train_reference.py`
//! (`tests/fixtures/connector-train/expected.*`): the loss of every step, the trained projector
//! after the last, which parts move and which stay, exact resume, and that the written model
//! generates. MiniGPT-4's stage 2 runs on conversations and on its own `cc_sbu_align` layout
//! with a prompt file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::cli_pretrain_stage2::{metrics, ok, pretrain};
use super::common::{blip2, max_abs_diff, stdout_json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn expected() -> serde_json::Value {
    let path = fixtures().join("connector-train/expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn expected_tensors() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixtures().join("connector-train/expected.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

fn weights(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// The run config of reference run `name` (`llava_stage1`, ...): full-batch steps, the
/// reference's AdamW, constant lr and clipping, no augmentation.
fn config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let e = expected();
    let (connector, stage) = name.split_once("_stage").unwrap();
    let init_from = match connector {
        "llava" => fixtures().join("llava-tiny"),
        _ => fixtures().join("minigpt4-tiny/minigpt4.toml"),
    };
    let data = fixtures().join("connector-train");
    let source = match stage {
        "1" => format!("root = \"{}\"", data.display()),
        "2_align" => format!(
            "root = \"{}\"\ninstructions = \"{}\"",
            data.join("cc_sbu_align").display(),
            data.join("alignment.txt").display()
        ),
        _ => format!("conversations = \"{}\"", data.join("conversations.json").display()),
    };
    let stage = &stage[..1];
    let run = &e[name];
    let cfg = format!(
        r#"stage = "stage{stage}"
seed = 5
run_dir = "{run_dir}"
[model]
connector = "{connector}"
init_from = "{init_from}"
[data]
{source}
augment = false
max_txt_len = {max_txt_len}
[optimizer]
lr = {lr:e}
beta1 = {b1}
beta2 = {b2}
eps = {eps:e}
weight_decay = {wd}
decay_rule = "lavis_base"
max_grad_norm = {clip}
[schedule]
kind = "constant"
[batch]
size = {samples}
[steps]
epochs = {steps}
max_steps = {steps}
[logging]
every_steps = 1
{extra}
"#,
        run_dir = dir.join("run").display(),
        init_from = init_from.display(),
        max_txt_len = e["max_txt_len"],
        lr = run["lr"].as_f64().unwrap(),
        b1 = e["betas"][0],
        b2 = e["betas"][1],
        eps = e["eps"].as_f64().unwrap(),
        wd = e["weight_decay"],
        clip = e["max_grad_norm"],
        samples = run["samples"],
        steps = e["steps"],
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, cfg).unwrap();
    path
}

fn losses(run: &Path) -> Vec<f64> {
    metrics(run).iter().map(|r| r["losses"]["lm"].as_f64().unwrap()).collect()
}

/// Runs reference run `name` into `dir/run` and checks each step's loss against the
/// reference's; returns the run directory.
fn run_and_match(dir: &Path, name: &str) -> PathBuf {
    let cfg = config(dir, name, "");
    let run = dir.join("run");
    let out = pretrain(&["--config", cfg.to_str().unwrap()]);
    ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("got no gradient"), "{stdout}");
    assert_losses_like_reference(&run, name);
    run
}

/// Each step's loss of `run` is the reference run `name`'s within 2e-4.
fn assert_losses_like_reference(run: &Path, name: &str) {
    let want: Vec<f64> = expected()[name]["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let got = losses(run);
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (step, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() < 2e-4, "{name} step {step}: loss {g}, reference {w} ({got:?})");
    }
}

/// The trained tensors of the run equal the reference's after its last step.
fn assert_trained_like_reference(name: &str, trained: &HashMap<String, Tensor>) {
    let want = expected_tensors();
    let mut n = 0;
    for (key, w) in want.iter().filter(|(k, _)| k.starts_with(&format!("{name}."))) {
        let tensor = &key[name.len() + 1..];
        let g = trained.get(tensor).unwrap_or_else(|| panic!("{tensor} not in the trained model"));
        let d = max_abs_diff(g, w);
        assert!(d < 1e-4, "{name}: {tensor} differs from the reference by {d}");
        n += 1;
    }
    assert!(n >= 2, "{name}: no reference tensors");
}

fn llava_generate(model: &Path) -> Vec<u64> {
    let image = fixtures().join("connector-train/images/img1.png");
    let out = blip2([
        "generate".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--image".as_ref(),
        image.as_os_str(),
        "--question".as_ref(),
        "Where is the square?".as_ref(),
        "--max-new-tokens".as_ref(),
        "3".as_ref(),
        "--json".as_ref(),
    ]);
    let v = stdout_json(&out);
    v["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap()).collect()
}

#[test]
fn llava_stage_one_trains_the_projector_like_the_reference_and_leaves_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_and_match(dir.path(), "llava_stage1");
    let model = run.join("model");
    let trained = weights(&model.join("model.safetensors"));
    assert_trained_like_reference("llava_stage1", &trained);
    // Tower and LLM are the fixture's, bit for bit (older Hub names in the written directory).
    let source = weights(&fixtures().join("llava-tiny/model.safetensors"));
    let lm = &source["model.language_model.layers.0.mlp.up_proj.weight"];
    let tower = &source["model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"];
    assert_eq!(max_abs_diff(&trained["language_model.model.layers.0.mlp.up_proj.weight"], lm), 0.0);
    assert_eq!(
        max_abs_diff(&trained["vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"], tower),
        0.0
    );
    assert_eq!(llava_generate(&model).len(), 3);
}

#[test]
fn llava_stage_two_trains_projector_and_llm_on_assistant_turns_like_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_and_match(dir.path(), "llava_stage2");
    let trained = weights(&run.join("model/model.safetensors"));
    assert_trained_like_reference("llava_stage2", &trained);
    let source = weights(&fixtures().join("llava-tiny/model.safetensors"));
    let lm = &source["model.language_model.layers.0.mlp.up_proj.weight"];
    assert!(max_abs_diff(&trained["language_model.model.layers.0.mlp.up_proj.weight"], lm) > 0.0);
    let tower = &source["model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"];
    assert_eq!(
        max_abs_diff(&trained["vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"], tower),
        0.0
    );
}

#[test]
fn llava_stage_two_resumes_exactly_and_says_what_it_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = "[checkpointing]\nevery_steps = 1\n";
    let cfg = config(dir.path(), "llava_stage2", ckpt);
    let run = dir.path().join("run");
    let first = pretrain(&["--config", cfg.to_str().unwrap(), "--stop-after", "2"]);
    ok(&first);
    // The record without an image is counted, not trained on.
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(said.contains("1 records without an image left out"), "{said}");
    ok(&pretrain(&["--resume", run.to_str().unwrap()]));
    assert_losses_like_reference(&run, "llava_stage2");
}

#[test]
fn minigpt4_stages_train_llama_proj_like_the_reference_and_the_model_generates() {
    for name in ["minigpt4_stage1", "minigpt4_stage2", "minigpt4_stage2_align"] {
        let dir = tempfile::tempdir().unwrap();
        let run = run_and_match(dir.path(), name);
        let model = run.join("model");
        let trained = weights(&model.join("llama_proj.safetensors"));
        assert_trained_like_reference(name, &trained);
        let image = fixtures().join("minigpt4-tiny/images/img0.png");
        let parts = model.join("minigpt4.toml");
        let out = blip2([
            "generate".as_ref(),
            "--model".as_ref(),
            parts.as_os_str(),
            "--image".as_ref(),
            image.as_os_str(),
            "--question".as_ref(),
            "What color is the circle?".as_ref(),
            "--max-new-tokens".as_ref(),
            "3".as_ref(),
            "--json".as_ref(),
        ]);
        assert!(!stdout_json(&out)["ids"].as_array().unwrap().is_empty());
    }
}

#[test]
fn a_fresh_minigpt4_projection_is_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("minigpt4-tiny");
    let parts = dir.path().join("fresh.toml");
    let text = format!(
        "qformer = \"{}\"\nllm = \"{}\"\n",
        src.join("blip2").display(),
        src.join("llama").display()
    );
    std::fs::write(&parts, text).unwrap();
    let mut trained = Vec::new();
    for run in ["a", "b"] {
        let cfg = config(dir.path(), "minigpt4_stage1", "")
            .to_str()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .unwrap()
            .replace(&src.join("minigpt4.toml").display().to_string(), &parts.display().to_string())
            .replace("max_steps = 4", "max_steps = 1");
        let path = dir.path().join(format!("{run}.toml"));
        std::fs::write(&path, cfg).unwrap();
        let out_dir = dir.path().join(run);
        let out =
            pretrain(&["--config", path.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
        ok(&out);
        assert!(String::from_utf8_lossy(&out.stdout).contains("llama_proj (fresh)"));
        trained.push(weights(&out_dir.join("model/llama_proj.safetensors")));
    }
    let (a, b) = (&trained[0]["llama_proj.weight"], &trained[1]["llama_proj.weight"]);
    assert_eq!(max_abs_diff(a, b), 0.0);
    // nn.Linear's bound: |w| <= 1/sqrt(48) before one small step.
    let max = a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(max > 0.05 && max < 1.0 / 48f32.sqrt() + 0.01, "{max}");
}

#[test]
fn connector_runs_refuse_what_they_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "llava_stage2", "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let no_data = dir.path().join("no_data.toml");
    let conversations = text.lines().find(|l| l.starts_with("conversations")).unwrap();
    std::fs::write(&no_data, text.replace(conversations, "")).unwrap();
    let out = pretrain(&["--config", no_data.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("data.conversations"));

    let with_llm = dir.path().join("with_llm.toml");
    std::fs::write(&with_llm, text.replace("[model]\n", "[model]\nllm = \"x\"\n")).unwrap();
    let out = pretrain(&["--config", with_llm.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("model.llm cannot be used"), "{err}");
}

/// llava-tiny split into what LLaVA starts from: a CLIP vision directory and a LLaMA directory.
fn llava_parts(dir: &Path) -> (PathBuf, PathBuf) {
    let src = fixtures().join("llava-tiny");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let (clip, llama) = (dir.join("clip"), dir.join("llama"));
    for d in [&clip, &llama] {
        std::fs::create_dir_all(d).unwrap();
    }
    let mut text = config["text_config"].clone();
    text["bos_token_id"] = 1.into();
    text["eos_token_id"] = 2.into();
    std::fs::write(clip.join("config.json"), config["vision_config"].to_string()).unwrap();
    std::fs::write(llama.join("config.json"), text.to_string()).unwrap();
    std::fs::copy(src.join("preprocessor_config.json"), clip.join("preprocessor_config.json"))
        .unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(src.join(f), llama.join(f)).unwrap();
    }
    let (mut vision, mut lm) = (HashMap::new(), HashMap::new());
    for (name, t) in weights(&src.join("model.safetensors")) {
        if let Some(rest) = name.strip_prefix("model.vision_tower.") {
            vision.insert(rest.to_string(), t);
        } else if let Some(rest) = name.strip_prefix("model.language_model.") {
            lm.insert(format!("model.{rest}"), t);
        } else if name == "lm_head.weight" {
            lm.insert(name, t);
        }
    }
    candle_core::safetensors::save(&vision, clip.join("model.safetensors")).unwrap();
    candle_core::safetensors::save(&lm, llama.join("model.safetensors")).unwrap();
    (clip, llama)
}

/// LLaVA's own start: a CLIP tower and a LLaMA with a fresh, seeded `mlp2x_gelu` projector; the
/// run writes an original LLaVA checkpoint (LLaMA names, `model.mm_projector.{0,2}`, the tower
/// named by `mm_vision_tower`).
#[test]
fn llava_starts_from_a_clip_tower_and_a_llama_with_a_seeded_projector() {
    let dir = tempfile::tempdir().unwrap();
    let (clip, llama) = llava_parts(dir.path());
    let base = std::fs::read_to_string(config(dir.path(), "llava_stage1", "")).unwrap();
    let init = format!("init_from = \"{}\"", fixtures().join("llava-tiny").display());
    let parts = format!("vision_weights = \"{}\"\nllm = \"{}\"", clip.display(), llama.display());
    let cfg = dir.path().join("fresh.toml");
    std::fs::write(&cfg, base.replace(&init, &parts).replace("max_steps = 4", "max_steps = 2"))
        .unwrap();
    let mut projectors = Vec::new();
    for run in ["a", "b"] {
        let out_dir = dir.path().join(run);
        ok(&pretrain(&["--config", cfg.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]));
        let l = losses(&out_dir);
        assert!(l.len() == 2 && l.iter().all(|x| x.is_finite()) && l[1] < l[0], "{l:?}");
        let model = out_dir.join("model");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["mm_projector_type"], "mlp2x_gelu");
        let tower = std::fs::canonicalize(&clip).unwrap();
        assert_eq!(config["mm_vision_tower"], tower.display().to_string());
        let w = weights(&model.join("model.safetensors"));
        assert!(w.keys().all(|k| !k.contains("vision")), "the tower stays in its directory");
        let source = weights(&llama.join("model.safetensors"));
        let up = "model.layers.0.mlp.up_proj.weight";
        assert_eq!(max_abs_diff(&w[up], &source[up]), 0.0);
        projectors.push(w["model.mm_projector.0.weight"].clone());
        assert_eq!(w["model.mm_projector.2.weight"].dims(), [64, 64]);
    }
    assert_eq!(max_abs_diff(&projectors[0], &projectors[1]), 0.0);

    // The written checkpoint is a LLaVA model: it generates, and stage 2 continues from it
    // (then written in the same layout, the tower still found).
    let stage1 = dir.path().join("a/model");
    assert_eq!(llava_generate(&stage1).len(), 3);
    let two = std::fs::read_to_string(config(dir.path(), "llava_stage2", "")).unwrap();
    let init = format!("init_from = \"{}\"", fixtures().join("llava-tiny").display());
    let chained = dir.path().join("chained.toml");
    let text = two
        .replace(&init, &format!("init_from = \"{}\"", stage1.display()))
        .replace("max_steps = 4", "max_steps = 2");
    std::fs::write(&chained, text).unwrap();
    let out_dir = dir.path().join("c");
    ok(&pretrain(&["--config", chained.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]));
    let l = losses(&out_dir);
    assert!(l.len() == 2 && l[1] < l[0], "{l:?}");
    assert_eq!(llava_generate(&out_dir.join("model")).len(), 3);
}

/// Stage 1 of the reference config, started from `init_from` instead, for `steps` steps;
/// returns the run directory.
fn stage_one_from(dir: &Path, init_from: &Path, steps: u64) -> (PathBuf, std::process::Output) {
    let base = std::fs::read_to_string(config(dir, "llava_stage1", "")).unwrap();
    let init = format!("init_from = \"{}\"", fixtures().join("llava-tiny").display());
    let cfg = dir.join("from.toml");
    let text = base
        .replace(&init, &format!("init_from = \"{}\"", init_from.display()))
        .replace("max_steps = 4", &format!("max_steps = {steps}"));
    std::fs::write(&cfg, text).unwrap();
    let out = pretrain(&["--config", cfg.to_str().unwrap()]);
    ok(&out);
    (dir.join("run"), out)
}

/// An original LLaVA-1.5 checkpoint with `image_aspect_ratio = "pad"` and a three-layer
/// projector trains its stage 1 (every layer gets a gradient; images padded to squares first).
#[test]
fn an_original_llava_checkpoint_with_pad_trains() {
    let dir = tempfile::tempdir().unwrap();
    let (run, out) = stage_one_from(dir.path(), &fixtures().join("llava-tiny-original-mlp3"), 2);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("got no gradient"));
    let l = losses(&run);
    assert!(l.len() == 2 && l[1] < l[0], "{l:?}");
    let w = weights(&run.join("model/model.safetensors"));
    assert!(w.contains_key("model.mm_projector.4.weight"), "three layers, original names");
    assert_eq!(llava_generate(&run.join("model")).len(), 3);
}

/// A `linear` projector (one `nn.Linear`) is written under LLaVA's own unindexed names and reads
/// back.
#[test]
fn a_linear_projector_keeps_its_original_names() {
    let dir = tempfile::tempdir().unwrap();
    let (run, _) = stage_one_from(dir.path(), &fixtures().join("llava-tiny-original-linear"), 1);
    let model = run.join("model");
    let w = weights(&model.join("model.safetensors"));
    assert!(
        w.contains_key("model.mm_projector.weight") && w.contains_key("model.mm_projector.bias")
    );
    assert!(!w.keys().any(|k| k.starts_with("model.mm_projector.0")));
    assert_eq!(llava_generate(&model).len(), 3);
}
