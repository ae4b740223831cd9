use super::*;

/// cloud-init's documentation, "Networking config Version 1", with a
/// subnet route added.
const V1: &str = "network:
  version: 1
  config:
    - type: physical
      name: eth0
      mac_address: c0:d6:9f:2c:e8:80
      subnets:
        - type: dhcp4
    - type: physical
      name: eth1
      mac_address: cf:d6:af:48:e8:80
      mtu: 1480
      subnets:
        - type: static
          address: 192.168.14.2/24
          gateway: 192.168.14.1
          dns_nameservers:
            - 192.168.14.1
          dns_search:
            - example.com
          routes:
            - gateway: 192.168.14.254
              netmask: 255.255.255.0
              network: 192.168.200.0
        - type: static6
          address: 2001:1::1/64
    - type: physical
      name: eth2
      subnets:
        - type: static
          address: 10.0.0.5
          netmask: 255.255.0.0
    - type: bond
      name: bond0
      bond_interfaces: [eth1, eth2]
    - type: nameserver
      address:
        - 192.168.23.2
        - 8.8.8.8
      search:
        - exemplary
";

/// cloud-init's documentation, "Networking config Version 2" (its big
/// example, abridged where it repeats).
const V2: &str = "network:
  version: 2
  ethernets:
    # opaque ID for physical interfaces, only referred to by other stanzas
    id0:
      match:
        macaddress: '00:11:22:33:44:55'
      wakeonlan: true
      dhcp4: true
      addresses:
        - 192.168.14.2/24
        - 2001:1::1/64
      gateway4: 192.168.14.1
      gateway6: 2001:1::2
      nameservers:
        search: [foo.local, bar.local]
        addresses: [8.8.8.8]
      # static routes
      routes:
        - to: 192.0.2.0/24
          via: 11.0.0.1
          metric: 3
    lom:
      match:
        driver: ixgbe
      set-name: lom1
      dhcp6: true
    switchports:
      match:
        name: enp2*
      mtu: 1280
  bonds:
    bond0:
      interfaces: [id1, id2]
  bridges:
    br0:
      interfaces: [wlp1s0, switchports]
      dhcp4: true
  vlans:
    en-intra:
      id: 1
      link: id0
      dhcp4: yes
";

/// `network_data.json` as Nova writes it: a DHCP network (its
/// documentation's example) and a link with static IPv4 and IPv6.
const NETWORK_DATA: &str = r#"{
    "links": [
        {"ethernet_mac_address": "fa:16:3e:9c:bf:3d", "id": "tapcd9f6d46-4a", "mtu": null,
         "type": "bridge", "vif_id": "cd9f6d46-4a3a-43ab-a466-994af9db96fc"},
        {"ethernet_mac_address": "FA:16:3E:69:B0:58", "id": "tap1a81968a-79", "mtu": 1450,
         "type": "ovs", "vif_id": "1a81968a-797a-400f-8a80-567f997eb93f"},
        {"id": "bond0", "type": "bond", "bond_links": ["tap1a81968a-79"], "ethernet_mac_address": "fa:16:3e:00:00:01"}
    ],
    "networks": [
        {"id": "network0", "link": "tapcd9f6d46-4a", "network_id": "99e88329-f20d-4741-9593-25bf07847b16",
         "type": "ipv4_dhcp"},
        {"id": "network1", "link": "tap1a81968a-79", "network_id": "da5bb487-5193-4a65-a3df-4a0055a8c0d7",
         "type": "ipv4", "ip_address": "10.0.0.5", "netmask": "255.255.255.0",
         "routes": [
            {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.0.1"},
            {"network": "10.1.0.0", "netmask": "255.255.0.0", "gateway": "10.0.0.254"}
         ],
         "services": [{"type": "dns", "address": "10.0.0.2"}]},
        {"id": "network2", "link": "tap1a81968a-79", "network_id": "da5bb487-5193-4a65-a3df-4a0055a8c0d7",
         "type": "ipv6", "ip_address": "2001:db8::5", "netmask": "ffff:ffff:ffff:ffff::",
         "routes": [{"network": "::", "netmask": "::", "gateway": "2001:db8::1"}]},
        {"id": "network3", "link": "bond0", "type": "ipv4_dhcp"}
    ],
    "services": [{"address": "8.8.8.8", "type": "dns"}]
}"#;

fn existing() -> Vec<(String, String)> {
    [
        ("eth0", "c0:d6:9f:2c:e8:80"),
        ("eth1", "cf:d6:af:48:e8:80"),
        ("ens3", "fa:16:3e:9c:bf:3d"),
        ("ens4", "fa:16:3e:69:b0:58"),
        ("enp2s0", "00:11:22:33:44:66"),
        ("enp2s1", "00:11:22:33:44:67"),
        ("enp1s0", "00:11:22:33:44:55"),
        ("lo", "00:00:00:00:00:00"),
    ]
    .map(|(n, m)| (n.to_string(), m.to_string()))
    .to_vec()
}

fn files(parsed: Parsed) -> (Vec<(String, String)>, Vec<String>) {
    resolve(parsed, &existing())
}

#[test]
fn version_1_from_cloud_inits_documentation() {
    let (files, skipped) = files(parse_cloud_init(V1.as_bytes()).unwrap());
    assert_eq!(
        files,
        [
            (
                "eth0".to_string(),
                "dhcp\nnameserver 192.168.23.2\nnameserver 8.8.8.8\nsearch exemplary\n".to_string()
            ),
            (
                "eth1".to_string(),
                "address 192.168.14.2/24\naddress 2001:1::1/64\ngateway 192.168.14.1\nroute 192.168.200.0/24 192.168.14.254\nmtu 1480\nnameserver 192.168.14.1\nsearch example.com\n"
                    .to_string()
            ),
            (
                "eth2".to_string(),
                "address 10.0.0.5/16\nnameserver 192.168.23.2\nnameserver 8.8.8.8\nsearch exemplary\n".to_string()
            ),
        ]
    );
    assert_eq!(skipped, ["bond \"bond0\" (type bond is not supported)"]);
}

#[test]
fn version_2_from_cloud_inits_documentation() {
    let (files, skipped) = files(parse_cloud_init(V2.as_bytes()).unwrap());
    assert_eq!(
        files,
        [
            (
                "enp1s0".to_string(),
                "dhcp\naddress 192.168.14.2/24\naddress 2001:1::1/64\ngateway 192.168.14.1\ngateway 2001:1::2\nroute 192.0.2.0/24 11.0.0.1\nnameserver 8.8.8.8\nsearch foo.local bar.local\n"
                    .to_string()
            ),
            ("enp2s0".to_string(), "mtu 1280\n".to_string()),
            ("enp2s1".to_string(), "mtu 1280\n".to_string()),
        ]
    );
    assert_eq!(
        skipped,
        [
            "bonds \"bond0\" (not supported)",
            "bridges \"br0\" (not supported)",
            "vlans \"en-intra\" (not supported)",
            "ethernet \"lom\": match by anything but macaddress or name",
        ]
    );
}

/// netplan's dual stack with DHCPv6, which the dhcp image does not speak:
/// the static IPv4 settings stand (DHCPv6 is skipped, not turned into
/// DHCPv4 that would throw them away).
#[test]
fn dhcp6_beside_static_ipv4_keeps_the_static_settings() {
    let doc = "version: 2\nethernets:\n  eth0:\n    dhcp6: true\n    addresses: [10.0.0.5/24]\n    gateway4: 10.0.0.1\n    nameservers:\n      search: [a.example, b.example]\n";
    let (files, skipped) = files(parse_cloud_init(doc.as_bytes()).unwrap());
    assert_eq!(
        files,
        [(
            "eth0".to_string(),
            "address 10.0.0.5/24\ngateway 10.0.0.1\nsearch a.example b.example\n".to_string()
        )]
    );
    assert_eq!(skipped, ["ethernet \"eth0\": dhcp6 (not supported)"]);
}

#[test]
fn version_2_bare_with_a_default_route_and_names() {
    let doc = "version: 2\nethernets:\n  eth0:\n    addresses: [10.0.0.5/24]\n    routes:\n      - to: default\n        via: 10.0.0.1\n      - to: 0.0.0.0/0\n        via: 10.0.0.1\n";
    let (files, skipped) = files(parse_cloud_init(doc.as_bytes()).unwrap());
    assert_eq!(
        files,
        [(
            "eth0".to_string(),
            "address 10.0.0.5/24\ngateway 10.0.0.1\n".to_string()
        )]
    );
    assert!(skipped.is_empty(), "{skipped:?}");
}

#[test]
fn openstack_network_data_as_nova_writes_it() {
    let (files, skipped) = files(parse_openstack(NETWORK_DATA.as_bytes()).unwrap());
    assert_eq!(
        files,
        [
            ("ens3".to_string(), "dhcp\nnameserver 8.8.8.8\n".to_string()),
            (
                "ens4".to_string(),
                "address 10.0.0.5/24\naddress 2001:db8::5/64\ngateway 10.0.0.1\ngateway 2001:db8::1\nroute 10.1.0.0/16 10.0.0.254\nmtu 1450\nnameserver 10.0.0.2\n"
                    .to_string()
            ),
        ]
    );
    assert_eq!(
        skipped,
        [
            "link \"bond0\" of type bond (not supported)",
            "network \"network3\" on link \"bond0\", which is not a usable link",
        ]
    );
}

#[test]
fn interfaces_that_do_not_exist_and_hostile_names_are_skipped() {
    let doc = "version: 2\nethernets:\n  ghost:\n    match: {macaddress: 'aa:bb:cc:dd:ee:ff'}\n    dhcp4: true\n  ../etc:\n    dhcp4: true\n";
    let (files, mut skipped) = files(parse_cloud_init(doc.as_bytes()).unwrap());
    assert!(files.is_empty(), "{files:?}");
    skipped.sort();
    assert_eq!(
        skipped,
        [
            "Mac(\"aa:bb:cc:dd:ee:ff\"): no such interface",
            "interface name \"../etc\" is not a plain name",
        ]
    );
}

#[test]
fn broken_documents_are_one_line_errors() {
    for (doc, expected) in [
        (
            &b"version: 3\n"[..],
            "network-config: version is not 1 or 2",
        ),
        (b"- a\n", "network-config: not a mapping"),
        (b"\xff", "network-config: not UTF-8"),
    ] {
        assert_eq!(parse_cloud_init(doc).unwrap_err(), expected);
    }
    let error = parse_cloud_init(b"version: [1\n").unwrap_err();
    assert_eq!(error, "network-config:1:10: unclosed bracket '['");
    assert!(
        parse_openstack(b"{\"links\": ")
            .unwrap_err()
            .starts_with("network_data.json: ")
    );
    // Shapes that are wrong inside a valid document are skipped, not fatal.
    let parsed = parse_openstack(br#"{"links": 5, "networks": [1, {"link": 2}]}"#).unwrap();
    assert!(parsed.interfaces.is_empty());
    let parsed = parse_cloud_init(b"version: 1\nconfig: [1, {type: physical}, {type: physical, name: x, subnets: [{type: static}]}]\n").unwrap();
    assert_eq!(parsed.skipped.len(), 2, "{:?}", parsed.skipped);
}

#[test]
fn netmasks_and_globs() {
    assert_eq!(prefix_length("255.255.255.0"), Some(24));
    assert_eq!(prefix_length("0.0.0.0"), Some(0));
    assert_eq!(prefix_length("255.0.255.0"), None);
    assert_eq!(prefix_length("ffff:ffff:ffff:ffff::"), Some(64));
    assert_eq!(prefix_length("64"), Some(64));
    assert_eq!(prefix_length("200"), None);
    assert!(glob("enp2*", "enp2s0"));
    assert!(glob("eth?", "eth1"));
    assert!(!glob("enp2*", "enp1s0"));
    assert!(glob("*", "x"));
}

#[test]
fn files_are_written_by_interface_name_from_sys_class_net() {
    let root = tempfile::tempdir().unwrap();
    let net = root.path().join("sys/class/net");
    for (name, mac) in [
        ("ens3", "fa:16:3e:9c:bf:3d\n"),
        ("lo", "00:00:00:00:00:00\n"),
    ] {
        std::fs::create_dir_all(net.join(name)).unwrap();
        std::fs::write(net.join(name).join("address"), mac).unwrap();
    }
    let config = root.path().join("config");
    write_in(
        &config,
        &NetworkConfig::OpenStack(NETWORK_DATA.as_bytes().to_vec()),
        &net,
    );
    assert_eq!(
        std::fs::read_to_string(config.join("network/ens3")).unwrap(),
        "dhcp\nnameserver 8.8.8.8\n"
    );
    let written: Vec<_> = std::fs::read_dir(config.join("network"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(written, ["ens3"]);
}
