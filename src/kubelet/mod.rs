//! The node agent: pod state machine, sync loop, volumes, probes, logs/exec.
