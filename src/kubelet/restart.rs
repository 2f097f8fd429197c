//! What the restart policy says about a container that exited. Pure.

/// A pod's `restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// Parses the manifest value; `None` (unset) means Always.
    pub fn parse(value: Option<&str>) -> Result<RestartPolicy, String> {
        match value {
            None | Some("Always") => Ok(RestartPolicy::Always),
            Some("OnFailure") => Ok(RestartPolicy::OnFailure),
            Some("Never") => Ok(RestartPolicy::Never),
            Some(other) => {
                Err(format!("spec.restartPolicy: unsupported value {other:?}: Always, OnFailure or Never"))
            }
        }
    }

    /// Whether a regular container that exited with `exit_code` is started again.
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }

    /// Whether a failed init container is retried (Kubernetes: unless the policy is Never).
    pub fn retries_init(self) -> bool {
        self != RestartPolicy::Never
    }

    /// Whether a pod whose sandbox died (with its containers) gets a new one and starts over
    /// (Kubernetes: unless the policy is Never; a sandbox dies only once containers ran).
    pub fn recreates_sandbox(self) -> bool {
        self != RestartPolicy::Never
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        assert!(RestartPolicy::Always.restarts(0));
        assert!(RestartPolicy::OnFailure.restarts(137));
        assert!(!RestartPolicy::OnFailure.restarts(0));
        assert!(!RestartPolicy::Never.restarts(1));
        assert!(!RestartPolicy::Never.retries_init());
        assert!(RestartPolicy::OnFailure.recreates_sandbox());
        assert!(!RestartPolicy::Never.recreates_sandbox());
        assert_eq!(RestartPolicy::parse(None), Ok(RestartPolicy::Always));
        assert!(RestartPolicy::parse(Some("always")).unwrap_err().contains("spec.restartPolicy"));
    }
}
