//! Finding the data source: the options that steer the search (kernel
//! command line, SMBIOS serial), and the probe in its documented order
//! (docs/cloud-config.md, "Data sources"): the local sources first
//! (NoCloud's filesystem, the config drive), then NoCloud's seed URL, then
//! the network services (OpenStack's, EC2's), which wait for a route to
//! their address and share one time budget. Each source's parsing lives in
//! its module, free of I/O; what is done with a `Found` is left to
//! `run_config`, `network` and the cloud-config.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::found::{Found, Source};

pub mod ec2;
pub mod nocloud;
pub mod openstack;
pub mod route;

/// One request's deadline: connecting, sending and reading together.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a request is tried before its source is given up.
pub const ATTEMPTS: u32 = 3;
/// The network sources' whole budget: waiting for a route and detecting
/// the service, for OpenStack and EC2 together.
pub const NETWORK_BUDGET: Duration = Duration::from_secs(30);
/// Reading a network source once it has answered: all its documents.
pub const READING_BUDGET: Duration = Duration::from_secs(60);

/// What the command line and the SMBIOS serial say about the search.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options {
    /// `berth.datasource=NAME`: only this source is probed.
    pub pinned: Option<Source>,
    /// `ds=nocloud;...` / `ds=nocloud-net;...`.
    pub seed: Seed,
    /// `berth.imdsv1=allow`: EC2 without a token when the token is refused.
    pub imdsv1: bool,
}

/// NoCloud's settings from `ds=nocloud[-net];s=URL/;h=HOST;i=ID`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seed {
    /// `s=` / `seedfrom=`: an `http://` or `file://` URL ending in `/`.
    pub url: Option<String>,
    /// `h=` / `local-hostname=`, which wins over the seed's meta-data.
    pub hostname: Option<String>,
    /// `i=` / `instance-id=`, which wins over the seed's meta-data.
    pub instance_id: Option<String>,
}

impl Options {
    /// The options from `/proc/cmdline` and the SMBIOS system serial (where
    /// cloud-init reads `ds=` too); the command line wins. A bad value is
    /// logged and ignored.
    pub fn from_cmdline(cmdline: &str, smbios_serial: Option<&str>) -> Options {
        let mut options = Options::default();
        let serial = smbios_serial.unwrap_or("");
        for (origin, text) in [("SMBIOS serial", serial), ("kernel command line", cmdline)] {
            for word in words(text) {
                let Some((key, value)) = word.split_once('=') else {
                    continue;
                };
                match key {
                    "berth.datasource" => match Source::from_name(&value.to_ascii_lowercase()) {
                        Some(source) => options.pinned = Some(source),
                        None => println!(
                            "{origin}: berth.datasource={value}: unknown data source (known: {}); probing as usual",
                            Source::ALL.map(Source::name).join(", ")
                        ),
                    },
                    "berth.imdsv1" => options.imdsv1 = value == "allow",
                    "ds" => {
                        if let Err(e) = options.seed.parse_ds(value) {
                            println!("{origin}: ds={value}: {e}; ignored");
                        }
                    }
                    _ => {}
                }
            }
        }
        options
    }
}

/// The words of a command line; double quotes group (as the kernel's
/// parser does) and are dropped.
fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let (mut word, mut quoted, mut any) = (String::new(), false, false);
    for c in text.chars() {
        match c {
            '"' => (quoted, any) = (!quoted, true),
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(word);
    }
    words
}

impl Seed {
    /// cloud-init's `ds=` value: a name, then `;key=value` pairs.
    fn parse_ds(&mut self, value: &str) -> Result<(), String> {
        let mut parts = value.split(';');
        let name = parts.next().unwrap_or("").to_ascii_lowercase();
        if name != "nocloud" && name != "nocloud-net" {
            return Err(format!("{name:?} is not nocloud or nocloud-net"));
        }
        for part in parts.filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not KEY=VALUE"))?;
            match key {
                "s" | "seedfrom" => {
                    if !(value.starts_with("http://") || value.starts_with("file://")) {
                        return Err(format!(
                            "seed {value:?}: only http:// and file:// seeds are supported"
                        ));
                    }
                    let mut url = value.to_string();
                    if !url.ends_with('/') {
                        url.push('/');
                    }
                    self.url = Some(url);
                }
                "h" | "local-hostname" => self.hostname = Some(value.to_string()),
                "i" | "instance-id" => self.instance_id = Some(value.to_string()),
                _ => return Err(format!("unknown key {key:?}")),
            }
        }
        Ok(())
    }
}

/// Where the probe looks: the live system's paths and the metadata
/// services' addresses, or a test's.
#[derive(Debug, Clone)]
pub struct Environment {
    /// `/sys`: `class/block` for devices, `class/dmi/id` for the DMI.
    pub sys: PathBuf,
    /// `/dev`, where the block devices are opened.
    pub dev: PathBuf,
    /// `/proc`: `net/route` and `net/ipv6_route`.
    pub proc: PathBuf,
    /// The OpenStack metadata service.
    pub openstack: String,
    /// EC2's IMDS, IPv4 then IPv6.
    pub ec2: Vec<String>,
    /// The network sources' whole budget.
    pub network_budget: Duration,
}

impl Environment {
    pub fn live() -> Environment {
        Environment {
            sys: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
            proc: PathBuf::from("/proc"),
            openstack: "http://169.254.169.254".into(),
            ec2: vec![
                "http://169.254.169.254".into(),
                "http://[fd00:ec2::254]".into(),
            ],
            network_budget: NETWORK_BUDGET,
        }
    }
}

/// Finds the data source on the live system.
pub fn probe(options: &Options) -> Option<Found> {
    probe_in(options, &Environment::live())
}

/// Finds the data source: the first of the documented order that answers
/// (only the pinned one if pinned). Each source that is tried and not used
/// says why in one line.
pub fn probe_in(options: &Options, env: &Environment) -> Option<Found> {
    let wanted = |source: Source| options.pinned.is_none_or(|p| p == source);
    if wanted(Source::NoCloud) || wanted(Source::ConfigDrive) {
        let block = env.sys.join("class/block");
        let labelled = crate::label::find(
            &block,
            &env.dev,
            &[nocloud::LABEL, openstack::CONFIG_DRIVE_LABEL],
        );
        if labelled.is_empty() {
            println!("no filesystem labelled cidata or config-2");
        }
        for source in [Source::NoCloud, Source::ConfigDrive] {
            if !wanted(source) {
                continue;
            }
            for device in labelled.iter().filter(|d| label_source(&d.label) == source) {
                let found = match source {
                    Source::NoCloud => nocloud::from_device(device, &options.seed),
                    _ => openstack::from_config_drive(device),
                };
                match found {
                    Ok(found) => return Some(found),
                    Err(e) => println!("{source}: {e}; not used"),
                }
            }
        }
    }
    let deadline = Instant::now() + env.network_budget;
    if wanted(Source::NoCloud)
        && let Some(url) = &options.seed.url
    {
        match nocloud::from_url(url, &options.seed, &env.proc, deadline) {
            Ok(found) => return Some(found),
            Err(e) => println!("nocloud: {e}; not used"),
        }
    }
    for source in network_order(&dmi(&env.sys.join("class/dmi/id"))) {
        if !wanted(source) {
            continue;
        }
        let found = match source {
            Source::OpenStack => openstack::from_service(&env.openstack, &env.proc, deadline),
            _ => ec2::from_service(&env.ec2, options.imdsv1, &env.proc, deadline),
        };
        match found {
            Ok(found) => return Some(found),
            Err(e) => println!("{source}: {e}; not used"),
        }
    }
    None
}

fn label_source(label: &str) -> Source {
    match label.eq_ignore_ascii_case(nocloud::LABEL) {
        true => Source::NoCloud,
        false => Source::ConfigDrive,
    }
}

/// What the DMI says about the machine: `sys_vendor`, `product_name`,
/// `chassis_asset_tag`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dmi {
    pub sys_vendor: String,
    pub product_name: String,
    pub chassis_asset_tag: String,
}

fn dmi(dir: &Path) -> Dmi {
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .map(|b| {
                String::from_utf8_lossy(&b[..b.len().min(256)])
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    };
    Dmi {
        sys_vendor: read("sys_vendor"),
        product_name: read("product_name"),
        chassis_asset_tag: read("chassis_asset_tag"),
    }
}

/// The network sources in the order to try them: as cloud-init identifies
/// the platform, OpenStack's Nova (product name "OpenStack Nova" or
/// "OpenStack Compute", or its asset tag) only OpenStack, Amazon's
/// machines only EC2, any other both, OpenStack first (an OpenStack cloud
/// also answers EC2's paths, with less).
pub fn network_order(dmi: &Dmi) -> Vec<Source> {
    let openstack = ["OpenStack Nova", "OpenStack Compute"];
    if openstack.contains(&dmi.product_name.as_str())
        || openstack.contains(&dmi.sys_vendor.as_str())
        || dmi.chassis_asset_tag == "OpenStack Nova"
    {
        return vec![Source::OpenStack];
    }
    if dmi.sys_vendor == "Amazon EC2" || dmi.chassis_asset_tag == "Amazon EC2" {
        return vec![Source::Ec2];
    }
    vec![Source::OpenStack, Source::Ec2]
}

/// A GET tried up to `ATTEMPTS` times (each within `REQUEST_TIMEOUT` and
/// the deadline), for a status, not for a body: 404 is an answer.
pub(crate) fn get_retried(url: &str, deadline: Instant) -> Result<crate::http::Response, String> {
    retried(url, deadline, |timeout| crate::http::get(url, timeout))
}

/// A request (`send`, given its timeout) tried up to `ATTEMPTS` times
/// while it fails or answers 5xx, within `deadline`.
pub(crate) fn retried(
    url: &str,
    deadline: Instant,
    mut send: impl FnMut(Duration) -> Result<crate::http::Response, crate::http::Error>,
) -> Result<crate::http::Response, String> {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            let pause = Duration::from_millis(300);
            match time_left(deadline) {
                Some(left) if left > pause => std::thread::sleep(pause),
                _ => break,
            }
        }
        let Some(timeout) = time_left(deadline) else {
            break;
        };
        match send(timeout.min(REQUEST_TIMEOUT)) {
            Ok(response) if response.status < 500 => return Ok(response),
            Ok(response) => last = format!("{url}: status {}", response.status),
            Err(e) => last = e.to_string(),
        }
    }
    Err(match last.is_empty() {
        true => format!("{url}: no time left"),
        false => last,
    })
}

pub(crate) fn time_left(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// The deadline of one document of a source found: its own attempts,
/// within the source's reading budget (`until`).
pub(crate) fn document_deadline(until: Instant) -> Instant {
    (Instant::now() + REQUEST_TIMEOUT * ATTEMPTS + Duration::from_secs(1)).min(until)
}

/// An optional document's bytes; one that could not be read is logged
/// and left out.
pub(crate) fn left_out(
    source: Source,
    origin: &str,
    read: Result<Option<Vec<u8>>, String>,
) -> Option<Vec<u8>> {
    read.unwrap_or_else(|e| {
        println!("{source}: {origin}: {e}; left out");
        None
    })
}

/// A source's documents under one URL: the first fetched within the
/// probe's deadline (it says whether the source answers at all), each
/// other one with attempts of its own.
pub(crate) struct Documents {
    base: String,
    until: Instant,
    first: Option<(String, crate::http::Response)>,
}

impl Documents {
    /// Waits for a route to `base`, then fetches `first` under it.
    pub(crate) fn open(
        base: &str,
        first: &str,
        proc: &Path,
        deadline: Instant,
    ) -> Result<Documents, String> {
        route::wait(base, proc, deadline)?;
        let response = get_retried(&format!("{base}{first}"), deadline)?;
        Ok(Documents {
            base: base.to_string(),
            until: Instant::now() + READING_BUDGET,
            first: Some((first.to_string(), response)),
        })
    }

    /// The document `name`: its body on 200, `None` on 404.
    pub(crate) fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, String> {
        let url = format!("{}{name}", self.base);
        let response = match self.first.take_if(|(first, _)| first == name) {
            Some((_, response)) => response,
            None => get_retried(&url, document_deadline(self.until))?,
        };
        match response.status {
            200 => Ok(Some(response.body)),
            404 => Ok(None),
            status => Err(format!("{url}: status {status}")),
        }
    }
}

#[cfg(test)]
mod tests;
