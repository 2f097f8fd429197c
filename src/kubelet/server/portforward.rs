//! `port-forward` as kubectl 1.32 does it first: SPDY/3.1 frames inside WebSocket binary messages
//! (subprotocol `SPDY/3.1+portforward.k8s.io`). Per forwarded connection the client opens an
//! `error` and a `data` stream with the same `requestID` and `port`; once both exist we dial
//! `127.0.0.1:<port>` inside the pod's network namespace (on a thread that enters it) and copy
//! the data stream both ways; dial errors go to the error stream as text. Other clients get the
//! channel protocol ([`run_channels`]); both share one forwarder per connection.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::kubelet::spdy::{self, Frame, HeaderCompressor, HeaderDecompressor};

pub const PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// The channel protocol other clients (kube-rs) use, with the ports in the query (`port=80,443`).
pub const CHANNEL_PROTOCOL: &str = "v4.channel.k8s.io";

/// Ports of a channel-protocol request: every `port` value, comma separated or repeated.
pub fn parse_ports(pairs: &[(String, String)]) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (_, v) in pairs.iter().filter(|(k, _)| k == "port" || k == "ports") {
        for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => return Err(format!("invalid port {p:?}")),
            }
        }
    }
    Ok(ports)
}

/// Serves the channel protocol: port `i` is data channel `2i` and error channel `2i+1`, each
/// starting with the port as a little-endian u16; one connection per port for the session.
pub async fn run_channels(socket: WebSocket, netns: Option<PathBuf>, pod_label: String, ports: Vec<u16>) {
    let (mut sink, mut incoming) = socket.split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            if sink.send(Message::Binary(msg.into())).await.is_err() {
                return;
            }
        }
        let _ = sink.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
    });
    let mut to_ports = Vec::new();
    let mut tasks = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let (data, error) = ((2 * i) as u8, (2 * i + 1) as u8);
        for ch in [data, error] {
            let mut first = vec![ch];
            first.extend_from_slice(&port.to_le_bytes());
            let _ = out_tx.send(first);
        }
        let (tx, rx) = mpsc::unbounded_channel::<Option<Vec<u8>>>();
        to_ports.push(tx);
        let out = out_tx.clone();
        let emit: Emit = Box::new(move |e| {
            let msg = match e {
                Event::Data(b) => [&[data][..], &b].concat(),
                Event::Error(t) => [&[error][..], t.as_bytes()].concat(),
                Event::DataEnd | Event::ErrorEnd => return true,
            };
            out.send(msg).is_ok()
        });
        tasks.push(tokio::spawn(forward(netns.clone(), pod_label.clone(), *port, rx, emit)));
    }
    while let Some(Ok(msg)) = incoming.next().await {
        let data = match msg {
            Message::Binary(d) => d.to_vec(),
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&channel, payload)) = data.split_first() else { continue };
        if channel % 2 == 0
            && let Some(tx) = to_ports.get(usize::from(channel / 2))
            && !payload.is_empty()
        {
            let _ = tx.send(Some(payload.to_vec()));
        }
    }
    for tx in &to_ports {
        let _ = tx.send(None);
    }
    for t in &tasks {
        t.abort();
    }
    drop(out_tx);
    let _ = writer.await;
}

/// A forwarded connection's pair of streams, as they arrive.
#[derive(Debug, Default)]
struct Pair {
    port: u16,
    error: Option<u32>,
    data: Option<u32>,
    /// Data received on the data stream before the dial finished.
    data_tx: Option<mpsc::UnboundedSender<Option<Vec<u8>>>>,
    data_rx: Option<mpsc::UnboundedReceiver<Option<Vec<u8>>>>,
    started: bool,
}

/// The pairing key: `requestID`, or (old clients) the error stream's id.
fn request_key(headers: &[(String, String)], stream: u32, kind: &str) -> String {
    match spdy::header(headers, "requestid") {
        Some(id) => id.to_string(),
        None if kind == "data" => stream.saturating_sub(2).to_string(),
        None => stream.to_string(),
    }
}

/// Serves one port-forward session on an upgraded socket until the client goes.
pub async fn run(socket: WebSocket, netns: Option<PathBuf>, pod_label: String) {
    let (mut sink, mut incoming) = socket.split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if sink.send(Message::Binary(frame.into())).await.is_err() {
                return;
            }
        }
        let _ = sink.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
    });
    let mut compressor = HeaderCompressor::new();
    let mut decompressor = HeaderDecompressor::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // Data stream id → where its bytes go.
    let mut data_streams: HashMap<u32, String> = HashMap::new();
    let mut tasks = Vec::new();
    'session: while let Some(Ok(msg)) = incoming.next().await {
        match msg {
            Message::Binary(d) => buf.extend_from_slice(&d),
            Message::Close(_) => break,
            _ => continue,
        }
        loop {
            let (frame, used) = match spdy::decode(&buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("port-forward {pod_label}: {e}");
                    break 'session;
                }
            };
            buf.drain(..used);
            match frame {
                Frame::SynStream { stream, headers, .. } => {
                    let headers = match decompressor.decompress(&headers) {
                        Ok(h) => h,
                        Err(e) => {
                            tracing::debug!("port-forward {pod_label}: {e}");
                            break 'session;
                        }
                    };
                    let kind = spdy::header(&headers, "streamtype").unwrap_or_default().to_string();
                    let port =
                        spdy::header(&headers, "port").and_then(|p| p.parse::<u16>().ok()).unwrap_or(0);
                    let Ok(reply) = compressor.compress(&[]) else { break 'session };
                    let _ = out_tx.send(spdy::syn_reply(stream, 0, &reply));
                    if port == 0 || (kind != "error" && kind != "data") {
                        let _ = out_tx.send(spdy::rst_stream(stream, spdy::RST_PROTOCOL_ERROR));
                        continue;
                    }
                    let key = request_key(&headers, stream, &kind);
                    let pair = pairs.entry(key.clone()).or_default();
                    pair.port = port;
                    if kind == "error" {
                        pair.error = Some(stream);
                    } else {
                        pair.data = Some(stream);
                        let (tx, rx) = mpsc::unbounded_channel();
                        pair.data_tx = Some(tx);
                        pair.data_rx = Some(rx);
                        data_streams.insert(stream, key.clone());
                    }
                    if let (Some(error), Some(data), false) = (pair.error, pair.data, pair.started) {
                        pair.started = true;
                        let rx = pair.data_rx.take().expect("set with data");
                        let out = out_tx.clone();
                        let netns = netns.clone();
                        let label = pod_label.clone();
                        let emit: Emit = Box::new(move |e| {
                            let frame = match e {
                                Event::Data(b) => spdy::data(data, 0, &b),
                                Event::DataEnd => spdy::data(data, spdy::FLAG_FIN, &[]),
                                Event::Error(t) => spdy::data(error, 0, t.as_bytes()),
                                Event::ErrorEnd => spdy::data(error, spdy::FLAG_FIN, &[]),
                            };
                            out.send(frame).is_ok()
                        });
                        tasks.push(tokio::spawn(forward(netns, label, pair.port, rx, emit)));
                    }
                }
                Frame::Data { stream, flags, data } => {
                    let Some(key) = data_streams.get(&stream) else { continue };
                    if let Some(tx) = pairs.get(key).and_then(|p| p.data_tx.as_ref()) {
                        if !data.is_empty() {
                            let _ = tx.send(Some(data));
                        }
                        if flags & spdy::FLAG_FIN != 0 {
                            let _ = tx.send(None);
                        }
                    }
                }
                Frame::RstStream { stream, .. } => {
                    if let Some(key) = data_streams.remove(&stream)
                        && let Some(p) = pairs.remove(&key)
                        && let Some(tx) = p.data_tx
                    {
                        let _ = tx.send(None);
                    }
                }
                Frame::Ping { id } => {
                    let _ = out_tx.send(spdy::ping(id));
                }
                Frame::GoAway { .. } => break 'session,
                Frame::Headers { headers, .. } | Frame::SynReply { headers, .. } => {
                    // Keep the inflate stream in step even though we use nothing from these.
                    if decompressor.decompress(&headers).is_err() {
                        break 'session;
                    }
                }
                Frame::Ignored { .. } => {}
            }
        }
    }
    for t in &tasks {
        t.abort();
    }
    drop(out_tx);
    let _ = writer.await;
}

/// What a forwarded connection produces, framed by the protocol in use.
#[derive(Debug)]
enum Event {
    /// Bytes from the pod's port.
    Data(Vec<u8>),
    /// The pod's side closed.
    DataEnd,
    /// Why the dial failed (text).
    Error(String),
    /// No more errors.
    ErrorEnd,
}

/// Sends an event; false once the session is gone.
type Emit = Box<dyn Fn(Event) -> bool + Send + Sync>;

/// Dials the port in the pod and copies both ways; errors go to the error stream.
async fn forward(
    netns: Option<PathBuf>,
    label: String,
    port: u16,
    mut from_client: mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    emit: Emit,
) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let dialed = tokio::task::spawn_blocking(move || {
        crate::network::netns::run_in_netns(netns.as_deref(), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        })
    })
    .await;
    let why = match dialed {
        Ok(Ok(Ok(s))) => Ok(s),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let stream = match why {
        Ok(s) => s,
        Err(why) => {
            emit(Event::Error(format!(
                "error forwarding port {port} to pod {label}: failed to connect to localhost:{port} inside the pod: {why}"
            )));
            emit(Event::ErrorEnd);
            emit(Event::DataEnd);
            return;
        }
    };
    let _ = stream.set_nonblocking(true);
    let Ok(tcp) = tokio::net::TcpStream::from_std(stream) else { return };
    let (mut rd, mut wr) = tcp.into_split();
    let upstream = async {
        while let Some(Some(chunk)) = from_client.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    let downstream = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !emit(Event::Data(buf[..n].to_vec())) {
                        return;
                    }
                }
            }
        }
        emit(Event::DataEnd);
    };
    tokio::join!(upstream, downstream);
    emit(Event::ErrorEnd);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_by_request_id_or_stream_ids() {
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
        };
        assert_eq!(request_key(&h(&[("requestid", "4")]), 9, "data"), "4");
        assert_eq!(request_key(&h(&[]), 1, "error"), "1");
        assert_eq!(request_key(&h(&[]), 3, "data"), "1");
        assert_eq!(parse_ports(&h(&[("port", "80,443"), ("port", "8080")])), Ok(vec![80, 443, 8080]));
        assert!(parse_ports(&h(&[("port", "0")])).is_err());
    }
}
