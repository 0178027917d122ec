//! The lines a job's adaptation is fitted on: spread over the whole file by byte
//! offset, picked during the one pass that counts the lines, held as (cut) texts so
//! memory stays bounded however large the file.

use super::lines::{parse_line, RawLine};
use crate::engine::adapt::{spread, FULL_SAMPLE, MAX_SAMPLE};

/// Longest sampled text kept, in bytes: the engine reads at most 256 tokens of a text,
/// which fit in 4 KB unless its words are very long, so 20,000 sampled lines hold at
/// most 80 MB.
const MAX_SAMPLED_TEXT_BYTES: usize = 4096;

/// How many of `total` lines a job fits on: every line of a small job, a tenth of a
/// large one's (sampled lines are embedded twice), at most [`MAX_SAMPLE`].
pub fn sample_size(total: usize) -> usize {
    if total <= FULL_SAMPLE {
        total
    } else {
        (total / 10).clamp(FULL_SAMPLE, MAX_SAMPLE)
    }
}

/// Collects the first valid line at or after each of [`MAX_SAMPLE`] evenly spaced byte
/// offsets of a file, then thins them to [`sample_size`] once the line count is known.
/// Which lines it picks depends only on the file's bytes, so a resumed or repeated job
/// fits on the same sample.
pub struct Sampler {
    file_bytes: u64,
    /// Index of the next target offset.
    next_target: u64,
    texts: Vec<String>,
}

impl Sampler {
    /// A sampler for a file of `file_bytes` bytes.
    pub fn new(file_bytes: u64) -> Self {
        Self {
            file_bytes: file_bytes.max(1),
            next_target: 0,
            texts: Vec::new(),
        }
    }

    fn target(&self, index: u64) -> u64 {
        (u128::from(index) * u128::from(self.file_bytes) / MAX_SAMPLE as u128) as u64
    }

    /// Considers the line that starts at byte `start`.
    pub fn offer(&mut self, start: u64, line: &RawLine) {
        if self.next_target >= MAX_SAMPLE as u64 || start < self.target(self.next_target) {
            return;
        }
        let Ok(input) = parse_line(line).1 else {
            return; // the next valid line stands for this target
        };
        let mut text = input.text;
        if text.len() > MAX_SAMPLED_TEXT_BYTES {
            let mut cut = MAX_SAMPLED_TEXT_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        self.texts.push(text);
        while self.next_target < MAX_SAMPLE as u64 && self.target(self.next_target) <= start {
            self.next_target += 1;
        }
    }

    /// The sample for a file of `total` non-blank lines, in file order.
    pub fn finish(self, total: usize) -> Vec<String> {
        spread(self.texts, sample_size(total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(number: i64, text: &str) -> RawLine {
        RawLine {
            number,
            bytes: Some(serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap()),
        }
    }

    #[test]
    fn small_files_are_sampled_whole_and_bad_lines_skipped() {
        let mut sampler = Sampler::new(300);
        let mut offset = 0;
        for i in 0..10 {
            let raw = if i == 3 {
                RawLine {
                    number: i,
                    bytes: Some(b"not json".to_vec()),
                }
            } else {
                line(i, &format!("text {i}"))
            };
            sampler.offer(offset, &raw);
            offset += 30;
        }
        let texts = sampler.finish(10);
        assert_eq!(texts.len(), 9);
        assert_eq!(texts[3], "text 4");
    }

    #[test]
    fn large_files_are_sampled_evenly_and_thinned() {
        let lines = 200_000u64;
        let mut sampler = Sampler::new(lines * 100);
        for i in 0..lines {
            sampler.offer(i * 100, &line(i as i64, &format!("{i}")));
        }
        let texts = sampler.finish(lines as usize);
        assert_eq!(texts.len(), sample_size(lines as usize));
        assert_eq!(texts.len(), MAX_SAMPLE);
        // Every 10th line: spread from the start to the end of the file.
        assert_eq!(texts[0], "0");
        assert_eq!(texts[1], "10");
        assert_eq!(texts.last().unwrap(), "199990");
        let mut again = Sampler::new(lines * 100);
        for i in 0..lines {
            again.offer(i * 100, &line(i as i64, &format!("{i}")));
        }
        assert_eq!(again.finish(lines as usize), texts);
    }

    #[test]
    fn sample_sizes() {
        assert_eq!(sample_size(50), 50);
        assert_eq!(sample_size(FULL_SAMPLE), FULL_SAMPLE);
        assert_eq!(sample_size(100_000), 10_000);
        assert_eq!(sample_size(5_000), FULL_SAMPLE);
        assert_eq!(sample_size(10_000_000), MAX_SAMPLE);
    }
}
