//! OpenStack: the config drive (a filesystem labelled `config-2`) and the
//! metadata service (`http://169.254.169.254/openstack/latest/`) carry the
//! same files: `meta_data.json` (required), `user_data`, `vendor_data.json`
//! (whose `cloud-init` key is the vendor data) and `network_data.json`.

use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use crate::found::{Found, Metadata, NetworkConfig, Source};
use crate::label::{Labelled, Mounted};

/// The config drive's label (either case).
pub const CONFIG_DRIVE_LABEL: &str = "config-2";
/// Where the files are, on the drive and under the service's address.
const LATEST: &str = "openstack/latest";

/// Nova's `meta_data.json`: `uuid` is the instance id, `hostname` (else
/// `name`) the host name, `public_keys` a map of key names to keys.
pub fn parse_meta_data(bytes: &[u8]) -> Result<Metadata, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("meta_data.json: {e}"))?;
    let Value::Object(map) = value else {
        return Err("meta_data.json: not a JSON object".into());
    };
    let string = |key: &str| match map.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    };
    let mut public_keys = Vec::new();
    if let Some(keys) = map.get("public_keys") {
        super::nocloud::collect_keys(keys, &mut public_keys);
    }
    Ok(Metadata {
        instance_id: string("uuid"),
        hostname: string("hostname").or_else(|| string("name")),
        local_hostname: string("hostname"),
        public_keys,
        availability_zone: string("availability_zone"),
        ..Metadata::default()
    })
}

/// `vendor_data.json`'s vendor data for cloud-init: the document itself if
/// it is a string, else its `cloud-init` key (a string); `None` if neither.
pub fn parse_vendor_data(bytes: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("vendor_data.json: {e}"))?;
    Ok(match value {
        Value::String(s) => Some(s.into_bytes()),
        Value::Object(map) => match map.get("cloud-init") {
            Some(Value::String(s)) => Some(s.clone().into_bytes()),
            _ => None,
        },
        _ => None,
    })
}

fn from_files(
    source: Source,
    origin: String,
    mut read: impl FnMut(&str) -> Result<Option<Vec<u8>>, String>,
) -> Result<Found, String> {
    let Some(meta_data) = read("meta_data.json")? else {
        return Err(format!("{origin}: no {LATEST}/meta_data.json"));
    };
    let metadata = parse_meta_data(&meta_data).map_err(|e| format!("{origin}: {e}"))?;
    // The other files are optional: one unreadable is logged and left out.
    let mut optional = |name: &str| super::left_out(source, &origin, read(name));
    let user_data = optional("user_data");
    let vendor_data = optional("vendor_data.json")
        .and_then(|bytes| super::left_out(source, &origin, parse_vendor_data(&bytes)));
    let network = optional("network_data.json").map(NetworkConfig::OpenStack);
    Ok(Found {
        source,
        origin,
        metadata,
        user_data,
        vendor_data,
        network,
    })
}

/// The config drive.
pub fn from_config_drive(device: &Labelled) -> Result<Found, String> {
    let mounted = Mounted::new(&device.device, device.fs)?;
    let origin = format!("{} labelled {}", device.device.display(), device.label);
    from_files(Source::ConfigDrive, origin, |name| {
        mounted.read(&format!("{LATEST}/{name}"))
    })
}

/// The metadata service at `base` (`http://169.254.169.254`).
pub fn from_service(base: &str, proc: &Path, deadline: Instant) -> Result<Found, String> {
    let dir = format!("{base}/{LATEST}/");
    let mut documents = super::Documents::open(&dir, "meta_data.json", proc, deadline)?;
    from_files(Source::OpenStack, dir.clone(), |name| documents.read(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `meta_data.json` as Nova writes it (its documentation's example).
    pub const NOVA_META_DATA: &str = r#"{
    "random_seed": "yu5ZnkqF2CqnDZVAfZgarG...",
    "availability_zone": "nova",
    "keys": [
        {
            "data": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDBqUfVvCSez0/Wfpd8dLLgZXV9GtXQ7hnMN+Z0OWQUyebVEHey1CXuin0uY1cAJMhUq8j98SiW+cU0sU4J3x5l2+xi1bodDm1BtFWVeLIOQINpfV1n8fKjHB+ynPpe1F6tMDvrFGUlJs44t30BrujMXBe8Rq44cCk6wqyjATA3rQ0nEiOn+1qOt2YBhbd3S1P2O21ucNt0qPLCJ6OGFKtTyzhMfy8WbwNlDRl6fY+8yZWE3uFZpwYUXDw3aVDwrDAiYEylRqIB1k4j8Bq4TsgbiLzu9kmF49U3fzxrhcgyz4wk+cNA3jeFoaD32CBb7UP8AFpUIJYVh0N5xDshbq3 Generated-by-Nova",
            "name": "mykey",
            "type": "ssh"
        }
    ],
    "hostname": "test.novalocal",
    "launch_index": 0,
    "meta": {
        "priority": "low",
        "role": "webserver"
    },
    "devices": [],
    "project_id": "f7ac731cc11f40efbc03a9f9e1d1d21f",
    "public_keys": {
        "mykey": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDBqUfVvCSez0/Wfpd8dLLgZXV9GtXQ7hnMN+Z0OWQUyebVEHey1CXuin0uY1cAJMhUq8j98SiW+cU0sU4J3x5l2+xi1bodDm1BtFWVeLIOQINpfV1n8fKjHB+ynPpe1F6tMDvrFGUlJs44t30BrujMXBe8Rq44cCk6wqyjATA3rQ0nEiOn+1qOt2YBhbd3S1P2O21ucNt0qPLCJ6OGFKtTyzhMfy8WbwNlDRl6fY+8yZWE3uFZpwYUXDw3aVDwrDAiYEylRqIB1k4j8Bq4TsgbiLzu9kmF49U3fzxrhcgyz4wk+cNA3jeFoaD32CBb7UP8AFpUIJYVh0N5xDshbq3 Generated-by-Nova\n"
    },
    "name": "test",
    "uuid": "83679162-1378-4288-a2d4-70e13ec132aa"
}"#;

    #[test]
    fn nova_meta_data() {
        let metadata = parse_meta_data(NOVA_META_DATA.as_bytes()).unwrap();
        assert_eq!(
            metadata.instance_id.as_deref(),
            Some("83679162-1378-4288-a2d4-70e13ec132aa")
        );
        assert_eq!(metadata.hostname.as_deref(), Some("test.novalocal"));
        assert_eq!(metadata.availability_zone.as_deref(), Some("nova"));
        assert_eq!(metadata.public_keys.len(), 1);
        assert!(metadata.public_keys[0].starts_with("ssh-rsa AAAAB3"));
        assert!(metadata.public_keys[0].ends_with("Generated-by-Nova"));
    }

    #[test]
    fn name_when_there_is_no_hostname_and_errors_name_the_file() {
        let metadata = parse_meta_data(br#"{"uuid": "u", "name": "vm1"}"#).unwrap();
        assert_eq!(metadata.hostname.as_deref(), Some("vm1"));
        assert_eq!(metadata.local_hostname, None);
        let error = parse_meta_data(b"{\"uuid\": ").unwrap_err();
        assert!(error.starts_with("meta_data.json: "), "{error}");
        assert_eq!(
            parse_meta_data(b"[]").unwrap_err(),
            "meta_data.json: not a JSON object"
        );
    }

    #[test]
    fn vendor_data_is_its_cloud_init_key_or_a_string() {
        assert_eq!(
            parse_vendor_data(br##"{"cloud-init": "#cloud-config\nntp: {}\n", "other": {}}"##)
                .unwrap(),
            Some(b"#cloud-config\nntp: {}\n".to_vec())
        );
        assert_eq!(
            parse_vendor_data(br##""#cloud-config\n""##).unwrap(),
            Some(b"#cloud-config\n".to_vec())
        );
        assert_eq!(parse_vendor_data(b"{}").unwrap(), None);
        assert!(parse_vendor_data(b"{").is_err());
    }
}
