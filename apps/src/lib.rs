//! The `fourtuple` command-line tool.

/// Runs the CLI and returns the process exit code.
pub fn main_entry() -> i32 {
    0
}
