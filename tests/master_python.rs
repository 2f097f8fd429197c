//! The Python `kubernetes` client (the version `hack/python-client.sh` pins, in the venv it
//! prepares at setup time) against a real rkube-master, on both store backends. The scenarios live
//! in `tests/fixtures/python/client_suite.py`:
//! - `crud`: typed create/read/list/replace (and a stale replace: 409)/patch/delete of every kind
//!   discovery serves (the script fails on a served kind it does not cover);
//! - `watch`: a watch from a resourceVersion, live events, 410 Gone after compaction, a relist;
//! - `paginate`: `limit`/`continue` pages of one snapshot, 410 Expired once it is compacted;
//! - `apply`: server-side apply, a conflicting manager (409 naming it), an unknown field under
//!   Strict (400), `force`;
//! - `namespace`: deleting a namespace removes its objects;
//! - `rbac`: a ServiceAccount token limited by a Role (allowed in its namespace, 403 elsewhere), a
//!   RoleBinding to a missing Role, a token for another audience (401);
//! - `unconditional_put`: concurrent replaces without a resourceVersion all succeed, once each.
//!
//! The master compacts every half second keeping 50 revisions, and its watch cache keeps 16 changes,
//! so the compacted history is reached in seconds.

#[path = "support/master.rs"]
mod master;

use master::{Backend, Master};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Revisions the master keeps when it compacts, and how often it compacts (flag, seconds).
const KEEP_REVISIONS: &str = "50";
const COMPACTION_INTERVAL: (&str, &str) = ("500ms", "0.5");
const SCENARIOS: &[&str] = &["crud", "watch", "paginate", "apply", "namespace", "rbac", "unconditional_put"];

/// The venv's interpreter: `RKUBE_PYCLIENT_VENV`, by default where `hack/python-client.sh` puts it.
fn python() -> PathBuf {
    let venv =
        std::env::var_os("RKUBE_PYCLIENT_VENV").map_or_else(|| "/opt/rkube-pyclient".into(), PathBuf::from);
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "the Python kubernetes client is missing ({} has no bin/python): run hack/python-client.sh (hack/setup.sh runs it)",
        venv.display()
    );
    python
}

fn client_suite(backend: Backend) {
    let python = python();
    let m = Master::start(
        backend,
        &[
            "--keep-revisions",
            KEEP_REVISIONS,
            "--compaction-interval",
            COMPACTION_INTERVAL.0,
            "--watch-cache-window",
            "16",
        ],
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/python/client_suite.py");
    let (stdout, stderr) = (m.dir.path().join("suite.out"), m.dir.path().join("suite.err"));
    let mut child = Command::new(&python)
        .arg(&script)
        .arg(m.kubeconfig())
        .args([KEEP_REVISIONS, COMPACTION_INTERVAL.1])
        .args(SCENARIOS)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("HOME", m.dir.path().join("home"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("start the client suite");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&stdout).unwrap_or_default();
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("the client suite hung:\n{out}{err}"));
    assert!(status.success(), "the client suite failed ({status}):\n{out}{err}");
    for s in SCENARIOS {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("ok {s} ("))),
            "scenario {s} did not pass:\n{out}{err}"
        );
    }
    println!("{out}");
}

mod embedded {
    #[test]
    fn python_client_suite() {
        super::client_suite(super::Backend::embedded())
    }
}

mod etcd {
    #[test]
    fn python_client_suite() {
        super::client_suite(super::Backend::etcd())
    }
}
