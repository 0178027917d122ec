//! The compose planner: how the byte ranges of the sources become the parts of one
//! multipart upload, within S3's part limits. Pure: the adapter carries the plan out.

use crate::storage::StorageError;

/// Smallest part S3 accepts in a multipart upload, but for the last one.
pub const MIN_PART_BYTES: usize = 5 * 1024 * 1024;
/// Largest part S3 accepts, uploaded or copied.
const MAX_PART_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// Most parts of one multipart upload.
const MAX_PARTS: usize = 10_000;

/// One step of composing an object from sources, see [`plan_compose`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ComposeStep {
    /// The store copies bytes `[start, end)` of source `source` as the next part.
    Copy { source: usize, start: u64, end: u64 },
    /// Bytes `[start, end)` of source `source` are read onto the buffer.
    Buffer { source: usize, start: u64, end: u64 },
    /// The buffer is uploaded as the next part and emptied.
    Upload,
}

/// The plan for composing `dest` from sources of `sizes` bytes with S3's part limits;
/// an error when it would take more parts than one upload may have.
pub(super) fn plan(sizes: &[u64], dest: &str) -> Result<Vec<ComposeStep>, StorageError> {
    let steps = plan_compose(sizes, MIN_PART_BYTES as u64, MAX_PART_BYTES);
    let parts = steps
        .iter()
        .filter(|step| !matches!(step, ComposeStep::Buffer { .. }))
        .count();
    if parts > MAX_PARTS {
        return Err(StorageError::Backend(format!(
            "composing {dest:?} takes {parts} parts, more than S3's {MAX_PARTS}"
        )));
    }
    Ok(steps)
}

/// The parts of the concatenation of sources of `sizes` bytes, every one but the last
/// of at least `min` bytes and none over `max` (`max >= 2 * min`), with as few bytes
/// as possible through this service. Going through the sources in order, skipping
/// empty ones, a piece (a source, or what is left of it):
/// - with nothing buffered, is copied by the store when it is at least `min` bytes or
///   the last piece, in even parts of at most `max` bytes (so each is over `max / 2`);
/// - with something buffered, when it is at least `min` bytes, first tops the buffer
///   up to `min` bytes from its head, uploaded as a part, and its rest follows these
///   same rules;
/// - otherwise is read onto the buffer, which is uploaded as a part once it holds at
///   least `min` bytes (less than `2 * min`), and at the end.
fn plan_compose(sizes: &[u64], min: u64, max: u64) -> Vec<ComposeStep> {
    let last = sizes.iter().rposition(|&size| size > 0);
    let mut steps = Vec::new();
    let mut buffered = 0;
    for (source, &size) in sizes.iter().enumerate().filter(|&(_, &size)| size > 0) {
        let mut start = 0;
        if buffered > 0 && size >= min {
            start = min - buffered;
            steps.push(ComposeStep::Buffer {
                source,
                start: 0,
                end: start,
            });
            steps.push(ComposeStep::Upload);
            buffered = 0;
        }
        let rest = size - start;
        if buffered == 0 && (rest >= min || Some(source) == last) {
            let parts = rest.div_ceil(max);
            steps.extend((0..parts).map(|part| ComposeStep::Copy {
                source,
                start: start + rest * part / parts,
                end: start + rest * (part + 1) / parts,
            }));
        } else {
            steps.push(ComposeStep::Buffer {
                source,
                start,
                end: size,
            });
            buffered += rest;
            if buffered >= min {
                steps.push(ComposeStep::Upload);
                buffered = 0;
            }
        }
    }
    if buffered > 0 {
        steps.push(ComposeStep::Upload);
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    use ComposeStep::{Buffer, Copy, Upload};

    /// Checks `steps` against S3's rules and `sizes`: every part but the last at least
    /// `min` and none over `max`, no copy while bytes are buffered, and the ranges
    /// cover every source in order. Returns the bytes buffered.
    fn check_plan(sizes: &[u64], steps: &[ComposeStep], min: u64, max: u64) -> u64 {
        let mut parts = Vec::new();
        let mut pending = 0;
        let mut buffered = 0;
        let mut covered = Vec::new();
        for step in steps {
            match *step {
                Copy { source, start, end } => {
                    assert_eq!(pending, 0, "copy while buffered: {steps:?}");
                    parts.push(end - start);
                    covered.push((source, start, end));
                }
                Buffer { source, start, end } => {
                    pending += end - start;
                    buffered += end - start;
                    covered.push((source, start, end));
                }
                Upload => {
                    assert!(pending > 0, "empty upload: {steps:?}");
                    parts.push(std::mem::take(&mut pending));
                }
            }
        }
        assert_eq!(pending, 0, "buffer left over: {steps:?}");
        for (i, &part) in parts.iter().enumerate() {
            assert!(part <= max, "part {i} of {part} bytes: {sizes:?} {steps:?}");
            assert!(
                part >= min || i + 1 == parts.len(),
                "part {i} of {part} bytes: {sizes:?} {steps:?}"
            );
        }
        let mut expected = Vec::new();
        for (source, &size) in sizes.iter().enumerate() {
            if size > 0 {
                expected.push((source, 0, size));
            }
        }
        let mut merged: Vec<(usize, u64, u64)> = Vec::new();
        for (source, start, end) in covered {
            match merged.last_mut() {
                Some(last) if last.0 == source && last.2 == start => last.2 = end,
                _ => merged.push((source, start, end)),
            }
        }
        assert_eq!(merged, expected, "coverage of {sizes:?}: {steps:?}");
        buffered
    }

    #[test]
    fn plans_compose_with_copies_where_parts_can_be() {
        let plan = |sizes: &[u64]| {
            let steps = plan_compose(sizes, 5, 20);
            check_plan(sizes, &steps, 5, 20);
            steps
        };
        assert_eq!(plan(&[]), []);
        assert_eq!(plan(&[0, 0]), []);
        // A lone piece is copied whatever its size: the last part may be small.
        assert_eq!(
            plan(&[3]),
            [Copy {
                source: 0,
                start: 0,
                end: 3
            }]
        );
        assert_eq!(
            plan(&[6, 0, 7]),
            [
                Copy {
                    source: 0,
                    start: 0,
                    end: 6
                },
                Copy {
                    source: 2,
                    start: 0,
                    end: 7
                },
            ]
        );
        assert_eq!(
            plan(&[1, 1, 1]),
            [
                Buffer {
                    source: 0,
                    start: 0,
                    end: 1
                },
                Buffer {
                    source: 1,
                    start: 0,
                    end: 1
                },
                Buffer {
                    source: 2,
                    start: 0,
                    end: 1
                },
                Upload,
            ]
        );
        assert_eq!(
            plan(&[3, 3, 3]),
            [
                Buffer {
                    source: 0,
                    start: 0,
                    end: 3
                },
                Buffer {
                    source: 1,
                    start: 0,
                    end: 3
                },
                Upload,
                Copy {
                    source: 2,
                    start: 0,
                    end: 3
                },
            ]
        );
        // A big piece tops the buffer up, then its rest is copied if it can be a part
        // (or is last) and buffered if not.
        assert_eq!(
            plan(&[1, 12, 1, 0, 6]),
            [
                Buffer {
                    source: 0,
                    start: 0,
                    end: 1
                },
                Buffer {
                    source: 1,
                    start: 0,
                    end: 4
                },
                Upload,
                Copy {
                    source: 1,
                    start: 4,
                    end: 12
                },
                Buffer {
                    source: 2,
                    start: 0,
                    end: 1
                },
                Buffer {
                    source: 4,
                    start: 0,
                    end: 4
                },
                Upload,
                Copy {
                    source: 4,
                    start: 4,
                    end: 6
                },
            ]
        );
        assert_eq!(
            plan(&[4, 5, 1]),
            [
                Buffer {
                    source: 0,
                    start: 0,
                    end: 4
                },
                Buffer {
                    source: 1,
                    start: 0,
                    end: 1
                },
                Upload,
                Buffer {
                    source: 1,
                    start: 1,
                    end: 5
                },
                Buffer {
                    source: 2,
                    start: 0,
                    end: 1
                },
                Upload,
            ]
        );
        // Over the largest part: even parts.
        assert_eq!(
            plan(&[45]),
            [
                Copy {
                    source: 0,
                    start: 0,
                    end: 15
                },
                Copy {
                    source: 0,
                    start: 15,
                    end: 30
                },
                Copy {
                    source: 0,
                    start: 30,
                    end: 45
                },
            ]
        );
    }

    #[test]
    fn compose_plans_keep_s3_rules_for_any_sizes() {
        // A fixed pseudo-random walk over size mixes, real part limits included.
        let (min, max) = (MIN_PART_BYTES as u64, MAX_PART_BYTES);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let scales = [0, 1, min / 3, min - 1, min, min + 1, 2 * min, max, 3 * max];
        for _ in 0..5000 {
            let count = (next() % 8) as usize;
            let sizes: Vec<u64> = (0..count)
                .map(|_| {
                    let scale = scales[(next() % scales.len() as u64) as usize];
                    scale.saturating_add(next() % 3).saturating_sub(next() % 3)
                })
                .collect();
            let steps = plan_compose(&sizes, min, max);
            let buffered = check_plan(&sizes, &steps, min, max);
            // Through the service: at most a top-up and a small rest (each under
            // `min`) of each source.
            let sources = sizes.iter().filter(|&&size| size > 0).count() as u64;
            assert!(
                buffered <= 2 * min * sources,
                "{sizes:?} buffered {buffered}"
            );
        }
    }
}
