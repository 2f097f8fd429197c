//! The cluster zone as records (pure): built from Services and EndpointSlices, answered by name
//! and type as the Kubernetes DNS specification and CoreDNS's `kubernetes` plugin do.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The version of the Kubernetes DNS specification answered at `dns-version.<zone>`.
pub const SPEC_VERSION: &str = "1.1.0";
/// The label naming an EndpointSlice's Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Zone settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneConfig {
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    /// TTL of the records (CoreDNS's default: 5 s).
    pub ttl: u32,
}

impl Default for ZoneConfig {
    fn default() -> Self {
        Self { domain: "cluster.local".into(), ttl: 5 }
    }
}

/// Why a zone could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cluster domain {domain:?} is not a valid DNS name")]
pub struct ZoneError {
    domain: String,
    #[source]
    source: Option<hickory_proto::ProtoError>,
}

/// The answer to one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The name is in the cluster zone (or a known reverse name): answer with these.
    Answer {
        code: ResponseCode,
        answers: Vec<Record>,
        /// The zone's SOA for NXDOMAIN and NODATA (RFC 2308).
        authority: Vec<Record>,
        /// A CNAME whose target is outside the zone: the server resolves it and adds its records.
        follow: Option<Name>,
    },
    /// Not ours: forward to the node's nameservers.
    Forward,
}

/// Every record of the cluster zone, indexed by (lower-cased) name.
#[derive(Debug, Clone)]
pub struct Zone {
    origin: LowerName,
    ttl: u32,
    records: HashMap<LowerName, Vec<Record>>,
    /// Names that exist without records of their own (`svc.<zone>`, `<ns>.svc.<zone>`...).
    names: HashSet<LowerName>,
    /// PTR records of cluster IPs and endpoint addresses (`d.c.b.a.in-addr.arpa.`).
    reverse: HashMap<LowerName, Vec<Record>>,
    soa: Record,
}

fn name(text: &str) -> Option<Name> {
    let mut n = Name::from_ascii(text).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// `10-244-1-5`: an endpoint's name when it has no hostname.
fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

/// A Service's named ports as (name, lower-case protocol, number).
type NamedPorts = BTreeSet<(String, String, u16)>;

/// A Service's endpoints of one EndpointSlice port: (address, hostname, port number).
struct Backend {
    ip: Ipv4Addr,
    hostname: Option<String>,
}

impl Zone {
    /// The zone of `services` and their `slices` (IPv4 slices; endpoints whose `ready` condition is
    /// not false, as the EndpointSlice controller marks `publishNotReadyAddresses` ones ready).
    pub fn build<S: Borrow<Service>, E: Borrow<EndpointSlice>>(
        services: &[S],
        slices: &[E],
        cfg: &ZoneConfig,
        serial: u32,
    ) -> Result<Zone, ZoneError> {
        let invalid = |source| ZoneError { domain: cfg.domain.clone(), source };
        let mut origin = Name::from_ascii(&cfg.domain).map_err(|e| invalid(Some(e)))?;
        origin.set_fqdn(true);
        if origin.is_root() {
            return Err(invalid(None));
        }
        let ttl = cfg.ttl;
        let soa_rdata = SOA::new(
            name(&format!("ns.dns.{}", cfg.domain)).unwrap_or_else(|| origin.clone()),
            name(&format!("hostmaster.{}", cfg.domain)).unwrap_or_else(|| origin.clone()),
            serial,
            7200,
            1800,
            86400,
            ttl,
        );
        let soa = Record::from_rdata(origin.clone(), ttl, RData::SOA(soa_rdata));
        let mut zone = Zone {
            origin: LowerName::from(&origin),
            ttl,
            records: HashMap::new(),
            names: HashSet::new(),
            reverse: HashMap::new(),
            soa: soa.clone(),
        };
        zone.insert(origin.clone(), soa);
        if let Some(v) = name(&format!("dns-version.{}", cfg.domain)) {
            let rec = Record::from_rdata(v.clone(), 28800, RData::TXT(TXT::new(vec![SPEC_VERSION.into()])));
            zone.insert(v, rec);
        }
        for n in ["svc", "pod"] {
            if let Some(n) = name(&format!("{n}.{}", cfg.domain)) {
                zone.names.insert(LowerName::from(&n));
            }
        }

        // Ready endpoints by Service, de-duplicated by address; ports by (name, protocol).
        let mut backends: BTreeMap<(String, String), BTreeMap<Ipv4Addr, Option<String>>> = BTreeMap::new();
        let mut slice_ports: BTreeMap<(String, String), NamedPorts> = BTreeMap::new();
        for slice in slices {
            let slice: &EndpointSlice = slice.borrow();
            let Some(svc) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
                continue;
            };
            if slice.address_type != "IPv4" {
                continue;
            }
            let key = (slice.metadata.namespace.clone().unwrap_or_default(), svc.clone());
            let entry = backends.entry(key.clone()).or_default();
            for e in &slice.endpoints {
                if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for a in &e.addresses {
                    if let Ok(ip) = a.parse::<Ipv4Addr>() {
                        entry.entry(ip).or_insert_with(|| e.hostname.clone());
                    }
                }
            }
            let ports = slice_ports.entry(key).or_default();
            for p in slice.ports.iter().flatten() {
                if let (Some(n), Some(port)) = (p.name.as_ref().filter(|n| !n.is_empty()), p.port) {
                    let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into()).to_lowercase();
                    ports.insert((n.clone(), proto, u16::try_from(port).unwrap_or(0)));
                }
            }
        }

        for svc in services {
            let svc: &Service = svc.borrow();
            let (Some(ns), Some(svc_name)) =
                (svc.metadata.namespace.as_deref(), svc.metadata.name.as_deref())
            else {
                continue;
            };
            let Some(spec) = svc.spec.as_ref() else { continue };
            let Some(fqdn) = name(&format!("{svc_name}.{ns}.svc.{}", cfg.domain)) else { continue };
            let key = (ns.to_string(), svc_name.to_string());
            if spec.type_.as_deref() == Some("ExternalName") {
                if let Some(target) = spec.external_name.as_deref().and_then(name) {
                    zone.add(fqdn, RData::CNAME(CNAME(target)));
                }
                continue;
            }
            let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
            if cluster_ip == "None" {
                // Headless: every ready endpoint, by the Service's name and its own.
                let found: Vec<Backend> = backends
                    .get(&key)
                    .into_iter()
                    .flatten()
                    .map(|(ip, hostname)| Backend { ip: *ip, hostname: hostname.clone() })
                    .collect();
                let ports = slice_ports.get(&key).cloned().unwrap_or_default();
                let weight = if found.is_empty() { 0 } else { (100 / found.len()).max(1) as u16 };
                for b in &found {
                    let host = b.hostname.clone().unwrap_or_else(|| dashed(b.ip));
                    let Some(own) = name(&format!("{host}.{svc_name}.{ns}.svc.{}", cfg.domain)) else {
                        continue;
                    };
                    zone.add(fqdn.clone(), RData::A(A(b.ip)));
                    zone.add(own.clone(), RData::A(A(b.ip)));
                    zone.add_reverse(b.ip, own.clone());
                    for (port_name, proto, port) in &ports {
                        if let Some(srv) =
                            name(&format!("_{port_name}._{proto}.{svc_name}.{ns}.svc.{}", cfg.domain))
                        {
                            zone.add(srv, RData::SRV(SRV::new(0, weight, *port, own.clone())));
                        }
                    }
                }
                continue;
            }
            let Ok(ip) = cluster_ip.parse::<Ipv4Addr>() else { continue };
            zone.add(fqdn.clone(), RData::A(A(ip)));
            zone.add_reverse(ip, fqdn.clone());
            for p in spec.ports.iter().flatten() {
                let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) else { continue };
                let proto = p.protocol.as_deref().unwrap_or("TCP").to_lowercase();
                let Ok(port) = u16::try_from(p.port) else { continue };
                if let Some(srv) = name(&format!("_{port_name}._{proto}.{svc_name}.{ns}.svc.{}", cfg.domain))
                {
                    zone.add(srv, RData::SRV(SRV::new(0, 100, port, fqdn.clone())));
                }
            }
        }
        Ok(zone)
    }

    fn add(&mut self, owner: Name, data: RData) {
        let rec = Record::from_rdata(owner.clone(), self.ttl, data);
        self.insert(owner, rec);
    }

    fn insert(&mut self, owner: Name, rec: Record) {
        let key = LowerName::from(&owner);
        let list = self.records.entry(key.clone()).or_default();
        if !list.contains(&rec) {
            list.push(rec);
        }
        // Every name between the record and the zone's origin exists (empty non-terminals).
        let mut parent = key.base_name();
        while self.origin.zone_of(&parent) && parent != self.origin {
            self.names.insert(parent.clone());
            parent = parent.base_name();
        }
    }

    fn add_reverse(&mut self, ip: Ipv4Addr, target: Name) {
        let owner = Name::from(ip);
        let rec = Record::from_rdata(owner.clone(), self.ttl, RData::PTR(PTR(target)));
        let list = self.reverse.entry(LowerName::from(&owner)).or_default();
        if !list.contains(&rec) {
            list.push(rec);
        }
    }

    /// The zone's origin (`cluster.local.`).
    pub fn origin(&self) -> &LowerName {
        &self.origin
    }

    /// The answer to `name` `qtype` (case-insensitive).
    pub fn lookup(&self, qname: &LowerName, qtype: RecordType) -> Lookup {
        if !self.origin.zone_of(qname) {
            // Reverse names of cluster addresses are ours; any other name is forwarded.
            return match self.reverse.get(qname) {
                Some(ptrs) => self.answer(ptrs, qtype),
                None => Lookup::Forward,
            };
        }
        if let Some(records) = self.records.get(qname) {
            return self.answer(records, qtype);
        }
        if let Some(ip) = self.pod_address(qname) {
            let owner = Name::from(qname);
            let rec = Record::from_rdata(owner, self.ttl, RData::A(A(ip)));
            return self.answer(&[rec], qtype);
        }
        if self.names.contains(qname) {
            return self.no_data();
        }
        Lookup::Answer {
            code: ResponseCode::NXDomain,
            answers: vec![],
            authority: vec![self.soa.clone()],
            follow: None,
        }
    }

    /// `1-2-3-4.<ns>.pod.<zone>` → 1.2.3.4 (CoreDNS's `pods insecure`, as k3s configures it).
    fn pod_address(&self, qname: &LowerName) -> Option<Ipv4Addr> {
        let labels = Name::from(qname);
        let n = usize::from(labels.num_labels());
        let origin = usize::from(self.origin.num_labels());
        if n != origin + 3 {
            return None;
        }
        let parts: Vec<String> = labels.iter().map(|l| String::from_utf8_lossy(l).to_lowercase()).collect();
        if parts[2] != "pod" {
            return None;
        }
        parts[0].replace('-', ".").parse().ok()
    }

    fn no_data(&self) -> Lookup {
        Lookup::Answer {
            code: ResponseCode::NoError,
            answers: vec![],
            authority: vec![self.soa.clone()],
            follow: None,
        }
    }

    fn answer(&self, records: &[Record], qtype: RecordType) -> Lookup {
        let matching: Vec<Record> = records
            .iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .cloned()
            .collect();
        if !matching.is_empty() {
            return Lookup::Answer {
                code: ResponseCode::NoError,
                answers: matching,
                authority: vec![],
                follow: None,
            };
        }
        // A CNAME answers every type; an out-of-zone target is resolved by the caller.
        if let Some(cname) = records.iter().find(|r| r.record_type() == RecordType::CNAME) {
            let RData::CNAME(CNAME(target)) = &cname.data else { unreachable!("a CNAME record") };
            let target_key = LowerName::from(target);
            let mut answers = vec![cname.clone()];
            let mut follow = None;
            if self.origin.zone_of(&target_key) {
                // One step inside the zone (no chains, so an alias of itself cannot loop).
                let more = self.records.get(&target_key).into_iter().flatten();
                answers.extend(more.filter(|r| r.record_type() == qtype).cloned());
            } else {
                follow = Some(target.clone());
            }
            return Lookup::Answer { code: ResponseCode::NoError, answers, authority: vec![], follow };
        }
        self.no_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(ns: &str, name: &str, ip: &str, ports: &[(&str, i32, &str)]) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, proto)| ServicePort {
                            name: Some(n.to_string()),
                            port: *p,
                            protocol: Some(proto.to_string()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn slice(
        ns: &str,
        svc: &str,
        eps: &[(&str, Option<&str>, bool)],
        ports: &[(&str, i32)],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(format!("{svc}-abc")),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: eps
                .iter()
                .map(|(ip, host, ready)| Endpoint {
                    addresses: vec![ip.to_string()],
                    hostname: host.map(String::from),
                    conditions: Some(EndpointConditions { ready: Some(*ready), ..Default::default() }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: Some(n.to_string()),
                        port: Some(*p),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    fn zone() -> Zone {
        let mut ext = svc("default", "search", "", &[]);
        ext.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        ext.spec.as_mut().unwrap().external_name = Some("www.example.org".into());
        let mut alias = svc("default", "alias", "", &[]);
        alias.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        alias.spec.as_mut().unwrap().external_name = Some("web.default.svc.cluster.local".into());
        let services = vec![
            svc("default", "web", "10.96.0.20", &[("http", 80, "TCP"), ("", 81, "TCP")]),
            svc("db", "pg", "None", &[("sql", 5432, "TCP")]),
            svc("db", "empty", "None", &[]),
            ext,
            alias,
        ];
        let slices = vec![
            slice(
                "db",
                "pg",
                &[
                    ("10.244.1.5", Some("pg-0"), true),
                    ("10.244.2.7", None, true),
                    ("10.244.2.9", None, false),
                ],
                &[("sql", 5432)],
            ),
            slice("db", "empty", &[("10.244.3.3", None, false)], &[]),
        ];
        Zone::build(&services, &slices, &ZoneConfig::default(), 7).unwrap()
    }

    fn q(z: &Zone, n: &str, t: RecordType) -> Lookup {
        z.lookup(&LowerName::from(Name::from_ascii(n).unwrap()), t)
    }

    fn data(l: &Lookup) -> (ResponseCode, Vec<String>, usize) {
        match l {
            Lookup::Answer { code, answers, authority, .. } => {
                let mut a: Vec<String> = answers.iter().map(|r| r.data.to_string()).collect();
                a.sort();
                (*code, a, authority.len())
            }
            Lookup::Forward => panic!("forwarded"),
        }
    }

    #[test]
    fn cluster_ip_services_answer_a_srv_and_ptr() {
        let z = zone();
        assert_eq!(
            data(&q(&z, "web.default.svc.cluster.local.", RecordType::A)),
            (ResponseCode::NoError, vec!["10.96.0.20".into()], 0)
        );
        // Case does not matter.
        assert_eq!(data(&q(&z, "WEB.Default.SVC.cluster.LOCAL.", RecordType::A)).1, ["10.96.0.20"]);
        // IPv4 only: AAAA is NODATA with the SOA.
        assert_eq!(
            data(&q(&z, "web.default.svc.cluster.local.", RecordType::AAAA)),
            (ResponseCode::NoError, vec![], 1)
        );
        // SRV for named ports only.
        assert_eq!(
            data(&q(&z, "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV)).1,
            ["0 100 80 web.default.svc.cluster.local."]
        );
        assert_eq!(
            data(&q(&z, "_._tcp.web.default.svc.cluster.local.", RecordType::SRV)).0,
            ResponseCode::NXDomain
        );
        assert_eq!(
            data(&q(&z, "20.0.96.10.in-addr.arpa.", RecordType::PTR)).1,
            ["web.default.svc.cluster.local."]
        );
        // Unknown names in the zone: NXDOMAIN with the SOA; names above records exist (NODATA).
        assert_eq!(
            data(&q(&z, "nope.default.svc.cluster.local.", RecordType::A)),
            (ResponseCode::NXDomain, vec![], 1)
        );
        assert_eq!(
            data(&q(&z, "default.svc.cluster.local.", RecordType::A)),
            (ResponseCode::NoError, vec![], 1)
        );
        assert_eq!(data(&q(&z, "svc.cluster.local.", RecordType::A)), (ResponseCode::NoError, vec![], 1));
        assert_eq!(data(&q(&z, "cluster.local.", RecordType::SOA)).1.len(), 1);
        // Search-path misses (`web.default.svc.cluster.local.default.svc.cluster.local`) are NXDOMAIN.
        assert_eq!(
            data(&q(&z, "web.default.svc.cluster.local.default.svc.cluster.local.", RecordType::A)).0,
            ResponseCode::NXDomain
        );
        assert_eq!(data(&q(&z, "dns-version.cluster.local.", RecordType::TXT)).1, ["1.1.0"]);
    }

    #[test]
    fn headless_services_answer_their_ready_endpoints() {
        let z = zone();
        assert_eq!(
            data(&q(&z, "pg.db.svc.cluster.local.", RecordType::A)).1,
            ["10.244.1.5", "10.244.2.7"],
            "the not-ready endpoint is left out"
        );
        assert_eq!(data(&q(&z, "pg-0.pg.db.svc.cluster.local.", RecordType::A)).1, ["10.244.1.5"]);
        assert_eq!(data(&q(&z, "10-244-2-7.pg.db.svc.cluster.local.", RecordType::A)).1, ["10.244.2.7"]);
        assert_eq!(
            data(&q(&z, "_sql._tcp.pg.db.svc.cluster.local.", RecordType::SRV)).1,
            ["0 50 5432 10-244-2-7.pg.db.svc.cluster.local.", "0 50 5432 pg-0.pg.db.svc.cluster.local."]
        );
        assert_eq!(
            data(&q(&z, "5.1.244.10.in-addr.arpa.", RecordType::PTR)).1,
            ["pg-0.pg.db.svc.cluster.local."]
        );
        // No ready endpoint: the name does not exist.
        assert_eq!(data(&q(&z, "empty.db.svc.cluster.local.", RecordType::A)).0, ResponseCode::NXDomain);
    }

    #[test]
    fn external_names_pods_and_other_names() {
        let z = zone();
        match q(&z, "search.default.svc.cluster.local.", RecordType::A) {
            Lookup::Answer { answers, follow, .. } => {
                assert_eq!(answers.len(), 1);
                assert_eq!(answers[0].record_type(), RecordType::CNAME);
                assert_eq!(follow.unwrap().to_string(), "www.example.org.");
            }
            Lookup::Forward => panic!("forwarded"),
        }
        // An in-zone CNAME target is answered at once.
        assert_eq!(
            data(&q(&z, "alias.default.svc.cluster.local.", RecordType::A)).1,
            ["10.96.0.20", "web.default.svc.cluster.local."]
        );
        assert_eq!(data(&q(&z, "10-244-1-9.default.pod.cluster.local.", RecordType::A)).1, ["10.244.1.9"]);
        assert_eq!(
            data(&q(&z, "x-244-1-9.default.pod.cluster.local.", RecordType::A)).0,
            ResponseCode::NXDomain
        );
        assert_eq!(q(&z, "example.org.", RecordType::A), Lookup::Forward);
        assert_eq!(q(&z, "1.1.168.192.in-addr.arpa.", RecordType::PTR), Lookup::Forward);
    }
}
