//! `port-forward` as kubectl 1.32 does it first: SPDY/3.1 frames inside WebSocket binary messages
//! (subprotocol `SPDY/3.1+portforward.k8s.io`). Per forwarded connection the client opens an
//! `error` and a `data` stream with the same `requestID` and `port`; once both exist we dial
//! `127.0.0.1:<port>` inside the pod's network namespace (on a thread that enters it) and copy
//! the data stream both ways; dial errors go to the error stream as text.

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
                        tasks.push(tokio::spawn(forward(netns, label, pair.port, error, data, rx, out)));
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

/// Dials the port in the pod and copies both ways; errors go to the error stream.
async fn forward(
    netns: Option<PathBuf>,
    label: String,
    port: u16,
    error: u32,
    data: u32,
    mut from_client: mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    out: mpsc::UnboundedSender<Vec<u8>>,
) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let dialed = tokio::task::spawn_blocking(move || {
        crate::network::netns::run_in_netns(netns.as_deref(), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        })
    })
    .await;
    let stream = match dialed {
        Ok(Ok(Ok(s))) => s,
        other => {
            let why = match other {
                Ok(Ok(Err(e))) => e.to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
                Ok(Ok(Ok(_))) => unreachable!(),
            };
            let text = format!(
                "error forwarding port {port} to pod {label}: failed to connect to localhost:{port} inside the pod: {why}"
            );
            let _ = out.send(spdy::data(error, 0, text.as_bytes()));
            let _ = out.send(spdy::data(error, spdy::FLAG_FIN, &[]));
            let _ = out.send(spdy::data(data, spdy::FLAG_FIN, &[]));
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
                    if out.send(spdy::data(data, 0, &buf[..n])).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = out.send(spdy::data(data, spdy::FLAG_FIN, &[]));
    };
    tokio::join!(upstream, downstream);
    let _ = out.send(spdy::data(error, spdy::FLAG_FIN, &[]));
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
    }
}
