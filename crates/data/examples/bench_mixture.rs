//! `cargo run --release -p crossfeed-data --example bench_mixture -- [path] [target_mb]`
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = std::path::PathBuf::from(args.get(1).cloned().unwrap_or_else(|| "/tmp/crossfeed-bench-bookcorpus.parquet".into()));
    let mb: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    match crossfeed_data::bench_mixture(&path, mb) {
        Ok(r) => print!("{r}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
