//! Where the relay learns which guest ports listen: the agent's `Forward` service on a ttrpc
//! connection of its own, long-polled; every reply is bounded and checked.

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::time::Duration;

use hull_protocol::forward::ListPortsRequest;
use hull_protocol::forward_ttrpc::ForwardClient;
use hull_protocol::portfwd::MAX_FORWARD_PORTS;
use ttrpc::context;

use crate::error::{Error, Result};

/// A source of the guest's listening ports.
pub trait PortSource: Send + std::fmt::Debug + 'static {
    /// The sorted set of listening ports, returned once it differs from `known` or after a
    /// while (then possibly equal to `known`).
    fn next(&mut self, known: &[u16]) -> Result<Vec<u16>>;
}

/// How long one long-poll may wait in the guest.
const WAIT_MS: u32 = 5_000;
/// Slack over the wait for the reply to arrive (TCG guests are slow).
const CALL_SLACK: Duration = Duration::from_secs(10);

/// The agent's `Forward` service.
pub struct AgentPorts {
    client: ForwardClient,
}

impl std::fmt::Debug for AgentPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentPorts").finish_non_exhaustive()
    }
}

impl AgentPorts {
    /// Talk ttrpc over the connected `fd`; the second value cuts the connection (shut it down
    /// to make a pending call fail at once).
    pub fn new(fd: OwnedFd) -> Result<(AgentPorts, OwnedFd)> {
        let cut = fd
            .try_clone()
            .map_err(|e| Error::io("dup port-forward agent socket", e))?;
        let client = ttrpc::Client::new(fd.into_raw_fd())
            .map_err(|e| Error::Agent(format!("ttrpc client: {e}")))?;
        Ok((
            AgentPorts {
                client: ForwardClient::new(client),
            },
            cut,
        ))
    }
}

impl PortSource for AgentPorts {
    fn next(&mut self, known: &[u16]) -> Result<Vec<u16>> {
        let mut req = ListPortsRequest::new();
        req.known = known.iter().copied().map(u32::from).collect();
        req.wait_ms = WAIT_MS;
        let timeout = Duration::from_millis(WAIT_MS.into()) + CALL_SLACK;
        let r = self
            .client
            .list_listening_ports(context::with_duration(timeout), &req)
            .map_err(crate::agent::map("ListListeningPorts"))?;
        checked(r.ports)
    }
}

/// The guest's answer as a sorted set of valid ports, or an error for a hostile one.
pub fn checked(ports: Vec<u32>) -> Result<Vec<u16>> {
    if ports.len() > MAX_FORWARD_PORTS {
        return Err(Error::Agent(format!(
            "ListListeningPorts returned {} ports, limit {MAX_FORWARD_PORTS}",
            ports.len()
        )));
    }
    let mut out = Vec::with_capacity(ports.len());
    for p in ports {
        match u16::try_from(p) {
            Ok(p) if p != 0 => out.push(p),
            _ => {
                return Err(Error::Agent(format!(
                    "ListListeningPorts returned port {p}"
                )))
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Shut a connection down (both ways), failing what is pending on it.
pub fn cut(fd: &OwnedFd) {
    let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_checked() {
        assert_eq!(checked(vec![8080, 80, 80]).expect("ok"), vec![80, 8080]);
        assert!(checked(vec![0]).is_err());
        assert!(checked(vec![65536]).is_err());
        assert!(checked((1..=MAX_FORWARD_PORTS as u32 + 1).collect()).is_err());
        assert_eq!(
            checked((1..=MAX_FORWARD_PORTS as u32).collect())
                .expect("at the limit")
                .len(),
            MAX_FORWARD_PORTS
        );
    }
}
