//! containerd-shim-hull-v2: entry point; the shim lifecycle (start/delete/serve) comes from
//! the containerd-shim crate, the task service maps containerd's task API onto hull-runtime.

mod error;
mod events;
mod logging;
mod pod;
mod pod_config;
mod process;
mod rootfs;
mod shim;
mod socket;
mod task;
#[cfg(test)]
use hull_protocol::test_support;

fn main() {
    let config = containerd_shim::Config {
        // Logging is ours (tracing), helpers are reaped by hull-runtime's own watchers.
        no_setup_logger: true,
        default_log_level: "info".to_string(),
        no_reaper: true,
        no_sub_reaper: true,
    };
    containerd_shim::run::<shim::HullShim>(shim::RUNTIME_ID, Some(config));
}
