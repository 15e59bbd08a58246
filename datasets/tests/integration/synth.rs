//! The synthetic world: deterministic, readable by our own readers, captions mostly unique.

use datasets::formats::{
    for_each_shard_sample, read_karpathy_eval, read_karpathy_train, read_vqa_official,
};
use datasets::image::{decode_file, DecodeLimits};
use datasets::synth::{generate, write_world, SynthConfig};

#[test]
fn world_is_deterministic_and_round_trips_through_the_readers() {
    let cfg = SynthConfig { images: 200, seed: 11, image_size: 32, shard_size: 100 };
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let s1 = write_world(d1.path(), &cfg).unwrap();
    write_world(d2.path(), &cfg).unwrap();
    for f in &s1.files {
        assert_eq!(
            std::fs::read(d1.path().join(f)).unwrap(),
            std::fs::read(d2.path().join(f)).unwrap(),
            "{}",
            f.display()
        );
    }
    let train =
        read_karpathy_train(&d1.path().join("annotations/karpathy_train.json"), d1.path()).unwrap();
    assert_eq!(train.len(), 160 * 3);
    let img = match &train[0].image {
        datasets::ImageSource::Path(p) => decode_file(p, DecodeLimits::default()).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!((img.width, img.height), (32, 32));
    let test = read_karpathy_eval(&d1.path().join("annotations/karpathy_test.json")).unwrap();
    assert_eq!(test.images.len(), 20);
    assert_eq!(test.texts.len(), 60);

    let qs = read_vqa_official(
        &d1.path().join("vqa/test_questions.json"),
        Some(&d1.path().join("vqa/test_annotations.json")),
    )
    .unwrap();
    assert!(qs.len() >= 20 * 4);
    let types: std::collections::BTreeSet<_> =
        qs.iter().map(|q| q.annotation.as_ref().unwrap().answer_type.clone()).collect();
    assert_eq!(types.into_iter().collect::<Vec<_>>(), vec!["number", "other", "yes/no"]);
    assert!(qs.iter().all(|q| q.annotation.as_ref().unwrap().answers.len() == 10));

    let mut n = 0;
    for_each_shard_sample(&d1.path().join("shards/00000.tar"), |s| {
        assert!(s.image.is_some() && s.caption.is_some());
        n += 1;
    })
    .unwrap();
    assert_eq!(n, 100);
}

#[test]
fn most_captions_are_unique_and_pixels_show_the_named_color() {
    let samples =
        generate(&SynthConfig { images: 1000, seed: 0, image_size: 64, ..Default::default() });
    let unique: std::collections::HashSet<_> =
        samples.iter().map(|s| s.captions[0].clone()).collect();
    assert!(unique.len() > 600, "{} unique of 1000", unique.len());
    // The first group's colour really is drawn.
    for s in samples.iter().take(50) {
        let img = s.scene.render();
        let rgb = datasets::synth::scene::COLORS[s.scene.first.color].1;
        assert!(img.data.chunks(3).any(|p| p == rgb), "{}", s.captions[0]);
    }
}
