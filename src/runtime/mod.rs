//! The container runtime: config, namespaces, rootfs and mounts, cgroups, security, processes.
