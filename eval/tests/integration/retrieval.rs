//! Retrieval recall: hand-computed cases for the documented tie rule, and a random 20x100 case scored by a
//! line-for-line Python copy of LAVIS `_report_metrics` (tools/retrieval_reference.py).

use std::path::Path;

use eval::retrieval::{
    rank_of_targets, retrieval_metrics, top_k_rows, RetrievalMetrics, RetrievalReport,
};
use serde_json::Value;

fn matrix(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect()
}

#[test]
fn random_case_matches_lavis_report_metrics() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/retrieval-lavis/random_20x100.json");
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (i2t, t2i) = (matrix(&fx["scores_i2t"]), matrix(&fx["scores_t2i"]));
    let img2txt: Vec<Vec<usize>> = serde_json::from_value(fx["img2txt"].clone()).unwrap();
    let txt2img: Vec<usize> = serde_json::from_value(fx["txt2img"].clone()).unwrap();
    let got = retrieval_metrics(&i2t, &t2i, &img2txt, &txt2img).unwrap();
    let want: RetrievalMetrics = serde_json::from_value(fx["metrics"].clone()).unwrap();
    assert_eq!(got, want);
    // Ranks inside the re-ranked top k_test have no ties and must agree one by one.
    let k_test = fx["k_test"].as_u64().unwrap() as usize;
    for (key, rows, targets) in [
        ("txt_ranks", &i2t, img2txt.clone()),
        ("img_ranks", &t2i, txt2img.iter().map(|&i| vec![i]).collect::<Vec<_>>()),
    ] {
        for (q, want) in fx[key].as_array().unwrap().iter().enumerate() {
            let want = want.as_u64().unwrap() as usize;
            let got = rank_of_targets(&rows[q], &targets[q]).unwrap();
            if want < k_test {
                assert_eq!(got, want, "{key}[{q}]");
            } else {
                assert!(got >= k_test, "{key}[{q}]: {got}");
            }
        }
    }
    let top10 = top_k_rows(&matrix(&fx["sims_i2t"]), 10).unwrap();
    let want_top10: Vec<Vec<usize>> = serde_json::from_value(fx["top10_sims_i2t"].clone()).unwrap();
    assert_eq!(top10, want_top10);
}

// 3 images, 6 captions: image 0 owns {0, 1, 5}, image 1 owns {2, 3}, image 2 owns {4}.
/// (scores_i2t, scores_t2i, img2txt, txt2img)
type Case = (Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<Vec<usize>>, Vec<usize>);

fn toy() -> Case {
    let img2txt = vec![vec![0, 1, 5], vec![2, 3], vec![4]];
    let txt2img = vec![0, 0, 1, 1, 2, 0];
    let i2t = vec![
        vec![0.1, 0.2, 0.9, 0.3, 0.0, 0.3], // best own caption: 5 (0.3) ties with 3 (0.3), lower index 3 first -> rank 2
        vec![0.5, 0.1, 0.5, 0.4, 0.2, 0.0], // own caption 2 ties with 0 at 0.5 -> rank 1
        vec![0.0, 0.0, 0.0, 0.0, 0.7, 0.0], // own caption 4 alone on top -> rank 0
    ];
    let t2i = vec![
        vec![0.9, 0.1, 0.0],  // text 0 -> image 0 rank 0
        vec![0.2, 0.2, 0.2],  // text 1 -> image 0: all tied, lowest index first -> rank 0
        vec![0.3, 0.3, 0.3],  // text 2 -> image 1: rank 1
        vec![0.1, 0.0, 0.5],  // text 3 -> image 1: rank 2
        vec![0.0, 0.0, -1.0], // text 4 -> image 2: rank 2
        vec![-5.0, 0.0, 1.0], // text 5 -> image 0: rank 2
    ];
    (i2t, t2i, img2txt, txt2img)
}

#[test]
fn hand_computed_ranks_and_recalls() {
    let (i2t, t2i, img2txt, txt2img) = toy();
    let txt_ranks: Vec<_> =
        i2t.iter().zip(&img2txt).map(|(r, t)| rank_of_targets(r, t).unwrap()).collect();
    assert_eq!(txt_ranks, [2, 1, 0]);
    let img_ranks: Vec<_> =
        t2i.iter().zip(&txt2img).map(|(r, &i)| rank_of_targets(r, &[i]).unwrap()).collect();
    assert_eq!(img_ranks, [0, 0, 1, 2, 2, 2]);
    let m = retrieval_metrics(&i2t, &t2i, &img2txt, &txt2img).unwrap();
    // txt: ranks 2,1,0 -> R@1 = 1/3, R@5 = R@10 = 3/3; img: ranks 0,0,1,2,2,2 -> R@1 = 2/6, R@5 = R@10 = 1.
    assert_eq!(m.txt_r1, 100.0 * 1.0 / 3.0);
    assert_eq!((m.txt_r5, m.txt_r10), (100.0, 100.0));
    assert_eq!(m.img_r1, 100.0 * 2.0 / 6.0);
    assert_eq!((m.img_r5, m.img_r10), (100.0, 100.0));
    assert_eq!(m.txt_r_mean, (m.txt_r1 + 100.0 + 100.0) / 3.0);
    assert_eq!(m.r_mean, (m.txt_r_mean + m.img_r_mean) / 2.0);
    assert_eq!(m.agg_metrics, m.txt_r_mean);
}

#[test]
fn recall_at_k_boundaries_and_captionless_images() {
    // One image, 12 texts; its caption sits at rank 5 then rank 10: counted by R@10 only, then by none.
    let txt2img = vec![0; 12];
    let t2i = vec![vec![1.0f32]; 12];
    for (own, r5, r10) in [(5usize, 0.0, 100.0), (10, 0.0, 0.0), (4, 100.0, 100.0)] {
        let row: Vec<f32> = (0..12)
            .map(|t| {
                if t == own {
                    0.5
                } else if t < own {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let m = retrieval_metrics(&[row], &t2i, &[vec![own]], &txt2img).unwrap();
        assert_eq!((m.txt_r1, m.txt_r5, m.txt_r10), (0.0, r5, r10), "own caption {own}");
    }
    // An image without captions never counts (LAVIS: rank 1e20).
    let m = retrieval_metrics(
        &[vec![1.0f32], vec![0.0]],
        &[vec![1.0f32, 0.0]],
        &[vec![0], vec![]],
        &[0],
    )
    .unwrap();
    assert_eq!(m.txt_r10, 50.0);
}

#[test]
fn bad_inputs_are_errors() {
    let (i2t, t2i, img2txt, txt2img) = toy();
    let mut ragged = i2t.clone();
    ragged[1].pop();
    assert!(retrieval_metrics(&ragged, &t2i, &img2txt, &txt2img)
        .unwrap_err()
        .to_string()
        .contains("scores_i2t[1]"));
    let mut nan = t2i.clone();
    nan[3][1] = f32::NAN;
    assert!(retrieval_metrics(&i2t, &nan, &img2txt, &txt2img)
        .unwrap_err()
        .to_string()
        .contains("scores_t2i[3][1]"));
    let mut bad = img2txt.clone();
    bad[2].push(6);
    assert!(retrieval_metrics(&i2t, &t2i, &bad, &txt2img)
        .unwrap_err()
        .to_string()
        .contains("img2txt[2]"));
    assert!(retrieval_metrics(&i2t, &t2i, &img2txt, &txt2img[..5]).is_err());
}

#[test]
fn report_round_trips_with_the_documented_keys() {
    let (i2t, t2i, img2txt, txt2img) = toy();
    let m = retrieval_metrics(&i2t, &t2i, &img2txt, &txt2img).unwrap();
    let report = RetrievalReport { itc: m, rerank: Some(m), images: 3, texts: 6 };
    let v = serde_json::to_value(&report).unwrap();
    for key in ["itc", "rerank", "images", "texts"] {
        assert!(v.get(key).is_some(), "{key}");
    }
    assert_eq!(v["itc"]["agg_metrics"].as_f64(), Some(m.txt_r_mean));
    assert_eq!(serde_json::from_value::<RetrievalReport>(v).unwrap(), report);
    let itc_only = serde_json::to_value(RetrievalReport { rerank: None, ..report }).unwrap();
    assert!(itc_only.get("rerank").is_none());
}
