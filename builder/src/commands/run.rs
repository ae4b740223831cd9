//! `berth run qemu PATH`: boots a build, or any bootable artifact berth
//! writes, in QEMU, with the serial console on the terminal. What PATH is
//! comes from its bytes (`qemu::identify`), and the machine is a
//! `qemu::Machine`, the description the boot tests launch too: the QEMU
//! command line exists once, in `crates/qemu`.
//!
//! This is the one file of `builder` that names the `qemu` crate.
//!
//! QEMU runs in a process group of its own with its standard input fed by
//! berth, so a Ctrl-C on the terminal reaches berth alone: the first one
//! presses the machine's ACPI power button, a second one stops QEMU.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use qemu::identify::{Kind, identify};
use qemu::{Accel, Drive, Firmware, Interface, Kernel, Machine, NetBackend, Nic, PortForward};

use super::seed;

#[derive(Subcommand)]
pub enum RunCommand {
    /// Boot a build or an artifact in QEMU, its serial console on this terminal.
    #[command(after_help = QEMU_EXAMPLES)]
    Qemu(QemuArgs),
}

const QEMU_EXAMPLES: &str = "\
PATH is a build name (NAME-kernel, NAME-initrd.img and NAME-cmdline beside it,
and NAME-squashfs.img for kernel+squashfs), an ISO, a raw, qcow2, VHD or VMDK
disk image, or a UKI; what it is comes from the file's contents.

Examples:
  berth run qemu out/minimal
  berth run qemu --uefi out/minimal.iso
  berth run qemu --usb out/minimal.iso
  berth run qemu out/host.efi                     # a UKI: UEFI is implied
  berth run qemu --state vm --disk data.qcow2,size=4G -p 2222:22 out/sshd
  berth run qemu --data-file user-data.yml out/host

Ctrl-C presses the machine's power button; a second Ctrl-C stops QEMU at once.
Exit status: 0 when the machine powered off, 1 on an error or a QEMU failure,
130 when it was stopped by a second Ctrl-C (or a SIGTERM, SIGHUP or SIGQUIT: Ctrl-\\).";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AccelArg {
    /// KVM if a probe proves it works here, TCG otherwise.
    Auto,
    /// KVM, or an error if it does not work here.
    Kvm,
    /// Software emulation.
    Tcg,
}

#[derive(Args)]
pub struct QemuArgs {
    /// A build name (out/NAME), or an ISO, disk image or UKI file.
    path: PathBuf,
    /// Boot with UEFI firmware (Debian's OVMF) instead of SeaBIOS.
    #[arg(long)]
    uefi: bool,
    /// Boot with this firmware image instead (e.g. a combined OVMF.fd).
    #[arg(long, value_name = "FILE")]
    fw: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    accel: AccelArg,
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Memory: MiB, or a number with M or G.
    #[arg(long, default_value = "1024M")]
    mem: String,
    /// A disk for the machine, created when missing (raw or qcow2; size
    /// 1G unless given). Without a path, STATE/diskN.FORMAT.
    #[arg(long = "disk", value_name = "PATH[,size=S][,format=F]")]
    disks: Vec<String>,
    /// user (QEMU's user network), user,restrict (the guest reaches
    /// nothing but its published ports), tap,IF, bridge,BR or none.
    #[arg(long, default_value = "user")]
    networking: String,
    /// Forward a host port to the guest (user networking): [ADDR:]HOST:GUEST[/udp].
    /// ADDR is 127.0.0.1 unless given.
    #[arg(long, short = 'p', value_name = "HOST:GUEST")]
    publish: Vec<String>,
    /// User data for the machine, on a NoCloud `cidata` seed drive.
    #[arg(long, conflicts_with = "data_file")]
    data: Option<String>,
    /// The same, read from FILE.
    #[arg(long, value_name = "FILE")]
    data_file: Option<PathBuf>,
    /// Keep the machine's state here (its MAC address, UEFI variables,
    /// created disks, the seed) from one run to the next.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Extra kernel arguments (a build booted directly).
    #[arg(long, value_name = "ARGS")]
    append: Vec<String>,
    /// Attach the ISO or disk image as a USB stick.
    #[arg(long)]
    usb: bool,
}

pub fn run(command: RunCommand) -> Result<ExitCode> {
    match command {
        RunCommand::Qemu(args) => run_qemu(args),
    }
}

/// What PATH turned out to be.
#[derive(Debug)]
enum Boot {
    /// A kernel booted directly, with its build's initrd and command line
    /// (and squashfs image) when it has them.
    Kernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: String,
        squashfs: Option<PathBuf>,
    },
    Iso(PathBuf),
    Disk(PathBuf, qemu::Format),
    Uki(PathBuf),
}

impl Boot {
    fn describe(&self) -> String {
        match self {
            Boot::Kernel {
                kernel,
                initrd: Some(_),
                squashfs: None,
                ..
            } => format!("{} with its initrd", kernel.display()),
            Boot::Kernel {
                kernel,
                squashfs: Some(image),
                ..
            } => format!("{} with {}", kernel.display(), image.display()),
            Boot::Kernel { kernel, .. } => kernel.display().to_string(),
            Boot::Iso(file) | Boot::Disk(file, _) | Boot::Uki(file) => file.display().to_string(),
        }
    }
}

/// The build NAME whose `NAME{suffix}` is `file`, if its name ends so.
fn build_name(file: &Path, suffix: &str) -> Option<PathBuf> {
    let name = file.file_name()?.to_str()?.strip_suffix(suffix)?;
    (!name.is_empty()).then(|| file.with_file_name(name))
}

/// The kernel, initrd, command line and squashfs image of the build NAME.
fn build(name: &Path) -> Result<Boot> {
    let sibling = |suffix: &str| {
        let mut file = name.as_os_str().to_owned();
        file.push(suffix);
        PathBuf::from(file)
    };
    let kernel = sibling("-kernel");
    if !kernel.is_file() {
        bail!(
            "{}: no such artifact: not a file, and not a build ({} is missing)",
            name.display(),
            kernel.display()
        );
    }
    let cmdline_file = sibling("-cmdline");
    let cmdline = match fs::read_to_string(&cmdline_file) {
        Ok(text) => text.trim_end_matches('\n').to_string(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", cmdline_file.display())),
    };
    let initrd = Some(sibling("-initrd.img")).filter(|f| f.is_file());
    let squashfs = Some(sibling("-squashfs.img")).filter(|f| f.is_file());
    if squashfs.is_some() && initrd.is_none() {
        bail!(
            "{}: a kernel+squashfs build needs its {}",
            name.display(),
            sibling("-initrd.img").display()
        );
    }
    Ok(Boot::Kernel {
        kernel,
        initrd,
        cmdline,
        squashfs,
    })
}

/// What `path` is: a file by its contents, otherwise a build name.
fn resolve(path: &Path) -> Result<Boot> {
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return build(path),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if metadata.is_dir() {
        bail!(
            "{} is a directory: give a build name (DIR/NAME) or an artifact file",
            path.display()
        );
    }
    let kind = identify(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(match kind {
        Some(Kind::Iso) => Boot::Iso(path.to_path_buf()),
        Some(Kind::Disk(format)) => Boot::Disk(path.to_path_buf(), format),
        Some(Kind::Efi) => Boot::Uki(path.to_path_buf()),
        Some(Kind::Linux) => match build_name(path, "-kernel") {
            Some(name) => build(&name)?,
            None => Boot::Kernel {
                kernel: path.to_path_buf(),
                initrd: None,
                cmdline: String::new(),
                squashfs: None,
            },
        },
        Some(Kind::Squashfs) => match build_name(path, "-squashfs.img") {
            Some(name) => build(&name)?,
            None => bail!(
                "{} is a squashfs image without its build's kernel: boot the build \
                 (NAME for NAME-squashfs.img)",
                path.display()
            ),
        },
        None => bail!(
            "{} is not something berth can boot: not an ISO, a disk image, a UKI or a kernel",
            path.display()
        ),
    })
}

/// `1024`, `1024M`, `1G` (MiB by default) as MiB.
fn parse_mib(text: &str) -> Result<u32> {
    let bytes = parse_size(text, 1 << 20).with_context(|| format!("--mem {text}"))?;
    if !bytes.is_multiple_of(1 << 20) || bytes == 0 {
        bail!("--mem {text}: not a whole, non-zero number of MiB");
    }
    u32::try_from(bytes >> 20).with_context(|| format!("--mem {text}: too large"))
}

/// A size: a number of `unit`s, or of bytes with K, M, G or T (powers of 1024).
fn parse_size(text: &str, unit: u64) -> Result<u64> {
    let trimmed = text.trim_end_matches(['B', 'b']);
    let (digits, multiplier) = match trimmed.char_indices().last() {
        Some((at, 'K' | 'k')) => (&trimmed[..at], 1u64 << 10),
        Some((at, 'M' | 'm')) => (&trimmed[..at], 1 << 20),
        Some((at, 'G' | 'g')) => (&trimmed[..at], 1 << 30),
        Some((at, 'T' | 't')) => (&trimmed[..at], 1 << 40),
        _ => (trimmed, unit),
    };
    let number: u64 = digits
        .parse()
        .with_context(|| format!("{text:?} is not a size (e.g. 512M, 4G)"))?;
    number
        .checked_mul(multiplier)
        .with_context(|| format!("{text:?} is too large"))
}

/// One `--disk`: a file, created when missing.
#[derive(Debug, PartialEq, Eq)]
struct DiskSpec {
    path: Option<PathBuf>,
    size: Option<u64>,
    format: Option<qemu::Format>,
}

fn parse_format(name: &str) -> Option<qemu::Format> {
    Some(match name {
        "raw" => qemu::Format::Raw,
        "qcow2" => qemu::Format::Qcow2,
        "vhd" | "vpc" => qemu::Format::Vhd,
        "vmdk" => qemu::Format::Vmdk,
        _ => return None,
    })
}

fn parse_disk(text: &str) -> Result<DiskSpec> {
    let mut spec = DiskSpec {
        path: None,
        size: None,
        format: None,
    };
    for (index, part) in text.split(',').enumerate() {
        if let Some(size) = part.strip_prefix("size=") {
            spec.size = Some(parse_size(size, 1 << 20).with_context(|| format!("--disk {text}"))?);
        } else if let Some(format) = part.strip_prefix("format=") {
            spec.format = Some(parse_format(format).with_context(|| {
                format!("--disk {text}: unknown format {format:?}: raw, qcow2, vhd or vmdk")
            })?);
        } else if let Some(path) = part.strip_prefix("file=") {
            spec.path = Some(path.into());
        } else if index == 0 && !part.is_empty() && !part.contains('=') {
            spec.path = Some(part.into());
        } else {
            bail!("--disk {text}: {part:?} is not PATH, size=S or format=F");
        }
    }
    Ok(spec)
}

/// The format of a disk: `format=`, else the file name's extension
/// (`.qcow2`, `.vhd`, `.vmdk`), else raw. Never the file's contents: a
/// guest writes those, and a raw disk made to look like a qcow2 image with
/// a backing file would hand the guest a file of the host.
fn disk_format(spec: &DiskSpec, path: &Path) -> qemu::Format {
    spec.format
        .or_else(|| parse_format(path.extension()?.to_str()?))
        .unwrap_or(qemu::Format::Raw)
}

/// The disk of `spec`, its path and format, created if it is missing.
fn prepare_disk(spec: &DiskSpec, index: usize, state: &Path) -> Result<(PathBuf, qemu::Format)> {
    let path = match &spec.path {
        Some(path) => path.clone(),
        None => state.join(format!(
            "disk{index}.{}",
            match spec.format.unwrap_or(qemu::Format::Raw) {
                qemu::Format::Qcow2 => "qcow2",
                _ => "img",
            }
        )),
    };
    let format = disk_format(spec, &path);
    if path.exists() {
        // An existing disk is never resized: size= is for creating one.
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("disk {} cannot be opened for writing", path.display()))?;
        if format != qemu::Format::Raw {
            let found =
                identify(&path).with_context(|| format!("reading disk {}", path.display()))?;
            if found != Some(Kind::Disk(format)) {
                bail!(
                    "disk {} is not a {} image (format=raw attaches it as it is)",
                    path.display(),
                    format.name()
                );
            }
        }
        return Ok((path, format));
    }
    let size = spec.size.unwrap_or(1 << 30);
    if size == 0 || !size.is_multiple_of(512) {
        bail!(
            "disk {}: size {size} is not a whole number of sectors",
            path.display()
        );
    }
    let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            parent.to_path_buf()
        }
        None => PathBuf::from("."),
    };
    // Written under a temporary name and renamed: a failure leaves nothing
    // that a later run would take for the disk.
    let mut out = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("creating {}", path.display()))?;
    match format {
        qemu::Format::Raw => out
            .as_file()
            .set_len(size)
            .with_context(|| format!("sizing disk {}", path.display()))?,
        qemu::Format::Qcow2 => {
            // An empty disk in qcow2: a sparse raw file of the size,
            // converted by berth's own writer (it reads no holes).
            let sparse = tempfile::NamedTempFile::new_in(&dir)
                .with_context(|| format!("creating a scratch file beside {}", path.display()))?;
            sparse
                .as_file()
                .set_len(size)
                .with_context(|| format!("sizing disk {}", path.display()))?;
            media::qcow2::write(sparse.path(), out.as_file_mut())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        other => bail!(
            "disk {} is missing, and berth creates raw and qcow2 disks, not {}",
            path.display(),
            other.name()
        ),
    }
    out.persist_noclobber(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    eprintln!(
        "berth run: created disk {} ({} MiB, {})",
        path.display(),
        size >> 20,
        format.name()
    );
    Ok((path, format))
}

/// `--networking`: the backend, and whether the user network is
/// restricted (`restrict=on`).
fn parse_networking(text: &str) -> Result<Option<(NetBackend, bool)>> {
    let (kind, name) = match text.split_once(',') {
        Some((kind, name)) => (kind, Some(name)),
        None => (text, None),
    };
    Ok(match (kind, name) {
        ("user", None) => Some((NetBackend::User, false)),
        ("user", Some("restrict")) => Some((NetBackend::User, true)),
        ("none", None) => None,
        ("tap", Some(interface)) if !interface.is_empty() => Some((
            NetBackend::Tap {
                interface: interface.to_string(),
            },
            false,
        )),
        ("bridge", Some(bridge)) if !bridge.is_empty() => Some((
            NetBackend::Bridge {
                bridge: bridge.to_string(),
            },
            false,
        )),
        _ => bail!("--networking {text}: expected user, user,restrict, tap,IF, bridge,BR or none"),
    })
}

/// `--publish [ADDR:]HOST:GUEST[/tcp|/udp]`.
fn parse_publish(text: &str) -> Result<PortForward> {
    let (ports, protocol) = match text.rsplit_once('/') {
        Some((ports, "tcp")) => (ports, qemu::Protocol::Tcp),
        Some((ports, "udp")) => (ports, qemu::Protocol::Udp),
        Some((_, other)) => bail!("--publish {text}: unknown protocol {other:?}: tcp or udp"),
        None => (text, qemu::Protocol::Tcp),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (address, host, guest) = match parts[..] {
        [host, guest] => ("127.0.0.1", host, guest),
        [address, host, guest] => (address, host, guest),
        _ => bail!("--publish {text}: expected [ADDR:]HOST:GUEST[/udp]"),
    };
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .with_context(|| format!("--publish {text}: {p:?} is not a port"))
    };
    let address = address
        .parse()
        .with_context(|| format!("--publish {text}: {address:?} is not an IPv4 address"))?;
    Ok(PortForward {
        protocol,
        host: std::net::SocketAddrV4::new(address, port(host)?),
        guest_port: port(guest)?,
    })
}

/// Fails, naming the address, if a forwarded host port is taken: QEMU's
/// own message for it would come after the boot had started.
fn check_port_free(forward: &PortForward) -> Result<()> {
    let address = SocketAddr::V4(forward.host);
    let free = match forward.protocol {
        qemu::Protocol::Tcp => TcpListener::bind(address).map(drop),
        qemu::Protocol::Udp => UdpSocket::bind(address).map(drop),
    };
    free.with_context(|| format!("port {address} cannot be published: it is in use"))
}

/// The machine's MAC address, kept in the state directory so that it is
/// the same in every run (a DHCP server gives it the same address).
fn mac_address(state: &Path) -> Result<String> {
    let file = state.join("mac-address");
    match fs::read_to_string(&file) {
        Ok(text) => {
            let mac = text.trim().to_ascii_lowercase();
            let valid = mac.len() == 17
                && mac.split(':').count() == 6
                && mac
                    .split(':')
                    .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
            if !valid {
                bail!("{} does not hold a MAC address: {text:?}", file.display());
            }
            Ok(mac)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut random = [0u8; 3];
            File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut random))
                .context("reading /dev/urandom for a MAC address")?;
            // QEMU's locally administered prefix.
            let mac = format!(
                "52:54:00:{:02x}:{:02x}:{:02x}",
                random[0], random[1], random[2]
            );
            fs::write(&file, format!("{mac}\n"))
                .with_context(|| format!("writing {}", file.display()))?;
            Ok(mac)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}

/// KVM or TCG, as `--accel` says; `kernel` is what the Linux probe boots.
fn choose_accel(qemu: &Path, arg: AccelArg, kernel: Option<&Path>) -> Result<Accel> {
    match arg {
        AccelArg::Tcg => Ok(Accel::Tcg),
        AccelArg::Auto => {
            let choice = qemu::choose_accel(qemu, kernel);
            if choice.accel == Accel::Tcg {
                eprintln!("berth run: using TCG (slow): {}", choice.reason);
            }
            Ok(choice.accel)
        }
        AccelArg::Kvm => {
            let choice = qemu::choose_accel(qemu, kernel);
            if choice.accel != Accel::Kvm {
                bail!("--accel kvm: {}", choice.reason);
            }
            Ok(Accel::Kvm)
        }
    }
}

fn run_qemu(args: QemuArgs) -> Result<ExitCode> {
    let qemu_program = qemu::locate()?;
    // An artifact file that cannot be read fails here: resolving reads it.
    let boot = resolve(&args.path)?;
    if args.usb && !matches!(boot, Boot::Iso(_) | Boot::Disk(..)) {
        bail!(
            "--usb attaches an ISO or a disk image, and {} is neither",
            args.path.display()
        );
    }
    if !args.append.is_empty() && !matches!(boot, Boot::Kernel { .. }) {
        bail!(
            "--append needs a kernel booted directly (a build name), and {} is {}: its \
             command line is inside it",
            args.path.display(),
            match boot {
                Boot::Uki(_) => "a UKI",
                Boot::Iso(_) => "an ISO",
                _ => "a disk image",
            }
        );
    }
    let memory_mib = parse_mib(&args.mem)?;
    if args.cpus == 0 {
        bail!("--cpus 0: a machine needs a CPU");
    }
    let network = parse_networking(&args.networking)?;
    let forwards = args
        .publish
        .iter()
        .map(|p| parse_publish(p))
        .collect::<Result<Vec<_>>>()?;
    if !forwards.is_empty() && !matches!(network, Some((NetBackend::User, _))) {
        bail!("--publish needs --networking user");
    }
    let disks = args
        .disks
        .iter()
        .map(|d| parse_disk(d))
        .collect::<Result<Vec<_>>>()?;
    let user_data = match (&args.data, &args.data_file) {
        (Some(data), _) => Some(data.clone().into_bytes()),
        (None, Some(file)) => {
            Some(fs::read(file).with_context(|| format!("reading {}", file.display()))?)
        }
        (None, None) => None,
    };
    if let Some(fw) = &args.fw
        && !fw.is_file()
    {
        bail!("firmware {} not found", fw.display());
    }
    for forward in &forwards {
        check_port_free(forward)?;
    }

    if let Some(dir) = &args.state
        && dir.exists()
        && !dir.is_dir()
    {
        bail!("--state {}: not a directory", dir.display());
    }
    let kernel_to_probe = match &boot {
        Boot::Kernel { kernel, .. } => Some(kernel.as_path()),
        _ => None,
    };
    // Every error in the arguments comes before the probe's seconds, and
    // the probe before anything is written.
    let accel = choose_accel(&qemu_program, args.accel, kernel_to_probe)?;

    // The state: kept in --state, or thrown away at the end.
    let scratch = tempfile::Builder::new()
        .prefix("berth-run-")
        .tempdir()
        .context("creating a temporary directory")?;
    let state = match &args.state {
        Some(dir) => {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => scratch.path().to_path_buf(),
    };
    let mut machine = Machine {
        memory_mib,
        cpus: args.cpus,
        defaults: false,
        allow_reboot: true,
        ..Machine::new(&qemu_program, accel)
    };
    let uefi = args.uefi || matches!(boot, Boot::Uki(_));
    machine.firmware = match &args.fw {
        Some(fw) => Firmware::Image(fw.clone()),
        None if uefi => Firmware::Uefi(qemu::Ovmf::debian(&state.join("OVMF_VARS.fd"))?),
        None => Firmware::Bios,
    };
    // The artifact is never changed by the machine: writes to it go to a
    // throw-away overlay. What is kept goes on a --disk.
    let interface = if args.usb {
        Interface::Usb
    } else {
        Interface::Virtio
    };
    match &boot {
        Boot::Kernel {
            kernel,
            initrd,
            cmdline,
            squashfs,
        } => {
            let mut cmdline = cmdline.clone();
            for extra in &args.append {
                if !cmdline.is_empty() {
                    cmdline.push(' ');
                }
                cmdline.push_str(extra);
            }
            let mut direct = Kernel::new(kernel, &cmdline);
            direct.initrd = initrd.clone();
            machine = machine.kernel(direct);
            if let Some(image) = squashfs {
                machine = machine
                    .drive(Drive::disk(image, qemu::Format::Raw, Interface::Virtio).read_only());
            }
        }
        Boot::Iso(file) if !args.usb => machine = machine.drive(Drive::cdrom(file)),
        Boot::Iso(file) => {
            machine = machine.drive(Drive::disk(file, qemu::Format::Raw, interface).snapshot())
        }
        Boot::Disk(file, format) => {
            machine = machine.drive(Drive::disk(file, *format, interface).snapshot())
        }
        Boot::Uki(file) => machine = machine.kernel(Kernel::new(file, "")),
    }
    for (index, spec) in disks.iter().enumerate() {
        let (path, format) = prepare_disk(spec, index, &state)?;
        machine = machine.drive(Drive::disk(&path, format, Interface::Virtio));
    }
    if let Some(user_data) = &user_data {
        let file = seed::write(&state, &args.path, user_data)?;
        machine =
            machine.drive(Drive::disk(&file, qemu::Format::Raw, Interface::Virtio).read_only());
    }
    match network {
        Some((backend, restrict)) => {
            machine = machine.nic(Nic {
                backend,
                mac: Some(mac_address(&state)?),
                restrict,
                forwards,
                ..Nic::default()
            })
        }
        None => machine.no_network = true,
    }
    let monitor = scratch.path().join("monitor.sock");
    machine = machine.monitor(&monitor);

    eprintln!(
        "berth run: booting {} ({}, {}); Ctrl-C powers it off",
        boot.describe(),
        match &machine.firmware {
            Firmware::Bios => "BIOS".to_string(),
            Firmware::Uefi(_) => "UEFI".to_string(),
            Firmware::Image(file) => format!("firmware {}", file.display()),
        },
        machine.accel
    );
    let ended = launch(&machine, &monitor)?;
    drop(scratch);
    Ok(match ended {
        Ended::PoweredOff => {
            eprintln!("berth run: the machine powered off");
            ExitCode::SUCCESS
        }
        Ended::Stopped(why) => {
            eprintln!("berth run: stopped QEMU ({why})");
            ExitCode::from(130)
        }
        Ended::Failed(status) => bail!("QEMU ended with {status}"),
    })
}

/// How a run ended.
enum Ended {
    /// QEMU exited by itself with status 0: the guest powered off.
    PoweredOff,
    /// Stopped by berth, for the reason given.
    Stopped(&'static str),
    Failed(std::process::ExitStatus),
}

/// The terminal's settings while the machine runs: keys go to the guest as
/// they are typed, without the host's echo, but Ctrl-C stays a signal.
/// Dropped, it restores them, and standard input's file status flags
/// (QEMU leaves its standard output, the same terminal, non-blocking).
struct RawTerminal {
    termios: Option<rustix::termios::Termios>,
    flags: Option<rustix::fs::OFlags>,
}

impl RawTerminal {
    fn enter() -> RawTerminal {
        use rustix::termios::{InputModes, LocalModes, OptionalActions, SpecialCodeIndex};
        let stdin = io::stdin();
        let flags = rustix::fs::fcntl_getfl(&stdin).ok();
        let unchanged = RawTerminal {
            termios: None,
            flags,
        };
        if !rustix::termios::isatty(&stdin) {
            return unchanged;
        }
        let Ok(saved) = rustix::termios::tcgetattr(&stdin) else {
            return unchanged;
        };
        let mut raw = saved.clone();
        raw.local_modes.remove(
            LocalModes::ICANON | LocalModes::ECHO | LocalModes::ECHONL | LocalModes::IEXTEN,
        );
        raw.input_modes
            .remove(InputModes::ICRNL | InputModes::IXON | InputModes::INLCR);
        raw.special_codes[SpecialCodeIndex::VMIN] = 1;
        raw.special_codes[SpecialCodeIndex::VTIME] = 0;
        if rustix::termios::tcsetattr(&stdin, OptionalActions::Now, &raw).is_err() {
            return unchanged;
        }
        RawTerminal {
            termios: Some(saved),
            flags,
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let stdin = io::stdin();
        if let Some(saved) = &self.termios {
            let _ =
                rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, saved);
        }
        if let Some(flags) = self.flags {
            let _ = rustix::fs::fcntl_setfl(&stdin, flags);
        }
    }
}

/// Starts QEMU and waits for it, turning signals into power-button presses
/// and stops.
fn launch(machine: &Machine, monitor: &Path) -> Result<Ended> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
    // One socket pair for Ctrl-C, one for the signals that stop at once:
    // the handler writes a byte, which says nothing of the signal.
    let catch = |signals: &[i32]| -> Result<UnixStream> {
        let (receiver, sender) = UnixStream::pair().context("creating a socket pair")?;
        for &signal in signals {
            let sender = sender.try_clone().context("cloning a socket")?;
            signal_hook::low_level::pipe::register(signal, sender).context("catching signals")?;
        }
        receiver
            .set_nonblocking(true)
            .context("setting a socket non-blocking")?;
        Ok(receiver)
    };
    let mut interrupt = catch(&[SIGINT])?;
    let mut terminate = catch(&[SIGTERM, SIGHUP, SIGQUIT])?;
    let caught = |receiver: &mut UnixStream| {
        let mut bytes = [0u8; 16];
        receiver.read(&mut bytes).unwrap_or(0)
    };
    // QEMU dies with berth, even when berth is killed outright.
    let mut command = machine.command_tied_to_parent();
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .process_group(0);
    let terminal = RawTerminal::enter();
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", machine.command_line()))?;
    forward_input(&mut child);
    let mut pressed = false;
    let mut stopped: Option<&'static str> = None;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for QEMU")? {
            break status;
        }
        thread::sleep(Duration::from_millis(100));
        if stopped.is_some() {
            continue;
        }
        let interrupts = caught(&mut interrupt);
        if caught(&mut terminate) > 0 {
            stopped = Some("SIGTERM, SIGHUP or SIGQUIT");
        } else if interrupts > 1 || (interrupts > 0 && pressed) {
            stopped = Some("a second Ctrl-C");
        } else if interrupts == 1 {
            pressed = true;
            match qemu::monitor::send(monitor, "system_powerdown") {
                Ok(()) => eprintln!(
                    "\r\nberth run: pressed the power button (Ctrl-C again stops QEMU at once)\r"
                ),
                Err(e) => {
                    eprintln!("\r\nberth run: {}\r", oci::chain::render(&e));
                    stopped = Some("Ctrl-C, the power button failing");
                }
            }
        }
        if stopped.is_some() {
            let _ = child.kill();
        }
    };
    drop(terminal);
    Ok(match (stopped, status.success()) {
        (Some(why), _) => Ended::Stopped(why),
        (None, true) => Ended::PoweredOff,
        (None, false) if status.signal().is_some() => Ended::Stopped("a signal"),
        (None, false) => Ended::Failed(status),
    })
}

/// Copies this process's standard input to QEMU's, the serial console's
/// input, on a thread of its own. QEMU makes its standard output
/// non-blocking, which, on a terminal, is the same open file as berth's
/// standard input: a read that would block waits for input instead.
fn forward_input(child: &mut Child) {
    let Some(mut input) = child.stdin.take() else {
        return;
    };
    thread::spawn(move || {
        let stdin = io::stdin();
        let mut buffer = [0u8; 4096];
        loop {
            match rustix::io::read(&stdin, &mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    if input.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => {
                    let mut ready = [rustix::event::PollFd::new(
                        &stdin,
                        rustix::event::PollFlags::IN,
                    )];
                    let _ = rustix::event::poll(&mut ready, None);
                }
                Err(_) => break,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_memory() {
        assert_eq!(parse_mib("512").unwrap(), 512);
        assert_eq!(parse_mib("1G").unwrap(), 1024);
        assert_eq!(parse_mib("2048M").unwrap(), 2048);
        assert!(parse_mib("0").is_err());
        assert!(parse_mib("1K").is_err());
        assert!(
            parse_mib("lots")
                .unwrap_err()
                .to_string()
                .contains("--mem lots")
        );
        assert_eq!(parse_size("4G", 1 << 20).unwrap(), 4 << 30);
        assert_eq!(parse_size("100", 1 << 20).unwrap(), 100 << 20);
        assert!(parse_size("99999999999T", 1).is_err());
    }

    #[test]
    fn disks() {
        assert_eq!(
            parse_disk("data.qcow2,size=4G,format=qcow2").unwrap(),
            DiskSpec {
                path: Some("data.qcow2".into()),
                size: Some(4 << 30),
                format: Some(qemu::Format::Qcow2),
            }
        );
        assert_eq!(
            parse_disk("size=1G").unwrap(),
            DiskSpec {
                path: None,
                size: Some(1 << 30),
                format: None,
            }
        );
        assert!(
            parse_disk("a,format=zip")
                .unwrap_err()
                .to_string()
                .contains("zip")
        );
        assert!(parse_disk("a,b").is_err());
    }

    #[test]
    fn networking_and_ports() {
        assert_eq!(
            parse_networking("user").unwrap(),
            Some((NetBackend::User, false))
        );
        assert_eq!(
            parse_networking("user,restrict").unwrap(),
            Some((NetBackend::User, true))
        );
        assert_eq!(parse_networking("none").unwrap(), None);
        assert_eq!(
            parse_networking("tap,tap0").unwrap(),
            Some((
                NetBackend::Tap {
                    interface: "tap0".into()
                },
                false
            ))
        );
        assert!(parse_networking("tap").is_err());
        assert!(parse_networking("user,open").is_err());
        assert!(parse_networking("vde").is_err());
        let forward = parse_publish("2222:22").unwrap();
        assert_eq!(forward.host.to_string(), "127.0.0.1:2222");
        assert_eq!(forward.guest_port, 22);
        let forward = parse_publish("0.0.0.0:5353:53/udp").unwrap();
        assert_eq!(forward.protocol, qemu::Protocol::Udp);
        assert_eq!(forward.host.to_string(), "0.0.0.0:5353");
        assert!(parse_publish("22").is_err());
        assert!(parse_publish("2222:22/sctp").is_err());
        assert!(parse_publish("0:22").is_err());
    }

    #[test]
    fn a_taken_port_is_named() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let error = check_port_free(&parse_publish(&format!("{port}:22")).unwrap()).unwrap_err();
        assert_eq!(
            format!("{error:#}").split(':').take(2).collect::<Vec<_>>(),
            ["port 127.0.0.1", &format!("{port} cannot be published")]
        );
    }

    /// Created disks are what qemu-img, which berth did not write, reads:
    /// the format and the size asked for; existing ones are kept as they are.
    #[test]
    fn created_disks_are_read_by_qemu_img() {
        let dir = tempfile::tempdir().unwrap();
        let qcow2 = format!("{}/data.qcow2,size=4G,format=qcow2", dir.path().display());
        for (spec, format, size) in [
            (qcow2.as_str(), "qcow2", 4u64 << 30),
            // No path: a raw disk in the state directory.
            ("size=64M", "raw", 64 << 20),
        ] {
            let spec = parse_disk(spec).unwrap();
            let (path, _) = prepare_disk(&spec, 0, dir.path()).unwrap();
            assert!(path.starts_with(dir.path()), "{}", path.display());
            let Some(qemu_img) = qemu::find_program("qemu-img") else {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "qemu-img is missing"
                );
                eprintln!("skipped: qemu-img is not installed");
                return;
            };
            let output = std::process::Command::new(&qemu_img)
                .args(["info", "--output=json"])
                .arg(&path)
                .output()
                .unwrap();
            let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(info["format"], format, "{info}");
            assert_eq!(info["virtual-size"], size, "{info}");
            if format == "qcow2" {
                let check = std::process::Command::new(&qemu_img)
                    .arg("check")
                    .arg(&path)
                    .output()
                    .unwrap();
                assert!(check.status.success(), "{check:?}");
            }
            // Kept, never resized or recreated.
            let before = fs::metadata(&path).unwrap().modified().unwrap();
            let spec = DiskSpec {
                path: Some(path.clone()),
                size: Some(1 << 20),
                format: None,
            };
            let (again, found) = prepare_disk(&spec, 0, dir.path()).unwrap();
            assert_eq!(again, path);
            assert_eq!(found.name(), format);
            assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);
        }
    }

    /// A guest writes its disk's first bytes: they never decide the
    /// format a disk is attached with (a qcow2 header with a backing file
    /// would hand the guest a host file). format= and the file name do.
    #[test]
    fn a_disks_contents_never_choose_its_format() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk0.img");
        let mut bytes = b"QFI\xfb\0\0\0\x02".to_vec();
        bytes.resize(1 << 20, 0);
        fs::write(&disk, &bytes).unwrap();
        let spec = parse_disk(&disk.display().to_string()).unwrap();
        let (_, format) = prepare_disk(&spec, 0, dir.path()).unwrap();
        assert_eq!(format, qemu::Format::Raw);

        // Asked for qcow2, it must be one; by its name too.
        let named = dir.path().join("data.qcow2");
        fs::write(&named, vec![0u8; 4096]).unwrap();
        let error = prepare_disk(
            &parse_disk(&named.display().to_string()).unwrap(),
            0,
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("is not a qcow2 image"), "{error}");
        let spec = parse_disk(&format!("{},format=vhd", disk.display())).unwrap();
        let error = prepare_disk(&spec, 0, dir.path()).unwrap_err().to_string();
        assert!(error.contains("is not a vpc image"), "{error}");
    }

    /// A disk that cannot be made leaves nothing a later run would take
    /// for it.
    #[test]
    fn a_failed_disk_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spec = parse_disk(&format!("{}/huge.img,size=64T", dir.path().display())).unwrap();
        // ext4 refuses files over 16 TiB; a file system that takes it
        // holds the one whole disk.
        match prepare_disk(&spec, 0, dir.path()) {
            Err(_) => assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0),
            Ok((path, _)) => {
                assert_eq!(fs::metadata(&path).unwrap().len(), 64 << 40);
                assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
            }
        }
    }

    #[test]
    fn the_mac_address_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = mac_address(dir.path()).unwrap();
        assert!(first.starts_with("52:54:00:"), "{first}");
        assert_eq!(mac_address(dir.path()).unwrap(), first);
        fs::write(dir.path().join("mac-address"), "nonsense").unwrap();
        assert!(mac_address(dir.path()).is_err());
    }

    #[test]
    fn paths_resolve_by_content_and_build_name() {
        let dir = tempfile::tempdir().unwrap();
        let name = dir.path().join("vm");
        let missing = resolve(&name).unwrap_err().to_string();
        assert!(
            missing.contains("no such artifact") && missing.contains("vm-kernel"),
            "{missing}"
        );
        let mut kernel = vec![0u8; 1024];
        kernel[0x202..0x206].copy_from_slice(b"HdrS");
        fs::write(dir.path().join("vm-kernel"), &kernel).unwrap();
        fs::write(dir.path().join("vm-initrd.img"), b"070701").unwrap();
        fs::write(dir.path().join("vm-cmdline"), "console=ttyS0\n").unwrap();
        for path in [name.clone(), dir.path().join("vm-kernel")] {
            match resolve(&path).unwrap() {
                Boot::Kernel {
                    initrd, cmdline, ..
                } => {
                    assert_eq!(cmdline, "console=ttyS0");
                    assert_eq!(initrd, Some(dir.path().join("vm-initrd.img")));
                }
                other => panic!("{other:?}"),
            }
        }
        // A renamed disk is still a disk.
        let disk = dir.path().join("disk.iso");
        let mut mbr = vec![0u8; 4096];
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        fs::write(&disk, &mbr).unwrap();
        assert!(matches!(
            resolve(&disk).unwrap(),
            Boot::Disk(_, qemu::Format::Raw)
        ));
        let junk = dir.path().join("junk");
        fs::write(&junk, b"hello").unwrap();
        assert!(
            resolve(&junk)
                .unwrap_err()
                .to_string()
                .contains("not something berth can boot")
        );
    }
}
