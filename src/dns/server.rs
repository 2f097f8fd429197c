//! The DNS server: hickory-server answers from the current [`Zone`] over UDP and TCP, and forwards
//! names outside the cluster zone to the node's own nameservers (`/etc/resolv.conf`).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Header, HeaderCounts, Message, Metadata, Query, ResponseCode};
use hickory_proto::rr::{LowerName, Name, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo, Server};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::zone::{Lookup, Zone};

/// How long an upstream nameserver gets to answer a forwarded question.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle timeout of a TCP client connection.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[error("cluster DNS: listening on {addr} ({proto}): {source}")]
pub struct DnsServerError {
    pub addr: SocketAddr,
    pub proto: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// The request handler: the current zone (replaced as Services change) and the upstream servers.
#[derive(Clone)]
pub struct ClusterDns {
    zone: Arc<RwLock<Arc<Zone>>>,
    upstream: Arc<Vec<SocketAddr>>,
}

/// What a question got: the response code and the three record sections.
#[derive(Debug, Default)]
pub struct Answered {
    pub code: ResponseCode,
    pub authoritative: bool,
    pub truncated: bool,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl ClusterDns {
    /// A handler answering from `zone` and forwarding the rest to `upstream` (none: SERVFAIL).
    pub fn new(zone: Zone, upstream: Vec<SocketAddr>) -> Self {
        Self { zone: Arc::new(RwLock::new(Arc::new(zone))), upstream: Arc::new(upstream) }
    }

    /// Answers from `zone` from now on.
    pub fn set_zone(&self, zone: Zone) {
        *self.zone.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(zone);
    }

    fn zone(&self) -> Arc<Zone> {
        self.zone.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Binds UDP and TCP on `addr` and answers there until the returned server is shut down.
    pub async fn serve(self, addr: SocketAddr) -> Result<Server<ClusterDns>, DnsServerError> {
        let udp =
            UdpSocket::bind(addr).await.map_err(|source| DnsServerError { addr, proto: "udp", source })?;
        let tcp =
            TcpListener::bind(addr).await.map_err(|source| DnsServerError { addr, proto: "tcp", source })?;
        let mut server = Server::new(self);
        server.register_socket(udp);
        server.register_listener(tcp, TCP_TIMEOUT, 64 * 1024);
        Ok(server)
    }

    /// The answer to `name` `qtype`; `raw` is the client's request, forwarded as it is (over `tcp`
    /// when the client asked over TCP) when the name is not the cluster's.
    pub async fn resolve(&self, name: &LowerName, qtype: RecordType, raw: &[u8], tcp: bool) -> Answered {
        match self.zone().lookup(name, qtype) {
            Lookup::Answer { code, answers, authority, follow } => {
                let mut out =
                    Answered { code, authoritative: true, answers, authority, ..Answered::default() };
                if let Some(target) = follow {
                    // An ExternalName: the upstream answer for its target follows the CNAME.
                    if let Ok(reply) = self.ask_upstream(&target, qtype).await {
                        out.answers.extend(reply.answers);
                    }
                }
                out
            }
            Lookup::Forward => match self.forward(raw, tcp).await {
                Ok(reply) => Answered {
                    code: reply.metadata.response_code,
                    authoritative: false,
                    truncated: reply.metadata.truncation,
                    answers: reply.answers,
                    authority: reply.authorities,
                    additionals: reply.additionals,
                },
                Err(e) => {
                    tracing::debug!("cluster DNS: forwarding {name}: {e}");
                    Answered { code: ResponseCode::ServFail, ..Answered::default() }
                }
            },
        }
    }

    async fn ask_upstream(&self, target: &Name, qtype: RecordType) -> std::io::Result<Message> {
        let mut msg = Message::query();
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(target.clone(), qtype));
        let bytes = msg.to_vec().map_err(std::io::Error::other)?;
        self.forward(&bytes, false).await
    }

    /// Sends `raw` to each upstream server in turn until one answers.
    async fn forward(&self, raw: &[u8], tcp: bool) -> std::io::Result<Message> {
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no upstream nameserver");
        for server in self.upstream.iter() {
            let reply = tokio::time::timeout(UPSTREAM_TIMEOUT, exchange(*server, raw, tcp)).await;
            match reply {
                Ok(Ok(m)) => return Ok(m),
                Ok(Err(e)) => last = e,
                Err(_) => {
                    last = std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{server} timed out"))
                }
            }
        }
        Err(last)
    }
}

/// One question and its answer with `server`.
async fn exchange(server: SocketAddr, raw: &[u8], tcp: bool) -> std::io::Result<Message> {
    let id = raw.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let bytes = if tcp {
        let mut s = TcpStream::connect(server).await?;
        let len = u16::try_from(raw.len()).map_err(std::io::Error::other)?;
        s.write_all(&len.to_be_bytes()).await?;
        s.write_all(raw).await?;
        let n = s.read_u16().await?;
        let mut buf = vec![0; usize::from(n)];
        s.read_exact(&mut buf).await?;
        buf
    } else {
        let local: SocketAddr =
            if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let s = UdpSocket::bind(local).await?;
        s.connect(server).await?;
        s.send(raw).await?;
        let mut buf = vec![0; 4096];
        loop {
            let n = s.recv(&mut buf).await?;
            // Anything but the answer to our question is ignored.
            if buf.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) == id {
                buf.truncate(n);
                break buf;
            }
        }
    };
    Message::from_vec(&bytes).map_err(std::io::Error::other)
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDns {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, req: &Request, mut resp: R) -> ResponseInfo {
        let mut meta = Metadata::response_from_request(&req.metadata);
        meta.recursion_available = true;
        let answered = match req.request_info() {
            Err(_) => Answered { code: ResponseCode::FormErr, ..Answered::default() },
            Ok(info) => {
                let tcp = info.protocol == Protocol::Tcp;
                self.resolve(info.query.name(), info.query.query_type(), req.as_slice(), tcp).await
            }
        };
        meta.response_code = answered.code;
        meta.authoritative = answered.authoritative;
        meta.truncation = answered.truncated;
        let builder = MessageResponseBuilder::from_message_request(req);
        let msg = builder.build(
            meta,
            answered.answers.iter(),
            answered.authority.iter(),
            [],
            answered.additionals.iter(),
        );
        match resp.send_response(msg).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!("cluster DNS: sending a response: {e}");
                let mut m = Metadata::response_from_request(&req.metadata);
                m.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata: m, counts: HeaderCounts::default() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::zone::ZoneConfig;
    use k8s_openapi::api::core::v1::{Service, ServiceSpec};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service(ns: &str, name: &str, ip: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec { cluster_ip: Some(ip.into()), ..Default::default() }),
            ..Default::default()
        }
    }

    fn zone(domain: &str, services: &[Service]) -> Zone {
        let cfg = ZoneConfig { domain: domain.into(), ..ZoneConfig::default() };
        Zone::build(services, &[] as &[EndpointSlice], &cfg, 1).unwrap()
    }

    async fn ask(server: SocketAddr, name: &str, qtype: RecordType, tcp: bool) -> Message {
        let mut msg = Message::query();
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        exchange(server, &msg.to_vec().unwrap(), tcp).await.unwrap()
    }

    fn ips(m: &Message) -> Vec<String> {
        m.answers.iter().map(|r| r.data.to_string()).collect()
    }

    /// A real server on loopback over UDP and TCP, answering the cluster zone itself and forwarding
    /// other names to an upstream server (a second instance serving another zone).
    #[tokio::test]
    async fn answers_the_zone_and_forwards_the_rest_over_udp_and_tcp() {
        let free = || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let up_addr = free();
        let upstream = ClusterDns::new(zone("example.org", &[service("x", "www", "192.0.2.7")]), vec![]);
        let mut up = upstream.serve(up_addr).await.unwrap();
        let addr = free();
        let dns = ClusterDns::new(zone("cluster.local", &[]), vec![up_addr]);
        let mut server = dns.clone().serve(addr).await.unwrap();

        // The zone follows the Services.
        let none = ask(addr, "web.default.svc.cluster.local.", RecordType::A, false).await;
        assert_eq!(none.metadata.response_code, ResponseCode::NXDomain);
        assert!(none.metadata.authoritative);
        assert_eq!(none.authorities.len(), 1, "the SOA");
        dns.set_zone(zone("cluster.local", &[service("default", "web", "10.96.0.20")]));
        for tcp in [false, true] {
            let m = ask(addr, "web.default.svc.cluster.local.", RecordType::A, tcp).await;
            assert_eq!(ips(&m), ["10.96.0.20"], "tcp {tcp}");
            assert!(m.metadata.authoritative && m.metadata.recursion_available);
            // Forwarded: the upstream's answer, not authoritative here.
            let m = ask(addr, "www.x.svc.example.org.", RecordType::A, tcp).await;
            assert_eq!(ips(&m), ["192.0.2.7"], "tcp {tcp}");
            assert!(!m.metadata.authoritative);
        }
        let m = ask(addr, "nothing.x.svc.example.org.", RecordType::A, false).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);

        // No upstream answering: SERVFAIL, not a hang.
        up.shutdown_gracefully().await.unwrap();
        let m = ask(addr, "www.x.svc.example.org.", RecordType::A, false).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        server.shutdown_gracefully().await.unwrap();

        // A port in use is one clear error.
        let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = ClusterDns::new(zone("cluster.local", &[]), vec![])
            .serve(busy.local_addr().unwrap())
            .await
            .err()
            .unwrap();
        assert!(e.to_string().starts_with("cluster DNS: listening on 127.0.0.1:"), "{e}");
    }
}
