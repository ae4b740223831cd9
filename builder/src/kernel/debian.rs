//! A Debian kernel package's files in LinuxKit's kernel-image layout:
//! `boot/vmlinuz-VERSION` becomes `/kernel`, `boot/System.map-VERSION`
//! `/System.map`, `boot/config-VERSION` `/config`, and the modules
//! (`lib/modules/VERSION` or, merged-/usr, `usr/lib/modules/VERSION`) go
//! into `/kernel.tar` as `lib/modules/VERSION/…`. Nothing else of the
//! packages is kept.
//!
//! It works on the tree of a package image being made ([`Tree`]), whose
//! files were unpacked by `pkg::debian`; `kernel.tar` is written into the
//! tree's spool, so the modules are never held in memory. Choosing modules
//! for a build, and their index, are not done here.

use std::collections::BTreeMap;
use std::io;

use archive::Clock;
use archive::entry::{self, Entry, Kind, Sink as _};
use archive::tar::TarWriter;

use crate::pkg::layer::{Data, Tree};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("kernel: true needs exactly one boot/vmlinuz-* in the packages, found {0:?}")]
    Kernels(Vec<String>),
    #[error("no modules for {0} in the packages")]
    NoModules(String),
    #[error("writing kernel.tar")]
    Io(#[from] io::Error),
}

/// The kernel image's tree made of `tree`, the unpacked Debian packages.
/// Entries made here (`kernel.tar`) have the build's time; the modules'
/// own times are capped by it.
pub fn repackage(tree: Tree, clock: Clock) -> Result<Tree, KernelError> {
    let made = clock.made();
    let kernels: Vec<&String> = tree
        .entries
        .keys()
        .filter(|p| p.starts_with("boot/vmlinuz-"))
        .collect();
    let [kernel] = kernels[..] else {
        return Err(KernelError::Kernels(kernels.into_iter().cloned().collect()));
    };
    let version = kernel["boot/vmlinuz-".len()..].to_string();
    let mut out = BTreeMap::new();
    let take = |from: &str, to: &str, out: &mut BTreeMap<String, (Entry, Data)>| {
        if let Some((entry, data)) = tree.entries.get(from) {
            let mut entry = entry.clone();
            entry.path = to.to_string();
            out.insert(to.to_string(), (entry, data.clone()));
        }
    };
    take(kernel, "kernel", &mut out);
    take(
        &format!("boot/System.map-{version}"),
        "System.map",
        &mut out,
    );
    take(&format!("boot/config-{version}"), "config", &mut out);
    // The modules, wherever the package puts them (merged /usr or not),
    // as lib/modules/VERSION in kernel.tar.
    let mut count = 0;
    let modules = tree.spool.append_with(|file| {
        let mut modules = TarWriter::new(file);
        for prefix in [
            format!("lib/modules/{version}"),
            format!("usr/lib/modules/{version}"),
        ] {
            for (path, (entry, data)) in tree.entries.range(prefix.clone()..) {
                if path != &prefix && !path.starts_with(&format!("{prefix}/")) {
                    break;
                }
                let mut entry = entry.clone();
                entry.path = format!("lib/modules/{version}{}", &path[prefix.len()..]);
                entry.mtime = entry.mtime.min(made);
                if let Kind::HardLink { target } = &mut entry.kind {
                    *target = format!(
                        "lib/modules/{version}{}",
                        target.get(prefix.len()..).unwrap_or("")
                    );
                }
                entry::copy_entry(&mut modules, &entry, &mut tree.open(data)?)?;
                count += 1;
            }
        }
        modules.finish()
    })?;
    if count == 0 {
        return Err(KernelError::NoModules(version));
    }
    let Data::Spooled { size, .. } = modules else {
        unreachable!("append_with spools")
    };
    let entry = Entry::file("kernel.tar", 0o644, size, made);
    out.insert("kernel.tar".into(), (entry, modules));
    Ok(Tree {
        entries: out,
        spool: tree.spool,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Read;

    fn file(tree: &mut Tree, path: &str, bytes: &[u8]) {
        let data = tree
            .spool
            .append(&mut &bytes[..], bytes.len() as u64)
            .unwrap();
        let entry = Entry::file(path, 0o644, bytes.len() as u64, 2_000_000_000);
        tree.entries.insert(path.into(), (entry, data));
    }

    #[test]
    fn a_debian_kernel_becomes_linuxkits_layout() {
        let dir = tempfile::tempdir().unwrap();
        let mut tree = Tree::new_in(dir.path()).unwrap();
        file(&mut tree, "boot/vmlinuz-6.1.0-9-amd64", b"kernel");
        file(&mut tree, "boot/System.map-6.1.0-9-amd64", b"map");
        file(&mut tree, "boot/config-6.1.0-9-amd64", b"config");
        file(
            &mut tree,
            "usr/lib/modules/6.1.0-9-amd64/kernel/a.ko",
            b"module a",
        );
        file(&mut tree, "usr/share/doc/linux/copyright", b"GPL");
        let clock = Clock::at(1_700_000_000);
        let tree = repackage(tree, clock).unwrap();
        let paths: Vec<&str> = tree.entries.keys().map(String::as_str).collect();
        assert_eq!(paths, ["System.map", "config", "kernel", "kernel.tar"]);
        let (entry, data) = &tree.entries["kernel.tar"];
        assert_eq!(entry.mtime, 1_700_000_000);
        let mut modules = Vec::new();
        tree.open(data).unwrap().read_to_end(&mut modules).unwrap();
        assert_eq!(modules.len() as u64, entry.size);
        let listed: Vec<(String, u64)> = tar::Archive::new(&modules[..])
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mtime().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [(
                "lib/modules/6.1.0-9-amd64/kernel/a.ko".to_string(),
                1_700_000_000
            )]
        );
    }

    #[test]
    fn a_package_without_one_kernel_or_without_modules_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::new_in(dir.path()).unwrap();
        let error = repackage(tree, Clock::default()).unwrap_err();
        assert!(matches!(error, KernelError::Kernels(found) if found.is_empty()));
        let mut tree = Tree::new_in(dir.path()).unwrap();
        file(&mut tree, "boot/vmlinuz-6.1", b"kernel");
        let error = repackage(tree, Clock::default()).unwrap_err();
        assert_eq!(error.to_string(), "no modules for 6.1 in the packages");
    }
}
