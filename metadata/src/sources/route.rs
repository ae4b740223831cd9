//! Waiting for a route: a network source is tried only once the kernel's
//! routing table (`/proc/net/route`, `/proc/net/ipv6_route`) has a route
//! to its address, so that a request is not lost before DHCP has finished.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

/// Whether `/proc/net/route` (its text) has a route covering `target`:
/// destination and mask are hexadecimal in the host's (little-endian)
/// byte order.
pub fn ipv4_covered(table: &str, target: Ipv4Addr) -> bool {
    let target = u32::from_le_bytes(target.octets());
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(dest), Some(flags), Some(mask)) = (fields.get(1), fields.get(3), fields.get(7))
        else {
            return false;
        };
        let parse = |s: &str| u32::from_str_radix(s, 16).ok();
        // RTF_UP.
        let up = parse(flags).is_some_and(|f| f & 1 != 0);
        match (parse(dest), parse(mask)) {
            (Some(dest), Some(mask)) => up && target & mask == dest & mask,
            _ => false,
        }
    })
}

/// Whether `/proc/net/ipv6_route` (its text) has a route covering
/// `target` other than the kernel's reject routes: destination (32 hex
/// digits, network order), prefix length, ..., flags in the ninth field.
pub fn ipv6_covered(table: &str, target: Ipv6Addr) -> bool {
    let target = u128::from_be_bytes(target.octets());
    table.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(dest), Some(prefix), Some(flags)) =
            (fields.first(), fields.get(1), fields.get(8))
        else {
            return false;
        };
        let (Ok(dest), Ok(prefix), Ok(flags)) = (
            u128::from_str_radix(dest, 16),
            u32::from_str_radix(prefix, 16),
            u32::from_str_radix(flags, 16),
        ) else {
            return false;
        };
        // RTF_UP, not RTF_REJECT.
        if flags & 1 == 0 || flags & 0x200 != 0 || prefix > 128 {
            return false;
        }
        let mask = match prefix {
            0 => 0,
            p => u128::MAX << (128 - p),
        };
        target & mask == dest & mask
    })
}

/// Waits until there is a route to the host of `url`, polling the tables
/// under `proc` until `deadline`. Loopback and names need none.
pub fn wait(url: &str, proc: &Path, deadline: Instant) -> Result<(), String> {
    wait_any(&[url], proc, deadline).map(|_| ())
}

/// Waits until there is a route to the host of one of `urls` at least,
/// then says which have one, in their order.
pub fn wait_any<'a>(
    urls: &[&'a str],
    proc: &Path,
    deadline: Instant,
) -> Result<Vec<&'a str>, String> {
    let mut targets = Vec::new();
    for url in urls {
        let parsed = crate::http::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        let ip = parsed
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        targets.push((*url, ip));
    }
    loop {
        let mut routed = Vec::new();
        let (mut v4, mut v6) = (None, None);
        for (url, ip) in &targets {
            let covered = match ip {
                None => true,
                Some(ip) if ip.is_loopback() => true,
                Some(IpAddr::V4(ip)) => {
                    ipv4_covered(v4.get_or_insert_with(|| table(proc, "net/route")), *ip)
                }
                Some(IpAddr::V6(ip)) => {
                    ipv6_covered(v6.get_or_insert_with(|| table(proc, "net/ipv6_route")), *ip)
                }
            };
            if covered {
                routed.push(*url);
            }
        }
        if !routed.is_empty() {
            return Ok(routed);
        }
        let Some(left) = super::time_left(deadline) else {
            let ips: Vec<String> = targets
                .iter()
                .filter_map(|(_, ip)| ip.map(|ip| ip.to_string()))
                .collect();
            return Err(format!("no route to {}", ips.join(" or ")));
        };
        std::thread::sleep(left.min(Duration::from_millis(250)));
    }
}

fn table(proc: &Path, name: &str) -> String {
    std::fs::read_to_string(proc.join(name)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As Linux prints it: a default route through 10.0.2.2 on eth0 and the
    /// link's /24.
    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";

    #[test]
    fn a_default_route_covers_the_metadata_address() {
        assert!(ipv4_covered(ROUTE, Ipv4Addr::new(169, 254, 169, 254)));
    }

    #[test]
    fn a_link_route_alone_covers_only_its_link() {
        let link_only: String = ROUTE
            .lines()
            .filter(|l| !l.contains("0202000A"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(ipv4_covered(&link_only, Ipv4Addr::new(10, 0, 2, 15)));
        assert!(!ipv4_covered(&link_only, Ipv4Addr::new(169, 254, 169, 254)));
        assert!(!ipv4_covered("", Ipv4Addr::new(169, 254, 169, 254)));
    }

    #[test]
    fn ipv6_routes_are_matched_by_prefix_and_rejects_are_not_routes() {
        // A /64 on eth0, the kernel's reject route for ::/0 on lo, and a
        // default route through a router.
        let table = "fd000ec2000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";
        let imds: Ipv6Addr = "fd00:ec2::254".parse().unwrap();
        assert!(ipv6_covered(table, imds));
        let rejects_only: String = table.lines().skip(1).collect();
        assert!(!ipv6_covered(&rejects_only, imds));
        let default = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0";
        assert!(ipv6_covered(default, imds));
    }

    #[test]
    fn waiting_gives_up_at_the_deadline_and_names_the_address() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("net")).unwrap();
        std::fs::write(dir.path().join("net/route"), "Iface\tDestination\n").unwrap();
        let started = Instant::now();
        let error = wait(
            "http://169.254.169.254/latest",
            dir.path(),
            Instant::now() + Duration::from_millis(600),
        )
        .unwrap_err();
        assert_eq!(error, "no route to 169.254.169.254");
        assert!(started.elapsed() < Duration::from_secs(2));
        std::fs::write(dir.path().join("net/route"), ROUTE).unwrap();
        wait("http://169.254.169.254/", dir.path(), Instant::now()).unwrap();
        wait("http://127.0.0.1:1/", dir.path(), Instant::now()).unwrap();
    }
}
