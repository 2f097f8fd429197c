//! Capabilities: the default set, the plan taken from the OCI spec, and applying it.

use std::collections::BTreeSet;
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::LinuxCapabilities;

/// Errors while planning or applying capabilities.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    /// A capability name is not known.
    #[error("unknown capability {0:?}")]
    Unknown(String),
    /// The spec asks for capabilities the runtime itself does not hold (a host or an outer
    /// container that dropped them from its bounding set).
    #[error("process.capabilities: {0} not available to this runtime (not in its own permitted set)")]
    Unavailable(String),
    /// The kernel refused a change.
    #[error("set {set} capabilities: {source}")]
    Apply {
        /// Which set.
        set: &'static str,
        /// Cause.
        #[source]
        source: caps::errors::CapsError,
    },
}

/// The 14 capabilities Docker and containerd grant by default.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The five capability sets to give the container process, by name (`CAP_…`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CapPlan {
    /// Bounding set.
    pub bounding: BTreeSet<String>,
    /// Effective set.
    pub effective: BTreeSet<String>,
    /// Permitted set.
    pub permitted: BTreeSet<String>,
    /// Inheritable set.
    pub inheritable: BTreeSet<String>,
    /// Ambient set.
    pub ambient: BTreeSet<String>,
}

impl CapPlan {
    /// The default set as bounding, effective and permitted; inheritable and ambient empty.
    pub fn default_set() -> Self {
        let set: BTreeSet<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
        CapPlan { bounding: set.clone(), effective: set.clone(), permitted: set, ..Default::default() }
    }

    /// Every capability the kernel knows (privileged mode).
    pub fn all() -> Self {
        let set: BTreeSet<String> = caps::all().iter().map(|c| c.to_string()).collect();
        CapPlan { bounding: set.clone(), effective: set.clone(), permitted: set, ..Default::default() }
    }

    /// Takes the sets from the spec; a missing set is empty. Names are validated.
    pub fn from_oci(spec: &LinuxCapabilities) -> Result<Self, CapsError> {
        let names = |set: &Option<oci_spec::runtime::Capabilities>| -> Result<BTreeSet<String>, CapsError> {
            let mut out = BTreeSet::new();
            for cap in set.iter().flatten() {
                let name = serde_json::to_value(cap)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| format!("CAP_{cap}"));
                Capability::from_str(&name).map_err(|_| CapsError::Unknown(name.clone()))?;
                out.insert(name);
            }
            Ok(out)
        };
        Ok(CapPlan {
            bounding: names(spec.bounding())?,
            effective: names(spec.effective())?,
            permitted: names(spec.permitted())?,
            inheritable: names(spec.inheritable())?,
            ambient: names(spec.ambient())?,
        })
    }

    /// Adds and drops names (Kubernetes `securityContext.capabilities`); `ALL` drops everything.
    pub fn add_drop(&mut self, add: &[String], drop: &[String]) {
        let norm = |n: &String| {
            if n.starts_with("CAP_") { n.to_uppercase() } else { format!("CAP_{}", n.to_uppercase()) }
        };
        for set in [&mut self.bounding, &mut self.effective, &mut self.permitted] {
            for d in drop {
                if d.eq_ignore_ascii_case("ALL") {
                    set.clear();
                } else {
                    set.remove(&norm(d));
                }
            }
            for a in add {
                set.insert(norm(a));
            }
        }
    }
}

fn to_set(names: &BTreeSet<String>) -> CapsHashSet {
    names.iter().filter_map(|n| Capability::from_str(n).ok()).collect()
}

/// Drops every capability not in the plan's bounding set (needs CAP_SETPCAP; do it before setuid).
pub fn apply_bounding(plan: &CapPlan) -> Result<(), CapsError> {
    let keep = to_set(&plan.bounding);
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|source| CapsError::Apply { set: "bounding", source })?;
        }
    }
    Ok(())
}

/// Sets effective, permitted, inheritable and ambient sets to the plan (after setuid).
pub fn apply_sets(plan: &CapPlan) -> Result<(), CapsError> {
    let permitted = to_set(&plan.permitted);
    // A set may only shrink: name what is missing rather than report capset's EPERM.
    if let Ok(held) = caps::read(None, CapSet::Permitted) {
        let wanted = [&plan.permitted, &plan.effective, &plan.inheritable].into_iter().flat_map(to_set);
        let mut missing: Vec<String> = wanted.filter(|c| !held.contains(c)).map(|c| c.to_string()).collect();
        missing.sort();
        missing.dedup();
        match missing.len() {
            0 => {}
            1 => return Err(CapsError::Unavailable(format!("{} is", missing[0]))),
            _ => return Err(CapsError::Unavailable(format!("{} are", missing.join(", ")))),
        }
    }
    let effective: CapsHashSet = to_set(&plan.effective).intersection(&permitted).copied().collect();
    caps::set(None, CapSet::Effective, &effective)
        .map_err(|source| CapsError::Apply { set: "effective", source })?;
    caps::set(None, CapSet::Inheritable, &to_set(&plan.inheritable))
        .map_err(|source| CapsError::Apply { set: "inheritable", source })?;
    caps::set(None, CapSet::Permitted, &permitted)
        .map_err(|source| CapsError::Apply { set: "permitted", source })?;
    caps::clear(None, CapSet::Ambient).map_err(|source| CapsError::Apply { set: "ambient", source })?;
    // The kernel only allows ambient caps that are permitted and inheritable; runc skips the
    // others too (its example spec lists ambient caps without inheritable ones).
    let inheritable = to_set(&plan.inheritable);
    for cap in to_set(&plan.ambient).into_iter().filter(|c| inheritable.contains(c) && permitted.contains(c))
    {
        caps::raise(None, CapSet::Ambient, cap)
            .map_err(|source| CapsError::Apply { set: "ambient", source })?;
    }
    Ok(())
}

/// The capability mask the kernel reports in `/proc/<pid>/status` (`CapEff:` etc.) for a set.
pub fn mask(names: &BTreeSet<String>) -> u64 {
    to_set(names).iter().fold(0u64, |m, c| m | c.bitmask())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_has_empty_inheritable_and_ambient() {
        let plan = CapPlan::default_set();
        assert_eq!(plan.bounding.len(), 14);
        assert!(plan.inheritable.is_empty() && plan.ambient.is_empty());
        assert_eq!(mask(&plan.effective), 0x00000000a80425fb);
    }

    #[test]
    fn reads_oci_sets_and_rejects_unknown() {
        let spec: LinuxCapabilities = serde_json::from_str(
            r#"{"bounding":["CAP_KILL"],"effective":["CAP_KILL"],"permitted":["CAP_KILL"]}"#,
        )
        .unwrap();
        let plan = CapPlan::from_oci(&spec).unwrap();
        assert_eq!(plan.bounding.iter().collect::<Vec<_>>(), vec!["CAP_KILL"]);
        assert!(plan.ambient.is_empty());
    }

    #[test]
    fn add_and_drop_normalise_names() {
        let mut plan = CapPlan::default_set();
        plan.add_drop(&["sys_admin".into()], &["ALL".into()]);
        assert_eq!(plan.effective.iter().collect::<Vec<_>>(), vec!["CAP_SYS_ADMIN"]);
    }
}
