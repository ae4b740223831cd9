//! NoCloud: a filesystem labelled `cidata` (or `CIDATA`), or a seed URL,
//! holding `meta-data` (YAML; required, as cloud-init requires it, though
//! it may be empty), `user-data`, `vendor-data` and `network-config`.

use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use super::Seed;
use crate::found::{Found, Metadata, NetworkConfig, Source};
use crate::label::{Labelled, Mounted};

/// The label cloud-init looks for (either case).
pub const LABEL: &str = "cidata";

/// NoCloud's `meta-data`: YAML (JSON is YAML too) with `instance-id`,
/// `local-hostname` (or `hostname`) and `public-keys` (a string, a list, or
/// a map of names to keys or lists).
pub fn parse_meta_data(bytes: &[u8]) -> Result<Metadata, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "meta-data: not UTF-8".to_string())?;
    if text.trim().is_empty() {
        return Ok(Metadata::default());
    }
    let value: Value =
        serde_saphyr::from_str(text).map_err(|e| crate::yaml::error_line("meta-data", &e))?;
    let map = match value {
        Value::Object(map) => map,
        Value::Null => return Ok(Metadata::default()),
        _ => return Err("meta-data: not a mapping".into()),
    };
    let string = |key: &str| match map.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let local_hostname = string("local-hostname");
    let mut public_keys = Vec::new();
    if let Some(keys) = map.get("public-keys").or_else(|| map.get("public_keys")) {
        collect_keys(keys, &mut public_keys);
    }
    Ok(Metadata {
        instance_id: string("instance-id"),
        hostname: local_hostname.clone().or_else(|| string("hostname")),
        local_hostname,
        public_keys,
        local_ipv4: string("local-ipv4"),
        public_ipv4: string("public-ipv4"),
        availability_zone: string("availability-zone"),
        instance_type: string("instance-type"),
    })
}

/// SSH keys from a string (one per line), a list, or a map of lists.
pub(crate) fn collect_keys(value: &Value, keys: &mut Vec<String>) {
    match value {
        Value::String(s) => keys.extend(
            s.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        ),
        Value::Array(items) => items.iter().for_each(|v| collect_keys(v, keys)),
        Value::Object(map) => map.values().for_each(|v| collect_keys(v, keys)),
        _ => {}
    }
}

/// The seed's files through `read` (a name → its bytes, `None` if absent).
pub fn from_files(
    origin: String,
    seed: &Seed,
    mut read: impl FnMut(&str) -> Result<Option<Vec<u8>>, String>,
) -> Result<Found, String> {
    let Some(meta_data) = read("meta-data")? else {
        return Err(format!("{origin}: no meta-data"));
    };
    let mut metadata = parse_meta_data(&meta_data).map_err(|e| format!("{origin}: {e}"))?;
    if let Some(hostname) = &seed.hostname {
        metadata.hostname = Some(hostname.clone());
        metadata.local_hostname = Some(hostname.clone());
    }
    if let Some(id) = &seed.instance_id {
        metadata.instance_id = Some(id.clone());
    }
    // The other files are optional: one unreadable is logged and left out.
    let mut optional = |name: &str| super::left_out(Source::NoCloud, &origin, read(name));
    let user_data = optional("user-data");
    let vendor_data = optional("vendor-data");
    let network = optional("network-config").map(NetworkConfig::CloudInit);
    Ok(Found {
        source: Source::NoCloud,
        origin,
        metadata,
        user_data,
        vendor_data,
        network,
    })
}

/// A seed filesystem.
pub fn from_device(device: &Labelled, seed: &Seed) -> Result<Found, String> {
    let mounted = Mounted::new(&device.device, device.fs)?;
    let origin = format!("{} labelled {}", device.device.display(), device.label);
    from_files(origin, seed, |name| mounted.read(name))
}

/// A seed URL: `file://DIR/` or `http://HOST/PATH/`, whose files are
/// fetched by appending their names.
pub fn from_url(url: &str, seed: &Seed, proc: &Path, deadline: Instant) -> Result<Found, String> {
    if let Some(dir) = url.strip_prefix("file://") {
        let dir = Path::new(dir);
        return from_files(url.to_string(), seed, |name| {
            crate::label::read_capped(&dir.join(name), name)
        });
    }
    let mut documents = super::Documents::open(url, "meta-data", proc, deadline)?;
    from_files(url.to_string(), seed, |name| documents.read(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_data_as_cloud_localds_and_the_docs_write_it() {
        let metadata = parse_meta_data(
            b"instance-id: iid-local01\nlocal-hostname: cloudimg\npublic-keys:\n  - ssh-ed25519 AAAAC3Nza one@example\n  - ssh-rsa AAAAB3Nza two@example\n",
        )
        .unwrap();
        assert_eq!(metadata.instance_id.as_deref(), Some("iid-local01"));
        assert_eq!(metadata.hostname.as_deref(), Some("cloudimg"));
        assert_eq!(metadata.local_hostname.as_deref(), Some("cloudimg"));
        assert_eq!(
            metadata.public_keys,
            [
                "ssh-ed25519 AAAAC3Nza one@example",
                "ssh-rsa AAAAB3Nza two@example"
            ]
        );
    }

    #[test]
    fn meta_data_in_json_and_keys_as_a_string_or_a_map() {
        let metadata =
            parse_meta_data(br#"{"instance-id": "i-1", "hostname": "h", "public-keys": "ssh-rsa A x\n\nssh-rsa B y"}"#)
                .unwrap();
        assert_eq!(metadata.instance_id.as_deref(), Some("i-1"));
        assert_eq!(metadata.hostname.as_deref(), Some("h"));
        assert_eq!(metadata.local_hostname, None);
        assert_eq!(metadata.public_keys, ["ssh-rsa A x", "ssh-rsa B y"]);
        let map = parse_meta_data(b"public-keys:\n  mine: [ssh-rsa A x]\n  yours: ssh-rsa B y\n")
            .unwrap();
        assert_eq!(map.public_keys.len(), 2);
    }

    #[test]
    fn empty_meta_data_is_no_metadata_and_bad_meta_data_an_error() {
        assert_eq!(parse_meta_data(b"").unwrap(), Metadata::default());
        assert_eq!(
            parse_meta_data(b"# nothing\n").unwrap(),
            Metadata::default()
        );
        let error = parse_meta_data(b"instance-id: [unclosed\n").unwrap_err();
        assert!(error.starts_with("meta-data:1:"), "{error}");
        assert!(
            !error.contains('\n') && !error.contains("instance-id"),
            "{error}"
        );
        assert_eq!(
            parse_meta_data(b"- a list").unwrap_err(),
            "meta-data: not a mapping"
        );
        assert_eq!(
            parse_meta_data(&[0xff, 0xfe]).unwrap_err(),
            "meta-data: not UTF-8"
        );
    }

    #[test]
    fn a_seed_directory_with_the_command_line_winning() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("meta-data"),
            "instance-id: from-seed\nlocal-hostname: seed\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("user-data"), "#cloud-config\n").unwrap();
        std::fs::write(dir.path().join("network-config"), "version: 2\n").unwrap();
        let seed = Seed {
            url: None,
            hostname: Some("cmdline".into()),
            instance_id: None,
        };
        let url = format!("file://{}/", dir.path().display());
        let found = from_url(&url, &seed, Path::new("/nonexistent"), Instant::now()).unwrap();
        assert_eq!(found.source, Source::NoCloud);
        assert_eq!(found.metadata.instance_id.as_deref(), Some("from-seed"));
        assert_eq!(found.metadata.hostname.as_deref(), Some("cmdline"));
        assert_eq!(found.user_data.as_deref(), Some(&b"#cloud-config\n"[..]));
        assert_eq!(found.vendor_data, None);
        assert_eq!(
            found.network,
            Some(NetworkConfig::CloudInit(b"version: 2\n".to_vec()))
        );
        std::fs::remove_file(dir.path().join("meta-data")).unwrap();
        let error = from_url(&url, &seed, Path::new("/nonexistent"), Instant::now()).unwrap_err();
        assert_eq!(error, format!("{url}: no meta-data"));
    }
}
