//! The pod network handed to the guest by `ConfigureNetwork`: a typed model of the request,
//! its bounds and its validation, shared by the host (which builds it from the pod netns) and
//! the agent (which applies it).

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::agent as pb;

/// Most interfaces one request may carry.
pub const MAX_INTERFACES: usize = 8;
/// Most addresses per interface.
pub const MAX_ADDRESSES: usize = 64;
/// Most routes one request may carry.
pub const MAX_ROUTES: usize = 256;
/// Most neighbours one request may carry.
pub const MAX_NEIGHBOURS: usize = 256;
/// Longest interface name (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// Smallest MTU accepted (the IPv4 minimum).
pub const MIN_MTU: u32 = 68;
/// Largest MTU accepted.
pub const MAX_MTU: u32 = 65535;
/// RT_SCOPE_UNIVERSE: a route through a gateway or to anywhere.
pub const SCOPE_UNIVERSE: u8 = 0;
/// RT_SCOPE_LINK: a directly attached destination.
pub const SCOPE_LINK: u8 = 253;
/// RT_SCOPE_HOST: a local address.
pub const SCOPE_HOST: u8 = 254;

/// Why a network configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network configuration: {0}")]
pub struct InvalidNetwork(pub String);

fn invalid(msg: impl Into<String>) -> InvalidNetwork {
    InvalidNetwork(msg.into())
}

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Neither all-zero nor multicast: an address a NIC can have.
    pub fn is_unicast(&self) -> bool {
        self.0 != [0; 6] && self.0[0] & 1 == 0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for Mac {
    type Err = InvalidNetwork;

    fn from_str(s: &str) -> Result<Mac, InvalidNetwork> {
        let bad = || invalid(format!("MAC {s:?} is not aa:bb:cc:dd:ee:ff"));
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(out))
    }
}

/// An address with its prefix length, e.g. 10.88.0.5/16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// the address
    pub addr: IpAddr,
    /// prefix length (<= 32 for IPv4, <= 128 for IPv6)
    pub len: u8,
}

impl Prefix {
    /// `addr/len`, checked.
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, InvalidNetwork> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(invalid(format!("prefix {addr}/{len} is longer than {max}")));
        }
        Ok(Prefix { addr, len })
    }

    fn from_pb(p: &pb::IpPrefix) -> Result<Prefix, InvalidNetwork> {
        let addr = parse_ip(&p.address)?;
        let len = u8::try_from(p.prefix_len)
            .map_err(|_| invalid(format!("prefix length {} too long", p.prefix_len)))?;
        Prefix::new(addr, len)
    }

    fn to_pb(self) -> pb::IpPrefix {
        let mut p = pb::IpPrefix::new();
        p.address = self.addr.to_string();
        p.prefix_len = self.len.into();
        p
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One interface of the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// name the guest NIC gets
    pub name: String,
    /// MAC of the guest NIC (found by it)
    pub mac: Mac,
    /// MTU
    pub mtu: u32,
    /// addresses with prefix
    pub addresses: Vec<Prefix>,
}

/// One route of the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// IPv6 route (else IPv4)
    pub v6: bool,
    /// destination; None = default route
    pub destination: Option<Prefix>,
    /// next hop; None = on-link
    pub gateway: Option<IpAddr>,
    /// interface name
    pub device: String,
    /// preferred source address
    pub source: Option<IpAddr>,
    /// RT_SCOPE_*
    pub scope: u8,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.destination {
            Some(d) => write!(f, "{d}")?,
            None => write!(f, "default")?,
        }
        if let Some(g) = &self.gateway {
            write!(f, " via {g}")?;
        }
        write!(f, " dev {} scope {}", self.device, self.scope)?;
        if let Some(s) = &self.source {
            write!(f, " src {s}")?;
        }
        Ok(())
    }
}

/// One static neighbour (ARP / NDP entry) of the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// IP address
    pub address: IpAddr,
    /// its MAC
    pub mac: Mac,
    /// interface name
    pub device: String,
}

/// What `ConfigureNetwork` carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkConfig {
    /// interfaces
    pub interfaces: Vec<Interface>,
    /// routes, in the order the host had them
    pub routes: Vec<Route>,
    /// static neighbours
    pub neighbours: Vec<Neighbour>,
}

fn parse_ip(s: &str) -> Result<IpAddr, InvalidNetwork> {
    s.parse()
        .map_err(|_| invalid(format!("{s:?} is not an IP address")))
}

fn opt_ip(s: &str) -> Result<Option<IpAddr>, InvalidNetwork> {
    if s.is_empty() {
        Ok(None)
    } else {
        parse_ip(s).map(Some)
    }
}

/// Check an interface name the way the kernel would take it.
pub fn validate_ifname(name: &str) -> Result<(), InvalidNetwork> {
    if name.is_empty()
        || name.len() > MAX_IFNAME_LEN
        || name == "."
        || name == ".."
        || !name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
    {
        return Err(invalid(format!(
            "interface name {name:?} must be 1..={MAX_IFNAME_LEN} printable characters without '/' or ':'"
        )));
    }
    Ok(())
}

impl NetworkConfig {
    /// Check bounds and consistency: names, MACs, MTUs, address families, devices.
    pub fn validate(&self) -> Result<(), InvalidNetwork> {
        if self.interfaces.len() > MAX_INTERFACES {
            return Err(invalid(format!(
                "{} interfaces (at most {MAX_INTERFACES})",
                self.interfaces.len()
            )));
        }
        if self.routes.len() > MAX_ROUTES {
            return Err(invalid(format!(
                "{} routes (at most {MAX_ROUTES})",
                self.routes.len()
            )));
        }
        if self.neighbours.len() > MAX_NEIGHBOURS {
            return Err(invalid(format!(
                "{} neighbours (at most {MAX_NEIGHBOURS})",
                self.neighbours.len()
            )));
        }
        let mut names = HashSet::new();
        let mut macs = HashSet::new();
        for i in &self.interfaces {
            validate_ifname(&i.name)?;
            if i.name == "lo" {
                return Err(invalid("interface lo cannot be configured"));
            }
            if !names.insert(i.name.as_str()) {
                return Err(invalid(format!("interface {} given twice", i.name)));
            }
            if !i.mac.is_unicast() {
                return Err(invalid(format!(
                    "interface {}: MAC {} is not a unicast address",
                    i.name, i.mac
                )));
            }
            if !macs.insert(i.mac) {
                return Err(invalid(format!("MAC {} given twice", i.mac)));
            }
            if !(MIN_MTU..=MAX_MTU).contains(&i.mtu) {
                return Err(invalid(format!(
                    "interface {}: MTU {} outside {MIN_MTU}..={MAX_MTU}",
                    i.name, i.mtu
                )));
            }
            if i.addresses.len() > MAX_ADDRESSES {
                return Err(invalid(format!(
                    "interface {}: {} addresses (at most {MAX_ADDRESSES})",
                    i.name,
                    i.addresses.len()
                )));
            }
            for a in &i.addresses {
                Prefix::new(a.addr, a.len)?;
            }
        }
        let family_ok = |v6: bool, a: &IpAddr| a.is_ipv6() == v6;
        for r in &self.routes {
            if !names.contains(r.device.as_str()) {
                return Err(invalid(format!("route {r}: no interface {}", r.device)));
            }
            let dest_ok = r
                .destination
                .is_none_or(|d| family_ok(r.v6, &d.addr) && Prefix::new(d.addr, d.len).is_ok());
            if !dest_ok
                || !r.gateway.as_ref().is_none_or(|g| family_ok(r.v6, g))
                || !r.source.as_ref().is_none_or(|s| family_ok(r.v6, s))
            {
                return Err(invalid(format!(
                    "route {r}: addresses are not all IPv{}",
                    if r.v6 { 6 } else { 4 }
                )));
            }
        }
        for n in &self.neighbours {
            if !names.contains(n.device.as_str()) {
                return Err(invalid(format!(
                    "neighbour {}: no interface {}",
                    n.address, n.device
                )));
            }
            if n.mac.0 == [0; 6] {
                return Err(invalid(format!("neighbour {}: zero MAC", n.address)));
            }
        }
        Ok(())
    }

    /// The routes in the order they can be added: on-link routes (no gateway) first, so that
    /// every gateway is reachable when its route is added; otherwise the host's order.
    pub fn ordered_routes(&self) -> Vec<&Route> {
        let (direct, via): (Vec<&Route>, Vec<&Route>) =
            self.routes.iter().partition(|r| r.gateway.is_none());
        direct.into_iter().chain(via).collect()
    }

    /// The request carrying this configuration.
    pub fn to_request(&self) -> pb::ConfigureNetworkRequest {
        let mut req = pb::ConfigureNetworkRequest::new();
        req.interfaces = self
            .interfaces
            .iter()
            .map(|i| {
                let mut p = pb::NetworkInterface::new();
                p.name = i.name.clone();
                p.mac = i.mac.to_string();
                p.mtu = i.mtu;
                p.addresses = i.addresses.iter().map(|a| a.to_pb()).collect();
                p
            })
            .collect();
        req.routes = self
            .routes
            .iter()
            .map(|r| {
                let mut p = pb::NetworkRoute::new();
                p.family = if r.v6 { 6 } else { 4 };
                p.destination = r.destination.map(Prefix::to_pb).into();
                p.gateway = r.gateway.map(|g| g.to_string()).unwrap_or_default();
                p.device = r.device.clone();
                p.source = r.source.map(|s| s.to_string()).unwrap_or_default();
                p.scope = r.scope.into();
                p
            })
            .collect();
        req.neighbours = self
            .neighbours
            .iter()
            .map(|n| {
                let mut p = pb::NetworkNeighbour::new();
                p.address = n.address.to_string();
                p.mac = n.mac.to_string();
                p.device = n.device.clone();
                p
            })
            .collect();
        req
    }

    /// Parse and validate a request (counts are checked before anything is parsed).
    pub fn from_request(
        req: &pb::ConfigureNetworkRequest,
    ) -> Result<NetworkConfig, InvalidNetwork> {
        if req.interfaces.len() > MAX_INTERFACES
            || req.routes.len() > MAX_ROUTES
            || req.neighbours.len() > MAX_NEIGHBOURS
            || req
                .interfaces
                .iter()
                .any(|i| i.addresses.len() > MAX_ADDRESSES)
        {
            return Err(invalid(format!(
                "too many entries (at most {MAX_INTERFACES} interfaces of {MAX_ADDRESSES} addresses, {MAX_ROUTES} routes, {MAX_NEIGHBOURS} neighbours)"
            )));
        }
        let mut interfaces = Vec::with_capacity(req.interfaces.len());
        for i in &req.interfaces {
            interfaces.push(Interface {
                name: i.name.clone(),
                mac: i.mac.parse()?,
                mtu: i.mtu,
                addresses: i
                    .addresses
                    .iter()
                    .map(Prefix::from_pb)
                    .collect::<Result<_, _>>()?,
            });
        }
        let mut routes = Vec::with_capacity(req.routes.len());
        for r in &req.routes {
            let v6 = match r.family {
                4 => false,
                6 => true,
                f => return Err(invalid(format!("route family {f} (4 or 6)"))),
            };
            let destination = match r.destination.as_ref() {
                Some(d) if !d.address.is_empty() => Some(Prefix::from_pb(d)?),
                _ => None,
            };
            let scope = u8::try_from(r.scope)
                .map_err(|_| invalid(format!("route scope {} > 255", r.scope)))?;
            routes.push(Route {
                v6,
                destination,
                gateway: opt_ip(&r.gateway)?,
                device: r.device.clone(),
                source: opt_ip(&r.source)?,
                scope,
            });
        }
        let mut neighbours = Vec::with_capacity(req.neighbours.len());
        for n in &req.neighbours {
            neighbours.push(Neighbour {
                address: parse_ip(&n.address)?,
                mac: n.mac.parse()?,
                device: n.device.clone(),
            });
        }
        let config = NetworkConfig {
            interfaces,
            routes,
            neighbours,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NetworkConfig {
        let eth0 = "eth0".to_string();
        NetworkConfig {
            interfaces: vec![Interface {
                name: eth0.clone(),
                mac: "0a:58:0a:58:00:05".parse().expect("mac"),
                mtu: 1450,
                addresses: vec![
                    Prefix::new("10.88.0.5".parse().expect("ip"), 16).expect("prefix"),
                    Prefix::new("fd00::5".parse().expect("ip"), 64).expect("prefix"),
                ],
            }],
            routes: vec![
                Route {
                    v6: false,
                    destination: None,
                    gateway: Some("10.88.0.1".parse().expect("ip")),
                    device: eth0.clone(),
                    source: None,
                    scope: SCOPE_UNIVERSE,
                },
                Route {
                    v6: false,
                    destination: Some(
                        Prefix::new("10.88.0.0".parse().expect("ip"), 16).expect("prefix"),
                    ),
                    gateway: None,
                    device: eth0.clone(),
                    source: Some("10.88.0.5".parse().expect("ip")),
                    scope: SCOPE_LINK,
                },
            ],
            neighbours: vec![Neighbour {
                address: "10.88.0.1".parse().expect("ip"),
                mac: "02:00:00:00:00:01".parse().expect("mac"),
                device: eth0,
            }],
        }
    }

    #[test]
    fn round_trip_through_the_request() {
        let c = sample();
        c.validate().expect("valid");
        let back = NetworkConfig::from_request(&c.to_request()).expect("parse");
        assert_eq!(back, c);
    }

    #[test]
    fn on_link_routes_come_first() {
        let c = sample();
        let order: Vec<String> = c.ordered_routes().iter().map(|r| r.to_string()).collect();
        assert_eq!(
            order,
            vec![
                "10.88.0.0/16 dev eth0 scope 253 src 10.88.0.5",
                "default via 10.88.0.1 dev eth0 scope 0"
            ]
        );
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            "0A:58:0a:58:00:05".parse::<Mac>().expect("mac").to_string(),
            "0a:58:0a:58:00:05"
        );
        for bad in [
            "",
            "0a:58:0a:58:00",
            "0a:58:0a:58:00:05:06",
            "0a-58-0a-58-00-05",
            "0g:00:00:00:00:00",
            "a:b:c:d:e:f",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?}");
        }
        assert!(!Mac([1, 0, 0, 0, 0, 0]).is_unicast());
        assert!(!Mac([0; 6]).is_unicast());
    }

    #[test]
    fn bad_configs_are_named() {
        let mut c = sample();
        c.interfaces[0].mtu = 10;
        assert!(c
            .validate()
            .expect_err("mtu")
            .to_string()
            .contains("MTU 10"));

        let mut c = sample();
        c.interfaces[0].name = "a/b".into();
        assert!(c.validate().is_err());
        c.interfaces[0].name = "sixteen-chars-xx".into();
        assert!(c.validate().is_err());

        let mut c = sample();
        c.routes[0].device = "eth9".into();
        assert!(c.validate().expect_err("dev").to_string().contains("eth9"));

        let mut c = sample();
        c.routes[0].v6 = true;
        assert!(c
            .validate()
            .expect_err("family")
            .to_string()
            .contains("IPv6"));

        let mut c = sample();
        c.interfaces[0].mac = Mac([1, 2, 3, 4, 5, 6]);
        assert!(c.validate().is_err(), "multicast MAC");

        let mut req = sample().to_request();
        req.routes[0].family = 5;
        assert!(NetworkConfig::from_request(&req).is_err());
        let mut req = sample().to_request();
        req.interfaces[0].addresses[0].prefix_len = 33;
        assert!(NetworkConfig::from_request(&req).is_err());
        let mut req = sample().to_request();
        req.routes = vec![req.routes[0].clone(); MAX_ROUTES + 1];
        assert!(NetworkConfig::from_request(&req)
            .expect_err("bound")
            .to_string()
            .contains("too many"));
        let mut req = sample().to_request();
        req.neighbours[0].address = "10.0.0.300".into();
        assert!(NetworkConfig::from_request(&req).is_err());
    }
}
