//! What a checkpoint load found: strict problems (missing, unexpected, misshaped, wrongly typed)
//! and tolerated facts (defaulted, known-unused, aliases dropped while reading).

use std::fmt;

use candle_core::DType;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Tensors taken from the checkpoint.
    pub loaded: usize,
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// (name, expected shape, found shape)
    pub shape_mismatch: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// (name, found dtype): integer tensors where floats are needed.
    pub wrong_dtype: Vec<(String, DType)>,
    /// Absent tensors that got their documented default (e.g. `temp` = 0.07 for HF checkpoints).
    pub defaulted: Vec<String>,
    /// Present but not used by this model, with the reason (e.g. LLM weights).
    pub known_unused: Vec<(String, String)>,
    /// Dropped while reading the file because they duplicate or derive from other tensors
    /// (LAVIS tied decoder weight, `position_ids` buffer, ...), with the reason.
    pub ignored: Vec<(String, String)>,
}

impl LoadReport {
    /// Whether anything makes the checkpoint unusable for the model.
    pub fn is_strict_ok(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.shape_mismatch.is_empty()
            && self.wrong_dtype.is_empty()
    }

    /// One-line-per-problem description of what makes the load fail.
    pub fn problems(&self) -> String {
        let mut out = Vec::new();
        if !self.missing.is_empty() {
            out.push(format!("missing {}: {}", self.missing.len(), self.missing.join(", ")));
        }
        if !self.unexpected.is_empty() {
            out.push(format!(
                "unexpected {}: {}",
                self.unexpected.len(),
                self.unexpected.join(", ")
            ));
        }
        if !self.shape_mismatch.is_empty() {
            let items: Vec<String> = self
                .shape_mismatch
                .iter()
                .map(|(n, want, got)| format!("{n} (expected {want:?}, found {got:?})"))
                .collect();
            out.push(format!("wrong shape {}: {}", items.len(), items.join(", ")));
        }
        if !self.wrong_dtype.is_empty() {
            let items: Vec<String> = self
                .wrong_dtype
                .iter()
                .map(|(n, d)| format!("{n} ({d:?}, expected a float type)"))
                .collect();
            out.push(format!("wrong dtype {}: {}", items.len(), items.join(", ")));
        }
        out.join("; ")
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "loaded {} tensors", self.loaded)?;
        if !self.defaulted.is_empty() {
            write!(f, "; defaulted: {}", self.defaulted.join(", "))?;
        }
        if !self.known_unused.is_empty() {
            let mut reasons: Vec<&str> =
                self.known_unused.iter().map(|(_, r)| r.as_str()).collect();
            reasons.dedup();
            write!(
                f,
                "; {} known-unused tensors ({})",
                self.known_unused.len(),
                reasons.join(", ")
            )?;
        }
        if !self.ignored.is_empty() {
            let names: Vec<&str> = self.ignored.iter().map(|(n, _)| n.as_str()).collect();
            write!(f, "; ignored: {}", names.join(", "))?;
        }
        if !self.is_strict_ok() {
            write!(f, "; {}", self.problems())?;
        }
        Ok(())
    }
}
