//! The Distribution client against Debian's real `docker-registry`: anonymous, htpasswd Basic, and token
//! auth over TLS with our GCR-shaped token server (including expired tokens → one re-auth), pushes and fetches,
//! and the failures a user must see as one clear line.

#[path = "support/registry.rs"]
mod registry;

use registry::{Compression, LayerTar, Mode, TestRegistry, build_image, client_with, push_image};
use rkube::image::credentials::Credential;
use rkube::image::registry::RegistryError;
use std::sync::atomic::Ordering;

fn small_image() -> registry::TestImage {
    let tar = LayerTar::new().dir("etc").file("etc/hello", b"hello world\n").finish();
    build_image(&[(tar, Compression::Gzip)], "amd64", false)
}

async fn round_trip(reg: &TestRegistry) {
    let client = reg.admin_client();
    let repo = reg.repo("team/app");
    let img = small_image();
    push_image(&client, &repo, "v1", &img).await;
    let m = client.get_manifest(&repo, "v1").await.unwrap();
    assert_eq!(m.digest, img.manifest.digest);
    let by_digest = client.get_manifest(&repo, &img.manifest.digest.to_string()).await.unwrap();
    assert_eq!(by_digest.body, m.body);
    let cfg = client.get_blob_bytes(&repo, &img.config.digest).await.unwrap();
    assert_eq!(&cfg[..], &img.config.data[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_push_and_fetch() {
    let reg = TestRegistry::start(Mode::Anonymous);
    reg.admin_client().ping(&reg.endpoint()).await.unwrap();
    round_trip(&reg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_push_fetch_and_wrong_password() {
    let reg = TestRegistry::start(Mode::Basic);
    round_trip(&reg).await;
    let wrong = client_with(
        reg.config(),
        Some(Credential::Basic { username: "testuser".into(), password: "nope".into() }),
    );
    let err = wrong.get_manifest(&reg.repo("team/app"), "v1").await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    let none = client_with(reg.config(), None);
    let err = none.get_manifest(&reg.repo("team/app"), "v1").await.unwrap_err();
    assert!(err.to_string().contains("no credentials"), "{err}");
    assert!(!err.to_string().contains('\n'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_over_tls_gcr_flow() {
    let reg = TestRegistry::start(Mode::Token);
    round_trip(&reg).await;
    let tokens = reg.token_server.clone().unwrap();
    // An access-token credential (oauth2accesstoken) works too, and its token is cached per scope.
    let c = client_with(
        reg.config(),
        Some(Credential::Basic {
            username: "oauth2accesstoken".into(),
            password: registry::ACCESS_TOKEN.into(),
        }),
    );
    let before = tokens.issued.load(Ordering::SeqCst);
    let repo = reg.repo("team/app");
    c.get_manifest(&repo, "v1").await.unwrap();
    c.get_manifest(&repo, "v1").await.unwrap();
    assert_eq!(tokens.issued.load(Ordering::SeqCst) - before, 1, "token cached for the scope");
    // Wrong key: the token service refuses.
    let bad = client_with(
        reg.config(),
        Some(Credential::Basic { username: "_json_key".into(), password: "{}".into() }),
    );
    let err = bad.get_manifest(&repo, "v1").await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    // Without our CA the TLS handshake must fail.
    let untrusting = client_with(Default::default(), None);
    let err = untrusting.ping(&reg.endpoint()).await.unwrap_err();
    assert!(matches!(err, RegistryError::Connect { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_triggers_one_reauth() {
    let reg = TestRegistry::start(Mode::Token);
    let img = small_image();
    push_image(&reg.admin_client(), &reg.repo("team/app"), "v1", &img).await;
    let tokens = reg.token_server.clone().unwrap();
    let c = reg.admin_client();
    let before = tokens.issued.load(Ordering::SeqCst);
    tokens.expire_next.store(1, Ordering::SeqCst);
    let m = c.get_manifest(&reg.repo("team/app"), "v1").await.unwrap();
    assert_eq!(m.digest, img.manifest.digest);
    assert_eq!(tokens.issued.load(Ordering::SeqCst) - before, 2, "expired token replaced once");
    // Tokens that keep coming back expired: give up after one re-auth with a clear error.
    let c = reg.admin_client();
    tokens.expire_next.store(5, Ordering::SeqCst);
    let err = c.get_manifest(&reg.repo("team/app"), "v1").await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert_eq!(tokens.expire_next.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_unknown_is_not_found() {
    let reg = TestRegistry::start(Mode::Anonymous);
    let err = reg.admin_client().get_manifest(&reg.repo("no/such"), "v9").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("no/such:v9"), "{err}");
}
