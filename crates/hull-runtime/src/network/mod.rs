//! Pod networking the Kata way: in the pod's netns (made by CNI) the one veth is joined to a
//! tap by tc ingress + mirred redirect both ways; QEMU runs in that netns with the tap as
//! its virtio-net backend and the veth's MAC, and the agent gives the guest NIC the veth's
//! addresses, MTU, routes and neighbours. No bridge, no NAT.
//!
//! Everything made here lives in the pod netns: the tap (gone with the last fd on it), the
//! qdiscs and filters (the tap's go with it; the veth's are removed by `teardown`, and with
//! the veth when CNI deletes the netns).

mod config;
mod netns;
mod tap;
mod tc;

use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use futures_util::TryStreamExt;
use hull_protocol::network::{Mac, NetworkConfig};
use rtnetlink::{Handle, LinkUnspec};

use crate::error::{Error, Result};
pub use netns::Netns;
pub use tap::TAP_NAME;

/// Run `f` with a netlink handle of the calling thread's netns, on a current-thread runtime.
fn with_netlink<T, F, Fut>(f: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::io("start the netlink runtime", e))?;
    rt.block_on(async {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| Error::io("open a netlink socket", e))?;
        let conn = tokio::spawn(conn);
        let r = f(handle).await;
        conn.abort();
        r
    })
}

/// An error of pod network set-up, naming the netns.
fn net_error(netns: &Path, what: impl std::fmt::Display) -> Error {
    Error::Io {
        context: format!("pod network namespace {}", netns.display()),
        source: std::io::Error::other(what.to_string()),
    }
}

/// The network side of a sandbox: the netns (kept open: QEMU is spawned into it and
/// teardown runs in it), the veth and tap indexes, what the guest is told.
#[derive(Debug)]
pub struct PodNetwork {
    netns: Arc<Netns>,
    veth: u32,
    tap: Option<u32>,
    tap_fd: Option<OwnedFd>,
    mac: Mac,
    config: NetworkConfig,
}

/// What the VMM needs: the tap's queue fd, the guest NIC's MAC, and the netns to run in.
#[derive(Debug, Clone)]
pub struct NetDevice {
    /// tap queue fd (close-on-exec here; the VMM driver passes it to its child)
    pub tap: Arc<OwnedFd>,
    /// MAC of the guest NIC (the veth's)
    pub mac: Mac,
    /// the netns the VMM process must run in
    pub netns: Arc<Netns>,
}

/// What was made so far, for undoing a failed set-up.
#[derive(Default)]
struct Made {
    tap: Option<u32>,
    veth_ingress: bool,
}

impl PodNetwork {
    /// Open `netns_path`, read its one interface and connect a new tap to it. On error
    /// nothing is left in the netns.
    pub fn setup(netns_path: &Path) -> Result<PodNetwork> {
        let netns = Arc::new(Netns::open(netns_path)?);
        let (pod, tap, tap_fd) = netns.run(|| {
            with_netlink(|h| async move {
                let pod = config::read(&h).await.map_err(|e| {
                    Error::FailedPrecondition(format!(
                        "pod network namespace {} {e}",
                        netns_path.display()
                    ))
                })?;
                // Only now: the tap must not count as the pod's interface.
                let fd = tap::create(TAP_NAME)
                    .map_err(|e| net_error(netns_path, format!("create tap {TAP_NAME}: {e}")))?;
                let mut made = Made::default();
                match connect(&h, &pod, &mut made).await {
                    Ok(tap) => Ok((pod, tap, fd)),
                    Err(e) => {
                        drop(fd);
                        if let Err(u) = undo(&h, pod.index, &made).await {
                            tracing::warn!(netns = %netns_path.display(), error = %u, "undo");
                        }
                        Err(net_error(netns_path, e))
                    }
                }
            })
        })?;
        let iface = &pod.config.interfaces[0];
        tracing::info!(netns = %netns_path.display(), veth = %iface.name, mac = %iface.mac, mtu = iface.mtu,
            addresses = iface.addresses.len(), routes = pod.config.routes.len(),
            neighbours = pod.config.neighbours.len(), "pod network connected to {TAP_NAME}");
        Ok(PodNetwork {
            mac: iface.mac,
            netns,
            veth: pod.index,
            tap: Some(tap),
            tap_fd: Some(tap_fd),
            config: pod.config,
        })
    }

    /// The device for the VMM (the tap fd is handed over once).
    pub fn take_device(&mut self) -> Option<NetDevice> {
        Some(NetDevice {
            tap: Arc::new(self.tap_fd.take()?),
            mac: self.mac,
            netns: self.netns.clone(),
        })
    }

    /// What the guest must be told.
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The netns path.
    pub fn netns_path(&self) -> &Path {
        self.netns.path()
    }

    /// Remove the veth's qdisc and the tap (if the VMM has not taken it with it). Errors are
    /// logged: a netns CNI already deleted has nothing left to remove.
    pub fn teardown(&mut self) {
        self.tap_fd = None;
        let made = Made {
            tap: self.tap.take(),
            veth_ingress: true,
        };
        let veth = self.veth;
        let path = self.netns.path().to_path_buf();
        let r = self.netns.run(|| {
            with_netlink(
                |h| async move { undo(&h, veth, &made).await.map_err(|e| net_error(&path, e)) },
            )
        });
        if let Err(e) = r {
            tracing::warn!(netns = %self.netns.path().display(), error = %e, "pod network teardown");
        }
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        if self.tap.is_some() {
            self.teardown();
        }
    }
}

/// Bring the tap up with the veth's MTU and redirect each one's ingress to the other.
async fn connect(
    h: &Handle,
    pod: &config::PodInterface,
    made: &mut Made,
) -> std::result::Result<u32, String> {
    let nl = |what: &'static str| move |e: rtnetlink::Error| format!("{what}: {e}");
    let tap = h
        .link()
        .get()
        .match_name(TAP_NAME.to_string())
        .execute()
        .try_next()
        .await
        .map_err(nl("find the tap"))?
        .map(|m| m.header.index)
        .ok_or_else(|| format!("tap {TAP_NAME} vanished"))?;
    made.tap = Some(tap);
    let mtu = pod.config.interfaces[0].mtu;
    h.link()
        .set(LinkUnspec::new_with_index(tap).mtu(mtu).up().build())
        .execute()
        .await
        .map_err(nl("set the tap's MTU and bring it up"))?;
    tc::add_ingress(h, pod.index)
        .await
        .map_err(nl("add the veth's ingress qdisc"))?;
    made.veth_ingress = true;
    tc::add_ingress(h, tap)
        .await
        .map_err(nl("add the tap's ingress qdisc"))?;
    tc::redirect(h, pod.index, tap)
        .await
        .map_err(nl("redirect veth -> tap"))?;
    tc::redirect(h, tap, pod.index)
        .await
        .map_err(nl("redirect tap -> veth"))?;
    Ok(tap)
}

/// Undo what `made` says was made (best effort; a missing object is not an error).
async fn undo(h: &Handle, veth: u32, made: &Made) -> std::result::Result<(), String> {
    let mut errors = Vec::new();
    if made.veth_ingress {
        match tc::del_ingress(h, veth).await {
            Ok(()) => {}
            Err(e) if is_gone(&e) => {}
            Err(e) => errors.push(format!("delete the veth's ingress qdisc: {e}")),
        }
    }
    if let Some(tap) = made.tap {
        match h.link().del(tap).execute().await {
            Ok(()) => {}
            Err(e) if is_gone(&e) => {}
            Err(e) => errors.push(format!("delete tap {TAP_NAME}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// ENODEV / ENOENT / EINVAL (no such qdisc) from netlink: the object is already gone.
fn is_gone(e: &rtnetlink::Error) -> bool {
    match e {
        rtnetlink::Error::NetlinkError(m) => m
            .code
            .map(|c| matches!(-c.get(), libc::ENODEV | libc::ENOENT | libc::EINVAL))
            .unwrap_or(false),
        _ => false,
    }
}

/// Leak check for tests and tools: whether `netns` still holds the tap or an ingress qdisc
/// on any interface. Returns what is left, by name.
pub fn leftovers(netns_path: &Path) -> Result<Vec<String>> {
    let netns = Netns::open(netns_path)?;
    netns.run(|| {
        with_netlink(|h| async move {
            let nl = |e: rtnetlink::Error| net_error(netns_path, e);
            let links: Vec<_> = h
                .link()
                .get()
                .execute()
                .map_ok(|m| config::link_from(&m))
                .try_collect()
                .await
                .map_err(nl)?;
            let mut left = Vec::new();
            for l in links {
                if l.name == TAP_NAME {
                    left.push(format!("tap {TAP_NAME}"));
                }
                if tc::has_ingress(&h, l.index).await.map_err(nl)? {
                    left.push(format!("ingress qdisc on {}", l.name));
                }
            }
            Ok(left)
        })
    })
}
