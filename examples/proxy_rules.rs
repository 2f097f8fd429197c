//! Prints the Service rules for N synthetic services (E endpoints each) as iptables-restore input
//! or, with `nft`, as an `nft -f` transaction. Used by hack/bench-services.sh:
//! `proxy_rules <services> [endpoints] [partial] [nft]`; render time goes to stderr. With
//! `partial`, prints the partial-sync input after one service's endpoints changed.

use std::net::Ipv4Addr;
use std::time::Instant;

use rkube::network::Protocol;
use rkube::proxy::nft;
use rkube::proxy::render::build;
use rkube::proxy::{
    Endpoint, NftProxier, Proxier, ProxyConfig, Service, ServiceEndpoints, ServicePort, render,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let services: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let per_service: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let rest: Vec<String> = args.collect();
    let partial = rest.iter().any(|a| a == "partial");
    let nftables = rest.iter().any(|a| a == "nft");
    let mut svcs = Vec::new();
    let mut eps = Vec::new();
    for i in 0..services {
        let name = format!("svc-{i}");
        svcs.push(Service {
            namespace: "bench".into(),
            name: name.clone(),
            cluster_ip: Some(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i + 1)),
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                target_port: 8080,
                node_port: None,
            }],
            load_balancer_ips: vec![],
            session_affinity_seconds: None,
            external_traffic_local: false,
            internal_traffic_local: false,
        });
        let endpoints = (0..per_service)
            .map(|j| Endpoint {
                ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + i * per_service + j + 2),
                port: 8080,
                ready: true,
                local: true,
            })
            .collect();
        eps.push(ServiceEndpoints {
            namespace: "bench".into(),
            service: name,
            port_name: "http".into(),
            endpoints,
        });
    }
    let config =
        ProxyConfig { cluster_cidr: Some("10.244.0.0/16".parse().unwrap()), ..ProxyConfig::default() };
    if nftables {
        let start = Instant::now();
        let text = if partial {
            let mut proxier = NftProxier::new(config.clone());
            let first = proxier.plan(&svcs, &eps);
            proxier.commit(first);
            eps[0].endpoints[0].ip = Ipv4Addr::new(10, 255, 0, 1);
            let start = Instant::now();
            let pending = proxier.plan(&svcs, &eps);
            let text = pending.text.clone();
            // As the proxy does once it loaded: the new state is kept, not dropped.
            proxier.commit(pending);
            eprintln!("render_seconds {:.4}", start.elapsed().as_secs_f64());
            text
        } else {
            let text = nft::full(&nft::build(&svcs, &eps, &config), &config);
            eprintln!("render_seconds {:.4}", start.elapsed().as_secs_f64());
            text
        };
        print!("{text}");
        return;
    }
    if partial {
        let mut proxier = Proxier::new(config.clone());
        proxier.assume_programmed(&build(&svcs, &eps, &config));
        eps[0].endpoints[0].ip = Ipv4Addr::new(10, 255, 0, 1);
        let start = Instant::now();
        let (text, _) = proxier.plan(&build(&svcs, &eps, &config), &[]);
        eprintln!("render_seconds {:.4}", start.elapsed().as_secs_f64());
        print!("{text}");
        return;
    }
    let start = Instant::now();
    let text = render(&svcs, &eps, &config);
    eprintln!("render_seconds {:.4}", start.elapsed().as_secs_f64());
    print!("{text}");
}
