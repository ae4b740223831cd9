//! Semantic checks on a parsed (and merged) [`Definition`]: the rules the
//! YAML grammar cannot express.
//!
//! Every problem is collected, not just the first, and each names the place
//! it was written.

use std::collections::BTreeMap;

use super::parse::{Problem, SpecError};
use super::values::{
    absolute_path, bind, capability, cgroup_path, clean_path, mode, rlimit, text_without_nul,
};
use super::{Container, Definition, File, IdRef, Located};

/// Checks a whole definition. Parsing has already checked keys and types.
pub fn validate(definition: &Definition) -> Result<(), SpecError> {
    let mut problems = Problems::default();
    // Every entry's name can stand for its uid/gid; only service names must
    // be unique (onboot and onshutdown bundles carry their index), as in
    // LinuxKit.
    let mut names: BTreeMap<&str, &Located<String>> = BTreeMap::new();
    for image in definition.onboot.iter().chain(&definition.onshutdown) {
        if let Some(name) = &image.name {
            names.insert(name.as_str(), name);
        }
    }
    let mut services: BTreeMap<&str, &Located<String>> = BTreeMap::new();
    for (i, image) in definition.services.iter().enumerate() {
        if let Some(name) = &image.name {
            names.insert(name.as_str(), name);
            if let Some(first) = services.insert(name.as_str(), name) {
                problems.at(
                    name,
                    format!("services[{i}].name"),
                    format!(
                        "duplicate service name {:?}: already used at {}",
                        name.value,
                        first.position()
                    ),
                );
            }
        }
    }
    if let Some(kernel) = &definition.kernel
        && kernel.image.is_none()
    {
        problems.plain("kernel.image", "the kernel section needs an image".into());
    }
    if let Some(kernel) = &definition.kernel {
        match &kernel.modules {
            Some(super::ModuleChoice::Word(word)) if word != "all" => problems.plain(
                "kernel.modules",
                format!("{word:?} is neither `all` nor a list of module names"),
            ),
            Some(super::ModuleChoice::List(names)) => {
                for name in names
                    .iter()
                    .filter(|n| !crate::kernel::modules::is_pattern(n))
                {
                    problems.plain(
                        "kernel.modules",
                        format!("{name:?} is not a module name (letters, digits, `_`, `-`, `*`)"),
                    );
                }
            }
            _ => {}
        }
    }
    for (i, reference) in definition.init.iter().enumerate() {
        check_reference(&mut problems, reference, &format!("init[{i}]"));
    }
    if let Some(boot) = &definition.boot {
        check_reference(&mut problems, &boot.image, "boot.image");
    }
    for (section, images) in [
        ("onboot", &definition.onboot),
        ("onshutdown", &definition.onshutdown),
        ("services", &definition.services),
    ] {
        for (i, image) in images.iter().enumerate() {
            check_entry(&mut problems, image, &format!("{section}[{i}]"), &names);
        }
    }
    for (section, images) in [
        ("onboot", &definition.onboot),
        ("onshutdown", &definition.onshutdown),
        ("services", &definition.services),
    ] {
        for (i, image) in images.iter().enumerate() {
            let (Some(name), Some(runtime)) = (&image.name, &image.runtime) else {
                continue;
            };
            check_supervision(
                &mut problems,
                runtime,
                name,
                &format!("{section}[{i}].runtime"),
                section == "services",
                &services,
            );
        }
    }
    check_dependency_cycles(&mut problems, &definition.services);
    for (i, file) in definition.files.iter().enumerate() {
        check_file(&mut problems, file, &format!("files[{i}]"), &names);
    }
    for (i, volume) in definition.volumes.iter().enumerate() {
        let path = format!("volumes[{i}]");
        check_name(&mut problems, &volume.name, &format!("{path}.name"));
        if let Some(format) = &volume.format
            && !["oci", "filesystem"].contains(&format.as_str())
        {
            problems.at(
                format,
                format!("{path}.format"),
                format!(
                    "unknown volume format {:?} (oci or filesystem)",
                    format.value
                ),
            );
        }
        if let Some(image) = &volume.image {
            check_reference(&mut problems, image, &format!("{path}.image"));
        }
    }
    if let Some(trust) = &definition.trust {
        check_trust(&mut problems, trust);
    }
    problems.finish()
}

/// `trust:` as far as it can be checked without reading the key files
/// (that is [`crate::trust::Policy::load`]'s): key names, patterns, and
/// rules that name only defined keys.
fn check_trust(problems: &mut Problems, trust: &super::Trust) {
    for key in &trust.keys {
        if !crate::trust::is_key_name(&key.name) {
            problems.at(
                &key.key,
                format!("trust.keys.{}", key.name),
                format!(
                    "key name {:?} must be non-empty and use only letters, digits, '-', '_' and '.'",
                    key.name
                ),
            );
        }
    }
    for (i, rule) in trust.images.iter().enumerate() {
        let path = format!("trust.images[{i}]");
        if let Err(message) = crate::trust::Pattern::parse(&rule.pattern) {
            problems.at(&rule.pattern, format!("{path}.pattern"), message);
        }
        if rule.keys.is_empty() {
            problems.at(
                &rule.pattern,
                format!("{path}.keys"),
                "a rule names at least one key of trust.keys".into(),
            );
        }
        for (j, name) in rule.keys.iter().enumerate() {
            if !trust.keys.iter().any(|key| key.name == name.value) {
                let defined: Vec<&str> = trust.keys.iter().map(|k| k.name.as_str()).collect();
                problems.at(
                    name,
                    format!("{path}.keys[{j}]"),
                    format!(
                        "no key {:?} in trust.keys (defined: {})",
                        name.value,
                        if defined.is_empty() {
                            "none".to_string()
                        } else {
                            defined.join(", ")
                        }
                    ),
                );
            }
        }
    }
    for (i, image) in trust.image.iter().flatten().enumerate() {
        check_reference(problems, image, &format!("trust.image[{i}]"));
    }
    for (i, org) in trust.org.iter().flatten().enumerate() {
        if let Err(message) = crate::trust::Pattern::organisation(org) {
            problems.at(org, format!("trust.org[{i}]"), message);
        }
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn at<T>(&mut self, place: &Located<T>, path: String, message: String) {
        self.0.push(Problem {
            position: place.position(),
            path,
            message,
        });
    }

    fn placed(&mut self, position: &str, path: String, message: String) {
        self.0.push(Problem {
            position: position.into(),
            path,
            message,
        });
    }

    fn plain(&mut self, path: &str, message: String) {
        self.0.push(Problem {
            position: "<definition>".into(),
            path: path.into(),
            message,
        });
    }

    fn finish(self) -> Result<(), SpecError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(SpecError { problems: self.0 })
        }
    }
}

/// berth's supervision keys in `runtime:`: for services only; dependencies
/// name other services; a health check says how.
fn check_supervision(
    problems: &mut Problems,
    runtime: &contract::Runtime,
    name: &Located<String>,
    path: &str,
    service: bool,
    services: &BTreeMap<&str, &Located<String>>,
) {
    let keys = [
        ("restart", runtime.restart.is_some()),
        ("depends", runtime.depends.is_some()),
        ("healthcheck", runtime.healthcheck.is_some()),
    ];
    for (key, set) in keys {
        if set && !service {
            problems.at(
                name,
                format!("{path}.{key}"),
                format!("{key} applies to services only; {:?} runs once", name.value),
            );
        }
    }
    for (j, dependency) in runtime.depends.iter().flatten().enumerate() {
        if dependency == name.as_str() {
            problems.at(
                name,
                format!("{path}.depends[{j}]"),
                format!("{:?} depends on itself", name.value),
            );
        } else if service && !services.contains_key(dependency.as_str()) {
            problems.at(
                name,
                format!("{path}.depends[{j}]"),
                format!(
                    "{:?} depends on {dependency:?}, which is not a service",
                    name.value
                ),
            );
        }
    }
    if let Some(check) = &runtime.healthcheck {
        let ways = usize::from(check.exec.is_some()) + usize::from(check.tcp.is_some());
        if ways != 1 {
            problems.at(
                name,
                format!("{path}.healthcheck"),
                "a health check needs exactly one of exec or tcp".into(),
            );
        }
        if !(1..=86_400).contains(&check.interval) || check.start_period > 86_400 {
            problems.at(
                name,
                format!("{path}.healthcheck"),
                "interval must be 1 to 86400 seconds and start_period at most 86400".into(),
            );
        }
        if check.retries == 0 {
            problems.at(
                name,
                format!("{path}.healthcheck.retries"),
                "retries must be at least 1".into(),
            );
        }
        if check.exec.as_ref().is_some_and(|e| e.is_empty()) {
            problems.at(
                name,
                format!("{path}.healthcheck.exec"),
                "exec needs a command".into(),
            );
        }
        if let Some(address) = &check.tcp
            && address.parse::<std::net::SocketAddr>().is_err()
        {
            problems.at(
                name,
                format!("{path}.healthcheck.tcp"),
                format!("{address:?} is not an IP address and port (HOST:PORT)"),
            );
        }
    }
}

/// Services that depend on each other in a ring would never start.
fn check_dependency_cycles(problems: &mut Problems, services: &[Container]) {
    let depends = |name: &str| -> Vec<String> {
        services
            .iter()
            .find(|s| s.name.as_ref().is_some_and(|n| n.as_str() == name))
            .and_then(|s| s.runtime.as_ref()?.depends.clone())
            .unwrap_or_default()
    };
    for (i, service) in services.iter().enumerate() {
        let Some(name) = &service.name else { continue };
        // Walk the dependencies; coming back to `name` is a cycle.
        let mut seen = vec![name.as_str().to_string()];
        // (A direct dependency on itself is reported on its own.)
        let mut stack: Vec<String> = depends(name)
            .into_iter()
            .filter(|d| d != name.as_str())
            .collect();
        while let Some(next) = stack.pop() {
            if next == name.as_str() {
                problems.at(
                    name,
                    format!("services[{i}].runtime.depends"),
                    format!(
                        "{:?} depends on itself through {}",
                        name.value,
                        seen[1..].join(" -> ")
                    ),
                );
                break;
            }
            if !seen.contains(&next) {
                stack.extend(depends(&next));
                seen.push(next);
            }
        }
    }
}

fn check_reference(problems: &mut Problems, reference: &Located<String>, path: &str) {
    if let Err(message) = oci::reference::Reference::parse(reference) {
        problems.at(reference, path.into(), message.to_string());
    }
}

/// Names become directory names under `/containers`.
fn check_name(problems: &mut Problems, name: &Located<String>, path: &str) {
    if !contract::is_entry_name(name) {
        problems.at(
            name,
            path.into(),
            format!(
                "name {:?} must be non-empty and use only letters, digits, '-', '_' and '.'",
                name.value
            ),
        );
    }
}

fn check_entry(
    problems: &mut Problems,
    image: &Container,
    path: &str,
    names: &BTreeMap<&str, &Located<String>>,
) {
    let Some(name) = &image.name else {
        let where_ = image.image.as_ref().map(|i| i.position());
        problems.0.push(Problem {
            position: where_.unwrap_or_else(|| "<definition>".into()),
            path: format!("{path}.name"),
            message: "every entry needs a name".into(),
        });
        return;
    };
    check_name(problems, name, &format!("{path}.name"));
    match &image.image {
        Some(reference) => check_reference(problems, reference, &format!("{path}.image")),
        None => problems.at(
            name,
            format!("{path}.image"),
            format!("entry {:?} has no image", name.value),
        ),
    }
    check_config(problems, image, path, &name.position(), Some(names));
}

/// Checks an image's `org.mobyproject.config` label with the same rules as
/// a YAML entry; a label has no name or image of its own.
pub fn check_label(label: &Container, image: &str) -> Result<(), SpecError> {
    let mut problems = Problems::default();
    for (key, value) in [("name", &label.name), ("image", &label.image)] {
        if let Some(value) = value {
            problems.at(
                value,
                key.into(),
                format!("{key} cannot be set in an image label"),
            );
        }
    }
    let origin = format!("label org.mobyproject.config of {image}");
    check_config(
        &mut problems,
        label,
        &format!("label of {image}"),
        &origin,
        None,
    );
    problems.finish()
}

/// `place` is where to point for a value that keeps no position of its
/// own: the entry's name, or the label.
fn check_config(
    problems: &mut Problems,
    image: &Container,
    path: &str,
    place: &str,
    names: Option<&BTreeMap<&str, &Located<String>>>,
) {
    for (key, list) in [
        ("capabilities", &image.capabilities),
        ("capabilities.add", &image.capabilities_add),
        ("ambient", &image.ambient),
    ] {
        for (i, cap) in list.iter().flatten().enumerate() {
            let special = ["all", "none"].contains(&cap.to_ascii_lowercase().as_str());
            if !special && capability(cap).is_none() {
                problems.at(
                    cap,
                    format!("{path}.{key}[{i}]"),
                    format!("unknown capability {:?}", cap.value),
                );
            }
        }
    }
    for (key, list) in [("binds", &image.binds), ("binds.add", &image.binds_add)] {
        for (i, b) in list.iter().flatten().enumerate() {
            if let Err(message) = bind(b) {
                problems.at(b, format!("{path}.{key}[{i}]"), message);
            }
        }
    }
    for (i, t) in image.tmpfs.iter().flatten().enumerate() {
        let destination = t.split(':').next().unwrap_or("");
        if t.matches(':').count() > 1 {
            problems.at(
                t,
                format!("{path}.tmpfs[{i}]"),
                format!(
                    "tmpfs {:?} is not of the form destination[:options]",
                    t.value
                ),
            );
        } else if !destination.starts_with('/') {
            problems.at(
                t,
                format!("{path}.tmpfs[{i}]"),
                format!("tmpfs {:?}: destination must be an absolute path", t.value),
            );
        } else if let Err(message) = absolute_path(destination).and_then(|()| text_without_nul(t)) {
            problems.at(t, format!("{path}.tmpfs[{i}]"), message);
        }
    }
    if let Some(seccomp) = &image.seccomp {
        let keyword = ["unconfined", "default"].contains(&seccomp.as_str());
        if names.is_none() && !keyword {
            problems.at(
                seccomp,
                format!("{path}.seccomp"),
                format!(
                    "seccomp {:?}: a label can only say unconfined or default, not name a file",
                    seccomp.value
                ),
            );
        } else if seccomp.is_empty() || seccomp.contains('\0') {
            problems.at(
                seccomp,
                format!("{path}.seccomp"),
                "seccomp must be unconfined, default or the path of a profile file".into(),
            );
        }
    }
    for (i, r) in image.rlimits.iter().flatten().enumerate() {
        if let Err(message) = rlimit(r) {
            problems.at(r, format!("{path}.rlimits[{i}]"), message);
        }
    }
    for (i, e) in image.env.iter().flatten().enumerate() {
        if !e.contains('=') || e.starts_with('=') {
            problems.at(
                e,
                format!("{path}.env[{i}]"),
                format!("env {:?} is not of the form NAME=value", e.value),
            );
        }
    }
    for (key, ns, allow_none) in [
        ("net", &image.net, true),
        ("pid", &image.pid, false),
        ("ipc", &image.ipc, false),
        ("uts", &image.uts, false),
        ("userns", &image.userns, false),
    ] {
        if let Some(ns) = ns {
            let value = ns.as_str();
            // `root` is LinuxKit's other spelling of `host`.
            let ok = value == "host"
                || value == "root"
                || value == "new"
                || (allow_none && value == "none")
                || value.starts_with('/');
            if !ok {
                let choices = if allow_none {
                    "host, new, none or a path"
                } else {
                    "host, new or a path"
                };
                problems.at(
                    ns,
                    format!("{path}.{key}"),
                    format!("namespace {value:?} must be {choices}"),
                );
            }
        }
    }
    if let Some(p) = &image.rootfs_propagation {
        let known = [
            "private",
            "rprivate",
            "shared",
            "rshared",
            "slave",
            "rslave",
            "unbindable",
            "runbindable",
        ];
        if !known.contains(&p.as_str()) {
            problems.at(
                p,
                format!("{path}.rootfsPropagation"),
                format!("unknown propagation {:?}", p.value),
            );
        }
    }
    for (i, device) in image.devices.iter().flatten().enumerate() {
        let dpath = format!("{path}.devices[{i}]");
        if !["a", "b", "c", "u", "p"].contains(&device.kind.as_str()) {
            problems.at(
                &device.path,
                format!("{dpath}.type"),
                format!("unknown device type {:?} (a, b, c, u or p)", device.kind),
            );
        }
        match &device.mode {
            Some(m) => {
                if let Err(message) = mode(m) {
                    problems.at(m, format!("{dpath}.mode"), message);
                }
            }
            // `path: all` is a cgroup rule only; a real node needs a mode.
            None if device.path.as_str() != "all" => problems.at(
                &device.path,
                format!("{dpath}.mode"),
                format!("device {:?} needs a mode", device.path.value),
            ),
            None => {}
        }
    }
    for (i, mount) in image.mounts.iter().flatten().enumerate() {
        const KNOWN: &[(&str, &str)] = &[
            ("proc", "/proc"),
            ("devpts", "/dev/pts"),
            ("sysfs", "/sys"),
            ("cgroup", "/sys/fs/cgroup"),
            ("mqueue", "/dev/mqueue"),
        ];
        let source = mount.source.as_deref().unwrap_or("");
        let kind = mount
            .kind
            .as_deref()
            .filter(|k| !k.is_empty())
            .or_else(|| KNOWN.iter().map(|(k, _)| *k).find(|k| *k == source))
            .or_else(|| (mount.destination == "/dev").then_some("tmpfs"));
        let problem = match kind {
            None => Some(format!(
                "mount for destination {:?} has no type",
                mount.destination
            )),
            Some(kind)
                if mount.destination.is_empty() && !KNOWN.iter().any(|(k, _)| *k == kind) =>
            {
                Some(format!("mount of type {kind:?} has no destination"))
            }
            _ => None,
        };
        if let Some(message) = problem {
            problems.placed(place, format!("{path}.mounts[{i}]"), message);
        }
    }
    check_runtime_values(problems, image, path, place);
    let ids = [("uid", &image.uid), ("gid", &image.gid)];
    let extra = image.additional_gids.iter().flatten();
    for (key, id) in ids
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v)))
        .chain(
            extra
                .enumerate()
                .map(|(i, v)| (format!("additionalGids[{i}]"), v)),
        )
    {
        check_id(problems, id, &format!("{path}.{key}"), names);
    }
}

/// What reaches the kernel or init's hands at boot: every path absolute and
/// normalised (or, for cgroups, unable to leave the cgroup tree), no NUL
/// in any string, every number within the kernel's range (issue #15).
/// Values without a position of their own are placed at `place`.
fn check_runtime_values(problems: &mut Problems, image: &Container, path: &str, place: &str) {
    let mut problem = |key: String, result: Result<(), String>| {
        if let Err(message) = result {
            problems.placed(place, format!("{path}.{key}"), message);
        }
    };
    let strings = |key: &str, list: Option<&Vec<String>>| -> Vec<(String, String)> {
        list.into_iter()
            .flatten()
            .enumerate()
            .map(|(i, s)| (format!("{key}[{i}]"), s.clone()))
            .collect()
    };
    let mut texts: Vec<(String, String)> = strings("command", image.command.as_ref());
    texts.extend(
        image
            .hostname
            .iter()
            .map(|h| ("hostname".into(), h.clone())),
    );
    // A key goes into the key path escaped: an error line holds no NUL.
    for (key, value) in image.annotations.iter().flatten() {
        let at = format!("annotations.{}", key.escape_debug());
        texts.extend([(at.clone(), key.clone()), (at, value.clone())]);
    }
    for (key, value) in image.sysctl.iter().flatten() {
        let at = format!("sysctl.{}", key.escape_debug());
        texts.push((at.clone(), value.to_string()));
        // The runtime writes /proc/sys/KEY with `.` as `/`.
        let path = key.replace('.', "/");
        let named = !path.starts_with('/') && !path.ends_with('/') && clean_path(&path).is_ok();
        problem(
            at,
            match named {
                true => Ok(()),
                false => Err(format!(
                    "sysctl {key:?} is not a name of /proc/sys (parts joined by `.` or `/`)"
                )),
            },
        );
    }
    if let Some(runtime) = &image.runtime {
        texts.extend(
            runtime
                .namespace
                .iter()
                .map(|n| ("runtime.namespace".into(), n.clone())),
        );
        let exec = runtime.healthcheck.as_ref().and_then(|h| h.exec.as_ref());
        texts.extend(strings("runtime.healthcheck.exec", exec));
        for (i, interface) in runtime.interfaces.iter().flatten().enumerate() {
            for field in [&interface.name, &interface.add, &interface.peer] {
                texts.push((format!("runtime.interfaces[{i}]"), field.clone()));
            }
        }
    }
    for (key, text) in texts {
        problem(key, text_without_nul(&text));
    }
    // Values that know where they were written are placed there.
    let mut located: Vec<(&Located<String>, String, Result<(), String>)> = Vec::new();
    for (i, e) in image.env.iter().flatten().enumerate() {
        located.push((e, format!("env[{i}]"), text_without_nul(e)));
    }
    if let Some(hostname) = &image.hostname
        && hostname.len() > 64
    {
        problem(
            "hostname".into(),
            Err(format!("hostname {hostname:?} is longer than 64 bytes")),
        );
    }
    if let Some(cwd) = &image.cwd {
        problem("cwd".into(), absolute_path(cwd));
    }
    for (key, list) in [
        ("maskedPaths", &image.masked_paths),
        ("readonlyPaths", &image.readonly_paths),
    ] {
        for (i, p) in list.iter().flatten().enumerate() {
            problem(format!("{key}[{i}]"), absolute_path(p));
        }
    }
    if let Some(cgroup) = &image.cgroups_path {
        problem("cgroupsPath".into(), cgroup_path(cgroup));
    }
    for (key, ns) in [
        ("net", &image.net),
        ("pid", &image.pid),
        ("ipc", &image.ipc),
        ("uts", &image.uts),
        ("userns", &image.userns),
    ] {
        if let Some(ns) = ns.as_ref().filter(|ns| ns.starts_with('/')) {
            located.push((ns, key.into(), absolute_path(ns)));
        }
    }
    if let Some(score) = image.oom_score_adj
        && !(-1000..=1000).contains(&score)
    {
        problem(
            "oomScoreAdj".into(),
            Err(format!("oomScoreAdj {score} is not between -1000 and 1000")),
        );
    }
    for (key, mappings) in [
        ("uidMappings", &image.uid_mappings),
        ("gidMappings", &image.gid_mappings),
    ] {
        for (i, m) in mappings.iter().flatten().enumerate() {
            let past = [("containerID", m.container_id), ("hostID", m.host_id)]
                .into_iter()
                .find(|(_, start)| u64::from(*start) + u64::from(m.size) > 1 << 32);
            let message = match past {
                _ if m.size == 0 => Some("size must be at least 1".to_string()),
                Some((which, start)) => Some(format!(
                    "{which} {start} + size {} goes past 4294967295, the last id",
                    m.size
                )),
                None => None,
            };
            problem(format!("{key}[{i}]"), message.map_or(Ok(()), Err));
        }
    }
    for (i, device) in image.devices.iter().flatten().enumerate() {
        if device.path.as_str() != "all" {
            let result = absolute_path(&device.path);
            located.push((&device.path, format!("devices[{i}].path"), result));
        }
        // dev_t: 12 bits of major, 20 of minor.
        for (key, number, max) in [
            ("major", device.major, (1 << 12) - 1),
            ("minor", device.minor, (1 << 20) - 1),
        ] {
            if let Some(n) = number.filter(|n| !(0..=max).contains(n)) {
                problem(
                    format!("devices[{i}].{key}"),
                    Err(format!("{key} {n} is not between 0 and {max}")),
                );
            }
        }
    }
    for (i, mount) in image.mounts.iter().flatten().enumerate() {
        for (key, result) in mount_paths(mount) {
            problem(format!("mounts[{i}]{key}"), result);
        }
    }
    for (value, key, result) in located {
        if let Err(message) = result {
            problems.at(value, format!("{path}.{key}"), message);
        }
    }
    let mut problem = |key: String, result: Result<(), String>| {
        if let Err(message) = result {
            problems.placed(place, format!("{path}.{key}"), message);
        }
    };
    let Some(runtime) = &image.runtime else {
        return;
    };
    for (i, dir) in runtime.mkdir.iter().flatten().enumerate() {
        problem(format!("runtime.mkdir[{i}]"), absolute_path(dir));
    }
    for (i, group) in runtime.cgroups.iter().flatten().enumerate() {
        problem(format!("runtime.cgroups[{i}]"), clean_path(group));
    }
    for (i, mount) in runtime.mounts.iter().flatten().enumerate() {
        let key = format!("runtime.mounts[{i}]");
        if mount.destination.is_empty() {
            problem(key.clone(), Err("a host mount needs a destination".into()));
        }
        for (field, result) in mount_paths(mount) {
            problem(format!("{key}{field}"), result);
        }
    }
    for (key, bound) in runtime.bind_namespaces.entries() {
        // LinuxKit writes every key; an empty one binds nothing.
        if let Some(bound) = bound.as_ref().filter(|b| !b.is_empty()) {
            problem(format!("runtime.bindNS.{key}"), absolute_path(bound));
        }
    }
}

/// The paths of a mount (`mounts` or `runtime.mounts`) that are acted on:
/// its destination, a bind's source, an overlay's directories; and its
/// options, which reach the kernel as strings. Each with the key below the
/// mount that it is at. A destination may be relative, as in LinuxKit's
/// `hostmount-writeable-overlay` example (to the bundle, or to the
/// container's root), but cannot climb out of it.
fn mount_paths(mount: &contract::Mount) -> Vec<(String, Result<(), String>)> {
    let mut checks = Vec::new();
    if !mount.destination.is_empty() {
        checks.push((".destination".into(), clean_path(&mount.destination)));
    }
    let options = mount.options.iter().flatten();
    let bind = mount.kind.as_deref() == Some("bind")
        || options.clone().any(|o| o == "bind" || o == "rbind");
    if let Some(source) = mount.source.as_deref().filter(|_| bind) {
        // A source that is no path names a volume (docs/linuxkit-runtime.md
        // §1.12).
        let result = if source.starts_with('/') || !contract::is_entry_name(source) {
            absolute_path(source)
        } else {
            Ok(())
        };
        checks.push((".source".into(), result));
    } else if let Some(source) = &mount.source {
        checks.push((".source".into(), text_without_nul(source)));
    }
    for (j, option) in options.enumerate() {
        let key = format!(".options[{j}]");
        let dirs = ["lowerdir=", "upperdir=", "workdir="]
            .iter()
            .find_map(|k| option.strip_prefix(k));
        match dirs {
            Some(dirs) => {
                for dir in dirs.split(':') {
                    checks.push((key.clone(), absolute_path(dir)));
                }
            }
            None => checks.push((key, text_without_nul(option))),
        }
    }
    checks
}

fn check_id(
    problems: &mut Problems,
    id: &Located<IdRef>,
    path: &str,
    names: Option<&BTreeMap<&str, &Located<String>>>,
) {
    // A label is checked without the names of a definition (`None`): it may
    // name any entry, which is resolved when the bundle is made. `root` is
    // 0, as in LinuxKit.
    if id.value == IdRef::Number(u32::MAX) {
        problems.at(
            id,
            path.into(),
            "4294967295 is no user or group: the kernel reads it as \"unchanged\"".into(),
        );
    }
    if let IdRef::Name(name) = &id.value
        && let Some(names) = names
        && !name.is_empty()
        && name != "root"
        && !names.contains_key(name.as_str())
    {
        problems.at(
            id,
            path.into(),
            format!("{name:?} is neither a number nor the name of a container"),
        );
    }
}

fn check_file(
    problems: &mut Problems,
    file: &File,
    path: &str,
    names: &BTreeMap<&str, &Located<String>>,
) {
    let kinds: Vec<&str> = [
        ("contents", file.contents.is_some()),
        ("source", file.source.is_some()),
        ("directory", file.directory == Some(true)),
        ("symlink", file.symlink.is_some()),
        ("metadata", file.metadata.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    if kinds.len() > 1 {
        problems.at(
            &file.path,
            path.into(),
            format!(
                "file {:?} sets {}: give only one of contents, source, directory, symlink or metadata",
                file.path.value,
                kinds.join(" and ")
            ),
        );
    }
    if kinds.is_empty() {
        problems.at(
            &file.path,
            path.into(),
            format!(
                "file {:?} needs one of contents, source, directory, symlink or metadata",
                file.path.value
            ),
        );
    }
    if archive::entry::clean_path(&file.path).is_ok_and(|p| p.is_empty())
        || file.path.split('/').any(|c| c == "..")
    {
        problems.at(
            &file.path,
            format!("{path}.path"),
            format!(
                "path {:?} must name something inside the image",
                file.path.value
            ),
        );
    }
    if let Some(metadata) = &file.metadata
        && metadata.as_str() != "yaml"
    {
        problems.at(
            metadata,
            format!("{path}.metadata"),
            format!("unknown metadata {:?} (only yaml)", metadata.value),
        );
    }
    if let Some(m) = &file.mode
        && let Err(message) = mode(m)
    {
        problems.at(m, format!("{path}.mode"), message);
    }
    for (key, id) in [("uid", &file.uid), ("gid", &file.gid)] {
        if let Some(id) = id {
            check_id(problems, id, &format!("{path}.{key}"), Some(names));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Origin, parse};

    fn problems(yaml: &str) -> Vec<String> {
        let d = parse(yaml, &Origin::from("v.yml")).unwrap();
        match validate(&d) {
            Ok(()) => vec![],
            Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn duplicate_names_point_at_both_places() {
        assert_eq!(
            problems(
                "onboot:\n  - name: a\n    image: x\n  - name: a\n    image: x\nservices:\n  - name: b\n    image: y\n  - name: b\n    image: y\n"
            ),
            [
                "v.yml:9:11: services[1].name: duplicate service name \"b\": already used at v.yml:7:11"
            ]
        );
    }

    #[test]
    fn capabilities_are_checked_and_normalised() {
        assert_eq!(capability("sys_admin"), Some("CAP_SYS_ADMIN"));
        assert_eq!(capability("cap_bpf"), Some("CAP_BPF"));
        assert_eq!(capability("CAP_FLY"), None);
        assert_eq!(
            problems("services:\n  - name: a\n    image: x\n    capabilities: [all, CAP_FLY]\n"),
            ["v.yml:4:25: services[0].capabilities[1]: unknown capability \"CAP_FLY\""]
        );
    }

    #[test]
    fn supervision_keys_are_checked() {
        let yaml = "onboot:\n  - name: once\n    image: a\n    runtime:\n      restart: never\nservices:\n  - name: web\n    image: a\n    runtime:\n      depends: [db, web]\n      healthcheck: {tcp: \"localhost:80\"}\n  - name: db\n    image: a\n    runtime:\n      restart: on-failure\n      healthcheck: {exec: [\"true\"], interval: 5}\n";
        let found = problems(yaml);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(
            found[0].contains("onboot[0].runtime.restart: restart applies to services only"),
            "{found:#?}"
        );
        assert!(
            found[1].contains("services[0].runtime.depends[1]: \"web\" depends on itself"),
            "{found:#?}"
        );
        assert!(
            found[2].contains("healthcheck.tcp: \"localhost:80\" is not an IP address"),
            "{found:#?}"
        );
        let ring = problems(
            "services:\n  - {name: a, image: x, runtime: {depends: [b]}}\n  - {name: b, image: x, runtime: {depends: [a], healthcheck: {tcp: \"127.0.0.1:1\", interval: 0}}}\n",
        );
        assert_eq!(ring.len(), 3, "{ring:#?}");
        assert!(ring[0].contains("interval must be"), "{ring:#?}");
        assert!(
            ring[1].contains("\"a\" depends on itself through b"),
            "{ring:#?}"
        );
        let err = parse(
            "services:\n  - name: s\n    image: a\n    runtime:\n      restart: sometimes\n",
            &Origin::from("v.yml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("v.yml:5:16") && err.contains("sometimes"),
            "{err}"
        );
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(mode("0644"), Ok(0o644));
        assert_eq!(mode("755"), Ok(0o755));
        assert!(mode("0999").is_err());
        assert!(mode("077777").is_err());
    }

    #[test]
    fn files_need_exactly_one_kind() {
        assert_eq!(
            problems("files:\n  - path: etc/x\n    contents: a\n    directory: true\n"),
            [
                "v.yml:2:11: files[0]: file \"etc/x\" sets contents and directory: give only one of contents, source, directory, symlink or metadata"
            ]
        );
        assert_eq!(
            problems("files:\n  - path: etc/x\n    mode: \"0644\"\n"),
            [
                "v.yml:2:11: files[0]: file \"etc/x\" needs one of contents, source, directory, symlink or metadata"
            ]
        );
        assert_eq!(
            problems("files:\n  - path: ../etc/x\n    contents: a\n"),
            ["v.yml:2:11: files[0].path: path \"../etc/x\" must name something inside the image"]
        );
    }

    #[test]
    fn namespaces_and_ids() {
        assert_eq!(
            problems(
                "services:\n  - name: a\n    image: x\n    pid: none\n    net: /run/netns/a\n    uid: b\n"
            ),
            [
                "v.yml:4:10: services[0].pid: namespace \"none\" must be host, new or a path",
                "v.yml:6:10: services[0].uid: \"b\" is neither a number nor the name of a container"
            ]
        );
        assert!(
            problems("services:\n  - name: a\n    image: x\n    uid: 100\n    gid: a\n").is_empty()
        );
    }

    /// A label is the image's, not the YAML's: its paths and values are
    /// checked the same way, and named by image and key.
    #[test]
    fn a_labels_runtime_paths_and_values_are_checked_too() {
        let label = r#"{"mounts": [{"destination": "../../x", "type": "bind", "source": "/x"}], "binds": ["/a:/b/../../c"], "oomScoreAdj": 5000, "command": ["a\u0000b"], "runtime": {"mkdir": ["../../../../tmp/x"], "cgroups": ["../x"], "bindNS": {"net": "../../x"}}}"#;
        let parsed = crate::spec::parse_label(label, "example.org/bad:1").unwrap();
        let error = check_label(&parsed, "example.org/bad:1").unwrap_err();
        let found: Vec<String> = error.problems.iter().map(|p| p.to_string()).collect();
        let origin = "label org.mobyproject.config of example.org/bad:1";
        let key = "label of example.org/bad:1";
        assert_eq!(
            found,
            [
                format!(
                    "{origin}:1:84: {key}.binds[0]: bind \"/a:/b/../../c\": destination path \"/b/../../c\" is not normalised (no `.` or `..` components, no `//`)"
                ),
                format!("{origin}: {key}.command[0]: \"a\\0b\" contains a NUL byte"),
                format!(
                    "{origin}: {key}.oomScoreAdj: oomScoreAdj 5000 is not between -1000 and 1000"
                ),
                format!(
                    "{origin}: {key}.mounts[0].destination: path \"../../x\" is not normalised (no `.` or `..` components, no `//`)"
                ),
                format!(
                    "{origin}: {key}.runtime.mkdir[0]: path \"../../../../tmp/x\" must be absolute"
                ),
                format!(
                    "{origin}: {key}.runtime.cgroups[0]: path \"../x\" is not normalised (no `.` or `..` components, no `//`)"
                ),
                format!("{origin}: {key}.runtime.bindNS.net: path \"../../x\" must be absolute"),
            ]
        );
    }

    #[test]
    fn what_the_build_would_refuse_is_refused_by_validation() {
        assert_eq!(
            problems(
                "services:\n  - name: a\n    image: x\n    devices:\n      - path: /dev/x\n        type: c\n        major: 1\n        minor: 3\n      - path: all\n        type: b\n    mounts:\n      - destination: /x\n    tmpfs: [\"/t:size=1:x\"]\n    ambient: [all]\nfiles:\n  - path: \"./\"\n    contents: x\n  - path: etc/y\n    contents: y\n    uid: nobody\n"
            ),
            [
                "v.yml:13:13: services[0].tmpfs[0]: tmpfs \"/t:size=1:x\" is not of the form destination[:options]",
                "v.yml:5:15: services[0].devices[0].mode: device \"/dev/x\" needs a mode",
                "v.yml:2:11: services[0].mounts[0]: mount for destination \"/x\" has no type",
                "v.yml:16:11: files[0].path: path \"./\" must name something inside the image",
                "v.yml:20:10: files[1].uid: \"nobody\" is neither a number nor the name of a container",
            ]
        );
    }
}
