//! The metadata agent's one run, top to bottom: read the options, find the
//! data source, write `/run/config`, apply the cloud-config. It never fails
//! the boot: each problem is logged with its reason and the run goes on with
//! what it has; it exits 0 unless it could not even start.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use metadata::{cloudconfig, run_config, sources};

fn main() -> ExitCode {
    let started = Instant::now();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let serial = std::fs::read_to_string("/sys/class/dmi/id/product_serial").ok();
    let options = sources::Options::from_cmdline(&cmdline, serial.as_deref());
    let host = cloudconfig::Host::live();
    let Some(found) = sources::probe(&options) else {
        println!(
            "no data source found in {:.1} s; nothing to apply",
            started.elapsed().as_secs_f64()
        );
        // What earlier boots applied on a persistent disk stays in force.
        cloudconfig::make_writable(&host);
        return ExitCode::SUCCESS;
    };
    println!(
        "data source {} ({}) found in {:.1} s",
        found.source,
        found.origin,
        started.elapsed().as_secs_f64()
    );
    run_config::write(Path::new(run_config::DIR), &found);
    cloudconfig::apply(&found, &host);
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
