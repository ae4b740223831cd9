use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::found::NetworkConfig;
use crate::test_server::{Request, Server, response};

#[test]
fn options_from_the_command_line() {
    let options = Options::from_cmdline(
        "BOOT_IMAGE=/vmlinuz console=ttyS0 berth.datasource=ec2 berth.imdsv1=allow quiet\n",
        None,
    );
    assert_eq!(
        options,
        Options {
            pinned: Some(Source::Ec2),
            seed: Seed::default(),
            imdsv1: true,
        }
    );
    let options = Options::from_cmdline(
        "console=ttyS0 \"ds=nocloud-net;s=http://10.0.2.2:8000/seed;h=web1;i=iid-42\"",
        None,
    );
    assert_eq!(
        options.seed,
        Seed {
            url: Some("http://10.0.2.2:8000/seed/".into()),
            hostname: Some("web1".into()),
            instance_id: Some("iid-42".into()),
        }
    );
    assert_eq!(options.pinned, None);
    assert!(!options.imdsv1);
}

#[test]
fn options_from_the_smbios_serial_and_the_command_line_wins() {
    let options = Options::from_cmdline(
        "ro",
        Some("ds=nocloud;seedfrom=http://192.168.1.1/x/;local-hostname=fromserial"),
    );
    assert_eq!(options.seed.url.as_deref(), Some("http://192.168.1.1/x/"));
    assert_eq!(options.seed.hostname.as_deref(), Some("fromserial"));
    let options = Options::from_cmdline(
        "ds=nocloud;h=fromcmdline",
        Some("ds=nocloud;s=file:///seed/;h=fromserial"),
    );
    assert_eq!(options.seed.url.as_deref(), Some("file:///seed/"));
    assert_eq!(options.seed.hostname.as_deref(), Some("fromcmdline"));
}

#[test]
fn bad_options_are_ignored() {
    for cmdline in [
        "berth.datasource=azure",
        "ds=nocloud;s=https://seed.example/",
        "ds=ec2;s=http://x/",
        "ds=nocloud;what=ever",
        "ds=nocloud;novalue",
        "berth.imdsv1=yes",
    ] {
        assert_eq!(
            Options::from_cmdline(cmdline, None),
            Options::default(),
            "{cmdline}"
        );
    }
    assert_eq!(Options::from_cmdline("", Some("")), Options::default());
}

#[test]
fn the_dmi_orders_the_network_sources() {
    let dmi = |vendor: &str, product: &str, tag: &str| Dmi {
        sys_vendor: vendor.into(),
        product_name: product.into(),
        chassis_asset_tag: tag.into(),
    };
    assert_eq!(
        network_order(&dmi("OpenStack Foundation", "OpenStack Nova", "")),
        [Source::OpenStack]
    );
    assert_eq!(
        network_order(&dmi("RDO", "OpenStack Compute", "")),
        [Source::OpenStack]
    );
    assert_eq!(
        network_order(&dmi("Amazon EC2", "t3.micro", "Amazon EC2")),
        [Source::Ec2]
    );
    assert_eq!(
        network_order(&dmi("QEMU", "Standard PC (Q35 + ICH9, 2009)", "")),
        [Source::OpenStack, Source::Ec2]
    );
}

/// An IMDS as AWS runs it: tokens from PUT /latest/api/token (TTL header
/// required), GETs without a valid token refused with 401. Each token is
/// good for `uses` requests, so expiry can be forced.
fn imds(uses: u32) -> Server {
    let issued = AtomicU32::new(0);
    let valid: Mutex<Option<(String, u32)>> = Mutex::new(None);
    Server::start(move |request: &Request| {
        if request.path == "/latest/api/token" {
            if request.method != "PUT"
                || request.header("x-aws-ec2-metadata-token-ttl-seconds") != Some("21600")
            {
                return response(400, "");
            }
            let token = format!("token-{}", issued.fetch_add(1, Ordering::SeqCst));
            *valid.lock().unwrap() = Some((token.clone(), uses));
            return response(200, &token);
        }
        {
            let mut valid = valid.lock().unwrap();
            match (valid.as_mut(), request.header("x-aws-ec2-metadata-token")) {
                (Some((token, left)), Some(sent)) if token == sent && *left > 0 => *left -= 1,
                _ => return response(401, ""),
            }
        }
        imds_answer(&request.path)
    })
}

fn imds_answer(path: &str) -> Option<Vec<u8>> {
    match path {
        "/latest/meta-data/instance-id" => response(200, "i-0123456789abcdef0"),
        "/latest/meta-data/hostname" => response(200, "ip-10-0-0-5.eu-west-1.compute.internal"),
        "/latest/meta-data/local-hostname" => {
            response(200, "ip-10-0-0-5.eu-west-1.compute.internal")
        }
        "/latest/meta-data/local-ipv4" => response(200, "10.0.0.5"),
        "/latest/meta-data/public-ipv4" => response(200, "203.0.113.7"),
        "/latest/meta-data/placement/availability-zone" => response(200, "eu-west-1a"),
        "/latest/meta-data/instance-type" => response(200, "t3.micro"),
        "/latest/meta-data/public-keys/" => response(200, "0=my-key\n1=other"),
        "/latest/meta-data/public-keys/0/openssh-key" => {
            response(200, "ssh-ed25519 AAAAC3 my-key\n")
        }
        "/latest/meta-data/public-keys/1/openssh-key" => response(200, "ssh-rsa AAAAB3 other\n"),
        "/latest/user-data" => response(200, "#cloud-config\nhostname: web\n"),
        _ => response(404, ""),
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn check_ec2(found: &Found, base: &str) {
    assert_eq!(found.source, Source::Ec2);
    assert_eq!(found.origin, base);
    let m = &found.metadata;
    assert_eq!(m.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    assert_eq!(
        m.hostname.as_deref(),
        Some("ip-10-0-0-5.eu-west-1.compute.internal")
    );
    assert_eq!(m.local_ipv4.as_deref(), Some("10.0.0.5"));
    assert_eq!(m.public_ipv4.as_deref(), Some("203.0.113.7"));
    assert_eq!(m.availability_zone.as_deref(), Some("eu-west-1a"));
    assert_eq!(m.instance_type.as_deref(), Some("t3.micro"));
    assert_eq!(
        m.public_keys,
        ["ssh-ed25519 AAAAC3 my-key", "ssh-rsa AAAAB3 other"]
    );
    assert_eq!(
        found.user_data.as_deref(),
        Some(&b"#cloud-config\nhostname: web\n"[..])
    );
}

#[test]
fn ec2_with_a_token_and_every_request_carrying_it() {
    let server = imds(1000);
    let found = ec2::from_service(&[server.url()], false, Path::new("/proc"), soon()).unwrap();
    check_ec2(&found, &server.url());
    let requests = server.requests();
    assert_eq!(requests.iter().filter(|r| r.method == "PUT").count(), 1);
    assert!(
        requests
            .iter()
            .filter(|r| r.method == "GET")
            .all(|r| r.header("x-aws-ec2-metadata-token") == Some("token-0"))
    );
}

#[test]
fn ec2_renews_an_expired_token_on_401() {
    // Each token is good for three requests: reading everything needs
    // several tokens, each after a 401.
    let server = imds(3);
    let found = ec2::from_service(&[server.url()], false, Path::new("/proc"), soon()).unwrap();
    check_ec2(&found, &server.url());
    let requests = server.requests();
    let puts = requests.iter().filter(|r| r.method == "PUT").count();
    assert!(puts >= 4, "{puts} tokens");
    // After each renewal the request that got the 401 is made again with
    // the new token.
    let tokens: Vec<&str> = requests
        .iter()
        .filter_map(|r| r.header("x-aws-ec2-metadata-token"))
        .collect();
    assert!(tokens.contains(&"token-3"), "{tokens:?}");
}

#[test]
fn ec2_tries_the_next_address_when_the_first_does_not_answer() {
    let silent = Server::start(|_| None);
    let server = imds(1000);
    let started = Instant::now();
    let found = ec2::from_service(
        &[silent.url(), server.url()],
        false,
        Path::new("/proc"),
        soon(),
    )
    .unwrap();
    check_ec2(&found, &server.url());
    // Three attempts of two seconds at the silent one, and no more.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn ec2_token_refused_is_imdsv1_only_when_allowed() {
    let v1_only = || {
        Server::start(|request: &Request| match request.method.as_str() {
            "PUT" => response(403, "Forbidden"),
            _ => imds_answer(&request.path),
        })
    };
    let server = v1_only();
    let error = ec2::from_service(&[server.url()], false, Path::new("/proc"), soon()).unwrap_err();
    assert_eq!(
        error,
        format!(
            "{}/latest/api/token: token refused with status 403, and IMDSv1 is not allowed (berth.imdsv1=allow allows it)",
            server.url()
        )
    );
    assert!(server.requests().iter().all(|r| r.method == "PUT"));
    let server = v1_only();
    let found = ec2::from_service(&[server.url()], true, Path::new("/proc"), soon()).unwrap();
    check_ec2(&found, &server.url());
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.header("x-aws-ec2-metadata-token").is_none())
    );
}

#[test]
fn ec2_with_nothing_listening_and_no_route() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let error = ec2::from_service(
        &[format!("http://127.0.0.1:{port}")],
        false,
        Path::new("/proc"),
        soon(),
    )
    .unwrap_err();
    assert!(error.contains("connecting to 127.0.0.1"), "{error}");
    let empty = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let error = ec2::from_service(
        &[
            "http://169.254.169.254".into(),
            "http://[fd00:ec2::254]".into(),
        ],
        false,
        empty.path(),
        Instant::now() + Duration::from_millis(500),
    )
    .unwrap_err();
    assert_eq!(error, "no route to 169.254.169.254 or fd00:ec2::254");
    assert!(started.elapsed() < Duration::from_secs(2));
}

fn openstack_service() -> Server {
    Server::start(|request: &Request| match request.path.as_str() {
        "/openstack/latest/meta_data.json" => response(
            200,
            r#"{"uuid": "83679162-1378-4288-a2d4-70e13ec132aa", "hostname": "test.novalocal", "public_keys": {"k": "ssh-rsa AAAA k"}}"#,
        ),
        "/openstack/latest/user_data" => response(200, "#cloud-config\n"),
        "/openstack/latest/vendor_data.json" => response(
            200,
            r##"{"cloud-init": "#cloud-config\nntp: {servers: [ntp.example]}\n"}"##,
        ),
        "/openstack/latest/network_data.json" => response(200, r#"{"links": [], "networks": []}"#),
        _ => response(404, ""),
    })
}

#[test]
fn the_openstack_metadata_service() {
    let server = openstack_service();
    let found = openstack::from_service(&server.url(), Path::new("/proc"), soon()).unwrap();
    assert_eq!(found.source, Source::OpenStack);
    assert_eq!(
        found.metadata.instance_id.as_deref(),
        Some("83679162-1378-4288-a2d4-70e13ec132aa")
    );
    assert_eq!(found.metadata.public_keys, ["ssh-rsa AAAA k"]);
    assert_eq!(found.user_data.as_deref(), Some(&b"#cloud-config\n"[..]));
    assert_eq!(
        found.vendor_data.as_deref(),
        Some(&b"#cloud-config\nntp: {servers: [ntp.example]}\n"[..])
    );
    assert_eq!(
        found.network,
        Some(NetworkConfig::OpenStack(
            br#"{"links": [], "networks": []}"#.to_vec()
        ))
    );
    // EC2's service is not OpenStack's: it refuses a request without a
    // token, and one with its answers 404.
    let ec2 = imds(1000);
    let error = openstack::from_service(&ec2.url(), Path::new("/proc"), soon()).unwrap_err();
    assert_eq!(
        error,
        format!("{}/openstack/latest/meta_data.json: status 401", ec2.url())
    );
    let v1 = Server::start(|request: &Request| imds_answer(&request.path));
    let error = openstack::from_service(&v1.url(), Path::new("/proc"), soon()).unwrap_err();
    assert_eq!(
        error,
        format!(
            "{}/openstack/latest/: no openstack/latest/meta_data.json",
            v1.url()
        )
    );
}

#[test]
fn probing_in_order_with_a_pin_and_a_seed_url() {
    let sys = tempfile::tempdir().unwrap();
    let openstack = openstack_service();
    let ec2 = imds(1000);
    let env = Environment {
        sys: sys.path().to_path_buf(),
        dev: sys.path().to_path_buf(),
        proc: PathBuf::from("/proc"),
        openstack: openstack.url(),
        ec2: vec![ec2.url()],
        network_budget: Duration::from_secs(10),
    };
    let found = probe_in(&Options::default(), &env).unwrap();
    assert_eq!(found.source, Source::OpenStack);
    let pinned = Options {
        pinned: Some(Source::Ec2),
        ..Options::default()
    };
    assert_eq!(probe_in(&pinned, &env).unwrap().source, Source::Ec2);
    assert!(
        openstack.requests().len() == 4,
        "pinned to EC2, OpenStack is not asked"
    );
    // A NoCloud seed URL comes before the network services.
    let seed = Server::start(|request: &Request| match request.path.as_str() {
        "/seed/meta-data" => response(200, "instance-id: iid-seed\n"),
        "/seed/user-data" => response(200, "#cloud-config\n"),
        _ => response(404, ""),
    });
    let options = Options::from_cmdline(
        &format!("ds=nocloud-net;s={}/seed/;h=cmdline", seed.url()),
        None,
    );
    let found = probe_in(&options, &env).unwrap();
    assert_eq!(found.source, Source::NoCloud);
    assert_eq!(found.origin, format!("{}/seed/", seed.url()));
    assert_eq!(found.metadata.instance_id.as_deref(), Some("iid-seed"));
    assert_eq!(found.metadata.hostname.as_deref(), Some("cmdline"));
    assert_eq!(found.network, None);
    // Pinned to the config drive, which is not there: nothing.
    let pinned = Options {
        pinned: Some(Source::ConfigDrive),
        ..options
    };
    assert_eq!(probe_in(&pinned, &env), None);
}

/// Every parser of outside input, fed real documents cut short and with
/// bytes changed at random: errors, never a panic.
#[test]
fn parsers_never_panic_on_damaged_documents() {
    let documents: [&[u8]; 5] = [
        b"instance-id: iid-1\nlocal-hostname: h\npublic-keys:\n  - ssh-rsa A x\n",
        br#"{"uuid": "u", "hostname": "h", "public_keys": {"k": "ssh-rsa A"}, "availability_zone": "nova"}"#,
        b"version: 2\nethernets:\n  id0:\n    match: {macaddress: '00:11:22:33:44:55'}\n    addresses: [10.0.0.5/24]\n    routes: [{to: 0.0.0.0/0, via: 10.0.0.1}]\n",
        br#"{"links": [{"id": "l", "ethernet_mac_address": "fa:16:3e:00:00:01", "mtu": 1450}], "networks": [{"id": "n", "link": "l", "type": "ipv4", "ip_address": "10.0.0.5", "netmask": "255.255.255.0", "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.0.1"}]}]}"#,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let noise = b"{}[]:,\"'\n\r -#&*!|>0123456789abcdef/.\xff\x00";
    for _ in 0..3000 {
        let document = documents[(next() % documents.len() as u64) as usize];
        let mut bytes = document.to_vec();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = noise[(next() % noise.len() as u64) as usize];
        }
        bytes.truncate(1 + (next() % bytes.len() as u64) as usize);
        let _ = nocloud::parse_meta_data(&bytes);
        let _ = openstack::parse_meta_data(&bytes);
        let _ = openstack::parse_vendor_data(&bytes);
        let _ = crate::network::parse_cloud_init(&bytes).map(|p| crate::network::resolve(p, &[]));
        let _ = crate::network::parse_openstack(&bytes).map(|p| crate::network::resolve(p, &[]));
        let _ = crate::http::read_response(&mut &bytes[..], false);
        let mut padded = bytes.clone();
        padded.resize(40 << 10, 0);
        padded[510] = 0x55;
        padded[511] = 0xAA;
        let _ = crate::label::read_label(&mut std::io::Cursor::new(padded));
        let _ = Options::from_cmdline(&String::from_utf8_lossy(&bytes), None);
    }
}
