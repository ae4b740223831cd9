//! `berth serve DIR`: the artifacts of a build directory over HTTP, with
//! the iPXE boot scripts generated from them; the server is `crates/serve`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct ServeArgs {
    /// The build directory: artifacts at its top level, per-machine overrides under machines/MAC/.
    pub dir: PathBuf,
    /// Listen on this address (HOST:PORT; port 0 picks a free one).
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR")]
    pub addr: String,
    /// The build /boot.ipxe boots when DIR holds several (default: the only one).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let served = serve::Served::from_dir(&args.dir)?;
    let options = serve::Options {
        build: args.name,
        ..serve::Options::default()
    };
    let server = serve::Server::bind(&args.addr, served, options)?;
    let address = server.local_addr()?;
    eprintln!(
        "berth serve: serving {} on http://{address}/ (boot script: /boot.ipxe)",
        args.dir.display()
    );
    server.run()?;
    Ok(())
}
