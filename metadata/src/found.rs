//! What a data source found, in one shape for every source: the interface
//! between the sources (which find it) and what is done with it
//! (`/run/config`, the network handed to the dhcp image, cloud-config).

use std::fmt;

/// The data sources, in the order they are probed (docs/cloud-config.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// A filesystem labelled `cidata`/`CIDATA`, or a seed URL
    /// (`ds=nocloud;s=URL/`, `nocloud-net`) on the command line or in the
    /// SMBIOS system serial.
    NoCloud,
    /// OpenStack's config drive: a filesystem labelled `config-2`.
    ConfigDrive,
    /// OpenStack's metadata service at 169.254.169.254.
    OpenStack,
    /// EC2's instance metadata service, IMDSv2.
    Ec2,
}

impl Source {
    pub const ALL: [Source; 4] = [
        Source::NoCloud,
        Source::ConfigDrive,
        Source::OpenStack,
        Source::Ec2,
    ];

    /// Its name in `berth.datasource=NAME` (cloud-init's names, lower case).
    pub fn name(self) -> &'static str {
        match self {
            Source::NoCloud => "nocloud",
            Source::ConfigDrive => "configdrive",
            Source::OpenStack => "openstack",
            Source::Ec2 => "ec2",
        }
    }

    /// What `/run/config/provider` says: LinuxKit's provider names where
    /// LinuxKit has the source (`aws`, `openstack`).
    pub fn provider(self) -> &'static str {
        match self {
            Source::NoCloud => "nocloud",
            Source::ConfigDrive => "configdrive",
            Source::OpenStack => "openstack",
            Source::Ec2 => "aws",
        }
    }

    /// The source named `name` in `berth.datasource=`.
    pub fn from_name(name: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The instance's metadata, whichever source it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// `instance-id` (NoCloud, EC2), `uuid` (OpenStack).
    pub instance_id: Option<String>,
    /// The host name (`local-hostname`, `hostname`), perhaps a FQDN.
    pub hostname: Option<String>,
    /// EC2's and OpenStack's `local-hostname`.
    pub local_hostname: Option<String>,
    /// OpenSSH public keys, one line each.
    pub public_keys: Vec<String>,
    pub local_ipv4: Option<String>,
    pub public_ipv4: Option<String>,
    pub availability_zone: Option<String>,
    pub instance_type: Option<String>,
}

/// The network configuration a source carries, as the source wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkConfig {
    /// NoCloud's `network-config`: cloud-init's version 1 or 2, YAML.
    CloudInit(Vec<u8>),
    /// OpenStack's `network_data.json`.
    OpenStack(Vec<u8>),
}

/// Everything one data source found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub source: Source,
    /// Where it was found, for the log: a device and its label, or a URL.
    pub origin: String,
    pub metadata: Metadata,
    /// The user data, as the source handed it (perhaps gzip, MIME, JSON).
    pub user_data: Option<Vec<u8>>,
    pub vendor_data: Option<Vec<u8>>,
    pub network: Option<NetworkConfig>,
}
