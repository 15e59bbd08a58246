//! Developer tool: what a BLIP-2-sized stage-one step keeps alive. candle keeps every node of the
//! forward graph until the gradients drop, so this walks the graph at the end of the forward
//! (`Tensor::sorted_nodes`, each storage counted once, grouped by shape) and then the gradient
//! store after the backward (how many entries, and what graph they still hold).
//!
//!   cargo run --release -p qformer --example graph_census
use candle_core::{CpuStorage, Storage};
use qformer::model::ImageInput;
use qformer::objectives::stage_one_losses;
use qformer::objectives::PretrainBatch;
use std::collections::{HashMap, HashSet};
use workloads::Scale;
use workloads::Stage1StepCase;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut case = Stage1StepCase::new(Scale::Real, 0)?;
    let batch = PretrainBatch {
        image: ImageInput::VisionFeatures(&case.features),
        input_ids: &case.input_ids,
        attention_mask: &case.padding,
        image_ids: None,
    };
    let losses =
        stage_one_losses(&case.model, &batch, &case.objectives, true, &mut case.state.rng)?;
    let nodes = losses.total.sorted_nodes();
    let nodes: Vec<_> = nodes.into_iter().cloned().collect();
    let mut seen = HashSet::new();
    let mut by: HashMap<String, (usize, usize)> = HashMap::new();
    let mut total = 0usize;
    let mut var_bytes = 0usize;
    for n in nodes.iter().filter(|n| n.is_variable()) {
        let (s, _) = n.storage_and_layout();
        if let Storage::Cpu(CpuStorage::F32(v)) = &*s {
            if seen.insert(v.as_ptr() as usize) {
                var_bytes += v.len() * 4;
            }
        }
    }
    println!("vars {:.1} MB", var_bytes as f64 / 1e6);
    for n in nodes.iter() {
        let (s, _) = n.storage_and_layout();
        let ptr = match &*s {
            Storage::Cpu(CpuStorage::F32(v)) => v.as_ptr() as usize,
            _ => 0,
        };
        let bytes = match &*s {
            Storage::Cpu(CpuStorage::F32(v)) => v.len() * 4,
            _ => 0,
        };
        if !seen.insert(ptr) {
            continue;
        }
        let e = by.entry(format!("{:?}", n.dims())).or_default();
        e.0 += 1;
        e.1 += bytes;
        total += bytes;
    }
    let mut v: Vec<_> = by.into_iter().collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.1 .1));
    for (k, (c, b)) in v {
        println!("{k:40} {c:6} {:8.1} MB", b as f64 / 1e6);
    }
    println!("total {:.1} MB", total as f64 / 1e6);
    let grads = losses.total.backward()?;
    drop(nodes);
    drop(losses);
    let mut seen = HashSet::new();
    let (mut entries, mut held, mut own) = (0usize, 0usize, 0usize);
    let mut tracked = 0usize;
    let ids: Vec<_> = grads.get_ids().cloned().collect();
    for id in ids {
        let g = grads.get_id(id).unwrap();
        entries += 1;
        if g.track_op() {
            tracked += 1;
            println!("gradient holding a graph: {:?}", g.dims());
        }
        {
            let (s, _) = g.storage_and_layout();
            if let Storage::Cpu(CpuStorage::F32(v)) = &*s {
                if seen.insert(v.as_ptr() as usize) {
                    own += v.len() * 4;
                }
            }
        }
        for n in g.sorted_nodes() {
            let (s, _) = n.storage_and_layout();
            if let Storage::Cpu(CpuStorage::F32(v)) = &*s {
                if seen.insert(v.as_ptr() as usize) {
                    held += v.len() * 4;
                }
            }
        }
    }
    println!(
        "grad entries {entries} (tracked {tracked}), own {:.1} MB, graph held {:.1} MB",
        own as f64 / 1e6,
        held as f64 / 1e6
    );
    Ok(())
}
