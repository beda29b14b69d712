//! Reading the pod's network from its netns: the one interface CNI made (name, MAC, MTU,
//! state), its addresses, the main table's routes through it and its static neighbours.
//! The message-to-model conversions are pure functions, tested without root.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use hull_protocol::network::{Interface, Mac, Neighbour, NetworkConfig, Prefix, Route};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};

/// A link as listed in the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// ifindex
    pub index: u32,
    /// name
    pub name: String,
    /// hardware address (empty if none)
    pub mac: Vec<u8>,
    /// MTU
    pub mtu: u32,
    /// administratively up
    pub up: bool,
    /// the loopback device
    pub loopback: bool,
}

/// The link of a RTM_NEWLINK message.
pub fn link_from(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mac: Vec::new(),
        mtu: 0,
        up: m.header.flags.contains(LinkFlags::Up),
        loopback: m.header.flags.contains(LinkFlags::Loopback),
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Address(mac) => l.mac = mac.clone(),
            LinkAttribute::Mtu(mtu) => l.mtu = *mtu,
            _ => {}
        }
    }
    l
}

/// The one usable interface among `links`, or why there is none.
pub fn pick_interface(links: &[Link]) -> Result<(&Link, Mac), String> {
    let candidates: Vec<&Link> = links.iter().filter(|l| !l.loopback).collect();
    let link = match candidates.as_slice() {
        [] => return Err("has no network interface besides lo (did CNI run?)".into()),
        [one] => *one,
        many => {
            let names: Vec<&str> = many.iter().map(|l| l.name.as_str()).collect();
            return Err(format!(
                "has {} interfaces besides lo ({}); hull connects exactly one",
                many.len(),
                names.join(", ")
            ));
        }
    };
    if !link.up {
        return Err(format!("interface {} is down", link.name));
    }
    let mac = <[u8; 6]>::try_from(link.mac.as_slice())
        .map(Mac)
        .map_err(|_| format!("interface {} has no Ethernet address", link.name))?;
    if !mac.is_unicast() {
        return Err(format!(
            "interface {} has MAC {mac}, not a unicast address",
            link.name
        ));
    }
    Ok((link, mac))
}

/// The address of a RTM_NEWADDR message on `index`, if it is one the guest should have
/// (global or site scope: link-local IPv6 addresses are made by the guest from the same MAC).
pub fn address_from(m: &AddressMessage, index: u32) -> Option<Prefix> {
    if m.header.index != index
        || !matches!(m.header.family, AddressFamily::Inet | AddressFamily::Inet6)
        || matches!(m.header.scope, AddressScope::Link | AddressScope::Host)
    {
        return None;
    }
    // IFA_LOCAL is the local address (IFA_ADDRESS is the peer's on point-to-point links).
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let addr = local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    Prefix::new(addr, m.header.prefix_len).ok()
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The route of a RTM_NEWROUTE message through interface (`index`, `name`), if the guest
/// should have it: unicast routes of the main table; not IPv6 link-local or multicast ones,
/// which the guest kernel makes itself; not multipath ones.
pub fn route_from(m: &RouteMessage, index: u32, name: &str) -> Option<Route> {
    let h = &m.header;
    let v6 = match h.address_family {
        AddressFamily::Inet => false,
        AddressFamily::Inet6 => true,
        _ => return None,
    };
    let table = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(h.table.into());
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) || h.kind != RouteType::Unicast {
        return None;
    }
    let mut oif = None;
    let mut destination = None;
    let mut gateway = None;
    let mut source = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Destination(d) => destination = route_ip(d),
            RouteAttribute::Gateway(g) => gateway = route_ip(g),
            RouteAttribute::PrefSource(s) => source = route_ip(s),
            RouteAttribute::MultiPath(_) | RouteAttribute::Via(_) => return None,
            _ => {}
        }
    }
    if oif != Some(index) {
        return None;
    }
    let destination = match destination {
        Some(d) => {
            let p = Prefix::new(d, h.destination_prefix_length).ok()?;
            if let IpAddr::V6(v6addr) = d {
                let seg = v6addr.segments()[0];
                if seg & 0xffc0 == 0xfe80 || seg & 0xff00 == 0xff00 {
                    return None;
                }
            }
            Some(p)
        }
        None if h.destination_prefix_length == 0 => None,
        None => return None,
    };
    Some(Route {
        v6,
        destination,
        gateway,
        device: name.to_string(),
        source,
        scope: h.scope.into(),
    })
}

/// The static (permanent) neighbour of a RTM_NEWNEIGH message on (`index`, `name`), if any.
/// Learned entries are left to the guest's own ARP/NDP.
pub fn neighbour_from(m: &NeighbourMessage, index: u32, name: &str) -> Option<Neighbour> {
    if m.header.ifindex != index || m.header.state != NeighbourState::Permanent {
        return None;
    }
    let mut address = None;
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                address = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                address = Some(IpAddr::V6(*v6))
            }
            NeighbourAttribute::LinkLayerAddress(l) => {
                mac = <[u8; 6]>::try_from(l.as_slice()).ok().map(Mac)
            }
            _ => {}
        }
    }
    Some(Neighbour {
        address: address?,
        mac: mac.filter(|m| m.0 != [0; 6])?,
        device: name.to_string(),
    })
}

/// What was read: the veth's index and the configuration for the guest.
#[derive(Debug, Clone)]
pub struct PodInterface {
    /// ifindex of the veth in the pod netns
    pub index: u32,
    /// the guest's configuration (one interface: the veth's)
    pub config: NetworkConfig,
}

/// Read the interface, addresses, routes and neighbours of the namespace `handle` talks to.
pub async fn read(handle: &Handle) -> Result<PodInterface, String> {
    let nl = |what: &'static str| move |e: rtnetlink::Error| format!("{what}: {e}");
    let links: Vec<Link> = handle
        .link()
        .get()
        .execute()
        .map_ok(|m| link_from(&m))
        .try_collect()
        .await
        .map_err(nl("list links"))?;
    let (link, mac) = pick_interface(&links)?;
    let (index, name) = (link.index, link.name.clone());
    let addresses: Vec<Prefix> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_filter_map(|m| futures_util::future::ok(address_from(&m, index)))
        .try_collect()
        .await
        .map_err(nl("list addresses"))?;
    let mut routes = Vec::new();
    for msg in [
        RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
        RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    ] {
        let mut got: Vec<Route> = handle
            .route()
            .get(msg)
            .execute()
            .try_filter_map(|m| futures_util::future::ok(route_from(&m, index, &name)))
            .try_collect()
            .await
            .map_err(nl("list routes"))?;
        routes.append(&mut got);
    }
    let neighbours: Vec<Neighbour> = handle
        .neighbours()
        .get()
        .execute()
        .try_filter_map(|m| futures_util::future::ok(neighbour_from(&m, index, &name)))
        .try_collect()
        .await
        .map_err(nl("list neighbours"))?;
    let config = NetworkConfig {
        interfaces: vec![Interface {
            name,
            mac,
            mtu: link.mtu,
            addresses,
        }],
        routes,
        neighbours,
    };
    config.validate().map_err(|e| e.to_string())?;
    Ok(PodInterface { index, config })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::route::{RouteProtocol, RouteScope};

    fn link(index: u32, name: &str, up: bool, lo: bool) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        if up {
            m.header.flags |= LinkFlags::Up;
        }
        if lo {
            m.header.flags |= LinkFlags::Loopback;
        }
        m.attributes.push(LinkAttribute::IfName(name.into()));
        m.attributes
            .push(LinkAttribute::Address(vec![0x0a, 0x58, 0x0a, 0x58, 0, 5]));
        m.attributes.push(LinkAttribute::Mtu(1450));
        m
    }

    #[test]
    fn the_one_interface_besides_lo_is_picked() {
        let links: Vec<Link> = [link(1, "lo", true, true), link(3, "eth0", true, false)]
            .iter()
            .map(link_from)
            .collect();
        let (l, mac) = pick_interface(&links).expect("one");
        assert_eq!((l.index, l.name.as_str(), l.mtu), (3, "eth0", 1450));
        assert_eq!(mac.to_string(), "0a:58:0a:58:00:05");
    }

    #[test]
    fn no_interface_many_or_down_are_refused() {
        let lo = link_from(&link(1, "lo", true, true));
        let e = pick_interface(std::slice::from_ref(&lo)).expect_err("none");
        assert!(e.contains("no network interface"), "{e}");
        let down = link_from(&link(2, "eth0", false, false));
        let e = pick_interface(&[lo.clone(), down]).expect_err("down");
        assert_eq!(e, "interface eth0 is down");
        let a = link_from(&link(2, "eth0", true, false));
        let b = link_from(&link(3, "eth1", true, false));
        let e = pick_interface(&[lo, a, b]).expect_err("two");
        assert!(e.contains("eth0, eth1"), "{e}");
    }

    fn addr(index: u32, ip: &str, len: u8, scope: AddressScope) -> AddressMessage {
        let ip: IpAddr = ip.parse().expect("ip");
        let mut m = AddressMessage::default();
        m.header.index = index;
        m.header.family = if ip.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.header.prefix_len = len;
        m.header.scope = scope;
        m.attributes.push(AddressAttribute::Address(ip));
        if ip.is_ipv4() {
            m.attributes.push(AddressAttribute::Local(ip));
        }
        m
    }

    #[test]
    fn addresses_keep_global_ones_of_the_interface() {
        let a = address_from(&addr(3, "10.88.0.5", 16, AddressScope::Universe), 3);
        assert_eq!(a.map(|p| p.to_string()).as_deref(), Some("10.88.0.5/16"));
        let a = address_from(&addr(3, "fd00::5", 64, AddressScope::Universe), 3);
        assert_eq!(a.map(|p| p.to_string()).as_deref(), Some("fd00::5/64"));
        assert!(address_from(&addr(3, "fe80::1", 64, AddressScope::Link), 3).is_none());
        assert!(address_from(&addr(4, "10.88.0.5", 16, AddressScope::Universe), 3).is_none());
    }

    fn route(dest: Option<(&str, u8)>, gw: Option<&str>, oif: u32, table: u8) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.table = table;
        m.header.kind = RouteType::Unicast;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = if gw.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        if let Some((d, len)) = dest {
            let ip: IpAddr = d.parse().expect("ip");
            if ip.is_ipv6() {
                m.header.address_family = AddressFamily::Inet6;
            }
            m.header.destination_prefix_length = len;
            m.attributes.push(RouteAttribute::Destination(ip.into()));
        }
        if let Some(g) = gw {
            let ip: IpAddr = g.parse().expect("ip");
            m.attributes.push(RouteAttribute::Gateway(ip.into()));
        }
        m.attributes.push(RouteAttribute::Oif(oif));
        m
    }

    #[test]
    fn routes_of_the_main_table_through_the_interface() {
        let r = route_from(&route(None, Some("10.88.0.1"), 3, 254), 3, "eth0").expect("default");
        assert_eq!(r.to_string(), "default via 10.88.0.1 dev eth0 scope 0");
        let mut m = route(Some(("10.88.0.0", 16)), None, 3, 254);
        m.attributes.push(RouteAttribute::PrefSource(
            IpAddr::from([10, 88, 0, 5]).into(),
        ));
        let r = route_from(&m, 3, "eth0").expect("subnet");
        assert_eq!(
            r.to_string(),
            "10.88.0.0/16 dev eth0 scope 253 src 10.88.0.5"
        );
        // local table, another device, IPv6 link-local: not copied
        assert!(route_from(&route(Some(("10.88.0.5", 32)), None, 3, 255), 3, "eth0").is_none());
        assert!(route_from(&route(None, Some("10.88.0.1"), 4, 254), 3, "eth0").is_none());
        assert!(route_from(&route(Some(("fe80::", 64)), None, 3, 254), 3, "eth0").is_none());
        let r = route_from(&route(Some(("fd00::", 64)), None, 3, 254), 3, "eth0").expect("v6");
        assert!(r.v6);
    }

    #[test]
    fn only_permanent_neighbours_are_copied() {
        let mut m = NeighbourMessage::default();
        m.header.ifindex = 3;
        m.header.family = AddressFamily::Inet;
        m.header.state = NeighbourState::Permanent;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                [10, 88, 0, 1].into(),
            )));
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 1]));
        let n = neighbour_from(&m, 3, "eth0").expect("permanent");
        assert_eq!(n.mac.to_string(), "02:00:00:00:00:01");
        assert_eq!(n.address.to_string(), "10.88.0.1");
        m.header.state = NeighbourState::Reachable;
        assert!(neighbour_from(&m, 3, "eth0").is_none());
    }
}
