//! The host's client of hull-agent: ttrpc over the vsock transport, with a timeout on every
//! control call, replies checked against what was asked, and a kill switch for a dead guest.

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::time::{Duration, Instant};

use hull_protocol::agent::{self as pb};
use hull_protocol::agent_ttrpc::AgentClient;
use ttrpc::context;

use crate::error::{Error, Result};
use crate::vsock::{self, AgentAddress};

/// Timeout of ordinary control calls (TCG guests are slow; a hung guest must still fail).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a WatchOom long-poll may take: the agent answers within 30 s.
const WATCH_OOM_TIMEOUT: Duration = Duration::from_secs(45);

/// A connected agent.
pub struct Agent {
    client: AgentClient,
    /// A second handle on the connection, to shut it down and unblock pending calls.
    kill: OwnedFd,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("fd", &self.kill.as_raw_fd())
            .finish()
    }
}

impl Agent {
    /// Connect, retrying until the agent answers Check, `timeout` passes, or `dead()` reports
    /// why waiting is pointless (the VM or a helper exited).
    pub fn connect(
        addr: &AgentAddress,
        timeout: Duration,
        dead: &mut dyn FnMut() -> Option<Error>,
    ) -> Result<(Agent, pb::CheckResponse)> {
        let deadline = Instant::now() + timeout;
        let mut step = Duration::from_millis(5);
        loop {
            if let Some(e) = dead() {
                return Err(e);
            }
            // A guest that is not listening yet is refused at once; a long handshake wait only
            // matters for a guest that is slow to answer (TCG on a busy host).
            let remaining = deadline.saturating_duration_since(Instant::now());
            let handshake = remaining.clamp(Duration::from_millis(500), Duration::from_secs(10));
            let last = match vsock::connect(addr, handshake) {
                Ok(fd) => match Self::from_fd(fd).and_then(|a| {
                    let remaining = deadline
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_secs(1));
                    let r = a.check(remaining.min(CALL_TIMEOUT))?;
                    Ok((a, r))
                }) {
                    Ok(ok) => return Ok(ok),
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(Error::DeadlineExceeded(format!(
                    "agent did not answer within {}s (last error: {last})",
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(step);
            step = (step * 2).min(Duration::from_millis(50));
        }
    }

    /// Wrap an already connected stream.
    pub fn from_fd(fd: OwnedFd) -> Result<Agent> {
        let kill = fd
            .try_clone()
            .map_err(|e| Error::io("dup agent socket", e))?;
        let client = ttrpc::Client::new(fd.into_raw_fd())
            .map_err(|e| Error::Agent(format!("ttrpc client: {e}")))?;
        Ok(Agent {
            client: AgentClient::new(client),
            kill,
        })
    }

    /// Shut the connection down: every pending and later call fails at once.
    pub fn disconnect(&self) {
        let _ = nix::sys::socket::shutdown(self.kill.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }

    /// Liveness and identity.
    pub fn check(&self, timeout: Duration) -> Result<pb::CheckResponse> {
        let r = self
            .client
            .check(context::with_duration(timeout), &pb::CheckRequest::new())
            .map_err(map("Check"))?;
        bounded("agent_version", &r.agent_version, 256)?;
        bounded("kernel_release", &r.kernel_release, 256)?;
        Ok(r)
    }

    /// Give the guest the pod's network (interfaces by MAC, addresses, MTU, routes, neighbours).
    pub fn configure_network(&self, config: &hull_protocol::network::NetworkConfig) -> Result<()> {
        config
            .validate()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        self.client
            .configure_network(ctx(), &config.to_request())
            .map_err(map("ConfigureNetwork"))?;
        Ok(())
    }

    /// Create a container from a guest-side OCI spec.
    pub fn create_container(&self, id: &str, spec_json: Vec<u8>) -> Result<()> {
        let mut req = pb::CreateContainerRequest::new();
        req.container_id = id.to_string();
        req.oci_spec_json = spec_json;
        self.client
            .create_container(ctx(), &req)
            .map_err(map("CreateContainer"))?;
        Ok(())
    }

    /// Start a container's init process; returns its guest pid.
    pub fn start_container(&self, id: &str) -> Result<u32> {
        let mut req = pb::ContainerRequest::new();
        req.container_id = id.to_string();
        Ok(self
            .client
            .start_container(ctx(), &req)
            .map_err(map("StartContainer"))?
            .pid)
    }

    /// Start an extra process in a container; returns its guest pid.
    pub fn exec_process(&self, id: &str, exec_id: &str, process_json: Vec<u8>) -> Result<u32> {
        let mut req = pb::ExecProcessRequest::new();
        req.container_id = id.to_string();
        req.exec_id = exec_id.to_string();
        req.oci_process_json = process_json;
        Ok(self
            .client
            .exec_process(ctx(), &req)
            .map_err(map("ExecProcess"))?
            .pid)
    }

    /// Signal a process (or all of the container's with `all`).
    pub fn signal(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let mut req = pb::SignalProcessRequest::new();
        req.container_id = id.to_string();
        req.exec_id = exec_id.to_string();
        req.signal = signal;
        req.all = all;
        self.client
            .signal_process(ctx(), &req)
            .map_err(map("SignalProcess"))?;
        Ok(())
    }

    /// Wait for a process to exit (no timeout); returns its status (code, or 128+signal) and
    /// whether its container had a process OOM-killed (init processes only).
    pub fn wait(&self, id: &str, exec_id: &str) -> Result<(i32, bool)> {
        let r = self
            .client
            .wait_process(context::with_timeout(0), &preq(id, exec_id))
            .map_err(map("WaitProcess"))?;
        if !(0..=255).contains(&r.exit_status) {
            return Err(Error::Agent(format!(
                "exit status {} out of range",
                r.exit_status
            )));
        }
        Ok((r.exit_status, r.oom_killed))
    }

    /// Write stdin; returns how many bytes the agent took.
    pub fn write_stdin(&self, id: &str, exec_id: &str, data: &[u8]) -> Result<usize> {
        let mut req = pb::WriteStdinRequest::new();
        req.container_id = id.to_string();
        req.exec_id = exec_id.to_string();
        req.data = data[..data.len().min(hull_protocol::MAX_WRITE_CHUNK)].to_vec();
        let sent = req.data.len();
        let r = self
            .client
            .write_stdin(ctx(), &req)
            .map_err(map("WriteStdin"))?;
        let n = r.len as usize;
        if n > sent || (n == 0 && sent > 0) {
            return Err(Error::Agent(format!("WriteStdin took {n} of {sent} bytes")));
        }
        Ok(n)
    }

    /// Close stdin.
    pub fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        self.client
            .close_stdin(ctx(), &preq(id, exec_id))
            .map_err(map("CloseStdin"))?;
        Ok(())
    }

    /// Read the next stdout (or stderr) chunk, blocking until there is one; empty = EOF.
    pub fn read_output(&self, id: &str, exec_id: &str, stderr: bool) -> Result<Vec<u8>> {
        let mut req = pb::ReadStreamRequest::new();
        req.container_id = id.to_string();
        req.exec_id = exec_id.to_string();
        req.max_len = hull_protocol::MAX_READ_CHUNK;
        let c = context::with_timeout(0);
        let r = if stderr {
            self.client
                .read_stderr(c, &req)
                .map_err(map("ReadStderr"))?
        } else {
            self.client
                .read_stdout(c, &req)
                .map_err(map("ReadStdout"))?
        };
        if r.data.len() > req.max_len as usize {
            return Err(Error::Agent(format!(
                "read returned {} bytes, asked for {}",
                r.data.len(),
                req.max_len
            )));
        }
        Ok(r.data)
    }

    /// Resize a process's terminal.
    pub fn resize(&self, id: &str, exec_id: &str, rows: u16, cols: u16) -> Result<()> {
        let mut req = pb::ResizeTtyRequest::new();
        req.container_id = id.to_string();
        req.exec_id = exec_id.to_string();
        req.rows = rows.into();
        req.cols = cols.into();
        self.client
            .resize_tty(ctx(), &req)
            .map_err(map("ResizeTty"))?;
        Ok(())
    }

    /// Remove a container in the guest.
    pub fn remove_container(&self, id: &str) -> Result<()> {
        let mut req = pb::ContainerRequest::new();
        req.container_id = id.to_string();
        self.client
            .remove_container(ctx(), &req)
            .map_err(map("RemoveContainer"))?;
        Ok(())
    }

    /// Apply new limits (`linux.resources` as JSON) to a container's cgroup.
    pub fn update_container(&self, id: &str, resources_json: Vec<u8>) -> Result<()> {
        let mut req = pb::UpdateContainerRequest::new();
        req.container_id = id.to_string();
        req.resources_json = resources_json;
        self.client
            .update_container(ctx(), &req)
            .map_err(map("UpdateContainer"))?;
        Ok(())
    }

    /// Freeze (`true`) or thaw a container's processes.
    pub fn set_paused(&self, id: &str, paused: bool) -> Result<()> {
        let req = creq(id);
        if paused {
            self.client
                .pause_container(ctx(), &req)
                .map_err(map("PauseContainer"))?;
        } else {
            self.client
                .resume_container(ctx(), &req)
                .map_err(map("ResumeContainer"))?;
        }
        Ok(())
    }

    /// Guest pids of a container's processes.
    pub fn pids(&self, id: &str) -> Result<Vec<u32>> {
        let r = self
            .client
            .list_pids(ctx(), &creq(id))
            .map_err(map("ListPids"))?;
        if r.pids.len() > hull_protocol::MAX_PIDS {
            return Err(Error::Agent(format!(
                "ListPids returned {} pids, limit {}",
                r.pids.len(),
                hull_protocol::MAX_PIDS
            )));
        }
        Ok(r.pids)
    }

    /// Resource counters of a container's cgroup.
    pub fn stats(&self, id: &str) -> Result<pb::StatsResponse> {
        self.client
            .container_stats(ctx(), &creq(id))
            .map_err(map("ContainerStats"))
    }

    /// Long-poll the OOM kill count of container `id` until it exceeds `seen` (the agent
    /// answers after at most 30 s with the unchanged count).
    pub fn watch_oom(&self, id: &str, seen: u64) -> Result<u64> {
        let mut req = pb::WatchOomRequest::new();
        req.container_id = id.to_string();
        req.seen = seen;
        let r = self
            .client
            .watch_oom(context::with_duration(WATCH_OOM_TIMEOUT), &req)
            .map_err(map("WatchOom"))?;
        if r.oom_kills < seen {
            return Err(Error::Agent(format!(
                "WatchOom count went back from {seen} to {}",
                r.oom_kills
            )));
        }
        Ok(r.oom_kills)
    }

    /// Mount guest volume `id` (a tmpfs of `size` bytes, 0 = guest default) if not there.
    pub fn ensure_volume(&self, id: &str, size: u64, mode: u32) -> Result<()> {
        let mut req = pb::EnsureVolumeRequest::new();
        req.volume_id = id.to_string();
        req.size_bytes = size;
        req.mode = mode;
        self.client
            .ensure_volume(ctx(), &req)
            .map_err(map("EnsureVolume"))?;
        Ok(())
    }

    /// Make guest volume `id` hold exactly `entries` (validated here before they go).
    pub fn sync_volume(
        &self,
        id: &str,
        mode: u32,
        owner: (u32, u32),
        entries: &[hull_protocol::volume::Entry],
    ) -> Result<()> {
        let req = hull_protocol::volume::to_request(id, mode, owner, entries)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        self.client
            .sync_volume(ctx(), &req)
            .map_err(map("SyncVolume"))?;
        Ok(())
    }

    /// Unmount and remove guest volume `id`.
    pub fn remove_volume(&self, id: &str) -> Result<()> {
        let mut req = pb::VolumeRequest::new();
        req.volume_id = id.to_string();
        self.client
            .remove_volume(ctx(), &req)
            .map_err(map("RemoveVolume"))?;
        Ok(())
    }

    /// Forget an exited exec process.
    pub fn remove_process(&self, id: &str, exec_id: &str) -> Result<()> {
        self.client
            .remove_process(ctx(), &preq(id, exec_id))
            .map_err(map("RemoveProcess"))?;
        Ok(())
    }
}

fn ctx() -> context::Context {
    context::with_duration(CALL_TIMEOUT)
}

fn creq(id: &str) -> pb::ContainerRequest {
    let mut r = pb::ContainerRequest::new();
    r.container_id = id.to_string();
    r
}

fn preq(id: &str, exec_id: &str) -> pb::ProcessRequest {
    let mut r = pb::ProcessRequest::new();
    r.container_id = id.to_string();
    r.exec_id = exec_id.to_string();
    r
}

fn bounded(what: &str, s: &str, max: usize) -> Result<()> {
    if s.len() > max {
        return Err(Error::Agent(format!(
            "{what} is {} bytes, more than {max}",
            s.len()
        )));
    }
    Ok(())
}

/// Map a ttrpc error of call `what` onto the runtime's error, keeping the agent's code.
/// A broken connection is `Unavailable`; the sandbox replaces it by the VM's death if any.
pub(crate) fn map(what: &'static str) -> impl Fn(ttrpc::Error) -> Error {
    move |e| match e {
        ttrpc::Error::RpcStatus(s) => {
            let msg: String = s.message.chars().take(1024).collect();
            let msg = format!("{what}: {msg}");
            match s.code() {
                ttrpc::Code::NOT_FOUND => Error::NotFound(msg),
                ttrpc::Code::INVALID_ARGUMENT => Error::InvalidArgument(msg),
                ttrpc::Code::ALREADY_EXISTS => Error::AlreadyExists(msg),
                ttrpc::Code::FAILED_PRECONDITION => Error::FailedPrecondition(msg),
                ttrpc::Code::DEADLINE_EXCEEDED => {
                    Error::DeadlineExceeded(format!("{what} timed out"))
                }
                ttrpc::Code::UNAVAILABLE => Error::Unavailable(msg),
                _ => Error::Agent(msg),
            }
        }
        ttrpc::Error::Socket(m) => {
            Error::Unavailable(format!("{what}: agent connection lost ({m})"))
        }
        ttrpc::Error::LocalClosed | ttrpc::Error::RemoteClosed | ttrpc::Error::Eof => {
            Error::Unavailable(format!("{what}: agent connection closed"))
        }
        other => Error::Agent(format!("{what}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    /// A fake guest that answers the first request with `reply`, then keeps the socket open.
    fn hostile_agent(reply: Vec<u8>) -> (Agent, std::thread::JoinHandle<()>) {
        let (host, mut guest) = UnixStream::pair().expect("socketpair");
        let h = std::thread::spawn(move || {
            let mut header = [0u8; 10];
            if guest.read_exact(&mut header).is_ok() {
                let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
                let mut body = vec![0u8; len];
                let _ = guest.read_exact(&mut body);
                let _ = guest.write_all(&reply);
            }
            std::thread::sleep(Duration::from_secs(3));
        });
        (Agent::from_fd(OwnedFd::from(host)).expect("client"), h)
    }

    #[test]
    fn garbage_reply_is_an_error_not_a_hang() {
        let (agent, _h) =
            hostile_agent(b"\x00\x00\x00\x05\x00\x00\x00\x01\x02\x00garbage".to_vec());
        let t = Instant::now();
        let e = agent
            .check(Duration::from_secs(2))
            .expect_err("garbage must fail");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        assert!(e.to_string().contains("Check"), "{e}");
    }

    #[test]
    fn oversized_frame_is_refused() {
        // A response header announcing 1 GiB: the client must not try to read or allocate it.
        let mut reply = (1u32 << 30).to_be_bytes().to_vec();
        reply.extend_from_slice(&[0, 0, 0, 1, 2, 0]);
        let (agent, _h) = hostile_agent(reply);
        let t = Instant::now();
        assert!(agent.check(Duration::from_secs(2)).is_err());
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
    }

    #[test]
    fn silent_agent_times_out() {
        let (agent, _h) = hostile_agent(Vec::new());
        let t = Instant::now();
        let e = agent
            .check(Duration::from_millis(300))
            .expect_err("no answer");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t.elapsed()
        );
        assert!(e.to_string().contains("timed out"), "{e}");
    }
}
