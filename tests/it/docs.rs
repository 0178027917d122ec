//! The documents' links hold: every relative link in `README.md`, `ARCHITECTURE.md`,
//! `CONTRIBUTING.md` and `docs/*.md` reaches an existing file and, with an anchor, a
//! heading of that file; every page-and-anchor reference in the sources (`src/`,
//! `scripts/`, `benches/`, `tests/`, `.ci/`) does too; and no comment names a README
//! section by its title unless the README has that heading. Anchors are GitHub's.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The top-level documents and every page under `docs/`.
fn documents() -> Vec<PathBuf> {
    let root = root();
    let mut files: Vec<PathBuf> = ["README.md", "ARCHITECTURE.md", "CONTRIBUTING.md"]
        .iter()
        .map(|name| root.join(name))
        .collect();
    let mut pages: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("a docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    files.extend(pages);
    files
}

/// A path relative to the repository's root, for messages.
fn shown(path: &Path) -> String {
    let root = root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// GitHub's anchor for a heading's text: lowercased, spaces as `-`, every character
/// but letters, digits, `-` and `_` dropped (backticks and other punctuation too).
fn slug(heading: &str) -> String {
    let mut out = String::new();
    for c in link_texts(heading).trim().chars() {
        if c.is_alphanumeric() || c == '-' || c == '_' {
            out.extend(c.to_lowercase());
        } else if c == ' ' {
            out.push('-');
        }
    }
    out
}

/// `[text](target)` written as its text, as GitHub renders a heading before its slug.
fn link_texts(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find("](") {
        let Some(len) = destination_len(&rest[start + 2..]) else {
            break;
        };
        out.push_str(&rest[..start].replacen('[', "", 1));
        rest = &rest[start + 2 + len + 1..];
    }
    out.push_str(rest);
    out
}

/// Lines outside fenced code blocks, numbered from 1.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
        } else if !fenced {
            lines.push((index + 1, line));
        }
    }
    lines
}

/// The anchors of a Markdown file's headings, duplicates numbered as GitHub does.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (_, line) in prose(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..]);
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// The length of a link destination up to its closing parenthesis (nested pairs
/// allowed), or None when it does not close on this line.
fn destination_len(after_paren: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (index, c) in after_paren.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return Some(index),
            ')' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// A line with its inline code spans blanked out, so `[a](b)` written as code is not a
/// link.
fn without_code(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
            out.push(' ');
        } else {
            out.push(if in_code { ' ' } else { c });
        }
    }
    out
}

/// Every link destination of a Markdown file: inline links and images, and reference
/// definitions (`[name]: target`), with their line numbers.
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let mut targets = Vec::new();
    for (number, line) in prose(text) {
        let line = without_code(line);
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            if let Some(end) = trimmed.find("]: ") {
                if let Some(target) = trimmed[end + 3..].split_whitespace().next() {
                    targets.push((number, target.to_string()));
                }
            }
        }
        let mut rest = line.as_str();
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(len) = destination_len(after) else {
                break;
            };
            let target = after[..len].split_whitespace().next().unwrap_or("");
            targets.push((number, target.trim_matches(['<', '>']).to_string()));
            rest = &after[len..];
        }
    }
    targets
}

/// Why `target`, written in `from`, does not resolve; None when it does.
fn broken(from: &Path, target: &str) -> Option<String> {
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        from.to_path_buf()
    } else {
        from.parent().expect("a file's folder").join(path)
    };
    if !file.exists() {
        return Some(format!("{} does not exist", shown(&file)));
    }
    let anchor = anchor.filter(|anchor| !anchor.is_empty())?;
    if file.extension().is_none_or(|ext| ext != "md") {
        return None;
    }
    let text = fs::read_to_string(&file).expect("a Markdown file reads");
    if anchors(&text).contains(anchor) {
        None
    } else {
        Some(format!("{} has no heading #{anchor}", shown(&file)))
    }
}

fn is_external(target: &str) -> bool {
    target.is_empty()
        || ["http://", "https://", "mailto:", "ftp://"]
            .iter()
            .any(|scheme| target.starts_with(scheme))
}

#[test]
fn document_links_resolve() {
    let mut problems = Vec::new();
    for document in documents() {
        let text = fs::read_to_string(&document)
            .unwrap_or_else(|err| panic!("{}: {err}", shown(&document)));
        for (line, target) in link_targets(&text) {
            if is_external(&target) {
                continue;
            }
            if let Some(why) = broken(&document, &target) {
                problems.push(format!("{}:{line}: ({target}): {why}", shown(&document)));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken links in the documents:\n{}",
        problems.join("\n")
    );
}

/// Every text file under the folders whose comments may point at the documents, but
/// this one (whose comments describe the forms it looks for).
fn source_files() -> Vec<PathBuf> {
    let root = root();
    let itself = root.join("tests").join("it").join("docs.rs");
    let mut files = Vec::new();
    let mut folders: Vec<PathBuf> = ["src", "scripts", "benches", "tests", ".ci"]
        .iter()
        .map(|name| root.join(name))
        .filter(|path| path.is_dir())
        .collect();
    while let Some(folder) = folders.pop() {
        for entry in fs::read_dir(&folder).expect("a source folder reads") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                folders.push(path);
            } else if path != itself {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A source file as one line of prose per line, comment markers (`//!`, `///`, `//`,
/// `#`, `*`) and indentation dropped, joined by spaces, with where each line starts.
fn flattened(text: &str) -> (String, Vec<usize>) {
    let mut flat = String::new();
    let mut starts = Vec::new();
    for line in text.lines() {
        let mut line = line.trim_start();
        for marker in ["//!", "///", "//", "#", "*"] {
            if let Some(rest) = line.strip_prefix(marker) {
                line = rest.trim_start();
                break;
            }
        }
        starts.push(flat.len());
        flat.push_str(line);
        flat.push(' ');
    }
    (flat, starts)
}

fn line_at(starts: &[usize], offset: usize) -> usize {
    starts.partition_point(|&start| start <= offset)
}

/// `docs/NAME.md`, `README.md`, `ARCHITECTURE.md` or `CONTRIBUTING.md`, with an
/// optional `#anchor`, at each place one starts in `flat`.
fn page_references(flat: &str) -> Vec<(usize, String)> {
    let is_path = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/');
    let is_anchor = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-');
    let mut found = Vec::new();
    for name in ["docs/", "README.md", "ARCHITECTURE.md", "CONTRIBUTING.md"] {
        for (offset, _) in flat.match_indices(name) {
            let before = flat[..offset].chars().next_back();
            if before.is_some_and(is_path) {
                continue;
            }
            let path_len = flat[offset..]
                .find(|c: char| !is_path(c))
                .unwrap_or(flat.len() - offset);
            let path = flat[offset..offset + path_len].trim_end_matches('.');
            if !path.ends_with(".md") {
                continue;
            }
            let mut reference = path.to_string();
            let after = &flat[offset + path.len()..];
            if let Some(anchor) = after.strip_prefix('#') {
                let len = anchor.find(|c: char| !is_anchor(c)).unwrap_or(anchor.len());
                reference.push('#');
                reference.push_str(&anchor[..len]);
            }
            found.push((offset, reference));
        }
    }
    found
}

/// The old form, `README, "Section"` or `README "Section"`: each title with its offset.
fn readme_titles(flat: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (offset, _) in flat.match_indices("README") {
        let rest = flat[offset + "README".len()..].trim_start_matches([',', ' ']);
        let Some(quoted) = rest.strip_prefix('"') else {
            continue;
        };
        if let Some(end) = quoted.find('"') {
            let title = quoted[..end]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            found.push((offset, title));
        }
    }
    found
}

#[test]
fn source_references_resolve() {
    let root = root();
    let readme = fs::read_to_string(root.join("README.md")).expect("README.md reads");
    let readme_headings: BTreeSet<String> = prose(&readme)
        .into_iter()
        .filter_map(|(_, line)| {
            let hashes = line.chars().take_while(|&c| c == '#').count();
            (1..=6)
                .contains(&hashes)
                .then(|| line[hashes..].trim().to_string())
        })
        .collect();
    let mut problems = Vec::new();
    for file in source_files() {
        let Ok(text) = fs::read_to_string(&file) else {
            continue; // not text (a picture)
        };
        let (flat, starts) = flattened(&text);
        for (offset, reference) in page_references(&flat) {
            if let Some(why) = broken(&root.join("README.md"), &reference) {
                let line = line_at(&starts, offset);
                problems.push(format!("{}:{line}: {reference}: {why}", shown(&file)));
            }
        }
        for (offset, title) in readme_titles(&flat) {
            if !readme_headings.contains(&title) {
                let line = line_at(&starts, offset);
                problems.push(format!(
                    "{}:{line}: README, \"{title}\": the README has no such section; name the page and anchor that hold it (docs/NAME.md#anchor)",
                    shown(&file)
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "references in the sources that do not resolve:\n{}",
        problems.join("\n")
    );
}

#[test]
fn anchors_are_githubs() {
    assert_eq!(
        slug(" Safe retries (`Idempotency-Key`)"),
        "safe-retries-idempotency-key"
    );
    assert_eq!(
        slug(" Browsers on other origins (`--cors-origin`)"),
        "browsers-on-other-origins---cors-origin"
    );
    assert_eq!(
        slug(" nomic-embed-text-v1.5 (opt-in)"),
        "nomic-embed-text-v15-opt-in"
    );
    assert_eq!(slug(" A [linked](x.md) title"), "a-linked-title");
    assert_eq!(
        anchors("# A\n```\n# not a heading\n```\n## A\n"),
        BTreeSet::from(["a".to_string(), "a-1".to_string()])
    );
    let flat = "see docs/api.md#batch-jobs. And README.md, and README, \"Soak test\".";
    let references: Vec<String> = page_references(flat).into_iter().map(|(_, r)| r).collect();
    assert_eq!(references, ["docs/api.md#batch-jobs", "README.md"]);
    assert_eq!(readme_titles(flat)[0].1, "Soak test");
}
