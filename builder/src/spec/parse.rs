//! YAML text to [`Definition`], with errors that name file, line, column and
//! key path.

use std::fmt;

use serde::de::DeserializeOwned;

use super::located::with_origin;
use super::{Container, Definition, Origin};

/// One thing wrong with a definition, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `file:line:column`, or `file` where no position is known.
    pub position: String,
    /// The key path, e.g. `services[2].capabilities[0]`; empty at the top.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.position, self.message)
        } else {
            write!(f, "{}: {}: {}", self.position, self.path, self.message)
        }
    }
}

/// Everything wrong with a definition, one problem per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            problem.fmt(f)?;
        }
        Ok(())
    }
}

impl From<Problem> for SpecError {
    fn from(problem: Problem) -> Self {
        SpecError {
            problems: vec![problem],
        }
    }
}

/// Parses one YAML file. `origin` names it in errors and in every
/// [`super::Located`] value.
pub fn parse(text: &str, origin: &Origin) -> Result<Definition, SpecError> {
    if is_blank(text) {
        return Ok(Definition::default());
    }
    let (definition, ignored) = deserialize::<Definition>(text, origin)?;
    unknown_keys(ignored, origin, |key| {
        let (section, rest) = key.split_once('[')?;
        let (index, rest) = rest.split_once(']')?;
        if !rest.starts_with(".resources") {
            return None;
        }
        let entries = match section {
            "onboot" => &definition.onboot,
            "onshutdown" => &definition.onshutdown,
            "services" => &definition.services,
            _ => return None,
        };
        let entry = entries.get(index.parse::<usize>().ok()?)?;
        Some(entry.resources.as_ref()?.position())
    })?;
    Ok(definition)
}

/// Keys that only serde_ignored saw (inside the OCI `resources` object,
/// whose type is not this crate's) are errors too, placed at the object
/// that holds them.
fn unknown_keys(
    ignored: Vec<String>,
    origin: &Origin,
    position: impl Fn(&str) -> Option<String>,
) -> Result<(), SpecError> {
    if ignored.is_empty() {
        return Ok(());
    }
    Err(SpecError {
        problems: ignored
            .into_iter()
            .map(|key| Problem {
                position: position(&key).unwrap_or_else(|| origin.to_string()),
                path: key,
                message: "unknown key".into(),
            })
            .collect(),
    })
}

/// Parses the JSON of an image's `org.mobyproject.config` label.
/// JSON is YAML, so the same parser gives the same errors with positions.
/// Any other YAML file of berth's (a package's `build.yml`), with the same
/// errors: file, line, column and key path; unknown keys refused by the
/// type.
pub fn parse_as<T: DeserializeOwned>(text: &str, origin: &Origin) -> Result<T, SpecError> {
    deserialize::<T>(text, origin).map(|(value, _)| value)
}

pub fn parse_label(text: &str, image: &str) -> Result<Container, SpecError> {
    let origin: Origin = format!("label org.mobyproject.config of {image}").into();
    if is_blank(text) {
        return Ok(Container::default());
    }
    let (label, ignored) = deserialize::<Container>(text, &origin)?;
    unknown_keys(ignored, &origin, |key| {
        key.starts_with("resources")
            .then(|| label.resources.as_ref().map(|r| r.position()))?
    })?;
    Ok(label)
}

fn is_blank(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#') || l == "---")
}

fn deserialize<T: DeserializeOwned>(
    text: &str,
    origin: &Origin,
) -> Result<(T, Vec<String>), SpecError> {
    let mut path = String::new();
    let mut ignored = Vec::new();
    let result = with_origin(origin, || {
        serde_saphyr::with_deserializer_from_str(text, |de| {
            // serde_ignored reports keys that types outside this crate (the
            // OCI resources object) would otherwise drop silently.
            let mut record = |p: serde_ignored::Path<'_>| {
                if let Some(key) = ignored_key(&p.to_string()) {
                    ignored.push(key);
                }
            };
            let de = serde_ignored::Deserializer::new(de, &mut record);
            serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
                // `.value` is the inside of a `Located` and `?` an unknown
                // key's place: neither is a key of the file.
                path = e.path().to_string().replace(".value", "").replace(".?", "");
                e.into_inner()
            })
        })
    });
    match result {
        Ok(value) => Ok((value, ignored)),
        Err(error) => {
            let position = match error.location() {
                Some(l) => format!("{origin}:{}:{}", l.line(), l.column()),
                None => origin.to_string(),
            };
            Err(Problem {
                position,
                path: if path == "." { String::new() } else { path },
                message: clean_message(&error.without_snippet().to_string()),
            }
            .into())
        }
    }
}

/// Turns serde_ignored's `services.0.resources.?.memory.?.limt` into
/// `services[0].resources.memory.limt`; `None` for the private key that
/// serde-saphyr's span wrapper uses, which is not a key of the file.
fn ignored_key(raw: &str) -> Option<String> {
    if raw.contains("__serde_saphyr_private") {
        return None;
    }
    let mut key = String::new();
    for segment in raw.split('.').filter(|s| *s != "?" && *s != "value") {
        if segment.bytes().all(|b| b.is_ascii_digit()) {
            key.push_str(&format!("[{segment}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(segment);
        }
    }
    Some(key)
}

/// serde-saphyr appends the position to its messages; it is printed first
/// instead, once.
fn clean_message(message: &str) -> String {
    let message = match message.rfind(" at line ") {
        Some(at) => &message[..at],
        None => message,
    };
    // Advice meant for programs using the parser, not for berth's users.
    let message = match message.split_once(", set DuplicateKeyPolicy") {
        Some((kept, _)) => kept,
        None => message,
    };
    if message.contains("from_str_multiple") || message.contains("multiple documents") {
        return "a definition is one YAML document; this file has several".into();
    }
    message.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(yaml: &str) -> String {
        parse(yaml, &Origin::from("t.yml")).unwrap_err().to_string()
    }

    #[test]
    fn unknown_key_names_position_and_path() {
        assert_eq!(
            error_of("services:\n  - name: a\n    image: b\n    bogus: 1\n"),
            "t.yml:4:5: services[0].bogus: unknown field `bogus`, expected one of name, image, capabilities, capabilities.add, ambient, mounts, binds, binds.add, tmpfs, devices, command, env, cwd, net, pid, ipc, uts, userns, hostname, readonly, maskedPaths, readonlyPaths, uid, gid, additionalGids, noNewPrivileges, oomScoreAdj, rootfsPropagation, cgroupsPath, resources, sysctl, rlimits, uidMappings, gidMappings, annotations, runtime, seccomp"
        );
    }

    #[test]
    fn wrong_type_names_position_and_path() {
        let error = error_of("kernel:\n  image: k\n  cmdline: [1, 2]\n");
        assert!(error.starts_with("t.yml:3:12: kernel.cmdline: "), "{error}");
    }

    #[test]
    fn unknown_key_inside_oci_resources_is_reported() {
        let error = error_of(
            "services:\n  - name: a\n    image: b\n    resources:\n      memory:\n        limt: 5\n",
        );
        assert_eq!(
            error,
            "t.yml:5:7: services[0].resources.memory.limt: unknown key"
        );
    }

    #[test]
    fn located_values_know_their_place() {
        let d = parse(
            "init:\n  - linuxkit/init:v1\nservices:\n  - name: getty\n    image: g\n",
            &Origin::from("f.yml"),
        )
        .unwrap();
        assert_eq!(d.init[0].position(), "f.yml:2:5");
        assert_eq!(
            d.services[0].name.as_ref().unwrap().position(),
            "f.yml:4:11"
        );
    }

    #[test]
    fn empty_file_is_an_empty_definition() {
        assert_eq!(
            parse("# nothing\n", &Origin::from("e.yml")).unwrap(),
            Definition::default()
        );
    }
}
