//! `/livez`, `/readyz` and `/healthz` as kube-apiserver answers them: `ok`, or with `?verbose`
//! one `[+]<check> ok` line per check and `<endpoint> check passed`; a failing check makes the
//! answer 500 with `[-]<check> failed: reason withheld` and `<endpoint> check failed`.
//! `exclude=<check>` (repeatable) skips checks; `/<endpoint>/<check>` runs one.

use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ApiServer;

/// How long the store may take to answer a health check.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// A health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Ping,
    Log,
    Etcd,
    EtcdReadiness,
    Shutdown,
}

impl Check {
    pub fn name(self) -> &'static str {
        match self {
            Check::Ping => "ping",
            Check::Log => "log",
            Check::Etcd => "etcd",
            Check::EtcdReadiness => "etcd-readiness",
            Check::Shutdown => "shutdown",
        }
    }
}

/// The checks of an endpoint (`livez`, `readyz`, `healthz`), in kube-apiserver's order.
pub fn checks(endpoint: &str) -> &'static [Check] {
    match endpoint {
        "readyz" => &[Check::Ping, Check::Log, Check::Etcd, Check::EtcdReadiness, Check::Shutdown],
        _ => &[Check::Ping, Check::Log, Check::Etcd],
    }
}

/// The body and status of a root health answer from each check's outcome (pure).
pub fn render(
    endpoint: &str,
    results: &[(Check, Option<Result<(), String>>)],
    unknown_excludes: &[String],
    verbose: bool,
) -> (u16, String) {
    let mut lines = String::new();
    let mut failed = false;
    for (check, result) in results {
        match result {
            None => lines.push_str(&format!("[+]{} excluded: ok\n", check.name())),
            Some(Ok(())) => lines.push_str(&format!("[+]{} ok\n", check.name())),
            Some(Err(_)) => {
                failed = true;
                lines.push_str(&format!("[-]{} failed: reason withheld\n", check.name()));
            }
        }
    }
    if !unknown_excludes.is_empty() {
        let quoted: Vec<String> = unknown_excludes.iter().map(|e| format!("{e:?}")).collect();
        lines.push_str(&format!(
            "warn: some health checks cannot be excluded: no matches for {}\n",
            quoted.join(",")
        ));
    }
    if failed {
        return (500, format!("{lines}{endpoint} check failed\n"));
    }
    if !verbose {
        return (200, "ok".into());
    }
    (200, format!("{lines}{endpoint} check passed\n"))
}

async fn run(app: &ApiServer, check: Check) -> Result<(), String> {
    match check {
        Check::Ping | Check::Log | Check::Shutdown => Ok(()),
        Check::Etcd | Check::EtcdReadiness => {
            match tokio::time::timeout(STORE_TIMEOUT, app.registry.store().current_revision()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("the store did not answer within {STORE_TIMEOUT:?}")),
            }
        }
    }
}

fn text(code: u16, body: String) -> Response {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")],
        body,
    )
        .into_response()
}

/// Answers `path` if it is a health endpoint (`None`: it is not).
pub async fn handle(app: &ApiServer, path: &str, query: Option<&str>) -> Option<Response> {
    let mut segs = path.trim_matches('/').split('/');
    let endpoint = segs.next().filter(|e| matches!(*e, "livez" | "readyz" | "healthz"))?;
    let one = segs.next();
    if segs.next().is_some() {
        return None;
    }
    let all = checks(endpoint);
    if let Some(name) = one {
        let check = all.iter().find(|c| c.name() == name)?;
        return Some(match run(app, *check).await {
            Ok(()) => text(200, "ok".into()),
            Err(e) => text(500, format!("internal server error: {e}\n")),
        });
    }
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect();
    let verbose = pairs.iter().any(|(k, _)| k == "verbose");
    let mut excluded: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "exclude")
        .flat_map(|(_, v)| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from))
        .collect();
    let mut results = Vec::new();
    for check in all {
        if let Some(i) = excluded.iter().position(|e| e == check.name()) {
            excluded.remove(i);
            results.push((*check, None));
        } else {
            results.push((*check, Some(run(app, *check).await)));
        }
    }
    excluded.sort();
    excluded.dedup();
    let (code, body) = render(endpoint, &results, &excluded, verbose);
    Some(text(code, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_and_failing_forms() {
        let ok = [(Check::Ping, Some(Ok(()))), (Check::Log, Some(Ok(()))), (Check::Etcd, None)];
        assert_eq!(render("livez", &ok, &[], false), (200, "ok".into()));
        assert_eq!(
            render("livez", &ok, &["nope".into()], true),
            (
                200,
                "[+]ping ok\n[+]log ok\n[+]etcd excluded: ok\nwarn: some health checks cannot be excluded: no matches for \"nope\"\nlivez check passed\n"
                    .into()
            )
        );
        let bad = [(Check::Ping, Some(Ok(()))), (Check::Etcd, Some(Err("down".into())))];
        let (code, body) = render("readyz", &bad, &[], false);
        assert_eq!(code, 500);
        assert_eq!(body, "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n");
        assert!(!body.contains("down"));
        assert_eq!(checks("readyz").len(), 5);
        assert_eq!(checks("livez").iter().map(|c| c.name()).collect::<Vec<_>>(), ["ping", "log", "etcd"]);
    }
}
