//! Kernel modules: coldplug at boot ([`load_at_boot`]) and `modprobe` for
//! the kernel's own requests.
//!
//! The index is depmod's (`modules.dep`, `modules.alias`, `modules.builtin`
//! under `/lib/modules/$(uname -r)`), which the builder writes when the
//! kernel image has none; its format is [`contract::depmod`]'s, shared with
//! the builder. Coldplug reads the `modalias` of every device
//! under `/sys/devices`, loads the modules whose aliases match with their
//! dependencies, and looks again, because loading a bus driver (virtio_pci)
//! makes the devices on that bus (the network card, the disk) appear.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use contract::depmod::{self, normal_name};

use crate::system::{System, under};

/// The directory of the running kernel's modules and their index.
pub fn modules_dir(system: &mut dyn System, root: &Path) -> PathBuf {
    under(root, "/lib/modules").join(system.kernel_release())
}

/// Coldplug, then the modules named in `/etc/modules-load.d/*.conf`; the
/// kernel's later requests come back to `program` (this binary) as
/// `modprobe`. Returns the index, empty when the image has none.
pub fn load_at_boot(system: &mut dyn System, root: &Path, program: &str) -> Index {
    let dir = modules_dir(system, root);
    let index = Index::load(&dir);
    if index.is_empty() {
        system.log(&format!("no modules index in {}", dir.display()));
        return index;
    }
    if let Err(e) = system.set_kernel_value("/proc/sys/kernel/modprobe", program) {
        system.log(&format!("setting /proc/sys/kernel/modprobe: {e}"));
    }
    let mut explicit = Vec::new();
    if let Ok(entries) = std::fs::read_dir(under(root, "/etc/modules-load.d")) {
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for file in files
            .iter()
            .filter(|f| f.extension() == Some("conf".as_ref()))
        {
            // The image's text: bytes that are not UTF-8 name no module.
            let bytes = std::fs::read(file).unwrap_or_default();
            explicit.extend(listed(&String::from_utf8_lossy(&bytes)));
        }
    }
    let devices = under(root, "/sys/devices");
    let count = coldplug(system, &index, &devices, &explicit, 8);
    system.log(&format!("modules: {count} loaded"));
    index
}

/// depmod's index of one kernel's modules.
#[derive(Debug, Default)]
pub struct Index {
    dir: PathBuf,
    /// Module name → its file and its dependencies' files, loadable from
    /// the last to the first.
    deps: HashMap<String, (String, Vec<String>)>,
    aliases: Vec<(String, String)>,
    builtin: HashSet<String>,
}

impl Index {
    /// Reads the index in `dir` (`/lib/modules/VERSION`); missing files
    /// read as empty, and bytes that are not text as U+FFFD, so that a
    /// damaged index loses its damaged lines only: a line that does not
    /// parse is no module.
    pub fn load(dir: &Path) -> Index {
        let read = |name: &str| {
            let bytes = std::fs::read(dir.join(name)).unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        Index::parse(
            dir,
            &read("modules.dep"),
            &read("modules.alias"),
            &read("modules.builtin"),
        )
    }

    pub fn parse(dir: &Path, dep: &str, alias: &str, builtin: &str) -> Index {
        let mut index = Index {
            dir: dir.to_path_buf(),
            ..Index::default()
        };
        for line in depmod::parse_dep(dep) {
            let depends = line.depends.iter().map(|d| d.to_string()).collect();
            index
                .deps
                .insert(line.name, (line.path.to_string(), depends));
        }
        for line in depmod::parse_alias(alias) {
            index.aliases.push((line.pattern.to_string(), line.name));
        }
        index.builtin = depmod::parse_builtin(builtin).collect();
        index
    }

    pub fn is_empty(&self) -> bool {
        self.deps.is_empty()
    }

    /// The modules whose aliases match `modalias`, or the module named so.
    pub fn resolve(&self, wanted: &str) -> BTreeSet<String> {
        let wanted_name = normal_name(wanted);
        if self.deps.contains_key(&wanted_name) || self.builtin.contains(&wanted_name) {
            return BTreeSet::from([wanted_name]);
        }
        self.aliases
            .iter()
            .filter(|(pattern, _)| glob(pattern.as_bytes(), wanted.as_bytes()))
            .map(|(_, name)| name.clone())
            .collect()
    }

    /// The files to load for `name`, dependencies first; empty for a
    /// built-in module.
    pub fn plan(&self, name: &str) -> Result<Vec<PathBuf>, String> {
        let name = normal_name(name);
        if self.builtin.contains(&name) {
            return Ok(Vec::new());
        }
        let (path, deps) = self
            .deps
            .get(&name)
            .ok_or_else(|| format!("module {name} not found in {}", self.dir.display()))?;
        Ok(deps
            .iter()
            .rev()
            .chain(std::iter::once(path))
            .map(|p| self.dir.join(p))
            .collect())
    }
}

/// fnmatch(3) without flags: `*`, `?` and `[...]` (with `!`/`^` and ranges).
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: pattern position, text position.
    let mut star: Option<(usize, usize)> = None;
    while let Some(&c) = text.get(t) {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match class(pattern, p, c) {
                Some((true, next)) => Some(next),
                Some((false, _)) => None,
                // An unterminated bracket is a literal `[`, as in fnmatch.
                None => (c == b'[').then_some(p + 1),
            },
            Some(q) if *q == c => Some(p + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((sp, st))) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    pattern.iter().skip(p).all(|c| *c == b'*')
}

/// Matches `c` against the bracket expression at `pattern[start]`: whether
/// it matches and the position after the expression; `None` when the
/// expression is not terminated.
fn class(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *pattern.get(i)?;
        if lo == b']' && !first {
            break;
        }
        first = false;
        let hi = pattern.get(i + 2).filter(|h| **h != b']');
        if let (Some(b'-'), Some(&hi)) = (pattern.get(i + 1), hi) {
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
    Some((matched != negate, i + 1))
}

/// Loads modules with their dependencies, each file once.
pub struct Loader<'a> {
    pub index: &'a Index,
    loaded: HashSet<PathBuf>,
}

impl<'a> Loader<'a> {
    pub fn new(index: &'a Index) -> Loader<'a> {
        Loader {
            index,
            loaded: HashSet::new(),
        }
    }

    /// Loads `name` (a module name or an alias); returns how many files
    /// were loaded.
    pub fn load(&mut self, system: &mut dyn System, wanted: &str) -> Result<usize, String> {
        let names = self.index.resolve(wanted);
        if names.is_empty() {
            return Err(format!("no module for {wanted}"));
        }
        // One module that will not load (a CPU driver on the wrong CPU)
        // does not keep the others an alias matches from loading.
        let mut count = 0;
        let mut failures = Vec::new();
        for name in names {
            let plan = match self.index.plan(&name) {
                Ok(plan) => plan,
                Err(e) => {
                    failures.push(e);
                    continue;
                }
            };
            for file in plan {
                if !self.loaded.insert(file.clone()) {
                    continue;
                }
                match system.load_module(&file) {
                    Ok(()) => count += 1,
                    Err(e) => {
                        failures.push(format!("loading {}: {e}", file.display()));
                        break;
                    }
                }
            }
        }
        match failures.len() {
            0 => Ok(count),
            _ if count > 0 => {
                for failure in failures {
                    system.log(&failure);
                }
                Ok(count)
            }
            _ => Err(failures.join("; ")),
        }
    }
}

/// Every `modalias` under `sys` (normally `/sys/devices`), without
/// following symbolic links.
pub fn modaliases(sys: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![sys.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file()
                && entry.file_name() == "modalias"
                && let Ok(alias) = std::fs::read_to_string(entry.path())
            {
                let alias = alias.trim();
                if !alias.is_empty() {
                    found.insert(alias.to_string());
                }
            }
        }
    }
    found
}

/// Loads the modules for every device until no new device appears (at most
/// `passes` looks), then the modules in `explicit`. Returns the number of
/// module files loaded; problems are logged, never fatal.
pub fn coldplug(
    system: &mut dyn System,
    index: &Index,
    sys: &Path,
    explicit: &[String],
    passes: usize,
) -> usize {
    let mut loader = Loader::new(index);
    let mut seen = BTreeSet::new();
    let mut count = 0;
    for _ in 0..passes {
        let fresh: Vec<String> = modaliases(sys).difference(&seen).cloned().collect();
        if fresh.is_empty() {
            break;
        }
        let mut loaded_now = 0;
        for alias in &fresh {
            seen.insert(alias.clone());
            // Most devices match no module: their drivers are built in.
            if index.resolve(alias).is_empty() {
                continue;
            }
            match loader.load(system, alias) {
                Ok(n) => loaded_now += n,
                Err(e) => system.log(&e),
            }
        }
        count += loaded_now;
        if loaded_now == 0 {
            break;
        }
        // Drivers probe synchronously on load, mostly; give the rest a moment.
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for name in explicit {
        match loader.load(system, name) {
            Ok(n) => count += n,
            Err(e) => system.log(&e),
        }
    }
    count
}

/// Module names from `modules-load.d`-style files: one per line, `#` and
/// `;` start comments.
pub fn listed(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::Fake;

    const DEP: &str = "kernel/drivers/net/virtio_net.ko: kernel/net/core/net_failover.ko kernel/net/core/failover.ko\n\
kernel/net/core/net_failover.ko: kernel/net/core/failover.ko\n\
kernel/net/core/failover.ko:\n\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko\n\
kernel/drivers/virtio/virtio_pci_modern_dev.ko:\n\
kernel/fs/overlayfs/overlay.ko:\n";
    const ALIAS: &str = "alias virtio:d00000001v* virtio_net\n\
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
alias fs-overlay overlay\n";

    fn index() -> Index {
        Index::parse(
            Path::new("/lib/modules/6.1"),
            DEP,
            ALIAS,
            "kernel/drivers/block/loop.ko\n",
        )
    }

    #[test]
    fn globs_as_fnmatch() {
        assert!(glob(b"virtio:d00000001v*", b"virtio:d00000001v00001AF4"));
        assert!(!glob(b"virtio:d00000001v*", b"virtio:d00000002v00001AF4"));
        assert!(glob(b"pci:v*d*sv*", b"pci:v00001AF4d00001000sv00001AF4"));
        assert!(glob(b"a?c", b"abc") && !glob(b"a?c", b"ac"));
        assert!(glob(b"x[0-9a]y", b"x7y") && glob(b"x[0-9a]y", b"xay"));
        assert!(!glob(b"x[!0-9]y", b"x7y") && glob(b"x[!0-9]y", b"xzy"));
        assert!(glob(b"*", b"") && glob(b"**a", b"bba") && !glob(b"*a", b"ab"));
        assert!(glob(b"x[", b"x[") && !glob(b"x[", b"xa"));
    }

    #[test]
    fn a_garbage_index_loads_what_parses_and_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let mut garbage: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        garbage.extend_from_slice(b"\nkernel/fs/ok.ko:\n:::\n.ko:\n");
        for name in ["modules.dep", "modules.alias", "modules.builtin"] {
            std::fs::write(dir.path().join(name), &garbage).unwrap();
        }
        let index = Index::load(dir.path());
        assert_eq!(
            index.plan("ok"),
            Ok(vec![dir.path().join("kernel/fs/ok.ko")])
        );
        let mut system = Fake::default();
        let mut loader = Loader::new(&index);
        assert!(loader.load(&mut system, "pci:v00001AF4d00001000").is_err());
        // Patterns as an image may write them: unterminated, empty, odd.
        for pattern in [
            &b"["[..],
            b"[!",
            b"[a-",
            b"[]",
            b"[^]]",
            b"\xff*[",
            b"",
            b"**[z-a]",
        ] {
            for text in [&b""[..], b"a", b"[", b"]", b"-", b"\xff"] {
                let _ = glob(pattern, text);
            }
        }
        assert!(glob(b"[]]", b"]") && glob(b"[a-]", b"-"));
    }

    #[test]
    fn an_alias_loads_its_module_after_its_dependencies_once() {
        let index = index();
        let mut system = Fake::default();
        let mut loader = Loader::new(&index);
        assert_eq!(loader.load(&mut system, "virtio:d00000001v00001AF4"), Ok(3));
        assert_eq!(loader.load(&mut system, "net-failover"), Ok(0));
        assert_eq!(loader.load(&mut system, "loop"), Ok(0), "built in");
        assert_eq!(loader.load(&mut system, "fs-overlay"), Ok(1));
        assert_eq!(
            system.calls,
            [
                "load /lib/modules/6.1/kernel/net/core/failover.ko",
                "load /lib/modules/6.1/kernel/net/core/net_failover.ko",
                "load /lib/modules/6.1/kernel/drivers/net/virtio_net.ko",
                "load /lib/modules/6.1/kernel/fs/overlayfs/overlay.ko",
            ]
        );
        let err = loader.load(&mut system, "nonesuch").unwrap_err();
        assert_eq!(err, "no module for nonesuch");
    }

    #[test]
    fn a_module_that_fails_does_not_stop_the_others() {
        let index = Index::parse(
            Path::new("/m"),
            "a.ko:\nb.ko:\n",
            "alias cpu:x* a\nalias cpu:x* b\n",
            "",
        );
        let mut system = Fake::default();
        system.broken.push("/m/a.ko".into());
        let mut loader = Loader::new(&index);
        assert_eq!(loader.load(&mut system, "cpu:x86"), Ok(1));
        assert_eq!(
            system.calls,
            [
                "load /m/a.ko",
                "load /m/b.ko",
                "log loading /m/a.ko: No such device"
            ]
        );
        assert!(Loader::new(&index).load(&mut system, "a").is_err());
    }

    #[test]
    fn coldplug_loads_for_every_device_and_the_listed_modules() {
        let sys = tempfile::tempdir().unwrap();
        let write = |dir: &str, alias: &str| {
            let dir = sys.path().join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("modalias"), format!("{alias}\n")).unwrap();
        };
        write(
            "pci0000:00/0000:00:03.0",
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
        );
        write(
            "pci0000:00/0000:00:03.0/virtio0",
            "virtio:d00000001v00001AF4",
        );
        write("platform/serial8250", "platform:serial8250");
        std::os::unix::fs::symlink(sys.path().join("pci0000:00"), sys.path().join("loop")).unwrap();
        let mut system = Fake::default();
        let count = coldplug(
            &mut system,
            &index(),
            sys.path(),
            &listed("# comment\noverlay\n\nmissing\n"),
            5,
        );
        assert_eq!(count, 6);
        assert_eq!(
            system.calls,
            [
                "load /lib/modules/6.1/kernel/drivers/virtio/virtio_pci_modern_dev.ko",
                "load /lib/modules/6.1/kernel/drivers/virtio/virtio_pci.ko",
                "load /lib/modules/6.1/kernel/net/core/failover.ko",
                "load /lib/modules/6.1/kernel/net/core/net_failover.ko",
                "load /lib/modules/6.1/kernel/drivers/net/virtio_net.ko",
                "load /lib/modules/6.1/kernel/fs/overlayfs/overlay.ko",
                "log no module for missing",
            ]
        );
    }
}
