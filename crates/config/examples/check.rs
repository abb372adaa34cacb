//! Validates configuration files: `cargo run -p rampart-config --example check -- FILE...`.
fn main() {
    let mut failed = false;
    for arg in std::env::args_os().skip(1) {
        match rampart_config::load(std::path::Path::new(&arg)) {
            Ok(config) => {
                for w in config.pools.iter().flat_map(|p| &p.warnings) {
                    eprintln!("warning: {w}");
                }
                println!(
                    "{}: ok, {} pool(s)",
                    arg.to_string_lossy(),
                    config.pools.len()
                )
            }
            Err(err) => {
                failed = true;
                eprintln!("{err}");
            }
        }
    }
    std::process::exit(i32::from(failed));
}
