//! Shard lists as webdataset spells them: brace lists `{a,b}` and zero-padded ranges
//! `{00000..00331}`, several braces multiplying out, several patterns joined by `::`.

use crate::error::{DataError, Result};

/// Every path `pattern` names, in order.
pub fn expand_urls(pattern: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for part in pattern.split("::").filter(|p| !p.is_empty()) {
        out.extend(expand_one(part)?);
    }
    Ok(out)
}

fn expand_one(pattern: &str) -> Result<Vec<String>> {
    let Some(open) = pattern.find('{') else {
        if pattern.contains('}') {
            return Err(bad(pattern, "a `}` without its `{`"));
        }
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find('}')
        .map(|i| i + open)
        .ok_or_else(|| bad(pattern, "a `{` without its `}`"))?;
    let (head, body, tail) = (&pattern[..open], &pattern[open + 1..close], &pattern[close + 1..]);
    if body.contains('{') {
        return Err(bad(pattern, "nested braces"));
    }
    let choices: Vec<String> = match body.split_once("..") {
        Some((a, b)) => {
            let (lo, hi) = match (a.parse::<u64>(), b.parse::<u64>()) {
                (Ok(lo), Ok(hi)) if lo <= hi => (lo, hi),
                _ => return Err(bad(pattern, "a range must be `{LOW..HIGH}` with LOW <= HIGH")),
            };
            // Zero padding as written: `{00000..00331}` gives five digits.
            let width = if a.starts_with('0') && a.len() > 1 { a.len() } else { 0 };
            (lo..=hi).map(|i| format!("{i:0width$}")).collect()
        }
        None => body.split(',').map(str::to_string).collect(),
    };
    let rest = expand_one(tail)?;
    Ok(choices.iter().flat_map(|c| rest.iter().map(move |r| format!("{head}{c}{r}"))).collect())
}

fn bad(pattern: &str, why: &str) -> DataError {
    DataError::Invalid(format!("shard pattern {pattern:?}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_lists_products_and_joins() {
        assert_eq!(
            expand_urls("/d/{008..011}.tar").unwrap(),
            ["/d/008.tar", "/d/009.tar", "/d/010.tar", "/d/011.tar"]
        );
        assert_eq!(
            expand_urls("{a,b}/{1..2}.tar").unwrap(),
            ["a/1.tar", "a/2.tar", "b/1.tar", "b/2.tar"]
        );
        assert_eq!(expand_urls("x.tar::y{9..10}.tar").unwrap(), ["x.tar", "y9.tar", "y10.tar"]);
        for bad in ["a{1..", "a}b", "{3..1}", "{a{b}}"] {
            let e = expand_urls(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
