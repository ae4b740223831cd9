//! depmod's index of one kernel's modules, as text: `modules.dep`,
//! `modules.alias`, `modules.softdep` and `modules.builtin`, each under
//! `lib/modules/VERSION/`, with paths relative to that directory.
//!
//! The builder reads the index a kernel image ships (to choose modules and
//! cut the index down to them) and writes `modules.dep` and `modules.alias`
//! when the image has none; init reads the index at boot to load modules.
//! Both sides go through this module, so they cannot read the format
//! differently.
//! Reading a module's `.modinfo` out of its ELF file is the builder's;
//! matching aliases against devices and loading modules is init's.
//! depmod's binary indexes (`*.bin`) are read by neither.

use std::collections::{BTreeMap, HashMap};

/// A module's name as the kernel and kmod know it: `-` and `_` are the
/// same, and the name is spelled with `_`.
pub fn normal_name(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a file: its base name without `.ko` (plain or
/// compressed: `.ko.gz`, `.ko.xz`, `.ko.zst`), in its normal spelling;
/// `None` for a file that is no module.
pub fn module_name(path: &str) -> Option<String> {
    let base = path.rsplit('/').next()?;
    let stem = ["", ".gz", ".xz", ".zst"]
        .iter()
        .find_map(|ext| base.strip_suffix(&format!(".ko{ext}")))?;
    Some(normal_name(stem))
}

/// One line of `modules.dep`: `PATH: DEPENDENCY...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependencies<'a> {
    /// The module's name, from its path.
    pub name: String,
    /// The module file.
    pub path: &'a str,
    /// The files of every module it needs, not only the direct ones,
    /// ordered so that loading from the last to the first works.
    pub depends: Vec<&'a str>,
}

/// Reads one line of `modules.dep`; `None` for a line that names no module
/// file.
pub fn parse_dep_line(line: &str) -> Option<Dependencies<'_>> {
    let (path, depends) = line.split_once(':')?;
    let path = path.trim();
    Some(Dependencies {
        name: module_name(path)?,
        path,
        depends: depends.split_whitespace().collect(),
    })
}

/// Reads `modules.dep`, skipping lines that name no module file.
pub fn parse_dep(text: &str) -> impl Iterator<Item = Dependencies<'_>> {
    text.lines().filter_map(parse_dep_line)
}

/// One line of `modules.alias`: `alias PATTERN NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias<'a> {
    /// An fnmatch(3) pattern over a device's `modalias` (or a plain name
    /// such as `fs-overlay`, which the kernel asks for).
    pub pattern: &'a str,
    /// The module that drives what the pattern matches.
    pub name: String,
}

/// Reads one line of `modules.alias`; `None` for comments and other lines.
pub fn parse_alias_line(line: &str) -> Option<Alias<'_>> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("alias"), Some(pattern), Some(name)) => Some(Alias {
            pattern,
            name: normal_name(name),
        }),
        _ => None,
    }
}

/// Reads `modules.alias`, skipping comments and other lines.
pub fn parse_alias(text: &str) -> impl Iterator<Item = Alias<'_>> {
    text.lines().filter_map(parse_alias_line)
}

/// One line of `modules.softdep`: `softdep NAME pre: A... post: B...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Softdep {
    pub name: String,
    /// The modules it wants loaded around it, before and after alike.
    pub modules: Vec<String>,
}

/// The module names of a soft dependency (`pre: a b post: c`), as
/// `modules.softdep` and a module's `softdep=` field write it.
pub fn softdep_modules(list: &str) -> impl Iterator<Item = String> + '_ {
    softdep_words(list.split_whitespace())
}

/// The module names among the words of a soft dependency: all but `pre:`
/// and `post:`.
fn softdep_words<'a>(words: impl Iterator<Item = &'a str>) -> impl Iterator<Item = String> {
    words.filter(|word| !word.ends_with(':')).map(normal_name)
}

/// Reads one line of `modules.softdep`; `None` for comments and other
/// lines.
pub fn parse_softdep_line(line: &str) -> Option<Softdep> {
    let mut words = line.split_whitespace();
    if words.next() != Some("softdep") {
        return None;
    }
    let name = normal_name(words.next()?);
    Some(Softdep {
        name,
        modules: softdep_words(words).collect(),
    })
}

/// Reads `modules.softdep`, skipping comments and other lines.
pub fn parse_softdep(text: &str) -> impl Iterator<Item = Softdep> + '_ {
    text.lines().filter_map(parse_softdep_line)
}

/// Reads `modules.builtin` (one path per module built into the kernel):
/// the names of the built-in modules.
pub fn parse_builtin(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines().filter_map(module_name)
}

/// What depmod reads from one module file's `.modinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Relative to the version directory, e.g. `kernel/drivers/net/virtio_net.ko`.
    pub path: String,
    /// The names of the modules it needs directly (`depends=`).
    pub depends: Vec<String>,
    /// The device aliases it drives (`alias=`).
    pub aliases: Vec<String>,
    /// `softdep=pre: a post: b`: modules it wants loaded around it, which
    /// an initrd must carry too (not part of `modules.dep`).
    pub softdeps: Vec<String>,
}

/// Writes `modules.dep`: each module and its dependencies, all of them,
/// ordered so that loading from the last to the first works; modules in
/// the order of their paths.
pub fn modules_dep(modules: &[Module]) -> String {
    let by_name: HashMap<String, &Module> = modules
        .iter()
        .filter_map(|m| Some((module_name(&m.path)?, m)))
        .collect();
    let mut sorted: Vec<&Module> = modules.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = String::new();
    for module in sorted {
        // Post-order: every module after what it depends on; reversed, a
        // module comes before its dependencies.
        let mut order = Vec::new();
        let mut seen = Vec::new();
        for dependency in &module.depends {
            visit(dependency, &by_name, &mut seen, &mut order);
        }
        order.reverse();
        out.push_str(&module.path);
        out.push(':');
        for path in order {
            out.push(' ');
            out.push_str(path);
        }
        out.push('\n');
    }
    out
}

fn visit<'a>(
    name: &str,
    by_name: &HashMap<String, &'a Module>,
    seen: &mut Vec<String>,
    order: &mut Vec<&'a str>,
) {
    if seen.iter().any(|s| s == name) {
        return;
    }
    seen.push(name.to_string());
    // A dependency on a built-in module has no file and nothing to load.
    let Some(module) = by_name.get(name) else {
        return;
    };
    for dependency in &module.depends {
        visit(dependency, by_name, seen, order);
    }
    order.push(&module.path);
}

/// Writes `modules.alias`: `alias PATTERN NAME` lines, sorted.
pub fn modules_alias(modules: &[Module]) -> String {
    let mut lines = BTreeMap::new();
    for module in modules {
        let Some(name) = module_name(&module.path) else {
            continue;
        };
        for pattern in &module.aliases {
            lines.insert(format!("alias {pattern} {name}\n"), ());
        }
    }
    lines.into_keys().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `input` as depmod's file `file` and compares what was read,
    /// one entry a line, with `expected`.
    fn check(file: &str, input: &str, expected: &str) {
        let read: Vec<String> = match file {
            "modules.dep" => parse_dep(input)
                .map(|d| format!("{} {} <- [{}]", d.name, d.path, d.depends.join(" ")))
                .collect(),
            "modules.alias" => parse_alias(input)
                .map(|a| format!("{} -> {}", a.pattern, a.name))
                .collect(),
            "modules.softdep" => parse_softdep(input)
                .map(|s| format!("{} [{}]", s.name, s.modules.join(" ")))
                .collect(),
            "modules.builtin" => parse_builtin(input).collect(),
            _ => panic!("no such file: {file}"),
        };
        let expected: Vec<&str> = expected
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(read, expected, "{file}:\n{input}");
    }

    #[test]
    fn reads_modules_dep() {
        check(
            "modules.dep",
            "kernel/drivers/net/virtio_net.ko: kernel/net/core/net_failover.ko kernel/net/core/failover.ko\n\
             kernel/net/core/failover.ko:\n",
            "virtio_net kernel/drivers/net/virtio_net.ko <- [kernel/net/core/net_failover.ko kernel/net/core/failover.ko]
             failover kernel/net/core/failover.ko <- []",
        );
        // Compressed modules; `-` spelled `_`; spaces around the path.
        check(
            "modules.dep",
            "kernel/sound/snd-hda.ko.zst: kernel/sound/snd.ko.xz\n  kernel/x/a.ko.gz :\n",
            "snd_hda kernel/sound/snd-hda.ko.zst <- [kernel/sound/snd.ko.xz]
             a kernel/x/a.ko.gz <- []",
        );
        // Lines without a colon, or naming no module file, are skipped.
        check(
            "modules.dep",
            "\nnot a line\nkernel/x/readme.txt: kernel/a.ko\nkernel/a.ko:\n",
            "a kernel/a.ko <- []",
        );
    }

    #[test]
    fn reads_modules_alias() {
        check(
            "modules.alias",
            "# Aliases extracted from modules themselves.\n\
             alias virtio:d00000001v* virtio_net\n\
             alias fs-overlay over-lay\n\
             alias pci:v00001AF4d*sv*sd*bc*sc*i*   virtio_pci\n\
             alias lonely\n\
             softdep a pre: b\n",
            "virtio:d00000001v* -> virtio_net
             fs-overlay -> over_lay
             pci:v00001AF4d*sv*sd*bc*sc*i* -> virtio_pci",
        );
        check("modules.alias", "", "");
    }

    #[test]
    fn reads_modules_softdep() {
        check(
            "modules.softdep",
            "# Soft dependencies extracted from modules themselves.\n\
             softdep libcrc32c pre: crc32c-generic crc32c\n\
             softdep nf-ct post: nft-ct\n\
             softdep lonely\n\
             softdep empty pre:\n\
             alias x y\n",
            "libcrc32c [crc32c_generic crc32c]
             nf_ct [nft_ct]
             lonely []
             empty []",
        );
        assert_eq!(
            softdep_modules("pre: crc32c post: nft-ct").collect::<Vec<_>>(),
            ["crc32c", "nft_ct"]
        );
    }

    #[test]
    fn reads_modules_builtin() {
        check(
            "modules.builtin",
            "kernel/drivers/block/loop.ko\nkernel/fs/ext4/ext-4.ko\n\nkernel/x/notes\n",
            "loop
             ext_4",
        );
    }

    #[test]
    fn module_names() {
        for (path, name) in [
            ("a/b/snd-hda.ko.zst", Some("snd_hda")),
            ("kernel/net/virtio_net.ko", Some("virtio_net")),
            ("x.ko.gz", Some("x")),
            ("x.ko.xz", Some("x")),
            ("x.ko.bz2", None),
            ("a/modules.dep", None),
            ("a/", None),
            ("", None),
        ] {
            assert_eq!(module_name(path).as_deref(), name, "{path}");
        }
    }

    fn module(path: &str, depends: &[&str], aliases: &[&str]) -> Module {
        Module {
            softdeps: Vec::new(),
            path: path.into(),
            depends: depends.iter().map(|s| s.to_string()).collect(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn dep_lists_the_closure_loadable_from_the_end() {
        let modules = [
            module(
                "kernel/net/virtio_net.ko",
                &["net_failover", "builtin_thing"],
                &["virtio:d00000001v*"],
            ),
            module("kernel/net/net_failover.ko", &["failover"], &[]),
            module("kernel/net/failover.ko", &[], &[]),
            module("kernel/fs/over-lay.ko", &[], &["fs-overlay"]),
        ];
        let dep = modules_dep(&modules);
        assert_eq!(
            dep,
            "kernel/fs/over-lay.ko:\n\
             kernel/net/failover.ko:\n\
             kernel/net/net_failover.ko: kernel/net/failover.ko\n\
             kernel/net/virtio_net.ko: kernel/net/net_failover.ko kernel/net/failover.ko\n"
        );
        let alias = modules_alias(&modules);
        assert_eq!(
            alias,
            "alias fs-overlay over_lay\nalias virtio:d00000001v* virtio_net\n"
        );
        // What the writer writes, the reader reads back.
        check(
            "modules.dep",
            &dep,
            "over_lay kernel/fs/over-lay.ko <- []
             failover kernel/net/failover.ko <- []
             net_failover kernel/net/net_failover.ko <- [kernel/net/failover.ko]
             virtio_net kernel/net/virtio_net.ko <- [kernel/net/net_failover.ko kernel/net/failover.ko]",
        );
        check(
            "modules.alias",
            &alias,
            "fs-overlay -> over_lay
             virtio:d00000001v* -> virtio_net",
        );
    }
}
