//! The survey, a job's first pass under the job-level lease: one streaming read of the
//! input that counts its lines, samples them for adaptation and cuts the shards, then
//! the adaptation fitted on the sample; all stored together before any line is scored.

use std::sync::Arc;

use tokio::io::BufReader;

use super::chunk::next_line;
use super::{scoring_stopped, Held, JobError, Worker, READ_BUFFER};
use crate::batch::lines::LineReader;
use crate::batch::sample::Sampler;
use crate::db::batch::{JobRow, Lease, NewShard, Survey};
use crate::engine::{AdaptationReport, Adapted, AdaptedLabels, Engine, LabelVectors, Spec};

impl Worker {
    /// The survey: label vectors, one streaming pass that counts the lines, samples
    /// them (when the spec asks for adaptation) and cuts the shards, the adaptation
    /// fitted on the sample; all stored together before any line is scored.
    pub(super) async fn survey(&self, engine: &Arc<Engine>, job: &JobRow) -> Result<(), JobError> {
        let spec = job_spec(job)?;
        let labels = label_vectors(engine, &spec).await?;
        let size = self.checked_input_size(job).await?;
        let sampler = spec.adapt.then(|| Sampler::new(size));
        let (total, sample, shards) = self.read_through(job, sampler).await?;
        if total == 0 {
            return Err(JobError::Fatal("the input has no lines".to_string()));
        }
        let adapted = match sample {
            None => Adapted {
                report: AdaptationReport::off(),
                labels: None,
            },
            Some(sample) => {
                let engine = engine.clone();
                let anchored = spec.labels.has_examples();
                let fitting =
                    tokio::task::spawn_blocking(move || engine.adapt(&sample, &labels, anchored));
                self.renewing_lease(Held::Job(&job.id), fitting)
                    .await?
                    .map_err(|err| JobError::Inference(err.to_string()))?
            }
        };
        let adapted = self.or_saved_adaptation(job, adapted).await?;
        let report = serde_json::to_string(&adapted.report).expect("serialisable");
        let stored = adapted
            .labels
            .as_ref()
            .map(|labels| serde_json::to_string(labels).expect("serialisable"));
        let shard_count = shards.len();
        let survey = Survey {
            requests: total,
            adaptation: &report,
            adapted_labels: stored.as_deref(),
            shards,
        };
        if !self.db.set_survey(&job.id, &self.owner, &survey).await? {
            return Err(JobError::LeaseLost);
        }
        tracing::info!(job = %job.id, adaptation = %report, shards = shard_count, "batch job surveyed");
        Ok(())
    }

    /// `adapted`, or where the job's own adaptation did not apply (off, or refused by
    /// the guard rails) and its pinned classifier version is adapted, that version's
    /// adaptation (fitted on more texts than a small job has), the report saying so.
    async fn or_saved_adaptation(
        &self,
        job: &JobRow,
        adapted: Adapted,
    ) -> Result<Adapted, JobError> {
        let (Some(name), Some(version)) = (&job.classifier_name, job.classifier_version) else {
            return Ok(adapted);
        };
        if adapted.labels.is_some() {
            return Ok(adapted);
        }
        let Some(saved) = self
            .db
            .classifier_adapted_labels(&job.account_id, name, version)
            .await?
        else {
            return Ok(adapted);
        };
        let labels: AdaptedLabels = serde_json::from_str(&saved).map_err(|err| {
            JobError::Fatal(format!(
                "the classifier's adapted label vectors are unreadable: {err}"
            ))
        })?;
        let mut report = adapted.report;
        report.reason = Some(format!(
            "{}; scored with the adaptation saved in {name}@v{version}",
            report.reason.as_deref().unwrap_or("not adapted")
        ));
        Ok(Adapted {
            report,
            labels: Some(labels),
        })
    }

    /// The input's size, refusing a file replaced after the job started (the upload
    /// form stays valid after start).
    pub(super) async fn checked_input_size(&self, job: &JobRow) -> Result<u64, JobError> {
        let size = self.storage.size(&job.input_key).await?;
        if size != job.input_bytes.map(|bytes| bytes as u64) {
            return Err(JobError::Fatal(
                "the input file changed after the job started; upload it again and restart the job"
                    .to_string(),
            ));
        }
        Ok(size.unwrap_or(0))
    }

    /// One streaming pass over the input (renewing the lease): counts its non-blank
    /// lines, cuts shards of about `shard_bytes` after a line and, given a sampler,
    /// picks the lines adaptation is fitted on.
    pub(super) async fn read_through(
        &self,
        job: &JobRow,
        mut sampler: Option<Sampler>,
    ) -> Result<(i64, Option<Vec<String>>, Vec<NewShard>), JobError> {
        let input = self.storage.read_from(&job.input_key, 0).await?;
        let mut reader = LineReader::new(BufReader::with_capacity(READ_BUFFER, input), 0, 0);
        let mut cuts = ShardCuts::new(self.shard_bytes);
        let mut total = 0i64;
        let mut last_beat = std::time::Instant::now();
        loop {
            let start = reader.offset;
            let Some(line) = next_line(&mut reader).await? else {
                break;
            };
            total += 1;
            if let Some(sampler) = sampler.as_mut() {
                sampler.offer(start, &line);
            }
            cuts.after_line(reader.offset, reader.line);
            if self.stopping.is_cancelled() {
                return Err(JobError::Stopping);
            }
            if last_beat.elapsed() > self.lease / 4 {
                if self.renew(Held::Job(&job.id)).await? == Lease::CancelAsked {
                    return Err(JobError::CancelAsked);
                }
                last_beat = std::time::Instant::now();
            }
        }
        let shards = cuts.finish(reader.offset);
        Ok((total, sampler.map(|s| s.finish(total as usize)), shards))
    }
}

/// Where the survey cuts shards: after the first line that brings a shard to
/// `shard_bytes` or more, so that every shard but the last holds at least that much.
pub(super) struct ShardCuts {
    shard_bytes: u64,
    shards: Vec<NewShard>,
    /// Where the shard being measured begins, and the number of the line before it.
    start: (u64, i64),
}

impl ShardCuts {
    fn new(shard_bytes: u64) -> Self {
        Self {
            shard_bytes: shard_bytes.max(1),
            shards: Vec::new(),
            start: (0, 0),
        }
    }

    /// A line ended at `offset`, numbered `line`.
    fn after_line(&mut self, offset: u64, line: i64) {
        if offset - self.start.0 >= self.shard_bytes {
            self.cut(offset, line);
        }
    }

    fn cut(&mut self, offset: u64, line: i64) {
        let (start_offset, start_line) = self.start;
        self.shards.push(NewShard {
            start_offset: start_offset as i64,
            end_offset: offset as i64,
            start_line,
        });
        self.start = (offset, line);
    }

    /// The shards, the last one ending at `end` (the input's end).
    fn finish(mut self, end: u64) -> Vec<NewShard> {
        if end > self.start.0 || self.shards.is_empty() {
            self.cut(end, 0);
        }
        self.shards
    }
}

/// The job's spec, as validated at creation.
pub(super) fn job_spec(job: &JobRow) -> Result<Spec, JobError> {
    serde_json::from_str(&job.spec)
        .map_err(|err| JobError::Fatal(format!("stored job spec is unreadable: {err}")))
}

/// The spec's label vectors, computed off the async threads.
pub(super) async fn label_vectors(
    engine: &Arc<Engine>,
    spec: &Spec,
) -> Result<LabelVectors, JobError> {
    let (engine, set) = (engine.clone(), spec.labels.clone());
    tokio::task::spawn_blocking(move || engine.label_vectors(&set))
        .await
        .map_err(scoring_stopped)?
        .map_err(|err| JobError::Inference(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines of `lengths` bytes (newline included), as the survey sees them.
    fn cut(shard_bytes: u64, lengths: &[u64]) -> Vec<NewShard> {
        let mut cuts = ShardCuts::new(shard_bytes);
        let mut offset = 0;
        for (number, length) in lengths.iter().enumerate() {
            offset += length;
            cuts.after_line(offset, number as i64 + 1);
        }
        cuts.finish(offset)
    }

    fn shard(start_offset: i64, end_offset: i64, start_line: i64) -> NewShard {
        NewShard {
            start_offset,
            end_offset,
            start_line,
        }
    }

    #[test]
    fn shards_end_after_the_line_that_fills_them() {
        assert_eq!(
            cut(10, &[4, 4, 4, 4, 4, 4, 4]),
            [shard(0, 12, 0), shard(12, 24, 3), shard(24, 28, 6)]
        );
    }

    #[test]
    fn a_cut_at_the_end_leaves_no_empty_shard() {
        assert_eq!(cut(8, &[4, 4, 4, 4]), [shard(0, 8, 0), shard(8, 16, 2)]);
    }

    #[test]
    fn a_line_longer_than_a_shard_is_a_shard_of_its_own() {
        assert_eq!(cut(10, &[3, 25, 3]), [shard(0, 28, 0), shard(28, 31, 2)]);
    }

    #[test]
    fn a_small_input_is_one_shard() {
        assert_eq!(cut(1 << 20, &[5, 5]), [shard(0, 10, 0)]);
        assert_eq!(cut(1 << 20, &[]), [shard(0, 0, 0)]);
    }
}
