//! Root end-to-end tests: the real kubectl's `logs`, `exec` and `port-forward` through a real
//! rkube-master (HTTPS) to a node's HTTPS API (`rkubelet serve-api`, mutual TLS) and real
//! containers of a pod started with `rkubelet run` on a test node. The Node and the Pod are
//! registered in the API by hand (InternalIP 127.0.0.1, the node server's port).

#[path = "support/master.rs"]
mod master;
#[path = "support/network.rs"]
mod network;
#[path = "support/pod.rs"]
mod pod;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use master::{Backend, Master, free_port};
use pod::{IMAGE, PodNode};

/// A child process killed (SIGKILL) and reaped on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issues a certificate signed by the master's CA into `dir/<stem>.crt|key`.
fn issue(
    data_dir: &Path,
    dir: &Path,
    stem: &str,
    cn: &str,
    ips: &[&str],
    server: bool,
) -> (PathBuf, PathBuf) {
    let pki = rkube::master::tls::Pki::at(data_dir);
    let ca = rkube::master::tls::ClusterCa::load(&pki).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(ips.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![if server {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    }];
    let cert = params.signed_by(&key, ca.issuer()).unwrap();
    let (c, k) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// Reads `child`'s stdout lines on a thread; returns a receiver of them.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a line containing `what`.
fn wait_line(rx: &std::sync::mpsc::Receiver<String>, what: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains(what) => return line,
            Ok(line) => seen.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    panic!("no line with {what:?}; saw {seen:?}");
}

struct Cluster {
    // Dropped in order: the node server, the node's pods, then the master.
    _server: Killed,
    node: PodNode,
    master: Master,
    server_port: u16,
    certs: PathBuf,
}

fn web_pod(node_name: Option<&str>) -> String {
    let node_line = node_name.map(|n| format!("  nodeName: {n}\n")).unwrap_or_default();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: default}}
spec:
{node_line}  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www && echo hello-page > /www/index.html && httpd -p 80 -h /www && echo line1 && echo line2 && while true; do if [ -f /tmp/more ]; then rm /tmp/more; echo late-line; fi; sleep 0.2; done"]
"#
    )
}

fn setup(n: u8) -> Cluster {
    let node_name = format!("n{n}");
    let node = PodNode::new(n);
    let out = node.run_yaml("web", &web_pod(None), false);
    assert!(out.status.success(), "run: {}", String::from_utf8_lossy(&out.stderr));
    let master = Master::start(Backend::embedded(), &[]);
    let data = master.dir.path().join("data");
    let certs = master.dir.path().join("node-certs");
    std::fs::create_dir_all(&certs).unwrap();
    let (cert, key) =
        issue(&data, &certs, "serving", &format!("system:node:{node_name}"), &["127.0.0.1"], true);
    let mut child = Command::new(env!("CARGO_BIN_EXE_rkubelet"))
        .arg("serve-api")
        .arg("--listen=127.0.0.1:0")
        .arg(format!("--tls-cert-file={}", cert.display()))
        .arg(format!("--tls-private-key-file={}", key.display()))
        .arg(format!("--client-ca-file={}", data.join("pki/ca.crt").display()))
        .args(node.flags())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start rkubelet serve-api");
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut first).unwrap();
    let server = Killed(child);
    let server_port: u16 =
        first.trim().rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| {
            panic!("serve-api did not start: {first:?}");
        });
    let node_yaml = format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {node_name}}}\n");
    master.ok(&["apply", "-f", &master.write("node.yaml", &node_yaml)]);
    let status = format!(
        r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}},{{"type":"Hostname","address":"{node_name}"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{server_port}}}}}}}}}"#
    );
    master.ok(&["patch", "node", &node_name, "--subresource=status", "--type=merge", "-p", &status]);
    master.ok(&["apply", "-f", &master.write("web.yaml", &web_pod(Some(&node_name)))]);
    master.ok(&[
        "patch",
        "pod",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ]);
    Cluster { _server: server, node, master, server_port, certs }
}

#[test]
fn kubectl_logs_exec_and_port_forward_reach_the_container() {
    let c = setup(71);
    let m = &c.master;

    // logs, --tail, errors
    let logs = m.eventually(&["logs", "web"], Duration::from_secs(10), |o| o.contains("line2"));
    assert_eq!(logs, "line1\nline2\n");
    assert_eq!(m.ok(&["logs", "web", "--tail=1"]), "line2\n");
    assert_eq!(m.ok(&["logs", "web", "-c", "c", "--limit-bytes=3"]), "lin");
    let ts = m.ok(&["logs", "web", "--timestamps", "--tail=1"]);
    assert!(ts.ends_with("Z line2\n") && ts.starts_with("20"), "{ts}");
    let err = m.fails(&["logs", "web", "-c", "nope"]);
    assert!(err.contains("container nope is not valid for pod web"), "{err}");
    let err = m.fails(&["logs", "web", "--previous"]);
    assert!(err.contains(r#"previous terminated container "c" in pod "web" not found"#), "{err}");
    assert!(m.fails(&["logs", "nosuch"]).contains(r#"pods "nosuch" not found"#));

    // logs -f sees a line written after it started
    let mut follow =
        m.kubectl_cmd(&["logs", "-f", "web"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let rx = lines_of(&mut follow);
    let follow = Killed(follow);
    wait_line(&rx, "line2", Duration::from_secs(10));
    c.node.exec("web", "c", &["touch", "/tmp/more"]);
    wait_line(&rx, "late-line", Duration::from_secs(10));
    drop(follow);

    // exec: exit codes, stdout/stderr, stdin
    let out = m.kubectl(&["exec", "web", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let out = m.kubectl(&["exec", "web", "--", "sh", "-c", "echo out; echo err >&2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let mut cat = m
        .kubectl_cmd(&["exec", "-i", "web", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cat.stdin.take().unwrap().write_all(b"ping-stdin\nsecond\n").unwrap();
    let out = cat.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ping-stdin\nsecond\n");
    let err = m.fails(&["exec", "nosuch", "--", "true"]);
    assert!(err.contains(r#"pods "nosuch" not found"#), "{err}");

    // exec -it, with a terminal from script(1)
    let kubectl_line = format!(
        "HOME={} KUBECONFIG={} /usr/bin/kubectl exec -it web -- sh -c 'tty; exit 4'",
        m.dir.path().join("home").display(),
        m.kubeconfig().display()
    );
    let out = Command::new("script")
        .args(["-qec", &kubectl_line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert_eq!(out.status.code(), Some(4), "{text}");

    // port-forward
    let local = free_port();
    let mut pf = m
        .kubectl_cmd(&["port-forward", "pod/web", &format!("{local}:80")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut pf);
    let pf = Killed(pf);
    wait_line(&rx, "Forwarding from 127.0.0.1", Duration::from_secs(15));
    for _ in 0..2 {
        let mut s = TcpStream::connect(("127.0.0.1", local)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut page = String::new();
        s.read_to_string(&mut page).unwrap();
        assert!(page.starts_with("HTTP/1.") && page.contains("hello-page"), "{page}");
    }
    drop(pf);

    // A port nothing listens on: the dial error reaches kubectl, the local connection closes.
    let local = free_port();
    let mut pf = m
        .kubectl_cmd(&["port-forward", "pod/web", &format!("{local}:81")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut pf);
    let stderr = pf.stderr.take().unwrap();
    let (etx, erx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if etx.send(line).is_err() {
                return;
            }
        }
    });
    let pf = Killed(pf);
    wait_line(&rx, "Forwarding from 127.0.0.1", Duration::from_secs(15));
    let mut s = TcpStream::connect(("127.0.0.1", local)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    wait_line(&erx, "error forwarding port 81", Duration::from_secs(10));
    drop(pf);
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// An exec WebSocket (v5) to pod `web` through the master with the admin token.
async fn exec_ws(m: &Master, ca: &[u8], token: &str, query: &str) -> Ws {
    ws_to(m, ca, token, &format!("exec?{query}"), "v5.channel.k8s.io").await
}

/// A WebSocket to subresource `sub` (with its query) of pod `web` through the master.
async fn ws_to(m: &Master, ca: &[u8], token: &str, sub: &str, protocol: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", m.port)).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let url = format!("wss://127.0.0.1:{}/api/v1/namespaces/default/pods/web/{sub}", m.port);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("Authorization", format!("Bearer {}", token.trim()).parse().unwrap());
    req.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), protocol);
    ws
}

#[test]
fn tty_exec_over_websocket_follows_resizes_and_node_refuses_other_clients() {
    let c = setup(72);
    let m = &c.master;
    let token = std::fs::read_to_string(m.dir.path().join("data/pki/admin.token")).unwrap();
    let ca = std::fs::read(m.dir.path().join("data/pki/ca.crt")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // Through the master, as kubectl does, but driving the channels ourselves.
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let mut ws = exec_ws(m, &ca, &token, "command=sh&command=-c&command=sleep%201%3B%20stty%20size%3B%20exit%205&stdin=true&stdout=true&tty=true&container=c").await;
        let mut resize = vec![4u8];
        resize.extend_from_slice(br#"{"Width":123,"Height":45}"#);
        ws.send(Message::Binary(resize.into())).await.unwrap();
        let (mut stdout, mut status) = (Vec::new(), Vec::new());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, ws.next()).await {
            match msg.unwrap() {
                Message::Binary(d) if d.first() == Some(&1) => stdout.extend_from_slice(&d[1..]),
                Message::Binary(d) if d.first() == Some(&3) => status.extend_from_slice(&d[1..]),
                Message::Close(_) => break,
                _ => {}
            }
        }
        let stdout = String::from_utf8_lossy(&stdout);
        assert!(stdout.contains("45 123"), "{stdout}");
        let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "5");

        // A client that goes away hangs the terminal up: its processes get SIGHUP.
        let mut ws = exec_ws(m, &ca, &token, "command=sh&command=-c&command=echo%20started%3B%20exec%20sleep%20123&stdin=true&stdout=true&tty=true&container=c").await;
        while let Some(Ok(msg)) = ws.next().await {
            if matches!(&msg, Message::Binary(d) if String::from_utf8_lossy(d).contains("started")) {
                break;
            }
        }
        assert!(c.node.exec("web", "c", &["ps"]).contains("sleep 123"));
        drop(ws);
        let gone = pod::wait_for(Duration::from_secs(10), || {
            !c.node.exec("web", "c", &["ps"]).contains("sleep 123")
        });
        assert!(gone, "the tty exec's process survived its client");

        // Port-forward over the channel protocol (kube-rs clients): the port first on both
        // channels, then the data.
        let mut pf = ws_to(m, &ca, &token, "portforward?ports=80", "v4.channel.k8s.io").await;
        let mut firsts = Vec::new();
        while firsts.len() < 2 {
            if let Some(Ok(Message::Binary(d))) = pf.next().await {
                firsts.push(d.to_vec());
            }
        }
        assert_eq!(firsts, [vec![0, 80, 0], vec![1, 80, 0]]);
        pf.send(Message::Binary(b"\0GET /index.html HTTP/1.0\r\n\r\n".to_vec().into())).await.unwrap();
        let mut page = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&page).contains("hello-page") {
            match tokio::time::timeout_at(deadline, pf.next()).await {
                Ok(Some(Ok(Message::Binary(d)))) if d.first() == Some(&0) => page.extend_from_slice(&d[1..]),
                Ok(Some(Ok(_))) => {}
                other => panic!("no page over the channel protocol: {other:?}; got {page:?}"),
            }
        }
        drop(pf);

        // The node itself: only the master's client certificate is admitted.
        let data = m.dir.path().join("data");
        let (rogue_c, rogue_k) = issue(&data, &c.certs, "rogue", "someone-else", &[], false);
        let url = format!("https://127.0.0.1:{}/healthz", c.server_port);
        let client = |identity: Option<(&Path, &Path)>| {
            let mut b = reqwest::Client::builder()
                .use_rustls_tls()
                .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap());
            if let Some((cert, key)) = identity {
                let mut pem = std::fs::read(cert).unwrap();
                pem.extend(std::fs::read(key).unwrap());
                b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
            }
            b.build().unwrap()
        };
        let none = client(None).get(&url).send().await.unwrap();
        assert_eq!(none.status(), 401);
        let rogue = client(Some((&rogue_c, &rogue_k))).get(&url).send().await.unwrap();
        assert_eq!(rogue.status(), 403);
        let pki = data.join("pki");
        let master_cert = (pki.join("kubelet-client.crt"), pki.join("kubelet-client.key"));
        let ok = client(Some((&master_cert.0, &master_cert.1))).get(&url).send().await.unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.text().await.unwrap(), "ok");
    });

    // Errors as kube-apiserver gives them: an unscheduled pod, an unreachable node.
    let lonely = "apiVersion: v1\nkind: Pod\nmetadata: {name: lonely}\nspec:\n  nodeSelector: {nowhere: \"true\"}\n  \
                  containers:\n  - {name: c, image: busybox:test}\n";
    m.ok(&["apply", "-f", &m.write("lonely.yaml", lonely)]);
    let err = m.fails(&["logs", "lonely"]);
    assert!(err.contains("pod lonely does not have a host assigned"), "{err}");
    let dead_port = free_port();
    m.ok(&["apply", "-f", &m.write("dead.yaml", "apiVersion: v1\nkind: Node\nmetadata: {name: dead}\n")]);
    let status = format!(
        r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{dead_port}}}}}}}}}"#
    );
    m.ok(&["patch", "node", "dead", "--subresource=status", "--type=merge", "-p", &status]);
    let orphan = "apiVersion: v1\nkind: Pod\nmetadata: {name: orphan}\nspec:\n  nodeName: dead\n  \
                  containers:\n  - {name: c, image: busybox:test}\n";
    m.ok(&["apply", "-f", &m.write("orphan.yaml", orphan)]);
    let err = m.fails(&["logs", "orphan"]);
    assert!(err.contains("error dialing backend"), "{err}");
}
