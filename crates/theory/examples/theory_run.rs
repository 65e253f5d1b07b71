//! Stand-alone driver until the CLI wires `crossfeed theory` / `crossfeed bench theory`:
//! `cargo run --release -p crossfeed-theory --example theory_run -- [bench] [--config F] [--out DIR] [k=v ...]`
fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let mut config = None;
    let mut out = std::path::PathBuf::from("runs/theory");
    let mut sets = Vec::new();
    let mut bench = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "bench" => bench = true,
            "--config" => config = args.next().map(std::path::PathBuf::from),
            "--out" => out = args.next().map(std::path::PathBuf::from).unwrap_or(out),
            _ => sets.push(a),
        }
    }
    let res = if bench { crossfeed_theory::bench_heatmap() } else { crossfeed_theory::run_cli(config.as_deref(), &sets, &out) };
    match res {
        Ok(text) => println!("{text}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}
