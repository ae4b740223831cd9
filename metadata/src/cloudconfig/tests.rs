//! cloud-config applied to a temporary root, with cloud-init's documented
//! examples and the broken inputs the issue names.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::rc::Rc;

use super::system::{Mount, Outcome, Recorder};
use super::*;
use crate::found::{Metadata, Source};

impl System for Rc<Recorder> {
    fn mount(&self, mount: &Mount) -> std::io::Result<()> {
        (**self).mount(mount)
    }
    fn sethostname(&self, name: &str) -> std::io::Result<()> {
        (**self).sethostname(name)
    }
    fn run(
        &self,
        command: &system::Command,
        line: &mut dyn FnMut(&str),
    ) -> std::io::Result<Outcome> {
        (**self).run(command, line)
    }
    fn log(&self, line: &str) {
        (**self).log(line)
    }
}

struct Fixture {
    root: tempfile::TempDir,
    system: Rc<Recorder>,
}

impl Fixture {
    fn new() -> Fixture {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        // berth's own /etc (images/init/etc).
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(etc.join("group"), "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n").unwrap();
        std::fs::write(
            etc.join("shadow"),
            "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
        )
        .unwrap();
        for dir in ["root", "nonexistent"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        Fixture {
            root,
            system: Rc::new(Recorder::default()),
        }
    }

    fn running_commands() -> Fixture {
        let mut fixture = Fixture::new();
        fixture.system = Rc::new(Recorder {
            run_commands: true,
            ..Recorder::default()
        });
        fixture
    }

    fn apply(&self, id: Option<&str>, user_data: &[u8]) -> Vec<String> {
        self.apply_found(&found(id, Some(user_data), None))
    }

    fn apply_found(&self, found: &Found) -> Vec<String> {
        let before = self.system.lines.borrow().len();
        let host = Host {
            root: self.root.path().to_path_buf(),
            system: Box::new(self.system.clone()),
        };
        apply(found, &host);
        let lines = self.system.lines.borrow()[before..].to_vec();
        // Shown when a test fails.
        for line in &lines {
            eprintln!("log: {line}");
        }
        lines
    }

    fn path(&self, path: &str) -> std::path::PathBuf {
        files::under(self.root.path(), path)
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.path(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn commands(&self) -> Vec<String> {
        self.system
            .commands
            .borrow()
            .iter()
            .map(|argv| argv.last().cloned().unwrap_or_default())
            .collect()
    }
}

fn found(id: Option<&str>, user_data: Option<&[u8]>, vendor_data: Option<&[u8]>) -> Found {
    Found {
        source: Source::NoCloud,
        origin: "test".into(),
        metadata: Metadata {
            instance_id: id.map(str::to_string),
            local_hostname: Some("from-metadata".into()),
            ..Metadata::default()
        },
        user_data: user_data.map(<[u8]>::to_vec),
        vendor_data: vendor_data.map(<[u8]>::to_vec),
        network: None,
    }
}

/// Each of `expected` is a whole line of the log.
fn assert_logged(lines: &[String], expected: &[&str]) {
    for line in expected {
        assert!(
            lines.iter().any(|l| l == line),
            "{line:?} not in\n{}",
            lines.join("\n")
        );
    }
}

/// A SHA-512 crypt hash made by openssl, not by berth.
fn password_hash() -> String {
    match Command::new("openssl")
        .args(["passwd", "-6", "-salt", "saltsalt", "secret"])
        .output()
    {
        Ok(out) if out.status.success() => {
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        }
        other => {
            crate::test_support::skip(&format!("openssl: {other:?}"));
            "$6$saltsalt$0123456789abcdef".to_string()
        }
    }
}

/// `printf TEXT | gzip | base64`: an encoding made by the usual tools.
fn gzip_base64(text: &str) -> Option<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf '%s' '{text}' | gzip -c | base64 -w0"))
        .output()
        .ok()
        .filter(|o| o.status.success());
    if out.is_none() {
        crate::test_support::skip("gzip and base64 are needed");
    }
    out.map(|o| String::from_utf8(o.stdout).unwrap())
}

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk0mdjJvJH8fOPnSwTwNcXoGgGoMf8Ft3TLFVdkGE3z alice@example";

/// cloud-init's documented examples for users, write_files and runcmd, in
/// one document.
fn document(hash: &str, gz_b64: &str) -> String {
    format!(
        r#"#cloud-config
hostname: web01
fqdn: web01.example.org
manage_etc_hosts: true
timezone: Europe/Berlin
ntp:
  enabled: true
  servers: [ntp.example.org]
  pools: [0.pool.ntp.org]
ssh_authorized_keys:
  - {KEY}
groups:
  - admingroup: [root, sys]
  - cloud-users
users:
  - default
  - name: foobar
    gecos: Foo B. Bar
    primary_group: foobar
    groups: users
    expiredate: '2032-09-01'
    lock_passwd: false
    passwd: {hash}
  - name: barfoo
    gecos: Bar B. Foo
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    groups: [users, admin]
    ssh_authorized_keys:
      - {KEY}
  - name: cloudy
    gecos: Magic Cloud App Daemon User
    inactive: '5'
    system: true
packages: [nginx]
write_files:
  - encoding: b64
    content: CiMgVGhpcyBmaWxlIGNvbnRyb2xzIHRoZSBzdGF0ZSBvZiBTRUxpbnV4...
    owner: root:root
    path: /etc/sysconfig/selinux
    permissions: '0644'
  - content: |
      # My new /etc/sysconfig/samba file

      SMBDOPTIONS="-D"
    path: /etc/sysconfig/samba
  - path: /home/barfoo/notes.txt
    content: owned by barfoo
    owner: barfoo:barfoo
    permissions: '0600'
  - path: /etc/motd.d/zipped
    encoding: gz+b64
    content: {gz_b64}
  - path: /etc/motd
    content: "line one\n"
    append: true
  # cloud-init's example writes /usr/bin/hello, which the metadata
  # container does not share with the host.
  - encoding: gzip
    content: !!binary |
        H4sIAIDb/U8C/1NW1E/KzNMvzuBKTc7IV8hIzcnJVyjPL8pJ4QIA6N+MVxsAAAA=
    path: /var/lib/app/hello
    permissions: '0755'
  - path: /etc/deferred
    content: last
    defer: true
    permissions: 0755
bootcmd:
  - echo booting
runcmd:
  - [ ls, -l, / ]
  - [ sh, -xc, "echo $(date) ': hello world!'" ]
  - ls -l /root
"#
    )
}

fn sys_group(fixture: &Fixture) {
    // The example's admingroup names `sys`, which berth's /etc lacks.
    let etc = fixture.path("/etc");
    let mut passwd = std::fs::read_to_string(etc.join("passwd")).unwrap();
    passwd.push_str("sys:x:3:3:sys:/dev:/usr/sbin/nologin\n");
    std::fs::write(etc.join("passwd"), passwd).unwrap();
    let mut shadow = std::fs::read_to_string(etc.join("shadow")).unwrap();
    shadow.push_str("sys:*:19000:0:99999:7:::\n");
    std::fs::write(etc.join("shadow"), shadow).unwrap();
    let mut group = std::fs::read_to_string(etc.join("group")).unwrap();
    group.push_str("sys:x:3:\n");
    std::fs::write(etc.join("group"), group).unwrap();
}

#[test]
fn documented_examples_apply_once_per_instance() {
    let Some(gz_b64) = gzip_base64("zipped motd") else {
        return;
    };
    let fixture = Fixture::new();
    sys_group(&fixture);
    std::fs::write(fixture.path("/etc/motd"), "line zero\n").unwrap();
    let hash = password_hash();
    // The first line is illegible base64 in cloud-init's docs ("..."):
    // a valid one instead.
    let text = document(&hash, &gz_b64).replace(
        "CiMgVGhpcyBmaWxlIGNvbnRyb2xzIHRoZSBzdGF0ZSBvZiBTRUxpbnV4...",
        "CiMgVGhpcyBmaWxlIGNvbnRyb2xzIHRoZSBzdGF0ZSBvZiBTRUxpbnV4Cg==",
    );
    let lines = fixture.apply(Some("i-1"), text.as_bytes());
    let joined = lines.join("\n");
    assert_logged(
        &lines,
        &[
            "cloud-config: packages is not supported; skipped",
            "cloud-config: users[1].expiredate is not supported; skipped",
            "cloud-config: users[3].inactive is not supported; skipped",
            "cloud-config: users: default: berth has no default user; nothing made for it",
            "cloud-config: host name web01",
            "cloud-config: instance ID i-1 applied",
            "bootcmd[0]: ran /bin/sh -c echo booting",
            "runcmd[0]: ran ls -l /",
        ],
    );
    // Users: accepted by pwck and grpck.
    crate::etc::tests::check_with_pwck(fixture.root.path());
    let passwd = fixture.read("/etc/passwd");
    assert!(
        passwd.contains("foobar:x:1000:1002:Foo B. Bar:/home/foobar:/bin/sh\n"),
        "{passwd}"
    );
    assert!(
        passwd.contains("barfoo:x:1001:1004:Bar B. Foo:/home/barfoo:/bin/sh\n"),
        "{passwd}"
    );
    assert!(passwd.contains("cloudy:x:100:"), "{passwd}");
    let shadow = fixture.read("/etc/shadow");
    assert!(shadow.contains(&format!("foobar:{hash}:")), "{shadow}");
    assert!(shadow.contains("barfoo:*:"), "{shadow}");
    let group = fixture.read("/etc/group");
    // The groups first (1000, 1001), then each user's own group, its gid
    // the uid when that is free.
    assert!(
        group.contains("admingroup:x:1000:root,sys\ncloud-users:x:1001:\nfoobar:x:1002:\n"),
        "{group}"
    );
    for line in ["cloud-users:x:", "users:x:", "admin:x:"] {
        assert!(group.contains(line), "{line} in {group}");
    }
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("users:") && l.ends_with(":foobar,barfoo")),
        "{group}"
    );
    // Homes and keys.
    let keys = fixture.path("/home/barfoo/.ssh/authorized_keys");
    let meta = std::fs::metadata(&keys).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(meta.uid(), 1001);
    assert_eq!(
        std::fs::metadata(fixture.path("/home/barfoo/.ssh"))
            .unwrap()
            .mode()
            & 0o7777,
        0o700
    );
    assert_eq!(std::fs::read_to_string(&keys).unwrap(), format!("{KEY}\n"));
    assert!(fixture.path("/home/foobar").is_dir());
    assert!(
        !fixture.path("/home/cloudy").exists(),
        "a system user gets no home"
    );
    assert_eq!(
        fixture.read(users::SUDOERS).lines().last(),
        Some("barfoo ALL=(ALL) NOPASSWD:ALL")
    );
    // Files.
    assert_eq!(
        fixture.read("/etc/sysconfig/selinux"),
        "\n# This file controls the state of SELinux\n"
    );
    assert!(
        fixture
            .read("/etc/sysconfig/samba")
            .starts_with("# My new /etc/sysconfig/samba file\n")
    );
    let notes = std::fs::metadata(fixture.path("/home/barfoo/notes.txt")).unwrap();
    assert_eq!(
        (notes.uid(), notes.gid(), notes.mode() & 0o7777),
        (1001, 1004, 0o600)
    );
    assert_eq!(fixture.read("/etc/motd.d/zipped"), "zipped motd");
    assert_eq!(
        fixture.read("/var/lib/app/hello"),
        "#!/bin/sh\necho hello world\n"
    );
    assert_eq!(fixture.read("/etc/motd"), "line zero\nline one\n");
    assert_eq!(
        std::fs::metadata(fixture.path("/etc/deferred"))
            .unwrap()
            .mode()
            & 0o7777,
        0o755
    );
    // Deferred: after the other files and the time zone, before runcmd
    // (cloud-init's write_files_deferred before scripts_user).
    let position = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap();
    assert!(
        position("wrote /etc/deferred") > position("wrote /etc/motd ("),
        "{joined}"
    );
    assert!(
        position("wrote /etc/deferred") > position("timezone Europe/Berlin"),
        "{joined}"
    );
    assert!(
        position("wrote /etc/deferred") < position("runcmd[0]"),
        "{joined}"
    );
    assert!(
        position("user barfoo made") < position("wrote /home/barfoo/notes.txt"),
        "{joined}"
    );
    // Host name, hosts, time zone, ntp, root's keys.
    assert_eq!(*fixture.system.hostnames.borrow(), ["web01"]);
    assert_eq!(fixture.read("/etc/hostname"), "web01\n");
    // For the dhcp image, which then leaves it alone at a renewal.
    assert_eq!(fixture.read("/run/config/hostname"), "web01");
    assert!(
        fixture
            .read("/etc/hosts")
            .contains("127.0.1.1 web01.example.org web01\n")
    );
    assert_eq!(fixture.read("/etc/timezone"), "Europe/Berlin\n");
    assert_eq!(
        std::fs::read_link(fixture.path("/etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/Europe/Berlin")
    );
    assert_eq!(
        fixture.read("/run/config/ntp/servers"),
        "ntp.example.org\npool 0.pool.ntp.org\n"
    );
    assert_eq!(
        fixture.read("/run/config/ssh/authorized_keys"),
        format!("{KEY}\n")
    );
    assert_eq!(
        files::mode_of(&fixture.path("/run/config/ssh")),
        Some(0o700)
    );
    assert_eq!(
        files::mode_of(&fixture.path("/run/config/ssh/authorized_keys")),
        Some(0o600)
    );
    assert_eq!(fixture.read("/run/berth/cloud-config/instance-id"), "i-1\n");
    // The writable /etc and /home were mounted first.
    let mounts = fixture.system.mounts.borrow().clone();
    assert_eq!(
        mounts.iter().map(|m| m.target.clone()).collect::<Vec<_>>(),
        [fixture.path("/etc"), fixture.path("/home")]
    );

    // The same instance again: only the per-boot keys.
    fixture.system.commands.borrow_mut().clear();
    let passwd_before = fixture.read("/etc/passwd");
    std::fs::remove_file(fixture.path("/etc/sysconfig/samba")).unwrap();
    let again = fixture.apply(Some("i-1"), text.as_bytes());
    assert!(
        again.contains(
            &"cloud-config: instance ID i-1 already applied; nothing to do but the per-boot keys"
                .to_string()
        ),
        "{again:?}"
    );
    assert_eq!(fixture.commands(), ["echo booting"]);
    assert!(!fixture.path("/etc/sysconfig/samba").exists());
    assert_eq!(fixture.read("/etc/passwd"), passwd_before);
    assert_eq!(fixture.read("/etc/motd"), "line zero\nline one\n");
    assert_eq!(fixture.system.hostnames.borrow().len(), 2);

    // A new instance: applied again; the users are there already.
    fixture.system.commands.borrow_mut().clear();
    let new = fixture.apply(Some("i-2"), text.as_bytes());
    assert!(
        new.contains(
            &"cloud-config: user barfoo exists; only its groups and keys are added".to_string()
        ),
        "{new:?}"
    );
    assert_eq!(fixture.commands().len(), 4);
    assert!(fixture.path("/etc/sysconfig/samba").exists());
    assert_eq!(fixture.read("/etc/passwd"), passwd_before);
    assert_eq!(fixture.read("/etc/motd"), "line zero\nline one\nline one\n");
    assert_eq!(fixture.read("/run/berth/cloud-config/instance-id"), "i-2\n");
    crate::etc::tests::check_with_pwck(fixture.root.path());
}

/// Each broken input is one logged line naming it, and nothing is
/// applied: no file, no account, no command, no host name.
#[test]
fn broken_documents_apply_nothing() {
    // The valid keys first, write_files last so a broken entry can follow.
    let valid =
        "hostname: x\nruncmd: [echo hi]\nwrite_files:\n  - {path: /etc/first, content: a}\n";
    for (broken, expected) in [
        (
            "users:\n  - name: a\n   bad: [\n",
            "cloud-config: user data:",
        ),
        (
            "  - {path: /etc/x, content: '!!!', encoding: b64}\n",
            "write_files[1].content (/etc/x): not valid base64",
        ),
        (
            "  - {path: /etc/x, content: 'aGk=', encoding: rot13}\n",
            "write_files[1].content (/etc/x): encoding \"rot13\" is not one of",
        ),
        (
            "  - {path: /etc/x, owner: 'nobody-here:root'}\n",
            "write_files[1].owner (/etc/x): no user \"nobody-here\"",
        ),
        (
            "  - {path: /etc/x, owner: 'root:wheel'}\n",
            "write_files[1].owner (/etc/x): no group \"wheel\"",
        ),
        (
            "  - {path: etc/x}\n",
            "write_files[1].path: \"etc/x\" is not an absolute path",
        ),
        (
            "  - {path: /etc/../root/x}\n",
            "write_files[1].path: \"/etc/../root/x\" has a `..` component",
        ),
        (
            "  - {path: /etc/x, permissions: '0999'}\n",
            "write_files[1].permissions (/etc/x): \"0999\" is not an octal mode",
        ),
        (
            "timezone: ../../etc/shadow\n",
            "timezone: \"../../etc/shadow\" is not a zone name",
        ),
        (
            "users: [{name: alice}, {name: 'bad:name'}]\n",
            "users[1].name: \"bad:name\" is not a valid user name",
        ),
        (
            "fqdn: bad_host!.example\n",
            "fqdn: \"bad_host!.example\" is not a valid host name",
        ),
        (
            "users: [{name: alice, uid: 65534}]\n",
            "users[0].uid: 65534 is taken",
        ),
        ("bootcmd: [[]]\n", "bootcmd[0]: an empty command"),
        (
            "  - {path: /usr/local/bin/x, content: a}\n",
            "write_files[1].path: \"/usr/local/bin/x\" is not under /etc, /home, /run, /var or /tmp, the directories the metadata container shares with the host",
        ),
        (
            "  - {path: /root/.profile, content: a}\n",
            "write_files[1].path: \"/root/.profile\" is not under /etc, /home, /run, /var or /tmp",
        ),
        (
            "mounts: [[vdb, /mnt/data]]\n",
            "mounts[0]: mount point \"/mnt/data\" is not under /etc, /home, /run, /var or /tmp",
        ),
    ] {
        let fixture = Fixture::new();
        let text = format!("#cloud-config\n{valid}{broken}");
        let passwd = fixture.read("/etc/passwd");
        let lines = fixture.apply(Some("i-1"), text.as_bytes());
        let problems: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("nothing applied"))
            .collect();
        assert_eq!(problems.len(), 1, "{text}\n{lines:#?}");
        assert!(
            problems[0].contains(expected),
            "{expected:?} not in {:?}\n{text}",
            problems[0]
        );
        assert!(!fixture.path("/etc/first").exists(), "{text}");
        assert!(fixture.system.commands.borrow().is_empty());
        assert!(fixture.system.hostnames.borrow().is_empty());
        assert_eq!(fixture.read("/etc/passwd"), passwd);
        assert!(!fixture.path("/run/berth/cloud-config/instance-id").exists());
    }
}

#[test]
fn invalid_yaml_is_one_line_with_its_position() {
    let fixture = Fixture::new();
    let lines = fixture.apply(Some("i-1"), b"#cloud-config\nhostname: a\nruncmd: [echo\n");
    let problems: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("nothing applied"))
        .collect();
    assert_eq!(problems.len(), 1, "{lines:?}");
    assert_eq!(
        problems[0],
        "cloud-config: user data:3:9: unclosed bracket '['; nothing applied"
    );
    assert!(fixture.system.hostnames.borrow().is_empty());
}

/// Commands run for real: their output in the log and in
/// cloud-init-output.log, a failure with its status.
#[test]
fn commands_are_logged() {
    let fixture = Fixture::running_commands();
    let lines = fixture.apply(
        Some("i-1"),
        b"#cloud-config\nbootcmd: [echo from bootcmd]\nruncmd:\n  - echo out; echo err >&2\n  - [sh, -c, 'exit 7']\n",
    );
    assert_logged(
        &lines,
        &[
            "bootcmd[0]: from bootcmd",
            "runcmd[0]: out",
            "runcmd[0]: err",
            "cloud-config: runcmd[1] failed with exit status 7",
        ],
    );
    assert_eq!(fixture.read(OUTPUT_LOG), "from bootcmd\nout\nerr\n");
}

/// MIME user data from Python's email package: its cloud-config applied
/// and its script run (through its interpreter) once per instance; vendor
/// data under it.
#[test]
fn mime_user_data_and_vendor_data() {
    let program = r##"
import sys
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
outer = MIMEMultipart()
for name, subtype, text in [("c.yaml", "cloud-config", "#cloud-config\nhostname: from-user\n"),
                            ("setup.sh", "x-shellscript", "#!/bin/sh -e\necho set up\n")]:
    part = MIMEText(text, subtype, "utf-8")
    part.add_header("Content-Disposition", "attachment", filename=name)
    outer.attach(part)
sys.stdout.write(outer.as_string())
"##;
    let mime = match Command::new("python3").arg("-c").arg(program).output() {
        Ok(out) if out.status.success() => out.stdout,
        other => {
            crate::test_support::skip(&format!("python3: {other:?}"));
            return;
        }
    };
    let fixture = Fixture::new();
    let vendor = b"#cloud-config\nhostname: from-vendor\ntimezone: UTC\npackage_update: true\n";
    let lines = fixture.apply_found(&found(Some("i-1"), Some(&mime), Some(vendor)));
    assert!(
        lines.contains(&"cloud-config: package_update is not supported; skipped".to_string()),
        "{lines:?}"
    );
    assert_eq!(*fixture.system.hostnames.borrow(), ["from-user"]);
    assert_eq!(fixture.read("/etc/timezone"), "UTC\n");
    let commands = fixture.system.commands.borrow().clone();
    assert_eq!(
        commands,
        [vec![
            "/bin/sh".to_string(),
            "-e".into(),
            fixture
                .path("/run/berth/cloud-config/scripts/setup.sh")
                .display()
                .to_string()
        ]]
    );
    assert_eq!(
        fixture.read("/run/berth/cloud-config/scripts/setup.sh"),
        "#!/bin/sh -e\necho set up\n"
    );
    // Broken vendor data is ignored; the user data still applies.
    let fixture = Fixture::new();
    let lines = fixture.apply_found(&found(
        Some("i-1"),
        Some(b"#cloud-config\nhostname: u\n"),
        Some(b"#cloud-config\n: [\n"),
    ));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("cloud-config: vendor data:")
                && l.ends_with("; vendor data ignored")),
        "{lines:?}"
    );
    assert_eq!(*fixture.system.hostnames.borrow(), ["u"]);
}

#[test]
fn metadata_host_name_without_user_data_and_no_instance_id() {
    let fixture = Fixture::new();
    let lines = fixture.apply_found(&found(None, None, None));
    assert!(
        lines.contains(
            &"cloud-config: no instance ID: everything applies at every boot".to_string()
        ),
        "{lines:?}"
    );
    assert_eq!(*fixture.system.hostnames.borrow(), ["from-metadata"]);
    assert_eq!(fixture.read("/etc/hostname"), "from-metadata\n");
    // The metadata's name is run_config's to write there.
    assert!(!fixture.path("/run/config/hostname").exists());
}

#[test]
fn a_bad_host_name_in_the_metadata_is_only_logged() {
    let fixture = Fixture::new();
    let mut found = found(Some("i-1"), Some(b"#cloud-config\ntimezone: UTC\n"), None);
    found.metadata.local_hostname = Some("bad name!".into());
    let lines = fixture.apply_found(&found);
    assert_logged(
        &lines,
        &[
            "cloud-config: metadata's host name: \"bad name!\" is not a valid host name; the host name is left as it is",
        ],
    );
    assert!(fixture.system.hostnames.borrow().is_empty());
    assert_eq!(fixture.read("/etc/timezone"), "UTC\n");
}

/// The state directory is on the disk when /var/lib is one.
#[test]
fn state_on_a_persistent_var_lib() {
    let fixture = Fixture::new();
    std::fs::create_dir_all(fixture.path("/proc/self")).unwrap();
    std::fs::write(
        fixture.path("/proc/self/mountinfo"),
        "22 1 0:20 / / ro - squashfs /dev/root ro\n30 22 8:1 / /var/lib rw - ext4 /dev/sda1 rw\n",
    )
    .unwrap();
    fixture.apply(Some("i-9"), b"#cloud-config\n{}\n");
    assert_eq!(
        fixture.read("/var/lib/berth/cloud-config/instance-id"),
        "i-9\n"
    );
    assert!(
        fixture.system.mounts.borrow()[0]
            .options
            .contains("/var/lib/berth/cloud-config/etc/upper,")
    );
}

/// `manage_etc_hosts: localhost` changes only the 127.0.1.1 line;
/// `prefer_fqdn_over_hostname` sets the whole name; `ntp.enabled: false`
/// writes nothing.
#[test]
fn etc_hosts_localhost_and_fqdn() {
    let fixture = Fixture::new();
    std::fs::write(
        fixture.path("/etc/hosts"),
        "127.0.0.1 localhost\n127.0.1.1 old.example old\n10.0.0.9 db\n",
    )
    .unwrap();
    fixture.apply(
        Some("i-1"),
        b"#cloud-config\nhostname: db1.example.net\nprefer_fqdn_over_hostname: true\nmanage_etc_hosts: localhost\nntp: {enabled: false, servers: [a]}\n",
    );
    assert_eq!(*fixture.system.hostnames.borrow(), ["db1.example.net"]);
    assert_eq!(fixture.read("/run/config/hostname"), "db1.example.net");
    assert_eq!(
        fixture.read("/etc/hosts"),
        "127.0.0.1 localhost\n10.0.0.9 db\n127.0.1.1 db1.example.net db1\n"
    );
    assert!(!fixture.path("/run/config/ntp/servers").exists());
}

/// The whole run with the live system, by root in private mount and UTS
/// namespaces (`unshare`) on a temporary root: the overlay and bind
/// mounted, the host name set, commands run; afterwards the image's /etc
/// is as it was and every change is in the state directory.
#[test]
fn applied_for_real_in_private_namespaces() {
    let document = format!(
        "#cloud-config\nhostname: real-host\nusers: [{{name: alice, ssh_authorized_keys: ['{KEY}']}}]\n\
         write_files: [{{path: /etc/app.conf, content: \"x\\n\", owner: 'alice:alice', permissions: '0640'}}]\n\
         runcmd: ['echo from runcmd', [cat, /proc/sys/kernel/hostname]]\n"
    );
    if let Some(root) = crate::test_support::namespace_root() {
        let host = Host {
            root,
            system: Box::new(Live),
        };
        apply(&found(Some("i-1"), Some(document.as_bytes()), None), &host);
        assert_eq!(
            std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
            "real-host\n"
        );
        // Inside, /etc is the overlay and /home the bind: pwck sees homes.
        crate::etc::tests::check_with_pwck(&host.root);
        return;
    }
    let fixture = Fixture::new();
    let passwd = fixture.read("/etc/passwd");
    let name = "cloudconfig::tests::applied_for_real_in_private_namespaces";
    let flags = ["--mount", "--uts"];
    let Some(out) = crate::test_support::in_private_namespaces(name, &flags, fixture.root.path())
    else {
        return;
    };
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    for line in [
        "cloud-config: host name real-host",
        "runcmd[0]: from runcmd",
        "runcmd[1]: real-host",
    ] {
        assert!(log.lines().any(|l| l == line), "{line:?} not in {log}");
    }
    // The image's /etc and /home untouched; the changes in the state.
    assert_eq!(fixture.read("/etc/passwd"), passwd);
    assert!(!fixture.path("/etc/app.conf").exists());
    let state = "/run/berth/cloud-config";
    assert!(
        fixture
            .read(&format!("{state}/etc/upper/passwd"))
            .contains("\nalice:x:1000:1000::/home/alice:/bin/sh\n")
    );
    let conf = std::fs::metadata(fixture.path(&format!("{state}/etc/upper/app.conf"))).unwrap();
    assert_eq!(
        (conf.uid(), conf.gid(), conf.mode() & 0o7777),
        (1000, 1000, 0o640)
    );
    let keys = fixture.path(&format!("{state}/home/alice/.ssh/authorized_keys"));
    assert_eq!(std::fs::read_to_string(&keys).unwrap(), format!("{KEY}\n"));
    assert_eq!(fixture.read(OUTPUT_LOG), "from runcmd\nreal-host\n");
    assert_eq!(fixture.read(&format!("{state}/instance-id")), "i-1\n");
}

/// Links a user planted in their home and in ~/.ssh: root neither copies
/// /etc/shadow into their keys, nor writes, appends or makes anything
/// through them; each is one line, and the rest still applies.
#[test]
fn links_in_homes_are_not_followed() {
    let fixture = Fixture::new();
    let etc = fixture.path("/etc");
    for (file, line) in [
        ("passwd", "bob:x:1000:1000::/home/bob:/bin/sh\n"),
        ("group", "bob:x:1000:\n"),
        ("shadow", "bob:*:19000:0:99999:7:::\n"),
    ] {
        let mut text = std::fs::read_to_string(etc.join(file)).unwrap();
        text.push_str(line);
        std::fs::write(etc.join(file), text).unwrap();
    }
    let shadow = fixture.read("/etc/shadow");
    // bob's ~/.ssh/authorized_keys is a link to /etc/shadow, ~/etc a link
    // to /etc; carol's home does not exist yet but a link stands there.
    let ssh = fixture.path("/home/bob/.ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    std::os::unix::fs::symlink(fixture.path("/etc/shadow"), ssh.join("authorized_keys")).unwrap();
    std::os::unix::fs::symlink(fixture.path("/etc"), fixture.path("/home/bob/etc")).unwrap();
    let elsewhere = fixture.path("/var/elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, fixture.path("/home/carol")).unwrap();
    let document = format!(
        "#cloud-config\nusers:\n  - name: bob\n    ssh_authorized_keys: ['{KEY}']\n  - name: carol\n    ssh_authorized_keys: ['{KEY}']\n\
         write_files:\n  - {{path: /home/bob/etc/motd, content: x}}\n  - {{path: /home/bob/etc/shadow, content: x, append: true}}\n  - {{path: /etc/ok, content: fine}}\n"
    );
    let lines = fixture.apply(Some("i-1"), document.as_bytes());
    let refused: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("is a symbolic link; not followed"))
        .collect();
    assert_eq!(refused.len(), 4, "{lines:#?}");
    assert!(
        refused[0].starts_with("cloud-config: user bob: "),
        "{refused:?}"
    );
    assert!(
        refused[1].starts_with("cloud-config: user carol: "),
        "{refused:?}"
    );
    assert!(refused[2].starts_with("cloud-config: write_files: /home/bob/etc/motd: "));
    assert!(refused[3].starts_with("cloud-config: write_files: /home/bob/etc/shadow: "));
    assert_eq!(
        fixture.read("/etc/shadow").lines().count(),
        shadow.lines().count() + 1
    );
    assert!(fixture.read("/etc/shadow").starts_with(&shadow));
    assert!(
        std::fs::symlink_metadata(ssh.join("authorized_keys"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(!fixture.path("/etc/motd").exists());
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert_eq!(fixture.read("/etc/ok"), "fine");
}
