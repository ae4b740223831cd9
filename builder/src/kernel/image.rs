//! The kernel image's part of the tree: `boot/kernel`, `boot/cmdline`,
//! `boot/ucode.cpio` and the contents of its modules tarball (`kernel.tar`),
//! cut down to the modules `kernel.modules` chooses, with their index.
//!
//! A first pass over the tarball reads what each module needs
//! ([`super::modules::Catalog`]); the second writes the chosen ones. Which
//! module a name means, and depmod's formats, are [`super::modules`]' and
//! `contract::depmod`'s.

use std::collections::BTreeMap;
use std::io::{self, Read};

use archive::entry::{self, Kind};
use contract::depmod;
use oci::{ImageSource, ResolvedImage};

use super::modules;
use crate::flatten::{FlattenError, flatten};
use crate::spec;
use crate::tree::Tree;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("kernel image {image}: {message}")]
    Kernel { image: String, message: String },
    #[error(transparent)]
    Flatten(#[from] FlattenError),
}

/// The kernel image gives `boot/kernel`, `boot/cmdline`, `boot/ucode.cpio`
/// and the contents of its modules tarball; nothing else of it is kept.
pub(crate) fn write_kernel(
    tree: &mut Tree,
    source: &dyn ImageSource,
    image: &ResolvedImage,
    kernel: &spec::Kernel,
) -> Result<(), KernelError> {
    let binary = kernel
        .binary
        .as_deref()
        .filter(|b| !b.is_empty())
        .unwrap_or("kernel");
    let modules = match kernel.tar.as_deref() {
        None => Some("kernel.tar"),
        Some("" | "none") => None,
        Some(name) => Some(name),
    };
    let ucode = kernel.ucode.as_deref().filter(|u| !u.is_empty());
    let cmdline = kernel.cmdline.clone().unwrap_or_default();
    let (mut found_kernel, mut found_modules) = (false, false);
    let fail = |message: String| KernelError::Kernel {
        image: image.reference.clone(),
        message,
    };
    // The modules to keep: a first pass over the tarball reads what each
    // module needs.
    let keep = match (modules, &kernel.modules) {
        (None, _) | (_, Some(spec::ModuleChoice::Word(_))) => None,
        (Some(tarball), choice) => {
            let (names, strict) = match choice {
                Some(spec::ModuleChoice::List(names)) => (names.clone(), true),
                _ => (
                    modules::VM_DEFAULT.iter().map(|n| n.to_string()).collect(),
                    false,
                ),
            };
            let mut catalog = None;
            let mut nested: Option<String> = None;
            flatten(source, image, &[], tree.clock, &mut |entry, data| {
                if entry.path == tarball && entry.kind == Kind::File {
                    match catalog_of(data) {
                        Ok(found) => catalog = Some(found),
                        Err(message) => {
                            nested = Some(message.clone());
                            return Err(FlattenError::Emit(message));
                        }
                    }
                }
                Ok(())
            })
            .map_err(|e| match (&nested, e) {
                (Some(message), _) => fail(format!("{tarball}: {message}")),
                (None, e) => KernelError::Flatten(e),
            })?;
            match catalog {
                Some(catalog) => Some(catalog.select(&names, strict).map_err(fail)?),
                // Reported below, as without a choice.
                None => None,
            }
        }
    };
    let mut nested: Option<String> = None;
    tree.scope(true);
    let clock = tree.clock;
    flatten(source, image, &[], clock, &mut |entry, data| {
        let emit = |e: io::Error| FlattenError::Emit(e.to_string());
        let name = entry.path.as_str();
        if name == binary && entry.kind == Kind::File {
            if found_kernel {
                return Err(FlattenError::Emit(format!(
                    "kernel image {}: more than one kernel",
                    image.reference
                )));
            }
            found_kernel = true;
            tree.directory("boot").map_err(emit)?;
            tree.bytes("boot/cmdline", 0o644, cmdline.as_bytes())
                .map_err(emit)?;
            let mut out = entry.clone();
            out.path = "boot/kernel".into();
            out.mtime = tree.mtime();
            tree.write(&out, data).map_err(emit)?;
        } else if Some(name) == ucode && entry.kind == Kind::File {
            tree.directory("boot").map_err(emit)?;
            let mut out = entry.clone();
            out.path = "boot/ucode.cpio".into();
            out.mtime = tree.mtime();
            tree.write(&out, data).map_err(emit)?;
        } else if Some(name) == modules && entry.kind == Kind::File {
            found_modules = true;
            if let Err(message) = write_modules(tree, data, keep.as_ref()) {
                nested = Some(message.clone());
                return Err(FlattenError::Emit(message));
            }
        }
        Ok(())
    })
    .map_err(|e| match (&nested, e) {
        (Some(message), _) => fail(format!("{}: {message}", modules.unwrap_or_default())),
        (None, e) => KernelError::Flatten(e),
    })?;
    if !found_kernel {
        return Err(fail(format!("no kernel file {binary:?} in the image")));
    }
    if let (Some(modules), false) = (modules, found_modules) {
        return Err(fail(format!(
            "no modules tarball {modules:?} in the image (set kernel.tar: none if it has none)"
        )));
    }
    Ok(())
}

/// What the modules tarball holds for one kernel version.
#[derive(Default)]
struct ModulesSeen {
    modules: Vec<modules::Module>,
    /// It carries depmod's index itself.
    indexed: bool,
    /// The first module whose `.modinfo` could not be read.
    unreadable: Option<String>,
}

/// Reads a modules tarball for [`modules::Catalog`]: each module's
/// `.modinfo`, depmod's `modules.dep` where there is one, and
/// `modules.builtin`.
fn catalog_of(data: &mut dyn Read) -> Result<modules::Catalog, String> {
    let mut catalog = modules::Catalog::default();
    // Per version: whether it has depmod's index, and the first module
    // that could not be read.
    let mut indexed = std::collections::BTreeSet::new();
    let mut unreadable: BTreeMap<String, String> = BTreeMap::new();
    let mut archive = tar::Archive::new(data);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let Some(out) = entry::from_tar(&entry)? else {
            continue;
        };
        let Some((version, rest)) = out
            .path
            .strip_prefix("lib/modules/")
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        let wanted = rest == "modules.dep"
            || rest == "modules.builtin"
            || rest == "modules.softdep"
            || (out.kind == Kind::File && depmod::module_name(rest).is_some());
        if !wanted || out.kind != Kind::File {
            continue;
        }
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| format!("entry {:?}: {e}", out.path))?;
        let dir = format!("lib/modules/{version}");
        match rest {
            "modules.dep" => {
                indexed.insert(version.to_string());
                catalog.add_dep_file(&dir, &String::from_utf8_lossy(&bytes));
            }
            "modules.builtin" => catalog.add_builtin(&String::from_utf8_lossy(&bytes)),
            "modules.softdep" => catalog.add_softdep_file(&String::from_utf8_lossy(&bytes)),
            // A module whose .modinfo cannot be read (xz) counts through
            // modules.dep, which such a kernel image must then carry.
            _ => match modules::read(rest, &bytes) {
                Ok(module) => catalog.add(&out.path, &module),
                Err(e) => {
                    unreadable.entry(version.to_string()).or_insert(e);
                }
            },
        }
    }
    if let Some((version, e)) = unreadable.into_iter().find(|(v, _)| !indexed.contains(v)) {
        return Err(format!("choosing the modules of {version}: {e}"));
    }
    Ok(catalog)
}

/// Copies the kernel's modules tarball into `/`, only the modules in `keep`
/// when it is given (their index cut down to them). Hard links in it become
/// relative symbolic links, as LinuxKit makes them: the tarball is a stream
/// and the number of names of each file is not known in advance.
fn write_modules(
    tree: &mut Tree,
    data: &mut dyn Read,
    keep: Option<&std::collections::BTreeSet<String>>,
) -> Result<(), String> {
    let mut archive = tar::Archive::new(data);
    // Per `lib/modules/VERSION`: the modules seen, and whether the tarball
    // carries its own index.
    let mut versions: BTreeMap<String, ModulesSeen> = BTreeMap::new();
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let Some(mut out) = entry::from_tar(&entry)? else {
            continue;
        };
        for id in [out.uid, out.gid] {
            crate::flatten::owner(id)
                .map_err(|reason| format!("entry {:?}: {reason}", out.path))?;
        }
        // A stream cannot say how many names a file will have: hard links
        // become relative symbolic links, as LinuxKit makes them.
        if let Kind::HardLink { target } = &out.kind {
            out.kind = Kind::Symlink {
                target: relative(&out.path, target),
            };
        }
        let (path, kind, size) = (out.path.clone(), out.kind.clone(), out.size);
        let in_version = path
            .strip_prefix("lib/modules/")
            .and_then(|rest| rest.split_once('/'));
        let mut module_bytes = None;
        if let Some((version, rest)) = in_version {
            let is_module = depmod::module_name(rest).is_some();
            if let Some(keep) = keep {
                // Left out: the other modules, and depmod's binary indexes,
                // which would name them.
                if (is_module && !keep.contains(&path)) || rest.ends_with(".bin") {
                    continue;
                }
                if kind == Kind::File && (rest == "modules.dep" || rest == "modules.alias") {
                    let mut text = String::new();
                    entry
                        .read_to_string(&mut text)
                        .map_err(|e| format!("entry {path:?}: {e}"))?;
                    let dir = format!("lib/modules/{version}");
                    let cut = cut_index(rest, &text, &dir, keep);
                    versions.entry(version.to_string()).or_default().indexed = true;
                    let mut out = out.clone();
                    out.size = cut.len() as u64;
                    tree.write(&out, &mut cut.as_bytes())
                        .map_err(|e| e.to_string())?;
                    continue;
                }
            }
            let seen = versions.entry(version.to_string()).or_default();
            if rest == "modules.dep" || rest == "modules.alias" {
                seen.indexed = true;
            } else if kind == Kind::File && depmod::module_name(rest).is_some() && !seen.indexed {
                let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|e| format!("entry {path:?}: {e}"))?;
                // Only fatal if the index has to be made from the modules.
                match modules::read(rest, &bytes) {
                    Ok(module) => seen.modules.push(module),
                    Err(e) => {
                        seen.unreadable.get_or_insert(e);
                    }
                }
                module_bytes = Some(bytes);
            }
        }
        match &module_bytes {
            Some(bytes) => tree.write(&out, &mut &bytes[..]),
            None => tree.write(&out, &mut entry),
        }
        .map_err(|e| e.to_string())?;
    }
    for (version, seen) in versions {
        if seen.indexed || (seen.modules.is_empty() && seen.unreadable.is_none()) {
            continue;
        }
        if let Some(e) = seen.unreadable {
            return Err(format!("making the modules index of {version}: {e}"));
        }
        let found = seen.modules;
        let dir = format!("lib/modules/{version}");
        tree.bytes(
            &format!("{dir}/modules.dep"),
            0o644,
            depmod::modules_dep(&found).as_bytes(),
        )
        .and_then(|()| {
            let alias = depmod::modules_alias(&found);
            tree.bytes(&format!("{dir}/modules.alias"), 0o644, alias.as_bytes())
        })
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// depmod's `modules.dep` or `modules.alias` of the version directory
/// `dir`, with only the lines of the modules in `keep`.
pub(crate) fn cut_index(
    file: &str,
    text: &str,
    dir: &str,
    keep: &std::collections::BTreeSet<String>,
) -> String {
    let kept_names: std::collections::BTreeSet<String> =
        keep.iter().filter_map(|p| depmod::module_name(p)).collect();
    text.lines()
        .filter(|line| match file {
            "modules.dep" => depmod::parse_dep_line(line)
                .is_some_and(|dep| keep.contains(&format!("{dir}/{}", dep.path))),
            _ => {
                depmod::parse_alias_line(line).is_some_and(|alias| kept_names.contains(&alias.name))
            }
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The path from the directory of `from` to `to`, both relative to `/`.
fn relative(from: &str, to: &str) -> String {
    let from_dir: Vec<&str> = entry::parent(from)
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let to_parts: Vec<&str> = to.split('/').collect();
    let common = from_dir
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts: Vec<&str> = vec![".."; from_dir.len() - common];
    parts.extend(&to_parts[common..]);
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_cksum();
            out.append_data(&mut header, path, *data).unwrap();
        }
        out.into_inner().unwrap()
    }

    #[test]
    fn unreadable_modules_without_an_index_cannot_be_chosen_from() {
        let xz = tarball(&[("lib/modules/6.1/kernel/a.ko.xz", b"\xfd7zXZ")]);
        let error = catalog_of(&mut &xz[..]).unwrap_err();
        assert!(
            error.contains("6.1") && error.contains("run depmod"),
            "{error}"
        );
        // With depmod's index, the index says what each module needs.
        let indexed = tarball(&[
            ("lib/modules/6.1/kernel/a.ko.xz", b"\xfd7zXZ"),
            ("lib/modules/6.1/modules.dep", b"kernel/a.ko.xz:\n"),
        ]);
        let catalog = catalog_of(&mut &indexed[..]).unwrap();
        assert_eq!(
            catalog
                .select(&["a".into()], true)
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            ["lib/modules/6.1/kernel/a.ko.xz"]
        );
    }

    #[test]
    fn relative_links() {
        assert_eq!(relative("usr/bin/a", "usr/bin/b"), "b");
        assert_eq!(
            relative("lib/modules/x/a.ko", "lib/firmware/f"),
            "../../firmware/f"
        );
        assert_eq!(relative("a", "b/c"), "b/c");
    }
}
