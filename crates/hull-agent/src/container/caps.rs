//! Capabilities of a container process from the OCI spec (bounding, permitted, inheritable,
//! effective, ambient), applied around the uid switch the way runc does; no spec set = unchanged.

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, Process};

use super::wire::HelperError;

/// Drop the bounding set to the spec's and keep permitted caps across the coming setuid.
pub fn before_user_switch(p: &Process) -> Result<(), HelperError> {
    let Some(c) = p.capabilities() else {
        return Ok(());
    };
    let keep = to_set(c.bounding());
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| HelperError::internal(format!("drop {cap} from bounding set"), e))?;
        }
    }
    nix::sys::prctl::set_keepcaps(true).map_err(|e| HelperError::internal("PR_SET_KEEPCAPS", e))
}

/// After setuid: set permitted, inheritable, effective and ambient to the spec's.
pub fn after_user_switch(p: &Process) -> Result<(), HelperError> {
    let Some(c) = p.capabilities() else {
        return Ok(());
    };
    let set = |which: CapSet, value: &CapsHashSet| {
        caps::set(None, which, value)
            .map_err(|e| HelperError::invalid(format!("set {which:?} capabilities: {e}")))
    };
    // Each capset must keep effective within permitted: shrink effective first, set
    // inheritable while permitted is still wide, and narrow permitted last.
    set(CapSet::Effective, &to_set(c.effective()))?;
    set(CapSet::Inheritable, &to_set(c.inheritable()))?;
    set(CapSet::Permitted, &to_set(c.permitted()))?;
    let ambient = to_set(c.ambient());
    if !ambient.is_empty() {
        set(CapSet::Ambient, &ambient)?;
    }
    nix::sys::prctl::set_keepcaps(false).map_err(|e| HelperError::internal("PR_SET_KEEPCAPS", e))
}

/// The spec's names as a set; names this build does not know are skipped (as runc does).
fn to_set(names: &Option<Capabilities>) -> CapsHashSet {
    names
        .iter()
        .flatten()
        .filter_map(|c| {
            let name = serde_json::to_value(c).ok()?.as_str()?.to_string();
            Capability::from_str(&name).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Capability as Oci;

    #[test]
    fn names_map_to_caps() {
        let s: Capabilities = [Oci::Chown, Oci::NetBindService, Oci::Kill]
            .into_iter()
            .collect();
        let set = to_set(&Some(s));
        assert!(set.contains(&Capability::CAP_CHOWN));
        assert!(set.contains(&Capability::CAP_NET_BIND_SERVICE));
        assert_eq!(set.len(), 3);
        assert!(to_set(&None).is_empty());
    }
}
