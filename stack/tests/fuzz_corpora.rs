//! Every file of every fuzz corpus (`fuzz/corpus/TARGET/*`) through its target body, so
//! `cargo test` replays the checked-in seeds and whatever `cargo fuzz` added locally.
//!
//! Regenerate the checked-in seeds (`seed-*` files) from `fourtuple_stack::fuzzing::seeds`:
//!
//! ```sh
//! cargo test -p fourtuple-stack --test fuzz_corpora -- --ignored regenerate_seed_corpora
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use fourtuple_stack::fuzzing;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Runs every file of one corpus; a failure names the file, so it can be replayed with
/// `cargo fuzz run TARGET FILE`.
fn replay(target: &str) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let seeds = files
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
        })
        .count();
    assert!(seeds >= 8, "{}: only {seeds} seed files", dir.display());
    for f in &files {
        let data = fs::read(f).expect("read corpus file");
        let outcome = std::panic::catch_unwind(|| fuzzing::run(target, &data));
        if let Err(e) = outcome {
            panic!(
                "fuzz target {target} fails on {}: {}",
                f.display(),
                e.downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| e.downcast_ref::<&str>().copied())
                    .unwrap_or("(panic)")
            );
        }
    }
}

#[test]
fn corpus_packet() {
    replay("packet");
}

#[test]
fn corpus_segments() {
    replay("segments");
}

#[test]
fn corpus_time_wait() {
    replay("time_wait");
}

#[test]
fn corpus_pair() {
    replay("pair");
}

/// The generated seeds also pass as they are generated (the files may lag behind).
#[test]
fn generated_seeds_pass() {
    for target in fuzzing::TARGETS {
        for (name, data) in fuzzing::seeds(target) {
            let outcome = std::panic::catch_unwind(|| fuzzing::run(target, &data));
            assert!(outcome.is_ok(), "seed {target}/{name} fails");
        }
    }
}

/// Rewrites `fuzz/corpus/TARGET/seed-*` from `fourtuple_stack::fuzzing::seeds`; leaves
/// other corpus files alone.
#[test]
#[ignore = "writes files: run it to regenerate the seed corpora"]
fn regenerate_seed_corpora() {
    for target in fuzzing::TARGETS {
        let dir = corpus_dir(target);
        fs::create_dir_all(&dir).expect("create corpus directory");
        for entry in fs::read_dir(&dir).expect("read corpus directory") {
            let p = entry.expect("directory entry").path();
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
            {
                fs::remove_file(&p).expect("remove old seed");
            }
        }
        for (name, data) in fuzzing::seeds(target) {
            fs::write(dir.join(format!("seed-{name}")), data).expect("write seed");
        }
    }
}
