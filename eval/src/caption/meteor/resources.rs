//! METEOR's English data: function words and nonbreaking prefixes (shipped with this crate, they are small),
//! and, from a user's pycocoevalcap install, the WordNet synonym files inside `meteor-1.5.jar` and the
//! paraphrase table `data/paraphrase-en.gz` beside it (6 MB and 61 MB: not shipped).
//!
//! `--meteor-data` accepts the jar (its `data/` folder is looked for next to it), pycocoevalcap's `meteor/`
//! folder, or a folder holding the jar's contents (`synonym/english.synsets`, `synonym/english.exceptions`)
//! and `paraphrase-en.gz` or `data/paraphrase-en.gz`.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// METEOR's English function words (`function/english.words` of the jar).
pub fn english_function_words() -> HashSet<String> {
    include_str!("data/english.function-words").lines().map(str::to_string).collect()
}

/// WordNet synsets as METEOR's `SynonymDictionary` reads them: a word's synsets, and the synsets of its
/// base forms (irregular forms from `english.exceptions`, else METEOR's suffix rules).
#[derive(Debug, Default)]
pub struct Synonyms {
    word_to_synsets: HashMap<String, Vec<u32>>,
    form_to_bases: HashMap<String, Vec<String>>,
}

/// `SynonymDictionary.morph`'s detachment rules: (suffix, replacement), tried in order.
const MORPH_RULES: [(&str, &str); 20] = [
    ("s", ""),
    ("ses", "s"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
    ("s", ""),
    ("ies", "y"),
    ("es", "e"),
    ("es", ""),
    ("ed", "e"),
    ("ed", ""),
    ("ing", "e"),
    ("ing", ""),
    ("er", ""),
    ("est", ""),
    ("er", "e"),
    ("est", "e"),
];

impl Synonyms {
    /// Parse `english.synsets` (word line, synset-ids line) and `english.exceptions` (base line, forms line).
    pub fn parse(synsets: &str, exceptions: &str) -> Synonyms {
        let mut word_to_synsets = HashMap::new();
        let mut lines = synsets.lines();
        while let (Some(word), Some(ids)) = (lines.next(), lines.next()) {
            let ids = ids.split_whitespace().filter_map(|t| t.parse().ok()).collect();
            word_to_synsets.insert(word.to_string(), ids);
        }
        let mut form_to_bases: HashMap<String, Vec<String>> = HashMap::new();
        let mut lines = exceptions.lines();
        while let (Some(base), Some(forms)) = (lines.next(), lines.next()) {
            for form in forms.split_whitespace() {
                form_to_bases.entry(form.to_string()).or_default().push(base.to_string());
            }
        }
        Synonyms { word_to_synsets, form_to_bases }
    }

    fn synsets(&self, word: &str) -> &[u32] {
        self.word_to_synsets.get(word).map(Vec::as_slice).unwrap_or(&[])
    }

    /// `morph`: the first suffix rule whose result is a WordNet word; `-ful` words keep their `ful`.
    fn morph(&self, word: &str) -> String {
        let end = if word.ends_with("ful") { "ful" } else { "" };
        if word.ends_with("ss") || word.chars().count() <= 2 {
            return word.to_string();
        }
        for (suffix, replacement) in MORPH_RULES {
            if let Some(stem) = word.strip_suffix(suffix) {
                let base = format!("{stem}{replacement}");
                if self.word_to_synsets.contains_key(&base) {
                    return base + end;
                }
            }
        }
        String::new()
    }

    /// The word's synsets together with its base forms' (`getSynSets` + `getStemSynSets`).
    pub fn synsets_with_stems(&self, word: &str) -> HashSet<u32> {
        let mut set: HashSet<u32> = self.synsets(word).iter().copied().collect();
        match self.form_to_bases.get(word) {
            Some(bases) => {
                for base in bases {
                    set.extend(self.synsets(base));
                }
            }
            None => set.extend(self.synsets(&self.morph(word))),
        }
        set
    }
}

/// The paraphrase table, keeping only entries whose words all occur in the captions being scored (an entry
/// with any other word can never match, so the alignment is the same as with the whole table), in file order.
#[derive(Debug, Default)]
pub struct Paraphrases {
    vocabulary: HashMap<String, u32>,
    /// Reference-side phrase -> its paraphrases, in table order.
    by_phrase: HashMap<Vec<u32>, Vec<Vec<u32>>>,
    longest_phrase: usize,
}

impl Paraphrases {
    /// Read `paraphrase-en.gz`-format text: records of three lines (probability, phrase, paraphrase).
    pub fn read_filtered(
        reader: impl BufRead,
        source: &Path,
        words: &HashSet<String>,
    ) -> Result<Paraphrases> {
        let mut table = Paraphrases::default();
        let mut lines = reader.lines();
        let io = |e| Error::io(source, e);
        loop {
            let Some(_probability) = lines.next().transpose().map_err(io)? else { break };
            let (Some(phrase), Some(paraphrase)) =
                (lines.next().transpose().map_err(io)?, lines.next().transpose().map_err(io)?)
            else {
                return Err(Error::Invalid(format!(
                    "{}: a paraphrase record is cut short",
                    source.display()
                )));
            };
            let known = |line: &str| line.split_whitespace().all(|w| words.contains(w));
            if !known(&phrase) || !known(&paraphrase) {
                continue;
            }
            let phrase = table.ids(&phrase);
            let paraphrase = table.ids(&paraphrase);
            table.longest_phrase = table.longest_phrase.max(phrase.len());
            table.by_phrase.entry(phrase).or_default().push(paraphrase);
        }
        Ok(table)
    }

    fn ids(&mut self, line: &str) -> Vec<u32> {
        line.split_whitespace()
            .map(|w| {
                let next = self.vocabulary.len() as u32;
                *self.vocabulary.entry(w.to_string()).or_insert(next)
            })
            .collect()
    }

    /// A line's words as table ids (`None`: not in the table).
    pub fn word_ids(&self, words: &[String]) -> Vec<Option<u32>> {
        words.iter().map(|w| self.vocabulary.get(w).copied()).collect()
    }

    /// Every (phrase length, paraphrase) for phrases of the table starting at `start` of `line`, shorter
    /// phrases first, as the original's transducer emits them.
    pub fn phrases_starting_at<'a>(
        &'a self,
        line: &[Option<u32>],
        start: usize,
    ) -> Vec<(usize, &'a [u32])> {
        let mut found = Vec::new();
        let mut phrase = Vec::new();
        for word in line.iter().skip(start).take(self.longest_phrase) {
            let Some(id) = word else { break };
            phrase.push(*id);
            if let Some(paraphrases) = self.by_phrase.get(&phrase) {
                found.extend(paraphrases.iter().map(|p| (phrase.len(), p.as_slice())));
            }
        }
        found
    }

    pub fn entries(&self) -> usize {
        self.by_phrase.values().map(Vec::len).sum()
    }
}

/// Where the synonym files and the paraphrase table were found.
#[derive(Debug, Clone, Default)]
pub struct MeteorDataFiles {
    /// A jar holding `synonym/english.*`, or a folder holding `synonym/`.
    pub synonyms: Option<SynonymSource>,
    pub paraphrase_table: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub enum SynonymSource {
    Jar(PathBuf),
    Folder(PathBuf),
}

const JAR_NAME: &str = "meteor-1.5.jar";
const PARAPHRASE_NAME: &str = "paraphrase-en.gz";

impl MeteorDataFiles {
    /// Find METEOR's data at `path` (a jar or a folder, see the module docs). Finding neither file is an
    /// error: the user asked for tables.
    pub fn locate(path: &Path) -> Result<MeteorDataFiles> {
        let not_found = |what: &str| {
            Error::Invalid(format!(
                "{}: {what} (give meteor-1.5.jar from pycocoevalcap, its meteor/ folder, or the jar's contents)",
                path.display()
            ))
        };
        if !path.exists() {
            return Err(not_found("no such file or folder"));
        }
        let mut files = MeteorDataFiles::default();
        let folder = if path.is_file() {
            files.synonyms = Some(SynonymSource::Jar(path.to_path_buf()));
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            if path.join("synonym/english.synsets").is_file() {
                files.synonyms = Some(SynonymSource::Folder(path.to_path_buf()));
            } else if path.join(JAR_NAME).is_file() {
                files.synonyms = Some(SynonymSource::Jar(path.join(JAR_NAME)));
            }
            path.to_path_buf()
        };
        files.paraphrase_table =
            [folder.join("data").join(PARAPHRASE_NAME), folder.join(PARAPHRASE_NAME)]
                .into_iter()
                .find(|p| p.is_file());
        if files.synonyms.is_none() && files.paraphrase_table.is_none() {
            return Err(not_found("neither the synonym files nor paraphrase-en.gz found"));
        }
        Ok(files)
    }

    pub fn read_synonyms(&self) -> Result<Option<Synonyms>> {
        let (synsets, exceptions) = match &self.synonyms {
            None => return Ok(None),
            Some(SynonymSource::Folder(dir)) => {
                let read = |name: &str| {
                    let p = dir.join("synonym").join(name);
                    std::fs::read_to_string(&p).map_err(|e| Error::io(p, e))
                };
                (read("english.synsets")?, read("english.exceptions")?)
            }
            Some(SynonymSource::Jar(jar)) => {
                let file = File::open(jar).map_err(|e| Error::io(jar, e))?;
                let mut archive = zip::ZipArchive::new(file).map_err(|e| {
                    Error::Invalid(format!("{}: not a readable jar: {e}", jar.display()))
                })?;
                let mut read = |name: &str| -> Result<String> {
                    let mut entry = archive
                        .by_name(name)
                        .map_err(|e| Error::Invalid(format!("{}: {name}: {e}", jar.display())))?;
                    let mut text = String::new();
                    entry.read_to_string(&mut text).map_err(|e| Error::io(jar, e))?;
                    Ok(text)
                };
                (read("synonym/english.synsets")?, read("synonym/english.exceptions")?)
            }
        };
        Ok(Some(Synonyms::parse(&synsets, &exceptions)))
    }

    /// The paraphrase table restricted to `words` (see [`Paraphrases`]).
    pub fn read_paraphrases(&self, words: &HashSet<String>) -> Result<Option<Paraphrases>> {
        let Some(path) = &self.paraphrase_table else { return Ok(None) };
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let reader = BufReader::with_capacity(1 << 20, flate2::read::MultiGzDecoder::new(file));
        Paraphrases::read_filtered(reader, path, words).map(Some)
    }
}
