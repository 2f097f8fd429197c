//! Running one probe check: `exec` through the runtime, `httpGet` and `tcpSocket` from inside the
//! pod's network namespace (so they reach the pod on its own addresses, like the kubelet does from
//! the node).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::network::netns::run_in_netns;
use crate::runtime::{ExecRequest, Runtime};

/// Resolves a probe port (a number, or a named container port).
fn port(value: &IntOrString, named: &[(String, i32)]) -> Option<u16> {
    match value {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(s) => s
            .parse()
            .ok()
            .or_else(|| named.iter().find(|(n, _)| n == s).and_then(|(_, p)| u16::try_from(*p).ok())),
    }
}

/// Runs the check of `probe` once; `true` = success.
pub fn check(
    probe: &Probe,
    runtime: &Runtime,
    id: &str,
    netns: Option<&Path>,
    pod_ip: Ipv4Addr,
    named_ports: &[(String, i32)],
) -> bool {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(exec) = &probe.exec {
        let args = exec.command.clone().unwrap_or_default();
        if args.is_empty() {
            return false;
        }
        return exec_with_timeout(runtime, id, args, timeout);
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = port(&tcp.port, named_ports) else { return false };
        let host = tcp.host.as_deref().and_then(|h| h.parse().ok()).unwrap_or(pod_ip);
        return run_in_netns(netns, || {
            TcpStream::connect_timeout(&SocketAddr::from((host, port)), timeout).is_ok()
        })
        .unwrap_or(false);
    }
    if let Some(http) = &probe.http_get {
        let Some(port) = http.port_as(named_ports) else { return false };
        let host = http.host.as_deref().and_then(|h| h.parse().ok()).unwrap_or(pod_ip);
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        return run_in_netns(netns, || http_status(host, port, &path, timeout))
            .ok()
            .flatten()
            .is_some_and(|s| (200..400).contains(&s));
    }
    false
}

/// An exec probe bounded by its `timeoutSeconds`, as the kubelet does: past it the probe's
/// process is killed and the check fails, so a hung command never stalls the node's other probes.
fn exec_with_timeout(runtime: &Runtime, id: &str, args: Vec<String>, timeout: Duration) -> bool {
    let pid_file = runtime.root.join(id).join(format!("probe-{}.pid", uuid::Uuid::new_v4().simple()));
    let req = ExecRequest { args, pid_file: Some(pid_file.clone()), ..Default::default() };
    let (done, outcome) = std::sync::mpsc::channel();
    let (runtime, container) = (runtime.clone(), id.to_string());
    std::thread::spawn(move || {
        let _ = done.send(runtime.exec(&container, &req));
    });
    let ok = match outcome.recv_timeout(timeout) {
        Ok(result) => result.is_ok_and(|code| code == 0),
        Err(_) => {
            // The exec returns once its process is gone; the waiting thread then ends.
            if let Some(pid) =
                std::fs::read_to_string(&pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            tracing::info!("container {id}: exec probe timed out after {timeout:?}");
            false
        }
    };
    let _ = std::fs::remove_file(&pid_file);
    ok
}

trait PortOf {
    fn port_as(&self, named: &[(String, i32)]) -> Option<u16>;
}

impl PortOf for k8s_openapi::api::core::v1::HTTPGetAction {
    fn port_as(&self, named: &[(String, i32)]) -> Option<u16> {
        port(&self.port, named)
    }
}

/// Sends `GET path` and returns the status code.
pub fn http_status(host: Ipv4Addr, port: u16, path: &str, timeout: Duration) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::from((host, port)), timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.32\r\n\r\n").ok()?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).ok()?;
    parse_status(&head[..n])
}

/// The status code of an HTTP status line.
pub fn parse_status(line: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_ports() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status(b"garbage"), None);
        let named = vec![("http".to_string(), 8080)];
        assert_eq!(port(&IntOrString::String("http".into()), &named), Some(8080));
        assert_eq!(port(&IntOrString::Int(80), &named), Some(80));
        assert_eq!(port(&IntOrString::String("nope".into()), &named), None);
    }
}
