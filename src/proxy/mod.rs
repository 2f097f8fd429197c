//! Service rules rendered as iptables-restore input and applied atomically.
