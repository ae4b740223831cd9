//! The iPXE boot scripts, generated from the names of what is served.
//!
//! A build NAME is `NAME-kernel` with `NAME-initrd.img` (and its command
//! line in `NAME-cmdline`), or `NAME.efi` (a UKI), or both: the names
//! `berth build` writes. `/boot.ipxe` only chains to the script of the
//! machine that asks, `boot-${netX/mac:hexhyp}.ipxe`: iPXE expands the MAC
//! address of the interface it booted from (`netX`, the last one opened)
//! before requesting it, and the server writes that script from the build
//! and the machine's overrides under `machines/MAC/` (docs/pxe.md).
//!
//! Every URL in the scripts is relative: iPXE resolves it against the URI of
//! the script that names it, so the scripts work whatever name or address
//! the machine reached the server by.

use std::collections::BTreeMap;

use crate::served::{MACHINES, Served};

/// A build found among the served names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub name: String,
    /// `NAME-kernel` and `NAME-initrd.img` are both there.
    pub kernel_initrd: bool,
    /// `NAME.efi` is there.
    pub uki: bool,
}

/// The builds among these top-level names, by name.
pub fn builds<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, Build> {
    let names: Vec<&str> = names.into_iter().filter(|n| !n.contains('/')).collect();
    let mut builds: BTreeMap<String, Build> = BTreeMap::new();
    fn build<'b>(builds: &'b mut BTreeMap<String, Build>, name: &str) -> &'b mut Build {
        builds.entry(name.to_string()).or_insert_with(|| Build {
            name: name.to_string(),
            kernel_initrd: false,
            uki: false,
        })
    }
    for name in &names {
        if let Some(base) = name.strip_suffix("-kernel")
            && !base.is_empty()
            && names.contains(&format!("{base}-initrd.img").as_str())
        {
            build(&mut builds, base).kernel_initrd = true;
        }
        if let Some(base) = name.strip_suffix(".efi")
            && !base.is_empty()
        {
            build(&mut builds, base).uki = true;
        }
    }
    builds
}

/// A MAC address as the server names it: six lower-case hex pairs joined
/// by hyphens (iPXE's `hexhyp`), from hyphens or colons in any case.
pub fn normalise_mac(text: &str) -> Option<String> {
    let pairs: Vec<&str> = text.split([':', '-']).collect();
    let valid = pairs.len() == 6
        && pairs
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    valid.then(|| pairs.join("-").to_ascii_lowercase())
}

/// `/boot.ipxe`: hands each machine on to its own script.
pub(crate) fn chain_script() -> String {
    "#!ipxe\n\
     # berth serve: each machine boots the script written for its MAC address\n\
     chain boot-${netX/mac:hexhyp}.ipxe\n"
        .to_string()
}

/// The script of a generated name (`boot.ipxe`, `boot-MAC.ipxe`), or `None`
/// for any other name.
pub(crate) fn generated(name: &str, served: &Served, default: Option<&str>) -> Option<String> {
    if name == "boot.ipxe" {
        return Some(chain_script());
    }
    let mac = name.strip_prefix("boot-")?.strip_suffix(".ipxe")?;
    // `boot-.ipxe`: an iPXE that could not expand the MAC address gets the
    // default build.
    let mac = if mac.is_empty() {
        None
    } else {
        Some(normalise_mac(mac)?)
    };
    Some(machine_script(served, default, mac.as_deref()))
}

/// What a machine boots: the build, and the arguments it adds.
fn machine_script(served: &Served, default: Option<&str>, mac: Option<&str>) -> String {
    let files = served.files();
    let builds = builds(files.keys().map(String::as_str));
    // The machine's own files, whichever way its directory writes the MAC.
    let own = |file: &str| -> Option<String> {
        let mac = mac?;
        let name = files.keys().find(|name| {
            let mut parts = name.splitn(3, '/');
            parts.next() == Some(MACHINES)
                && parts.next().and_then(normalise_mac).as_deref() == Some(mac)
                && parts.next() == Some(file)
        })?;
        served.read_text(name)
    };
    let words = |text: String| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let extra = own("cmdline").map(words).filter(|e| !e.is_empty());
    let asked = own("build").map(words).filter(|b| !b.is_empty());
    let machine = mac.map_or(String::new(), |mac| format!(", machine {mac}"));
    let list = || builds.keys().cloned().collect::<Vec<_>>().join(", ");
    let chosen = match (&asked, default) {
        (Some(name), _) => builds.get(name.as_str()).ok_or_else(|| {
            format!(
                "{MACHINES}/{}/build names {name}, which is not served (builds: {})",
                mac.unwrap_or_default(),
                list()
            )
        }),
        (None, Some(name)) => builds
            .get(name)
            .ok_or_else(|| format!("no build {name} is served (builds: {})", list())),
        (None, None) => match builds.values().collect::<Vec<_>>().as_slice() {
            [only] => Ok(*only),
            [] => Err(
                "no build is served (NAME-kernel with NAME-initrd.img, or NAME.efi)".to_string(),
            ),
            _ => Err(format!(
                "several builds are served ({}): start berth serve with --name, or write {MACHINES}/MAC/build",
                list()
            )),
        },
    };
    let build = match chosen {
        Ok(build) => build,
        Err(problem) => {
            return format!("#!ipxe\n# berth serve{machine}\necho berth serve: {problem}\nshell\n");
        }
    };
    let name = &build.name;
    let base = served
        .read_text(&format!("{name}-cmdline"))
        .and_then(|text| text.lines().next().map(str::trim).map(str::to_string))
        .unwrap_or_default();
    let cmdline = [base.as_str(), extra.as_deref().unwrap_or_default()]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = format!("#!ipxe\n# berth serve: build {name}{machine}\n");
    if build.uki {
        script.push_str("iseq ${platform} efi && goto efi || goto bios\n:bios\n");
    }
    if build.kernel_initrd {
        let arguments = if cmdline.is_empty() {
            String::new()
        } else {
            format!(" {cmdline}")
        };
        script.push_str(&format!(
            "kernel {name}-kernel{arguments} initrd={name}-initrd.img\ninitrd {name}-initrd.img\nboot\n"
        ));
    } else {
        script.push_str(&format!(
            "echo berth serve: build {name} is a UKI alone ({name}.efi), which boots under UEFI only\nshell\n"
        ));
    }
    if build.uki {
        // The UKI carries its command line, but iPXE hands an EFI image
        // its name as its load options even with no arguments, and
        // systemd-stub (without Secure Boot) takes those as the kernel's
        // command line: the whole line goes along, the machine's extra
        // arguments with it.
        let arguments = if cmdline.is_empty() {
            String::new()
        } else {
            format!(" {cmdline}")
        };
        script.push_str(&format!(":efi\nchain {name}.efi{arguments}\n"));
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_are_found_by_berths_artifact_names() {
        let found = builds([
            "host-kernel",
            "host-initrd.img",
            "host-cmdline",
            "host.efi",
            "lone-kernel",
            "uki.efi",
            "machines/52-54-00-12-34-56/cmdline",
            "-kernel",
            "-initrd.img",
        ]);
        let summary: Vec<(&str, bool, bool)> = found
            .values()
            .map(|b| (b.name.as_str(), b.kernel_initrd, b.uki))
            .collect();
        assert_eq!(summary, [("host", true, true), ("uki", false, true)]);
    }

    #[test]
    fn mac_addresses_are_normalised_to_hexhyp() {
        assert_eq!(
            normalise_mac("52:54:00:AB:cd:0F").as_deref(),
            Some("52-54-00-ab-cd-0f")
        );
        assert_eq!(
            normalise_mac("52-54-00-12-34-56").as_deref(),
            Some("52-54-00-12-34-56")
        );
        for bad in [
            "",
            "52-54-00-12-34",
            "52-54-00-12-34-5g",
            "525-4-00-12-34-56",
            "../x",
        ] {
            assert_eq!(normalise_mac(bad), None, "{bad}");
        }
    }
}
