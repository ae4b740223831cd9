//! The network configuration a source carries — cloud-init's
//! `network-config` version 1 or 2, OpenStack's `network_data.json` — as
//! one file per interface, `/run/config/network/IFNAME`, for the dhcp
//! image: lines `dhcp`, `address A/P`, `gateway G`, `route NET/P VIA`,
//! `mtu N`, `nameserver A`, `search D`. An interface is named by the
//! document or matched by its MAC address in `/sys/class/net`. What has no
//! line here (bonds, bridges, VLANs, ...) is logged by name and skipped.
//! The parsing is pure; `write` does the I/O.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use serde_json::Value;

use crate::found::NetworkConfig;

/// How an interface is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// By its MAC address (lower case).
    Mac(String),
    /// By its name, perhaps a glob (`*`, `?`) in netplan's `match: name:`.
    Name(String),
}

/// One interface's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub dhcp: bool,
    /// `ADDRESS/PREFIX`.
    pub addresses: Vec<String>,
    pub gateways: Vec<String>,
    /// `(NETWORK/PREFIX, VIA)`.
    pub routes: Vec<(String, String)>,
    pub mtu: Option<u32>,
    pub nameservers: Vec<String>,
    pub search: Vec<String>,
}

impl Settings {
    /// The file's lines.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.dhcp {
            out.push_str("dhcp\n");
        }
        for a in &self.addresses {
            let _ = writeln!(out, "address {a}");
        }
        for g in &self.gateways {
            let _ = writeln!(out, "gateway {g}");
        }
        for (net, via) in &self.routes {
            let _ = writeln!(out, "route {net} {via}");
        }
        if let Some(mtu) = self.mtu {
            let _ = writeln!(out, "mtu {mtu}");
        }
        for n in &self.nameservers {
            let _ = writeln!(out, "nameserver {n}");
        }
        // One line: a resolver keeps only the last `search`.
        if !self.search.is_empty() {
            let _ = writeln!(out, "search {}", self.search.join(" "));
        }
        out
    }

    fn merge(&mut self, other: Settings) {
        self.dhcp |= other.dhcp;
        push_new(&mut self.addresses, other.addresses);
        push_new(&mut self.gateways, other.gateways);
        push_new(&mut self.routes, other.routes);
        self.mtu = self.mtu.or(other.mtu);
        push_new(&mut self.nameservers, other.nameservers);
        push_new(&mut self.search, other.search);
    }
}

fn push_new<T: PartialEq>(to: &mut Vec<T>, from: Vec<T>) {
    for item in from {
        if !to.contains(&item) {
            to.push(item);
        }
    }
}

/// A parsed document: its interfaces, and what was skipped (one line each).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub interfaces: Vec<(Match, Settings)>,
    pub skipped: Vec<String>,
}

impl Parsed {
    fn add(&mut self, matched: Match, settings: Settings) {
        match self.interfaces.iter_mut().find(|(m, _)| *m == matched) {
            Some((_, existing)) => existing.merge(settings),
            None => self.interfaces.push((matched, settings)),
        }
    }

    /// Global name servers and search domains go to every interface that
    /// has none of its own.
    fn add_global_dns(&mut self, nameservers: &[String], search: &[String]) {
        for (_, settings) in &mut self.interfaces {
            if settings.nameservers.is_empty() {
                settings.nameservers = nameservers.to_vec();
            }
            if settings.search.is_empty() {
                settings.search = search.to_vec();
            }
        }
    }
}

/// A prefix length from a netmask (`255.255.255.0`, `ffff:ffff::`) or a
/// number.
pub fn prefix_length(netmask: &str) -> Option<u32> {
    if let Ok(n) = netmask.parse::<u32>() {
        return (n <= 128).then_some(n);
    }
    let bits = match netmask.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
        IpAddr::V6(v6) => u128::from(v6),
    };
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones)
}

/// `ADDRESS/PREFIX` from an address (perhaps with its prefix already) and
/// a netmask; `None` if it is not an address.
fn with_prefix(address: &str, netmask: Option<&str>) -> Option<String> {
    let (ip, prefix) = match address.split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix.parse::<u32>().ok()?)),
        None => (address, None),
    };
    let parsed: IpAddr = ip.parse().ok()?;
    let max = if parsed.is_ipv4() { 32 } else { 128 };
    let prefix = match (prefix, netmask) {
        (Some(p), _) => p,
        (None, Some(mask)) => prefix_length(mask)?,
        (None, None) => max,
    };
    (prefix <= max).then(|| format!("{parsed}/{prefix}"))
}

fn is_default(network: &str) -> bool {
    matches!(network, "default" | "0.0.0.0/0" | "::/0" | "0.0.0.0" | "::")
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => s.split_whitespace().map(String::from).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str())
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
}

/// A JSON array's items; none if it is not an array.
fn array(value: Option<&Value>) -> Vec<Value> {
    value.and_then(Value::as_array).cloned().unwrap_or_default()
}

fn string<'a>(map: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn mtu(value: Option<&Value>) -> Option<u32> {
    match value? {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .filter(|&n| n >= 68)
}

/// A route as `(NETWORK/PREFIX, VIA)`, or the gateway it is when it is the
/// default route.
enum Route {
    Default(String),
    To(String, String),
}

fn route(network: &str, netmask: Option<&str>, via: &str) -> Option<Route> {
    via.parse::<IpAddr>().ok()?;
    if is_default(network) && netmask.is_none_or(|m| prefix_length(m) == Some(0)) {
        return Some(Route::Default(via.to_string()));
    }
    let network = with_prefix(network, netmask)?;
    if network.ends_with("/0") {
        return Some(Route::Default(via.to_string()));
    }
    Some(Route::To(network, via.to_string()))
}

fn add_route(settings: &mut Settings, route: Route) {
    match route {
        Route::Default(via) => push_new(&mut settings.gateways, vec![via]),
        Route::To(net, via) => push_new(&mut settings.routes, vec![(net, via)]),
    }
}

/// cloud-init's `network-config`: version 1 or 2, bare or under `network:`.
pub fn parse_cloud_init(bytes: &[u8]) -> Result<Parsed, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "network-config: not UTF-8".to_string())?;
    let value: Value =
        serde_saphyr::from_str(text).map_err(|e| crate::yaml::error_line("network-config", &e))?;
    let mut map = match value {
        Value::Object(map) => map,
        _ => return Err("network-config: not a mapping".into()),
    };
    if let Some(Value::Object(inner)) = map.remove("network") {
        map = inner;
    }
    match map.get("version").and_then(Value::as_u64) {
        Some(1) => Ok(parse_v1(&map)),
        Some(2) => Ok(parse_v2(&map)),
        _ => Err("network-config: version is not 1 or 2".into()),
    }
}

fn parse_v1(map: &serde_json::Map<String, Value>) -> Parsed {
    let mut parsed = Parsed::default();
    let (mut global_ns, mut global_search) = (Vec::new(), Vec::new());
    let items = array(map.get("config"));
    for item in &items {
        let Some(item) = item.as_object() else {
            continue;
        };
        let kind = string(item, "type").unwrap_or("");
        let name = string(item, "name");
        match kind {
            "physical" => {
                let Some(matched) = string(item, "mac_address")
                    .map(|m| Match::Mac(m.to_ascii_lowercase()))
                    .or_else(|| name.map(|n| Match::Name(n.to_string())))
                else {
                    parsed
                        .skipped
                        .push("physical interface without a name or MAC address".into());
                    continue;
                };
                let mut settings = Settings {
                    mtu: mtu(item.get("mtu")),
                    ..Settings::default()
                };
                let subnets = array(item.get("subnets"));
                for subnet in subnets.iter().filter_map(Value::as_object) {
                    v1_subnet(
                        name.unwrap_or("?"),
                        subnet,
                        &mut settings,
                        &mut parsed.skipped,
                    );
                }
                parsed.add(matched, settings);
            }
            "nameserver" => {
                let (ns, search) = (strings(item.get("address")), strings(item.get("search")));
                match string(item, "interface") {
                    Some(interface) => parsed.add(
                        Match::Name(interface.to_string()),
                        Settings {
                            nameservers: ns,
                            search,
                            ..Settings::default()
                        },
                    ),
                    None => {
                        push_new(&mut global_ns, ns);
                        push_new(&mut global_search, search);
                    }
                }
            }
            other => parsed.skipped.push(format!(
                "{other} {:?} (type {other} is not supported)",
                name.unwrap_or("")
            )),
        }
    }
    parsed.add_global_dns(&global_ns, &global_search);
    parsed
}

fn v1_subnet(
    name: &str,
    subnet: &serde_json::Map<String, Value>,
    settings: &mut Settings,
    skipped: &mut Vec<String>,
) {
    match string(subnet, "type").unwrap_or("") {
        "dhcp" | "dhcp4" => settings.dhcp = true,
        // The dhcp image speaks DHCPv4; the kernel's SLAAC still works.
        "dhcp6" => skipped.push(format!("{name}: DHCPv6 (not supported)")),
        "static" | "static6" => {
            let Some(address) =
                string(subnet, "address").and_then(|a| with_prefix(a, string(subnet, "netmask")))
            else {
                return skipped.push(format!("{name}: a static subnet without a usable address"));
            };
            push_new(&mut settings.addresses, vec![address]);
            if let Some(gateway) = string(subnet, "gateway") {
                match gateway.parse::<IpAddr>() {
                    Ok(_) => push_new(&mut settings.gateways, vec![gateway.to_string()]),
                    Err(_) => {
                        skipped.push(format!("{name}: gateway {gateway:?} is not an address"))
                    }
                }
            }
            push_new(
                &mut settings.nameservers,
                strings(subnet.get("dns_nameservers")),
            );
            push_new(&mut settings.search, strings(subnet.get("dns_search")));
            let routes = array(subnet.get("routes"));
            for r in routes.iter().filter_map(Value::as_object) {
                let network = string(r, "network")
                    .or_else(|| string(r, "destination"))
                    .unwrap_or("");
                match route(
                    network,
                    string(r, "netmask"),
                    string(r, "gateway").unwrap_or(""),
                ) {
                    Some(route) => add_route(settings, route),
                    None => skipped.push(format!("{name}: route to {network:?} is not understood")),
                }
            }
        }
        other => skipped.push(format!("{name}: subnet type {other:?} is not supported")),
    }
}

fn parse_v2(map: &serde_json::Map<String, Value>) -> Parsed {
    let mut parsed = Parsed::default();
    for kind in [
        "bonds", "bridges", "vlans", "wifis", "tunnels", "vrfs", "modems",
    ] {
        if let Some(Value::Object(entries)) = map.get(kind) {
            for id in entries.keys() {
                parsed
                    .skipped
                    .push(format!("{kind} {id:?} (not supported)"));
            }
        }
    }
    let ethernets = match map.get("ethernets") {
        Some(Value::Object(e)) => e.clone(),
        _ => Default::default(),
    };
    for (id, config) in &ethernets {
        let Some(config) = config.as_object() else {
            continue;
        };
        let matched = match config.get("match").and_then(Value::as_object) {
            Some(m) => match (string(m, "macaddress"), string(m, "name")) {
                (Some(mac), _) => Match::Mac(mac.to_ascii_lowercase()),
                (None, Some(name)) => Match::Name(name.to_string()),
                (None, None) => {
                    parsed.skipped.push(format!(
                        "ethernet {id:?}: match by anything but macaddress or name"
                    ));
                    continue;
                }
            },
            None => Match::Name(id.clone()),
        };
        if config.contains_key("set-name") {
            parsed.skipped.push(format!(
                "ethernet {id:?}: set-name (interfaces keep their names)"
            ));
        }
        let truthy = |key| {
            matches!(config.get(key), Some(Value::Bool(true)))
                || matches!(
                    config.get(key).and_then(Value::as_str),
                    Some("true" | "yes" | "on")
                )
        };
        let mut settings = Settings {
            dhcp: truthy("dhcp4"),
            mtu: mtu(config.get("mtu")),
            ..Settings::default()
        };
        if truthy("dhcp6") {
            parsed
                .skipped
                .push(format!("ethernet {id:?}: dhcp6 (not supported)"));
        }
        for address in strings(config.get("addresses")) {
            match with_prefix(&address, None) {
                Some(a) => settings.addresses.push(a),
                None => parsed
                    .skipped
                    .push(format!("ethernet {id:?}: address {address:?}")),
            }
        }
        for key in ["gateway4", "gateway6"] {
            if let Some(g) = string(config, key).filter(|g| g.parse::<IpAddr>().is_ok()) {
                settings.gateways.push(g.to_string());
            }
        }
        let routes = array(config.get("routes"));
        for r in routes.iter().filter_map(Value::as_object) {
            let to = string(r, "to").unwrap_or("");
            match route(to, None, string(r, "via").unwrap_or("")) {
                Some(route) => add_route(&mut settings, route),
                None => parsed.skipped.push(format!(
                    "ethernet {id:?}: route to {to:?} is not understood"
                )),
            }
        }
        if let Some(Value::Object(ns)) = config.get("nameservers") {
            settings.nameservers = strings(ns.get("addresses"));
            settings.search = strings(ns.get("search"));
        }
        parsed.add(matched, settings);
    }
    parsed
}

/// OpenStack's `network_data.json`: `links` (interfaces, by MAC address),
/// `networks` on them (`ipv4`/`ipv6` static, `ipv4_dhcp`, `ipv6_dhcp`,
/// `ipv6_dhcpv6-stateful`; `ipv6_slaac` needs no line, the kernel does
/// it), and `services` of type `dns`.
pub fn parse_openstack(bytes: &[u8]) -> Result<Parsed, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("network_data.json: {e}"))?;
    let Value::Object(map) = value else {
        return Err("network_data.json: not a JSON object".into());
    };
    let mut parsed = Parsed::default();
    let mut links = Vec::new();
    for link in array(map.get("links")).iter().filter_map(Value::as_object) {
        let id = string(link, "id").unwrap_or("?").to_string();
        let kind = string(link, "type").unwrap_or("");
        if matches!(kind, "bond" | "vlan") {
            parsed
                .skipped
                .push(format!("link {id:?} of type {kind} (not supported)"));
            continue;
        }
        let Some(mac) = string(link, "ethernet_mac_address") else {
            parsed
                .skipped
                .push(format!("link {id:?} without ethernet_mac_address"));
            continue;
        };
        let matched = Match::Mac(mac.to_ascii_lowercase());
        parsed.add(
            matched.clone(),
            Settings {
                mtu: mtu(link.get("mtu")),
                ..Settings::default()
            },
        );
        links.push((id, matched));
    }
    let dns_of = |services: &[Value]| -> Vec<String> {
        services
            .iter()
            .filter_map(Value::as_object)
            .filter(|s| string(s, "type") == Some("dns"))
            .filter_map(|s| string(s, "address").map(String::from))
            .collect()
    };
    for network in array(map.get("networks"))
        .iter()
        .filter_map(Value::as_object)
    {
        let id = string(network, "id").unwrap_or("?");
        let link = string(network, "link").unwrap_or("");
        let Some((_, matched)) = links.iter().find(|(l, _)| l == link) else {
            parsed.skipped.push(format!(
                "network {id:?} on link {link:?}, which is not a usable link"
            ));
            continue;
        };
        let mut settings = Settings::default();
        match string(network, "type").unwrap_or("") {
            "ipv4_dhcp" => settings.dhcp = true,
            // The dhcp image speaks DHCPv4; the kernel's SLAAC still works.
            "ipv6_dhcp" | "ipv6_dhcpv6-stateful" => parsed
                .skipped
                .push(format!("network {id:?}: DHCPv6 (not supported)")),
            "ipv6_slaac" => {}
            "ipv4" | "ipv6" => {
                let address = string(network, "ip_address").unwrap_or("");
                match with_prefix(address, string(network, "netmask")) {
                    Some(a) => settings.addresses.push(a),
                    None => {
                        parsed.skipped.push(format!(
                            "network {id:?}: address {address:?} is not understood"
                        ));
                        continue;
                    }
                }
                if let Some(gateway) = string(network, "gateway") {
                    settings.gateways.push(gateway.to_string());
                }
                for r in array(network.get("routes"))
                    .iter()
                    .filter_map(Value::as_object)
                {
                    let net = string(r, "network").unwrap_or("");
                    match route(
                        net,
                        string(r, "netmask"),
                        string(r, "gateway").unwrap_or(""),
                    ) {
                        Some(route) => add_route(&mut settings, route),
                        None => parsed.skipped.push(format!(
                            "network {id:?}: route to {net:?} is not understood"
                        )),
                    }
                }
                settings.nameservers = strings(network.get("dns_nameservers"));
                push_new(
                    &mut settings.nameservers,
                    dns_of(&array(network.get("services"))),
                );
            }
            other => {
                parsed
                    .skipped
                    .push(format!("network {id:?} of type {other:?} (not supported)"));
                continue;
            }
        }
        parsed.add(matched.clone(), settings);
    }
    parsed.add_global_dns(&dns_of(&array(map.get("services"))), &[]);
    Ok(parsed)
}

/// netplan's name globs: `*` and `?`.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The interfaces that exist: `(name, MAC address)` from `/sys/class/net`.
pub fn interfaces(sys_class_net: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(sys_class_net)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let mac = std::fs::read_to_string(e.path().join("address")).unwrap_or_default();
            (name, mac.trim().to_ascii_lowercase())
        })
        .collect();
    out.sort();
    out
}

/// A name the kernel could give an interface, safe as a file name.
fn plain_interface_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
}

/// The files to write: `(IFNAME, lines)`, each interface matched against
/// those that exist; what matches none is in `skipped`.
pub fn resolve(
    parsed: Parsed,
    existing: &[(String, String)],
) -> (Vec<(String, String)>, Vec<String>) {
    let mut skipped = parsed.skipped;
    let mut by_name: Vec<(String, Settings)> = Vec::new();
    for (matched, settings) in parsed.interfaces {
        let names: Vec<String> = match &matched {
            Match::Mac(mac) => existing
                .iter()
                .filter(|(_, m)| m == mac)
                .map(|(n, _)| n.clone())
                .take(1)
                .collect(),
            Match::Name(pattern) if pattern.contains(['*', '?']) => existing
                .iter()
                .filter(|(n, _)| glob(pattern, n))
                .map(|(n, _)| n.clone())
                .collect(),
            Match::Name(name) => vec![name.clone()],
        };
        if names.is_empty() {
            skipped.push(format!("{matched:?}: no such interface"));
        }
        for name in names {
            if !plain_interface_name(&name) {
                skipped.push(format!("interface name {name:?} is not a plain name"));
                continue;
            }
            match by_name.iter_mut().find(|(n, _)| *n == name) {
                Some((_, existing)) => existing.merge(settings.clone()),
                None => by_name.push((name, settings.clone())),
            }
        }
    }
    let files = by_name.into_iter().map(|(n, s)| (n, s.render())).collect();
    (files, skipped)
}

/// Writes `dir/network/IFNAME` for each interface of `network`, matched
/// against `/sys/class/net`; each problem is one logged line.
pub fn write(dir: &Path, network: &NetworkConfig) {
    write_in(dir, network, Path::new("/sys/class/net"))
}

pub fn write_in(dir: &Path, network: &NetworkConfig, sys_class_net: &Path) {
    let (name, parsed) = match network {
        NetworkConfig::CloudInit(bytes) => ("network-config", parse_cloud_init(bytes)),
        NetworkConfig::OpenStack(bytes) => ("network_data.json", parse_openstack(bytes)),
    };
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return println!("network: {e}; no network configuration written"),
    };
    let (files, skipped) = resolve(parsed, &interfaces(sys_class_net));
    for line in skipped {
        println!("network: {name}: {line}; skipped");
    }
    for (interface, lines) in files {
        let entry = crate::run_config::Entry::File {
            path: Path::new("network").join(&interface),
            mode: 0o644,
            content: lines.into_bytes(),
        };
        match crate::run_config::write_entry(dir, &entry) {
            Ok(()) => println!("network: {interface}: configuration from {name}"),
            Err(e) => println!(
                "network: {}: {e}",
                dir.join("network").join(&interface).display()
            ),
        }
    }
}

#[cfg(test)]
mod tests;
