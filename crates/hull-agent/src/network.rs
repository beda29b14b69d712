//! ConfigureNetwork: give the guest the pod's network over rtnetlink. Each interface is found
//! by MAC, renamed to the pod's name, given its MTU and addresses and brought up; then the
//! routes (on-link ones first, so every gateway is reachable), then the static neighbours.
//! An address or route the kernel already made (e.g. the subnet route of an address) is fine.

use std::collections::HashMap;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use hull_protocol::agent::ConfigureNetworkRequest;
use hull_protocol::network::{NetworkConfig, Route};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::RouteScope;
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::error::AgentError;

fn nl(what: String) -> impl FnOnce(rtnetlink::Error) -> AgentError {
    move |e| AgentError::Internal(format!("{what}: {e}"))
}

fn exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if m.code.is_some_and(|c| -c.get() == libc::EEXIST))
}

/// Validate `req` and apply it.
pub async fn configure(req: &ConfigureNetworkRequest) -> Result<(), AgentError> {
    let config =
        NetworkConfig::from_request(req).map_err(|e| AgentError::InvalidArgument(e.to_string()))?;
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| AgentError::io("netlink socket", e))?;
    let conn = tokio::spawn(conn);
    let r = apply(&handle, &config).await;
    conn.abort();
    r
}

async fn apply(h: &Handle, config: &NetworkConfig) -> Result<(), AgentError> {
    let links = h
        .link()
        .get()
        .execute()
        .try_collect::<Vec<_>>()
        .await
        .map_err(nl("list links".into()))?;
    let mut by_mac = HashMap::new();
    let mut by_name = HashMap::new();
    for l in &links {
        for a in &l.attributes {
            match a {
                LinkAttribute::Address(mac) => {
                    by_mac.insert(mac.clone(), l.header.index);
                }
                LinkAttribute::IfName(n) => {
                    by_name.insert(n.clone(), l.header.index);
                }
                _ => {}
            }
        }
    }
    let mut index_of = HashMap::new();
    for i in &config.interfaces {
        let index = *by_mac.get(i.mac.0.as_slice()).ok_or_else(|| {
            AgentError::NotFound(format!("no guest NIC has MAC {} (for {})", i.mac, i.name))
        })?;
        let what = |s: &str| format!("{} ({}): {s}", i.name, i.mac);
        match by_name.get(&i.name) {
            Some(&other) if other != index => {
                return Err(AgentError::AlreadyExists(what(
                    "another guest interface has the name",
                )))
            }
            Some(_) => {}
            None => {
                // A link is renamed only while down.
                h.link()
                    .set(LinkUnspec::new_with_index(index).down().build())
                    .execute()
                    .await
                    .map_err(nl(what("set down")))?;
                h.link()
                    .set(
                        LinkUnspec::new_with_index(index)
                            .name(i.name.clone())
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(nl(what("rename")))?;
            }
        }
        h.link()
            .set(LinkUnspec::new_with_index(index).mtu(i.mtu).up().build())
            .execute()
            .await
            .map_err(nl(what("set MTU and up")))?;
        for a in &i.addresses {
            match h.address().add(index, a.addr, a.len).execute().await {
                Ok(()) => {}
                Err(e) if exists(&e) => {}
                Err(e) => return Err(nl(what(&format!("add address {a}")))(e)),
            }
        }
        index_of.insert(i.name.as_str(), index);
    }
    for r in config.ordered_routes() {
        let index = index_of[r.device.as_str()];
        match h.route().add(route_message(r, index)?).execute().await {
            Ok(()) => {}
            Err(e) if exists(&e) => {}
            Err(e) => return Err(nl(format!("add route {r}"))(e)),
        }
    }
    for n in &config.neighbours {
        let index = index_of[n.device.as_str()];
        h.neighbours()
            .add(index, n.address)
            .link_layer_address(&n.mac.0)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("add neighbour {} lladdr {}", n.address, n.mac)))?;
    }
    tracing::info!(
        interfaces = config.interfaces.len(),
        routes = config.routes.len(),
        neighbours = config.neighbours.len(),
        "network configured"
    );
    Ok(())
}

/// The RTM_NEWROUTE message of `r` through link `index`.
pub fn route_message(
    r: &Route,
    index: u32,
) -> Result<netlink_packet_route::route::RouteMessage, AgentError> {
    let bad = |e: String| AgentError::InvalidArgument(format!("route {r}: {e}"));
    let mut b = RouteMessageBuilder::<IpAddr>::new();
    b.get_mut().header.address_family = if r.v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    if let Some(d) = r.destination {
        b = b
            .destination_prefix(d.addr, d.len)
            .map_err(|e| bad(e.to_string()))?;
    }
    if let Some(g) = r.gateway {
        b = b.gateway(g).map_err(|e| bad(e.to_string()))?;
    }
    if let Some(s) = r.source {
        b = b.pref_source(s).map_err(|e| bad(e.to_string()))?;
    }
    Ok(b.output_interface(index)
        .scope(RouteScope::from(r.scope))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hull_protocol::network::{Prefix, SCOPE_LINK, SCOPE_UNIVERSE};
    use netlink_packet_route::route::{RouteAddress, RouteAttribute};

    #[test]
    fn route_messages_carry_family_gateway_device_scope() {
        let r = Route {
            v6: false,
            destination: None,
            gateway: Some("10.88.0.1".parse().expect("ip")),
            device: "eth0".into(),
            source: None,
            scope: SCOPE_UNIVERSE,
        };
        let m = route_message(&r, 2).expect("message");
        assert_eq!(m.header.address_family, AddressFamily::Inet);
        assert_eq!(m.header.destination_prefix_length, 0);
        assert!(m.attributes.contains(&RouteAttribute::Oif(2)));
        assert!(m
            .attributes
            .contains(&RouteAttribute::Gateway(RouteAddress::Inet(
                [10, 88, 0, 1].into()
            ))));

        let r = Route {
            v6: true,
            destination: Some(Prefix::new("fd00::".parse().expect("ip"), 64).expect("prefix")),
            gateway: None,
            device: "eth0".into(),
            source: Some("fd00::5".parse().expect("ip")),
            scope: SCOPE_LINK,
        };
        let m = route_message(&r, 2).expect("message");
        assert_eq!(m.header.address_family, AddressFamily::Inet6);
        assert_eq!(m.header.destination_prefix_length, 64);
        assert_eq!(m.header.scope, RouteScope::Link);
    }
}
