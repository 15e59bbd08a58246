//! A scene of colored shapes: one or two groups of identical objects and a spatial relation,
//! with the captions and VQA questions that describe it.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::image::RgbImage8;

pub const COLORS: [(&str, [u8; 3]); 6] = [
    ("red", [220, 40, 40]),
    ("green", [40, 170, 60]),
    ("blue", [40, 80, 220]),
    ("yellow", [235, 210, 40]),
    ("purple", [140, 60, 180]),
    ("orange", [245, 140, 30]),
];
pub const SHAPES: [&str; 3] = ["circle", "square", "triangle"];
pub const SIZES: [&str; 2] = ["small", "large"];
const COUNT_WORDS: [&str; 4] = ["no", "a", "two", "three"];
const BACKGROUND: [u8; 3] = [235, 235, 230];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Relation {
    Above,
    Below,
    LeftOf,
    RightOf,
}

impl Relation {
    pub fn phrase(self) -> &'static str {
        match self {
            Relation::Above => "above",
            Relation::Below => "below",
            Relation::LeftOf => "to the left of",
            Relation::RightOf => "to the right of",
        }
    }
    pub fn inverse(self) -> Relation {
        match self {
            Relation::Above => Relation::Below,
            Relation::Below => Relation::Above,
            Relation::LeftOf => Relation::RightOf,
            Relation::RightOf => Relation::LeftOf,
        }
    }
    /// One-word VQA answer.
    pub fn answer(self) -> &'static str {
        match self {
            Relation::Above => "above",
            Relation::Below => "below",
            Relation::LeftOf => "left",
            Relation::RightOf => "right",
        }
    }
}

/// `count` identical objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    pub color: usize,
    pub shape: usize,
    pub size: usize,
    pub count: usize,
}

impl Group {
    pub fn color_name(&self) -> &'static str {
        COLORS[self.color].0
    }
    pub fn shape_name(&self) -> &'static str {
        SHAPES[self.shape]
    }
    /// "two small red circles" / "a large blue square".
    pub fn phrase(&self) -> String {
        let plural = if self.count > 1 { "s" } else { "" };
        format!(
            "{} {} {} {}{plural}",
            COUNT_WORDS[self.count],
            SIZES[self.size],
            self.color_name(),
            self.shape_name()
        )
    }
}

/// Object placed in pixel space (centre and half extent).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Placed {
    pub shape: usize,
    pub color: usize,
    pub cx: f32,
    pub cy: f32,
    pub r: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scene {
    pub first: Group,
    /// Second group and where the first group is relative to it.
    pub second: Option<(Group, Relation)>,
    pub objects: Vec<Placed>,
    pub size: u32,
}

/// A VQA question with its single ground-truth answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SceneQuestion {
    pub question: String,
    pub answer: String,
    pub answer_type: &'static str,
    pub question_type: &'static str,
}

fn region_objects(
    g: &Group,
    x0: f32,
    y0: f32,
    w: f32,
    h: f32,
    s: f32,
    rng: &mut ChaCha8Rng,
) -> Vec<Placed> {
    let cell = w / g.count as f32;
    let want = (if g.size == 0 { 0.09 } else { 0.16 }) * s;
    let r = want.min(cell / 2.0 - 1.0).min(h / 2.0 - 1.0).max(2.0);
    (0..g.count)
        .map(|k| {
            let slack_x = (cell / 2.0 - r).max(0.0);
            let slack_y = (h / 2.0 - r).max(0.0);
            Placed {
                shape: g.shape,
                color: g.color,
                cx: x0 + cell * (k as f32 + 0.5) + rng.random_range(-slack_x..=slack_x) * 0.8,
                cy: y0 + h / 2.0 + rng.random_range(-slack_y..=slack_y) * 0.8,
                r,
            }
        })
        .collect()
}

impl Scene {
    /// Draw a random scene; `rng` fully determines it.
    pub fn random(size: u32, rng: &mut ChaCha8Rng) -> Scene {
        let first = Group {
            color: rng.random_range(0..COLORS.len()),
            shape: rng.random_range(0..SHAPES.len()),
            size: rng.random_range(0..SIZES.len()),
            count: rng.random_range(1..=3),
        };
        let s = size as f32;
        let second = if rng.random_bool(0.75) {
            // Distinct color and shape keep every question unambiguous.
            let color = (first.color + rng.random_range(1..COLORS.len())) % COLORS.len();
            let shape = (first.shape + rng.random_range(1..SHAPES.len())) % SHAPES.len();
            let g = Group {
                color,
                shape,
                size: rng.random_range(0..SIZES.len()),
                count: rng.random_range(1..=2),
            };
            let rel = [Relation::Above, Relation::Below, Relation::LeftOf, Relation::RightOf]
                [rng.random_range(0..4)];
            Some((g, rel))
        } else {
            None
        };
        let objects = match &second {
            None => region_objects(&first, 0.0, 0.0, s, s, s, rng),
            Some((g, rel)) => {
                let half = s / 2.0;
                let (a, b) = match rel {
                    Relation::Above => ((0.0, 0.0, s, half), (0.0, half, s, half)),
                    Relation::Below => ((0.0, half, s, half), (0.0, 0.0, s, half)),
                    Relation::LeftOf => ((0.0, 0.0, half, s), (half, 0.0, half, s)),
                    Relation::RightOf => ((half, 0.0, half, s), (0.0, 0.0, half, s)),
                };
                let mut v = region_objects(&first, a.0, a.1, a.2, a.3, s, rng);
                v.extend(region_objects(g, b.0, b.1, b.2, b.3, s, rng));
                v
            }
        };
        Scene { first, second, objects, size }
    }

    /// Rasterise the scene (8-bit RGB, flat background).
    pub fn render(&self) -> RgbImage8 {
        let n = self.size as usize;
        let mut data = Vec::with_capacity(n * n * 3);
        for _ in 0..n * n {
            data.extend_from_slice(&BACKGROUND);
        }
        for o in &self.objects {
            let color = COLORS[o.color].1;
            let (x0, x1) =
                ((o.cx - o.r).floor().max(0.0) as usize, ((o.cx + o.r).ceil() as usize).min(n));
            let (y0, y1) =
                ((o.cy - o.r).floor().max(0.0) as usize, ((o.cy + o.r).ceil() as usize).min(n));
            for y in y0..y1 {
                for x in x0..x1 {
                    let (dx, dy) = (x as f32 + 0.5 - o.cx, y as f32 + 0.5 - o.cy);
                    let inside = match o.shape {
                        0 => dx * dx + dy * dy <= o.r * o.r,
                        1 => dx.abs() <= o.r * 0.85 && dy.abs() <= o.r * 0.85,
                        _ => {
                            // Upward triangle: apex at the top, base at the bottom.
                            let t = (dy + o.r) / (2.0 * o.r);
                            (0.0..=1.0).contains(&t) && dx.abs() <= t * o.r
                        }
                    };
                    if inside {
                        let i = (y * n + x) * 3;
                        data[i..i + 3].copy_from_slice(&color);
                    }
                }
            }
        }
        RgbImage8 { width: n, height: n, data }
    }

    /// Three paraphrases; the first is the canonical description.
    pub fn captions(&self) -> Vec<String> {
        let a = self.first.phrase();
        match &self.second {
            None => {
                let verb = if self.first.count > 1 { "are" } else { "is" };
                vec![a.clone(), format!("there {verb} {a}"), format!("a picture of {a}")]
            }
            Some((g, rel)) => {
                let b = g.phrase();
                vec![
                    format!("{a} {} {b}", rel.phrase()),
                    format!("{b} {} {a}", rel.inverse().phrase()),
                    format!("an image with {a} and {b}"),
                ]
            }
        }
    }

    /// Color, shape, count, yes/no and position questions (answer types as VQAv2).
    pub fn questions(&self, rng: &mut ChaCha8Rng) -> Vec<SceneQuestion> {
        let f = &self.first;
        let mut q = vec![
            SceneQuestion {
                question: format!("what color is the {}?", f.shape_name()),
                answer: f.color_name().to_string(),
                answer_type: "other",
                question_type: "what color is the",
            },
            SceneQuestion {
                question: format!("what shape is the {} object?", f.color_name()),
                answer: f.shape_name().to_string(),
                answer_type: "other",
                question_type: "what",
            },
            SceneQuestion {
                question: format!("how many {}s are there?", f.shape_name()),
                answer: f.count.to_string(),
                answer_type: "number",
                question_type: "how many",
            },
        ];
        let present: Vec<(usize, usize)> = std::iter::once((f.color, f.shape))
            .chain(self.second.iter().map(|(g, _)| (g.color, g.shape)))
            .collect();
        let (color, shape, yes) = if rng.random_bool(0.5) {
            let (c, s) = present[rng.random_range(0..present.len())];
            (c, s, true)
        } else {
            loop {
                let c = rng.random_range(0..COLORS.len());
                let s = rng.random_range(0..SHAPES.len());
                if !present.contains(&(c, s)) {
                    break (c, s, false);
                }
            }
        };
        q.push(SceneQuestion {
            question: format!("is there a {} {}?", COLORS[color].0, SHAPES[shape]),
            answer: if yes { "yes" } else { "no" }.to_string(),
            answer_type: "yes/no",
            question_type: "is there a",
        });
        if let Some((g, rel)) = &self.second {
            q.push(SceneQuestion {
                question: format!(
                    "where is the {} {} relative to the {} {}?",
                    f.color_name(),
                    f.shape_name(),
                    g.color_name(),
                    g.shape_name()
                ),
                answer: rel.answer().to_string(),
                answer_type: "other",
                question_type: "where is the",
            });
        }
        q
    }
}
