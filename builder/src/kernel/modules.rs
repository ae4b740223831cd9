//! The kernel modules index (`modules.dep`, `modules.alias`) that init needs
//! to load modules, made from the modules themselves when the kernel image
//! ships none.
//!
//! LinuxKit's kernels carry depmod's output; Debian's packages do not (their
//! postinst runs depmod). Each module names its dependencies and the device
//! aliases it drives in its `.modinfo` ELF section; this module reads them,
//! and [`contract::depmod`] writes the two files in depmod's format, so that
//! init reads both kinds of kernel the same way.

use std::collections::BTreeMap;
use std::io::Read;

pub use contract::depmod::Module;
use contract::depmod::{self, module_name};

/// The `.modinfo` of a module file as stored (plain, gzip or zstd).
pub fn read(path: &str, bytes: &[u8]) -> Result<Module, String> {
    let plain;
    let elf = if path.ends_with(".ko") {
        bytes
    } else if path.ends_with(".ko.zst") {
        plain = zstd::decode_all(bytes).map_err(|e| format!("{path}: zstd: {e}"))?;
        &plain[..]
    } else if path.ends_with(".ko.gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| format!("{path}: gzip: {e}"))?;
        plain = out;
        &plain[..]
    } else {
        return Err(format!(
            "{path}: cannot read this compression; ship modules.dep and modules.alias (run depmod) in the kernel image"
        ));
    };
    let info = modinfo(elf).map_err(|e| format!("{path}: {e}"))?;
    let mut module = Module {
        path: path.to_string(),
        depends: Vec::new(),
        aliases: Vec::new(),
        softdeps: Vec::new(),
    };
    for field in info.split(|b| *b == 0) {
        let field = String::from_utf8_lossy(field);
        if let Some(list) = field.strip_prefix("depends=") {
            let names = list.split(',').filter(|d| !d.is_empty());
            module.depends.extend(names.map(|d| d.replace('-', "_")));
        } else if let Some(alias) = field.strip_prefix("alias=") {
            module.aliases.push(alias.to_string());
        } else if let Some(list) = field.strip_prefix("softdep=") {
            module.softdeps.extend(depmod::softdep_modules(list));
        }
    }
    Ok(module)
}

/// The bytes of the `.modinfo` section of a 64-bit little-endian ELF file.
fn modinfo(elf: &[u8]) -> Result<&[u8], String> {
    let bad = |what: &str| format!("not a 64-bit little-endian ELF module ({what})");
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return Err(bad("header"));
    }
    let u16_at = |at: usize| -> Result<u64, String> {
        let b = elf.get(at..at + 2).ok_or_else(|| bad("truncated"))?;
        Ok(u64::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let u32_at = |at: usize| -> Result<u64, String> {
        let b = elf.get(at..at + 4).ok_or_else(|| bad("truncated"))?;
        Ok(u64::from(u32::from_le_bytes(
            b.try_into().expect("4 bytes"),
        )))
    };
    let u64_at = |at: usize| -> Result<u64, String> {
        let b = elf.get(at..at + 8).ok_or_else(|| bad("truncated"))?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let index = |v: u64| usize::try_from(v).map_err(|_| bad("offset"));
    let (shoff, shentsize) = (index(u64_at(0x28)?)?, index(u16_at(0x3a)?)?);
    let (shnum, shstrndx) = (index(u16_at(0x3c)?)?, index(u16_at(0x3e)?)?);
    let section = |i: usize| -> Result<(usize, usize, usize), String> {
        let at = i
            .checked_mul(shentsize)
            .and_then(|o| o.checked_add(shoff))
            .filter(|at| at.checked_add(0x28).is_some())
            .ok_or_else(|| bad("section header offset"))?;
        let name = index(u32_at(at)?)?;
        let (offset, size) = (index(u64_at(at + 0x18)?)?, index(u64_at(at + 0x20)?)?);
        Ok((name, offset, size))
    };
    let slice = |offset: usize, size: usize| {
        offset
            .checked_add(size)
            .and_then(|end| elf.get(offset..end))
            .ok_or_else(|| bad("section beyond the end"))
    };
    let (_, names_at, names_size) = section(shstrndx)?;
    let names = slice(names_at, names_size)?;
    for i in 0..shnum {
        let (name, offset, size) = section(i)?;
        let name = names.get(name..).unwrap_or_default();
        if name.split(|b| *b == 0).next() == Some(b".modinfo") {
            return slice(offset, size);
        }
    }
    Err("no .modinfo section".into())
}

/// The modules an initrd gets when the definition names none: the
/// drivers of the common virtual machines and clouds (QEMU/KVM virtio,
/// VMware, Hyper-V, Xen, AWS, GCP, Azure), their disks and filesystems, and
/// what containers commonly need (overlay, bridges, veth, netfilter).
/// Their dependencies come along; names the kernel lacks are skipped.
pub const VM_DEFAULT: &[&str] = &[
    // Buses, consoles, entropy, memory, power button.
    "virtio_pci",
    "virtio_mmio",
    "virtio_console",
    "virtio_rng",
    "virtio_balloon",
    "virtio_input",
    "vmw_vsock_virtio_transport",
    "ptp_kvm",
    "button",
    "evdev",
    // Network cards.
    "virtio_net",
    "e1000",
    "e1000e",
    "vmxnet3",
    "hv_netvsc",
    "xen_netfront",
    "ena",
    "gve",
    "mlx4_en",
    "mlx5_core",
    // Disks.
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
    "sr_mod",
    "nvme",
    "ahci",
    "ata_piix",
    "vmw_pvscsi",
    "hv_storvsc",
    "xen_blkfront",
    // Hyper-V and Xen services.
    "hv_vmbus",
    "hv_utils",
    "hv_balloon",
    "hv_sock",
    // Filesystems: state disks, config drives, CD-ROMs, EFI.
    "ext4",
    "xfs",
    "btrfs",
    "vfat",
    "isofs",
    "squashfs",
    "overlay",
    "9p",
    "9pnet_virtio",
    "virtiofs",
    "fuse",
    "loop",
    "nls_cp437",
    "nls_utf8",
    "nls_iso8859_1",
    "dm_mod",
    // Disk encryption with LUKS2's default cipher, and fast checksums.
    "dm_crypt",
    "xts",
    "ecb",
    "cbc",
    "aesni_intel",
    "crc32c_intel",
    "crc32_pclmul",
    // Container networking.
    "tun",
    "veth",
    "bridge",
    "br_netfilter",
    "macvlan",
    "ipvlan",
    "vxlan",
    "wireguard",
    "ip_tables",
    "iptable_filter",
    "iptable_nat",
    "iptable_mangle",
    "ip6_tables",
    "ip6table_filter",
    "ip6table_nat",
    "nf_tables",
    "nft_chain_nat",
    "nft_compat",
    "xt_conntrack",
    "xt_MASQUERADE",
    "xt_addrtype",
    "xt_mark",
    "xt_comment",
    "nf_nat",
    "nf_conntrack",
    "nft_ct",
    "nft_masq",
    "nft_nat",
    "nft_reject_inet",
    "nft_fib_inet",
];

/// A valid entry of `kernel.modules`: a module name, maybe with `*`.
pub fn is_pattern(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'*')
}

/// Whether module `name` matches `pattern` (`*`: any run of characters;
/// `-` and `_` are the same).
fn matches(pattern: &str, name: &str) -> bool {
    let pattern = pattern.replace('-', "_");
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == name;
    };
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// What a modules tarball holds, to choose from: each module's file and
/// direct dependencies by name, and the modules built into the kernel.
#[derive(Debug, Default)]
pub struct Catalog {
    modules: BTreeMap<String, (String, Vec<String>)>,
    builtin: std::collections::BTreeSet<String>,
}

impl Catalog {
    /// A module file, at its path in the tarball, read from its `.modinfo`.
    pub fn add(&mut self, tar_path: &str, module: &Module) {
        if let Some(name) = module_name(&module.path) {
            let entry = self.modules.entry(name).or_default();
            entry.0 = tar_path.to_string();
            entry.1.extend(module.depends.iter().cloned());
            entry.1.extend(module.softdeps.iter().cloned());
        }
    }

    /// depmod's `modules.softdep`: `softdep NAME pre: a post: b` lines.
    pub fn add_softdep_file(&mut self, text: &str) {
        for softdep in depmod::parse_softdep(text) {
            let entry = self.modules.entry(softdep.name).or_default();
            entry.1.extend(softdep.modules);
        }
    }

    /// depmod's `modules.dep` of the version directory `dir` (dependencies
    /// as paths relative to it).
    pub fn add_dep_file(&mut self, dir: &str, text: &str) {
        for line in depmod::parse_dep(text) {
            let entry = self.modules.entry(line.name).or_default();
            entry.0 = format!("{dir}/{}", line.path);
            entry
                .1
                .extend(line.depends.into_iter().filter_map(module_name));
        }
    }

    /// `modules.builtin`: one path per built-in module.
    pub fn add_builtin(&mut self, text: &str) {
        self.builtin.extend(depmod::parse_builtin(text));
    }

    /// The tarball paths of the modules `patterns` name and of everything
    /// they depend on. With `strict`, a name that matches no module and is
    /// not built in is an error.
    pub fn select(
        &self,
        patterns: &[String],
        strict: bool,
    ) -> Result<std::collections::BTreeSet<String>, String> {
        let mut wanted: Vec<String> = Vec::new();
        for pattern in patterns {
            // Names only a softdep mentions have no file.
            let found: Vec<&String> = self
                .modules
                .iter()
                .filter(|(name, (path, _))| !path.is_empty() && matches(pattern, name))
                .map(|(name, _)| name)
                .collect();
            let builtin =
                !pattern.contains('*') && self.builtin.contains(&pattern.replace('-', "_"));
            if found.is_empty() && !builtin && strict {
                return Err(format!(
                    "kernel.modules: no module {pattern:?} in the kernel image (nor built in)"
                ));
            }
            wanted.extend(found.into_iter().cloned());
        }
        let mut paths = std::collections::BTreeSet::new();
        let mut seen = std::collections::BTreeSet::new();
        while let Some(name) = wanted.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            // A dependency on a built-in module has no file.
            if let Some((path, depends)) = self.modules.get(&name) {
                if !path.is_empty() {
                    paths.insert(path.clone());
                }
                wanted.extend(depends.iter().cloned());
            }
        }
        Ok(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fixtures::elf_module as elf;

    #[test]
    fn a_choice_brings_its_dependencies_and_unknown_names_are_errors() {
        let mut catalog = Catalog::default();
        let module = |path: &str, depends: &[&str]| Module {
            path: path.into(),
            depends: depends.iter().map(|d| d.to_string()).collect(),
            aliases: Vec::new(),
            softdeps: Vec::new(),
        };
        let v = "lib/modules/6.1";
        for (path, depends) in [
            (
                "kernel/drivers/net/virtio_net.ko",
                &["net_failover", "virtio_ring"][..],
            ),
            ("kernel/drivers/net/net_failover.ko", &["failover"][..]),
            ("kernel/net/core/failover.ko", &[][..]),
            ("kernel/drivers/block/virtio_blk.ko", &["virtio_ring"][..]),
            ("kernel/drivers/net/e1000.ko", &[][..]),
        ] {
            catalog.add(&format!("{v}/{path}"), &module(path, depends));
        }
        catalog.add_builtin("kernel/drivers/virtio/virtio_ring.ko\nkernel/fs/ext4/ext4.ko\n");
        catalog.add_dep_file(
            v,
            "kernel/fs/xfs/xfs.ko: kernel/lib/libcrc32c.ko\nkernel/lib/libcrc32c.ko:\nkernel/crypto/crc32c_generic.ko:\n",
        );
        // A soft dependency comes along too; a name only a softdep gives is
        // no module.
        catalog
            .add_softdep_file("# c\nsoftdep libcrc32c pre: crc32c-generic\nsoftdep ghost pre: x\n");
        let chosen = catalog
            .select(&["virtio-net".into(), "ext4".into(), "xfs".into()], true)
            .unwrap();
        assert_eq!(
            chosen.into_iter().collect::<Vec<_>>(),
            [
                "lib/modules/6.1/kernel/crypto/crc32c_generic.ko",
                "lib/modules/6.1/kernel/drivers/net/net_failover.ko",
                "lib/modules/6.1/kernel/drivers/net/virtio_net.ko",
                "lib/modules/6.1/kernel/fs/xfs/xfs.ko",
                "lib/modules/6.1/kernel/lib/libcrc32c.ko",
                "lib/modules/6.1/kernel/net/core/failover.ko",
            ]
        );
        let virtio = catalog.select(&["virtio_*".into()], true).unwrap();
        assert_eq!(virtio.len(), 4, "{virtio:?}");
        let error = catalog.select(&["virtio_nett".into()], true).unwrap_err();
        assert!(catalog.select(&["ghost".into()], true).is_err());
        assert!(error.contains("\"virtio_nett\""), "{error}");
        assert!(
            catalog
                .select(&["virtio_nett".into()], false)
                .unwrap()
                .is_empty()
        );
        assert!(matches("xt_*", "xt_MASQUERADE") && !matches("xt_*", "nf_nat"));
        assert!(matches("*net*", "virtio_net") && matches("a*b*c", "abc") && !matches("a*b", "ba"));
    }

    #[test]
    fn modinfo_gives_dependencies_and_aliases() {
        let bytes = elf(
            b"license=GPL\0depends=net_failover,virtio-ring\0alias=virtio:d00000001v*\0softdep=pre: crc32c post: nft-ct\0",
        );
        let module = read("kernel/drivers/net/virtio_net.ko", &bytes).unwrap();
        assert_eq!(module.depends, ["net_failover", "virtio_ring"]);
        assert_eq!(module.softdeps, ["crc32c", "nft_ct"]);
        assert_eq!(module.aliases, ["virtio:d00000001v*"]);
        let zst = zstd::encode_all(&bytes[..], 3).unwrap();
        assert_eq!(
            read("kernel/x/virtio_net.ko.zst", &zst).unwrap().aliases,
            module.aliases
        );
        let err = read("kernel/x/virtio_net.ko.xz", &bytes).unwrap_err();
        assert!(err.contains("run depmod"), "{err}");
        assert!(
            read("a.ko", b"not elf")
                .unwrap_err()
                .contains("not a 64-bit")
        );
        assert!(read("a.ko", &elf(b"x")[..70]).is_err());
        let mut huge = elf(b"x");
        huge[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(read("a.ko", &huge).unwrap_err().contains("offset"));
    }
}
