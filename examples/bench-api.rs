//! Open-loop load generator for hack/bench-api.sh: writes ConfigMaps at a fixed rate against a
//! running rkube-master and prints latency percentiles (one JSON line). The write is a create
//! (POST), an update (PUT of one of 100 existing objects) or a server-side apply (PATCH
//! `application/apply-patch+yaml` of one of 100 objects, each a real change).
//!
//! Usage: bench-api <server-url> <ca.crt|-> <token|-> <writes-per-second> <seconds> [create|update|apply]

use anyhow::{Context, Result, bail};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 5 && args.len() != 6 {
        bail!(
            "usage: bench-api <server-url> <ca.crt|-> <token|-> <writes-per-second> <seconds> [create|update|apply]"
        );
    }
    let mode = args.get(5).map(String::as_str).unwrap_or("create").to_string();
    if !matches!(mode.as_str(), "create" | "update" | "apply") {
        bail!("unknown mode {mode:?}: create, update or apply");
    }
    let (server, ca, token) = (args[0].clone(), args[1].clone(), args[2].clone());
    let rate: u64 = args[3].parse().context("writes-per-second")?;
    let secs: u64 = args[4].parse().context("seconds")?;
    let mut builder = reqwest::Client::builder().pool_max_idle_per_host(256);
    if ca != "-" {
        let pem = std::fs::read(&ca).with_context(|| format!("reading {ca}"))?;
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    let client = builder.build()?;
    let url = format!("{server}/api/v1/namespaces/default/configmaps");
    let lat = Arc::new(Mutex::new(Vec::<f64>::new()));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let total = rate * secs;
    let run_id: u32 = std::process::id();
    // Updates and applies go to 100 objects made first.
    const POOL: u64 = 100;
    if mode != "create" {
        for j in 0..POOL {
            let body = format!(
                r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"bench-{run_id}-{j}"}},"data":{{"k":"v"}}}}"#
            );
            let mut req = client.post(&url).header("content-type", "application/json").body(body);
            if token != "-" {
                req = req.bearer_auth(&token);
            }
            let status = req.send().await?.status();
            if status.as_u16() != 201 {
                bail!("creating the objects to {mode}: {status}");
            }
        }
    }
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = tick.tick().await;
        let (client, url, lat, errors, token, mode) =
            (client.clone(), url.clone(), lat.clone(), errors.clone(), token.clone(), mode.clone());
        tasks.push(tokio::spawn(async move {
            let (name, want) = match mode.as_str() {
                "create" => (format!("bench-{run_id}-{i}"), 201),
                _ => (format!("bench-{run_id}-{}", i % POOL), 200),
            };
            let body = format!(
                r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"k":"v{i}"}}}}"#
            );
            let mut req = match mode.as_str() {
                "create" => client.post(&url).header("content-type", "application/json"),
                "update" => client.put(format!("{url}/{name}")).header("content-type", "application/json"),
                _ => client
                    .patch(format!("{url}/{name}?fieldManager=bench&force=true"))
                    .header("content-type", "application/apply-patch+yaml"),
            }
            .body(body);
            if token != "-" {
                req = req.bearer_auth(&token);
            }
            match req.send().await {
                Ok(r) if r.status().as_u16() == want => {
                    // Latency from the scheduled send time: queueing delays count (no coordinated omission).
                    let ms = scheduled.elapsed().as_secs_f64() * 1000.0;
                    lat.lock().await.push(ms);
                }
                _ => {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut l = lat.lock().await.clone();
    l.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| if l.is_empty() { f64::NAN } else { l[((l.len() as f64 - 1.0) * p).round() as usize] };
    println!(
        r#"{{"requests":{total},"ok":{},"errors":{},"achieved_rps":{:.0},"p50_ms":{:.2},"p99_ms":{:.2},"max_ms":{:.2}}}"#,
        l.len(),
        errors.load(std::sync::atomic::Ordering::Relaxed),
        l.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}
