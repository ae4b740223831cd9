//! A virtual machine as data, and its QEMU command line: [`Machine::args`]
//! is the one place berth writes one. The console is always the first
//! serial port on QEMU's stdio; there is no graphical display.
//!
//! Starting QEMU with it, and watching what the guest prints, is the
//! caller's: [`Machine::command`] gives the `Command` to spawn.

use std::ffi::{OsStr, OsString};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::accel::Accel;
use crate::firmware::Firmware;
use crate::guest::DEBUG_EXIT_DEVICE;
use crate::process::shell_line;

/// QEMU's machine type: the chipset the guest sees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MachineType {
    /// Q35 with PCI Express and AHCI (IDE drives become SATA drives).
    #[default]
    Q35,
    /// The i440FX "pc", with a real IDE controller.
    Pc,
}

impl MachineType {
    pub fn name(self) -> &'static str {
        match self {
            MachineType::Q35 => "q35",
            MachineType::Pc => "pc",
        }
    }
}

/// A kernel booted directly (`-kernel`), without a boot loader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub image: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
}

impl Kernel {
    pub fn new(image: &Path, cmdline: &str) -> Kernel {
        Kernel {
            image: image.to_path_buf(),
            initrd: None,
            cmdline: cmdline.to_string(),
        }
    }

    pub fn initrd(mut self, initrd: &Path) -> Self {
        self.initrd = Some(initrd.to_path_buf());
        self
    }
}

/// The format of a drive's file, as QEMU names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
    Vhd,
    Vmdk,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vhd => "vpc",
            Format::Vmdk => "vmdk",
        }
    }
}

/// How a drive is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interface {
    Virtio,
    /// IDE, or SATA on [`MachineType::Q35`]: what firmware and every kernel
    /// can read without a driver module.
    Ide,
    /// A USB stick on an xHCI controller.
    Usb,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Media {
    #[default]
    Disk,
    Cdrom,
}

/// A disk or CD-ROM backed by a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drive {
    pub file: PathBuf,
    pub format: Format,
    pub interface: Interface,
    pub media: Media,
    pub read_only: bool,
    /// Writes go to a temporary overlay that QEMU drops on exit: the file
    /// is left as it was.
    pub snapshot: bool,
}

impl Drive {
    /// A writable disk.
    pub fn disk(file: &Path, format: Format, interface: Interface) -> Drive {
        Drive {
            file: file.to_path_buf(),
            format,
            interface,
            media: Media::Disk,
            read_only: false,
            snapshot: false,
        }
    }

    /// An ISO image in a CD-ROM drive (IDE, or SATA on Q35).
    pub fn cdrom(file: &Path) -> Drive {
        Drive {
            media: Media::Cdrom,
            read_only: true,
            ..Drive::disk(file, Format::Raw, Interface::Ide)
        }
    }

    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    pub fn snapshot(mut self) -> Self {
        self.snapshot = true;
        self
    }

    /// The `-drive` value; `attachment` is `if=virtio`, `if=ide`, or
    /// `if=none,id=ID` for a drive that a `-device` attaches.
    fn option(&self, attachment: &str) -> OsString {
        let mut value = OsString::from("file=");
        value.push(option_value(&self.file));
        value.push(format!(",format={},{attachment}", self.format.name()));
        if self.media == Media::Cdrom {
            value.push(",media=cdrom");
        }
        if self.read_only {
            value.push(",readonly=on");
        }
        if self.snapshot {
            value.push(",snapshot=on");
        }
        value
    }
}

/// The model of a network card, as QEMU names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NicModel {
    #[default]
    VirtioNet,
    E1000,
    E1000e,
    Rtl8139,
}

impl NicModel {
    pub fn name(self) -> &'static str {
        match self {
            NicModel::VirtioNet => "virtio-net-pci",
            NicModel::E1000 => "e1000",
            NicModel::E1000e => "e1000e",
            NicModel::Rtl8139 => "rtl8139",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A host address forwarded to a port of the guest (`hostfwd`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortForward {
    pub protocol: Protocol,
    pub host: SocketAddrV4,
    pub guest_port: u16,
}

impl PortForward {
    /// TCP from `host_port` on 127.0.0.1, reachable from this host only.
    pub fn tcp(host_port: u16, guest_port: u16) -> PortForward {
        PortForward {
            protocol: Protocol::Tcp,
            host: SocketAddrV4::new(Ipv4Addr::LOCALHOST, host_port),
            guest_port,
        }
    }
}

/// Where a network card's traffic goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NetBackend {
    /// QEMU's user network: its DHCP server hands out 10.0.2.15, with
    /// 10.0.2.2 as the router and 10.0.2.3 as the name server; the host is
    /// 10.0.2.2 to the guest.
    #[default]
    User,
    /// An existing tap interface of the host (no scripts are run).
    Tap { interface: String },
    /// A port on a host bridge, through QEMU's bridge helper.
    Bridge { bridge: String },
}

/// A network card. The fields after `mac` apply to the user network only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Nic {
    pub model: NicModel,
    pub backend: NetBackend,
    /// `52:54:00:…`; QEMU chooses one when unset.
    pub mac: Option<String>,
    /// Nothing leaves the host (and DHCP gives no router or name server);
    /// forwarded ports still reach the guest.
    pub restrict: bool,
    pub forwards: Vec<PortForward>,
    /// A directory the user network's TFTP server serves.
    pub tftp: Option<PathBuf>,
    /// The boot file name its DHCP server hands out (for network boots).
    pub bootfile: Option<String>,
    /// The user network's IPv4 network (`net=`, e.g. `169.254.0.0/16`)
    /// instead of 10.0.2.0/24; a guest forward's address must lie in it.
    pub network: Option<String>,
    /// Guest connections to an address of the user network, each handed
    /// to a command of the host (`guestfwd`).
    pub guest_forwards: Vec<GuestForward>,
}

/// TCP connections of the guest to `address:port` on the user network,
/// each connected to a new `command` on the host, its standard input and
/// output being the connection (`guestfwd=tcp:ADDRESS:PORT-cmd:COMMAND`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestForward {
    pub address: Ipv4Addr,
    pub port: u16,
    /// A shell command line.
    pub command: String,
}

impl Nic {
    fn option(&self) -> OsString {
        let mut value = OsString::new();
        match &self.backend {
            NetBackend::User => value.push("user"),
            NetBackend::Tap { interface } => {
                value.push("tap,ifname=");
                value.push(option_value(interface));
                value.push(",script=no,downscript=no");
            }
            NetBackend::Bridge { bridge } => {
                value.push("bridge,br=");
                value.push(option_value(bridge));
            }
        }
        value.push(format!(",model={}", self.model.name()));
        if let Some(mac) = &self.mac {
            value.push(",mac=");
            value.push(option_value(mac));
        }
        if self.backend != NetBackend::User {
            return value;
        }
        if self.restrict {
            value.push(",restrict=on");
        }
        for forward in &self.forwards {
            let protocol = match forward.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            value.push(format!(
                ",hostfwd={protocol}:{}-:{}",
                forward.host, forward.guest_port
            ));
        }
        if let Some(dir) = &self.tftp {
            value.push(",tftp=");
            value.push(option_value(dir));
        }
        if let Some(file) = &self.bootfile {
            value.push(",bootfile=");
            value.push(option_value(file));
        }
        if let Some(network) = &self.network {
            value.push(",net=");
            value.push(option_value(network));
        }
        for forward in &self.guest_forwards {
            value.push(format!(
                ",guestfwd=tcp:{}:{}-cmd:",
                forward.address, forward.port
            ));
            value.push(option_value(&forward.command));
        }
        value
    }
}

/// A virtual machine: its console is the first serial port, connected to
/// QEMU's stdio.
#[derive(Clone, Debug)]
pub struct Machine {
    pub qemu: PathBuf,
    pub accel: Accel,
    pub machine_type: MachineType,
    pub firmware: Firmware,
    pub memory_mib: u32,
    pub cpus: u32,
    /// QEMU's default devices: a network card on the user network when no
    /// [`Nic`] is given, a display adapter, a CD-ROM drive. Off
    /// (`-nodefaults`), the machine has only what is described here.
    pub defaults: bool,
    pub kernel: Option<Kernel>,
    pub drives: Vec<Drive>,
    /// No card here (and [`Machine::defaults`] on) means QEMU's default
    /// card on the user network.
    pub nics: Vec<Nic>,
    /// No network card at all, whatever [`Machine::defaults`] says
    /// (`-nic none`).
    pub no_network: bool,
    /// The firmware boots from the network first (`-boot n`).
    pub network_boot: bool,
    /// A Unix socket for QEMU's human monitor (see [`crate::monitor`]).
    pub monitor: Option<PathBuf>,
    /// A reboot restarts the machine; otherwise QEMU exits (`-no-reboot`).
    pub allow_reboot: bool,
    /// The `isa-debug-exit` port, through which a guest ends QEMU with a
    /// status (see [`crate::guest`]).
    pub debug_exit: bool,
    /// Appended after everything else, for what this description does not
    /// cover.
    pub extra_args: Vec<OsString>,
}

impl Machine {
    /// Q35, BIOS, 512 MiB, one CPU, QEMU's default devices, nothing to boot
    /// yet.
    pub fn new(qemu: &Path, accel: Accel) -> Machine {
        Machine {
            qemu: qemu.to_path_buf(),
            accel,
            machine_type: MachineType::Q35,
            firmware: Firmware::Bios,
            memory_mib: 512,
            cpus: 1,
            defaults: true,
            kernel: None,
            drives: Vec::new(),
            nics: Vec::new(),
            no_network: false,
            network_boot: false,
            monitor: None,
            allow_reboot: false,
            debug_exit: false,
            extra_args: Vec::new(),
        }
    }

    pub fn kernel(mut self, kernel: Kernel) -> Self {
        self.kernel = Some(kernel);
        self
    }

    pub fn firmware(mut self, firmware: Firmware) -> Self {
        self.firmware = firmware;
        self
    }

    pub fn drive(mut self, drive: Drive) -> Self {
        self.drives.push(drive);
        self
    }

    pub fn nic(mut self, nic: Nic) -> Self {
        self.nics.push(nic);
        self
    }

    /// Gives QEMU a monitor socket at `path`.
    pub fn monitor(mut self, path: &Path) -> Self {
        self.monitor = Some(path.to_path_buf());
        self
    }

    /// QEMU's arguments for this machine.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |words: &[&str]| args.extend(words.iter().map(OsString::from));
        push(&["-machine", self.machine_type.name()]);
        push(&["-accel", self.accel.name()]);
        push(&["-m", &self.memory_mib.to_string()]);
        // One CPU is QEMU's own default: left implicit.
        if self.cpus != 1 {
            push(&["-smp", &self.cpus.to_string()]);
        }
        if !self.defaults {
            push(&["-nodefaults"]);
        }
        push(&["-nographic", "-serial", "stdio"]);
        if !self.allow_reboot {
            push(&["-no-reboot"]);
        }
        args.push("-monitor".into());
        args.push(match &self.monitor {
            Some(path) => {
                let mut value = OsString::from("unix:");
                value.push(option_value(path));
                value.push(",server,nowait");
                value
            }
            None => "none".into(),
        });
        args.extend(self.firmware.args());
        if let Some(kernel) = &self.kernel {
            args.push("-kernel".into());
            args.push(kernel.image.clone().into_os_string());
            if let Some(initrd) = &kernel.initrd {
                args.push("-initrd".into());
                args.push(initrd.clone().into_os_string());
            }
            args.push("-append".into());
            args.push(kernel.cmdline.clone().into());
        }
        if self
            .drives
            .iter()
            .any(|drive| drive.interface == Interface::Usb)
        {
            args.extend(["-device", "qemu-xhci,id=usb"].map(OsString::from));
        }
        for (index, drive) in self.drives.iter().enumerate() {
            args.push("-drive".into());
            match drive.interface {
                Interface::Virtio => args.push(drive.option("if=virtio")),
                Interface::Ide => args.push(drive.option("if=ide")),
                Interface::Usb => {
                    let id = format!("drive{index}");
                    args.push(drive.option(&format!("if=none,id={id}")));
                    args.push("-device".into());
                    args.push(format!("usb-storage,bus=usb.0,drive={id}").into());
                }
            }
        }
        for nic in &self.nics {
            args.push("-nic".into());
            args.push(nic.option());
        }
        if self.no_network {
            args.extend(["-nic", "none"].map(OsString::from));
        }
        if self.network_boot {
            args.extend(["-boot", "n"].map(OsString::from));
        }
        if self.debug_exit {
            args.push("-device".into());
            args.push(DEBUG_EXIT_DEVICE.into());
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.qemu);
        command.args(self.args());
        command
    }

    /// [`Machine::command`], but QEMU is killed when the thread that
    /// starts it ends, however its process ends (SIGKILL included): the
    /// parent-death signal, which util-linux's `setpriv` sets before it
    /// becomes QEMU. Without `setpriv`, the plain command.
    pub fn command_tied_to_parent(&self) -> Command {
        let Some(setpriv) = crate::find_program("setpriv") else {
            return self.command();
        };
        let mut command = Command::new(setpriv);
        command
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&self.qemu)
            .args(self.args());
        command
    }

    /// The command line, quoted for a POSIX shell, to rerun a boot by hand.
    pub fn command_line(&self) -> String {
        shell_line(&self.command())
    }
}

/// `value` (a path, a name) as a value inside a QEMU option list, where a
/// comma separates options and `,,` stands for a comma.
pub(crate) fn option_value(value: impl AsRef<OsStr>) -> OsString {
    let mut escaped = Vec::new();
    for &byte in value.as_ref().as_bytes() {
        escaped.push(byte);
        if byte == b',' {
            escaped.push(b',');
        }
    }
    OsString::from_vec(escaped)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::firmware::Ovmf;

    fn machine() -> Machine {
        Machine::new(Path::new("qemu-system-x86_64"), Accel::Tcg)
    }

    fn direct_kernel() -> Machine {
        machine().kernel(
            Kernel::new(Path::new("out/a-kernel"), "console=ttyS0 root=it's")
                .initrd(Path::new("out/a-initrd.img")),
        )
    }

    /// One machine description, and the exact command line it gives.
    fn check(description: &str, machine: Machine, expected: &str) {
        assert_eq!(machine.command_line(), expected, "{description}");
    }

    #[test]
    fn descriptions_give_their_command_lines() {
        check(
            "a kernel booted directly: the boot tests' machine",
            direct_kernel(),
            "qemu-system-x86_64 -machine q35 -accel tcg -m 512 -nographic -serial stdio \
             -no-reboot -monitor none -kernel out/a-kernel -initrd out/a-initrd.img \
             -append 'console=ttyS0 root=it'\\''s'",
        );
        check(
            "a machine that may reboot, with a monitor, sized",
            Machine {
                allow_reboot: true,
                memory_mib: 1024,
                cpus: 2,
                accel: Accel::Kvm,
                ..direct_kernel().monitor(Path::new("/run/vm,1.sock"))
            },
            "qemu-system-x86_64 -machine q35 -accel kvm -m 1024 -smp 2 -nographic -serial stdio \
             -monitor unix:/run/vm,,1.sock,server,nowait -kernel out/a-kernel \
             -initrd out/a-initrd.img -append 'console=ttyS0 root=it'\\''s'",
        );
        check(
            "the probe: nothing but the exit port",
            Machine {
                memory_mib: 64,
                defaults: false,
                debug_exit: true,
                ..machine().kernel(Kernel::new(Path::new("probe.bin"), ""))
            },
            "qemu-system-x86_64 -machine q35 -accel tcg -m 64 -nodefaults -nographic \
             -serial stdio -no-reboot -monitor none -kernel probe.bin -append '' \
             -device isa-debug-exit,iobase=0xf4,iosize=0x04",
        );
        check(
            "an ISO on UEFI",
            machine()
                .firmware(Firmware::Uefi(Ovmf {
                    code: "/fw/OVMF_CODE_4M.fd".into(),
                    vars: "vm/vars.fd".into(),
                }))
                .drive(Drive::cdrom(Path::new("out/a.iso"))),
            "qemu-system-x86_64 -machine q35 -accel tcg -m 512 -nographic -serial stdio \
             -no-reboot -monitor none \
             -drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/OVMF_CODE_4M.fd \
             -drive if=pflash,format=raw,unit=1,file=vm/vars.fd \
             -drive file=out/a.iso,format=raw,if=ide,media=cdrom,readonly=on",
        );
        check(
            "disks of every kind, on the i440FX",
            Machine {
                machine_type: MachineType::Pc,
                ..machine()
                    .drive(
                        Drive::disk(Path::new("a,b.qcow2"), Format::Qcow2, Interface::Virtio)
                            .snapshot(),
                    )
                    .drive(Drive::disk(Path::new("c.vhd"), Format::Vhd, Interface::Ide).read_only())
                    .drive(Drive::disk(
                        Path::new("usb.img"),
                        Format::Raw,
                        Interface::Usb,
                    ))
                    .drive(Drive::disk(
                        Path::new("usb2.vmdk"),
                        Format::Vmdk,
                        Interface::Usb,
                    ))
            },
            "qemu-system-x86_64 -machine pc -accel tcg -m 512 -nographic -serial stdio \
             -no-reboot -monitor none \
             -device qemu-xhci,id=usb \
             -drive file=a,,b.qcow2,format=qcow2,if=virtio,snapshot=on \
             -drive file=c.vhd,format=vpc,if=ide,readonly=on \
             -drive file=usb.img,format=raw,if=none,id=drive2 \
             -device usb-storage,bus=usb.0,drive=drive2 \
             -drive file=usb2.vmdk,format=vmdk,if=none,id=drive3 \
             -device usb-storage,bus=usb.0,drive=drive3",
        );
        check(
            "network cards, the first with forwarded ports; extra arguments last",
            Machine {
                extra_args: vec!["-device".into(), "virtio-rng-pci".into()],
                ..machine()
                    .nic(Nic {
                        restrict: true,
                        forwards: vec![
                            PortForward::tcp(2222, 22),
                            PortForward {
                                protocol: Protocol::Udp,
                                host: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 5353),
                                guest_port: 53,
                            },
                        ],
                        ..Nic::default()
                    })
                    .nic(Nic {
                        model: NicModel::E1000,
                        ..Nic::default()
                    })
            },
            "qemu-system-x86_64 -machine q35 -accel tcg -m 512 -nographic -serial stdio \
             -no-reboot -monitor none \
             -nic user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22,\
             hostfwd=udp:0.0.0.0:5353-:53 \
             -nic user,model=e1000 -device virtio-rng-pci",
        );
        check(
            "a network boot: TFTP and a boot file, a fixed MAC, a tap and a bridge",
            Machine {
                network_boot: true,
                defaults: false,
                ..machine()
                    .firmware(Firmware::Image("fw/OVMF.fd".into()))
                    .nic(Nic {
                        mac: Some("52:54:00:12:34:56".into()),
                        restrict: true,
                        tftp: Some("tftp,root".into()),
                        bootfile: Some("boot.ipxe".into()),
                        ..Nic::default()
                    })
                    .nic(Nic {
                        backend: NetBackend::Tap {
                            interface: "tap0".into(),
                        },
                        // Ignored: not the user network.
                        restrict: true,
                        ..Nic::default()
                    })
                    .nic(Nic {
                        backend: NetBackend::Bridge {
                            bridge: "br0".into(),
                        },
                        model: NicModel::E1000,
                        ..Nic::default()
                    })
            },
            "qemu-system-x86_64 -machine q35 -accel tcg -m 512 -nodefaults -nographic \
             -serial stdio -no-reboot -monitor none -bios fw/OVMF.fd \
             -nic user,model=virtio-net-pci,mac=52:54:00:12:34:56,restrict=on,tftp=tftp,,root,\
             bootfile=boot.ipxe \
             -nic tap,ifname=tap0,script=no,downscript=no,model=virtio-net-pci \
             -nic bridge,br=br0,model=e1000 -boot n",
        );
        check(
            "a user network of the caller's, with a guest forward to a host command",
            machine().nic(Nic {
                network: Some("169.254.0.0/16".into()),
                guest_forwards: vec![GuestForward {
                    address: Ipv4Addr::new(169, 254, 169, 254),
                    port: 80,
                    command: "socat STDIO TCP:127.0.0.1:8080,nodelay".into(),
                }],
                ..Nic::default()
            }),
            "qemu-system-x86_64 -machine q35 -accel tcg -m 512 -nographic -serial stdio \
             -no-reboot -monitor none -nic 'user,model=virtio-net-pci,net=169.254.0.0/16,\
             guestfwd=tcp:169.254.169.254:80-cmd:socat STDIO TCP:127.0.0.1:8080,,nodelay'",
        );
        check(
            "no network at all",
            Machine {
                no_network: true,
                ..machine()
            },
            "qemu-system-x86_64 -machine q35 -accel tcg -m 512 -nographic -serial stdio \
             -no-reboot -monitor none -nic none",
        );
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port()
    }

    /// QEMU itself accepts every kind of drive and card the description
    /// writes: the probe guest, given them all, still exits as planned.
    #[test]
    fn qemu_accepts_every_device_described() {
        let Some(qemu) = crate::tests::qemu_or_skip() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str| {
            let path = dir.path().join(name);
            std::fs::File::create(&path)
                .unwrap()
                .set_len(1 << 20)
                .unwrap();
            path
        };
        let guest = dir.path().join("guest.bin");
        std::fs::write(&guest, crate::guest::image(b"", true)).unwrap();
        let mut machine = Machine {
            memory_mib: 128,
            cpus: 2,
            debug_exit: true,
            ..Machine::new(&qemu, Accel::Tcg)
                .kernel(Kernel::new(&guest, ""))
                .monitor(&dir.path().join("monitor,1.sock"))
                .drive(Drive::disk(
                    &file("virtio,1.img"),
                    Format::Raw,
                    Interface::Virtio,
                ))
                .drive(Drive::disk(&file("ide.img"), Format::Raw, Interface::Ide).snapshot())
                .drive(Drive::disk(&file("usb.img"), Format::Raw, Interface::Usb).read_only())
                .drive(Drive::cdrom(&file("cd.iso")))
                .nic(Nic {
                    restrict: true,
                    forwards: vec![PortForward::tcp(free_port(), 22)],
                    ..Nic::default()
                })
                .nic(Nic {
                    model: NicModel::E1000,
                    ..Nic::default()
                })
        };
        for (machine_type, defaults) in [(MachineType::Q35, true), (MachineType::Pc, false)] {
            machine.machine_type = machine_type;
            machine.defaults = defaults;
            let output =
                crate::output_with_timeout(&mut machine.command(), Duration::from_secs(60))
                    .unwrap();
            assert_eq!(
                output.status.code(),
                Some(crate::guest::EXIT_STATUS),
                "{}\n{}",
                machine.command_line(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}
