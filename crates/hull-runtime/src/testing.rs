//! Fakes for unit tests without root or a VM (feature `test-support`): a `Vmm` whose "VM" is a
//! sleeping child process plus an in-process ttrpc agent on a Unix socket, and host mounts
//! that only make and remove directories.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use hull_protocol::agent as pb;
use hull_protocol::agent_ttrpc;
use ttrpc::{Code, TtrpcContext};

use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::host::HostMounts;
use crate::vmm::{AccelDecision, ExitNotify, Vm, VmSpec, Vmm};
use crate::vsock::AgentAddress;

/// Host mounts that only make and remove directories (binds are recorded, not made).
#[derive(Debug, Default)]
pub struct FakeMounts {
    /// (source, target, readonly) of every bind asked for.
    pub binds: Mutex<Vec<(PathBuf, PathBuf, bool)>>,
}

impl HostMounts for FakeMounts {
    fn make_shared(&self, _dir: &Path) -> Result<()> {
        Ok(())
    }

    fn bind(&self, src: &Path, dst: &Path, readonly: bool) -> Result<()> {
        self.binds.lock().unwrap_or_else(|p| p.into_inner()).push((
            src.to_path_buf(),
            dst.to_path_buf(),
            readonly,
        ));
        Ok(())
    }

    fn remove_tree(&self, dir: &Path) -> Result<()> {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("remove {}", dir.display()), e))
            }
            _ => Ok(()),
        }
    }
}

/// A VMM whose VMs are a `sleep` child process and an in-process fake agent.
#[derive(Debug, Default)]
pub struct FakeVmm {
    /// Refuse to launch with this message.
    pub fail_launch: Option<String>,
    /// The guest volumes of the VMs it launched: id -> paths of the last snapshot synced
    /// (empty for a tmpfs); a removed volume leaves the table.
    pub volumes: FakeVolumes,
}

/// Guest volumes the fake agent holds, shared with the test.
pub type FakeVolumes = Arc<Mutex<HashMap<String, Vec<String>>>>;

impl Vmm for FakeVmm {
    fn name(&self) -> &'static str {
        "fake-vmm"
    }

    fn launch(&self, spec: &VmSpec, notify: ExitNotify) -> Result<Box<dyn Vm>> {
        if let Some(why) = &self.fail_launch {
            return Err(Error::Daemon {
                name: "fake-vmm".into(),
                what: why.clone(),
            });
        }
        let mut cmd = Command::new("sleep");
        cmd.arg("1000");
        let daemon = Daemon::spawn_notify("fake-vmm", cmd, None, Some(notify))?;
        let vm_pid = Arc::new(AtomicI32::new(daemon.pid()));
        let socket = spec.run_dir.join("fake-agent.sock");
        let agent = Arc::new(FakeAgent {
            state: Mutex::new(AgentState::default()),
            changed: Condvar::new(),
            next_pid: AtomicU32::new(100),
            vm_pid: vm_pid.clone(),
            volumes: self.volumes.clone(),
        });
        let mut server = ttrpc::Server::new()
            .bind(&format!("unix://{}", socket.display()))
            .map_err(|e| Error::Agent(format!("fake agent bind: {e}")))?
            .register_service(agent_ttrpc::create_agent(agent.clone()));
        server
            .start()
            .map_err(|e| Error::Agent(format!("fake agent start: {e}")))?;
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
        nix::unistd::write(&write, b"fake guest booted\n").map_err(|e| Error::sys("write", e))?;
        Ok(Box::new(FakeVm {
            agent,
            daemon,
            socket,
            server: Mutex::new(Some(server)),
            console: Mutex::new(Some(read)),
            console_writer: Mutex::new(Some(write)),
        }))
    }
}

/// A fake VM.
struct FakeVm {
    agent: Arc<FakeAgent>,
    daemon: Daemon,
    socket: PathBuf,
    server: Mutex<Option<ttrpc::Server>>,
    console: Mutex<Option<OwnedFd>>,
    console_writer: Mutex<Option<OwnedFd>>,
}

impl std::fmt::Debug for FakeVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeVm")
            .field("pid", &self.daemon.pid())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Vm for FakeVm {
    fn pid(&self) -> i32 {
        self.daemon.pid()
    }

    fn processes(&self) -> Vec<(String, i32)> {
        vec![("fake-vmm".into(), self.daemon.pid())]
    }

    fn accel(&self) -> Option<&AccelDecision> {
        None
    }

    fn agent_address(&self) -> AgentAddress {
        AgentAddress::Unix {
            path: self.socket.clone(),
        }
    }

    fn wait_agent_channel(
        &self,
        _timeout: Duration,
        _dead: &mut dyn FnMut() -> Option<Error>,
    ) -> Result<()> {
        Ok(())
    }

    fn take_console(&self) -> Option<OwnedFd> {
        lock(&self.console).take()
    }

    fn last_error(&self) -> Option<String> {
        None
    }

    fn exited(&self) -> Option<ExitStatus> {
        self.daemon.exited()
    }

    fn wait_exit(&self, timeout: Duration) -> bool {
        self.daemon.wait_timeout(timeout).is_some()
    }

    fn stop(&self, grace: Duration) {
        self.daemon.stop(grace);
        self.agent.close();
        if let Some(s) = lock(&self.server).take() {
            s.shutdown();
        }
        lock(&self.console_writer).take();
    }
}

#[derive(Debug, Default)]
struct FakeProc {
    pid: u32,
    args: Vec<String>,
    started: bool,
    exit: Option<i32>,
    output: Vec<u8>,
}

#[derive(Debug, Default)]
struct FakeContainer {
    procs: HashMap<String, FakeProc>,
}

#[derive(Debug, Default)]
struct AgentState {
    containers: HashMap<String, FakeContainer>,
    /// The VM is gone: blocked calls end.
    closed: bool,
}

/// The fake agent. Processes run `args`: `exit N` ends at once with N, `echo WORDS` prints
/// and ends with 0, anything else runs until signalled (status 128 + signal).
#[derive(Debug)]
struct FakeAgent {
    state: Mutex<AgentState>,
    changed: Condvar,
    next_pid: AtomicU32,
    vm_pid: Arc<AtomicI32>,
    volumes: FakeVolumes,
}

fn status(code: Code, msg: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.into()))
}

fn args_of_spec(json: &[u8]) -> Vec<String> {
    serde_json::from_slice::<oci_spec::runtime::Spec>(json)
        .ok()
        .and_then(|s| s.process().as_ref().and_then(|p| p.args().clone()))
        .unwrap_or_default()
}

fn args_of_process(json: &[u8]) -> Vec<String> {
    serde_json::from_slice::<oci_spec::runtime::Process>(json)
        .ok()
        .and_then(|p| p.args().clone())
        .unwrap_or_default()
}

impl FakeProc {
    fn run(&mut self, pid: u32) {
        self.pid = pid;
        self.started = true;
        match self.args.first().map(String::as_str) {
            Some("exit") => {
                self.exit = Some(self.args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0))
            }
            Some("echo") => {
                self.output = format!("{}\n", self.args[1..].join(" ")).into_bytes();
                self.exit = Some(0);
            }
            _ => {}
        }
    }
}

impl FakeAgent {
    fn close(&self) {
        self.st().closed = true;
        self.changed.notify_all();
    }

    fn st(&self) -> MutexGuard<'_, AgentState> {
        lock(&self.state)
    }

    fn with_proc<T>(
        &self,
        cid: &str,
        eid: &str,
        f: impl FnOnce(&mut FakeProc) -> ttrpc::Result<T>,
    ) -> ttrpc::Result<T> {
        let mut st = self.st();
        let c = st
            .containers
            .get_mut(cid)
            .ok_or_else(|| status(Code::NOT_FOUND, format!("container {cid}")))?;
        let p = c
            .procs
            .get_mut(eid)
            .ok_or_else(|| status(Code::NOT_FOUND, format!("process {eid} of {cid}")))?;
        f(p)
    }

    fn start(&self, cid: &str, eid: &str) -> ttrpc::Result<pb::StartResponse> {
        let pid = self.next_pid.fetch_add(1, Ordering::SeqCst);
        self.with_proc(cid, eid, |p| {
            if p.started {
                return Err(status(Code::FAILED_PRECONDITION, "already started"));
            }
            p.run(pid);
            Ok(())
        })?;
        self.changed.notify_all();
        let mut r = pb::StartResponse::new();
        r.pid = pid;
        Ok(r)
    }

    fn read(
        &self,
        r: pb::ReadStreamRequest,
        stderr: bool,
    ) -> ttrpc::Result<pb::ReadStreamResponse> {
        let mut st = self.st();
        loop {
            let p = st
                .containers
                .get_mut(&r.container_id)
                .and_then(|c| c.procs.get_mut(&r.exec_id))
                .ok_or_else(|| status(Code::NOT_FOUND, "process"))?;
            let mut resp = pb::ReadStreamResponse::new();
            if !stderr && !p.output.is_empty() {
                resp.data = std::mem::take(&mut p.output);
                return Ok(resp);
            }
            if p.exit.is_some() {
                return Ok(resp);
            }
            if st.closed {
                return Err(status(Code::UNAVAILABLE, "vm gone"));
            }
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

fn empty() -> ttrpc::Result<pb::Empty> {
    Ok(pb::Empty::new())
}

impl agent_ttrpc::Agent for FakeAgent {
    fn ensure_volume(
        &self,
        _: &TtrpcContext,
        r: pb::EnsureVolumeRequest,
    ) -> ttrpc::Result<pb::Empty> {
        lock(&self.volumes).entry(r.volume_id).or_default();
        empty()
    }

    fn sync_volume(&self, _: &TtrpcContext, r: pb::SyncVolumeRequest) -> ttrpc::Result<pb::Empty> {
        let id = r.volume_id.clone();
        let entries = hull_protocol::volume::from_request(r)
            .map_err(|e| status(Code::INVALID_ARGUMENT, e.to_string()))?;
        lock(&self.volumes).insert(id, entries.into_iter().map(|e| e.path).collect());
        empty()
    }

    fn remove_volume(&self, _: &TtrpcContext, r: pb::VolumeRequest) -> ttrpc::Result<pb::Empty> {
        lock(&self.volumes).remove(&r.volume_id);
        empty()
    }

    fn check(&self, _: &TtrpcContext, _: pb::CheckRequest) -> ttrpc::Result<pb::CheckResponse> {
        let mut r = pb::CheckResponse::new();
        r.agent_version = "fake".into();
        r.kernel_release = "fake-kernel".into();
        Ok(r)
    }

    fn create_container(
        &self,
        _: &TtrpcContext,
        r: pb::CreateContainerRequest,
    ) -> ttrpc::Result<pb::Empty> {
        let mut st = self.st();
        if st.containers.contains_key(&r.container_id) {
            return Err(status(Code::ALREADY_EXISTS, r.container_id));
        }
        let mut c = FakeContainer::default();
        c.procs.insert(
            String::new(),
            FakeProc {
                args: args_of_spec(&r.oci_spec_json),
                ..FakeProc::default()
            },
        );
        st.containers.insert(r.container_id, c);
        empty()
    }

    fn start_container(
        &self,
        _: &TtrpcContext,
        r: pb::ContainerRequest,
    ) -> ttrpc::Result<pb::StartResponse> {
        self.start(&r.container_id, "")
    }

    fn exec_process(
        &self,
        _: &TtrpcContext,
        r: pb::ExecProcessRequest,
    ) -> ttrpc::Result<pb::StartResponse> {
        {
            let mut st = self.st();
            let c = st
                .containers
                .get_mut(&r.container_id)
                .ok_or_else(|| status(Code::NOT_FOUND, "container"))?;
            if c.procs.contains_key(&r.exec_id) {
                return Err(status(Code::ALREADY_EXISTS, r.exec_id));
            }
            c.procs.insert(
                r.exec_id.clone(),
                FakeProc {
                    args: args_of_process(&r.oci_process_json),
                    ..FakeProc::default()
                },
            );
        }
        self.start(&r.container_id, &r.exec_id)
    }

    fn signal_process(
        &self,
        _: &TtrpcContext,
        r: pb::SignalProcessRequest,
    ) -> ttrpc::Result<pb::Empty> {
        let sig = r.signal as i32;
        {
            let mut st = self.st();
            let c = st
                .containers
                .get_mut(&r.container_id)
                .ok_or_else(|| status(Code::NOT_FOUND, "container"))?;
            for (eid, p) in c.procs.iter_mut() {
                if (r.all || *eid == r.exec_id) && p.started && p.exit.is_none() && sig != 0 {
                    p.exit = Some(128 + sig);
                }
            }
        }
        self.changed.notify_all();
        empty()
    }

    fn wait_process(
        &self,
        _: &TtrpcContext,
        r: pb::ProcessRequest,
    ) -> ttrpc::Result<pb::WaitProcessResponse> {
        let mut st = self.st();
        loop {
            let p = st
                .containers
                .get(&r.container_id)
                .and_then(|c| c.procs.get(&r.exec_id))
                .ok_or_else(|| status(Code::NOT_FOUND, "process"))?;
            if let Some(code) = p.exit {
                let mut resp = pb::WaitProcessResponse::new();
                resp.exit_status = code;
                return Ok(resp);
            }
            if st.closed {
                return Err(status(Code::UNAVAILABLE, "vm gone"));
            }
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn write_stdin(
        &self,
        _: &TtrpcContext,
        r: pb::WriteStdinRequest,
    ) -> ttrpc::Result<pb::WriteStdinResponse> {
        let mut resp = pb::WriteStdinResponse::new();
        resp.len = r.data.len() as u32;
        Ok(resp)
    }

    fn close_stdin(&self, _: &TtrpcContext, r: pb::ProcessRequest) -> ttrpc::Result<pb::Empty> {
        self.with_proc(&r.container_id, &r.exec_id, |_| Ok(()))?;
        empty()
    }

    fn read_stdout(
        &self,
        _: &TtrpcContext,
        r: pb::ReadStreamRequest,
    ) -> ttrpc::Result<pb::ReadStreamResponse> {
        self.read(r, false)
    }

    fn read_stderr(
        &self,
        _: &TtrpcContext,
        r: pb::ReadStreamRequest,
    ) -> ttrpc::Result<pb::ReadStreamResponse> {
        self.read(r, true)
    }

    fn resize_tty(&self, _: &TtrpcContext, r: pb::ResizeTtyRequest) -> ttrpc::Result<pb::Empty> {
        self.with_proc(&r.container_id, &r.exec_id, |_| Ok(()))?;
        empty()
    }

    fn remove_container(
        &self,
        _: &TtrpcContext,
        r: pb::ContainerRequest,
    ) -> ttrpc::Result<pb::Empty> {
        if self.st().containers.remove(&r.container_id).is_none() {
            return Err(status(Code::NOT_FOUND, r.container_id));
        }
        self.changed.notify_all();
        empty()
    }

    fn pause_container(
        &self,
        _: &TtrpcContext,
        r: pb::ContainerRequest,
    ) -> ttrpc::Result<pb::Empty> {
        self.with_proc(&r.container_id, "", |_| Ok(()))?;
        empty()
    }

    fn resume_container(
        &self,
        _: &TtrpcContext,
        r: pb::ContainerRequest,
    ) -> ttrpc::Result<pb::Empty> {
        self.with_proc(&r.container_id, "", |_| Ok(()))?;
        empty()
    }

    fn list_pids(
        &self,
        _: &TtrpcContext,
        r: pb::ContainerRequest,
    ) -> ttrpc::Result<pb::PidsResponse> {
        let st = self.st();
        let c = st
            .containers
            .get(&r.container_id)
            .ok_or_else(|| status(Code::NOT_FOUND, "container"))?;
        let mut resp = pb::PidsResponse::new();
        resp.pids = c
            .procs
            .values()
            .filter(|p| p.started && p.exit.is_none())
            .map(|p| p.pid)
            .collect();
        Ok(resp)
    }

    fn container_stats(
        &self,
        _: &TtrpcContext,
        r: pb::ContainerRequest,
    ) -> ttrpc::Result<pb::StatsResponse> {
        self.with_proc(&r.container_id, "", |_| Ok(()))?;
        let mut resp = pb::StatsResponse::new();
        resp.pids_current = 1;
        Ok(resp)
    }

    fn remove_process(&self, _: &TtrpcContext, r: pb::ProcessRequest) -> ttrpc::Result<pb::Empty> {
        let mut st = self.st();
        let c = st
            .containers
            .get_mut(&r.container_id)
            .ok_or_else(|| status(Code::NOT_FOUND, "container"))?;
        match c.procs.get(&r.exec_id) {
            Some(p) if p.exit.is_some() => {
                c.procs.remove(&r.exec_id);
                empty()
            }
            Some(_) => Err(status(Code::FAILED_PRECONDITION, "process is running")),
            None => Err(status(Code::NOT_FOUND, "process")),
        }
    }

    fn shutdown(&self, _: &TtrpcContext, _: pb::Empty) -> ttrpc::Result<pb::Empty> {
        // The guest powers off: the VMM process exits.
        let pid = self.vm_pid.load(Ordering::SeqCst);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        empty()
    }
}
