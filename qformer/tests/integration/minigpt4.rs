//! MiniGPT-4 against the reference composition (Vision-CAIR `minigpt4.py` over HF
//! `Blip2ForImageTextRetrieval` + `nn.Linear` + `LlamaForCausalLM`, transformers 4.57.6) on
//! tests/fixtures/minigpt4-tiny, made by shared/tools/connector_fixtures.py: ViT + `ln_vision`,
//! Q-Former query output, `llama_proj`, the spliced `inputs_embeds`, logits, loss and greedy ids
//! with the `###` stop; gradients reaching only `llama_proj`; parts-file errors.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Tensor};
use qformer::connector::{connector_lm_loss, splice, Connector, PadSide, Piece};
use qformer::minigpt4::{minigpt4_pieces, MiniGpt4};

use crate::common::{max_abs_diff, test_device};

const TOL: f32 = 1e-4;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/minigpt4-tiny")
}

fn expected() -> (HashMap<String, Tensor>, serde_json::Value) {
    let d = dir();
    let ts = candle_core::safetensors::load(d.join("expected.safetensors"), &test_device())
        .expect("expected.safetensors");
    let json = serde_json::from_str(
        &std::fs::read_to_string(d.join("expected.json")).expect("expected.json"),
    )
    .expect("expected.json parses");
    (ts, json)
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn prompt_pieces(c: &serde_json::Value) -> Vec<Piece> {
    let bos = c["bos_id"].as_u64().unwrap() as u32;
    minigpt4_pieces(bos, vec![ids(&c["p_before_ids"]), ids(&c["p_after_ids"])])
}

#[track_caller]
fn close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let d = max_abs_diff(got, want);
    assert!(d <= TOL, "{what}: max abs diff {d:e} > {TOL:e}");
}

#[test]
fn minigpt4_features_embeds_logits_and_loss_match_the_reference() {
    let (exp, json) = expected();
    let m = MiniGpt4::from_parts_file(dir().join("minigpt4.toml"), &test_device()).unwrap();
    let pv = &exp["pixel_values"];
    assert!(m.preprocessor_config_path().exists());
    assert_eq!(m.tokens_per_image(), json["num_query_tokens"].as_u64().unwrap() as usize);
    close(
        "vision_last_hidden_state",
        &m.vision_features(pv).unwrap(),
        &exp["vision_last_hidden_state"],
    );
    close("qformer_output", &m.qformer_output(pv).unwrap(), &exp["qformer_output"]);
    let image_embeds = m.image_embeds(pv).unwrap();
    close("llama_proj_output", &image_embeds, &exp["llama_proj_output"]);

    let cases = json["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for c in cases {
        let i = c["image"].as_u64().unwrap() as usize;
        let j = c["instruction"].as_u64().unwrap() as usize;
        let img = image_embeds.narrow(0, i, 1).unwrap();
        let rows = vec![prompt_pieces(c)];
        let s = splice(&rows, &img, m.language_model(), PadSide::Right).unwrap();
        close(
            &format!("inputs_embeds_{i}_{j}"),
            &s.embeds.squeeze(0).unwrap(),
            &exp[&format!("inputs_embeds_{i}_{j}")],
        );
        let logits = m.language_model().forward_embeds(&s.embeds, &s.attention_mask).unwrap();
        close(
            &format!("logits_{i}_{j}"),
            &logits.squeeze(0).unwrap(),
            &exp[&format!("logits_{i}_{j}")],
        );

        let mut learn = prompt_pieces(c);
        learn.push(Piece::target(ids(&c["answer_ids"])));
        let loss = connector_lm_loss(&m, &[learn], &img).unwrap().to_scalar::<f32>().unwrap();
        let want = c["loss"].as_f64().unwrap() as f32;
        assert!((loss - want).abs() <= TOL, "loss {i}/{j}: {loss} vs {want}");
    }
}

#[test]
fn minigpt4_gradients_reach_only_llama_proj() {
    let (exp, json) = expected();
    let m =
        MiniGpt4::from_parts_file_trainable(dir().join("minigpt4.toml"), &test_device()).unwrap();
    let varmap = m.varmap().expect("trainable model has a VarMap");
    let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    names.sort();
    assert_eq!(names, ["llama_proj.bias", "llama_proj.weight"]);
    let c = &json["cases"][0];
    let i = c["image"].as_u64().unwrap() as usize;
    let img = m.image_embeds(&exp["pixel_values"].narrow(0, i, 1).unwrap()).unwrap();
    let mut learn = prompt_pieces(c);
    learn.push(Piece::target(ids(&c["answer_ids"])));
    let loss = connector_lm_loss(&m, &[learn], &img).unwrap();
    let grads = loss.backward().unwrap();
    for t in [m.llama_proj().weight(), m.llama_proj().bias().unwrap()] {
        let g = grads.get(t).expect("llama_proj gradient");
        let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(norm > 0.0 && norm.is_finite(), "gradient norm {norm}");
    }
    let table = m.language_model().embed_tokens().embeddings();
    assert!(grads.get(table).is_none(), "the LLM's embedding table got a gradient");
}

fn write_parts(dir_: &std::path::Path, body: &str) -> PathBuf {
    let p = dir_.join("parts.toml");
    std::fs::write(&p, body).unwrap();
    p
}

fn err_of(body: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let f = write_parts(tmp.path(), body);
    match MiniGpt4::from_parts_file(&f, &test_device()) {
        Ok(_) => panic!("parts file accepted: {body}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn minigpt4_parts_file_errors_name_the_culprit() {
    let d = dir();
    let abs = |s: &str| d.join(s).display().to_string();
    let e = err_of(&format!("llm = {:?}\n", abs("llama")));
    assert!(e.contains("qformer"), "{e}");
    let e = err_of(&format!(
        "qformer = {:?}\nllm = {:?}\nprojektion = \"x\"\n",
        abs("blip2"),
        abs("llama")
    ));
    assert!(e.contains("projektion"), "{e}");
    let e = err_of(&format!("qformer = {:?}\nllm = {:?}\n", abs("no-such-blip2"), abs("llama")));
    assert!(e.contains("no-such-blip2"), "{e}");

    // A projection of the wrong shape, and one whose output width is not the LLM's.
    let tmp = tempfile::tempdir().unwrap();
    let dev = test_device();
    for (w_shape, b_len, tensor) in
        [((64, 40), 64, "llama_proj.weight"), ((32, 48), 32, "llama_proj.weight")]
    {
        let w = Tensor::zeros(w_shape, DType::F32, &dev).unwrap();
        let b = Tensor::zeros(b_len, DType::F32, &dev).unwrap();
        let st = tmp.path().join("proj.safetensors");
        candle_core::safetensors::save(
            &HashMap::from([
                ("llama_proj.weight".to_string(), w),
                ("llama_proj.bias".to_string(), b),
            ]),
            &st,
        )
        .unwrap();
        let f = write_parts(
            tmp.path(),
            &format!(
                "qformer = {:?}\nllm = {:?}\nprojection = \"proj.safetensors\"\n",
                abs("blip2"),
                abs("llama")
            ),
        );
        let e = match MiniGpt4::from_parts_file(&f, &dev) {
            Ok(_) => panic!("misshaped projection accepted"),
            Err(e) => e.to_string(),
        };
        let got = format!("[{}, {}]", w_shape.0, w_shape.1);
        assert!(e.contains(tensor) && e.contains(&got) && e.contains("[64, 48]"), "{e}");
    }
}

#[test]
fn minigpt4_greedy_ids_with_the_stop_sequences_match_the_reference() {
    let (exp, json) = expected();
    let m = MiniGpt4::from_parts_file(dir().join("minigpt4.toml"), &test_device()).unwrap();
    let image_embeds = m.image_embeds(&exp["pixel_values"]).unwrap();
    let stops: Vec<Vec<u32>> = json["stop_ids"].as_array().unwrap().iter().map(ids).collect();
    let llm_cfg = m.language_model().config();
    let cfg = qformer::llm::GenerationConfig {
        max_new_tokens: json["generation"]["max_new_tokens"].as_u64().unwrap() as usize,
        eos_token_ids: llm_cfg.eos_token_ids(),
        pad_token_id: 0,
        stop_sequences: stops.clone(),
        ..Default::default()
    };
    let mut stopped = 0;
    for c in json["cases"].as_array().unwrap() {
        let i = c["image"].as_u64().unwrap() as usize;
        let img = image_embeds.narrow(0, i, 1).unwrap();
        let s = splice(&[prompt_pieces(c)], &img, m.language_model(), PadSide::Left).unwrap();
        let got = qformer::llm::generate(m.language_model(), &s.embeds, &s.attention_mask, &cfg)
            .unwrap()
            .remove(0);
        assert_eq!(got, ids(&c["greedy_ids"]), "greedy ids, case {c}");
        if c["stopped_on_###"].as_bool().unwrap() {
            stopped += 1;
            assert!(stops.iter().any(|s| got.ends_with(s)));
        }
    }
    assert!(stopped > 0, "the fixture has cases that stop on ###");
    // Without the stop sequences the stopped cases run on past `###`.
    let no_stop = qformer::llm::GenerationConfig { stop_sequences: Vec::new(), ..cfg };
    let c = json["cases"].as_array().unwrap().iter().find(|c| c["stopped_on_###"] == true).unwrap();
    let img = image_embeds.narrow(0, c["image"].as_u64().unwrap() as usize, 1).unwrap();
    let s = splice(&[prompt_pieces(c)], &img, m.language_model(), PadSide::Left).unwrap();
    let got = qformer::llm::generate(m.language_model(), &s.embeds, &s.attention_mask, &no_stop)
        .unwrap()
        .remove(0);
    assert!(got.len() > ids(&c["greedy_ids"]).len());
}

#[test]
fn minigpt4_from_a_lavis_pth_qformer_gives_the_same_image_embeds_and_parts_files_round_trip() {
    use qformer::minigpt4::{write, Parts, PartsFile};
    use qformer::weights::{write_lavis_pth, TensorSet};
    let (exp, _) = expected();
    let dev = test_device();
    let d = dir();
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, set) = TensorSet::from_hf_dir(d.join("blip2"), &dev).unwrap();
    write_lavis_pth(tmp.path().join("blip2.pth"), &cfg, &set).unwrap();
    let file = PartsFile {
        qformer: "blip2.pth".into(),
        vision: Some(d.join("blip2").display().to_string()),
        llm: d.join("llama").display().to_string(),
        projection: Some(d.join("pretrained_minigpt4.pth").display().to_string()),
        prompt_template: "###Human: {} ###Assistant: ".into(),
        end_sym: "###".into(),
        image_marker: "<ImageHere>".into(),
        max_txt_len: 160,
    };
    let toml_path = tmp.path().join("parts.toml");
    write(&toml_path, &file).unwrap();
    let parts = Parts::from_file(&toml_path).unwrap();
    assert_eq!(parts.qformer, tmp.path().join("blip2.pth"));
    assert_eq!(parts.max_txt_len, 160);
    let m = MiniGpt4::from_parts_file(&toml_path, &dev).unwrap();
    close(
        "llama_proj_output (LAVIS .pth)",
        &m.image_embeds(&exp["pixel_values"]).unwrap(),
        &exp["llama_proj_output"],
    );

    // Without `vision` a .pth is refused, naming the key.
    write(&toml_path, &PartsFile { vision: None, ..file }).unwrap();
    let e = MiniGpt4::from_parts_file(&toml_path, &dev).err().expect("refused").to_string();
    assert!(e.contains("vision"), "{e}");
}

#[test]
fn minigpt4_needs_no_text_side_tensors_from_the_blip2_dir() {
    let (exp, _) = expected();
    let dev = test_device();
    let d = dir();
    let tmp = tempfile::tempdir().unwrap();
    let blip2 = tmp.path().join("blip2");
    std::fs::create_dir(&blip2).unwrap();
    std::fs::copy(d.join("blip2/config.json"), blip2.join("config.json")).unwrap();
    let all = candle_core::safetensors::load(d.join("blip2/model.safetensors"), &dev).unwrap();
    let is_text_ffn = |n: &str| {
        n.split('.')
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w[0].parse::<usize>().is_ok() && (w[1] == "intermediate" || w[1] == "output"))
    };
    let kept: HashMap<String, Tensor> = all
        .into_iter()
        .filter(|(n, _)| {
            n.starts_with("vision_model.")
                || n.starts_with("query_tokens")
                || (n.starts_with("qformer.") && !is_text_ffn(n))
        })
        .collect();
    candle_core::safetensors::save(&kept, blip2.join("model.safetensors")).unwrap();
    let body = format!(
        "qformer = \"blip2\"\nllm = {:?}\nprojection = {:?}\n",
        d.join("llama").display().to_string(),
        d.join("pretrained_minigpt4.pth").display().to_string()
    );
    let f = write_parts(tmp.path(), &body);
    let m = MiniGpt4::from_parts_file(&f, &dev).unwrap();
    close(
        "llama_proj_output (no text side)",
        &m.image_embeds(&exp["pixel_values"]).unwrap(),
        &exp["llama_proj_output"],
    );
}
