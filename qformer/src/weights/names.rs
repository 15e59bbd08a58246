//! The one table of canonical tensor names and their LAVIS equivalents.
//!
//! Canonical names are the HF `Blip2ForImageTextRetrieval` keys (transformers 4.57), plus two
//! documented extras that HF drops: the ITG LM head under BERT's `cls.predictions.*` and the
//! ITC temperature `temp`. LAVIS names come from `Blip2Qformer.state_dict()` (LAVIS 1.0.2);
//! the mapping follows transformers' `convert_blip_2_original_to_pytorch.py`.

use crate::config::Blip2Config;
use crate::model::ModelParts;

/// What a tensor belongs to; decides trainability and optional groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// Frozen ViT (`vision_model.*` except `post_layernorm`).
    Vision,
    /// `vision_model.post_layernorm` = LAVIS `ln_vision`: trainable.
    LnVision,
    QueryTokens,
    /// Q-Former encoder shared by image and text paths (`qformer.*` except the text FFN).
    QFormer,
    /// `embeddings.*` (word + position).
    TextEmbeddings,
    /// `qformer.encoder.layer.{i}.{intermediate,output}.*`.
    TextFfn,
    /// `vision_projection`, `text_projection`, `itm_head`.
    StageOneHeads,
    /// ITC temperature (LAVIS only; 0.07 when absent).
    Temp,
    /// `cls.predictions.*` (LAVIS only).
    LmHead,
}

impl Group {
    pub fn trainable(self) -> bool {
        self != Group::Vision
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub group: Group,
}

/// Renames between canonical (HF) and LAVIS names, applied in order. `Prefix` rules replace a
/// leading prefix (first match wins); `Infix` rules then replace every occurrence inside the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Prefix,
    Infix,
}

/// (canonical, LAVIS, kind). The ViT's fused `qkv.bias` has no single LAVIS name: LAVIS stores
/// `attn.q_bias` and `attn.v_bias` and the k bias is zero (see `lavis.rs`).
pub const RENAMES: &[(&str, &str, Rule)] = &[
    ("vision_model.post_layernorm.", "ln_vision.", Rule::Prefix),
    ("vision_model.embeddings.class_embedding", "visual_encoder.cls_token", Rule::Prefix),
    ("vision_model.embeddings.position_embedding", "visual_encoder.pos_embed", Rule::Prefix),
    ("vision_model.embeddings.patch_embedding.", "visual_encoder.patch_embed.proj.", Rule::Prefix),
    ("vision_model.encoder.layers.", "visual_encoder.blocks.", Rule::Prefix),
    ("query_tokens", "query_tokens", Rule::Prefix),
    ("qformer.layernorm.", "Qformer.bert.embeddings.LayerNorm.", Rule::Prefix),
    ("embeddings.", "Qformer.bert.embeddings.", Rule::Prefix),
    ("qformer.encoder.layer.", "Qformer.bert.encoder.layer.", Rule::Prefix),
    ("vision_projection.", "vision_proj.", Rule::Prefix),
    ("text_projection.", "text_proj.", Rule::Prefix),
    ("itm_head.", "itm_head.", Rule::Prefix),
    ("temp", "temp", Rule::Prefix),
    ("cls.", "Qformer.cls.", Rule::Prefix),
    // inside ViT blocks
    (".layer_norm1.", ".norm1.", Rule::Infix),
    (".layer_norm2.", ".norm2.", Rule::Infix),
    (".self_attn.qkv.", ".attn.qkv.", Rule::Infix),
    (".self_attn.projection.", ".attn.proj.", Rule::Infix),
    // inside Q-Former layers: HF "attention.attention" is BERT's "attention.self"
    (".attention.attention.", ".attention.self.", Rule::Infix),
    (".crossattention.attention.", ".crossattention.self.", Rule::Infix),
];

fn rename(name: &str, forward: bool) -> Option<String> {
    let pick =
        |r: &(&'static str, &'static str, Rule)| if forward { (r.0, r.1) } else { (r.1, r.0) };
    let mut out = None;
    for r in RENAMES.iter().filter(|r| r.2 == Rule::Prefix) {
        let (a, b) = pick(r);
        // Exact-name rules (no trailing dot) must match the whole name.
        let hit = if a.ends_with('.') { name.starts_with(a) } else { name == a };
        if hit {
            out = Some(format!("{b}{}", &name[a.len()..]));
            break;
        }
    }
    let mut s = out?;
    for r in RENAMES.iter().filter(|r| r.2 == Rule::Infix) {
        let (a, b) = pick(r);
        s = s.replace(a, b);
    }
    Some(s)
}

/// Canonical (HF) name -> LAVIS `Blip2Qformer` state-dict name.
pub fn canonical_to_lavis(name: &str) -> Option<String> {
    rename(name, true)
}

/// LAVIS name -> canonical name (`None` for names outside the table).
pub fn lavis_to_canonical(name: &str) -> Option<String> {
    rename(name, false)
}

/// Every tensor a model with `parts` has, with its shape, in a stable order.
pub fn canonical_tensors(cfg: &Blip2Config, parts: ModelParts) -> Vec<TensorSpec> {
    let v = &cfg.vision_config;
    let q = &cfg.qformer_config;
    let (dv, h, e) = (v.hidden_size, q.hidden_size, cfg.image_text_hidden_size);
    let mut out = Vec::new();
    let mut add =
        |name: String, shape: Vec<usize>, group: Group| out.push(TensorSpec { name, shape, group });
    if parts.vision {
        let p = "vision_model.embeddings";
        add(format!("{p}.class_embedding"), vec![1, 1, dv], Group::Vision);
        add(
            format!("{p}.patch_embedding.weight"),
            vec![dv, v.num_channels, v.patch_size, v.patch_size],
            Group::Vision,
        );
        add(format!("{p}.patch_embedding.bias"), vec![dv], Group::Vision);
        add(format!("{p}.position_embedding"), vec![1, v.num_positions(), dv], Group::Vision);
        for i in 0..v.num_hidden_layers {
            let p = format!("vision_model.encoder.layers.{i}");
            for ln in ["layer_norm1", "layer_norm2"] {
                add(format!("{p}.{ln}.weight"), vec![dv], Group::Vision);
                add(format!("{p}.{ln}.bias"), vec![dv], Group::Vision);
            }
            add(format!("{p}.self_attn.qkv.weight"), vec![3 * dv, dv], Group::Vision);
            if v.qkv_bias {
                add(format!("{p}.self_attn.qkv.bias"), vec![3 * dv], Group::Vision);
            }
            add(format!("{p}.self_attn.projection.weight"), vec![dv, dv], Group::Vision);
            add(format!("{p}.self_attn.projection.bias"), vec![dv], Group::Vision);
            add(format!("{p}.mlp.fc1.weight"), vec![v.intermediate_size, dv], Group::Vision);
            add(format!("{p}.mlp.fc1.bias"), vec![v.intermediate_size], Group::Vision);
            add(format!("{p}.mlp.fc2.weight"), vec![dv, v.intermediate_size], Group::Vision);
            add(format!("{p}.mlp.fc2.bias"), vec![dv], Group::Vision);
        }
    }
    add("vision_model.post_layernorm.weight".into(), vec![dv], Group::LnVision);
    add("vision_model.post_layernorm.bias".into(), vec![dv], Group::LnVision);
    add("query_tokens".into(), vec![1, cfg.num_query_tokens, h], Group::QueryTokens);
    if parts.text {
        add(
            "embeddings.word_embeddings.weight".into(),
            vec![q.vocab_size, h],
            Group::TextEmbeddings,
        );
        add(
            "embeddings.position_embeddings.weight".into(),
            vec![q.max_position_embeddings, h],
            Group::TextEmbeddings,
        );
    }
    add("qformer.layernorm.weight".into(), vec![h], Group::QFormer);
    add("qformer.layernorm.bias".into(), vec![h], Group::QFormer);
    let linear = |add: &mut dyn FnMut(String, Vec<usize>, Group),
                  p: String,
                  i: usize,
                  o: usize,
                  g: Group| {
        add(format!("{p}.weight"), vec![o, i], g);
        add(format!("{p}.bias"), vec![o], g);
    };
    for l in 0..q.num_hidden_layers {
        let p = format!("qformer.encoder.layer.{l}");
        let attention = |add: &mut dyn FnMut(String, Vec<usize>, Group), block: &str, kv: usize| {
            for (n, i) in [("query", h), ("key", kv), ("value", kv)] {
                linear(add, format!("{p}.{block}.attention.{n}"), i, h, Group::QFormer);
            }
            linear(add, format!("{p}.{block}.output.dense"), h, h, Group::QFormer);
            add(format!("{p}.{block}.output.LayerNorm.weight"), vec![h], Group::QFormer);
            add(format!("{p}.{block}.output.LayerNorm.bias"), vec![h], Group::QFormer);
        };
        attention(&mut add, "attention", h);
        if q.has_cross_attention(l) {
            attention(&mut add, "crossattention", q.encoder_hidden_size);
        }
        let ffn = |add: &mut dyn FnMut(String, Vec<usize>, Group),
                   inter: &str,
                   output: &str,
                   g: Group| {
            linear(add, format!("{p}.{inter}.dense"), h, q.intermediate_size, g);
            linear(add, format!("{p}.{output}.dense"), q.intermediate_size, h, g);
            add(format!("{p}.{output}.LayerNorm.weight"), vec![h], g);
            add(format!("{p}.{output}.LayerNorm.bias"), vec![h], g);
        };
        ffn(&mut add, "intermediate_query", "output_query", Group::QFormer);
        if parts.text {
            ffn(&mut add, "intermediate", "output", Group::TextFfn);
        }
    }
    if parts.stage_one_heads {
        linear(&mut add, "vision_projection".into(), h, e, Group::StageOneHeads);
        linear(&mut add, "text_projection".into(), h, e, Group::StageOneHeads);
        linear(&mut add, "itm_head".into(), h, 2, Group::StageOneHeads);
        add("temp".into(), vec![], Group::Temp);
    }
    if parts.lm_head {
        linear(&mut add, "cls.predictions.transform.dense".into(), h, h, Group::LmHead);
        add("cls.predictions.transform.LayerNorm.weight".into(), vec![h], Group::LmHead);
        add("cls.predictions.transform.LayerNorm.bias".into(), vec![h], Group::LmHead);
        add("cls.predictions.bias".into(), vec![q.vocab_size], Group::LmHead);
    }
    out
}

/// Tensors a checkpoint may legitimately carry that this model does not use, with the reason.
pub fn known_unused(name: &str) -> Option<&'static str> {
    if name.starts_with("language_model.") {
        Some("LLM weights (stage two)")
    } else if name.starts_with("language_projection.")
        || name.starts_with("opt_proj.")
        || name.starts_with("t5_proj.")
    {
        Some("LLM projection (stage two)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_parts() -> ModelParts {
        ModelParts { vision: true, text: true, stage_one_heads: true, lm_head: true }
    }

    #[test]
    fn lavis_names_match_the_stage_one_state_dict() {
        let cases = [
            ("vision_model.post_layernorm.weight", "ln_vision.weight"),
            ("vision_model.embeddings.class_embedding", "visual_encoder.cls_token"),
            ("vision_model.embeddings.position_embedding", "visual_encoder.pos_embed"),
            (
                "vision_model.embeddings.patch_embedding.bias",
                "visual_encoder.patch_embed.proj.bias",
            ),
            (
                "vision_model.encoder.layers.3.layer_norm2.bias",
                "visual_encoder.blocks.3.norm2.bias",
            ),
            (
                "vision_model.encoder.layers.0.self_attn.qkv.weight",
                "visual_encoder.blocks.0.attn.qkv.weight",
            ),
            (
                "vision_model.encoder.layers.0.self_attn.projection.weight",
                "visual_encoder.blocks.0.attn.proj.weight",
            ),
            (
                "vision_model.encoder.layers.1.mlp.fc1.weight",
                "visual_encoder.blocks.1.mlp.fc1.weight",
            ),
            ("qformer.layernorm.bias", "Qformer.bert.embeddings.LayerNorm.bias"),
            ("embeddings.word_embeddings.weight", "Qformer.bert.embeddings.word_embeddings.weight"),
            (
                "qformer.encoder.layer.2.attention.attention.query.weight",
                "Qformer.bert.encoder.layer.2.attention.self.query.weight",
            ),
            (
                "qformer.encoder.layer.2.crossattention.attention.key.weight",
                "Qformer.bert.encoder.layer.2.crossattention.self.key.weight",
            ),
            (
                "qformer.encoder.layer.1.attention.output.LayerNorm.bias",
                "Qformer.bert.encoder.layer.1.attention.output.LayerNorm.bias",
            ),
            (
                "qformer.encoder.layer.0.output_query.dense.weight",
                "Qformer.bert.encoder.layer.0.output_query.dense.weight",
            ),
            ("vision_projection.weight", "vision_proj.weight"),
            ("text_projection.bias", "text_proj.bias"),
            ("itm_head.weight", "itm_head.weight"),
            ("temp", "temp"),
            ("query_tokens", "query_tokens"),
            (
                "cls.predictions.transform.dense.weight",
                "Qformer.cls.predictions.transform.dense.weight",
            ),
            ("cls.predictions.bias", "Qformer.cls.predictions.bias"),
        ];
        for (hf, lavis) in cases {
            assert_eq!(canonical_to_lavis(hf).as_deref(), Some(lavis), "{hf}");
            assert_eq!(lavis_to_canonical(lavis).as_deref(), Some(hf), "{lavis}");
        }
        assert_eq!(lavis_to_canonical("temperature"), None);
        assert_eq!(lavis_to_canonical("opt_proj.weight"), None);
    }

    #[test]
    fn every_canonical_name_round_trips_through_lavis() {
        let cfg = Blip2Config::default();
        let specs = canonical_tensors(&cfg, full_parts());
        let mut seen = std::collections::HashSet::new();
        for s in &specs {
            assert!(seen.insert(s.name.clone()), "duplicate {}", s.name);
            let lavis = canonical_to_lavis(&s.name)
                .unwrap_or_else(|| panic!("no LAVIS name for {}", s.name));
            assert_eq!(lavis_to_canonical(&lavis).as_deref(), Some(s.name.as_str()));
        }
    }

    #[test]
    fn vit_g_stage_one_sizes() {
        let cfg = Blip2Config::default();
        let specs = canonical_tensors(&cfg, full_parts());
        let count = |g: Group| -> usize {
            specs.iter().filter(|s| s.group == g).map(|s| s.shape.iter().product::<usize>()).sum()
        };
        // 39 blocks of ViT-g; cross-attention in 6 of 12 layers (paper: ~1B ViT, ~188M Q-Former).
        assert_eq!(specs.iter().filter(|s| s.name.ends_with("mlp.fc1.weight")).count(), 39);
        assert_eq!(
            specs.iter().filter(|s| s.name.contains("crossattention.attention.key.weight")).count(),
            6
        );
        let qformer_total: usize =
            [Group::QueryTokens, Group::QFormer, Group::TextEmbeddings, Group::TextFfn]
                .iter()
                .map(|&g| count(g))
                .sum();
        assert!((180_000_000..190_000_000).contains(&qformer_total), "{qformer_total}");
    }
}
