//! `results.md` and `results.json`: every number of a quickstart run and the time of each phase.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use eval::retrieval::{RetrievalMetrics, RetrievalReport};
use eval::vqa::VqaAccuracy;

use super::Plan;
use train::RunSummary;

#[derive(Debug, Default, Clone, Serialize)]
pub struct Timings {
    pub phases: Vec<(String, f64)>,
    pub total: f64,
    /// The LM pretraining ran beside stage one (the total is less than the sum).
    pub overlapped: bool,
}

impl Timings {
    pub fn add(&mut self, name: &str, since: Instant) {
        self.push(name, since.elapsed().as_secs_f64());
    }

    /// A phase timed elsewhere (one that ran on its own thread).
    pub fn push(&mut self, name: &str, seconds: f64) {
        println!("[{seconds:7.1} s] {name}");
        self.phases.push((name.to_string(), seconds));
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WorldCounts {
    pub train_captions: usize,
    pub test_images: usize,
    pub test_texts: usize,
    pub test_questions: usize,
}

/// One VQA row: overall and per answer type, in percent.
#[derive(Debug, Clone, Serialize)]
pub struct VqaRow {
    pub name: String,
    pub overall: f64,
    pub yes_no: f64,
    pub number: f64,
    pub other: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VqaTable {
    pub rows: Vec<VqaRow>,
}

impl VqaTable {
    pub fn new(
        image: &VqaAccuracy,
        no_image: &VqaAccuracy,
        gold: &VqaAccuracy,
        majority: &VqaAccuracy,
        type_majority: &VqaAccuracy,
    ) -> Self {
        let row = |name: &str, a: &VqaAccuracy| VqaRow {
            name: name.to_string(),
            overall: a.overall,
            yes_no: a.per_answer_type.get("yes/no").unwrap_or(f64::NAN),
            number: a.per_answer_type.get("number").unwrap_or(f64::NAN),
            other: a.per_answer_type.get("other").unwrap_or(f64::NAN),
        };
        Self {
            rows: vec![
                row("BLIP-2 (image -> Q-Former -> OPT), zero-shot", image),
                row("same OPT, no image", no_image),
                row("majority answer (train split)", majority),
                row("majority answer per question type", type_majority),
                row("same OPT reading a true caption (upper bound)", gold),
            ],
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub plan: Plan,
    pub world_counts: WorldCounts,
    pub timings: Timings,
    /// Contrastive ViT pretraining; `None` when the ViT stayed random.
    pub vit: Option<RunSummary>,
    pub lm: RunSummary,
    pub stage1: RunSummary,
    pub stage2: RunSummary,
    pub retrieval_untrained: RetrievalReport,
    pub retrieval_trained: RetrievalReport,
    pub vqa: VqaTable,
    /// (image, generated, a true caption)
    pub captions: Vec<(String, String, String)>,
}

fn losses(s: &RunSummary) -> String {
    s.first
        .iter()
        .filter(|(k, _)| k.as_str() != "total" || s.first.len() == 1)
        .map(|(k, v)| format!("{k} {v:.3} → {:.3}", s.last.get(k).copied().unwrap_or(f64::NAN)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn retrieval_row(out: &mut String, name: &str, m: &RetrievalMetrics) {
    let _ = writeln!(
        out,
        "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
        m.txt_r1, m.txt_r5, m.txt_r10, m.img_r1, m.img_r5, m.img_r10
    );
}

impl Results {
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let w = &self.world_counts;
        let _ = writeln!(s, "# blip2 quickstart results\n");
        let _ = writeln!(
            s,
            "Synthetic shapes world, seed {}: {} images ({} train captions; test split {} images, {} captions, {} questions). Total time {:.0} s.\n",
            self.plan.seed, self.plan.images, w.train_captions, w.test_images, w.test_texts, w.test_questions, self.timings.total
        );
        let vit = match &self.vit {
            Some(v) => format!("pretrained contrastively for {} steps, then frozen", v.steps),
            None => "random and frozen".to_string(),
        };
        let _ = writeln!(s, "Image encoder: tiny BLIP-2 ViT, {vit}.\n");
        let _ = writeln!(
            s,
            "## Retrieval (test split, LAVIS protocol, k_test = {})\n",
            self.plan.k_test
        );
        let _ = writeln!(
            s,
            "| model | text R@1 | text R@5 | text R@10 | image R@1 | image R@5 | image R@10 |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        let per_image = w.test_texts as f64 / w.test_images.max(1) as f64;
        let chance = RetrievalMetrics {
            txt_r1: 100.0 * per_image / w.test_texts as f64,
            txt_r5: 100.0 * (5.0 * per_image / w.test_texts as f64).min(1.0),
            txt_r10: 100.0 * (10.0 * per_image / w.test_texts as f64).min(1.0),
            img_r1: 100.0 / w.test_images as f64,
            img_r5: 100.0 * (5.0 / w.test_images as f64).min(1.0),
            img_r10: 100.0 * (10.0 / w.test_images as f64).min(1.0),
            txt_r_mean: 0.0,
            img_r_mean: 0.0,
            r_mean: 0.0,
            agg_metrics: 0.0,
        };
        retrieval_row(&mut s, "chance (about)", &chance);
        retrieval_row(&mut s, "untrained Q-Former, ITC", &self.retrieval_untrained.itc);
        if let Some(r) = &self.retrieval_untrained.rerank {
            retrieval_row(&mut s, "untrained Q-Former, ITM re-ranked", r);
        }
        retrieval_row(&mut s, "stage-one Q-Former, ITC", &self.retrieval_trained.itc);
        if let Some(r) = &self.retrieval_trained.rerank {
            retrieval_row(&mut s, "**stage-one Q-Former, ITM re-ranked**", r);
        }
        let _ = writeln!(s, "\n## Zero-shot VQA (test split, official VQA metric, prompt `Question: {{}} Short answer:`)\n");
        let _ = writeln!(s, "| answers from | overall | yes/no | number | other |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for r in &self.vqa.rows {
            let _ = writeln!(
                s,
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} |",
                r.name, r.overall, r.yes_no, r.number, r.other
            );
        }
        let _ = writeln!(s, "\n## Captions (stage-two model, greedy, no prompt)\n");
        let _ = writeln!(s, "| image | generated | a true caption |");
        let _ = writeln!(s, "|---|---|---|");
        for (img, g, t) in &self.captions {
            let _ = writeln!(s, "| `{img}` | {g} | {t} |");
        }
        let _ = writeln!(s, "\n## Training runs (curves in `runs/*/curves.png`)\n");
        let _ = writeln!(s, "| run | steps x batch | loss, first 10% → last 10% of steps | time |");
        let _ = writeln!(s, "|---|---|---|---|");
        let vit = self
            .vit
            .as_ref()
            .map(|v| ("ViT, contrastive on world captions (`runs/vit`)", v, &self.plan.vit));
        for (name, p, o) in vit.into_iter().chain([
            ("OPT on world text (`runs/lm`)", &self.lm, &self.plan.lm),
            ("stage one (`runs/stage1`)", &self.stage1, &self.plan.stage1),
            ("stage two (`runs/stage2`)", &self.stage2, &self.plan.stage2),
        ]) {
            let _ = writeln!(
                s,
                "| {name} | {} x {} | {} | {:.0} s |",
                p.steps,
                o.batch,
                losses(p),
                p.seconds
            );
        }
        let _ = writeln!(s, "\n## Time per phase\n");
        let _ = writeln!(s, "| phase | seconds |");
        let _ = writeln!(s, "|---|---|");
        for (name, secs) in &self.timings.phases {
            let _ = writeln!(s, "| {name} | {secs:.1} |");
        }
        let _ = writeln!(s, "| **total** | {:.1} |", self.timings.total);
        if self.timings.overlapped {
            let _ = writeln!(
                s,
                "\nThe LM trains on the second core while stage one runs, so the total is less \
                 than the sum."
            );
        }
        s
    }

    pub fn write(&self, out: &Path) -> Result<()> {
        let json = out.join("results.json");
        std::fs::write(&json, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", json.display()))?;
        let md = out.join("results.md");
        std::fs::write(&md, self.markdown()).with_context(|| format!("writing {}", md.display()))
    }
}
