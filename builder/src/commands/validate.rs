//! `berth validate`: read, merge and check definitions; build nothing.

use anyhow::Result;

/// Checks `files` as `berth build` would read them.
pub fn run(files: &[String]) -> Result<()> {
    super::load(files)?;
    println!("{}: valid", files.join(", "));
    Ok(())
}
