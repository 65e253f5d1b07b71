//! Benchmark (not a test): build a 12,500-sample mixture whose public part is sampled from a large
//! BookCorpus-schema parquet file, reporting seconds and peak memory.
//! Run: `cargo run --release -p crossfeed-data --example bench_mixture -- [path] [target_mb]`.

use crate::error::{DataError, Result};
use crate::example::Example;
use crate::fixtures::str_col;
use crate::mixture::{sample_mixture, MixtureConfig, SyntheticSample};
use crate::passages::{sample_passages, whitespace_tokens, ParquetCorpus, PassageConfig};
use crate::rng::Stream;
use std::path::Path;
use std::time::Instant;

/// Peak resident memory of this process (VmHWM), in MiB, where /proc is available.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Write a BookCorpus-schema file (`text: string`, row groups of 1M rows) of about `target_mb`
/// MB of text, one generated sentence per row. Written batch by batch (bounded memory).
pub fn generate_bookcorpus(path: &Path, target_mb: usize) -> Result<u64> {
    use arrow_array::RecordBatch;
    use arrow_schema::{DataType, Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;
    use std::sync::Arc;
    let words: Vec<&str> = "the a he she they it was had said looked at into door room light dark night morning hand eyes face voice back away down up just then again never always old young little long small good little man woman girl boy father mother house car road window water fire".split(' ').collect();
    let schema = Arc::new(Schema::new(vec![Field::new("text", DataType::Utf8, true)]));
    let file = std::fs::File::create(path).map_err(|e| DataError::io(path, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(1 << 20))
        .build();
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|e| DataError::parquet(path, e))?;
    let mut rng = Stream::new(0, "bench-corpus", 0, 0);
    let target = target_mb as u64 * 1_000_000;
    let (mut bytes, mut rows) = (0u64, 0u64);
    while bytes < target {
        let batch: Vec<String> = (0..65_536)
            .map(|_| {
                let n = 4 + rng.below(20) as usize;
                let mut s = String::with_capacity(n * 6);
                for i in 0..n {
                    if i > 0 {
                        s.push(' ');
                    }
                    s.push_str(words[rng.below(words.len() as u64) as usize]);
                }
                s.push_str(" .");
                s
            })
            .collect();
        bytes += batch.iter().map(|s| s.len() as u64).sum::<u64>();
        rows += batch.len() as u64;
        let rb = RecordBatch::try_new(schema.clone(), vec![str_col(&batch)]).map_err(|e| DataError::parquet(path, e))?;
        w.write(&rb).map_err(|e| DataError::parquet(path, e))?;
    }
    w.close().map_err(|e| DataError::parquet(path, e))?;
    Ok(rows)
}

/// Sample 12,500 public passages (128 words each) from `path` (generated first, ~`target_mb` MB of
/// text, when it does not exist), then build generation-1 mixtures (alpha = beta = 0.5, K = 2) with
/// 12,500 samples. Returns a human-readable report.
pub fn bench_mixture(path: &Path, target_mb: usize) -> Result<String> {
    let mut report = String::new();
    if !path.exists() {
        let t = Instant::now();
        let rows = generate_bookcorpus(path, target_mb)?;
        report += &format!("generated {} ({rows} rows, {:.0} MB on disk) in {:.1}s\n", path.display(), std::fs::metadata(path).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0), t.elapsed().as_secs_f64());
    }
    let rss0 = peak_rss_mib();
    let t = Instant::now();
    let mut corpus = ParquetCorpus::open(&[path.to_path_buf()])?;
    let total = crate::passages::SentenceSource::total_rows(&corpus);
    let set = sample_passages(&mut corpus, &PassageConfig::default(), 12_500, 500, 0, &whitespace_tokens)?;
    let t_pass = t.elapsed().as_secs_f64();
    let public: Vec<Example> = set.train.into_iter().map(|(_, s)| Example::new("", s)).collect();
    let private: Vec<Example> = (0..7_000).map(|i| Example::new(format!("Question: q{i}?\nAnswer:"), format!(" a{i}"))).collect();
    let pool: Vec<SyntheticSample> = (0..2)
        .flat_map(|e| (0..3125u64).map(move |i| SyntheticSample { entity: e, generation: 0, index: i, text: format!("synthetic text {e} {i}") }))
        .collect();
    let t2 = Instant::now();
    let cfg = MixtureConfig::default();
    let mut n = 0;
    for e in 0..2 {
        n += sample_mixture(&cfg, 1, 1, e, 2, &private, &public, &pool)?.samples.len();
    }
    let t_mix = t2.elapsed().as_secs_f64();
    report += &format!(
        "corpus rows {total}; sampled 12,500 + 500 passages in {t_pass:.2}s; two 12,500-sample mixtures ({n} samples) in {t_mix:.3}s; total {:.2}s; peak RSS {:.0} MiB (before sampling {:.0} MiB)\n",
        t.elapsed().as_secs_f64(),
        peak_rss_mib().unwrap_or(f64::NAN),
        rss0.unwrap_or(f64::NAN)
    );
    Ok(report)
}
